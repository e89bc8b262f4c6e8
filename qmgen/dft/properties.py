r"""Labels from a converged SCF state (JAX): orbital energies, dipole, charges, forces.

* Frontier orbitals: HOMO = :math:`\varepsilon_{n_{occ}-1}`, LUMO = :math:`\varepsilon_{n_{occ}}`,
  gap = LUMO − HOMO (Hartree).
* Dipole (atomic units, origin 0, as PySCF's ``dip_moment(unit='au')``):
  :math:`\boldsymbol\mu = \sum_A Z_A \mathbf R_A - \mathrm{tr}(D\,\mathbf r)`.
* Mulliken charges: :math:`q_A = Z_A - \sum_{\mu \in A} (DS)_{\mu\mu}`.
* Forces :math:`-dE/d\mathbf R_A` by JAX autodiff of the SCF Lagrangian at the converged
  density (Pulay, Mol. Phys. 17, 197 (1969)):

  .. math::
     \mathcal L(\mathbf R) = \mathrm{tr}(D h) + \tfrac12 \sum D_{ij} D_{kl} (ij|kl)
       - \tfrac{c_x}{4} \sum D_{ij} D_{kl} (ik|jl)
       - \tfrac{\alpha - c_x}{4} \sum D_{ij} D_{kl} (ik|jl)_{LR}
       + E_{xc}[D] + E_{nuc} - \mathrm{tr}(W S),

  (the long-range term, of erf(omega r12)/r12, for range-separated hybrids only) with D
  and the energy-weighted density W held fixed. The XC term is differentiated through the
  AO centres only, on grid points and weights held fixed: PySCF's default (no grid
  response).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp

from qmgen.dft import density_fit
from qmgen.dft.grid import place_grid
from qmgen.dft.integrals.eri import eri_energy
from qmgen.dft.integrals.one_electron import one_electron
from qmgen.dft.integrals.pairs import pair_arrays, pairs_to_packed
from qmgen.dft.numint import ao_values
from qmgen.dft.scf import SCFInputs, nuclear_repulsion, xc_energy
from qmgen.dft.uscf import xc_energy_spin
from qmgen.dft.xc import get_functional

if TYPE_CHECKING:  # shape annotations only (jaxtyping is a test dependency)
    from jaxtyping import Array, Float, Int, Shaped


def frontier(
    mo_energy: Float[Array, " n"], n_occ: Int[Array, ""]
) -> tuple[Float[Array, ""], Float[Array, ""], Float[Array, ""]]:
    """(homo, lumo, gap) from ascending orbital energies and the occupied count."""
    homo = jnp.take(mo_energy, n_occ - 1)
    lumo = jnp.take(mo_energy, n_occ)
    return homo, lumo, lumo - homo


def frontier_spin(
    mo_energy: Float[Array, "2 n"], n_occ: Int[Array, " 2"]
) -> tuple[Float[Array, ""], Float[Array, ""], Float[Array, ""]]:
    """(homo, lumo, gap) of an unrestricted determinant: the higher of the two spins'
    highest occupied and the lower of their lowest virtual orbital energies (a spin with
    no electrons has no HOMO)."""
    idx = jnp.arange(mo_energy.shape[1])[None, :]
    occupied = idx < n_occ[:, None]
    homo = jnp.max(jnp.where(occupied, mo_energy, -jnp.inf))
    lumo = jnp.min(jnp.where(occupied, jnp.inf, mo_energy))
    return homo, lumo, lumo - homo


def dipole_moment(
    dipole_ints: Float[Array, "3 n n"],
    dm: Float[Array, "n n"],
    positions: Float[Array, "atom 3"],
    z: Int[Array, " atom"],
) -> Float[Array, "3"]:
    """Total dipole (3,) in e·Bohr: nuclear minus electronic, origin 0."""
    nuc = jnp.einsum("a,ax->x", z.astype(dm.dtype), positions)
    return nuc - jnp.einsum("xij,ji->x", dipole_ints, dm)


def mulliken_charges(
    dm: Float[Array, "n n"],
    s: Float[Array, "n n"],
    ao_atom: Int[Array, " n"],
    ao_mask: Shaped[Array, " n"],
    z: Int[Array, " atom"],
) -> Float[Array, " atom"]:
    """Mulliken charges (natom,) from the density and overlap (padding AOs excluded)."""
    pop = jnp.sum(dm * s, axis=1) * ao_mask
    per_atom = jax.ops.segment_sum(pop, ao_atom, num_segments=z.shape[0])
    return z.astype(dm.dtype) - per_atom


def _two_electron_density(dm, hyb: float, coulomb: float = 1.0, spin_dms=None):
    r"""s8-packed :math:`\Gamma` with :math:`E_2 = \sum_P (ERI)_P \Gamma_P`.

    Over AO pairs p = (ij), q = (kl) with multiplicities w:
    :math:`w_p w_q [\tfrac{j}{2} D_{ij} D_{kl} - \tfrac{c_x}{8}(D_{ik} D_{jl} + D_{il} D_{jk})]`
    with j = ``coulomb`` (0 for the long-range exchange-only term, c_x then alpha - c_x).
    Unrestricted (``spin_dms`` (2, n, n), ``dm`` their sum): the exchange term is
    :math:`2\sum_\sigma` of the same form in :math:`D^\sigma`.
    """
    n = dm.shape[0]
    pi, pj, w = pair_arrays(n)
    d = dm[pi, pj]
    g = 0.5 * coulomb * d[:, None] * d[None, :]
    if hyb != 0.0:
        parts = [(dm, 1.0)] if spin_dms is None else [(spin_dms[k], 2.0) for k in range(2)]
        for x, weight in parts:
            k = x[pi[:, None], pi[None, :]] * x[pj[:, None], pj[None, :]]
            k = k + x[pi[:, None], pj[None, :]] * x[pj[:, None], pi[None, :]]
            g = g - 0.125 * weight * hyb * k
    wj = jnp.asarray(w, dm.dtype)
    return pairs_to_packed(jax.lax.stop_gradient(g * wj[:, None] * wj[None, :]), n)


def _lagrangian(positions, inputs: SCFInputs, dm, wdm, xc: str, spin_dms=None):
    functional = get_functional(xc)
    charges = inputs.z.astype(dm.dtype)
    one = one_electron(inputs.basis, positions, charges)
    e = jnp.sum(dm * (one["kinetic"] + one["nuclear"])) - jnp.sum(wdm * one["overlap"])
    if inputs.aux is not None:
        e = e + density_fit.energy(
            inputs.basis,
            inputs.aux,
            positions,
            inputs.aux_mask,
            jax.lax.stop_gradient(dm),
            functional.hyb,
            functional.lr_coef,
            functional.omega,
            spin_dms=None if spin_dms is None else jax.lax.stop_gradient(spin_dms),
        )
    else:
        gamma = _two_electron_density(dm, functional.hyb, spin_dms=spin_dms)
        e = e + eri_energy(inputs.basis, positions, gamma)
    if functional.lr_coef != 0.0 and inputs.aux is None:
        gamma_lr = _two_electron_density(dm, functional.lr_coef, 0.0, spin_dms)
        e = e + eri_energy(inputs.basis, positions, gamma_lr, omega=functional.omega)
    if functional.name != "hf":
        coords, weights = jax.lax.stop_gradient(place_grid(inputs.grid, positions, inputs.z))
        ao = ao_values(inputs.basis, positions, coords, deriv=int(functional.is_gga))
        if spin_dms is None:
            e = e + xc_energy(ao, weights, dm, xc)[0]
        else:
            e = e + xc_energy_spin(ao, weights, spin_dms, xc)[0]
    return e + nuclear_repulsion(positions, charges)


def forces(
    inputs: SCFInputs,
    mo_energy: Float[Array, " n"],
    mo_coeff: Float[Array, "n n"],
    mo_occ: Float[Array, " n"],
    xc: str,
) -> Float[Array, "atom 3"]:
    """Forces (natom, 3) in Hartree/Bohr: minus the analytic energy gradient.

    Unrestricted SCFs pass (2, n) orbital energies and occupations and (2, n, n)
    coefficients; D and W are then sums over the spins, exchange and XC spin-resolved."""
    if mo_coeff.ndim == 3:
        spin_dms = jnp.einsum("sik,sk,sjk->sij", mo_coeff, mo_occ, mo_coeff)
        wdm = jnp.einsum("sik,sk,sjk->ij", mo_coeff, mo_occ * mo_energy, mo_coeff)
        dm = spin_dms[0] + spin_dms[1]
        grad = jax.grad(_lagrangian)(inputs.positions, inputs, dm, wdm, xc, spin_dms)
        return -grad
    dm = (mo_coeff * mo_occ) @ mo_coeff.T
    wdm = (mo_coeff * (mo_occ * mo_energy)) @ mo_coeff.T
    grad = jax.grad(_lagrangian)(inputs.positions, inputs, dm, wdm, xc)
    return -grad
