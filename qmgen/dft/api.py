"""``qmgen.dft.nr_rks``: integrated XC quantities of a density, as PySCF's NumInt.nr_rks."""

from __future__ import annotations

from functools import cache

import jax
import jax.numpy as jnp
import numpy as np

from qmgen.dft.basis import build_basis
from qmgen.dft.grid import build_grid, check_level, place_grid
from qmgen.dft.numint import ao_values
from qmgen.dft.precision import check_precision, with_x64
from qmgen.dft.scf import xc_energy
from qmgen.dft.xc import get_functional
from qmgen.molecule import Molecule, MoleculeError


@cache
def _program(xc: str, deriv: int):
    def run(basis, positions, z, grid, dm):
        coords, weights = place_grid(grid, positions, z)
        ao = ao_values(basis, positions, coords, deriv=deriv)
        exc, nelec, vxc = xc_energy(ao, weights, dm, xc)
        return nelec, exc, vxc

    return jax.jit(run)


@with_x64
def nr_rks(mol: Molecule, dm, basis="sto-3g", xc="b3lyp", grid_level=0, precision="float64"):
    """(nelec, exc, vxc) of the closed-shell density matrix ``dm`` on PySCF's grid.

    Args:
      mol: the molecule. dm: (N, N) total density matrix in PySCF's AO order.
      basis: basis-set name. xc: "lda", "svwn", "pbe", "pbe0", "b3lyp", "b3lyp5" or "hf".
      grid_level: PySCF grid level 0-9. precision: "float64" or "float32".

    Returns the integrated electron count, the XC energy (Hartree) and the XC potential
    matrix (N, N) in PySCF's AO order: the quantities of
    ``dft.numint.NumInt().nr_rks(mol, grids, xc, dm)`` for PySCF's grid of that level.
    """
    if not isinstance(mol, Molecule):
        raise MoleculeError(f"expected a qmgen.Molecule, got {type(mol).__name__}")
    functional = get_functional(xc)
    level = check_level(grid_level)
    dtype = check_precision(precision)
    b, layout = build_basis(mol, basis)
    dm = np.asarray(dm, dtype=np.float64)
    if dm.shape != (layout.n_ao, layout.n_ao):
        raise ValueError(f"dm must have shape {(layout.n_ao, layout.n_ao)}, got {dm.shape}")
    internal = np.zeros((b.n_ao, b.n_ao))
    real = np.flatnonzero(layout.ao_index >= 0)
    internal[np.ix_(real, real)] = dm[np.ix_(layout.ao_index[real], layout.ao_index[real])]
    grid = build_grid(mol, level)
    fn = _program(functional.name, int(functional.is_gga))
    nelec, exc, vxc = fn(
        b.astype(dtype),
        jnp.asarray(mol.positions, dtype),
        jnp.asarray(mol.z, jnp.int32),
        jax.tree_util.tree_map(
            lambda x: jnp.asarray(x, dtype if x.dtype.kind == "f" else x.dtype), grid
        ),
        jnp.asarray(internal, dtype),
    )
    return float(nelec), float(exc), layout.to_pyscf_order(np.asarray(vxc), (0, 1))
