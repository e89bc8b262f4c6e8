"""Columnar blocks of conformers (CSR) and their conversion to model batches.

A :class:`Columns` holds B conformers: per-conformer arrays (B, ...) in ``conf``, per-atom
arrays (M, ...) in ``atoms`` indexed by ``atom_offset`` (B+1,), and orbital energies
indexed by ``mo_offset`` (B+1,); offsets start at 0. Slicing gives views, ``take`` gathers.
:func:`to_padded` and :func:`to_packed` turn a block into the arrays a model consumes.
"""

from __future__ import annotations

import numpy as np

from qmgen.storage.schema import ROW_SCALARS, SPIN_CONFORMER_FIELDS, SPIN_LABELS

# per-conformer keys returned to users, in this order (plus atom keys, strings, index)
_ROW_KEYS: tuple[str, ...] = ROW_SCALARS + (
    "dipole",
    "n_atoms",
    "n_heavy",
    "n_basis",
    "n_iter",
    "converged",
)
_ROW_KEYS += ("status", "molecule_index", "conformer_index", "smiles", "name")
# None in rows whose shards lack them: charge and multiplicity (stored from shard schema
# version 2 on, unknown in older datasets) and dispersion (stored only for functionals with
# an empirical dispersion term), and the open-shell labels (unrestricted, s2, per-spin
# frontier orbital energies: stored by --open-shell / --unrestricted datasets)
OPTIONAL_KEYS = ("charge", "multiplicity", "dispersion") + tuple(SPIN_CONFORMER_FIELDS)
LABEL_KEYS: tuple[str, ...] = ROW_SCALARS + (
    "dipole",
    "n_atoms",
    "n_heavy",
    "n_basis",
    "n_iter",
    "converged",
)
LABEL_KEYS += ("status", "molecule_index", "conformer_index", "index") + OPTIONAL_KEYS
FLOAT_LABELS = ROW_SCALARS + ("dipole", "dispersion", "s2") + SPIN_LABELS
ATOM_KEYS = ("z", "positions", "charges", "forces", "spin_populations")


