"""``qmgen export``: QM1B-compatible Parquet (extxyz and ASE databases for ML potentials:
:mod:`qmgen.dataset.export_ase`).

QM1B's schema (graphcore-research qm1b-dataset DATASHEET.md; pyscf-ipu's generator):
``smile`` str; ``atoms`` str, the element symbols concatenated in atom order
("CCOHHHHHH"); ``z`` list of atomic numbers; ``energy``, ``homo``, ``lumo`` eV; ``N``
number of atomic orbitals (not atoms); ``std`` eV, the std of the last five SCF energies
(QM1B kept std < 0.01); ``y`` the HOMO-LUMO gap, eV; ``pos`` positions in Bohr, flattened
(x0, y0, z0, x1, ...). qmgen has no SCF energy history, so ``std`` holds the closest
stored quantity, |scf_error| (the final SCF residual, Hartree) converted to eV.

qmgen adds ``charge`` (net charge, e) and ``multiplicity`` (2S+1), int16, null for
datasets of shard schema version 1, which did not store them (QM1B's molecules are all
neutral singlets). Optional extra columns: ``forces`` (flattened, eV/Bohr) and
``dipole`` (3 values, e*Bohr). A dataset of a functional with empirical dispersion
(``b3lyp-d3bj``, ...) also gets ``dispersion`` (eV), the D3(BJ) part of ``energy``, which
includes it. An open-shell dataset (``--open-shell``/``--unrestricted``) also gets
``unrestricted`` (bool: a UKS/UHF row), ``s2`` (<S^2>) and ``homo_alpha``, ``lumo_alpha``,
``homo_beta``, ``lumo_beta`` (eV; ``homo``/``lumo`` are the higher/lower of the two
spins'). Like QM1B, only converged conformers are exported unless asked otherwise.
"""

from __future__ import annotations

import numpy as np

from qmgen.dataset import open_dataset
from qmgen.dataset.export_ase import ASE_FORMATS, SPIN_SCALARS
from qmgen.molecule import SYMBOLS

EXPORT_FORMATS = ("parquet", *ASE_FORMATS)


def _atoms_string(z: np.ndarray, cache: dict) -> str:
    key = z.tobytes()
    text = cache.get(key)
    if text is None:
        text = cache[key] = "".join(SYMBOLS[int(a)] for a in z)
    return text


def export_parquet(
    root,
    out,
    forces: bool = False,
    dipoles: bool = False,
    include_unconverged: bool = False,
    rows_per_group: int = 65536,
    energy: str = "total",
) -> dict:
    """Write the dataset as QM1B-compatible Parquet (see module docstring); return counts.

    Streams row groups of ``rows_per_group`` conformers, so memory stays bounded.
    ``energy``: as :func:`qmgen.open_dataset` ("referenced": minus the refs.json constants;
    "atomization": minus its isolated-atom energies).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    ds = open_dataset(root, energy_unit="ev", length_unit="bohr", energy=energy)
    if forces and not ds.has_forces:
        raise ValueError(f"{root}: the dataset stores no forces; export without --forces")
    sel = ds if include_unconverged else ds.filter(converged=True)
    fields = [
        ("smile", pa.string()),
        ("atoms", pa.string()),
        ("z", pa.list_(pa.int64())),
        ("energy", pa.float64()),
        ("homo", pa.float64()),
        ("lumo", pa.float64()),
        ("N", pa.int64()),
        ("std", pa.float64()),
        ("y", pa.float64()),
        ("pos", pa.list_(pa.float64())),
        ("charge", pa.int16()),
        ("multiplicity", pa.int16()),
    ]
    if forces:
        fields.append(("forces", pa.list_(pa.float64())))
    if dipoles:
        fields.append(("dipole", pa.list_(pa.float64())))
    dispersion = ds.has_dispersion
    if dispersion:
        fields.append(("dispersion", pa.float64()))
    spin = ds.has_spin
    if spin:
        fields.append(("unrestricted", pa.bool_()))
        fields += [(key, pa.float64()) for key in SPIN_SCALARS]
    schema = pa.schema(fields)
    schema = schema.with_metadata(
        {"qmgen": "QM1B-compatible export: energies eV, positions Bohr, forces eV/Bohr"}
    )
    symbols: dict = {}
    n = 0
    with pq.ParquetWriter(str(out), schema) as writer:
        for b in sel.batches(rows_per_group, shuffle=False, layout="packed", strings=True):
            ao = b["atom_offset"]
            n_b = len(ao) - 1
            ao32 = pa.array(ao.astype(np.int32))
            ao96 = pa.array((3 * ao).astype(np.int32))
            z = b["z"].astype(np.int64)
            atoms = [_atoms_string(z[ao[i] : ao[i + 1]], symbols) for i in range(len(ao) - 1)]
            cols = {
                "smile": pa.array(b["smiles"], pa.string()),
                "atoms": pa.array(atoms, pa.string()),
                "z": pa.ListArray.from_arrays(ao32, pa.array(z)),
                "energy": pa.array(b["energy"]),
                "homo": pa.array(b["homo"]),
                "lumo": pa.array(b["lumo"]),
                "N": pa.array(b["n_basis"].astype(np.int64)),
                "std": pa.array(np.abs(b["scf_error"])),
                "y": pa.array(b["gap"]),
                "pos": pa.ListArray.from_arrays(ao96, pa.array(b["positions"].reshape(-1))),
            }
            for key in ("charge", "multiplicity"):  # null where the schema did not store it
                cols[key] = pa.array(b[key], pa.int16()) if key in b else pa.nulls(n_b, pa.int16())
            if forces:
                cols["forces"] = pa.ListArray.from_arrays(ao96, pa.array(b["forces"].reshape(-1)))
            if dipoles:
                off = pa.array(np.arange(0, 3 * len(ao) - 2, 3, dtype=np.int32))
                cols["dipole"] = pa.ListArray.from_arrays(off, pa.array(b["dipole"].reshape(-1)))
            if dispersion:
                cols["dispersion"] = pa.array(b["dispersion"])
            if spin:
                for key in ("unrestricted", *SPIN_SCALARS):
                    cols[key] = pa.array(b[key])
            writer.write_table(pa.table([cols[name] for name, _ in fields], schema=schema))
            n += len(ao) - 1
    return dict(path=str(out), n_rows=n, n_skipped=len(ds) - len(sel))
