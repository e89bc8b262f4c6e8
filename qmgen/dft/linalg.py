r"""Symmetric eigensolver that runs as one device program over a whole vmapped batch.

``jnp.linalg.eigh`` on CUDA loops over a batch on the host for n > 32 (one cuSOLVER call
per matrix), so a vmapped SCF would pay a launch per molecule per cycle. ``jacobi_eigh``
is pure JAX (slices, elementwise ops, ``lax`` loops), so ``vmap`` turns it into a single
batched program.

Shapes: ``a`` is one (n, n) symmetric float32/float64 matrix (callers ``vmap``); the result
is ``(w, v)`` with eigenvalues ``w`` (n,) ascending and eigenvectors as the columns of
``v`` (n, n), ``a v = v diag(w)``, as ``jnp.linalg.eigh``.

Algorithm: cyclic Jacobi (C. G. J. Jacobi, J. Reine Angew. Math. 30, 51 (1846)) with the
parallel round-robin ("tournament") ordering of R. P. Brent and F. T. Luk, SIAM J. Sci.
Stat. Comput. 6, 69 (1985): n is padded to even m, and each of the m - 1 steps of a sweep
rotates m/2 disjoint pairs (p, q) at once, so every pair is annihilated once per sweep.
The matrix is held as (2, m/2, 2, m/2) with pair k at positions (0, k), (1, k), so a step
:math:`A \leftarrow J^T A J`, :math:`V \leftarrow V J` is elementwise on the halves (no
per-pair loop, no dense ``J``), and the move to the next pairing is a fixed shuffle of
slices; after m - 1 steps the order is back to the original. Each rotation is the
numerically stable one (H. Rutishauser, Numer. Math. 9, 1 (1966); Golub & Van Loan,
Matrix Computations, §8.5):
:math:`\theta = (a_{qq} - a_{pp}) / 2a_{pq}`,
:math:`t = \mathrm{sign}(\theta) / (|\theta| + \sqrt{\theta^2 + 1})`,
:math:`c = 1/\sqrt{1 + t^2}`, :math:`s = t c`, then :math:`a_{pq} = 0`,
:math:`a_{pp} \mathrel{-}= t a_{pq}`, :math:`a_{qq} \mathrel{+}= t a_{pq}` exactly
(:math:`a_{pq} = 0` gives the identity, so diagonal or zero input gives no NaN). Sweeps run
in a ``lax.while_loop`` until the off-diagonal Frobenius norm is at most
``tol * ||a||_F`` or ``max_sweeps`` is reached; convergence is quadratic, ~6-10 sweeps
from scratch for n ~ 50-100. Under ``vmap`` the loop runs until every matrix has
converged (converged ones are already diagonal, so extra sweeps change them by rounding).

Warm start: with ``v0`` (orthogonal, e.g. the previous SCF cycle's orbitals) the solver
diagonalises :math:`v_0^T a v_0`, nearly diagonal near convergence, and returns
:math:`v_0` times its eigenvectors; 1-3 sweeps then suffice.

Odd n gets one zero row/column (index n): its a_pq are 0, so it is never mixed, and it is
dropped before the final sort.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, get_args

import jax
import jax.numpy as jnp

if TYPE_CHECKING:  # shape annotations only (jaxtyping is a test dependency)
    from jaxtyping import Array, Float

Method = Literal["auto", "lapack", "jacobi"]
METHODS: tuple[str, ...] = get_args(Method)

MAX_SWEEPS = 30  # quadratic convergence: ~10 sweeps from scratch; more means bad input


def _off_norm(a: jax.Array) -> jax.Array:
    return jnp.sqrt(jnp.sum(jnp.where(jnp.eye(a.shape[0], dtype=bool), 0.0, a) ** 2))


def _shift(x: jax.Array, axis: int) -> jax.Array:
    """Next round-robin pairing of axes (axis, axis + 1), shape (2, h), pairs ((0, k), (1, k)).

    Circle method: position (0, 0) stays, the other m - 1 move one place round the ring
    (0, 1) -> (0, 2) -> ... -> (0, h-1) -> (1, h-1) -> ... -> (1, 0) -> (0, 1), so over
    m - 1 steps every pair meets once and the order then returns to the start. Slices and
    concatenations only (no gather).
    """
    h = x.shape[axis + 1]
    if h == 1:
        return x
    top = jax.lax.index_in_dim(x, 0, axis, keepdims=False)
    bot = jax.lax.index_in_dim(x, 1, axis, keepdims=False)
    cut = lambda y, lo, hi: jax.lax.slice_in_dim(y, lo, hi, axis=axis)
    new_top = jnp.concatenate([cut(top, 0, 1), cut(bot, 0, 1), cut(top, 1, h - 1)], axis)
    new_bot = jnp.concatenate([cut(bot, 1, h), cut(top, h - 1, h)], axis)
    return jnp.stack([new_top, new_bot], axis)


def _step(a: jax.Array, v: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Rotate the h = m/2 pairs (p, q) = ((0, k), (1, k)) at once, then shift the pairing.

    ``a``: (2, h, 2, h) symmetric matrix, ``v``: (n', 2, h) accumulated rotations.
    """
    h = a.shape[1]
    app, aqq, apq = jnp.diagonal(a[0, :, 0]), jnp.diagonal(a[1, :, 1]), jnp.diagonal(a[0, :, 1])
    zero = apq == 0.0
    theta = (aqq - app) / (2.0 * jnp.where(zero, 1.0, apq))
    sign = jnp.where(theta >= 0, 1.0, -1.0)
    t = jnp.where(zero, 0.0, sign / (jnp.abs(theta) + jnp.sqrt(theta * theta + 1.0)))
    c = 1.0 / jnp.sqrt(1.0 + t * t)
    s = t * c
    cr, sr = c[:, None, None], s[:, None, None]
    a = jnp.stack([cr * a[0] - sr * a[1], sr * a[0] + cr * a[1]])  # rows: J^T A
    a = jnp.stack([c * a[:, :, 0] - s * a[:, :, 1], s * a[:, :, 0] + c * a[:, :, 1]], axis=2)
    zeros = jnp.zeros_like(t)
    diag = jnp.stack([jnp.stack([app - t * apq, zeros]), jnp.stack([zeros, aqq + t * apq])])
    eye = jnp.eye(h, dtype=bool)[None, :, None, :]
    a = jnp.where(eye, diag.transpose(0, 2, 1)[..., None], a)  # exact 2x2 diagonalisation
    v = jnp.stack([c * v[:, 0] - s * v[:, 1], s * v[:, 0] + c * v[:, 1]], axis=1)
    return _shift(_shift(a, 0), 2), _shift(v, 1)


