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

Cost per SCF cycle: J is 2 n_aux n^2, K is 2 n_aux n^3 multiply-adds; memory n_aux n^2
instead of the n^4 of the exact K layout.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from qmgen.dft.basis import Basis
from qmgen.dft.integrals.three_center import int2c, int3c


def fitted_ints(basis: Basis, aux: Basis, positions, aux_mask, omega: float = 0.0):
    """B (n_aux, n, n): :math:`L^{-1} (P|ij)` with :math:`L L^T = (P|Q)`.

    ``positions`` (natom, 3) Bohr; ``aux_mask`` (n_aux,) 1 for real auxiliary functions,
    0 for padding. ``omega`` (static, 1/Bohr) > 0 fits the long-range operator.
    """
    j3 = int3c(basis, aux, positions, omega)  # (n, n, naux)
    j2 = int2c(aux, positions, omega)
    mask = aux_mask.astype(j2.dtype)
    j2 = j2 * (mask[:, None] * mask[None, :]) + jnp.diag(1.0 - mask)
    low = jnp.linalg.cholesky(j2)
    n = j3.shape[0]
    b = jax.scipy.linalg.solve_triangular(low, j3.reshape(n * n, -1).T, lower=True)
    return b.reshape(-1, n, n)


def coulomb(b, dm):
    """J (n, n) from the fitted tensor ``b`` (n_aux, n, n) and a symmetric density ``dm``."""
    return jnp.einsum("q,qij->ij", jnp.einsum("qij,ij->q", b, dm), b)


def exchange(b, dm):
    """K (n, n), :math:`\\sum_Q B^Q D B^Q`, for a symmetric density ``dm``."""
    return jnp.einsum("qil,qlj->ij", jnp.matmul(b, dm), b)


def energy(
    basis: Basis, aux: Basis, positions, aux_mask, dm, hyb: float, lr_coef: float, omega: float
):
    r"""Two-electron energy of fixed ``dm`` with fitted integrals (for forces by autodiff):
    :math:`\tfrac12 \mathrm{tr}(D J) - \tfrac{c_x}{4}\mathrm{tr}(D K)
    - \tfrac{\alpha - c_x}{4}\mathrm{tr}(D K^{LR})`, the derivative including the
    auxiliary-basis response (PySCF's default ``auxbasis_response=True``)."""
    b = fitted_ints(basis, aux, positions, aux_mask)
    rho = jnp.einsum("qij,ij->q", b, dm)
    e = 0.5 * jnp.sum(rho * rho)
    if hyb != 0.0:
        e = e - 0.25 * hyb * jnp.sum(dm * exchange(b, dm))
    if lr_coef != 0.0:
        b_lr = fitted_ints(basis, aux, positions, aux_mask, omega)
        e = e - 0.25 * lr_coef * jnp.sum(dm * exchange(b_lr, dm))
    return e
