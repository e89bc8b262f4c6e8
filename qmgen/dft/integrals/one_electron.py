r"""One-electron integrals over contracted spherical Gaussians (JAX).

Overlap, kinetic energy, dipole (origin 0) and nuclear attraction, McMurchie–Davidson
(Helgaker et al. ch. 9): for a primitive pair the 3-D integrals factor into 1-D ones,

.. math::
   S^x_{ij} = E^{ij}_0 \sqrt{\pi/p}, \quad
   T^x_{ij} = -2b^2 S^x_{i,j+2} + b(2j+1) S^x_{ij} - \tfrac12 j(j-1) S^x_{i,j-2},
   \quad M^x_{ij} = (E^{ij}_1 + P_x E^{ij}_0)\sqrt{\pi/p},

and the nuclear attraction is
:math:`V_{ab} = -\sum_C Z_C \frac{2\pi}{p} \sum_{tuv} E^{ab}_{tuv}
R_{tuv}(p, \mathbf{P}-\mathbf{C})`.

All functions take a ``Basis`` and ``positions`` (natom, 3) in Bohr as arrays and return
matrices in the internal AO order (see ``qmgen.dft.basis``); results match PySCF's
``int1e_ovlp``, ``int1e_kin``, ``int1e_r`` and ``int1e_nuc`` after reordering.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import jax.numpy as jnp
import numpy as np

from qmgen.dft.basis import Basis
from qmgen.dft.integrals.boys import boys
from qmgen.dft.integrals.hermite import (
    hermite_e,
    hermite_r,
    kind_cart2sph,
    kind_cart_l,
    kind_powers,
    pair_hermite,
)
from qmgen.dft.integrals.pairs import expand_pairs, pair_classes, pair_indices

if TYPE_CHECKING:  # shape annotations only (jaxtyping is a test dependency)
    from jaxtyping import Array, Float


def primitive_pairs(basis: Basis, positions, x: int, y: int) -> dict:
    """Gaussian-product data of every primitive pair of pair class (x, y).

    Returns dict with p (a + b), P (product centre), PA, PB, b of shape
    (npairs, nprim_x, nprim_y[, 3]), and coef (npairs, nprim_x, nprim_y, ncart_x, ncart_y):
    contraction coefficients of both components times exp(-ab/p |AB|^2).
    """
    kx, ky = basis.kinds[x], basis.kinds[y]
    i, j = pair_indices(kx.count, ky.count, x == y)
    a = basis.exponents[x][i][:, :, None]
    b = basis.exponents[y][j][:, None, :]
    ra = positions[basis.center[x][i]][:, None, None, :]
    rb = positions[basis.center[y][j]][:, None, None, :]
    p = a + b
    pc = (a[..., None] * ra + b[..., None] * rb) / p[..., None]
    ab2 = jnp.sum((ra - rb) ** 2, axis=-1)
    cx = basis.coefficients[x][i][:, :, kind_cart_l(kx.ls)]  # (np, kx, ncart_x)
    cy = basis.coefficients[y][j][:, :, kind_cart_l(ky.ls)]
    kab = jnp.exp(-a * b / p * ab2)
    coef = kab[..., None, None] * cx[:, :, None, :, None] * cy[:, None, :, None, :]
    return dict(p=p, P=pc, PA=pc - ra, PB=pc - rb, coef=coef, b=jnp.broadcast_to(b, p.shape))


def _to_sph(cart, lsa: tuple, lsb: tuple):
    """(..., ncart_a, ncart_b) -> (..., nsph_a, nsph_b) with PySCF's cart2sph matrices."""
    ca = jnp.asarray(kind_cart2sph(lsa), cart.dtype)
    cb = jnp.asarray(kind_cart2sph(lsb), cart.dtype)
    return jnp.einsum("...ab,am,bn->...mn", cart, ca, cb)


def _one_d(lsa: tuple, lsb: tuple, axis_arrays):
    """Gather 1-D factors (..., la+1, lb+1) per axis into Cartesian components."""
    pa, pb = kind_powers(lsa), kind_powers(lsb)
    return [m[..., pa[:, ax][:, None], pb[:, ax][None, :]] for ax, m in enumerate(axis_arrays)]


