r"""The Boys function :math:`F_m(T) = \int_0^1 t^{2m} e^{-T t^2} dt` in JAX.

Scheme (tabulated Taylor expansion, as in most GPU integral codes; tuned against mpmath):

* ``T < T_MAX``: the highest order needed, :math:`F_M`, from a table of
  :math:`F_{M+k}(T_i)` on a grid of spacing 1/16 by the Taylor series
  :math:`F_M(T) = \sum_{k<K} F_{M+k}(T_i) (T_i - T)^k / k!` (using :math:`F_m' = -F_{m+1}`),
  then stable downward recursion :math:`F_{m-1} = (2T F_m + e^{-T}) / (2m-1)`.
* ``T >= T_MAX``: :math:`F_0 = \tfrac12\sqrt{\pi/T}` (erf(6) = 1 to double precision) and
  upward recursion :math:`F_{m+1} = ((2m+1) F_m - e^{-T}) / (2T)`, stable there.

One exp and one table row per element, no erf. The table is computed once per process in
extended precision (numpy longdouble series plus downward recursion) for orders up to
``MAX_ORDER + K``. Measured against mpmath (tests/test_boys.py): relative error below
1e-14 in float64 and 1e-6 in float32 (at float32-representable T) for orders 0-16 over
T in [0, 1e6].

The derivative is analytic, :math:`dF_m/dT = -F_{m+1}`, supplied as a custom JVP so that
forces do not differentiate through the table lookup.
"""

from __future__ import annotations

import math
from functools import cache, partial
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
import numpy as np

if TYPE_CHECKING:  # shape annotations only (jaxtyping is a test dependency)
    from jaxtyping import Array, Float

MAX_ORDER = 24  # far above what s-f kernels and their derivatives use (4 * 3 + 1)
T_MAX = 36.0
STEP = 1.0 / 16.0
TAYLOR_TERMS = 8


@cache
def boys_table() -> np.ndarray:
    """(n_grid, MAX_ORDER + TAYLOR_TERMS + 1) values F_m(i * STEP), float64.

    Series :math:`F_M(T) = e^{-T}\\sum_k (2T)^k / [(2M+1)(2M+3)\\cdots(2M+2k+1)]` at the top
    order in longdouble, then downward recursion.
    """
    top = MAX_ORDER + TAYLOR_TERMS
    t = np.arange(int(T_MAX / STEP) + 2, dtype=np.longdouble) * np.longdouble(STEP)
    term = np.full_like(t, 1.0 / (2 * top + 1))
    total = term.copy()
    k = 0
    while True:
        k += 1
        term = term * 2 * t / (2 * top + 2 * k + 1)
        total += term
        if np.all(term <= total * np.longdouble(1e-22)):
            break
    e = np.exp(-t)
    out = np.empty((t.size, top + 1), dtype=np.longdouble)
    out[:, top] = total * e
    for m in range(top, 0, -1):
        out[:, m - 1] = (2 * t * out[:, m] + e) / (2 * m - 1)
    return out.astype(np.float64)


def _boys_impl(m_max: int, t: jax.Array) -> list:
    dtype = t.dtype
    table = jnp.asarray(boys_table()[:, m_max : m_max + TAYLOR_TERMS], dtype)
    x = jnp.minimum(t, T_MAX) * (1.0 / STEP)
    i = jnp.floor(x + 0.5)
    d = (i - x) * STEP  # T_i - T, |d| <= STEP / 2
    rows = table[i.astype(jnp.int32)]
    f = rows[..., TAYLOR_TERMS - 1] * (1.0 / math.factorial(TAYLOR_TERMS - 1))
    for k in range(TAYLOR_TERMS - 2, -1, -1):
        f = f * d + rows[..., k] * (1.0 / math.factorial(k))
    e = jnp.exp(-t)
    low = [f]
    for m in range(m_max, 0, -1):
        low.append((2.0 * t * low[-1] + e) * (1.0 / (2 * m - 1)))
    low = low[::-1]
    big = t >= T_MAX
    tl = jnp.maximum(t, T_MAX)
    inv2t = 0.5 / tl
    high = [0.5 * jnp.sqrt(math.pi / tl)]
    for m in range(m_max):
        high.append(((2 * m + 1) * high[-1] - e) * inv2t)
    return [jnp.where(big, h, lo) for lo, h in zip(low, high, strict=True)]


@partial(jax.custom_jvp, nondiff_argnums=(0,))
def boys(m_max: int, t: Float[Array, "*s"]) -> Float[Array, "*s m"]:
    r"""Boys functions :math:`F_0(T) \ldots F_{m_{max}}(T)`.

    Args:
      m_max: highest order (static int, 0..MAX_ORDER).
      t: argument T >= 0, any shape, float32 or float64.

    Returns:
      Array of shape ``t.shape + (m_max + 1,)`` and dtype of ``t``.
    """
    if not 0 <= m_max <= MAX_ORDER:
        raise ValueError(f"Boys order {m_max} outside 0..{MAX_ORDER}")
    return jnp.stack(_boys_impl(m_max, jnp.asarray(t)), axis=-1)


@boys.defjvp
def _boys_jvp(m_max, primals, tangents):
    (t,), (dt,) = primals, tangents
    f = boys(m_max + 1, t)
    return f[..., :-1], -f[..., 1:] * dt[..., None]
