r"""Atomic orbitals on grid points and the closed-shell XC integrals (JAX).

AO values and gradients (PySCF's ``GTOval_sph_deriv1``): for a Cartesian component
:math:`x^{l_x} y^{l_y} z^{l_z} \sum_k c_k e^{-a_k r^2}` of a shell on centre A,

.. math::
   \partial_x \phi = l_x x^{l_x-1} y^{l_y} z^{l_z} R_0 + x^{l_x+1} y^{l_y} z^{l_z} R_1,
   \quad R_0 = \sum_k c_k e^{-a_k r^2},\; R_1 = -2 \sum_k a_k c_k e^{-a_k r^2},

followed by PySCF's Cartesian-to-spherical transform. The XC integrals follow PySCF's
``NumInt.nr_rks``: :math:`\rho = \sum_{\mu\nu} D_{\mu\nu}\phi_\mu\phi_\nu`,
:math:`\nabla\rho = 2\sum D_{\mu\nu}\phi_\mu\nabla\phi_\nu`, and

.. math::
   V_{\mu\nu} = \sum_g w_g \left[v_\rho \phi_\mu\phi_\nu
     + 2 v_\sigma \nabla\rho\cdot(\nabla\phi_\mu\,\phi_\nu + \phi_\mu\nabla\phi_\nu)\right].
"""

from __future__ import annotations

import jax.numpy as jnp

from qmgen.dft.basis import Basis
from qmgen.dft.integrals.hermite import kind_cart2sph, kind_cart_l, kind_powers


def _powers(x, lmax: int):
    """[x^0, x^1, ..., x^(lmax+1)] as a list (x^-1 entries are never used with l=0)."""
    out = [jnp.ones_like(x)]
    for _ in range(lmax + 1):
        out.append(out[-1] * x)
    return out


def ao_values(basis: Basis, positions, coords, deriv: int = 1):
    """AO values (and gradients) at grid points.

    Args:
      basis: the molecule's ``Basis``. positions: (natom, 3) Bohr.
      coords: (G, 3) grid points, Bohr.
      deriv: 0 for values only, 1 for values and x, y, z derivatives.

    Returns (1 + 3 * deriv, G, n_ao) in the internal AO order.
    """
    out = []
    for k, kind in enumerate(basis.kinds):
        centre = positions[basis.center[k]]  # (S, 3)
        d = coords[:, None, :] - centre[None, :, :]  # (G, S, 3)
        r2 = jnp.sum(d * d, axis=-1)
        expo = basis.exponents[k]  # (S, K)
        e = jnp.exp(-r2[:, :, None] * expo[None])  # (G, S, K)
        coef = basis.coefficients[k]  # (S, K, nl)
        r0 = jnp.einsum("gsk,skl->gsl", e, coef)
        powers = kind_powers(kind.ls)  # (ncart, 3)
        lidx = kind_cart_l(kind.ls)
        px = [_powers(d[..., ax], kind.l) for ax in range(3)]

        def mono(p, px=px):
            return px[0][p[0]] * px[1][p[1]] * px[2][p[2]]

        vals = [jnp.stack([mono(p) * r0[..., lidx[c]] for c, p in enumerate(powers)], -1)]
        if deriv:
            r1 = jnp.einsum("gsk,skl->gsl", e, -2.0 * coef * expo[..., None])
            for ax in range(3):
                comps = []
                for c, p in enumerate(powers):
                    up = list(p)
                    up[ax] += 1
                    term = mono(up) * r1[..., lidx[c]]
                    if p[ax] > 0:
                        down = list(p)
                        down[ax] -= 1
                        term = term + p[ax] * mono(down) * r0[..., lidx[c]]
                    comps.append(term)
                vals.append(jnp.stack(comps, -1))
        c2s = jnp.asarray(kind_cart2sph(kind.ls), coords.dtype)
        sph = jnp.einsum("xgsc,cm->xgsm", jnp.stack(vals), c2s)
        out.append(sph.reshape(sph.shape[0], sph.shape[1], -1))
    return jnp.concatenate(out, axis=-1)


def eval_rho(ao, dm, gga: bool):
    r"""Density and its gradient on the grid, in one pass over the AO values.

    :math:`c = \phi_0 D` once, then :math:`(\rho, \nabla\rho) =
    (\sum_\mu c_\mu \phi_\mu, 2 \sum_\mu c_\mu \nabla\phi_\mu)`.

    Args:
      ao: (4, G, n) AO values and gradients (or (1, G, n) for LDA).
      dm: (n, n) symmetric density matrix.

    Returns (rho (G,), grad (G, 3) or None).
    """
    c0 = ao[0] @ dm
    if not gga:
        return jnp.sum(c0 * ao[0], axis=-1), None
    both = jnp.sum(c0[None] * ao[:4], axis=-1)  # (4, G): rho, grad/2
    return both[0], 2.0 * both[1:4].T


def vxc_matrix(ao, weights, vrho, vsigma, grad):
    r"""XC potential matrix (n, n) from functional derivatives on the grid (PySCF's form).

    One weighted sum over the AO components, :math:`a_{g\nu} = \sum_x \phi_{x,g\nu}
    u_{x,g}` with :math:`u_0 = w v_\rho / 2` and :math:`u_{1..3} = 2 w v_\sigma
    \nabla\rho`, then :math:`V = \phi_0^T a + (\phi_0^T a)^T`.
    """
    u0 = 0.5 * weights * vrho
    aow = ao[0] * u0[:, None]
    if grad is not None:
        # written out per component: XLA fuses the sum into one pass over ``ao``, where
        # jnp.sum over a broadcast (4, G, n) product ran 6x slower on the CPU
        ug = (2.0 * weights * vsigma)[:, None] * grad  # (G, 3)
        for x in range(3):
            aow = aow + ao[x + 1] * ug[:, x : x + 1]
    v = ao[0].T @ aow
    return v + v.T
