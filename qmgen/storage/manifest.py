"""Dataset directory bookkeeping: ``index.json`` and the append-only ``manifest.jsonl``.

A dataset directory::

    DIR/index.json          schema version, level-of-theory attrs, shard list (written
                            atomically; the reader's entry point)
    DIR/manifest.jsonl      one JSON line per finished shard, appended and fsync'd as each
                            shard completes (the crash-safe progress record)
    DIR/shards/shard-000123.h5

A shard is done only when its manifest line exists and the file's SHA-256 matches the
line. A manifest entry is ``dict(shard_id, file, n_rows, n_failures, sha256, size)``
(``file`` relative to DIR, POSIX separators); extra keys are kept. A crash while appending
can leave a torn last line: readers skip it and the next append cuts it off first.

index.json::

    {"schema_version": 2, "attrs": {...}, "n_rows": N, "n_failures": F,
     "row_offsets": [0, n0, n0+n1, ..., N],
     "shards": [{"shard_id", "file", "n_rows", "n_failures", "sha256", "size",
                 "row_offset"}, ...]}          (shards sorted by shard_id)
"""

from __future__ import annotations

import json
import os
import re
import warnings
from pathlib import Path, PurePosixPath

from qmgen.errors import QmgenWarning, UserError, excerpt
from qmgen.storage.files import atomic_write_text, fsync, sha256_file
from qmgen.storage.schema import READABLE_VERSIONS, SCHEMA_VERSION, json_default

INDEX_NAME = "index.json"
MANIFEST_NAME = "manifest.jsonl"
SHARDS_DIR = "shards"
ENTRY_KEYS = ("shard_id", "file", "n_rows", "n_failures", "sha256")
MAX_SHARD_ID = 2**31 - 1
MAX_COUNT = 2**40  # rows or failures of one shard, bytes of a shard file: far above any real one
_SHA256 = re.compile(r"[0-9a-f]{64}")


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
    if not isinstance(name, str) or not name:
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


def shard_filename(shard_id: int) -> str:
    return f"shard-{int(shard_id):06d}.h5"


def shard_path(root, shard_id: int) -> Path:
    """Where shard ``shard_id`` of the dataset at ``root`` lives."""
    return Path(root) / SHARDS_DIR / shard_filename(shard_id)


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
        size = fh.seek(0, os.SEEK_END)
        if size:
            fh.seek(size - 1)
            if fh.read(1) != b"\n":  # torn line from a crash: cut it off
                fh.seek(0)
                fh.truncate(fh.read().rfind(b"\n") + 1)
        fh.seek(0, os.SEEK_END)
        fh.write(line.encode())
        fh.flush()
        os.fsync(fh.fileno())
    if created:
        fsync(path.parent, directory=True)


def read_manifest(root) -> list[dict]:
    """All manifest entries in append order ([] when there is no manifest).

    A torn last line (one without its newline, left by a crash mid-append) is skipped with
    a warning; an invalid complete line (bad JSON, a value out of range, a shard file
    outside ``shards/``) raises :class:`DatasetIndexError` naming the line.
    """
    path = Path(root) / MANIFEST_NAME
    if not path.exists():
        return []
    *lines, torn = path.read_bytes().split(b"\n")
    if torn.strip():  # a line counts only once its newline is written (then fsync'd)
        warnings.warn(f"{path}: ignoring torn last line {torn[:80]!r}", QmgenWarning, stacklevel=2)
    entries = []
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        where = f"{path}, line {number}"
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise DatasetIndexError(f"{where}: not UTF-8 text") from None
        entries.append(check_entry(parse_json(text, where), root, where))
    return entries


def latest_entries(entries) -> list[dict]:
    """One entry per shard_id (the last one appended wins), sorted by shard_id."""
    by_id = {int(e["shard_id"]): e for e in entries}
    return [by_id[k] for k in sorted(by_id)]


def completed_shards(root) -> dict[int, dict]:
    """Shards that count as done: manifest line present and file checksum matching.

    The pipeline resumes by skipping these shard ids and recomputing the others.
    A line whose file is not where this qmgen puts that shard id never counts.
    """
    done = {}
    for entry in latest_entries(read_manifest(root)):
        path = shard_path(root, entry["shard_id"])
        if entry["file"] != path.relative_to(root).as_posix():
            continue
        shard_file(root, entry["file"], f"{MANIFEST_NAME} (shard {entry['shard_id']})")
        if path.is_file() and sha256_file(path) == entry["sha256"]:
            done[int(entry["shard_id"])] = entry
    return done


def build_index(attrs: dict, entries) -> dict:
    """The index.json document for ``entries`` (deduplicated by shard_id, sorted)."""
    shards, offset, failures = [], 0, 0
    for entry in latest_entries(entries):
        shard = dict(entry)
        shard["row_offset"] = offset
        offset += int(entry["n_rows"])
        failures += int(entry["n_failures"])
        shards.append(shard)
    row_offsets = [s["row_offset"] for s in shards] + [offset]
    return dict(
        schema_version=SCHEMA_VERSION,
        attrs=dict(attrs),
        n_rows=offset,
        n_failures=failures,
        row_offsets=row_offsets,
        shards=shards,
    )


def write_index(root, attrs: dict, entries) -> dict:
    """Atomically write ``root/index.json`` for ``entries``; return the document."""
    index = build_index(attrs, entries)
    text = json.dumps(index, indent=1, default=json_default, sort_keys=True)
    atomic_write_text(Path(root) / INDEX_NAME, text + "\n")
    return index


def read_index(root) -> dict:
    """Parsed and validated index.json; raises FileNotFoundError or
    :class:`DatasetIndexError` (malformed JSON, wrong schema, values out of range or
    inconsistent, duplicate shards, shard files outside ``shards/``)."""
    path = Path(root) / INDEX_NAME
    index = load_json(path)
    return check_index(index, root, str(path))


def check_index(index, root, where: str) -> dict:
    """Validate an index.json document (see :func:`read_index`); returns it."""
    if not isinstance(index, dict):
        raise DatasetIndexError(f"{where}: not a JSON object")
    for key in ("schema_version", "attrs", "shards"):
        if key not in index:
            raise DatasetIndexError(f"{where}: missing key {key!r}")
    version = index["schema_version"]
    if type(version) is not int or version not in READABLE_VERSIONS:
        newer = type(version) is int and version > SCHEMA_VERSION
        raise DatasetIndexError(
            f"{where}: schema_version {excerpt(version)}"
            f"{' (a newer qmgen wrote it; upgrade qmgen)' if newer else ''}, this qmgen reads "
            f"{', '.join(map(str, READABLE_VERSIONS))}"
        )
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
    return index
