r"""McMurchie–Davidson Hermite expansion (Helgaker, Jørgensen, Olsen, *Molecular
Electronic-Structure Theory*, ch. 9.5 and 9.9).

A product of two Cartesian Gaussians with exponents a, b on centres A, B is a sum of
Hermite Gaussians on P = (aA + bB)/p, p = a + b, with coefficients :math:`E^{ij}_t` per
Cartesian direction (eq. 9.5.6–9.5.7):

.. math::
   E^{i+1,j}_t = \frac{1}{2p} E^{ij}_{t-1} + X_{PA} E^{ij}_t + (t+1) E^{ij}_{t+1}

The Coulomb interaction of two Hermite Gaussians is the Hermite integral
:math:`R_{tuv}(\alpha, \mathbf{R}_{PQ})` (eq. 9.9.18–9.9.20), built from Boys functions:

.. math::
   R^n_{000} = (-2\alpha)^n F_n(\alpha R_{PQ}^2), \quad
   R^n_{t+1,u,v} = t R^{n+1}_{t-1,u,v} + X_{PQ} R^{n+1}_{tuv}

Every recursion is unrolled at trace time for the angular momenta of one class, so a
class compiles to a fixed set of element-wise operations over arrays of any batch shape.
"""

from __future__ import annotations

from functools import cache

import jax.numpy as jnp
import numpy as np


@cache
def cart_powers(l: int) -> np.ndarray:
    """(ncart, 3) Cartesian exponents (lx, ly, lz) of a shell in PySCF's order (xx, xy, ...)."""
    out = [(lx, ly, l - lx - ly) for lx in range(l, -1, -1) for ly in range(l - lx, -1, -1)]
    return np.asarray(out, dtype=np.int64)


@cache
def kind_powers(ls: tuple) -> np.ndarray:
    """Cartesian exponents of all components of a kind (angular momenta ``ls``, in order)."""
    return np.concatenate([cart_powers(l) for l in ls], axis=0)


@cache
def kind_cart2sph(ls: tuple) -> np.ndarray:
    """Block-diagonal (ncart, nsph) Cartesian-to-spherical matrix of a kind."""
    blocks = [cart2sph(l) for l in ls]
    out = np.zeros((sum(b.shape[0] for b in blocks), sum(b.shape[1] for b in blocks)))
    r = c = 0
    for b in blocks:
        out[r : r + b.shape[0], c : c + b.shape[1]] = b
        r, c = r + b.shape[0], c + b.shape[1]
    return out


