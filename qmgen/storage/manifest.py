"""Dataset directory bookkeeping: ``index.json``, its shard table and ``manifest.jsonl``.

A dataset directory::

    DIR/index.json            schema version, level-of-theory attrs, totals and the name,
                              size and SHA-256 of the shard table (written atomically, last;
                              the reader's entry point)
    DIR/index-<sha16>.npy     the shard table (``storage.table``): 72 bytes per shard,
                              memory-mapped by readers
    DIR/manifest.jsonl        one JSON line per finished shard, appended and fsync'd as each
                              shard completes (the crash-safe progress record)
    DIR/shards/0000/shard-000123.h5   (``table.shard_relpath``: 1000 files per directory)

A shard is done only when its manifest line exists and the file's SHA-256 matches the
line. A manifest entry is ``dict(shard_id, file, n_rows, n_failures, sha256, size)``
(``file`` relative to DIR, POSIX separators); extra keys are kept. A crash while appending
can leave a torn last line: readers skip it and the next append cuts it off first.

index.json (``index_format`` 2)::

    {"schema_version": 2, "index_format": 2, "attrs": {...}, "n_rows": N,
     "n_failures": F, "n_shards": S, "shard_layout": "nested-1000",
     "table": {"file": "index-<sha16>.npy", "size": bytes, "sha256": hex}}

Older qmgen wrote the shard list into index.json itself (no ``index_format``)::

    {"schema_version": 1|2, "attrs": {...}, "n_rows": N, "n_failures": F,
     "row_offsets": [0, n0, ..., N], "shards": [{"shard_id", "file", "n_rows",
     "n_failures", "sha256", "size", "row_offset"}, ...]}   (flat shards/shard-NNNNNN.h5)

Such datasets still read: :func:`read_index` returns both forms as the same document,
with ``table`` a :class:`~qmgen.storage.table.ShardTable`.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from pathlib import Path, PurePosixPath

import numpy as np

from qmgen.errors import QmgenWarning, UserError, excerpt
from qmgen.storage.files import atomic_write_text, fsync, sha256_file
from qmgen.storage.schema import READABLE_VERSIONS, SCHEMA_VERSION, json_default
from qmgen.storage.table import (
    MAX_COUNT,
    MAX_SHARD_ID,
    SHARDS_DIR,
    ShardTable,
    TableError,
    shard_relpath,
    table_of,
    write_table,
)

INDEX_NAME = "index.json"
MANIFEST_NAME = "manifest.jsonl"
INDEX_FORMAT = 2  # index.json with a binary shard table; absent: the JSON shard list
SHARD_LAYOUT = "nested-1000"  # shards/GGGG/shard-NNNNNN.h5, see storage.table
ENTRY_KEYS = ("shard_id", "file", "n_rows", "n_failures", "sha256")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_TABLE_NAME = re.compile(r"index-[0-9a-f]{16}\.npy")
_LAYOUT_NAME = re.compile(r"shards/(?:[0-9]{4,}/)?shard-[0-9]{6,}\.h5")


class DatasetIndexError(UserError):
    """index.json or manifest.jsonl is missing pieces, cannot be parsed, or holds values
    that cannot be trusted (negative counts, shard files outside the dataset)."""


# ------------------------------------------------------------------ trust checks
def _count(entry: dict, key: str, where: str, high: int = MAX_COUNT) -> int:
    value = entry[key]
    if type(value) is not int or not 0 <= value <= high:  # bool and float refused too
        raise DatasetIndexError(
            f"{where}: {key} must be an integer in 0..{high}, got {excerpt(value)}"
        )
    return value


def shard_file(root, name, where: str = "", resolve: bool = True) -> Path:
    """The path of shard file ``name`` (as written in index/manifest) inside ``root``.

    Accepted only as a relative POSIX name below ``shards/`` ending in ``.h5``, without
    ``..``, that resolves (symlinks followed) inside the dataset directory; anything else
    raises :class:`DatasetIndexError` naming the entry, so a hostile index can never make
    qmgen read (or hash, or serve rows of) a file elsewhere. ``resolve=False`` checks the
    name only (no file system access; whoever opens the file resolves it then).
    """
    where = where or "shard entry"
    bad = None
    if isinstance(name, str) and _LAYOUT_NAME.fullmatch(name):
        pass  # a name qmgen writes (nested or flat): plain and relative, no parsing needed
    elif not isinstance(name, str) or not name:
        bad = "is not a file name"
    elif "\\" in name or "\0" in name or ":" in name:
        bad = "contains a backslash, colon or NUL"
    else:
        parts = PurePosixPath(name).parts
        if PurePosixPath(name).is_absolute():
            bad = "is an absolute path"
        elif ".." in parts or "." in parts or name != PurePosixPath(name).as_posix():
            bad = "is not a plain relative path"
        elif len(parts) < 2 or parts[0] != SHARDS_DIR or not name.endswith(".h5"):
            bad = f"is not an .h5 file below {SHARDS_DIR}/"
    if bad is None and resolve:
        base = os.path.realpath(root)
        real = os.path.realpath(os.path.join(base, name))
        if os.path.commonpath([base, real]) != base:
            bad = "resolves (through a symlink) outside the dataset directory"
    if bad:
        raise DatasetIndexError(f"{where}: shard file {excerpt(name)} {bad}; refused")
    return Path(root) / name


def check_entry(entry, root, where: str, resolve: bool = False) -> dict:
    """Validate one shard entry of index.json or manifest.jsonl (types, ranges, file name;
    with ``resolve`` also where the file resolves, see :func:`shard_file`); returns it.
    Raises :class:`DatasetIndexError` naming ``where``."""
    if not isinstance(entry, dict):
        raise DatasetIndexError(f"{where}: not a shard entry (a JSON object), got {excerpt(entry)}")
    missing = [k for k in ENTRY_KEYS if k not in entry]
    if missing:
        raise DatasetIndexError(f"{where}: shard entry lacks {missing}")
    sid = _count(entry, "shard_id", where, MAX_SHARD_ID)
    where = f"{where} (shard {sid})"
    _count(entry, "n_rows", where)
    _count(entry, "n_failures", where)
    if entry.get("size") is not None:
        _count(entry, "size", where)
    if "row_offset" in entry:
        _count(entry, "row_offset", where, 2**62)
    if not is_sha256(entry["sha256"]):
        raise DatasetIndexError(f"{where}: sha256 is not 64 hex digits: {excerpt(entry['sha256'])}")
    shard_file(root, entry["file"], where, resolve)
    return entry


def is_sha256(value) -> bool:
    """True for a SHA-256 digest as qmgen writes it (64 lowercase hex digits)."""
    return isinstance(value, str) and _SHA256.fullmatch(value) is not None


def load_json(path):
    """Parsed JSON document of ``path``; malformed JSON (or JSON nested beyond reason)
    raises :class:`DatasetIndexError` naming the file, line and column."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise DatasetIndexError(
            f"{path}: not UTF-8 text ({err.reason} at byte {err.start})"
        ) from None
    return parse_json(text, str(path))


