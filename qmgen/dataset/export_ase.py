"""``qmgen export --format extxyz|ase-db|aselmdb``: conformers for ML-potential training.

Units are ASE's: energies eV, forces eV/Angstrom, positions Angstrom, dipole e*Angstrom,
charges e (Mulliken). Only converged conformers are exported unless asked otherwise, as
in the Parquet export. Every conformer is one ``ase.Atoms`` frame (``pbc`` False, no cell)
with these keys (the names MACE and NequIP read by default):

=================  =========  ==============================================================
key                where      value
=================  =========  ==============================================================
``energy``         calc       total energy, eV (``atoms.get_potential_energy()``; NequIP's
                              ``total_energy``; includes ``dispersion`` where stored)
``forces``         calc       (n, 3) eV/Angstrom (``atoms.get_forces()``; NequIP's ``forces``)
``dipole``         calc       (3,) e*Angstrom (``atoms.get_dipole_moment()``; MACE's default
                              ``dipole_key``)
``charges``        calc       (n,) Mulliken charges, e (``atoms.get_charges()``)
``REF_energy``     info       the same energy (MACE's default ``energy_key``)
``REF_forces``     arrays     the same forces (MACE's default ``forces_key``)
``REF_dipole``     info       the same dipole (for ``--dipole_key=REF_dipole``)
``REF_charges``    arrays     the same charges (MACE's default ``charges_key``)
``charge``         info       net charge, e (fairchem's key); also ``total_charge`` (MACE's)
``multiplicity``   info       spin multiplicity 2S+1
``smiles``,        info       input SMILES and name (strings)
``name``
``homo``, ``lumo``, info      orbital energies and gap, eV; ``scf_error`` eV (final |g|
``gap``                       converted like an energy); ``dispersion`` eV (D3(BJ) part of
                              ``energy``, datasets of ``*-d3bj`` functionals only)
``mo_energy``      info       (n_mo,) orbital energies, eV (unrestricted: alpha then beta)
``unrestricted``,  info       open-shell datasets (``--open-shell``/``--unrestricted``) only:
``s2``,                       UKS/UHF row (bool), <S^2>, per-spin frontier orbital
``homo_alpha``,               energies eV; ``spin_populations`` (n,) Mulliken spin
``lumo_alpha``,               populations in ``arrays`` (``row.data`` in an ASE database)
``homo_beta``,
``lumo_beta``
``n_heavy``,       info       heavy atoms, basis functions, SCF cycles, converged flag,
``n_basis``,                  ``qmgen.status.Status`` code, and the conformer's place in
``n_iter``,                   the dataset (input line and conformer number)
``converged``,
``status``,
``molecule_index``,
``conformer_index``
=================  =========  ==============================================================

With ``energy="referenced"`` (``--energy referenced``) ``energy`` and ``REF_energy`` are
the total energy minus the per-element constants of ``DIR/refs.json``
(:mod:`qmgen.dataset.refs`), and with ``energy="atomization"`` the total energy minus the
isolated-atom energies stored there by ``qmgen refs DIR --atoms``; forces are unchanged.

"calc" is ASE's ``SinglePointCalculator`` attached on reading (``ase.io.read`` moves the
standard property names there), "info"/"arrays" are ``atoms.info`` / ``atoms.arrays``.
Datasets of shard schema 1 did not store ``charge`` and ``multiplicity``; those frames
lack the two keys (and ``total_charge``).

extxyz is written here, not by ``ase.io.write``: numbers use the shortest repr that
round-trips float64 (ASE's writer rounds per-atom columns to 8 decimals), and strings and
``mo_energy`` are ``_JSON`` values, so ``ase.io.read`` returns exactly the stored floats and
a SMILES such as ``F`` (which ASE's parser would read as False) or one with a backslash
stays a string. ``ase-db`` is ASE's SQLite database (``ase.db.connect``): the calc values
as a ``SinglePointCalculator`` (``row.energy``, ``row.forces``, ``row.toatoms()``), the
scalar labels, ``REF_energy`` and the charges as key-value pairs (``row.homo``,
``db.select(charge=1)``), ``mo_energy``, ``REF_dipole``, ``smiles`` and ``name`` in
``row.data`` (``smiles`` and ``name`` also as key-value pairs unless ASE refuses the
string, as it does for ones that read as numbers or booleans), and the dataset's level of
theory in ``db.metadata``. The net charge is the key-value ``total_charge`` and
``row.data["charge"]`` (with ``multiplicity``, where fairchem's ASE-db datasets look): a
key-value ``charge`` would be hidden by ASE's row property of that name (the sum of the
initial charges, 0 here). ``aselmdb`` is the same database in fairchem's LMDB backend
(the ``ase-db-backends`` package, ``pip install 'qmgen[aselmdb]'``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import numpy as np

from qmgen.dataset import open_dataset
from qmgen.errors import EnvironmentProblem
from qmgen.molecule import SYMBOLS

ASE_FORMATS = ("extxyz", "ase-db", "aselmdb")
# per-conformer labels copied as they are (eV for the float ones)
SCALAR_LABELS = ("homo", "lumo", "gap", "scf_error", "dispersion")
# open-shell datasets: <S^2> (unitless) and the per-spin frontier orbital energies (eV)
SPIN_SCALARS = ("s2", "homo_alpha", "lumo_alpha", "homo_beta", "lumo_beta")
INT_LABELS = ("n_heavy", "n_basis", "n_iter", "status", "molecule_index", "conformer_index")
ROWS_PER_BLOCK = 4096


class AseUnavailable(EnvironmentProblem, ImportError):
    """An ASE database export was asked for without ``ase`` (or, for aselmdb, without
    ``ase-db-backends``) installed (exit code 3)."""


def _require(module: str, hint: str):
    try:
        return __import__(module)
    except ModuleNotFoundError as err:
        raise AseUnavailable(f"this export needs {hint}") from err


def _frames(
    root, include_unconverged: bool, forces: bool, energy: str = "total"
) -> tuple[Iterator[dict], int, int]:
    """(iterator of per-conformer dicts in ASE units, rows exported, rows skipped)."""
    ds = open_dataset(root, energy_unit="ev", length_unit="angstrom", energy=energy)
    if forces and not ds.has_forces:
        raise ValueError(f"{root}: the dataset stores no forces; export without --forces")
    sel = ds if include_unconverged else ds.filter(converged=True)

    def frames():
        for b in sel.batches(ROWS_PER_BLOCK, shuffle=False, layout="packed", strings=True):
            ao, mo = b["atom_offset"], b["mo_offset"]
            for i in range(len(ao) - 1):
                a0, a1 = int(ao[i]), int(ao[i + 1])
                f: dict = {
                    "numbers": b["z"][a0:a1].astype(np.int64),
                    "positions": b["positions"][a0:a1],
                    "charges": b["charges"][a0:a1],
                    "energy": float(b["energy"][i]),
                    "dipole": b["dipole"][i],
                    "mo_energy": b["mo_energy"][int(mo[i]) : int(mo[i + 1])],
                    "smiles": str(b["smiles"][i]),
                    "name": str(b["name"][i]),
                    "converged": bool(b["converged"][i]),
                }
                if "forces" in b:
                    f["forces"] = b["forces"][a0:a1]
                if "spin_populations" in b:
                    f["spin_populations"] = b["spin_populations"][a0:a1]
                    f["unrestricted"] = bool(b["unrestricted"][i])
                for key in (*SCALAR_LABELS, *SPIN_SCALARS):
                    if key in b:
                        f[key] = float(b[key][i])
                for key in (*INT_LABELS, "charge", "multiplicity"):
                    if key in b:
                        f[key] = int(b[key][i])
                yield f

    return frames(), len(sel), len(ds) - len(sel)


def _info(f: dict) -> dict:
    """The per-frame info keys (module docstring), plain Python values."""
    info: dict = {"REF_energy": f["energy"], "REF_dipole": f["dipole"]}
    if "charge" in f:
        info.update(charge=f["charge"], total_charge=f["charge"])
    keys = ("multiplicity", "smiles", "name", *SCALAR_LABELS, "unrestricted", *SPIN_SCALARS)
    for key in (*keys, "mo_energy"):
        if key in f:
            info[key] = f[key]
    for key in ("n_heavy", "n_basis", "n_iter", "converged", "status"):
        info[key] = f[key]
    info.update(molecule_index=f["molecule_index"], conformer_index=f["conformer_index"])
    return info


# ------------------------------------------------------------------------------ extxyz


def _text_value(value) -> str:
    """An extxyz key-value value that ``ase.io.read`` parses back to ``value`` exactly:
    repr floats, T/F, quoted float vectors, and ``_JSON`` (escaped for ASE's reader) for
    strings and ``mo_energy``-like arrays whose length may be 1."""
    if isinstance(value, (bool, np.bool_)):
        return "T" if value else "F"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return repr(float(value))
    if isinstance(value, np.ndarray) and value.shape == (3,):
        return '"' + " ".join(repr(float(v)) for v in value) + '"'
    if isinstance(value, np.ndarray):
        text = json.dumps([float(v) for v in value])
    else:
        text = json.dumps(str(value))
    return '"_JSON ' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _extxyz_frame(f: dict) -> str:
    n = len(f["numbers"])
    cols = [("pos", f["positions"])]
    if "forces" in f:
        cols += [("forces", f["forces"]), ("REF_forces", f["forces"])]
    cols += [("charges", f["charges"][:, None]), ("REF_charges", f["charges"][:, None])]
    if "spin_populations" in f:
        cols.append(("spin_populations", f["spin_populations"][:, None]))
    props = "species:S:1:" + ":".join(f"{name}:R:{v.shape[1]}" for name, v in cols)
    pairs = {"energy": f["energy"], "dipole": f["dipole"], **_info(f)}
    comment = " ".join(
        [f"Properties={props}"] + [f"{k}={_text_value(v)}" for k, v in pairs.items()]
    )
    table = np.concatenate([v for _, v in cols], axis=1)
    lines = [str(n), comment + ' pbc="F F F"']
    for z, row in zip(f["numbers"], table, strict=True):
        lines.append(SYMBOLS[int(z)] + " " + " ".join(repr(float(x)) for x in row))
    return "\n".join(lines) + "\n"


def export_extxyz(
    root, out, include_unconverged: bool = False, forces: bool = False, energy: str = "total"
) -> dict:
    """Write the dataset as extended XYZ (see module docstring); return counts.

    ``forces``: refuse a dataset without forces (they are written whenever stored)."""
    frames, n, skipped = _frames(root, include_unconverged, forces, energy)
    with open(out, "w", encoding="ascii") as fh:
        for f in frames:
            fh.write(_extxyz_frame(f))
    return dict(path=str(out), n_rows=n, n_skipped=skipped)


# ------------------------------------------------------------------------------ ASE db


def _atoms(f: dict):
    from ase import Atoms
    from ase.calculators.singlepoint import SinglePointCalculator

    atoms = Atoms(numbers=f["numbers"], positions=f["positions"], pbc=False)
    results = dict(energy=f["energy"], dipole=np.array(f["dipole"]), charges=f["charges"].copy())
    if "forces" in f:
        results["forces"] = np.array(f["forces"])
    atoms.calc = SinglePointCalculator(atoms, **results)
    return atoms


def _db_string_ok(text: str) -> bool:
    """Whether ASE's database takes ``text`` as a string key-value (it refuses strings
    that read as a bool or a number, such as a name "123")."""
    from ase.db.core import check

    try:
        check({"smiles": text})
    except ValueError:
        return False
    return True


def export_ase_db(
    root,
    out,
    include_unconverged: bool = False,
    forces: bool = False,
    backend: str = "ase-db",
    energy: str = "total",
) -> dict:
    """Write the dataset as an ASE database: ``backend`` "ase-db" (SQLite, ``.db``) or
    "aselmdb" (fairchem's LMDB backend from ``ase-db-backends``). Replaces ``out``."""
    if backend not in ("ase-db", "aselmdb"):
        raise ValueError(f"unknown ASE database backend {backend!r}; valid: ase-db, aselmdb")
    _require("ase", "ASE: pip install 'qmgen[ase]' (or pip install ase)")
    if backend == "aselmdb":  # the package provides ase.db's "aselmdb" type
        _require(
            "ase_db_backends",
            "fairchem's ase-db-backends: pip install 'qmgen[aselmdb]' "
            "(or pip install ase-db-backends)",
        )
    import ase.db

    frames, n, skipped = _frames(root, include_unconverged, forces, energy)
    kind = "db" if backend == "ase-db" else "aselmdb"
    attrs = open_dataset(root).attrs
    db = ase.db.connect(str(out), type=kind, append=False)
    try:
        db.metadata = {
            "qmgen": "energies eV, forces eV/Angstrom, positions Angstrom, dipole e*Angstrom",
            "attrs": json.loads(json.dumps(attrs, default=str)),
        }
        with db:  # one transaction (the LMDB backend closes its environment after it)
            for f in frames:
                info = _info(f)
                data = {k: info.pop(k) for k in ("mo_energy", "REF_dipole")}
                if "spin_populations" in f:
                    data["spin_populations"] = np.array(f["spin_populations"])
                if "charge" in info:  # a row's "charge" is ASE's sum of initial charges
                    data["charge"] = info.pop("charge")
                    data["multiplicity"] = info["multiplicity"]
                for key in ("smiles", "name"):  # exact in data; searchable where ASE allows
                    data[key] = info[key]
                    if not _db_string_ok(info[key]):
                        del info[key]
                db.write(_atoms(f), key_value_pairs=info, data=data)
    finally:
        close = getattr(db, "close", None)
        if close is not None:
            close()
    return dict(path=str(out), n_rows=n, n_skipped=skipped)
