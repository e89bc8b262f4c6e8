"""The dataset subcommands: ``qmgen info``, ``qmgen verify``, ``qmgen export`` (``qmgen
refs`` computes atoms, so it lives in :mod:`qmgen.pipeline.refs`)."""

from __future__ import annotations

import sys

from qmgen.dataset.export import EXPORT_FORMATS, export_parquet
from qmgen.dataset.export_ase import export_ase_db, export_extxyz
from qmgen.dataset.info import dataset_info, format_info, write_plots
from qmgen.dataset.refs import ENERGY_KINDS
from qmgen.dataset.verify import verify_dataset


def _cmd_info(args) -> int:
    info = dataset_info(args.dir, energy_unit=args.energy_unit)
    print(format_info(info))
    if args.plot:
        for path in write_plots(info):
            print(f"wrote {path}")
    return 0


def _cmd_verify(args) -> int:
    problems, summary = verify_dataset(args.dir)
    for note in summary["notes"]:
        print(f"note: {note}")
    for kind, name, message in problems:
        print(f"{kind} {name}: {message}")
    if problems:
        bad = len({name for _, name, _ in problems})
        print(f"FAILED: {len(problems)} problem(s) in {bad} file(s) of {args.dir}", file=sys.stderr)
        return 1
    print(
        f"OK: {args.dir}: {summary['n_shards']} shards, {summary['n_rows']} conformers, "
        f"{summary['n_failures']} failure records; checksums, schema and row counts verified"
    )
    return 0


def _cmd_export(args) -> int:
    common = dict(
        forces=args.forces, include_unconverged=args.include_unconverged, energy=args.energy
    )
    if args.format == "parquet":
        result = export_parquet(args.dir, args.out, dipoles=args.dipoles, **common)
    elif args.format == "extxyz":
        result = export_extxyz(args.dir, args.out, **common)
    else:
        result = export_ase_db(args.dir, args.out, backend=args.format, **common)
    skipped = f" ({result['n_skipped']} unconverged skipped)" if result["n_skipped"] else ""
    print(f"wrote {result['n_rows']} conformers to {result['path']}{skipped}")
    return 0


def register(subparsers) -> None:
    """Add the ``info``, ``verify`` and ``export`` subcommands."""
    p = subparsers.add_parser("info", help="counts, level of theory and label statistics")
    p.add_argument("dir", help="dataset directory")
    p.add_argument("--plot", action="store_true", help="write PNG histograms next to it")
    p.add_argument("--energy-unit", default="hartree", choices=("hartree", "ev"))
    p.set_defaults(func=_cmd_info)

    p = subparsers.add_parser("verify", help="check checksums, schema and row counts")
    p.add_argument("dir", help="dataset directory")
    p.set_defaults(func=_cmd_verify)

    p = subparsers.add_parser(
        "export",
        help="export to QM1B-compatible Parquet, extxyz or an ASE database",
        description="parquet: QM1B's columns (eV, Bohr). extxyz, ase-db (SQLite), aselmdb "
        "(LMDB, needs ase-db-backends): every stored label in eV and Angstrom under the "
        "keys MACE and NequIP read (REF_energy, REF_forces, energy, forces, ...).",
    )
    p.add_argument("dir", help="dataset directory")
    p.add_argument("--format", required=True, choices=EXPORT_FORMATS)
    p.add_argument("out", help="output file")
    p.add_argument(
        "--forces",
        action="store_true",
        help="parquet: add a forces column (eV/Bohr); other formats carry stored forces "
        "always and with --forces refuse a dataset without them",
    )
    p.add_argument("--dipoles", action="store_true", help="parquet: add a dipole column (e*Bohr)")
    p.add_argument(
        "--include-unconverged",
        action="store_true",
        help="also export conformers whose SCF did not converge (QM1B has none)",
    )
    p.add_argument(
        "--energy",
        choices=ENERGY_KINDS,
        default="total",
        help="total (default); referenced: minus the per-element constants of `qmgen refs`",
    )
    p.set_defaults(func=_cmd_export)
