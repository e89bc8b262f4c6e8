"""Per-process state of an open dataset: shard table, file handles, checks and caches.

One :class:`Store` is shared by a dataset and all its views. Handles, caches and the
hashing thread belong to the process that made them: after a fork the child parks the
inherited h5py handles (never using or closing them) and opens its own; decoded shards
stay valid (copy-on-write memory). Pickling carries the configuration and the verified
state only, so spawn workers start clean but do not re-hash verified shards.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from qmgen.dataset.columns import ATOM_KEYS, Columns
from qmgen.storage.files import sha256_file
from qmgen.storage.manifest import shard_file
from qmgen.storage.reader import ShardReader, read_molecules
from qmgen.storage.schema import ROW_SCALARS, SPIN_LABELS, CorruptShardError
from qmgen.units import energy_factor, length_factor

# per-conformer fields in energy units: the row scalars, the optional dispersion label and
# the per-spin frontier orbital energies of open-shell datasets
ENERGY_FIELDS = ROW_SCALARS + ("dispersion",) + SPIN_LABELS

VERIFY_MODES = ("once", "none")
MAX_OPEN_FILES = 64
_VERIFIED: dict[tuple[str, int, int], str] = {}  # (path, size, mtime_ns) -> sha256, per process
_INHERITED: list = []  # h5py handles inherited through fork: parked, never used or closed


def _default_cache_bytes() -> int:
    try:
        physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        physical = 8 << 30
    return int(min(2 << 30, physical // 4))


def _stat_and_hash(path) -> tuple[tuple[str, int, int], str]:
    st = os.stat(path)
    return (str(path), st.st_size, st.st_mtime_ns), sha256_file(path)


class Store:
    """Shard table, unit factors and the process-local handles and caches of a dataset."""

    def __init__(
        self, root, index, energy_unit, length_unit, verify, cache_bytes, energy_refs=None
    ):
        if verify not in VERIFY_MODES:
            raise ValueError(f"unknown verify mode {verify!r}; valid: {', '.join(VERIFY_MODES)}")
        self.root = Path(root)
        self.attrs = index.get("attrs", {})
        self.schema_version = int(index["schema_version"])
        self.table = index["table"]  # storage.table.ShardTable (memory-mapped when compact)
        self.n_rows = self.table.n_rows
        self.offsets = self.table.offsets
        self.energy_unit, self.length_unit = energy_unit.lower(), length_unit.lower()
        self.ef, self.lf = energy_factor(energy_unit), length_factor(length_unit)
        self.energy_refs = energy_refs  # per-Z Hartree to subtract (qmgen.dataset.refs)
        self.verify = verify
        self.cache_bytes = _default_cache_bytes() if cache_bytes is None else int(cache_bytes)
        self._reset_process_state()

    def _reset_process_state(self) -> None:
        self._pid = os.getpid()
        self._handles: OrderedDict = OrderedDict()
        self._cache: OrderedDict = OrderedDict()
        self._cache_used = 0
        self._meta: dict = {}
        self._hashing: dict = {}  # shard -> Future of (stat key, sha256) from a thread
        self._executor: ThreadPoolExecutor | None = None
        self._confined: set = set()  # shards whose file resolved inside the dataset

    def __getstate__(self):
        state = {k: v for k, v in self.__dict__.items() if not k.startswith("_")}
        prefix = os.path.join(str(self.root), "")
        state["verified"] = {k: v for k, v in _VERIFIED.items() if k[0].startswith(prefix)}
        return state

    def __setstate__(self, state):
        _VERIFIED.update(state.pop("verified"))
        self.__dict__.update(state)
        self._reset_process_state()

    def check_pid(self) -> None:
        if self._pid != os.getpid():  # forked: decoded caches stay valid, handles do not
            _INHERITED.extend(self._handles.values())
            self._handles = OrderedDict()
            self._hashing, self._executor = {}, None  # threads do not survive fork
            self._pid = os.getpid()

    def path(self, s: int) -> Path:
        """The file of shard ``s`` (position in the table)."""
        return self.root / self.table.file(s)

    def cached(self, s: int) -> Columns | None:
        """Shard ``s`` if it is in this process's cache (no I/O)."""
        return self._cache.get(s)

    def locate(self, g: int) -> tuple[int, int]:
        s = int(self.offsets.searchsorted(g, side="right")) - 1
        return s, g - int(self.offsets[s])

    # ---------------------------------------------------------------- files
    def _confine(self, s: int) -> None:
        """Refuse shard ``s`` unless its file resolves (symlinks followed) inside the
        dataset directory; checked once per process, before the file is read."""
        if s not in self._confined:
            where = f"index.json shard {int(self.table.shard_id[s])}"
            shard_file(self.root, self.table.file(s), where)
            self._confined.add(s)

    def _check_file(self, s: int) -> None:
        self._confine(s)
        path = self.path(s)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            raise CorruptShardError(path, "file is missing (listed in index.json)") from None
        size = self.table.size(s)
        if size is not None and st.st_size != size:
            raise CorruptShardError(
                path, f"size {st.st_size} bytes, index.json says {size} (truncated or replaced)"
            )
        if self.verify == "none":
            return
        key = (str(path), st.st_size, st.st_mtime_ns)
        expected = self.table.sha256(s)
        if _VERIFIED.get(key) == expected:
            return
        future = self._hashing.pop(s, None)
        hashed_key, digest = future.result() if future is not None else (None, None)
        if hashed_key != key:
            digest = sha256_file(path)
        if digest != expected:
            raise CorruptShardError(
                path,
                f"sha256 {digest} does not match index.json ({expected}): "
                "the file is corrupt or was modified",
            )
        _VERIFIED[key] = digest

    def prefetch_verify(self, order, depth: int = 2) -> None:
        """Hash the next unverified shards of ``order`` in a background thread (hashlib
        releases the GIL), at most ``depth`` in flight, so verification overlaps reading."""
        if self.verify == "none":
            return
        self.check_pid()
        for s in order:
            if len(self._hashing) >= depth:
                break
            if s in self._hashing or s in self._handles or not self.n_rows[s]:
                continue
            try:
                self._confine(s)
                path = self.path(s)
                st = os.stat(path)
            except (OSError, ValueError):
                continue  # reported when the shard is opened
            if _VERIFIED.get((str(path), st.st_size, st.st_mtime_ns)) is not None:
                continue
            if self._executor is None:
                self._executor = ThreadPoolExecutor(1, thread_name_prefix="qmgen-sha256")
            self._hashing[s] = self._executor.submit(_stat_and_hash, path)

    def cancel_prefetch(self) -> None:
        for future in self._hashing.values():
            future.cancel()
        self._hashing = {}

    def total_bytes(self, shard_ids) -> int:
        ids = np.asarray(list(shard_ids), dtype=np.int64)
        return int(np.maximum(self.table.data["size"][ids], 0).sum()) if ids.size else 0

    def handle(self, s: int):
        self.check_pid()
        h = self._handles.get(s)
        if h is not None:
            self._handles.move_to_end(s)
            return h
        self._check_file(s)
        h = ShardReader(self.path(s))
        n = h.n_rows
        problem = None
        if n != self.n_rows[s]:
            problem = f"holds {n} rows, index.json says {self.n_rows[s]}"
        elif h.schema_version != self.schema_version:
            problem = (
                f"shard schema version {h.schema_version} in a dataset of version "
                f"{self.schema_version} (index.json)"
            )
        if problem:
            h.close()
            raise CorruptShardError(self.path(s), problem)
        self._handles[s] = h
        if len(self._handles) > MAX_OPEN_FILES:
            self._handles.popitem(last=False)[1].close()
        return h

    def meta(self, s: int) -> tuple[np.ndarray, np.ndarray]:
        """Per-molecule smiles and name of shard ``s`` as object arrays."""
        m = self._meta.get(s)
        if m is None:
            _, smiles, names = read_molecules(self.handle(s).file)
            m = self._meta[s] = (np.array(smiles, dtype=object), np.array(names, dtype=object))
        return m

    def has_forces(self) -> bool:
        nonempty = np.flatnonzero(self.n_rows)
        return bool(nonempty.size) and "forces" in self.handle(int(nonempty[0])).columns

    def has_dispersion(self) -> bool:
        nonempty = np.flatnonzero(self.n_rows)
        return bool(nonempty.size) and "dispersion" in self.handle(int(nonempty[0])).columns

    def has_spin(self) -> bool:
        nonempty = np.flatnonzero(self.n_rows)
        return bool(nonempty.size) and "s2" in self.handle(int(nonempty[0])).columns

    # ---------------------------------------------------------------- decoding
    def _decode(self, s: int, raw: dict) -> Columns:
        ef, lf = self.ef, self.lf
        conf = {k: raw[k] for k in raw if k not in ATOM_KEYS}
        if self.energy_refs is not None:
            from qmgen.dataset.refs import per_conformer

            conf["energy"] = conf["energy"] - per_conformer(
                self.energy_refs, raw["z"], raw["atom_offset"]
            )
        for k in ENERGY_FIELDS:
            if ef != 1.0 and k in conf:
                conf[k] = conf[k] * ef
        if lf != 1.0:
            conf["dipole"] = conf["dipole"] * lf
        smiles, names = self.meta(s)
        conf["smiles"] = smiles[conf["molecule_row"]]
        conf["name"] = names[conf["molecule_row"]]
        atoms = {"z": raw["z"], "positions": raw["positions"] * lf if lf != 1 else raw["positions"]}
        atoms["charges"] = raw["charges"]
        if "forces" in raw:
            atoms["forces"] = raw["forces"] * (ef / lf) if ef != lf else raw["forces"]
        if "spin_populations" in raw:
            atoms["spin_populations"] = raw["spin_populations"]
        mo = raw["mo_energy"] * ef if ef != 1 else raw["mo_energy"]
        for k in ("atom_offset", "mo_offset", "mo_energy"):
            conf.pop(k, None)
        return Columns(conf, atoms, raw["atom_offset"], mo, raw["mo_offset"])

    def shard(self, s: int) -> Columns | None:
        """Whole shard ``s`` decoded, from or into the LRU cache (None if it cannot fit)."""
        cols = self._cache.get(s)
        if cols is not None:
            self._cache.move_to_end(s)
            return cols
        reader = self.handle(s)
        if os.path.getsize(self.path(s)) > self.cache_bytes:
            return None
        cols = self._decode(s, reader.read_block()).freeze()
        self._cache[s] = cols
        self._cache_used += cols.nbytes
        while self._cache_used > self.cache_bytes and len(self._cache) > 1:
            self._cache_used -= self._cache.popitem(last=False)[1].nbytes
        return cols

    def rows(self, s: int, start: int, stop: int) -> Columns:
        """Contiguous rows of shard ``s`` (cache if present, else HDF5 slices)."""
        cols = self._cache.get(s)
        if cols is not None:
            return cols.slice(start, stop)
        return self._decode(s, self.handle(s).read_block(start, stop))

    def gather(self, s: int, local: np.ndarray) -> Columns:
        """Rows ``local`` (any order) of shard ``s``."""
        lo, hi = int(local.min()), int(local.max()) + 1
        if hi - lo == len(local) and np.all(np.diff(local) == 1):
            return self.rows(s, lo, hi)
        if s not in self._cache and hi - lo <= 8 * len(local):
            return self.rows(s, lo, hi).take(local - lo)
        cols = self.shard(s)
        if cols is None:
            return self.rows(s, lo, hi).take(local - lo)
        return cols.take(local)
