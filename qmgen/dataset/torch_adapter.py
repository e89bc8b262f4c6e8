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

_NUMPY_FLOAT = {torch.float16: np.float16, torch.float32: np.float32, torch.float64: np.float64}


def collate(rows: list[dict], pad_atoms: int | None = None, dtype=torch.float32) -> dict:
    """Padded tensors for a list of conformer dicts (B conformers, A atom slots).

    z (B,A) int64, positions (B,A,3), charges (B,A), forces (B,A,3) when stored,
    mask (B,A) bool, mo_energy (B,K) with mo_mask, per-conformer labels (B,) and dipole
    (B,3); floats in ``dtype``, integers int64, flags bool; smiles and name as lists.
    """
    if dtype not in _NUMPY_FLOAT:
        raise ValueError(f"unsupported dtype {dtype}; valid: {', '.join(map(str, _NUMPY_FLOAT))}")
    arrays = to_padded(columns_from_rows(rows), pad_atoms, _NUMPY_FLOAT[dtype], strings=True)
    out = {}
    for key, value in arrays.items():
        if isinstance(value, list):
            out[key] = value
        elif value.dtype == bool or value.dtype.kind == "f":
            out[key] = torch.from_numpy(np.ascontiguousarray(value))
        else:
            out[key] = torch.from_numpy(value.astype(np.int64))
    return out


class TorchConformers(_TorchDataset):
    """Conformers of a qmgen :class:`~qmgen.dataset.Dataset`; items are NumPy dicts.

    ``.collate`` is the matching collate function (pad to the batch's largest molecule,
    or to ``pad_atoms``); pass it as ``DataLoader(..., collate_fn=tds.collate)``.
    """

    def __init__(self, dataset, pad_atoms: int | None = None, dtype=None):
        self.dataset = dataset
        self.dtype = torch.float32 if dtype is None else dtype
        self.collate = functools.partial(collate, pad_atoms=pad_atoms, dtype=self.dtype)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> dict:
        return self.dataset[int(i)]
