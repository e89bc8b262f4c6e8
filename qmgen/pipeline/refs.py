"""``qmgen refs``: per-element reference energies, fitted (:mod:`qmgen.dataset.refs`) and
of isolated atoms, computed here with UKS/RKS (:func:`isolated_atom_energies`).

The atoms are a compute step, so they live above the dataset layer (which never imports
JAX): :mod:`qmgen.dataset.refs` reads, writes and applies refs.json, this module fills it.
"""

from __future__ import annotations

import sys
import time

import numpy as np

from qmgen.dataset.refs import (
    GROUND_MULTIPLICITY,
    LEVEL_KEYS,
    REFS_FORMAT,
    ReferenceEnergyError,
    fit_references,
    write_references,
)
from qmgen.molecule import SYMBOLS

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


def _no_virtuals(rec: dict) -> bool:
    """A filled-shell atom whose basis has no virtual orbitals (He, Ne, Ar in STO-3G):
    the occupied orbitals span the basis, the orbital gradient is empty and the energy
    exact after one cycle, but the SCF flags the missing LUMO as NON_FINITE."""
    from qmgen.status import Status

    return (
        rec.get("status") == Status.NON_FINITE
        and np.isfinite(rec.get("energy", np.nan))
        and np.isnan(rec.get("lumo", np.nan))
        and rec.get("scf_error") == 0.0
    )


def isolated_atom_energies(
    symbols,
    xc: str = "b3lyp5",
    basis: str = "sto-3g",
    grid_level: int = 0,
    precision: str = "float64",
    conv_tol: float = 1e-9,
    density_fit: str | bool | None = None,
    max_cycle: int = 100,
) -> dict:
    """Energies (Hartree) of the isolated neutral atoms of ``symbols`` (element symbols
    or atomic numbers; repeats ignored), each at the origin in its ground-state
    multiplicity (:data:`GROUND_MULTIPLICITY`): UKS for open-shell atoms, RKS for
    closed-shell ones, with :func:`qmgen.compute` at the given level of theory
    (``density_fit`` as ``qmgen generate --density-fit``: None, True/"default" or an
    auxiliary basis name).

    Returns the atoms part of a refs.json document (module docstring): ``atoms``
    {symbol: Hartree} and ``atoms_meta`` (method "isolated-atoms", multiplicities, SCF
    kind, <S^2>, cycles, level). Raises :class:`ReferenceEnergyError` for an element
    without a tabulated multiplicity or whose SCF does not converge (naming it).
    """
    import qmgen
    from qmgen.dft.xc import get_functional
    from qmgen.molecule import atomic_number

    xc = get_functional(xc).name
    zs = sorted({atomic_number(s) for s in symbols})
    if not zs:
        raise ReferenceEnergyError("no elements given for isolated-atom energies")
    unknown = [SYMBOLS[z] for z in zs if SYMBOLS[z] not in GROUND_MULTIPLICITY]
    if unknown:
        raise ReferenceEnergyError(
            f"no ground-state multiplicity tabulated for {', '.join(unknown)}; isolated-atom "
            f"energies are available for {', '.join(GROUND_MULTIPLICITY)}"
        )
    mols = [
        qmgen.Molecule(np.array([z]), np.zeros((1, 3)), spin=GROUND_MULTIPLICITY[SYMBOLS[z]] - 1)
        for z in zs
    ]
    records = qmgen.compute(
        mols,
        xc=xc,
        basis=basis,
        grid_level=grid_level,
        precision=precision,
        conv_tol=conv_tol,
        max_cycle=max_cycle,
        density_fit=density_fit or False,
        batch_size=1,  # one program per atom shape, shared by every set of elements
    )
    failed = [
        f"{SYMBOLS[z]} (multiplicity {GROUND_MULTIPLICITY[SYMBOLS[z]]}: "
        f"{rec.get('message') or 'not converged'})"
        for z, rec in zip(zs, records, strict=True)
        if not (rec.get("status") == 0 and rec.get("converged")) and not _no_virtuals(rec)
    ]
    if failed:
        raise ReferenceEnergyError(
            f"isolated-atom SCF failed for {'; '.join(failed)} at {xc}/{basis} grid level "
            f"{grid_level}, conv_tol {conv_tol:g}, {max_cycle} cycles"
        )
    sym = [SYMBOLS[z] for z in zs]
    level = dict(
        xc=xc,
        basis=basis,
        grid_level=int(grid_level),
        precision=precision,
        conv_tol=float(conv_tol),
    )
    if density_fit:
        level["density_fit"] = "default" if density_fit is True else str(density_fit)
    done = dict(zip(sym, records, strict=True))
    return {
        "format": REFS_FORMAT,
        "unit": "hartree",
        "level": {k: level[k] for k in LEVEL_KEYS if k in level},
        "atoms": {s: float(r["energy"]) for s, r in done.items()},
        "atoms_meta": {
            "method": "isolated-atoms",
            "note": "neutral atoms in their ground-state multiplicity, one SCF each "
            "(UKS when open shell, RKS when closed); for energy='atomization'",
            "multiplicity": {s: GROUND_MULTIPLICITY[s] for s in sym},
            "scf": {s: str(r.get("method") or "RKS") for s, r in done.items()},
            "s2": {s: float(r["s2"]) if r.get("s2") is not None else 0.0 for s, r in done.items()},
            "n_iter": {s: int(r["n_iter"]) for s, r in done.items()},
            "level": level,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        },
    }


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
    from qmgen.dataset.refs import write_references_file
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
    """Add the ``refs`` subcommand."""
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
