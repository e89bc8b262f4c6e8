"""The per-shard table of a dataset: a binary, columnar, memory-mapped NumPy file.

At a million shards a JSON list of shard entries is 425 MB and takes seconds (and GB) to
parse in every reader process. The table holds the same facts in 72 bytes per shard::

    shard_id   i8   position of the shard in its run's plan (file name derives from it)
    row_offset i8   global row of the shard's first conformer (cumulative n_rows)
    n_rows     i8   stored conformers
    n_failures i8   failure records
    size       i8   file size in bytes (-1: not recorded)
    sha256     u1 (32,)  the file's SHA-256 digest

``index.json`` names the table file (``index-<sha256[:16]>.npy``, a content address, so a
crash between writing the table and the header never pairs a header with another table)
with its size and SHA-256. Readers open it with ``np.load(mmap_mode="r")``: opening costs
a header parse and a vectorised check, pages are shared between the processes of a
DataLoader, and a pickled table carries only its path.

Shard files of a compact index live at :func:`shard_relpath` of their id (nested
directories of at most :data:`SHARDS_PER_DIR` files). Older datasets (a JSON ``shards``
list with explicit file names, flat ``shards/``) load into the same class via
:meth:`ShardTable.from_entries`, keeping their file names.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from qmgen.storage.files import atomic_write_bytes

SHARDS_DIR = "shards"
SHARDS_PER_DIR = 1000
MAX_SHARD_ID = 2**31 - 1
MAX_COUNT = 2**40  # rows or failures of one shard, bytes of a shard file
TABLE_DTYPE = np.dtype(
    [
        ("shard_id", "<i8"),
        ("row_offset", "<i8"),
        ("n_rows", "<i8"),
        ("n_failures", "<i8"),
        ("size", "<i8"),
        ("sha256", "u1", (32,)),
    ]
)
_GROW = 1 << 16


def shard_relpath(shard_id: int) -> str:
    """Where shard ``shard_id`` lives, relative to the dataset directory:
    ``shards/GGGG/shard-NNNNNN.h5`` with ``GGGG = shard_id // SHARDS_PER_DIR``, so no
    directory holds more than 1000 shard files (a million shards: 1000 directories)."""
    sid = int(shard_id)
    return f"{SHARDS_DIR}/{sid // SHARDS_PER_DIR:04d}/shard-{sid:06d}.h5"


class TableError(ValueError):
    """The shard table is malformed or inconsistent (message names the problem)."""


class ShardTable(Sequence):
    """Per-shard columns (see the module doc) as a sequence of entry dicts.

    ``table[i]`` is ``dict(shard_id, file, n_rows, n_failures, sha256, size, row_offset)``
    made on demand; the columns themselves are ``shard_id``, ``n_rows``, ... (NumPy
    arrays, possibly memory-mapped) and ``offsets`` (n+1,) the cumulative rows.
    """

    def __init__(self, data: np.ndarray, files: list[str] | None = None, path=None):
        if data.dtype != TABLE_DTYPE or data.ndim != 1:
            raise TableError(f"shard table of dtype {data.dtype} shape {data.shape}")
        self.data = data
        self.files = files  # explicit file names (older datasets), else derived from ids
        self.path = None if path is None else str(path)
        self.offsets = np.empty(len(data) + 1, dtype=np.int64)
        self.offsets[0] = 0
        np.cumsum(data["n_rows"], out=self.offsets[1:])

    # ------------------------------------------------------------- construction
    @classmethod
    def load(cls, path) -> ShardTable:
        """Memory-map a table file written by :func:`write_table`."""
        try:
            data = np.load(path, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError, EOFError) as err:
            if isinstance(err, FileNotFoundError):
                raise
            raise TableError(f"not a readable shard table ({err})") from None
        if len(data) == 0:  # np.memmap cannot map an empty array: load() gives a plain one
            data = np.zeros(0, TABLE_DTYPE)
        return cls(data, path=path)

    @classmethod
    def from_entries(cls, entries: Sequence[dict]) -> ShardTable:
        """A table of entry dicts (index.json's JSON list or manifest lines), in order."""
        data = np.zeros(len(entries), TABLE_DTYPE)
        for i, e in enumerate(entries):
            data[i] = (
                e["shard_id"],
                0,
                e["n_rows"],
                e["n_failures"],
                -1 if e.get("size") is None else e["size"],
                np.frombuffer(bytes.fromhex(e["sha256"]), np.uint8),
            )
        data["row_offset"] = np.concatenate([[0], np.cumsum(data["n_rows"])[:-1]])[: len(data)]
        return cls(data, [e["file"] for e in entries])

    # ------------------------------------------------------------- pickling
    def __getstate__(self):
        if self.path is not None:  # memory-mapped: the reader maps the file again
            return dict(path=self.path)
        return dict(data=np.asarray(self.data), files=self.files)

    def __setstate__(self, state):
        if "path" in state:
            other = ShardTable.load(state["path"])
        else:
            other = ShardTable(state["data"], state["files"])
        self.__dict__.update(other.__dict__)

    # ------------------------------------------------------------- access
    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, s):
        if isinstance(s, slice):
            return [self[i] for i in range(*s.indices(len(self)))]
        s = int(s)
        if s < 0:
            s += len(self)
        if not 0 <= s < len(self):
            raise IndexError(f"shard {s} out of range for {len(self)} shards")
        row = self.data[s]
        entry = dict(
            shard_id=int(row["shard_id"]),
            file=self.file(s),
            n_rows=int(row["n_rows"]),
            n_failures=int(row["n_failures"]),
            sha256=bytes(row["sha256"]).hex(),
            row_offset=int(self.offsets[s]),
        )
        if row["size"] >= 0:
            entry["size"] = int(row["size"])
        return entry

    def file(self, s: int) -> str:
        """Relative file name of shard ``s`` (position in the table)."""
        if self.files is not None:
            return self.files[s]
        return shard_relpath(int(self.data["shard_id"][s]))

    def sha256(self, s: int) -> str:
        return bytes(self.data["sha256"][s]).hex()

    def size(self, s: int) -> int | None:
        v = int(self.data["size"][s])
        return None if v < 0 else v

    @property
    def n_rows(self) -> np.ndarray:
        return self.data["n_rows"]

    @property
    def n_failures(self) -> np.ndarray:
        return self.data["n_failures"]

    @property
    def shard_id(self) -> np.ndarray:
        return self.data["shard_id"]

    # ------------------------------------------------------------- checks
    def check(self) -> None:
        """Vectorised trust checks (raises :class:`TableError` naming the first problem):
        ids in range and strictly increasing, counts and sizes in range, row offsets the
        cumulative row counts."""
        d = self.data
        sid = d["shard_id"]
        for name, high in (("shard_id", MAX_SHARD_ID), ("n_rows", MAX_COUNT)):
            _in_range(d[name], name, 0, high)
        _in_range(d["n_failures"], "n_failures", 0, MAX_COUNT)
        _in_range(d["size"], "size", -1, MAX_COUNT)
        if len(sid) > 1:
            bad = np.flatnonzero(np.diff(sid) <= 0)
            if bad.size:
                i = int(bad[0]) + 1
                raise TableError(f"shard {i}: shard_id {int(sid[i])} repeats or is out of order")
        bad = np.flatnonzero(d["row_offset"] != self.offsets[:-1])
        if bad.size:
            i = int(bad[0])
            raise TableError(
                f"shard {i}: row_offset {int(d['row_offset'][i])}, the rows before it add up "
                f"to {int(self.offsets[i])}"
            )


