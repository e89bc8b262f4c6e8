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

    {"schema_version": 1, "attrs": {...}, "n_rows": N, "n_failures": F,
     "row_offsets": [0, n0, n0+n1, ..., N],
     "shards": [{"shard_id", "file", "n_rows", "n_failures", "sha256", "size",
                 "row_offset"}, ...]}          (shards sorted by shard_id)
"""

from __future__ import annotations

import fcntl
import json
import os
import warnings
from pathlib import Path

from qmgen.pipeline.shards import SCHEMA_VERSION, json_default, sha256_file

INDEX_NAME = "index.json"
MANIFEST_NAME = "manifest.jsonl"
SHARDS_DIR = "shards"
ENTRY_KEYS = ("shard_id", "file", "n_rows", "n_failures", "sha256")


class DatasetIndexError(Exception):
    """index.json or manifest.jsonl is missing pieces or cannot be parsed."""


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


def fsync_dir(directory: Path) -> None:
    """fsync a directory, so a rename or a new file in it survives a crash."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_text(path, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file, fsync and rename."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def append_manifest(root, entry: dict) -> None:
    """Append one entry as a JSON line, fsync'd; safe against concurrent appenders (flock).

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
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
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
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
    if created:
        fsync_dir(path.parent)


def read_manifest(root) -> list[dict]:
    """All manifest entries in append order ([] when there is no manifest).

    A torn last line (one without its newline, left by a crash mid-append) is skipped with
    a warning; an invalid complete line raises :class:`DatasetIndexError`.
    """
    path = Path(root) / MANIFEST_NAME
    if not path.exists():
        return []
    *lines, torn = path.read_bytes().split(b"\n")
    if torn.strip():  # a line counts only once its newline is written (then fsync'd)
        warnings.warn(f"{path}: ignoring torn last line {torn[:80]!r}", stacklevel=2)
    entries = []
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            entry = json.loads(raw)
            if not isinstance(entry, dict) or any(k not in entry for k in ENTRY_KEYS):
                raise ValueError(f"not a manifest entry (needs {ENTRY_KEYS})")
        except ValueError as err:
            raise DatasetIndexError(f"{path}, line {number}: {err}") from err
        entries.append(entry)
    return entries


def latest_entries(entries) -> list[dict]:
    """One entry per shard_id (the last one appended wins), sorted by shard_id."""
    by_id = {int(e["shard_id"]): e for e in entries}
    return [by_id[k] for k in sorted(by_id)]


def completed_shards(root) -> dict[int, dict]:
    """Shards that count as done: manifest line present and file checksum matching.

    The pipeline resumes by skipping these shard ids and recomputing the others.
    """
    done = {}
    for entry in latest_entries(read_manifest(root)):
        path = Path(root) / entry["file"]
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
    """Parsed index.json; raises FileNotFoundError or :class:`DatasetIndexError`."""
    path = Path(root) / INDEX_NAME
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as err:
        raise DatasetIndexError(f"{path}: invalid JSON ({err})") from err
    for key in ("schema_version", "attrs", "shards"):
        if key not in index:
            raise DatasetIndexError(f"{path}: missing key {key!r}")
    if index["schema_version"] != SCHEMA_VERSION:
        raise DatasetIndexError(
            f"{path}: schema_version {index['schema_version']}, this qmgen reads {SCHEMA_VERSION}"
        )
    for shard in index["shards"]:
        missing = [k for k in ENTRY_KEYS if k not in shard]
        if missing:
            raise DatasetIndexError(f"{path}: shard entry lacks {missing}: {shard}")
    return index
