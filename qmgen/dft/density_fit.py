r"""Density fitting (resolution of the identity) of the Coulomb and exchange matrices (JAX).

With the Coulomb metric :math:`V_{PQ} = (P|Q) = L L^T` (Cholesky) and the fitted
three-index tensor :math:`B^Q_{ij} = \sum_P (L^{-1})_{QP} (P|ij)`,

.. math::
   (ij|kl) \approx \sum_Q B^Q_{ij} B^Q_{kl}, \quad
   J_{ij} = \sum_Q B^Q_{ij} \sum_{kl} B^Q_{kl} D_{kl}, \quad
   K_{ij} = \sum_Q (B^Q D B^Q)_{ij}

(Whitten, J. Chem. Phys. 58, 4496 (1973); Vahtras, Almlöf & Feyereisen, Chem. Phys. Lett.
213, 514 (1993)), PySCF's ``density_fit()`` with its default auxiliary basis
(``qmgen.dft.basis.aux_basis_spec``; def2-universal-jkfit for def2-SVP, cc-pvdz-jkfit for
6-31G*). Range-separated hybrids fit the long-range exchange
with the long-range metric and three-index integrals of erf(omega r12)/r12, as PySCF's
``range_coulomb``. Padding auxiliary functions (zero functions) get a unit diagonal in the
metric, so the Cholesky factor exists and their rows of B vanish.

The long-range metric of a molecule with more than a few atoms is singular to rounding
(erf(omega r)/r is smooth, so half of a jkfit set is linearly dependent under it: 487 of 860
eigenvalues below 1e-7 for a nine-heavy-atom molecule at 6-31G*). PySCF's
``incore.cholesky_eri`` then falls back to the eigenvectors of eigenvalues above
``LINEAR_DEP_THR`` = 1e-7; ``metric_factor`` does the same, and its derivative is that of
the truncated pseudo-inverse, as PySCF's DF gradient solver (``_gen_metric_solver``).

Cost per SCF cycle: J is 2 n_aux n^2, K is 2 n_aux n^3 multiply-adds; memory n_aux n^2
instead of the n^4 of the exact K layout.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from qmgen.dft.basis import Basis
from qmgen.dft.integrals.three_center import int2c, int3c

LINEAR_DEP_THR = 1e-7  # PySCF's pyscf.df.incore.LINEAR_DEP_THR


@jax.custom_jvp
def metric_factor(j2):
    r"""T (n_aux, n_aux) with :math:`T^T T = V^{+}`, for the metric ``j2`` = V.

    :math:`T = L^{-1}` (Cholesky, :math:`V = L L^T`) where the factorisation succeeds;
    otherwise :math:`T = w^{-1/2} U^T` over the eigenpairs (w, U) of V with
    w > ``LINEAR_DEP_THR`` (float64; float32 raises the cut to n eps max(w)), the other
    rows zero, as PySCF. Only :math:`T^T T` enters J and K, so the tangent
    :math:`dT = -\tfrac12 T\,dV\,V^{+}` gives :math:`d(T^T T) = -V^{+} dV V^{+}`.
    """
    n = j2.shape[0]
    low = jnp.linalg.cholesky(j2)
    t_cd = jax.scipy.linalg.solve_triangular(low, jnp.eye(n, dtype=j2.dtype), lower=True)

    def eig_factor(_):
        w, u = jnp.linalg.eigh(j2)
        cut = LINEAR_DEP_THR
        if j2.dtype == jnp.float32:
            cut = jnp.maximum(cut, n * jnp.finfo(j2.dtype).eps * w[-1])
        keep = w > cut
        scale = jnp.where(keep, 1.0 / jnp.sqrt(jnp.where(keep, w, 1.0)), 0.0)
        return scale[:, None] * u.T

    # under vmap the cond is a select (both branches run); unbatched, eigh runs only
    # where the Cholesky factorisation failed (NaN)
    return jax.lax.cond(jnp.all(jnp.isfinite(t_cd)), lambda _: t_cd, eig_factor, None)


@metric_factor.defjvp
def _metric_factor_jvp(primals, tangents):
    (j2,), (dj2,) = primals, tangents
    t = metric_factor(j2)
    pinv = t.T @ t
    return t, -0.5 * t @ dj2 @ pinv


def fitted_ints(basis: Basis, aux: Basis, positions, aux_mask, omega: float = 0.0):
    """B (n_aux, n, n): :math:`T (P|ij)` with ``T = metric_factor((P|Q))`` (:math:`L^{-1}`).

    ``positions`` (natom, 3) Bohr; ``aux_mask`` (n_aux,) 1 for real auxiliary functions,
    0 for padding. ``omega`` (static, 1/Bohr) > 0 fits the long-range operator.
    """
    j3 = int3c(basis, aux, positions, omega)  # (n, n, naux)
    j2 = int2c(aux, positions, omega)
    mask = aux_mask.astype(j2.dtype)
    j2 = j2 * (mask[:, None] * mask[None, :]) + jnp.diag(1.0 - mask)
    n = j3.shape[0]
    b = metric_factor(j2) @ j3.reshape(n * n, -1).T
    return b.reshape(-1, n, n)


def coulomb(b, dm):
    """J (n, n) from the fitted tensor ``b`` (n_aux, n, n) and a symmetric density ``dm``."""
    return jnp.einsum("q,qij->ij", jnp.einsum("qij,ij->q", b, dm), b)


def exchange(b, dm):
    """K (n, n), :math:`\\sum_Q B^Q D B^Q`, for a symmetric density ``dm``."""
    return jnp.einsum("qil,qlj->ij", jnp.matmul(b, dm), b)


def energy(
    basis: Basis,
    aux: Basis,
    positions,
    aux_mask,
    dm,
    hyb: float,
    lr_coef: float,
    omega: float,
    spin_dms=None,
):
    r"""Two-electron energy of fixed ``dm`` with fitted integrals (for forces by autodiff):
    :math:`\tfrac12 \mathrm{tr}(D J) - \tfrac{c_x}{4}\mathrm{tr}(D K)
    - \tfrac{\alpha - c_x}{4}\mathrm{tr}(D K^{LR})`, the derivative including the
    auxiliary-basis response (PySCF's default ``auxbasis_response=True``). Unrestricted
    (``spin_dms`` (2, n, n), ``dm`` their sum): the exchange terms are
    :math:`-\tfrac{c}{2}\sum_\sigma \mathrm{tr}(D^\sigma K[D^\sigma])`."""
    b = fitted_ints(basis, aux, positions, aux_mask)
    rho = jnp.einsum("qij,ij->q", b, dm)
    e = 0.5 * jnp.sum(rho * rho)
    parts = [(dm, 0.25)] if spin_dms is None else [(spin_dms[k], 0.5) for k in range(2)]
    b_lr = fitted_ints(basis, aux, positions, aux_mask, omega) if lr_coef != 0.0 else None
    for x, weight in parts:
        if hyb != 0.0:
            e = e - weight * hyb * jnp.sum(x * exchange(b, x))
        if b_lr is not None:
            e = e - weight * lr_coef * jnp.sum(x * exchange(b_lr, x))
    return e
