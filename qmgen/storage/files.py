"""File primitives of a dataset directory: fsync, atomic text writes, SHA-256.

Portable Python only (no ``fcntl``); the single-writer lock lives in ``pipeline.lock``.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path


def fsync(path, directory: bool = False) -> None:
    """fsync a file, or a directory so that a rename or a new file in it survives a crash.

    Directory fsync is a POSIX notion; where the OS cannot open a directory (Windows) it is
    skipped, as the rename there is already durable once the file is.
    """
    flags = os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0)
    try:
        fd = os.open(path, flags)
    except PermissionError:
        if directory and os.name == "nt":
            return
        raise
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same directory, fsync and
    rename, then fsync the directory: ``path`` holds the old bytes or the new, never part."""
    atomic_write_pieces(path, [data])


def atomic_write_pieces(path, pieces: Iterable[bytes | str]) -> None:
    """:func:`atomic_write_bytes` of a stream of pieces (str as UTF-8), so a large file
    is written without being held in memory."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            for piece in pieces:
                fh.write(piece.encode("utf-8") if isinstance(piece, str) else piece)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync(path.parent, directory=True)


def atomic_write_text(path, text: str) -> None:
    """:func:`atomic_write_bytes` of ``text`` as UTF-8."""
    atomic_write_bytes(path, text.encode("utf-8"))


def sha256_file(path, chunk: int = 4 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()
