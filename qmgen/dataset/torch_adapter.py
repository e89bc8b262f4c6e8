"""PyTorch adapter: a map-style ``torch.utils.data.Dataset`` and its padding collate.

torch is optional for qmgen; this module is imported only by ``Dataset.to_torch()``.
Works with ``DataLoader(num_workers>0)`` under fork and spawn: the wrapped qmgen dataset
reopens shard files in each worker process (see :mod:`qmgen.dataset.reader`)::

    tds = open_dataset(DIR).to_torch()
    loader = DataLoader(tds, batch_size=256, shuffle=True, num_workers=4,
                        collate_fn=tds.collate)
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from torch.utils.data import Dataset as _TorchDataset

from qmgen.dataset.columns import columns_from_rows, to_padded
from qmgen.storage.schema import ROW_SCALARS, SPIN_LABELS

_NUMPY_FLOAT = {torch.float16: np.float16, torch.float32: np.float32, torch.float64: np.float64}
# energies (energy, homo, lumo, gap, scf_error, dispersion): float64 unless asked otherwise
ENERGY_KEYS = ROW_SCALARS + ("dispersion",) + SPIN_LABELS


def _check(dtype, what: str):
    if dtype not in _NUMPY_FLOAT:
        valid = ", ".join(map(str, _NUMPY_FLOAT))
        raise ValueError(f"unsupported {what} {dtype}; valid: {valid}")
    return dtype


def collate(
    rows: list[dict],
    pad_atoms: int | None = None,
    dtype=torch.float32,
    energy_dtype=torch.float64,
) -> dict:
    """Padded tensors for a list of conformer dicts (B conformers, A atom slots, K orbitals).

    z (B,A) int64, positions (B,A,3), charges (B,A), forces (B,A,3) when stored, mask
    (B,A) bool, mo_energy (B,K) with mo_mask (B,K) bool (K = the batch's largest orbital
    count), dipole (B,3), per-conformer labels (B,); integers int64, flags bool, smiles
    and name as lists. Floats are ``dtype``, except the energies (energy, homo, lumo, gap,
    scf_error, dispersion when stored), which are ``energy_dtype``, float64 by default: a
    float32 total energy of a 9-heavy-atom molecule (about 1e4 eV) is rounded to about
    1 meV, as large as the differences a potential is trained on. Pass
    ``energy_dtype=torch.float32`` to opt out.
    """
    _check(dtype, "dtype")
    _check(energy_dtype, "energy_dtype")
    arrays = to_padded(columns_from_rows(rows), pad_atoms, np.float64, strings=True, orbitals=True)
    out: dict = {}
    for key, value in arrays.items():
        if isinstance(value, list):
            out[key] = value
        elif value.dtype == bool:
            out[key] = torch.from_numpy(np.ascontiguousarray(value))
        elif value.dtype.kind == "f":
            target = energy_dtype if key in ENERGY_KEYS else dtype
            out[key] = torch.from_numpy(np.ascontiguousarray(value, dtype=_NUMPY_FLOAT[target]))
        else:
            out[key] = torch.from_numpy(value.astype(np.int64))
    return out


class TorchConformers(_TorchDataset):
    """Conformers of a qmgen :class:`~qmgen.dataset.Dataset`; items are NumPy dicts.

    ``.collate`` is the matching collate function (pad to the batch's largest molecule,
    or to ``pad_atoms``); pass it as ``DataLoader(..., collate_fn=tds.collate)``.
    ``dtype`` (default float32) is that of the float features, ``energy_dtype`` (default
    float64) that of the energies; see :func:`collate`.
    """

    def __init__(self, dataset, pad_atoms: int | None = None, dtype=None, energy_dtype=None):
        self.dataset = dataset
        self.dtype = _check(torch.float32 if dtype is None else dtype, "dtype")
        self.energy_dtype = _check(
            torch.float64 if energy_dtype is None else energy_dtype, "energy_dtype"
        )
        self.collate = functools.partial(
            collate, pad_atoms=pad_atoms, dtype=self.dtype, energy_dtype=self.energy_dtype
        )

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> dict:
        return self.dataset[int(i)]
