"""One writer per dataset directory: an advisory lock on ``DIR/.qmgen.lock``.

``qmgen generate`` takes the lock before it writes anything into the directory and holds
it to the end. The lock is ``flock(2)`` on an open file, so the kernel drops it when the
holder exits in any way (SIGKILL included): a killed run never blocks its own resume, and
no stale lock file needs cleaning up (the file stays; only the lock on it matters). The
holder writes its host, pid and start time into the file so a refused run can name it.
The descriptor is close-on-exec, so worker processes started by spawn do not inherit it.

On network file systems flock is only as good as the server's lock support (NFSv4 maps
it to byte-range locks; some parallel file systems ignore it): run one generate per
output directory there.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import time
from pathlib import Path

from qmgen.errors import EnvironmentProblem

LOCK_NAME = ".qmgen.lock"
log = logging.getLogger("qmgen.pipeline")


class DatasetLocked(EnvironmentProblem):
    """Another process holds the dataset directory's lock."""


def _holder(fd: int) -> str:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        doc = json.loads(os.read(fd, 4096).decode() or "{}")
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(doc["since"])))
        return f"host {doc['host']}, pid {doc['pid']}, since {since}"
    except (ValueError, KeyError, TypeError, OSError):
        return "a process that has not written its name yet"


class DirectoryLock:
    """Context manager holding the writer lock of ``root`` (created if needed).

    ``wait``: block until the holder is done instead of raising :class:`DatasetLocked`.
    """

    def __init__(self, root, wait: bool = False):
        self.root, self.wait = Path(root), wait
        self.fd: int | None = None

    @property
    def path(self) -> Path:
        return self.root / LOCK_NAME

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _holder(fd)
                if not self.wait:
                    raise DatasetLocked(
                        f"{self.root} is being written by another qmgen generate ({holder}); "
                        "wait for it to finish, pass --wait to queue behind it, or choose "
                        "another --out"
                    ) from None
                log.info("waiting for the run that holds %s (%s)", self.path, holder)
                fcntl.flock(fd, fcntl.LOCK_EX)
            me = dict(host=socket.gethostname(), pid=os.getpid(), since=time.time())
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(me) + "\n").encode(), 0)
        except BaseException:
            os.close(fd)
            raise
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            fd, self.fd = self.fd, None
            os.close(fd)  # closing the descriptor drops the flock

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *exc):
        self.release()
