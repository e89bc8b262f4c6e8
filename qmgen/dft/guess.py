"""Initial density: superposition of atomic densities (PySCF's ``init_guess='atom'``).

Each element's spherically averaged, occupation-averaged atomic RHF density in the chosen
basis comes from PySCF once per (element, basis) and is cached: like the basis set itself
it is per-element data, independent of the geometry. A molecule's guess is the block
diagonal of its atoms' densities, placed host-side in the internal AO order.
"""

from __future__ import annotations

from functools import cache

import numpy as np

from qmgen.dft.basis import BasisLayout
from qmgen.molecule import SYMBOLS, Molecule


@cache
def atomic_density(z: int, basis: str) -> np.ndarray:
    """(nao_atom, nao_atom) atomic density of element ``z`` in ``basis`` (PySCF AO order)."""
    from pyscf import gto
    from pyscf.scf import atom_hf

    mol = gto.M(atom=f"{SYMBOLS[z]} 0 0 0", basis=basis, spin=z % 2, unit="Bohr", verbose=0)
    _, _, c, occ = atom_hf.get_atm_nrhf(mol)[SYMBOLS[z]]
    return (c * occ) @ c.T


def sad_density(mol: Molecule, layout: BasisLayout, n_ao: int) -> np.ndarray:
    """Block-diagonal guess density (n_ao, n_ao) in the internal (padded) AO order."""
    full = np.zeros((layout.n_ao, layout.n_ao))
    p0 = 0
    for z in mol.z.tolist():
        block = atomic_density(int(z), layout.name)
        n = block.shape[0]
        full[p0 : p0 + n, p0 : p0 + n] = block
        p0 += n
    out = np.zeros((n_ao, n_ao))
    real = np.flatnonzero(layout.ao_index >= 0)
    idx = layout.ao_index[real]
    out[np.ix_(real, real)] = full[np.ix_(idx, idx)]
    return out
