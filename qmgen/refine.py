r"""Float64 re-evaluation of a float32 SCF (QM1B's mixed-precision recipe).

The SCF iterates in float32; from its converged density D the total energy and the Fock
matrix are rebuilt once in float64,

.. math::
   E = \mathrm{tr}(D h) + E_{2}[D] + E_{xc}[D] + E_{nuc}, \quad
   F = h + J[D] - \tfrac{c_x}{2}K[D] + V_{xc}[D],

with float64 one-electron integrals, grid, AO values and XC, and the float32 ERIs promoted
to float64 for J and K (recomputing the ERIs in float64 would cost as much as the whole
float64 run). Orbital energies are the eigenvalues of that float64 Fock matrix. The errors
this leaves against a float64 run are measured in benchmarks/scf.py and tests.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from qmgen.grid import place_grid
from qmgen.integrals.one_electron import one_electron
from qmgen.numint import ao_values
from qmgen.scf import (
    PAD_ENERGY,
    Hamiltonian,
    SCFInputs,
    _diagonalize,
    _orthogonalizer,
    nuclear_repulsion,
    veff,
)
from qmgen.xc import get_functional


def _to64(tree):
    return jax.tree_util.tree_map(
        lambda x: x.astype(jnp.float64) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree
    )


def refine_float64(inputs: SCFInputs, ham32: Hamiltonian, dm32, xc: str) -> dict:
    """Energy, orbital energies and matrices in float64 from a float32 density.

    Returns dict: e_tot, mo_energy (n,), dm (n, n), s (n, n), dipole (3, n, n), all float64.
    """
    functional = get_functional(xc)
    inp = _to64(inputs)
    charges = inp.z.astype(jnp.float64)
    one = one_electron(inp.basis, inp.positions, charges)
    pad = 1.0 - inp.ao_mask
    s = one["overlap"] + jnp.diag(pad)
    h = one["kinetic"] + one["nuclear"] + jnp.diag(pad * PAD_ENERGY)
    if functional.name == "hf":
        ao, weights = ham32.ao.astype(jnp.float64), ham32.weights.astype(jnp.float64)
    else:
        coords, weights = place_grid(inp.grid, inp.positions, inp.z)
        ao = ao_values(inp.basis, inp.positions, coords, deriv=int(functional.is_gga))
    ham = Hamiltonian(
        s=s,
        h=h,
        eri_j=ham32.eri_j.astype(jnp.float64),
        eri_k=None if ham32.eri_k is None else ham32.eri_k.astype(jnp.float64),
        e_nuc=nuclear_repulsion(inp.positions, charges),
        dipole=one["dipole"],
        ao=ao,
        weights=weights,
    )
    dm = dm32.astype(jnp.float64)
    v, e2 = veff(ham, dm, xc)
    e_tot = jnp.sum(dm * h) + e2 + ham.e_nuc
    mo_energy, _ = _diagonalize(h + v, _orthogonalizer(s))
    return dict(e_tot=e_tot, mo_energy=mo_energy, dm=dm, s=s, dipole=one["dipole"])