@cache
def kind_cart_l(ls: tuple) -> np.ndarray:
    """Index into ``ls`` of each Cartesian component of a kind."""
    return np.concatenate([np.full((l + 1) * (l + 2) // 2, k) for k, l in enumerate(ls)])


@cache
def tuv_list(l: int) -> np.ndarray:
    """(ntuv, 3) Hermite indices (t, u, v) with t + u + v <= l, ordered by total then t, u."""
    out = [
        (t, u, s - t - u)
        for s in range(l + 1)
        for t in range(s, -1, -1)
        for u in range(s - t, -1, -1)
    ]
    return np.asarray(out, dtype=np.int64)


@cache
def _tuv_position(l: int) -> dict:
    return {tuple(int(x) for x in k): i for i, k in enumerate(tuv_list(l))}


def hermite_e(la: int, lb: int, pa, pb, oo2p) -> list:
    """1-D Hermite coefficients ``E[i][j][t]`` for i <= la, j <= lb, t <= i + j.

    Args:
      pa, pb: P - A and P - B along one axis, any (broadcastable) shape.
      oo2p: 1 / (2p), same shape.

    Returns nested lists of arrays (the Gaussian prefactor exp(-ab/p AB^2) is not included).
    """
    one = jnp.ones_like(pa)
    e = {(0, 0): [one]}
    for i in range(la + 1):
        for j in range(lb + 1):
            if i == 0 and j == 0:
                continue
            if j == 0:
                prev, x = e[(i - 1, 0)], pa
            else:
                prev, x = e[(i, j - 1)], pb
            n = len(prev)  # = i + j
            cur = []
            for t in range(n + 1):
                val = None
                if t < n:
                    val = x * prev[t]
                if t >= 1:
                    term = oo2p * prev[t - 1]
                    val = term if val is None else val + term
                if t + 1 < n:
                    assert val is not None  # t < n holds whenever t + 1 < n
                    val = val + (t + 1) * prev[t + 1]
                assert val is not None  # every t in 0..n gets a term
                cur.append(val)
            e[(i, j)] = cur
    return [[e[(i, j)] for j in range(lb + 1)] for i in range(la + 1)]


def _stack_1d(e: list, la: int, lb: int, lmax: int):
    """Nested E[i][j][t] -> array (..., la+1, lb+1, lmax+1), zero beyond t = i + j."""
    zero = jnp.zeros_like(e[0][0][0])
    rows = []
    for i in range(la + 1):
        cols = []
        for j in range(lb + 1):
            vals = list(e[i][j]) + [zero] * (lmax + 1 - len(e[i][j]))
            cols.append(jnp.stack(vals, axis=-1))
        rows.append(jnp.stack(cols, axis=-2))
    return jnp.stack(rows, axis=-3)


def pair_hermite(lsa: tuple, lsb: tuple, ex: list, ey: list, ez: list):
    """Hermite expansion of all Cartesian component pairs of two shells of kinds lsa, lsb.

    ``ex`` etc. come from ``hermite_e(max(lsa), max(lsb), ...)``.
    Returns array (..., ncart_a, ncart_b, ntuv(la + lb)) with entries
    :math:`E^x_{i_x j_x t} E^y_{i_y j_y u} E^z_{i_z j_z v}` for (t, u, v) in ``tuv_list``.
    """
    la, lb = max(lsa), max(lsb)
    lab = la + lb
    pa, pb, tuv = kind_powers(lsa), kind_powers(lsb), tuv_list(lab)
    out = None
    for axis, e in enumerate((ex, ey, ez)):
        arr = _stack_1d(e, la, lb, lab)
        ia = pa[:, axis][:, None, None]
        ib = pb[:, axis][None, :, None]
        it = tuv[:, axis][None, None, :]
        g = arr[..., ia, ib, it]
        out = g if out is None else out * g
    return out


@cache
def _r_recursion(l: int) -> tuple:
    """Static gather plan for one level of the R recursion, per target order ``l``.

    For every (t, u, v) with 0 < t + u + v <= l (in ``tuv_list`` order, skipping (0,0,0)):
    the axis a stepped down (first nonzero index), the position of (tuv - e_a) and of
    (tuv - 2 e_a) in ``tuv_list(l - 1)``, and the coefficient (k - 1) of the second term.
    """
    prev = _tuv_position(l - 1)
    axis, one, two, coef = [], [], [], []
    for tuv in tuv_list(l)[1:]:
        t = [int(x) for x in tuv]
        a = 0 if t[0] > 0 else (1 if t[1] > 0 else 2)
        k = t[a]
        lo1 = list(t)
        lo1[a] -= 1
        lo2 = list(t)
        lo2[a] -= 2
        axis.append(a)
        one.append(prev[tuple(lo1)])
        two.append(prev[tuple(lo2)] if k >= 2 else 0)
        coef.append(float(k - 1) if k >= 2 else 0.0)
    return (np.asarray(axis), np.asarray(one), np.asarray(two), np.asarray(coef))


def hermite_r(l: int, boys_vals, alpha, xpq, ypq, zpq):
    """Hermite Coulomb integrals :math:`R^0_{tuv}` for t + u + v <= l.

    The recursion runs level by level from :math:`R^l` down to :math:`R^0`; each level is
    a few array operations over a (t, u, v) axis with static gather indices, which keeps
    the compiled program small for high angular momentum.

    Args:
      boys_vals: (..., l + 1) Boys functions F_0..F_l at T = alpha |PQ|^2.
      alpha: reduced exponent, shape (...).
      xpq, ypq, zpq: components of P - Q (or P - C), shape (...).

    Returns array (..., ntuv(l)) in ``tuv_list(l)`` order.
    """
    m2a = -2.0 * alpha
    base = [boys_vals[..., 0]]
    fac = jnp.ones_like(alpha)
    for n in range(1, l + 1):
        fac = fac * m2a
        base.append(fac * boys_vals[..., n])
    xyz = jnp.stack([xpq, ypq, zpq], axis=-1)
    r = base[l][..., None]  # R^{l}: only (0, 0, 0)
    for order in range(1, l + 1):  # builds R^{l - order} with t + u + v <= order
        axis, one, two, coef = _r_recursion(order)
        val = jnp.take(xyz, axis, axis=-1) * jnp.take(r, one, axis=-1)
        if np.any(coef):
            val = val + jnp.asarray(coef, r.dtype) * jnp.take(r, two, axis=-1)
        r = jnp.concatenate([base[l - order][..., None], val], axis=-1)
    return r


@cache
def coulomb_index(lab: int, lcd: int) -> tuple[np.ndarray, np.ndarray]:
    """Static gather index and signs of
    :math:`(-1)^{\\tau+\\nu+\\phi} R_{t+\\tau, u+\\nu, v+\\phi}`.

    Returns (index (ntuv(lab), ntuv(lcd)) into ``tuv_list(lab + lcd)``, sign of same shape).
    """
    pos = _tuv_position(lab + lcd)
    bra, ket = tuv_list(lab), tuv_list(lcd)
    idx = np.empty((len(bra), len(ket)), np.int64)
    sign = np.empty((len(bra), len(ket)), np.float64)
    for i, b in enumerate(bra):
        for j, k in enumerate(ket):
            idx[i, j] = pos[tuple(int(x) for x in b + k)]
            sign[i, j] = -1.0 if k.sum() % 2 else 1.0
    return idx, sign


@cache
def cart2sph(l: int) -> np.ndarray:
    """(ncart, nsph) PySCF's Cartesian-to-spherical matrix, including libcint's s/p factors."""
    from pyscf import gto

    return np.asarray(gto.cart2sph(l), dtype=np.float64)