def jacobi_eigh(
    a: Float[Array, "n n"],
    v0: Float[Array, "n n"] | None = None,
    *,
    tol: float | None = None,
    max_sweeps: int = MAX_SWEEPS,
    return_sweeps: bool = False,
):
    """Eigen-decomposition of one symmetric matrix by parallel cyclic Jacobi.

    Args:
      a: (n, n) symmetric float32/float64 (symmetrised as (a + a.T) / 2).
      v0: optional (n, n) orthogonal warm start; the solver diagonalises v0.T a v0.
      tol: stop when ||offdiag||_F <= tol * ||a||_F (default 10 * machine epsilon).
      max_sweeps: cap on sweeps (static int).
      return_sweeps: also return the number of sweeps run (int32 scalar).

    Returns:
      ``(w, v)``: eigenvalues (n,) ascending, eigenvectors (n, n) as columns; with
      ``return_sweeps``, ``(w, v, sweeps)``.
    """
    a = jnp.asarray(a)
    if a.ndim != 2 or a.shape[0] != a.shape[1]:
        raise ValueError(f"jacobi_eigh takes one square matrix (vmap for batches), got {a.shape}")
    if not jnp.issubdtype(a.dtype, jnp.floating):
        raise TypeError(f"jacobi_eigh needs a real floating matrix, got {a.dtype}")
    dtype, n = a.dtype, a.shape[0]
    if tol is None:
        tol = 10.0 * float(jnp.finfo(dtype).eps)
    a = 0.5 * (a + a.T)
    scale = jnp.sqrt(jnp.sum(a * a))
    v = jnp.eye(n, dtype=dtype) if v0 is None else jnp.asarray(v0, dtype)
    if v0 is not None:
        a = v.T @ a @ v
        a = 0.5 * (a + a.T)
    m = n + n % 2
    if m != n:  # zero pad row/column, never mixed
        a = jnp.pad(a, ((0, 1), (0, 1)))
        v = jnp.pad(v, ((0, 1), (0, 1))).at[n, n].set(1.0)
    if m == 0:
        return (jnp.diagonal(a), v, jnp.int32(0)) if return_sweeps else (jnp.diagonal(a), v)
    h = m // 2

    def cond(carry):
        k, _, _, off = carry
        return (k < max_sweeps) & (off > tol * scale)

    def body(carry):
        k, a, v, _ = carry
        a, v = jax.lax.fori_loop(0, m - 1, lambda _, av: _step(*av), (a, v))
        return k + 1, a, v, _off_norm(a.reshape(m, m))

    a, v = a.reshape(2, h, 2, h), v.reshape(m, 2, h)
    k, a, v, _ = jax.lax.while_loop(cond, body, (jnp.int32(0), a, v, _off_norm(a.reshape(m, m))))
    a, v = a.reshape(m, m), v.reshape(m, m)
    w = jnp.diagonal(a)[:n]
    order = jnp.argsort(w)
    w, v = w[order], v[:n, :n][:, order]
    return (w, v, k) if return_sweeps else (w, v)


def eigh(
    a: Float[Array, "n n"], v0: Float[Array, "n n"] | None = None, method: str = "auto"
) -> tuple[Float[Array, " n"], Float[Array, "n n"]]:
    """``(w, v)`` of one symmetric matrix by the chosen method.

    ``"lapack"``: ``jnp.linalg.eigh`` (ignores ``v0``). ``"jacobi"``: ``jacobi_eigh``.
    ``"auto"``: LAPACK on the CPU backend (fast there), Jacobi elsewhere (one batched
    program under ``vmap`` instead of a host loop over the batch).
    """
    if method not in METHODS:
        raise ValueError(f"unknown eigh method {method!r}; valid: {', '.join(METHODS)}")
    if method == "auto":
        method = "lapack" if jax.default_backend() == "cpu" else "jacobi"
    if method == "lapack":
        return jnp.linalg.eigh(a)
    return jacobi_eigh(a, v0)
