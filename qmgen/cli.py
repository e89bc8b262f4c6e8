"""The ``qmgen`` command line: one subcommand per job, each defined next to its code.

Every subcommand module exposes ``register(subparsers)``, which adds its parser and sets
``func`` to a callable taking the parsed arguments and returning an exit code.
"""

from __future__ import annotations

import _thread
import argparse
import importlib
import signal
import sys
import traceback

# module paths that define subcommands, in the order ``qmgen --help`` lists them
COMMAND_MODULES = (
    "qmgen.pipeline.cli",  # generate, validate
    "qmgen.pipeline.merge",  # merge
    "qmgen.chem.cli",  # sample
    "qmgen.dataset.cli",  # info, verify, export
    "qmgen.pipeline.refs",  # refs
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qmgen",
        description="Generate DFT datasets with JAX kernels (see README.md).",
        epilog="Exit codes: 0 done, 1 done with failed shards or problems found, 2 user "
        "error, 3 environment error (disk, permissions, network, lock), 4 internal error, "
        "130 interrupted.",
    )
    from qmgen import __version__

    parser.add_argument("--version", action="version", version=f"qmgen {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    for command in sub.choices.values():
        command.add_argument("--debug", action="store_true", help="show the traceback of an error")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand; errors become one line on stderr and an exit code
    (:mod:`qmgen.errors`), with the traceback only under ``--debug``."""
    from qmgen.errors import (
        EXIT_ENVIRONMENT,
        EXIT_INTERNAL,
        EXIT_INTERRUPTED,
        EXIT_USER,
        QmgenError,
        environment_problem,
    )

    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USER
    prefix = f"qmgen {args.command}"
    sys.unraisablehook = _keep_interrupts
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C changes nothing
        print(
            f"\n{prefix}: interrupted; finished work is kept: rerun the same command to go on",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    except Exception as err:  # noqa: BLE001 - every error ends as one line and a code
        if args.debug:
            traceback.print_exc()
        if isinstance(err, OSError):
            err = environment_problem(err) or err
        if isinstance(err, QmgenError):
            code = err.exit_code
        elif isinstance(
            err, (ValueError, FileNotFoundError, IsADirectoryError, NotADirectoryError)
        ):
            code = EXIT_USER  # refused options and paths raised as the builtin types
        elif isinstance(err, OSError):
            code = EXIT_ENVIRONMENT  # I/O errors, network: the machine, not qmgen
        else:
            if not args.debug:
                traceback.print_exc()
            print(f"{prefix}: internal error (a bug in qmgen; please report it)", file=sys.stderr)
            return EXIT_INTERNAL
        text = " ".join(str(err).split()) or type(err).__name__
        print(f"{prefix}: error: {text}", file=sys.stderr)
        return code


def _keep_interrupts(unraisable) -> None:
    """A Ctrl-C that lands in a callback Python cannot raise from (a garbage-collection
    hook of JAX, say) is raised again in the main thread instead of being lost."""
    if isinstance(unraisable.exc_value, KeyboardInterrupt):
        _thread.interrupt_main()
        return
    sys.__unraisablehook__(unraisable)


if __name__ == "__main__":
    sys.exit(main())
