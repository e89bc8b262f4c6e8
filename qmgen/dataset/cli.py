"""The dataset subcommands: ``qmgen info``, ``qmgen verify``, ``qmgen export``,
``qmgen refs``."""

from __future__ import annotations

import sys

from qmgen.dataset.export import EXPORT_FORMATS, export_parquet
from qmgen.dataset.export_ase import export_ase_db, export_extxyz
from qmgen.dataset.info import dataset_info, format_info, write_plots
from qmgen.dataset.refs import ENERGY_KINDS, fit_references, write_references
from qmgen.dataset.verify import verify_dataset

# `qmgen refs` options for isolated atoms without a dataset (DIR brings its own)
REFS_ONLY_WITHOUT_DIR = (
    "xc",
    "basis",
    "grid_level",
    "precision",
    "conv_tol",
    "density_fit",
    "elements",
    "out",
)


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


def _print_atoms(doc: dict) -> None:
    from qmgen.units import HARTREE_TO_EV

    meta = doc["atoms_meta"]
    level = meta["level"]
    print(
        f"isolated-atom energies ({level['xc']}/{level['basis']}, grid level "
        f"{level['grid_level']}, {level['precision']}; ground-state multiplicities):"
    )
    for sym, value in doc["atoms"].items():
        mult, s2 = meta["multiplicity"][sym], meta["s2"][sym]
        pure = (mult - 1) / 2 * ((mult - 1) / 2 + 1)
        print(
            f"  {sym:2s} {meta['scf'][sym]} 2S+1={mult}  {value:18.10f} Ha  "
            f"{value * HARTREE_TO_EV:16.6f} eV  <S^2> {s2:.4f} (pure spin {pure:.4f})"
        )


def _refs_without_dataset(args) -> int:
    from qmgen.dataset.refs import isolated_atom_energies, write_references_file
    from qmgen.errors import UserError

    missing = [f"--{k}" for k in ("xc", "basis", "elements") if getattr(args, k) is None]
    if missing:
        raise UserError(
            "qmgen refs without DIR computes isolated-atom energies and needs "
            f"{', '.join(missing)} (or give a dataset directory)"
        )
    elements = [e for e in args.elements.replace(" ", "").split(",") if e]
    doc = isolated_atom_energies(
        elements,
        xc=args.xc,
        basis=args.basis,
        grid_level=0 if args.grid_level is None else args.grid_level,
        precision=args.precision or "float64",
        conv_tol=1e-9 if args.conv_tol is None else args.conv_tol,
        density_fit=args.density_fit,
    )
    _print_atoms(doc)
    if args.out:
        print(f"wrote {write_references_file(args.out, doc)}")
    return 0


def _cmd_refs(args) -> int:
    from qmgen.dataset import open_dataset
    from qmgen.dataset.refs import (
        ReferenceEnergyError,
        combine_references,
        dataset_elements,
        dataset_level,
        isolated_atom_energies,
        read_references,
        same_level,
    )
    from qmgen.errors import UserError
    from qmgen.molecule import SYMBOLS
    from qmgen.units import HARTREE_TO_EV

    if args.dir is None:
        return _refs_without_dataset(args)
    given = [
        f"--{k.replace('_', '-')}" for k in REFS_ONLY_WITHOUT_DIR if getattr(args, k) is not None
    ]
    if given:
        raise UserError(
            f"{', '.join(given)}: only without DIR; qmgen refs DIR takes the level of theory "
            "and the elements from the dataset and writes DIR/refs.json"
        )
    ds = open_dataset(args.dir)
    try:
        old = read_references(args.dir)
    except ReferenceEnergyError as err:
        print(f"note: replacing it: {err}", file=sys.stderr)
        old = None
    try:
        fit = fit_references(ds, include_unconverged=args.include_unconverged)
    except ReferenceEnergyError as err:
        if not args.atoms:
            raise
        print(f"note: no least-squares constants (energy='referenced'): {err}", file=sys.stderr)
        fit = None
    atoms = None
    if args.atoms:
        atoms = isolated_atom_energies(dataset_elements(ds), **dataset_level(ds))
    elif old is not None and "atoms" in old:
        if same_level(old.get("atoms_meta", {}).get("level"), dict(ds.attrs)):
            atoms = old  # the isolated atoms of an earlier --atoms run stay
        else:
            print(
                "note: dropping isolated-atom energies of another level of theory; "
                f"recompute them with `qmgen refs {args.dir} --atoms`",
                file=sys.stderr,
            )
    doc = combine_references(fit, atoms)
    path = write_references(args.dir, doc)
    if fit is not None:
        print(
            f"per-element reference energies ({fit['method']}, {fit['n_conformers']} conformers):"
        )
        for sym, value in fit["energies"].items():
            print(f"  {sym:2s} {value:18.10f} Ha  {value * HARTREE_TO_EV:16.6f} eV")
        rms, worst = fit["rms_residual"] * HARTREE_TO_EV, fit["max_residual"] * HARTREE_TO_EV
        print(f"residual: RMS {rms:.4f} eV, max {worst:.4f} eV")
    if args.atoms:
        _print_atoms(doc)
    elif atoms is not None:
        kept = ", ".join(sorted(doc["atoms"], key=SYMBOLS.index))
        print(f"kept the isolated-atom energies of {kept} (energy='atomization')")
    print(f"wrote {path}")
    return 0


def register(subparsers) -> None:
    """Add the ``info``, ``verify``, ``export`` and ``refs`` subcommands."""
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

    p = subparsers.add_parser(
        "refs",
        help="per-element reference energies: least-squares fit and isolated atoms "
        "(stored in DIR/refs.json)",
        description="qmgen refs DIR: least-squares per-element energies e_Z with "
        "E ~ sum_atoms e_Z over the converged conformers (MACE's E0s='average'; not "
        "isolated-atom energies), for open_dataset(energy='referenced') and export --energy "
        "referenced. With --atoms also (the fit is redone too, and may fail without "
        "stopping the atoms) the energies of the isolated neutral atoms of the dataset's "
        "elements at its level of theory, one SCF each in the ground-state multiplicity "
        "(UKS when open shell), for energy='atomization'. Without DIR: isolated-atom "
        "energies of --elements at --xc/--basis, printed (and written with --out).",
    )
    p.add_argument("dir", nargs="?", help="dataset directory (omit for atoms at a given level)")
    p.add_argument(
        "--include-unconverged", action="store_true", help="fit on unconverged conformers too"
    )
    p.add_argument(
        "--atoms",
        action="store_true",
        help="also compute isolated-atom energies (energy='atomization') at the dataset's "
        "level of theory; without it, those of an earlier --atoms run are kept",
    )
    g = p.add_argument_group("isolated atoms without a dataset (no DIR)")
    g.add_argument("--xc", help="functional, as qmgen generate --xc")
    g.add_argument("--basis", help="orbital basis, as qmgen generate --basis")
    g.add_argument("--grid-level", type=int, help="DFT grid level (default 0)")
    g.add_argument("--precision", choices=("float64", "float32"), help="default float64")
    g.add_argument("--conv-tol", type=float, help="SCF convergence, Hartree (default 1e-9)")
    g.add_argument(
        "--density-fit",
        nargs="?",
        const="default",
        metavar="AUXBASIS",
        help="density-fitted J/K (PySCF's default auxiliary basis, or the one named)",
    )
    g.add_argument("--elements", help="comma-separated element symbols, e.g. H,C,N,O")
    g.add_argument("--out", help="also write the atoms as a refs.json-shaped JSON file")
    p.set_defaults(func=_cmd_refs)