def parse_json(text: str, where: str):
    """``json.loads(text)`` with errors as :class:`DatasetIndexError` naming ``where``."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise DatasetIndexError(
            f"{where}: invalid JSON at line {err.lineno}, column {err.colno} ({err.msg})"
        ) from None
    except RecursionError:
        raise DatasetIndexError(f"{where}: JSON nested too deeply to be a qmgen file") from None
    except ValueError as err:  # e.g. an integer of more than 4300 digits
        raise DatasetIndexError(f"{where}: unreadable JSON value ({err})") from None


def shard_path(root, shard_id: int) -> Path:
    """Where shard ``shard_id`` of the dataset at ``root`` lives (nested directories of
    1000 files, :func:`~qmgen.storage.table.shard_relpath`)."""
    return Path(root) / shard_relpath(shard_id)


def manifest_entry(info: dict, root) -> dict:
    """Manifest entry for the dict returned by ``write_shard`` (file made relative to root)."""
    path = Path(info["path"]).resolve()
    entry = dict(
        shard_id=int(info["shard_id"]),
        file=path.relative_to(Path(root).resolve()).as_posix(),
        n_rows=int(info["n_rows"]),
        n_failures=int(info["n_failures"]),
        sha256=info["sha256"],
    )
    if "size" in info:
        entry["size"] = int(info["size"])
    return entry


def append_manifest(root, entry: dict) -> None:
    """Append one entry as a JSON line, fsync'd. One process appends: ``qmgen generate``'s
    driver, which holds the directory lock (``pipeline.lock``) for the whole run.

    A torn last line left by a crash is cut off before appending.
    """
    missing = [k for k in ENTRY_KEYS if k not in entry]
    if missing:
        raise ValueError(f"manifest entry lacks {missing}: {entry}")
    line = json.dumps(entry, default=json_default, sort_keys=True) + "\n"
    path = Path(root) / MANIFEST_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    created = not path.exists()
    with open(path, "ab+") as fh:
        cut_torn_tail(fh)
        fh.write(line.encode())
        fh.flush()
        os.fsync(fh.fileno())
    if created:
        fsync(path.parent, directory=True)


def cut_torn_tail(fh) -> None:
    """Cut a torn last line (no newline: a crash mid-append) off a manifest opened with
    ``"ab+"``, leaving the position at the end for the next line."""
    size = fh.seek(0, os.SEEK_END)
    if size:
        fh.seek(size - 1)
        if fh.read(1) != b"\n":
            block = min(size, 1 << 16)
            while True:  # find the last newline reading backwards, a block at a time
                fh.seek(size - block)
                end = fh.read(block).rfind(b"\n")
                if end >= 0 or block == size:
                    break
                block = min(size, 2 * block)
            fh.truncate(size - block + end + 1 if end >= 0 else 0)
    fh.seek(0, os.SEEK_END)


def read_manifest(root) -> list[dict]:
    """All manifest entries in append order ([] when there is no manifest); see
    :func:`iter_manifest`."""
    return list(iter_manifest(root))


def iter_manifest(root):
    """Manifest entries in append order, read line by line (nothing when there is no
    manifest), so a million-line manifest streams in constant memory.

    A torn last line (one without its newline, left by a crash mid-append) is skipped with
    a warning; an invalid complete line (bad JSON, a value out of range, a shard file
    outside ``shards/``) raises :class:`DatasetIndexError` naming the line.
    """
    path = Path(root) / MANIFEST_NAME
    try:
        fh = open(path, "rb")
    except FileNotFoundError:
        return
    with fh:
        for number, raw in enumerate(fh, start=1):
            if not raw.endswith(b"\n"):  # a line counts only once its newline is written
                if raw.strip():
                    warnings.warn(
                        f"{path}: ignoring torn last line {raw[:80]!r}", QmgenWarning, stacklevel=2
                    )
                break
            if not raw.strip():
                continue
            where = f"{path}, line {number}"
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise DatasetIndexError(f"{where}: not UTF-8 text") from None
            yield check_entry(parse_json(text, where), root, where)


def latest_entries(entries) -> list[dict]:
    """One entry per shard_id (the last one appended wins), sorted by shard_id."""
    by_id = {int(e["shard_id"]): e for e in entries}
    return [by_id[k] for k in sorted(by_id)]


def completed_shards(root) -> dict[int, dict]:
    """Shards that count as done, by shard id (see :func:`iter_completed`)."""
    return {int(e["shard_id"]): e for e in iter_completed(root)}


def iter_completed(root):
    """Manifest entries of the shards that count as done: the last line of each shard id,
    its file where this qmgen puts that id, the file's SHA-256 matching the line.

    The pipeline resumes by skipping these shard ids and recomputing the others. Two
    passes over the manifest (the first keeps 8 bytes a line to find each id's last line),
    so a million-line manifest is checked without holding its entries.
    """
    ids = np.fromiter((e["shard_id"] for e in iter_manifest(root)), dtype=np.int64)
    if not ids.size:
        return
    _, first_from_end = np.unique(ids[::-1], return_index=True)
    last = np.zeros(ids.size, dtype=bool)
    last[ids.size - 1 - first_from_end] = True
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", QmgenWarning)  # a torn tail: warned on the first pass
        for k, entry in enumerate(iter_manifest(root)):
            if k >= ids.size or not last[k]:
                continue
            sid = int(entry["shard_id"])
            if entry["file"] != shard_relpath(sid):
                continue
            path = shard_file(root, entry["file"], f"{MANIFEST_NAME} (shard {sid})")
            if path.is_file() and sha256_file(path) == entry["sha256"]:
                yield entry


def build_index(attrs: dict, entries) -> dict:
    """An in-memory index document (as :func:`read_index` returns) of manifest entries
    (deduplicated by shard_id, last wins; sorted), keeping their file names: a dataset
    whose run has not written index.json yet."""
    shards = latest_entries(entries)
    table = ShardTable.from_entries(shards)
    return dict(
        schema_version=SCHEMA_VERSION,
        attrs=dict(attrs),
        n_rows=int(table.offsets[-1]),
        n_failures=int(table.n_failures.sum()),
        n_shards=len(table),
        table=table,
    )


def _derived_names(entries):
    """Entries whose ``file`` is where the nested layout puts their shard id (the compact
    table stores no names); anything else is a writer bug and raises ``ValueError``."""
    for e in entries:
        if e.get("file", shard_relpath(e["shard_id"])) != shard_relpath(e["shard_id"]):
            raise ValueError(
                f"shard {e['shard_id']}: file {e['file']!r} is not its place in the layout "
                f"({shard_relpath(e['shard_id'])})"
            )
        yield e


def write_index(root, attrs: dict, entries) -> dict:
    """Write the shard table of ``entries`` (any iterable of manifest entries, streamed;
    deduplicated by shard_id, last wins) and then, atomically, ``root/index.json`` naming
    it; older tables of ``root`` are removed afterwards. Returns the header document."""
    root = Path(root)
    data = table_of(_derived_names(entries))
    name, size, digest = write_table(root, data)
    header = dict(
        schema_version=SCHEMA_VERSION,
        index_format=INDEX_FORMAT,
        attrs=dict(attrs),
        n_rows=int(data["n_rows"].sum()),
        n_failures=int(data["n_failures"].sum()),
        n_shards=len(data),
        shard_layout=SHARD_LAYOUT,
        table=dict(file=name, size=size, sha256=digest),
    )
    text = json.dumps(header, indent=1, default=json_default, sort_keys=True)
    atomic_write_text(root / INDEX_NAME, text + "\n")
    for old in root.glob("index-*.npy"):
        if old.name != name and _TABLE_NAME.fullmatch(old.name):
            old.unlink(missing_ok=True)
    return header


def read_index(root) -> dict:
    """Parsed and validated index.json with its shard table: a dict of schema_version,
    attrs, n_rows, n_failures, n_shards and ``table`` (a
    :class:`~qmgen.storage.table.ShardTable`, memory-mapped for a compact index; then
    ``table_spec`` is index.json's own ``table`` entry: file, size, sha256).

    Raises FileNotFoundError or :class:`DatasetIndexError` (malformed JSON, wrong schema,
    values out of range or inconsistent, duplicate shards, shard files outside
    ``shards/``, a table file missing, truncated or of another dtype)."""
    path = Path(root) / INDEX_NAME
    index = load_json(path)
    return check_index(index, root, str(path))


def _check_version(index: dict, where: str) -> None:
    version = index["schema_version"]
    if type(version) is not int or version not in READABLE_VERSIONS:
        newer = type(version) is int and version > SCHEMA_VERSION
        raise DatasetIndexError(
            f"{where}: schema_version {excerpt(version)}"
            f"{' (a newer qmgen wrote it; upgrade qmgen)' if newer else ''}, this qmgen reads "
            f"{', '.join(map(str, READABLE_VERSIONS))}"
        )


def check_index(index, root, where: str) -> dict:
    """Validate an index.json document (see :func:`read_index`); returns the document
    with its ``table``."""
    if not isinstance(index, dict):
        raise DatasetIndexError(f"{where}: not a JSON object")
    if "index_format" not in index:
        return _check_json_index(index, root, where)
    fmt = index["index_format"]
    if fmt != INDEX_FORMAT:
        raise DatasetIndexError(
            f"{where}: index_format {excerpt(fmt)}, this qmgen reads {INDEX_FORMAT} "
            "(and the older JSON shard list); upgrade qmgen"
        )
    for key in ("schema_version", "attrs", "table", "n_rows", "n_failures", "n_shards"):
        if key not in index:
            raise DatasetIndexError(f"{where}: missing key {key!r}")
    _check_version(index, where)
    if not isinstance(index["attrs"], dict) or not isinstance(index["table"], dict):
        raise DatasetIndexError(f"{where}: attrs and table must be objects")
    if index.get("shard_layout") != SHARD_LAYOUT:
        raise DatasetIndexError(
            f"{where}: shard_layout {excerpt(index.get('shard_layout'))}, this qmgen knows "
            f"{SHARD_LAYOUT!r}"
        )
    spec = index["table"]
    name = spec.get("file")
    if not isinstance(name, str) or not _TABLE_NAME.fullmatch(name):
        raise DatasetIndexError(f"{where}: table file {excerpt(name)} is not index-<hex16>.npy")
    size = _count(spec, "size", f"{where}: table") if "size" in spec else None
    table_path = Path(root) / name
    try:
        actual = os.stat(table_path).st_size
    except FileNotFoundError:
        raise DatasetIndexError(f"{where}: its shard table {name} is missing") from None
    if size is not None and actual != size:
        raise DatasetIndexError(
            f"{where}: shard table {name} has {actual} bytes, index.json says {size} "
            "(truncated or replaced)"
        )
    try:
        table = ShardTable.load(table_path)
        table.check()
    except TableError as err:
        raise DatasetIndexError(f"{table_path}: {err}") from None
    totals = dict(
        n_shards=len(table),
        n_rows=int(table.offsets[-1]),
        n_failures=int(table.n_failures.sum()),
    )
    for key, value in totals.items():
        if index[key] != value:
            raise DatasetIndexError(
                f"{where}: {key} {excerpt(index[key])}, the shard table adds up to {value}"
            )
    return dict(index, table=table, table_spec=spec)


def _check_json_index(index: dict, root, where: str) -> dict:
    """The JSON shard list of an index.json written by an older qmgen."""
    for key in ("schema_version", "attrs", "shards"):
        if key not in index:
            raise DatasetIndexError(f"{where}: missing key {key!r}")
    _check_version(index, where)
    if not isinstance(index["attrs"], dict) or not isinstance(index["shards"], list):
        raise DatasetIndexError(f"{where}: attrs must be an object and shards a list")
    ids, files, offset, failures = set(), set(), 0, 0
    for i, shard in enumerate(index["shards"]):
        check_entry(shard, root, f"{where}: shards[{i}]")
        sid, name = shard["shard_id"], shard["file"]
        if sid in ids or name in files:
            raise DatasetIndexError(f"{where}: shards[{i}] repeats shard {sid} or its file")
        ids.add(sid)
        files.add(name)
        if shard.get("row_offset", offset) != offset:
            raise DatasetIndexError(
                f"{where}: shards[{i}] row_offset {shard['row_offset']}, the rows before it "
                f"add up to {offset}"
            )
        offset += shard["n_rows"]
        failures += shard["n_failures"]
    for key, value in dict(n_rows=offset, n_failures=failures).items():
        if key in index and index[key] != value:
            raise DatasetIndexError(
                f"{where}: {key} {excerpt(index[key])}, the shards add up to {value}"
            )
    if "row_offsets" in index:
        offsets = [0]
        for shard in index["shards"]:
            offsets.append(offsets[-1] + shard["n_rows"])
        if index["row_offsets"] != offsets:
            raise DatasetIndexError(f"{where}: row_offsets disagree with the shards' n_rows")
    table = ShardTable.from_entries(index["shards"])
    doc = {k: v for k, v in index.items() if k not in ("shards", "row_offsets")}
    doc.update(n_rows=offset, n_failures=failures, n_shards=len(table), table=table)
    return doc