def _in_range(values: np.ndarray, name: str, low: int, high: int) -> None:
    bad = np.flatnonzero((values < low) | (values > high))
    if bad.size:
        i = int(bad[0])
        raise TableError(f"shard {i}: {name} {int(values[i])} is outside {low}..{high}")


def table_of(entries: Iterable[dict]) -> np.ndarray:
    """The table rows (sorted by shard_id, one per id: the last entry given wins) of a
    stream of entry dicts, without holding the dicts (grows in blocks of 65536 rows)."""
    blocks, block, n = [], np.zeros(_GROW, TABLE_DTYPE), 0
    for e in entries:
        if n == _GROW:
            blocks.append(block)
            block, n = np.zeros(_GROW, TABLE_DTYPE), 0
        size = e.get("size")
        block[n] = (
            e["shard_id"],
            0,
            e["n_rows"],
            e["n_failures"],
            -1 if size is None else size,
            np.frombuffer(bytes.fromhex(e["sha256"]), np.uint8),
        )
        n += 1
    data = np.concatenate(blocks + [block[:n]])
    # a stable sort keeps append order among equal ids; the last of each id wins
    data = data[np.argsort(data["shard_id"], kind="stable")]
    if len(data):
        data = data[np.append(data["shard_id"][1:] != data["shard_id"][:-1], True)]
    data["row_offset"] = np.concatenate([[0], np.cumsum(data["n_rows"])])[: len(data)]
    return data


def write_table(directory, data: np.ndarray) -> tuple[str, int, str]:
    """Write ``data`` as ``index-<sha[:16]>.npy`` in ``directory`` (atomically); returns
    (file name, size, sha256)."""
    import hashlib
    import io

    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(data, dtype=TABLE_DTYPE), allow_pickle=False)
    raw = buf.getvalue()
    digest = hashlib.sha256(raw).hexdigest()
    name = f"index-{digest[:16]}.npy"
    atomic_write_bytes(Path(directory) / name, raw)
    return name, len(raw), digest
