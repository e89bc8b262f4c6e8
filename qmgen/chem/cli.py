"""``qmgen sample``: write random valid small molecules as SMILES, one per line.

Imports RDKit only when the command runs, so ``qmgen --help`` works without it.
"""

from __future__ import annotations

import argparse
import os
import sys


def register(subparsers) -> None:
    """Add the ``sample`` subcommand to ``subparsers`` (from ``argparse``)."""
    p = subparsers.add_parser(
        "sample",
        help="write random valid small molecules (canonical SMILES)",
        description=(
            "Sample unique, RDKit-valid, neutral closed-shell molecules with exactly "
            "--heavy-atoms heavy atoms, reproducibly for a given --seed."
        ),
    )
    p.add_argument("-n", type=int, default=1000, help="number of molecules (default 1000)")
    p.add_argument("--heavy-atoms", type=int, default=9, help="heavy atoms each (default 9)")
    p.add_argument("--elements", default="CNOF", help="heavy elements, e.g. CNOF (default)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument(
        "--no-embed-check",
        action="store_true",
        help="skip the 3-D embedding check of each molecule (faster)",
    )
    p.add_argument("-o", "--output", default=None, help="output .smi file (default: stdout)")
    p.set_defaults(func=run_sample)


def run_sample(args: argparse.Namespace) -> int:
    """Run ``qmgen sample``; returns the exit code (0 ok, 2 bad arguments)."""
    from qmgen.chem.sampler import sample_molecules

    try:
        smiles = sample_molecules(
            args.n,
            heavy_atoms=args.heavy_atoms,
            elements=args.elements,
            seed=args.seed,
            check_embed=not args.no_embed_check,
        )
    except ValueError as err:
        print(f"qmgen sample: error: {err}", file=sys.stderr)
        return 2
    text = "".join(f"{s}\n" for s in smiles)
    if args.output in (None, "-"):
        sys.stdout.write(text)
    else:
        tmp = f"{args.output}.tmp{os.getpid()}"
        with open(tmp, "w") as fh:
            fh.write(text)
        os.replace(tmp, args.output)
        print(f"wrote {len(smiles)} SMILES to {args.output}", file=sys.stderr)
    return 0
