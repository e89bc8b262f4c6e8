"""Errors a user can act on, and the exit codes of the ``qmgen`` command.

Exit codes (README "Safety"):

====  ==================================================================================
0     done
1     done with work left: shards that failed (rerun to retry), or ``verify`` /
      ``validate`` found problems
2     user error: arguments, input file or dataset directory refused (one line says why)
3     environment error: disk full, read-only or unwritable directory, unreachable
      scheduler, another run holding the dataset's lock; fixing the environment and
      rerunning the same command resumes
4     internal error: a bug in qmgen (the traceback is printed)
130   interrupted (Ctrl-C); finished shards are kept
====  ==================================================================================

:class:`UserError` and :class:`EnvironmentProblem` carry one-line messages that name the
problem and what to do. The command line prints them without a traceback (``--debug``
shows it). ``OSError`` from a full disk or an unwritable path is turned into an
:class:`EnvironmentProblem` by :func:`environment_problem`.
"""

from __future__ import annotations

import errno

EXIT_OK, EXIT_INCOMPLETE, EXIT_USER, EXIT_ENVIRONMENT, EXIT_INTERNAL = 0, 1, 2, 3, 4
EXIT_INTERRUPTED = 130

DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
NOT_WRITABLE = (errno.EACCES, errno.EPERM, errno.EROFS)
EXCERPT_CHARS = 60  # characters of an input quoted in a message


class QmgenError(Exception):
    """Base of the errors whose message is meant for the user; ``exit_code`` as above."""

    exit_code = EXIT_INCOMPLETE


class QmgenWarning(UserWarning):
    """Every warning qmgen issues (the test suite turns them into errors)."""


class UserError(QmgenError, ValueError):
    """Refused arguments, input or dataset (exit code 2)."""

    exit_code = EXIT_USER


class EnvironmentProblem(QmgenError):
    """The machine stands in the way: disk, permissions, network, a lock (exit code 3)."""

    exit_code = EXIT_ENVIRONMENT


def excerpt(value, limit: int = EXCERPT_CHARS) -> str:
    """``repr`` of ``value`` (a string stripped first) cut to about ``limit`` characters,
    with its length when cut."""
    if not isinstance(value, str):
        text = repr(value)
        return text if len(text) <= limit else f"{text[: limit - 3]}... ({len(text)} characters)"
    text = value.strip()
    if len(text) <= limit:
        return repr(text)
    return repr(text[: limit - 3] + "...") + f" ({len(text)} characters)"


def clip(message: str, limit: int = 500) -> str:
    """``message`` cut to ``limit`` characters (a marker says how long it was)."""
    message = str(message)
    if len(message) <= limit:
        return message
    return message[: max(limit - 40, 20)] + f"... [{len(message)} characters, cut]"


def is_disk_full(err: BaseException) -> bool:
    """True for ENOSPC / EDQUOT, also when a library (HDF5) only names it in its text."""
    if isinstance(err, OSError) and err.errno in DISK_FULL:
        return True
    text = str(err)
    return "No space left on device" in text or "Disk quota exceeded" in text


def environment_problem(err: BaseException, what: str = "") -> EnvironmentProblem | None:
    """An :class:`EnvironmentProblem` for a full disk or an unwritable path, else None
    (``err`` may be any exception: HDF5 names a full disk only in its message)."""
    filename = getattr(err, "filename", None)
    where = f" {what}" if what else (f" {filename}" if filename else "")
    if is_disk_full(err):
        return EnvironmentProblem(
            f"the disk is full writing{where}; free space, then rerun the same command "
            "(finished shards are kept)"
        )
    if isinstance(err, OSError) and err.errno in NOT_WRITABLE:
        reason = "read-only file system" if err.errno == errno.EROFS else "permission denied"
        return EnvironmentProblem(
            f"cannot write{where}: {reason}; choose a writable --out or fix its permissions"
        )
    return None
