r"""Unrestricted (spin-polarised) Kohn–Sham and Hartree–Fock SCF for one molecule, in JAX.

Pople–Nesbet equations :math:`F^\sigma C^\sigma = S C^\sigma \varepsilon^\sigma`,
:math:`\sigma \in \{\alpha, \beta\}` (Pople & Nesbet, J. Chem. Phys. 22, 571 (1954)), with

.. math::
   F^\sigma = h + J[D^\alpha + D^\beta] - K_x[D^\sigma] + V^\sigma_{xc}[D^\alpha, D^\beta],

.. math::
   E = \mathrm{tr}(D h) + \tfrac12 \mathrm{tr}(D J) - \tfrac12 \sum_\sigma
       \mathrm{tr}(D^\sigma K_x[D^\sigma]) + E_{xc}[\rho_\alpha, \rho_\beta] + E_{nuc},

:math:`D = D^\alpha + D^\beta` and :math:`K_x` the exact exchange with the functional's
fractions (``qmgen.dft.scf.exact_exchange``). This is PySCF's ``UKS``/``UHF``: the same
DIIS (one extrapolation of both Fock matrices from the joined error vectors
:math:`F^\sigma D^\sigma S - S D^\sigma F^\sigma`), the same convergence test (|ΔE| <
conv_tol and ‖g‖ < conv_tol_grad with g the occupied–virtual blocks
:math:`C^{\sigma T}_{vir} F^\sigma C^\sigma_{occ}` of both spins) and the same closing
diagonalisation as ``qmgen.dft.scf.run_scf``, whose inputs, Hamiltonian and options it
takes. An unrestricted molecule is marked by its inputs' shapes: ``dm0`` (2, n, n), the
alpha and beta guess densities, and ``n_occ`` (2,), the alpha and beta electron counts.

The semilocal XC part is evaluated spin-polarised (``qmgen.dft.xc.eval_xc_spin``, libxc's
conventions) as PySCF's ``NumInt.nr_uks``:

.. math::
   V^\alpha_{\mu\nu} = \sum_g w_g\big[v_{\rho_\alpha}\phi_\mu\phi_\nu
     + (2 v_{\sigma_{\alpha\alpha}}\nabla\rho_\alpha + v_{\sigma_{\alpha\beta}}\nabla\rho_\beta)
       \cdot\nabla(\phi_\mu\phi_\nu)\big],

and :math:`\langle S^2\rangle` of the Kohn–Sham determinant is PySCF's ``spin_square``,
:math:`S_z^2 + (N_\alpha+N_\beta)/2 - \mathrm{tr}(D^\alpha S D^\beta S)`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from qmgen.dft.numint import eval_rho, vxc_matrix
from qmgen.dft.scf import (
    Hamiltonian,
    SCFInputs,
    SCFOptions,
    _diagonalize,
    _diis_extrapolate,
    _orthogonalizer,
    build_hamiltonian,
    coulomb,
    exact_exchange,
)
from qmgen.dft.xc import eval_xc_spin, get_functional


def is_unrestricted(inputs: SCFInputs) -> bool:
    """Whether ``inputs`` describe an unrestricted SCF (``dm0`` holds two spin densities)."""
    return inputs.dm0.ndim == 3


def xc_energy_spin(ao, weights, dms, xc: str):
    """(E_xc, N_elec, V_xc (2, n, n)) of spin densities ``dms`` (2, n, n) on the grid."""
    functional = get_functional(xc)
    if functional.name == "hf":
        zero = jnp.zeros((), dms.dtype)
        return zero, zero, jnp.zeros_like(dms)
    gga = functional.is_gga
    (rho_a, grad_a), (rho_b, grad_b) = (eval_rho(ao, dms[s], gga) for s in range(2))
    rho = jnp.stack([rho_a, rho_b])
    sigma = None
    if gga:
        sigma = jnp.stack(
            [
                jnp.sum(grad_a * grad_a, axis=-1),
                jnp.sum(grad_a * grad_b, axis=-1),
                jnp.sum(grad_b * grad_b, axis=-1),
            ]
        )
    exc, vrho, vsigma = eval_xc_spin(xc, rho, sigma)
    total = rho_a + rho_b
    e_xc = jnp.sum(weights * total * exc)
    nelec = jnp.sum(weights * total)
    if gga:
        # vxc_matrix weights its gradient term by 2 w vsigma: pass vsigma 1/2 and the
        # spin's combination 2 v_aa grad_a + v_ab grad_b (libxc/PySCF nr_uks)
        g_a = 2.0 * vsigma[0][:, None] * grad_a + vsigma[1][:, None] * grad_b
        g_b = 2.0 * vsigma[2][:, None] * grad_b + vsigma[1][:, None] * grad_a
        v_a = vxc_matrix(ao, weights, vrho[0], 0.5, g_a)
        v_b = vxc_matrix(ao, weights, vrho[1], 0.5, g_b)
    else:
        v_a = vxc_matrix(ao, weights, vrho[0], None, None)
        v_b = vxc_matrix(ao, weights, vrho[1], None, None)
    return e_xc, nelec, jnp.stack([v_a, v_b])


def veff_spin(ham: Hamiltonian, dms, xc: str):
    """Two-electron potentials (2, n, n) and their energy (Coulomb + exchange + XC) for
    spin densities ``dms`` (2, n, n)."""
    total = dms[0] + dms[1]
    j = coulomb(ham, total)
    e2 = 0.5 * jnp.sum(total * j)
    vs = []
    for s in range(2):
        k = exact_exchange(ham, dms[s], xc)
        if k is None:
            vs.append(j)
        else:
            vs.append(j - k)
            e2 = e2 - 0.5 * jnp.sum(dms[s] * k)
    e_xc, _, vxc = xc_energy_spin(ham.ao, ham.weights, dms, xc)
    return jnp.stack(vs) + vxc, e2 + e_xc


def spin_occupations(n: int, n_occ, dtype):
    """(2, n) occupations: 1 on the lowest ``n_occ[s]`` orbitals of spin s."""
    return (jnp.arange(n)[None, :] < n_occ[:, None]).astype(dtype)


def _densities(mo_coeff, occ):
    return jnp.einsum("sik,sk,sjk->sij", mo_coeff, occ, mo_coeff)


def _gradient_norm(fock, mo_coeff, occ):
    """‖g‖ with g the occupied–virtual blocks C_vir^T F C_occ of both spins (PySCF's UHF
    ``get_grad``)."""
    g = jnp.einsum("sik,sij,sjl->skl", mo_coeff, fock, mo_coeff)
    mask = (occ[:, :, None] == 0) & (occ[:, None, :] > 0)
    return jnp.sqrt(jnp.sum(jnp.where(mask, g, 0.0) ** 2))


def spin_square(dms, s, n_occ):
    """:math:`\\langle S^2\\rangle` of the determinant with spin densities ``dms``."""
    n_a, n_b = (n_occ[k].astype(dms.dtype) for k in range(2))
    overlap = jnp.sum((dms[0] @ s) * (dms[1] @ s).T)  # tr(Da S Db S)
    return 0.25 * (n_a - n_b) ** 2 + 0.5 * (n_a + n_b) - overlap


def run_uscf(
    inputs: SCFInputs,
    opts: SCFOptions,
    ham: Hamiltonian | None = None,
    max_cycle=None,
    min_cycle: int = 0,
    retry: bool = True,
) -> dict:
    """Unrestricted SCF for one molecule; arguments and loop as ``scf.run_scf``.

    Returns dict: e_tot, mo_energy (2, n), mo_coeff (2, n, n), mo_occ (2, n), dm (2, n, n)
    spin densities, fock (2, n, n), s2 (<S^2>), converged, n_iter, scf_error (final ‖g‖)
    and delta_e.
    """
    if ham is None:
        ham = build_hamiltonian(inputs, opts.xc)
    dtype = ham.s.dtype
    n = ham.s.shape[0]
    cap = opts.max_cycle if max_cycle is None else jnp.minimum(max_cycle, opts.max_cycle)
    x = _orthogonalizer(ham.s, opts.eigensolver)
    occ = spin_occupations(n, inputs.n_occ, dtype)
    m = opts.diis_space

    def energy_of(dms):
        v, e2 = veff_spin(ham, dms, opts.xc)
        return v, jnp.sum((dms[0] + dms[1]) * ham.h) + e2 + ham.e_nuc

    def met(d_e, norm_g):
        return (jnp.abs(d_e) < opts.conv_tol) & (norm_g < opts.tol_grad)

    def diagonalize(f, v_orth):
        out = [_diagonalize(f[s], x, v_orth[s], opts.eigensolver) for s in range(2)]
        return tuple(jnp.stack([o[k] for o in out]) for k in range(3))

    dm0 = inputs.dm0.astype(dtype)
    v0, e0 = energy_of(dm0)
    eye = jnp.broadcast_to(jnp.eye(n, dtype=dtype), (2, n, n))
    state = dict(
        it=jnp.zeros((), jnp.int32),
        dm=dm0,
        v=v0,
        e_tot=e0,
        converged=jnp.zeros((), bool),
        done=jnp.zeros((), bool),
        passes=jnp.zeros((), jnp.int32),
        f_hist=jnp.zeros((m, 2, n, n), dtype),
        e_hist=jnp.zeros((m, 2, n, n), dtype),
        count=jnp.zeros((), jnp.int32),
        f_prev=ham.h + v0,
        norm_g=jnp.asarray(jnp.inf, dtype),
        d_e=jnp.asarray(jnp.inf, dtype),
        v_orth=eye,
        mo_energy=jnp.zeros((2, n), dtype),
        mo_coeff=eye,
    )

    def cycle_cond(st):
        return (~st["converged"] | (st["it"] < min_cycle)) & (st["it"] < cap)

    def cycle(st):
        dm = st["dm"]
        f = ham.h + st["v"]
        use_diis = st["it"] >= opts.diis_start_cycle
        err = f @ dm @ ham.s - ham.s @ dm @ f
        slot = st["count"] % m
        f_hist = jnp.where(use_diis, st["f_hist"].at[slot].set(f), st["f_hist"])
        e_hist = jnp.where(use_diis, st["e_hist"].at[slot].set(err), st["e_hist"])
        count = st["count"] + use_diis.astype(jnp.int32)
        extrapolated = _diis_extrapolate(
            f_hist.reshape(m, 2 * n, n), e_hist.reshape(m, 2 * n, n), count, m
        ).reshape(2, n, n)
        f_use = jnp.where(use_diis, extrapolated, f)
        if opts.damping:
            f_use = jnp.where(
                use_diis, f_use, (1 - opts.damping) * f_use + opts.damping * st["f_prev"]
            )
        if opts.level_shift:
            f_use = f_use + opts.level_shift * (ham.s - ham.s @ dm @ ham.s)
        _, c, v_orth = diagonalize(f_use, st["v_orth"])
        dm_new = _densities(c, occ)
        v_new, e_new = energy_of(dm_new)
        norm_g = _gradient_norm(ham.h + v_new, c, occ)
        d_e = e_new - st["e_tot"]
        return dict(
            st,
            it=st["it"] + 1,
            dm=dm_new,
            v=v_new,
            e_tot=e_new,
            converged=met(d_e, norm_g),
            f_hist=f_hist,
            e_hist=e_hist,
            count=count,
            f_prev=f,
            norm_g=norm_g,
            d_e=d_e,
            v_orth=v_orth,
        )

    def finish(st):
        mo_energy, mo_coeff, v_orth = diagonalize(ham.h + st["v"], st["v_orth"])
        dm = _densities(mo_coeff, occ)
        v, e_tot = energy_of(dm)
        norm_g = _gradient_norm(ham.h + v, mo_coeff, occ)
        d_e = e_tot - st["e_tot"]
        return dict(
            st,
            dm=dm,
            v=v,
            e_tot=e_tot,
            converged=jnp.zeros((), bool),
            done=met(d_e, norm_g) & jnp.isfinite(e_tot),
            passes=st["passes"] + 1,
            norm_g=norm_g,
            d_e=d_e,
            v_orth=v_orth,
            mo_energy=mo_energy,
            mo_coeff=mo_coeff,
        )

    def attempt_cond(st):
        more = ~st["done"] & (st["it"] < cap) if retry else False
        return (st["passes"] == 0) | more

    def attempt(st):
        return finish(jax.lax.while_loop(cycle_cond, cycle, st))

    st = jax.lax.while_loop(attempt_cond, attempt, state)
    return dict(
        e_tot=st["e_tot"],
        mo_energy=st["mo_energy"],
        mo_coeff=st["mo_coeff"],
        mo_occ=occ,
        dm=st["dm"],
        fock=ham.h + st["v"],
        s2=spin_square(st["dm"], ham.s, inputs.n_occ),
        converged=st["done"],
        n_iter=st["it"],
        scf_error=st["norm_g"],
        delta_e=st["d_e"],
    )