def _pair_blocks_1e(basis: Basis, positions, x: int, y: int):
    """Overlap, kinetic and dipole blocks (npairs, nsph_x, nsph_y[, 3]) of one pair class."""
    lsa, lsb = basis.kinds[x].ls, basis.kinds[y].ls
    la, lb = max(lsa), max(lsb)
    d = primitive_pairs(basis, positions, x, y)
    p, b = d["p"], d["b"]
    oo2p = 0.5 / p
    sq = jnp.sqrt(math.pi / p)
    s1d, t1d, m1d = [], [], []
    for ax in range(3):
        e = hermite_e(la, lb + 2, d["PA"][..., ax], d["PB"][..., ax], oo2p)
        s = [[e[i][j][0] * sq for j in range(lb + 3)] for i in range(la + 1)]
        srow, trow, mrow = [], [], []
        for i in range(la + 1):
            sr, tr, mr = [], [], []
            for j in range(lb + 1):
                t = -2.0 * b * b * s[i][j + 2] + b * (2 * j + 1) * s[i][j]
                if j >= 2:
                    t = t - 0.5 * j * (j - 1) * s[i][j - 2]
                m = d["P"][..., ax] * e[i][j][0]
                if i + j >= 1:
                    m = m + e[i][j][1]
                sr.append(s[i][j])
                tr.append(t)
                mr.append(m * sq)
            srow.append(jnp.stack(sr, -1))
            trow.append(jnp.stack(tr, -1))
            mrow.append(jnp.stack(mr, -1))
        s1d.append(jnp.stack(srow, -2))
        t1d.append(jnp.stack(trow, -2))
        m1d.append(jnp.stack(mrow, -2))
    sx, sy, sz = _one_d(lsa, lsb, s1d)
    tx, ty, tz = _one_d(lsa, lsb, t1d)
    mx, my, mz = _one_d(lsa, lsb, m1d)
    coef = d["coef"]
    ovlp = jnp.sum(coef * sx * sy * sz, axis=(1, 2))
    kin = jnp.sum(coef * (tx * sy * sz + sx * ty * sz + sx * sy * tz), axis=(1, 2))
    dip = jnp.stack(
        [
            jnp.sum(coef * mx * sy * sz, axis=(1, 2)),
            jnp.sum(coef * sx * my * sz, axis=(1, 2)),
            jnp.sum(coef * sx * sy * mz, axis=(1, 2)),
        ],
        axis=-1,
    )
    return (
        _to_sph(ovlp, lsa, lsb),
        _to_sph(kin, lsa, lsb),
        jnp.moveaxis(_to_sph(jnp.moveaxis(dip, -1, 1), lsa, lsb), 1, -1),
    )


def _pair_block_nuc(basis: Basis, positions, charges, x: int, y: int):
    lsa, lsb = basis.kinds[x].ls, basis.kinds[y].ls
    la, lb = max(lsa), max(lsb)
    d = primitive_pairs(basis, positions, x, y)
    p = d["p"]
    oo2p = 0.5 / p
    e = [hermite_e(la, lb, d["PA"][..., ax], d["PB"][..., ax], oo2p) for ax in range(3)]
    eab = pair_hermite(lsa, lsb, *e)  # (np, kx, ky, nca, ncb, ntuv)
    pcv = d["P"][..., None, :] - positions  # (np, kx, ky, natom, 3)
    pn = p[..., None]
    f = boys(la + lb, pn * jnp.sum(pcv**2, axis=-1))
    r = hermite_r(la + lb, f, jnp.broadcast_to(pn, f.shape[:-1]), *jnp.moveaxis(pcv, -1, 0))
    rz = jnp.einsum("...ct,c->...t", r, charges)  # sum over nuclei, weighted by Z
    w = -2.0 * math.pi / p
    cart = jnp.einsum("pijabt,pijt,pij,pijab->pab", eab, rz, w, d["coef"])
    return _to_sph(cart, lsa, lsb)


def one_electron(
    basis: Basis,
    positions: Float[Array | np.ndarray, "atom 3"],
    charges: Float[Array | np.ndarray, " atom"],
) -> dict[str, Float[Array, "..."]]:
    """Overlap, kinetic, nuclear-attraction and dipole matrices (internal AO order).

    Args:
      basis: the molecule's ``Basis``.
      positions: (natom, 3) nuclear positions in Bohr.
      charges: (natom,) nuclear charges (0 for padding atoms).

    Returns dict of ``overlap``, ``kinetic``, ``nuclear`` (n_ao, n_ao) and ``dipole``
    (3, n_ao, n_ao): the matrix of r (origin 0), as PySCF's ``int1e_r``.
    """
    blocks_s, blocks_t, blocks_r, blocks_v = {}, {}, {}, {}
    for x, y in pair_classes(basis):
        blocks_s[(x, y)], blocks_t[(x, y)], blocks_r[(x, y)] = _pair_blocks_1e(
            basis, positions, x, y
        )
        blocks_v[(x, y)] = _pair_block_nuc(basis, positions, charges, x, y)
    return dict(
        overlap=expand_pairs(blocks_s, basis),
        kinetic=expand_pairs(blocks_t, basis),
        nuclear=expand_pairs(blocks_v, basis),
        dipole=jnp.moveaxis(expand_pairs(blocks_r, basis), -1, 0),
    )
