r"""Closed-shell Kohn–Sham and Hartree–Fock SCF for one molecule, in JAX.

Roothaan–Hall iterations :math:`F(D) C = S C \varepsilon` with

.. math::
   F = h + J[D] - \tfrac12 K_x[D] + V_{xc}[D], \quad
   E = \mathrm{tr}(D h) + \tfrac12 \mathrm{tr}(D J) - \tfrac14\mathrm{tr}(D K_x)
       + E_{xc}[\rho] + E_{nuc},

with the exact exchange :math:`K_x = c_x K + (\alpha - c_x) K^{LR}_\omega` (:math:`c_x` the
full-range exact-exchange fraction; range-separated hybrids add the long-range exchange of
:math:`\mathrm{erf}(\omega r_{12})/r_{12}` with the extra long-range fraction, as PySCF's
``get_veff``; Yanai, Tew & Handy, Chem. Phys. Lett. 393, 51 (2004)), accelerated by Pulay's
DIIS (Chem. Phys. Lett. 73, 393 (1980)) with PySCF's error vector :math:`FDS - SDF` and a fixed-size
history handled by masks. The loop is a ``lax.while_loop`` with PySCF's convergence test
(|ΔE| < conv_tol and ‖g‖ < conv_tol_grad, g the occupied–virtual Fock block) and a
``max_cycle`` cap, followed by PySCF's extra diagonalisation (``conv_check``). The same
test is applied to that final state (PySCF relaxes it there to 10 conv_tol or
3 conv_tol_grad); where it fails, the cycles continue, so ``converged`` always means the
returned state met it. Under ``vmap`` each molecule stops updating once it has converged.

Padding AOs (zero functions that map many molecules onto one compiled shape) get an
identity overlap block and a Fock diagonal above every real orbital energy (``pad_core``)
so they are never occupied and sort last.
The single-molecule kernel here is pure; batching (vmap) happens in ``qmgen.dft.engine``.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from qmgen.dft import density_fit
from qmgen.dft.basis import Basis
from qmgen.dft.grid import Grid, place_grid
from qmgen.dft.integrals.eri import eri_packed
from qmgen.dft.integrals.one_electron import one_electron
from qmgen.dft.integrals.pairs import (
    packed_to_exchange,
    packed_to_pairs,
    pair_arrays,
    pairs_to_matrix,
)
from qmgen.dft.linalg import eigh
from qmgen.dft.numint import ao_values, eval_rho, vxc_matrix
from qmgen.dft.xc import eval_xc, get_functional


def pad_core(h, ao_mask):
    """Core Hamiltonian with padding AOs given an orbital energy above the real spectrum.

    The level is twice the Gershgorin bound of the real block plus 10 Hartree: far enough
    above every real orbital energy, and no larger, because an eigensolver's error scales
    with the norm of the whole matrix (a fixed 1e3 Hartree stalled float32 SCFs at
    |g| ~ 6e-4).
    """
    real = ao_mask[:, None] * ao_mask[None, :]
    level = 2.0 * jnp.max(jnp.sum(jnp.abs(h * real), axis=1)) + 10.0
    return h * real + jnp.diag((1.0 - ao_mask) * level)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class SCFInputs:
    """Everything the SCF of one molecule needs, as arrays (a JAX pytree).

    basis: ``Basis`` (possibly padded). positions: (natom, 3) Bohr. z: (natom,) int, 0 for
    padding atoms. grid: ``Grid``. ao_mask: (n_ao,) 1 for real AOs, 0 for padding.
    ao_atom: (n_ao,) int atom of each AO (0 for padding). dm0: (n_ao, n_ao) initial
    density. n_occ: () int number of doubly occupied orbitals. aux, aux_mask: the
    auxiliary basis (possibly padded) and its (n_aux,) mask for density fitting; None for
    exact ERIs (the choice is part of the pytree's structure, so of the compiled program).
    """

    basis: Basis
    # NumPy on the host (batching.prepare), JAX arrays once on a device or traced
    positions: jax.Array | np.ndarray
    z: jax.Array | np.ndarray
    grid: Grid
    ao_mask: jax.Array | np.ndarray
    ao_atom: jax.Array | np.ndarray
    dm0: jax.Array | np.ndarray
    n_occ: jax.Array | np.ndarray
    aux: Basis | None = None
    aux_mask: jax.Array | np.ndarray | None = None


@dataclasses.dataclass(frozen=True)
class SCFOptions:
    """Static SCF settings (PySCF's names and defaults where PySCF has them)."""

    xc: str = "b3lyp5"
    conv_tol: float = 1e-9
    conv_tol_grad: float | None = None  # default sqrt(conv_tol), as PySCF
    max_cycle: int = 50
    diis_space: int = 8
    diis_start_cycle: int = 1
    level_shift: float = 0.0
    damping: float = 0.0
    eigensolver: str = "auto"  # see qmgen.dft.linalg.eigh

    @property
    def tol_grad(self) -> float:
        return self.conv_tol_grad if self.conv_tol_grad is not None else self.conv_tol**0.5


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Hamiltonian:
    """Geometry-dependent matrices of one molecule (internal AO order)."""

    s: jax.Array  # (n, n) overlap, identity on padding AOs
    h: jax.Array  # (n, n) core Hamiltonian, a high level on padding AOs (pad_core)
    e_nuc: jax.Array
    dipole: jax.Array  # (3, n, n) <mu|r|nu>, origin 0
    ao: jax.Array  # (1 or 4, G, n) AO values (and gradients) on the grid
    weights: jax.Array  # (G,)
    # exact ERIs: (npair, npair) (ij|kl) over AO pairs i >= j, k >= l
    eri_j: jax.Array | None = None
    # exact ERIs: (n*n, n*n) exchange layout of the scaled ERIs
    # c_x (ik|jl) + (alpha - c_x) (ik|jl)_LR: K_x = eri_k @ vec(D); None without exchange
    eri_k: jax.Array | None = None
    # density fitting: (n_aux, n, n) fitted B^Q_ij of 1/r12 and, for range-separated
    # hybrids, of erf(omega r12)/r12 (``qmgen.dft.density_fit``)
    df_b: jax.Array | None = None
    df_b_lr: jax.Array | None = None


def nuclear_repulsion(positions, charges):
    """Sum over atom pairs of Z_A Z_B / R_AB (padding atoms have Z = 0)."""
    d = positions[:, None, :] - positions[None, :, :]
    r2 = jnp.sum(d * d, axis=-1)
    pair = (charges[:, None] * charges[None, :]) > 0
    pair = pair & ~jnp.eye(positions.shape[0], dtype=bool)
    inv = jnp.where(pair, 1.0 / jnp.sqrt(jnp.where(pair, r2, 1.0)), 0.0)
    return 0.5 * jnp.sum(charges[:, None] * charges[None, :] * inv)


def two_electron_ints(inputs: SCFInputs, xc: str) -> dict:
    """Two-electron integrals of one molecule for functional ``xc``, in compact form.

    Exact ERIs: ``packed``, the s8-packed (ij|kl), and ``packed_x``, the ERIs exchange is
    built from, scaled by the functional's fractions,
    :math:`c_x (ij|kl) + (\alpha - c_x)(ij|kl)_{LR}` with the long-range integrals of
    erf(omega r12)/r12 (``eri_packed(omega=)``) for range-separated hybrids; None without
    exact exchange. One vector for both keeps a single K layout.

    Density fitting (``inputs.aux`` set): ``df_b`` and ``df_b_lr``, the fitted tensors
    (n_aux, n, n) of 1/r12 and (range-separated hybrids only, else None) of the long-range
    operator (``density_fit.fitted_ints``).
    """
    functional = get_functional(xc)
    if inputs.aux is not None:
        args = (inputs.basis, inputs.aux, inputs.positions, inputs.aux_mask)
        b_lr = None
        if functional.lr_coef != 0.0:
            b_lr = density_fit.fitted_ints(*args, omega=functional.omega)
        return dict(df_b=density_fit.fitted_ints(*args), df_b_lr=b_lr)
    packed = eri_packed(inputs.basis, inputs.positions)
    if not functional.has_exchange:
        return dict(packed=packed, packed_x=None)
    packed_x = functional.hyb * packed
    if functional.lr_coef != 0.0:
        lr = eri_packed(inputs.basis, inputs.positions, omega=functional.omega)
        packed_x = packed_x + functional.lr_coef * lr
    return dict(packed=packed, packed_x=packed_x)


def build_hamiltonian(inputs: SCFInputs, xc: str, eris=None) -> Hamiltonian:
    """Integrals, grid and AO values of one molecule in the dtype of ``inputs``.

    ``eris``: optional precomputed ``two_electron_ints(inputs, xc)`` (cast to the dtype of
    ``inputs``).
    """
    functional = get_functional(xc)
    dtype = inputs.positions.dtype
    charges = inputs.z.astype(dtype)
    one = one_electron(inputs.basis, inputs.positions, charges)
    pad = 1.0 - inputs.ao_mask
    s = one["overlap"] + jnp.diag(pad)
    h = pad_core(one["kinetic"] + one["nuclear"], inputs.ao_mask)
    if eris is None:
        eris = two_electron_ints(inputs, xc)
    n = s.shape[0]
    layouts = two_electron_layouts(eris, n, dtype)
    if functional.name == "hf":
        ao = jnp.zeros((1, 0, n), dtype)
        weights = jnp.zeros((0,), dtype)
    else:
        coords, weights = place_grid(inputs.grid, inputs.positions, inputs.z)
        ao = ao_values(inputs.basis, inputs.positions, coords, deriv=int(functional.is_gga))
    e_nuc = nuclear_repulsion(inputs.positions, charges)
    return Hamiltonian(s, h, e_nuc, one["dipole"], ao, weights, **layouts)


def two_electron_layouts(eris: dict, n: int, dtype) -> dict:
    """The ``Hamiltonian`` fields of ``two_electron_ints``' result, in ``dtype``: the J
    layout ``eri_j`` (npair, npair) and, with exact exchange, the K layout ``eri_k``
    (n*n, n*n) from the packed vectors; with density fitting the fitted tensors as they
    are."""
    if "df_b" in eris:
        return {key: (None if v is None else v.astype(dtype)) for key, v in eris.items()}
    packed, packed_x = eris["packed"], eris["packed_x"]
    eri_j = packed_to_pairs(packed.astype(dtype), n)
    eri_k = None if packed_x is None else packed_to_exchange(packed_x.astype(dtype), n)
    return dict(eri_j=eri_j, eri_k=eri_k)


def cast_hamiltonian(ham: Hamiltonian, dtype, eris=None) -> Hamiltonian:
    """``ham`` with every floating array cast to ``dtype``.

    float32 mode builds the Hamiltonian once in float64 (for the finish) and iterates on
    this copy. With ``eris`` (the s8-packed ``two_electron_ints`` ``ham`` was built from)
    the J/K layouts are gathered again from the packed vectors cast to ``dtype`` instead of
    cast from the float64 layouts: the same values, read from 8x smaller arrays.
    """
    lay = {}
    if eris is not None:
        lay = two_electron_layouts(eris, ham.s.shape[0], dtype)
        empty: dict = {key: None for key in lay}
        ham = dataclasses.replace(ham, **empty)
    ham = jax.tree_util.tree_map(
        lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, ham
    )
    return dataclasses.replace(ham, **lay)


def xc_energy(ao, weights, dm, xc: str):
    """(E_xc, N_elec, V_xc) of density matrix ``dm`` on the grid."""
    functional = get_functional(xc)
    if functional.name == "hf":
        zero = jnp.zeros((), dm.dtype)
        return zero, zero, jnp.zeros_like(dm)
    rho, grad = eval_rho(ao, dm, functional.is_gga)
    sigma = jnp.sum(grad * grad, axis=-1) if grad is not None else None
    exc, vrho, vsigma = eval_xc(xc, rho, sigma)
    e_xc = jnp.sum(weights * rho * exc)
    nelec = jnp.sum(weights * rho)
    return e_xc, nelec, vxc_matrix(ao, weights, vrho, vsigma, grad)


def coulomb(ham: Hamiltonian, dm):
    """J[D] (n, n) of the total density ``dm`` (exact or density-fitted ERIs)."""
    if ham.df_b is not None:
        return density_fit.coulomb(ham.df_b, dm)
    n = dm.shape[0]
    pi, pj, w = pair_arrays(n)
    return pairs_to_matrix(ham.eri_j @ (dm[pi, pj] * jnp.asarray(w, dm.dtype)), n)


def exact_exchange(ham: Hamiltonian, dm, xc: str):
    """K_x[D] (n, n), the functional's fractions included (``c_x K + (alpha - c_x)
    K^LR``), linear in ``dm``; None for functionals without exact exchange."""
    if ham.df_b is None:
        if ham.eri_k is None:
            return None
        return (ham.eri_k @ dm.reshape(-1)).reshape(dm.shape)
    functional = get_functional(xc)
    k = None
    if functional.hyb != 0.0:
        k = functional.hyb * density_fit.exchange(ham.df_b, dm)
    if ham.df_b_lr is not None:
        k_lr = functional.lr_coef * density_fit.exchange(ham.df_b_lr, dm)
        k = k_lr if k is None else k + k_lr
    return k


def veff(ham: Hamiltonian, dm, xc: str):
    """Two-electron potential (n, n) and its energy (Coulomb + exchange + XC) for ``dm``."""
    v = coulomb(ham, dm)
    e2 = 0.5 * jnp.sum(dm * v)
    k = exact_exchange(ham, dm, xc)
    if k is not None:
        v = v - 0.5 * k
        e2 = e2 - 0.25 * jnp.sum(dm * k)
    e_xc, _, vxc = xc_energy(ham.ao, ham.weights, dm, xc)
    return v + vxc, e2 + e_xc


def _orthogonalizer(s, method: str = "auto"):
    """Symmetric orthogonalisation X = S^{-1/2}."""
    e, u = eigh(s, method=method)
    return (u * (1.0 / jnp.sqrt(e))) @ u.T


def _diagonalize(f, x, v0=None, method: str = "auto"):
    """Orbital energies and coefficients of F C = S C e, with X = S^{-1/2}.

    ``v0``: eigenvectors of the previous X^T F X (orthogonal basis), a warm start for the
    Jacobi solver. Returns (e (n,), C = X V (n, n), V (n, n)).
    """
    e, v = eigh(x.T @ f @ x, v0, method=method)
    return e, x @ v, v


def _occupations(n, n_occ, dtype):
    return jnp.where(jnp.arange(n) < n_occ, 2.0, 0.0).astype(dtype)


def _gradient_norm(fock, mo_coeff, occ):
    """‖g‖ with g = 2 C_vir^T F C_occ (PySCF's RHF orbital gradient)."""
    g = mo_coeff.T @ fock @ mo_coeff
    mask = (occ[:, None] == 0) & (occ[None, :] > 0)
    return jnp.sqrt(jnp.sum(jnp.where(mask, 2.0 * g, 0.0) ** 2))


def _diis_extrapolate(f_hist, e_hist, count, space: int):
    """Pulay extrapolation over the ``min(count, space)`` stored Fock matrices."""
    valid = (jnp.arange(space) < count).astype(f_hist.dtype)
    flat = e_hist.reshape(space, -1)
    b = flat @ flat.T
    scale = jnp.max(jnp.where(valid > 0, jnp.diag(b), 0.0))
    b = b / jnp.where(scale > 0, scale, 1.0)
    b = b * valid[:, None] * valid[None, :] + jnp.diag(1.0 - valid)
    a = jnp.zeros((space + 1, space + 1), f_hist.dtype)
    a = a.at[:space, :space].set(b).at[:space, space].set(-valid).at[space, :space].set(-valid)
    rhs = jnp.zeros(space + 1, f_hist.dtype).at[space].set(-1.0)
    c = jnp.linalg.solve(a, rhs)[:space] * valid
    return jnp.einsum("k,kij->ij", c, f_hist)


def run_scf(
    inputs: SCFInputs,
    opts: SCFOptions,
    ham: Hamiltonian | None = None,
    max_cycle=None,
    min_cycle: int = 0,
    retry: bool = True,
) -> dict:
    """Self-consistent field for one molecule.

    DIIS cycles run until PySCF's loop test holds (|ΔE| < conv_tol and ‖g‖ < conv_tol_grad),
    then PySCF's final diagonalisation of the plain Fock matrix gives the orbitals, density
    and energy returned. ``converged`` is the same test applied to that final state: its
    energy change from the last cycle and its ‖g‖ (``scf_error``). Where the final step
    breaks the test, the DIIS cycles go on from it (same history) while cycles are left, so
    ``converged`` implies ``|delta_e| < conv_tol`` and ``scf_error < conv_tol_grad``.

    ``max_cycle``: optional traced cycle cap (int array, at most ``opts.max_cycle``), so
    one compiled program serves a short first pass and the continuation of stragglers
    (``qmgen.dft.engine``); default ``opts.max_cycle``. ``min_cycle``: cycles run before
    the test may stop the loop (static). ``retry=False``: no further cycles when the final
    step breaks the test (``converged`` then still reports the test; the float32 loop of
    float32 mode, which a float64 finish follows, uses it).

    Returns dict: e_tot, mo_energy (n,), mo_coeff (n, n), mo_occ (n,), dm (n, n), fock
    (n, n), converged, n_iter (DIIS cycles, PySCF's ``cycles``), scf_error (final ‖g‖) and
    delta_e (final energy minus the last cycle's).
    """
    if ham is None:
        ham = build_hamiltonian(inputs, opts.xc)
    dtype = ham.s.dtype
    n = ham.s.shape[0]
    cap = opts.max_cycle if max_cycle is None else jnp.minimum(max_cycle, opts.max_cycle)
    x = _orthogonalizer(ham.s, opts.eigensolver)
    occ = _occupations(n, inputs.n_occ, dtype)
    m = opts.diis_space

    def energy_of(dm):
        v, e2 = veff(ham, dm, opts.xc)
        return v, jnp.sum(dm * ham.h) + e2 + ham.e_nuc

    def met(d_e, norm_g):
        return (jnp.abs(d_e) < opts.conv_tol) & (norm_g < opts.tol_grad)

    dm0 = inputs.dm0.astype(dtype)
    v0, e0 = energy_of(dm0)
    state = dict(
        it=jnp.zeros((), jnp.int32),
        dm=dm0,
        v=v0,
        e_tot=e0,
        converged=jnp.zeros((), bool),  # the loop's test, last cycle
        done=jnp.zeros((), bool),  # the test on the final state
        passes=jnp.zeros((), jnp.int32),
        f_hist=jnp.zeros((m, n, n), dtype),
        e_hist=jnp.zeros((m, n, n), dtype),
        count=jnp.zeros((), jnp.int32),
        f_prev=ham.h + v0,
        norm_g=jnp.asarray(jnp.inf, dtype),
        d_e=jnp.asarray(jnp.inf, dtype),
        v_orth=jnp.eye(n, dtype=dtype),
        mo_energy=jnp.zeros((n,), dtype),
        mo_coeff=jnp.eye(n, dtype=dtype),
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
        f_use = jnp.where(use_diis, _diis_extrapolate(f_hist, e_hist, count, m), f)
        if opts.damping:
            f_use = jnp.where(
                use_diis, f_use, (1 - opts.damping) * f_use + opts.damping * st["f_prev"]
            )
        if opts.level_shift:
            f_use = f_use + opts.level_shift * (ham.s - 0.5 * ham.s @ dm @ ham.s)
        _, c, v_orth = _diagonalize(f_use, x, st["v_orth"], opts.eigensolver)
        dm_new = (c * occ) @ c.T
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
        """PySCF's conv_check: one diagonalisation of the undamped, unextrapolated Fock
        matrix, and the convergence test on its result."""
        mo_energy, mo_coeff, v_orth = _diagonalize(
            ham.h + st["v"], x, st["v_orth"], opts.eigensolver
        )
        dm = (mo_coeff * occ) @ mo_coeff.T
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
        converged=st["done"],
        n_iter=st["it"],
        scf_error=st["norm_g"],
        delta_e=st["d_e"],
    )
