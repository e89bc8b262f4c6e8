"""The ``qmgen`` command line: one subcommand per job, each defined next to its code.

Every subcommand module exposes ``register(subparsers)``, which adds its parser and sets
``func`` to a callable taking the parsed arguments and returning an exit code.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# module paths that define subcommands, in the order ``qmgen --help`` lists them
COMMAND_MODULES = (
    "qmgen.pipeline.cli",  # generate, validate
    "qmgen.chem.cli",  # sample
    "qmgen.inspect",  # info, verify, export
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qmgen", description="Generate DFT datasets with JAX kernels (see README.md)."
    )
    from qmgen import __version__

    parser.add_argument("--version", action="version", version=f"qmgen {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
