r"""Two-electron repulsion integrals (ij|kl) over contracted spherical Gaussians (JAX).

McMurchie–Davidson (Helgaker et al. eq. 9.9.33):

.. math::
   (ab|cd) = \frac{2\pi^{5/2}}{pq\sqrt{p+q}} \sum_{tuv} E^{ab}_{tuv}
   \sum_{\tau\nu\phi} (-1)^{\tau+\nu+\phi} E^{cd}_{\tau\nu\phi}
   R_{t+\tau,u+\nu,v+\phi}(\alpha, \mathbf{R}_{PQ}), \quad \alpha = \frac{pq}{p+q}

**Long-range (erf-attenuated) operator.** With ``omega`` > 0 (1/Bohr) every kernel
computes :math:`(ab|\mathrm{erf}(\omega r_{12})/r_{12}|cd)` instead, the long-range part
of range-separated hybrids. Only the Hermite Coulomb integrals change: with

.. math::
   \alpha_\omega = \frac{\alpha\,\omega^2}{\alpha + \omega^2}

in place of :math:`\alpha` (in the Boys argument :math:`T = \alpha_\omega R_{PQ}^2`
and in the :math:`(-2\alpha)^n` factors of the R recursion) and the prefactor multiplied
by :math:`\sqrt{\alpha_\omega/\alpha} = \omega/\sqrt{\alpha + \omega^2}` (references:
Gill & Adamson, Chem. Phys. Lett. 261, 105 (1996); Ahlrichs, PCCP 8, 3072 (2006)).
``omega`` = 0 means the full Coulomb operator and traces exactly today's program. It is a
static Python float, a property of the functional: each new value traces and compiles a
new program (a tracer is refused). The short-range part erfc(omega r)/r is the full
integral minus the long-range one.

Work is grouped by quartet class (pairs of shell-pair classes, see ``pairs``) so every
class is one fixed-shape computation over its unique quartets (8-fold symmetry), in chunks
of a static size (``lax.map``) to bound memory. Per shell pair, the contraction
coefficients, the Gaussian prefactor and the Cartesian-to-spherical transform are folded
into the Hermite coefficients once; a quartet is then one batched contraction
:math:`E^{ab} R E^{cd}` summed over primitive pairs. The dense tensor is rebuilt from the
unique blocks through the s8-packed vector (``pairs.pack_quartets``).
"""

from __future__ import annotations

import contextlib
import math

import jax
import jax.numpy as jnp

from qmgen.dft.basis import Basis
from qmgen.dft.chunking import map_chunks
from qmgen.dft.integrals.boys import boys
from qmgen.dft.integrals.hermite import (
    coulomb_index,
    hermite_e,
    hermite_r,
    kind_cart2sph,
    pair_hermite,
)
from qmgen.dft.integrals.one_electron import primitive_pairs
from qmgen.dft.integrals.pairs import (
    n_pairs,
    pack_quartets,
    packed_destinations,
    packed_to_dense,
    pair_classes,
    quartet_classes,
    quartet_indices,
)

# primitive-quartet work items per lax.map chunk of a class: bounds memory; accelerators
# want larger kernels than the CPU, whose caches favour smaller ones
CHUNK_ELEMENTS_CPU = 1 << 21
CHUNK_ELEMENTS_ACCELERATOR = 1 << 24
_VMAP_WIDTH = [1]  # molecules per vmapped call while tracing (see ``vmap_width``)


@contextlib.contextmanager
def vmap_width(n: int):
    """Trace ERI kernels for ``n`` molecules per vmapped call: each ``lax.map`` chunk then
    holds 1/n of the chunk budget per molecule, so the memory of a batched call stays
    bounded (set by ``qmgen.dft.engine`` around tracing its batched program)."""
    _VMAP_WIDTH.append(max(1, int(n)))
    try:
        yield
    finally:
        _VMAP_WIDTH.pop()


