"""Shell pairs, shell quartets and the symmetric expansion of unique blocks to dense arrays.

Shells are grouped into kinds (see ``qmgen.dft.basis``). A *pair class* is a pair of kinds
(X, Y) with X >= Y; for X == Y it holds the shell pairs i >= j, otherwise all (i, j). A
*quartet class* is a pair of pair classes (P, Q) with P >= Q, holding pair pairs
bra >= ket when P == Q. Unique blocks are computed once per class (the 2-fold symmetry of
one-electron integrals, the 8-fold symmetry of (ij|kl)); ``expand_pairs`` and
``pack_quartets`` scatters the unique ERIs once into the s8-packed vector, from which
``packed_to_pairs`` (Coulomb layout) and ``packed_to_exchange`` (exchange layout) gather
full matrices by index arithmetic.

Everything here depends only on the static kind counts.
"""

from __future__ import annotations

from functools import cache

import jax.numpy as jnp
import numpy as np

from qmgen.dft.basis import Basis


@cache
def pair_indices(nx: int, ny: int, same: bool) -> tuple[np.ndarray, np.ndarray]:
    """Shell indices (i, j) of a pair class: i >= j if ``same`` else the full product."""
    if same:
        i, j = np.tril_indices(nx)
    else:
        i, j = np.divmod(np.arange(nx * ny), ny)
    return i.astype(np.int32), j.astype(np.int32)


def pair_classes(basis: Basis) -> list[tuple[int, int]]:
    """Pair classes (X, Y), X >= Y, in canonical order."""
    n = len(basis.kinds)
    return [(x, y) for x in range(n) for y in range(x + 1)]


def _tri(x):
    return x * (x + 1) // 2


def _shell_pair_index(sx, sy, nsx, same: bool):
    """Index of shell pair (sx, sy) within its pair class; for ``same`` sx >= sy is required."""
    return _tri(sx) + sy if same else sx * nsx + sy


def expand_pairs(blocks: dict, basis: Basis):
    """Dense symmetric (n_ao, n_ao[, ...]) matrix from unique pair-class blocks.

    Args:
      blocks: {(X, Y): array (npairs, nsph_X, nsph_Y, *extra)} for every pair class.

    Returns array (n_ao, n_ao, *extra) in the internal AO order.
    """
    kinds = basis.kinds
    rows = []
    for k1, kind1 in enumerate(kinds):
        cols = []
        for k2, kind2 in enumerate(kinds):
            x, y = max(k1, k2), min(k1, k2)
            block = blocks[(x, y)]
            extra = block.shape[3:]
            nx, ny = kinds[x].nsph, kinds[y].nsph
            a1 = jnp.arange(kind1.count * kind1.nsph)[:, None]
            a2 = jnp.arange(kind2.count * kind2.nsph)[None, :]
            s1, c1 = a1 // kind1.nsph, a1 % kind1.nsph
            s2, c2 = a2 // kind2.nsph, a2 % kind2.nsph
            if k1 < k2:  # canonical order is (k2, k1)
                s1, c1, s2, c2 = s2, c2, s1, c1
            if x == y:
                swap = s1 < s2
                s1, s2 = jnp.where(swap, s2, s1), jnp.where(swap, s1, s2)
                c1, c2 = jnp.where(swap, c2, c1), jnp.where(swap, c1, c2)
            pair = _shell_pair_index(s1, s2, kinds[y].count, x == y)
            flat = (pair * nx + c1) * ny + c2
            cols.append(block.reshape((-1,) + extra)[flat])
        rows.append(jnp.concatenate(cols, axis=1))
    return jnp.concatenate(rows, axis=0)


@cache
def quartet_indices(np_bra: int, np_ket: int, same: bool) -> tuple[np.ndarray, np.ndarray]:
    """Pair indices (bra, ket) of a quartet class: bra >= ket if ``same``, else all."""
    return pair_indices(np_bra, np_ket, same)


def quartet_classes(basis: Basis) -> list[tuple[int, int]]:
    """Quartet classes (P, Q), P >= Q, as indices into ``pair_classes``."""
    n = len(pair_classes(basis))
    return [(p, q) for p in range(n) for q in range(p + 1)]


def n_pairs(basis: Basis, pc: tuple[int, int]) -> int:
    x, y = pc
    cx, cy = basis.kinds[x].count, basis.kinds[y].count
    return cx * (cx + 1) // 2 if x == y else cx * cy