def csr_gather(offsets: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Element indices of ``rows`` of a CSR array and the new offsets (len(rows)+1,)."""
    starts = offsets[rows]
    lens = offsets[rows + 1] - starts
    new = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum(lens, out=new[1:])
    idx = np.arange(new[-1], dtype=np.int64) + np.repeat(starts - new[:-1], lens)
    return idx, new


def take_rows(a: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """a[idx] along axis 0; rows of 2-D+ arrays moved as raw bytes (~4x faster)."""
    if a.ndim == 1 or a.dtype == object:
        return a[idx]
    a = np.ascontiguousarray(a)
    row = np.dtype((np.void, a.itemsize * int(np.prod(a.shape[1:]))))
    return a.reshape(len(a), -1).view(row)[idx, 0].view(a.dtype).reshape((len(idx),) + a.shape[1:])


class Columns:
    """B conformers in columnar form (see module docstring); not copied unless needed."""

    __slots__ = ("conf", "atoms", "atom_offset", "mo_energy", "mo_offset")

    def __init__(self, conf: dict, atoms: dict, atom_offset, mo_energy, mo_offset):
        self.conf = conf
        self.atoms = atoms
        self.atom_offset = atom_offset
        self.mo_energy = mo_energy
        self.mo_offset = mo_offset

    def __len__(self) -> int:
        return len(self.atom_offset) - 1

    @property
    def nbytes(self) -> int:
        arrays = list(self.conf.values()) + list(self.atoms.values())
        arrays += [self.atom_offset, self.mo_energy, self.mo_offset]
        return sum(a.nbytes + (8 * a.size if a.dtype == object else 0) for a in arrays)

    def slice(self, start: int, stop: int) -> Columns:
        """Rows ``[start, stop)`` as views (offsets rebased)."""
        ao = self.atom_offset[start : stop + 1]
        mo = self.mo_offset[start : stop + 1]
        a0, a1, m0, m1 = ao[0], ao[-1], mo[0], mo[-1]
        return Columns(
            {k: v[start:stop] for k, v in self.conf.items()},
            {k: v[a0:a1] for k, v in self.atoms.items()},
            ao - a0,
            self.mo_energy[m0:m1],
            mo - m0,
        )

    def take(self, rows) -> Columns:
        """Rows in the order given (a copy)."""
        rows = np.asarray(rows, dtype=np.int64)
        aidx, ao = csr_gather(self.atom_offset, rows)
        midx, mo = csr_gather(self.mo_offset, rows)
        return Columns(
            {k: take_rows(v, rows) for k, v in self.conf.items()},
            {k: take_rows(v, aidx) for k, v in self.atoms.items()},
            ao,
            self.mo_energy[midx],
            mo,
        )

    @staticmethod
    def concat(parts: list[Columns]) -> Columns:
        """Rows of all ``parts`` one after the other (keys of the first part)."""
        if len(parts) == 1:
            return parts[0]

        def offsets(key):
            out = np.zeros(sum(len(p) for p in parts) + 1, dtype=np.int64)
            np.cumsum(np.concatenate([np.diff(getattr(p, key)) for p in parts]), out=out[1:])
            return out

        first = parts[0]
        return Columns(
            {k: np.concatenate([p.conf[k] for p in parts]) for k in first.conf},
            {k: np.concatenate([p.atoms[k] for p in parts]) for k in first.atoms},
            offsets("atom_offset"),
            np.concatenate([p.mo_energy for p in parts]),
            offsets("mo_offset"),
        )

    def freeze(self) -> Columns:
        """Make every array read-only (cached blocks are shared by all views of them)."""
        for arrays in (self.conf, self.atoms):
            for value in arrays.values():
                value.flags.writeable = False
        for value in (self.atom_offset, self.mo_energy, self.mo_offset):
            value.flags.writeable = False
        return self

    def row(self, i: int) -> dict:
        """Conformer ``i`` as a dict of arrays (views) and NumPy scalars."""
        a, b = self.atom_offset[i], self.atom_offset[i + 1]
        out = {k: v[a:b] for k, v in self.atoms.items()}
        out["mo_energy"] = self.mo_energy[self.mo_offset[i] : self.mo_offset[i + 1]]
        conf = self.conf
        for k in _ROW_KEYS:
            out[k] = conf[k][i]
        for k in OPTIONAL_KEYS:
            out[k] = conf[k][i] if k in conf else None
        if "index" in conf:
            out["index"] = conf["index"][i]
        return out


def _scatter(dst: np.ndarray, flat: np.ndarray, src: np.ndarray) -> None:
    """dst[flat] = src for rows of any trailing shape (rows moved as raw bytes: ~4x faster
    than NumPy's fancy assignment of 2-D rows)."""
    src = np.ascontiguousarray(src, dtype=dst.dtype)
    if src.ndim == 1:
        dst[flat] = src
        return
    row = np.dtype((np.void, src.itemsize * int(np.prod(src.shape[1:]))))
    dst.reshape(len(dst), -1).view(row)[flat, 0] = src.reshape(len(src), -1).view(row)[:, 0]


def to_padded(
    cols: Columns,
    pad_atoms: int | None = None,
    float_dtype=np.float64,
    strings: bool = False,
    orbitals: bool = False,
) -> dict:
    """Padded arrays for JAX/NumPy models (B conformers, A atom slots).

    Returns z (B,A) int32 (0 in padding), positions (B,A,3), charges (B,A), forces (B,A,3)
    when stored, mask (B,A) bool, and per-conformer labels: energy, homo, lumo, gap,
    scf_error (B,), dipole (B,3), n_atoms, n_heavy, n_basis, n_iter, converged, status,
    molecule_index, conformer_index, index, charge, multiplicity (B,; both absent
    for datasets of shard schema version 1, where they are unknown), dispersion (B,; only
    for datasets that store it), and in open-shell datasets unrestricted, s2, homo_alpha,
    lumo_alpha, homo_beta, lumo_beta (B,) and spin_populations (B,A). Floats are
    ``float_dtype``; padding is 0.
    A = max n_atoms of the batch, or ``pad_atoms`` (a batch with a larger molecule raises
    ValueError). ``orbitals`` adds mo_energy (B,K) and mo_mask (B,K), K = max n_mo;
    ``strings`` adds smiles and name lists.
    """
    n_at = np.diff(cols.atom_offset)
    B = len(n_at)
    A = int(n_at.max(initial=0)) if pad_atoms is None else int(pad_atoms)
    if pad_atoms is not None and n_at.size and n_at.max() > A:
        raise ValueError(f"a conformer has {n_at.max()} atoms, more than pad_atoms={A}")
    flat = np.arange(cols.atom_offset[-1], dtype=np.int64)
    flat += np.repeat(np.arange(B, dtype=np.int64) * A - cols.atom_offset[:-1], n_at)
    out = {}
    z = np.zeros((B, A), dtype=np.int32)
    z.reshape(-1)[flat] = cols.atoms["z"]
    out["z"] = z
    out["mask"] = np.arange(A) < n_at[:, None]
    for key, value in cols.atoms.items():
        if key != "z":
            buf = np.zeros((B, A) + value.shape[1:], dtype=float_dtype)
            _scatter(buf.reshape((B * A,) + value.shape[1:]), flat, value)
            out[key] = buf
    if orbitals:
        n_mo = np.diff(cols.mo_offset)
        K = int(n_mo.max(initial=0))
        mflat = np.arange(cols.mo_offset[-1], dtype=np.int64)
        mflat += np.repeat(np.arange(B, dtype=np.int64) * K - cols.mo_offset[:-1], n_mo)
        mo = np.zeros((B, K), dtype=float_dtype)
        mo.reshape(-1)[mflat] = cols.mo_energy
        out["mo_energy"] = mo
        out["mo_mask"] = np.arange(K) < n_mo[:, None]
    _labels(cols, out, float_dtype, strings)
    return out


def to_packed(cols: Columns, float_dtype=np.float64, strings: bool = False) -> dict:
    """Flat (graph-network) arrays: per-atom z (M,) int32, positions (M,3), charges,
    forces, ``batch`` (M,) conformer of each atom, ``atom_offset`` (B+1,), mo_energy with
    ``mo_offset`` (B+1,), and the per-conformer labels of :func:`to_padded`."""
    n_at = np.diff(cols.atom_offset)
    out = {"z": cols.atoms["z"].astype(np.int32)}
    for key, value in cols.atoms.items():
        if key != "z":
            out[key] = value.astype(float_dtype)
    out["batch"] = np.repeat(np.arange(len(n_at), dtype=np.int64), n_at)
    out["atom_offset"] = cols.atom_offset
    out["mo_energy"] = cols.mo_energy.astype(float_dtype)
    out["mo_offset"] = cols.mo_offset
    _labels(cols, out, float_dtype, strings)
    return out


def _labels(cols: Columns, out: dict, float_dtype, strings: bool) -> None:
    for key in LABEL_KEYS:
        if key in cols.conf:
            value = cols.conf[key]
            out[key] = value.astype(float_dtype) if key in FLOAT_LABELS else value.copy()
    if strings:
        out["smiles"] = cols.conf["smiles"].tolist()
        out["name"] = cols.conf["name"].tolist()


def columns_from_rows(rows: list[dict]) -> Columns:
    """Columns from conformer dicts as returned by ``Dataset[i]`` (used by collate)."""
    n_at = np.fromiter((len(r["z"]) for r in rows), dtype=np.int64, count=len(rows))
    n_mo = np.fromiter((len(r["mo_energy"]) for r in rows), dtype=np.int64, count=len(rows))
    ao = np.zeros(len(rows) + 1, dtype=np.int64)
    mo = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum(n_at, out=ao[1:])
    np.cumsum(n_mo, out=mo[1:])
    atom_keys = [k for k in ATOM_KEYS if k in rows[0]]
    atoms = {k: np.concatenate([r[k] for r in rows]) for k in atom_keys}
    conf = {
        k: np.array([r[k] for r in rows])
        for k in LABEL_KEYS
        if k in rows[0] and rows[0][k] is not None
    }
    for k in ("smiles", "name"):
        conf[k] = np.array([r[k] for r in rows], dtype=object)
    return Columns(conf, atoms, ao, np.concatenate([r["mo_energy"] for r in rows]), mo)