def _chunk_budget() -> int:
    """Primitive-quartet work items per ``lax.map`` step (all molecules of a call together).

    CPU: a fixed size that suits its caches. Accelerators: 1/512 of the device memory in
    elements (about 2 GB of float64 per intermediate on a 139 GB H200), at least
    ``CHUNK_ELEMENTS_ACCELERATOR``. A fixed 2^24 left a few quartets per step for p-shell
    classes at batch 256, i.e. hundreds of sequential steps per class.
    """
    if jax.default_backend() == "cpu":
        return CHUNK_ELEMENTS_CPU
    try:
        limit = int(jax.devices()[0].memory_stats()["bytes_limit"])
    except Exception:  # noqa: BLE001 - not every backend reports memory
        limit = 0
    return max(CHUNK_ELEMENTS_ACCELERATOR, limit // 512)


_PREF = 2.0 * math.pi**2.5


def eri_pair_data(basis: Basis, positions, x: int, y: int) -> dict:
    """Per shell pair of class (x, y): Hermite coefficients with contraction coefficients,
    prefactor and spherical transform folded in.

    Returns dict: E (npairs, nprim_pairs, nsph_x * nsph_y, ntuv), p (npairs, nprim_pairs),
    P (npairs, nprim_pairs, 3).
    """
    lsa, lsb = basis.kinds[x].ls, basis.kinds[y].ls
    d = primitive_pairs(basis, positions, x, y)
    oo2p = 0.5 / d["p"]
    e = [hermite_e(max(lsa), max(lsb), d["PA"][..., ax], d["PB"][..., ax], oo2p) for ax in range(3)]
    eab = pair_hermite(lsa, lsb, *e)  # (np, kx, ky, nca, ncb, ntuv)
    dt = eab.dtype
    eab = jnp.einsum(
        "pijabt,pijab,am,bn->pijmnt",
        eab,
        d["coef"],
        jnp.asarray(kind_cart2sph(lsa), dt),
        jnp.asarray(kind_cart2sph(lsb), dt),
    )
    npair, kx, ky, na, nb, nt = eab.shape
    return dict(
        E=eab.reshape(npair, kx * ky, na * nb, nt),
        p=d["p"].reshape(npair, kx * ky),
        P=d["P"].reshape(npair, kx * ky, 3),
    )


def check_omega(omega) -> float:
    """``omega`` as a Python float (static, finite, >= 0); a traced value is refused."""
    if isinstance(omega, jax.core.Tracer):
        raise TypeError("omega must be a static Python float, not a traced JAX value")
    value = float(omega)
    if not math.isfinite(value) or value < 0.0:
        raise ValueError(f"omega must be a finite float >= 0 (1/Bohr), got {omega!r}")
    return value


def _quartet_kernel(bra: dict, ket: dict, lab: int, lcd: int, omega: float = 0.0):
    """Contracted integrals of a batch of quartets: (nq, nab, ncd).

    ``bra``/``ket`` hold one pair per quartet (``eri_pair_data``'s fields indexed by
    quartet). ``omega`` (1/Bohr, static) > 0 gives the long-range operator
    erf(omega r12)/r12: alpha -> alpha omega^2 / (alpha + omega^2) in the Boys argument
    and the R recursion, prefactor times omega / sqrt(alpha + omega^2) (module docstring).

    The contraction :math:`\\sum E^{ab}_{t} R_{t+\\tau} (-1)^\\tau E^{cd}_{\\tau}` over
    primitive pairs runs bra side first. Where one side is an (s|s)-like pair (total
    angular momentum 0) the signed R matrix is r itself, so no gather copy of it is made;
    for an (ss) ket the ket primitives are summed into R first.
    """
    pb, pk = bra["p"][:, :, None], ket["p"][:, None, :]
    pq, s = pb * pk, pb + pk
    alpha = pq / s
    scale = None
    if omega > 0.0:  # static: omega = 0 traces the full-Coulomb program unchanged
        w2 = omega * omega
        scale = omega / jnp.sqrt(alpha + w2)  # sqrt(alpha_w / alpha)
        alpha = alpha * w2 / (alpha + w2)  # alpha_w
    rpq = bra["P"][:, :, None, :] - ket["P"][:, None, :, :]
    t = alpha * jnp.sum(rpq * rpq, axis=-1)
    pref = _PREF / (pq * jnp.sqrt(s))
    if scale is not None:
        pref = pref * scale
    ltot = lab + lcd
    f = boys(ltot, t)
    if ltot == 0:
        w = f[..., 0] * pref
        eb, ek = bra["E"][..., 0, 0], ket["E"][..., 0, 0]
        return jnp.einsum("qbk,qb,qk->q", w, eb, ek)[:, None, None]
    r = hermite_r(ltot, f, alpha, rpq[..., 0], rpq[..., 1], rpq[..., 2]) * pref[..., None]
    if lcd == 0:  # ket (s|s): one component, tau = 0, sign +1
        w = jnp.sum(r * ket["E"][:, None, :, :, 0], axis=2)  # (nq, Pb, ntuv)
        return jnp.einsum("qbat,qbt->qa", bra["E"], w)[:, :, None]
    if lab == 0:  # bra (s|s): R_{tau} with the ket's signs
        _, sign = coulomb_index(lab, lcd)
        rmat = (r * jnp.asarray(sign[0], r.dtype))[..., None, :]
    else:
        idx, sign = coulomb_index(lab, lcd)
        rmat = r[..., idx] * jnp.asarray(sign, r.dtype)  # (nq, Pb, Pk, ntb, ntk)
    w = jnp.einsum("qbat,qbktu->qaku", bra["E"], rmat)
    return jnp.einsum("qaku,qkcu->qac", w, ket["E"])


def quartets(bra_all: dict, ket_all: dict, ib, ik, lab: int, lcd: int, omega: float):
    """``_quartet_kernel`` over the (bra ``ib[i]``, ket ``ik[i]``) pairs of two pair-data
    dicts, chunked to the memory budget: (len(ib), nab, ncd)."""
    nprim = bra_all["p"].shape[1] * ket_all["p"].shape[1]
    width = nprim * max(1, bra_all["E"].shape[-1] * ket_all["E"].shape[-1])
    chunk = _chunk_budget() // (width * _VMAP_WIDTH[-1])

    def body(idx):
        b, k = idx
        bra = {key: v[b] for key, v in bra_all.items()}
        ket = {key: v[k] for key, v in ket_all.items()}
        return _quartet_kernel(bra, ket, lab, lcd, omega)

    return map_chunks(body, (ib, ik), chunk, checkpoint=True)


def _class_block(pdata: dict, basis: Basis, pcs, p: int, q: int, omega: float = 0.0):
    """Unique integrals of quartet class (p, q): (nquartets, n_a, n_b, n_c, n_d), Hartree;
    ``omega`` (1/Bohr, static) > 0 for the long-range operator erf(omega r12)/r12."""
    (xa, xb), (xc, xd) = pcs[p], pcs[q]
    kinds = basis.kinds
    lab, lcd = kinds[xa].l + kinds[xb].l, kinds[xc].l + kinds[xd].l
    bra_all = {k: jnp.asarray(v) for k, v in pdata[pcs[p]].items()}
    ket_all = {k: jnp.asarray(v) for k, v in pdata[pcs[q]].items()}
    ib, ik = quartet_indices(n_pairs(basis, pcs[p]), n_pairs(basis, pcs[q]), p == q)
    nq = ib.size
    out = quartets(bra_all, ket_all, ib, ik, lab, lcd, omega)
    shape = (nq, kinds[xa].nsph, kinds[xb].nsph, kinds[xc].nsph, kinds[xd].nsph)
    return out.reshape(shape)


def eri_blocks(basis: Basis, positions, omega: float = 0.0) -> dict:
    """Unique (ij|kl) blocks per quartet class, {(P, Q): (nq, n_a, n_b, n_c, n_d)}.

    ``positions`` (natom, 3) in Bohr; values in Hartree. ``omega`` (static Python float,
    1/Bohr): 0 for 1/r12, > 0 for the long-range erf(omega r12)/r12 (module docstring).
    """
    omega = check_omega(omega)
    pcs = pair_classes(basis)
    pdata = {pc: eri_pair_data(basis, positions, *pc) for pc in pcs}
    return {(p, q): _class_block(pdata, basis, pcs, p, q, omega) for p, q in quartet_classes(basis)}


def eri_packed(basis: Basis, positions, omega: float = 0.0):
    """s8-packed ERI vector (see ``pairs.pack_quartets``) in the internal AO order.

    ``omega`` (static, 1/Bohr) > 0: the long-range operator erf(omega r12)/r12.
    """
    return pack_quartets(eri_blocks(basis, positions, omega), basis)


def eri_energy(basis: Basis, positions, gamma_packed, omega: float = 0.0):
    """Contraction sum_P (ERI)_P gamma_P over the s8-packed quartets, from the unique blocks.

    ``gamma_packed`` (npacked,) carries its own multiplicities. Used for forces: the reverse
    pass feeds each block its slice of gamma directly, with no scatter over the tensor.
    ``omega`` (static, 1/Bohr) > 0: the long-range operator erf(omega r12)/r12.
    """
    blocks = eri_blocks(basis, positions, omega)
    values = jnp.concatenate([blocks[key].reshape(-1) for key in quartet_classes(basis)])
    dest = packed_destinations(basis.kinds)
    weights = jnp.take(gamma_packed, dest, mode="fill", fill_value=0.0)
    return jnp.sum(values * weights)


def eri(basis: Basis, positions, omega: float = 0.0):
    """Dense ERI tensor (n_ao, n_ao, n_ao, n_ao) in the internal AO order (chemists' notation).

    Args:
      basis: the molecule's ``Basis``.
      positions: (natom, 3) in Bohr.
      omega: range-separation parameter in 1/Bohr, a static Python float (each value
        compiles its own program): 0 (default) for the Coulomb operator 1/r12, > 0 for the
        long-range erf(omega r12)/r12 (PySCF's ``mol.with_range_coulomb(omega)``).

    Returns the integrals in Hartree.
    """
    return packed_to_dense(eri_packed(basis, positions, omega), basis.n_ao)