@cache
def packed_destinations(kinds: tuple) -> np.ndarray:
    """s8-packed position of every element of every quartet-class block, concatenated in
    ``quartet_classes`` order.

    Within diagonal classes an AO quartet can appear more than once (both component orders
    of a shell with itself); all but its first occurrence point one past the end, so the
    scatter into the packed vector has unique indices and drops the copies.
    """
    offsets = np.cumsum([0] + [k.count * k.nsph for k in kinds])
    pcs = [(x, y) for x in range(len(kinds)) for y in range(x + 1)]

    def pair_aos(pc):
        x, y = pc
        i, j = pair_indices(kinds[x].count, kinds[y].count, x == y)
        nx, ny = kinds[x].nsph, kinds[y].nsph
        ao_x = offsets[x] + i[:, None] * nx + np.arange(nx)  # (npairs, nx)
        ao_y = offsets[y] + j[:, None] * ny + np.arange(ny)
        a = np.broadcast_to(ao_x[:, :, None], (i.size, nx, ny))
        b = np.broadcast_to(ao_y[:, None, :], (i.size, nx, ny))
        hi, lo = np.maximum(a, b), np.minimum(a, b)
        return (hi * (hi + 1) // 2 + lo).reshape(i.size, nx * ny)

    ao_pairs = [pair_aos(pc).astype(np.int64) for pc in pcs]
    out = []
    for p in range(len(pcs)):
        for q in range(p + 1):
            ib, ik = pair_indices(ao_pairs[p].shape[0], ao_pairs[q].shape[0], p == q)
            bra = ao_pairs[p][ib][:, :, None]
            ket = ao_pairs[q][ik][:, None, :]
            hi, lo = np.maximum(bra, ket), np.minimum(bra, ket)
            out.append((hi * (hi + 1) // 2 + lo).ravel())
    dest = np.concatenate(out)
    n = int(offsets[-1])
    npacked = n * (n + 1) // 2 * (n * (n + 1) // 2 + 1) // 2
    first = np.zeros(dest.size, bool)
    first[np.unique(dest, return_index=True)[1]] = True
    dest = np.where(first, dest, npacked)
    return dest.astype(np.int32 if npacked < 2**31 - 1 else np.int64)


def pack_quartets(blocks: dict, basis: Basis):
    """The s8-packed ERI vector from unique quartet-class blocks.

    Index of AO quartet (ij|kl), i >= j, k >= l, ij >= kl (pair index ij = i(i+1)/2 + j in
    the internal AO order): ij(ij+1)/2 + kl. One scatter with unique indices.
    """
    n = basis.n_ao
    npair = n * (n + 1) // 2
    values = jnp.concatenate([blocks[key].reshape(-1) for key in quartet_classes(basis)])
    dest = packed_destinations(basis.kinds)
    packed = jnp.zeros(npair * (npair + 1) // 2, values.dtype)
    return packed.at[dest].set(values, mode="drop", unique_indices=True)


def _tri_index(a, b):
    hi, lo = jnp.maximum(a, b), jnp.minimum(a, b)
    return hi * (hi + 1) // 2 + lo


def packed_to_dense(packed, n: int):
    """(n, n, n, n) ERI tensor from the s8-packed vector (one gather, indices from iota)."""
    itype = jnp.int32 if packed.size < 2**31 else jnp.int64
    a = jnp.arange(n, dtype=itype)
    ij = _tri_index(a[:, None], a[None, :])
    return packed[_tri_index(ij[:, :, None, None], ij[None, None, :, :])]


def packed_to_pairs(packed, n: int):
    """(npair, npair) ERI matrix over AO pairs i >= j (s4 layout) from the packed vector."""
    npair = n * (n + 1) // 2
    itype = jnp.int32 if packed.size < 2**31 else jnp.int64
    p = jnp.arange(npair, dtype=itype)
    return packed[_tri_index(p[:, None], p[None, :])]


def packed_to_exchange(packed, n: int):
    """(n*n, n*n) matrix A[(i, j), (k, l)] = (ik|jl), so that K = A @ vec(D)."""
    itype = jnp.int32 if packed.size < 2**31 else jnp.int64
    a = jnp.arange(n, dtype=itype)
    ik = _tri_index(a[:, None, None, None], a[None, None, :, None])
    jl = _tri_index(a[None, :, None, None], a[None, None, None, :])
    return packed[_tri_index(ik, jl)].reshape(n * n, n * n)


@cache
def pair_arrays(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """AO indices (i, j), i >= j, of each AO pair in pair-index order, and the pair
    multiplicity w (2 for i != j, 1 for i == j)."""
    i, j = np.tril_indices(n)
    return i.astype(np.int32), j.astype(np.int32), np.where(i == j, 1.0, 2.0)


def pairs_to_matrix(values, n: int):
    """Symmetric (n, n) matrix from values over AO pairs i >= j."""
    a = jnp.arange(n)
    return values[_tri_index(a[:, None], a[None, :])]


def pairs_to_packed(mat, n: int):
    """Lower triangle of an (npair, npair) matrix in s8-packed order (p >= q), with the
    multiplicity (2 for p != q) of each packed element folded in."""
    npair = n * (n + 1) // 2
    size = npair * (npair + 1) // 2
    idx = jnp.arange(size, dtype=jnp.int64)
    p = jnp.floor((jnp.sqrt(8.0 * idx.astype(jnp.float64) + 1.0) - 1.0) / 2.0).astype(jnp.int64)
    p = jnp.where(p * (p + 1) // 2 > idx, p - 1, p)
    p = jnp.where((p + 1) * (p + 2) // 2 <= idx, p + 1, p)
    q = idx - p * (p + 1) // 2
    return mat[p, q] * jnp.where(p == q, 1.0, 2.0).astype(mat.dtype)
