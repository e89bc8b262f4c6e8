"""Writing one shard: rows packed into columns, written atomically and checksummed.

The schema is ``storage.schema``. A shard is written under a temporary name, fsync'd,
hashed and renamed into place, so its path either holds a complete shard or is untouched.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import h5py
import numpy as np

from qmgen.status import Status
from qmgen.storage.files import fsync, sha256_file
from qmgen.storage.schema import (
    ATOM_FIELDS,
    CHUNK_BYTES,
    CONFORMER_CHUNK_ROWS,
    CONFORMER_FIELDS,
    MAX_CHARGE,
    MAX_Z,
    OPTIONAL_CONFORMER_FIELDS,
    RESERVED_ATTRS,
    ROW_SCALARS,
    SCHEMA_VERSION,
    SPIN_CONFORMER_FIELDS,
    blob,
    json_default,
)


def _need(row: dict, i: int, key: str, what: str = "row"):
    try:
        return row[key]
    except KeyError:
        raise ValueError(f"{what} {i}: missing field {key!r}") from None


def _pack_rows(rows) -> tuple[dict, dict, dict]:
    """Columns of ``rows`` (see :func:`write_shard`) and the molecule table."""
    n = len(rows)
    has_forces = n > 0 and rows[0].get("forces") is not None
    has_disp = n > 0 and rows[0].get("dispersion") is not None
    has_spin = n > 0 and rows[0].get("s2") is not None
    disp = np.empty(n)
    spin = {k: np.empty(n) for k in SPIN_CONFORMER_FIELDS}
    z, pos, chg, frc, mo, dip, spop = [], [], [], [], [], [], []
    scal = {k: np.empty(n) for k in ROW_SCALARS}
    ints = {k: np.empty(n, dtype=np.int64) for k in ("n_iter", "status", "molecule_index")}
    ints["conformer_index"] = np.empty(n, dtype=np.int64)
    ints["charge"] = np.empty(n, dtype=np.int64)
    ints["multiplicity"] = np.empty(n, dtype=np.int64)
    n_basis = np.empty(n, dtype=np.int64)
    converged = np.empty(n, dtype=bool)
    molecules: dict[tuple, int] = {}
    mol_row = np.empty(n, dtype=np.int64)
    for i, r in enumerate(rows):
        zi = np.asarray(_need(r, i, "z"))
        if zi.ndim != 1 or zi.size == 0 or zi.dtype.kind not in "iu":
            raise ValueError(f"row {i}: z must be a non-empty 1-D integer array, got {zi!r}")
        na = zi.size
        pi = np.asarray(_need(r, i, "positions"), dtype=np.float64)
        ci = np.asarray(_need(r, i, "charges"), dtype=np.float64)
        di = np.asarray(_need(r, i, "dipole"), dtype=np.float64)
        mi = np.asarray(_need(r, i, "mo_energy"), dtype=np.float64)
        fi = r.get("forces")
        if pi.shape != (na, 3) or ci.shape != (na,) or di.shape != (3,) or mi.ndim != 1:
            raise ValueError(
                f"row {i}: shapes positions {pi.shape}, charges {ci.shape}, dipole {di.shape},"
                f" mo_energy {mi.shape}; expected ({na}, 3), ({na},), (3,), (n_mo,)"
            )
        if (fi is not None) != has_forces:
            raise ValueError(f"row {i}: forces must be given for all rows or for none")
        if has_forces:
            fi = np.asarray(fi, dtype=np.float64)
            if fi.shape != (na, 3):
                raise ValueError(f"row {i}: forces shape {fi.shape}, expected ({na}, 3)")
            frc.append(fi)
        if (r.get("dispersion") is not None) != has_disp:
            raise ValueError(f"row {i}: dispersion must be given for all rows or for none")
        if has_disp:
            disp[i] = r["dispersion"]
        if (r.get("s2") is not None) != has_spin:
            raise ValueError(f"row {i}: open-shell labels must be given for all rows or none")
        if has_spin:
            for k in SPIN_CONFORMER_FIELDS:
                spin[k][i] = _need(r, i, k)
            si = np.asarray(_need(r, i, "spin_populations"), dtype=np.float64)
            n_mo_spin = (2 if spin["unrestricted"][i] else 1) * r.get("n_basis", mi.size)
            if si.shape != (na,) or (r.get("n_basis") is not None and mi.size != n_mo_spin):
                raise ValueError(
                    f"row {i}: spin_populations shape {si.shape} (expected ({na},)) or "
                    f"mo_energy size {mi.size} (expected {n_mo_spin}: unrestricted rows "
                    "store alpha then beta orbital energies)"
                )
            spop.append(si)
        z.append(zi)
        pos.append(pi)
        chg.append(ci)
        dip.append(di)
        mo.append(mi)
        for k in ROW_SCALARS:
            scal[k][i] = _need(r, i, k)
        for k in ints:
            ints[k][i] = _need(r, i, k)
        Status(int(ints["status"][i]))  # refuse unknown codes
        charge, mult = ints["charge"][i], ints["multiplicity"][i]
        if not (-MAX_CHARGE <= charge <= MAX_CHARGE and 1 <= mult <= 255):
            raise ValueError(
                f"row {i}: charge {charge} or multiplicity {mult}"
                f" out of range (|charge| <= {MAX_CHARGE}, 1 <= multiplicity <= 255)"
            )
        n_basis[i] = r.get("n_basis", mi.size // (2 if r.get("unrestricted") else 1))
        converged[i] = bool(_need(r, i, "converged"))
        key = (int(ints["molecule_index"][i]), str(_need(r, i, "smiles")), str(r.get("name", "")))
        mol_row[i] = molecules.setdefault(key, len(molecules))
    z_all = np.concatenate(z) if n else np.zeros(0, dtype=np.uint8)
    if z_all.size and (z_all.min() < 1 or z_all.max() > MAX_Z):
        raise ValueError(f"atomic numbers must lie in 1..{MAX_Z}")
    n_atoms = np.fromiter((len(a) for a in z), dtype=np.int64, count=n)
    n_mo = np.fromiter((len(a) for a in mo), dtype=np.int64, count=n)
    atom_offset = np.concatenate([[0], np.cumsum(n_atoms)]).astype(np.int64)
    heavy = np.add.reduceat((z_all > 1).astype(np.int64), atom_offset[:-1]) if n else n_atoms
    conf: dict[str, np.ndarray] = dict(scal)
    conf.update(
        dipole=np.asarray(dip).reshape(n, 3),
        n_atoms=n_atoms,
        n_heavy=heavy,
        n_basis=n_basis,
        n_iter=ints["n_iter"],
        converged=converged,
        status=ints["status"],
        molecule_index=ints["molecule_index"],
        conformer_index=ints["conformer_index"],
        molecule_row=mol_row,
        charge=ints["charge"],
        multiplicity=ints["multiplicity"],
        atom_offset=atom_offset,
        mo_offset=np.concatenate([[0], np.cumsum(n_mo)]).astype(np.int64),
    )
    atoms = dict(
        z=z_all,
        positions=np.concatenate(pos) if n else np.zeros((0, 3)),
        charges=np.concatenate(chg) if n else np.zeros(0),
    )
    if has_forces:
        atoms["forces"] = np.concatenate(frc)
    if has_disp:
        conf["dispersion"] = disp
    if has_spin:
        conf.update(spin)
        atoms["spin_populations"] = np.concatenate(spop)
    conf["mo_energy"] = np.concatenate(mo) if n else np.zeros(0)
    return conf, atoms, molecules


def _create(group, name: str, data, dtype, units: str, compression=None, chunk_rows=None):
    data = np.ascontiguousarray(np.asarray(data, dtype=dtype))
    n = data.shape[0]
    if chunk_rows is None:
        row_bytes = max(1, data.itemsize * int(np.prod(data.shape[1:], dtype=np.int64)))
        chunk_rows = CHUNK_BYTES // row_bytes
    kw = dict(chunks=(max(1, min(n, chunk_rows)),) + data.shape[1:], fletcher32=True)
    if n == 0:
        kw["maxshape"] = (None,) + data.shape[1:]
    if compression:
        kw.update(compression=compression, shuffle=True)
    ds = group.create_dataset(name, data=data, **kw)
    ds.attrs["units"] = units
    return ds


def _create_blob(group, name: str, texts, compression=None):
    data, offsets = blob(texts)
    _create(group, name, data, "u1", "1", compression).attrs["encoding"] = "utf-8"
    _create(group, f"{name}_offset", offsets, "i8", "1", compression)


def _write_attrs(f: h5py.File, attrs: dict) -> None:
    as_json = []
    for key, value in attrs.items():
        if key in RESERVED_ATTRS:
            raise ValueError(f"attribute name {key!r} is reserved by the shard schema")
        if isinstance(value, (str, bool, int, float, np.bool_, np.integer, np.floating)):
            f.attrs[key] = value
        else:
            f.attrs[key] = json.dumps(value, default=json_default, sort_keys=True)
            as_json.append(key)
    f.attrs["json_attrs"] = json.dumps(as_json)


def write_shard(path, shard_id: int, rows, failures, attrs, compression=None) -> dict:
    """Write one shard atomically; return ``dict(sha256, n_rows, n_failures, path, size)``.

    ``rows``: dicts with z (n,) int, positions (n,3) Bohr, energy/homo/lumo/gap (Hartree),
    mo_energy (n_mo,) Hartree, dipole (3,) e*Bohr, charges (n,) e, forces (n,3) Hartree/Bohr
    or None (for all rows or none), dispersion (Hartree, the part of energy that is
    empirical dispersion) or None or absent (for all rows or none), converged, n_iter,
    status (Status), scf_error (Hartree), molecule_index, conformer_index, charge (net,
    e), multiplicity (2S+1), smiles, name, optional n_basis (defaults to n_mo, or n_mo / 2
    for an unrestricted row); the open-shell labels (for all rows or none) unrestricted
    (bool), s2, homo_alpha, lumo_alpha, homo_beta, lumo_beta (Hartree) and
    spin_populations (n,) e, where an unrestricted row's mo_energy is alpha then beta.
    ``failures``: dicts with
    molecule_index, input, smiles, status, message.
    ``attrs``: level of theory and provenance, stored as root attributes.

    The file is written under a temporary name in the same directory, fsync'd, hashed and
    renamed; on any exception the temporary file is removed, so ``path`` either holds a
    complete shard or is untouched.
    """
    path = Path(path)
    conf, atoms, molecules = _pack_rows(rows)
    for i, fl in enumerate(failures):
        for key in ("molecule_index", "input", "smiles", "status", "message"):
            _need(fl, i, key, "failure")
        Status(int(fl["status"]))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    comp = compression
    try:
        with h5py.File(tmp, "w") as f:
            g = f.create_group("conformers")
            for name, (dtype, _, units) in CONFORMER_FIELDS.items():
                _create(g, name, conf[name], dtype, units, comp, CONFORMER_CHUNK_ROWS)
            for name, (dtype, _, units) in OPTIONAL_CONFORMER_FIELDS.items():
                if name in conf:
                    _create(g, name, conf[name], dtype, units, comp, CONFORMER_CHUNK_ROWS)
            for name in ("atom_offset", "mo_offset"):
                _create(g, name, conf[name], "i8", "1", comp, CONFORMER_CHUNK_ROWS)
            g = f.create_group("atoms")
            for name, value in atoms.items():
                _create(g, name, value, ATOM_FIELDS[name][0], ATOM_FIELDS[name][2], comp)
            _create(f.create_group("orbitals"), "mo_energy", conf["mo_energy"], "f8", "hartree")
            g = f.create_group("molecules")
            _create(g, "molecule_index", [k[0] for k in molecules], "i8", "1", comp)
            _create_blob(g, "smiles", [k[1] for k in molecules], comp)
            _create_blob(g, "name", [k[2] for k in molecules], comp)
            g = f.create_group("failures")
            _create(g, "molecule_index", [fl["molecule_index"] for fl in failures], "i8", "1")
            _create(g, "status", [int(fl["status"]) for fl in failures], "u1", "1")
            for key in ("input", "smiles", "message"):
                _create_blob(g, key, [fl[key] for fl in failures], comp)
            f.attrs.update(
                schema_version=SCHEMA_VERSION,
                shard_id=int(shard_id),
                n_rows=len(rows),
                n_failures=len(failures),
                n_molecules=len(molecules),
                has_forces="forces" in atoms,
                has_dispersion="dispersion" in conf,
                has_spin="s2" in conf,
            )
            _write_attrs(f, attrs)
        fsync(tmp)
        digest = sha256_file(tmp)
        size = tmp.stat().st_size
        os.replace(tmp, path)
        fsync(path.parent, directory=True)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return dict(
        sha256=digest,
        n_rows=len(rows),
        n_failures=len(failures),
        path=str(path),
        size=size,
        shard_id=int(shard_id),
    )


def remove_stale_tmp(directory) -> list[Path]:
    """Delete temporary files left by writers that died mid-write; return their paths."""
    stale = sorted(Path(directory).rglob(".*.h5.tmp-*"))
    for p in stale:
        p.unlink(missing_ok=True)
    return stale
