r"""Three- and two-centre Coulomb integrals for density fitting (JAX): (ij|P) and (P|Q).

An auxiliary function :math:`\chi_P` is a shell pair of itself with a unit function
(exponent 0, coefficient 1): the product :math:`\chi_P \cdot 1` expands in Hermite
Gaussians on the centre of P with :math:`p = a_P`, so the four-centre McMurchie–Davidson
kernel of ``eri`` (Helgaker et al. eq. 9.9.33) gives

.. math::
   (ij|P) = \frac{2\pi^{5/2}}{p q\sqrt{p+q}} \sum_{tuv} E^{ij}_{tuv}
   \sum_{\tau\nu\phi} (-1)^{\tau+\nu+\phi} E^{P}_{\tau\nu\phi}
   R_{t+\tau,u+\nu,v+\phi}(\alpha, \mathbf R_{PQ})

with no new code path, and (P|Q) the same with an auxiliary function on both sides
(PySCF's ``int3c2e`` and ``int2c2e``). ``omega`` > 0 gives the long-range operator
erf(omega r12)/r12 as in ``eri``. Auxiliary functions are normalised as PySCF normalises
them (``auxmol``), so the fitted J and K equal PySCF's density fitting.

Orbital pairs are grouped by pair class and auxiliary shells by kind; each (pair class,
aux kind) is one fixed-shape computation in ``lax.map`` chunks. Every (ij) pair of a class
meets every auxiliary shell (no screening).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from qmgen.dft.basis import Basis
from qmgen.dft.integrals.eri import check_omega, eri_pair_data, quartets
from qmgen.dft.integrals.hermite import hermite_e, kind_cart2sph, kind_cart_l, pair_hermite
from qmgen.dft.integrals.pairs import expand_pairs, pair_classes


def aux_pair_data(aux: Basis, positions, k: int) -> dict:
    """Hermite data of the shells of auxiliary kind ``k`` as pairs with the unit function.

    Returns dict like ``eri.eri_pair_data``: E (count, nprim, nsph, ntuv) with contraction
    coefficients and the spherical transform folded in, p (count, nprim) the exponents,
    P (count, nprim, 3) the shell centres.
    """
    kind = aux.kinds[k]
    a = aux.exponents[k]  # (count, nprim)
    centre = positions[aux.center[k]]  # (count, 3)
    zero = jnp.zeros_like(a)
    oo2p = 0.5 / a
    e = [hermite_e(kind.l, 0, zero, zero, oo2p) for _ in range(3)]
    eab = pair_hermite(kind.ls, (0,), *e)[..., 0, :]  # (count, nprim, ncart, ntuv)
    coef = aux.coefficients[k][:, :, kind_cart_l(kind.ls)]  # (count, nprim, ncart)
    c2s = jnp.asarray(kind_cart2sph(kind.ls), eab.dtype)
    eab = jnp.einsum("spct,spc,cm->spmt", eab, coef, c2s)
    return dict(E=eab, p=a, P=jnp.broadcast_to(centre[:, None, :], a.shape + (3,)))


def _block(bra_all: dict, ket_all: dict, lab: int, lcd: int, omega: float):
    """All (bra, ket) combinations: (nbra, nket, nab, ncd)."""
    nb, nk = bra_all["p"].shape[0], ket_all["p"].shape[0]
    ib, ik = np.divmod(np.arange(nb * nk, dtype=np.int32), nk)
    out = quartets(bra_all, ket_all, ib, ik, lab, lcd, omega)
    return out.reshape(nb, nk, out.shape[1], out.shape[2])


def int3c(basis: Basis, aux: Basis, positions, omega: float = 0.0):
    """Three-centre integrals (ij|P): (n_ao, n_ao, n_aux) in the internal AO orders, Hartree.

    ``positions`` (natom, 3) Bohr, shared by both bases. ``omega`` (static, 1/Bohr) > 0:
    the long-range operator erf(omega r12)/r12.
    """
    omega = check_omega(omega)
    kets = [aux_pair_data(aux, positions, k) for k in range(len(aux.kinds))]
    blocks = {}
    for x, y in pair_classes(basis):
        bra = eri_pair_data(basis, positions, x, y)
        lab = basis.kinds[x].l + basis.kinds[y].l
        parts = []
        for k, ket in enumerate(kets):
            blk = _block(bra, ket, lab, aux.kinds[k].l, omega)  # (npair, count, nab, nP)
            npair, count, nab, n_p = blk.shape
            parts.append(jnp.moveaxis(blk, 1, 2).reshape(npair, nab, count * n_p))
        blk = jnp.concatenate(parts, axis=-1)
        blocks[(x, y)] = blk.reshape(
            blk.shape[0], basis.kinds[x].nsph, basis.kinds[y].nsph, blk.shape[-1]
        )
    return expand_pairs(blocks, basis)


def int2c(aux: Basis, positions, omega: float = 0.0):
    """Two-centre integrals (P|Q): (n_aux, n_aux) in the internal aux order, Hartree."""
    omega = check_omega(omega)
    data = [aux_pair_data(aux, positions, k) for k in range(len(aux.kinds))]
    blocks = {}
    for k1, d1 in enumerate(data):
        for k2 in range(k1 + 1):  # (P|Q) = (Q|P): lower kind pairs only
            blk = _block(d1, data[k2], aux.kinds[k1].l, aux.kinds[k2].l, omega)
            c1, c2, n1, n2 = blk.shape
            blocks[(k1, k2)] = jnp.moveaxis(blk, 1, 2).reshape(c1 * n1, c2 * n2)
    rows = [
        jnp.concatenate(
            [blocks[(k1, k2)] if k1 >= k2 else blocks[(k2, k1)].T for k2 in range(len(data))],
            axis=1,
        )
        for k1 in range(len(data))
    ]
    return jnp.concatenate(rows, axis=0)
