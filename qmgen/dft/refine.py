r"""The float64 finish of a float32 SCF (QM1B's mixed-precision recipe, carried to
convergence).

float32 mode builds the Hamiltonian of a molecule once, in float64, with
``qmgen.dft.scf.build_hamiltonian`` (one-electron integrals, ERIs and their J/K layouts,
grid, AO values), and iterates on a float32 copy of it (``scf.cast_hamiltonian``,
:func:`hamiltonians`). The float32 loop stops early, at ``F32_CONV_TOL`` in energy and
``F32_CONV_TOL_GRAD`` in ‖g‖: its energies resolve ~1e-7 of the total and its ‖g‖ has a
noise floor of a few 1e-4 (asked for 2e-4 it ran to max_cycle). The finish then runs
``qmgen.dft.scf.run_scf`` again, in float64 on the float64 original, so the Fock matrix,
energy and convergence test are the very code of a float64 SCF and nothing is rebuilt:

.. math::
   E = \mathrm{tr}(D h) + E_{2}[D] + E_{xc}[D] + E_{nuc}, \quad
   F = h + J[D] - \tfrac12 K_x[D] + V_{xc}[D].

It starts from the float32 orbitals orthonormalised in float64 against the float64 overlap
(an idempotent density with the exact electron count) and runs float64 DIIS cycles, at
least ``REFINE_CYCLES`` and then until the caller's tolerances hold: |ΔE| < conv_tol and
‖g‖ < conv_tol_grad on the final state, checked in float64 (``run_scf``'s ``converged``).
The cycles of both loops together stay within the cycle cap; when it runs out first the
molecule is reported not converged. Orbital energies are first order in the density
error: re-evaluating the Fock matrix of the float32 density alone (QM1B's recipe) left
gaps of 9-11 heavy-atom molecules off by up to 1 meV.

Why the ERIs are float64: ERIs computed in float32 carry rounding shared by every quartet
of a shell pair (pair prefactors, Hermite coefficients), which does not average out; it
moved total energies of 9-11 heavy-atom molecules by 2-5 meV (first order in the ERI
error), against 0.003 meV for the float32 rounding of the basis itself. So the ERIs are
computed once in float64, cast to float32 for the iterations and used in float64 here.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from qmgen.dft.scf import (
    Hamiltonian,
    SCFInputs,
    SCFOptions,
    _orthogonalizer,
    build_hamiltonian,
    cast_hamiltonian,
    run_scf,
    two_electron_ints,
)
from qmgen.dft.uscf import run_uscf

# where the float32 loop stops (energy change, ‖g‖) before the float64 finish
F32_CONV_TOL = 1e-3
F32_CONV_TOL_GRAD = 1e-3
# float64 cycles the finish runs at least
REFINE_CYCLES = 4


def _to64(tree):
    return jax.tree_util.tree_map(
        lambda x: x.astype(jnp.float64) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree
    )


def hamiltonians(inputs: SCFInputs, xc: str):
    """(inputs64, ham64, ham): the float64 inputs and Hamiltonian of a molecule and the
    copy of that Hamiltonian in the dtype of ``inputs`` (float32), whose J/K layouts are
    gathered from the packed float64 ERIs cast to float32. Both come from
    ``scf.build_hamiltonian``; nothing of the float64 one is computed twice."""
    inputs64 = _to64(inputs)
    eris = two_electron_ints(inputs64, xc)
    ham64 = build_hamiltonian(inputs64, xc, eris)
    return inputs64, ham64, cast_hamiltonian(ham64, inputs.positions.dtype, eris)


def loop_options(opts: SCFOptions) -> SCFOptions:
    """The float32 loop's settings: the caller's, with its early stopping point."""
    return dataclasses.replace(
        opts,
        conv_tol=max(opts.conv_tol, F32_CONV_TOL),
        conv_tol_grad=max(opts.tol_grad, F32_CONV_TOL_GRAD),
    )


def refine_float64(
    inputs64: SCFInputs,
    ham64: Hamiltonian,
    mo_coeff32,
    mo_occ32,
    opts: SCFOptions,
    max_cycle=None,
) -> dict:
    """The float64 SCF that finishes a float32 one, from its orbitals.

    Args:
      inputs64: the molecule's inputs in float64. ham64: its float64 Hamiltonian, the one
        the float32 iterations used a cast copy of (:func:`hamiltonians`).
      mo_coeff32, mo_occ32: the float32 loop's orbitals and occupations.
      opts: the caller's SCF settings: their tolerances are the ones met (in float64).
      max_cycle: optional traced cap on the float64 cycles (the cycles the float32 loop
        left); default ``opts.max_cycle``.

    Unrestricted molecules (``mo_coeff32`` (2, n, n)) finish with ``uscf.run_uscf``.

    Returns ``run_scf``'s (or ``run_uscf``'s) dict, all float64: e_tot, mo_energy, mo_coeff,
    mo_occ, dm, fock, converged, n_iter (float64 cycles), scf_error (‖g‖), delta_e.
    """
    occ = mo_occ32.astype(jnp.float64)
    coeff = mo_coeff32.astype(jnp.float64)
    if coeff.ndim == 3:  # unrestricted: each spin's occupied orbitals on their own
        dm = jnp.stack([_orthonormal_density(ham64.s, coeff[k], occ[k], opts) for k in range(2)])
        scf = run_uscf
    else:
        dm, scf = _orthonormal_density(ham64.s, coeff, occ, opts), run_scf
    opts = dataclasses.replace(opts, diis_start_cycle=0)
    return scf(
        dataclasses.replace(inputs64, dm0=dm), opts, ham64, max_cycle, min_cycle=REFINE_CYCLES
    )


def _orthonormal_density(s, mo_coeff, occ, opts: SCFOptions):
    """Density of the occupied orbitals made S-orthonormal in float64, C (C^T S C)^{-1/2}."""
    c = mo_coeff * (occ > 0)
    m = c.T @ s @ c + jnp.diag((occ == 0).astype(jnp.float64))  # identity on virtuals
    c = c @ _orthogonalizer(m, opts.eigensolver)
    return (c * occ) @ c.T
