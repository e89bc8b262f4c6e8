r"""The Boys function :math:`F_m(T) = \int_0^1 t^{2m} e^{-T t^2} dt` in JAX.

Scheme (the one libcint uses, tuned here against mpmath):

* ``T < T0``: the convergent series for the highest order,
  :math:`F_M(T) = e^{-T} \sum_k (2T)^k / [(2M+1)(2M+3)\cdots(2M+2k+1)]`, evaluated as a
  polynomial in T by Horner's rule (no overflow in float32), then stable downward recursion
  :math:`F_{m-1} = (2T F_m + e^{-T}) / (2m-1)`.
* ``T >= T0``: :math:`F_0 = \tfrac12\sqrt{\pi/T}\,\mathrm{erf}(\sqrt T)` and upward recursion
  :math:`F_{m+1} = ((2m+1) F_m - e^{-T}) / (2T)`, which is stable there.

``T0`` grows with the highest order so that the upward branch keeps full precision; the
series length is the number of terms that reach double precision at ``T0``. Measured
against mpmath (tests/test_boys.py): relative error below 1e-14 in float64 and 1e-6 in
float32 for orders 0-16 over T in [0, 1e6].

The derivative is analytic, :math:`dF_m/dT = -F_{m+1}`, supplied as a custom JVP so that
forces do not differentiate through the branch selection.
"""

from __future__ import annotations

import math
from functools import lru_cache, partial

import jax
import jax.numpy as jnp
import numpy as np

MAX_ORDER = 24
SINGLE_T0_SCALE = 1.5  # 4 * LMAX for g shells plus derivatives; far above what the kernels use


@lru_cache(maxsize=None)
def _scheme(m_max: int, single: bool = False) -> tuple[float, tuple[float, ...]]:
    """Switch point T0 and Horner coefficients (highest power first) for order ``m_max``."""
    if not 0 <= m_max <= MAX_ORDER:
        raise ValueError(f"Boys order {m_max} outside 0..{MAX_ORDER}")
    # float32 loses digits in the upward recursion sooner; its series branch reaches further
    t0 = max(3.0, (SINGLE_T0_SCALE if single else 1.0) * m_max)
    coeffs = [1.0 / (2 * m_max + 1)]
    total = coeffs[0]
    while True:
        k = len(coeffs)
        coeffs.append(coeffs[-1] * 2.0 / (2 * m_max + 2 * k + 1))
        term = coeffs[-1] * t0**k
        total += term
        if term < 1e-17 * total:
            break
    # coefficients of the polynomial in u = T / T0: finite in float32 for every term
    return t0, tuple(c * t0**k for k, c in reversed(list(enumerate(coeffs))))


def _boys_impl(m_max: int, t: jax.Array) -> jax.Array:
    dtype = t.dtype
    t0, coeffs = _scheme(m_max, single=dtype == jnp.float32)
    # series branch (T < T0), evaluated at min(T, T0) so the unused lanes stay finite
    ts = jnp.minimum(t, t0)
    u = ts * (1.0 / t0)
    poly = jnp.full_like(ts, coeffs[0])
    for c in coeffs[1:]:
        poly = poly * u + jnp.asarray(c, dtype)
    exp_s = jnp.exp(-ts)
    low = [poly * exp_s]
    for m in range(m_max, 0, -1):
        low.append((2.0 * ts * low[-1] + exp_s) / (2 * m - 1))
    low = low[::-1]
    # erf branch (T >= T0), evaluated at max(T, T0)
    tl = jnp.maximum(t, t0)
    sq = jnp.sqrt(tl)
    f = (0.5 * math.sqrt(math.pi)) * jax.lax.erf(sq) / sq
    exp_l = jnp.exp(-tl)
    high = [f]
    inv2t = 0.5 / tl
    for m in range(m_max):
        high.append(((2 * m + 1) * high[-1] - exp_l) * inv2t)
    use_low = t < t0
    return jnp.stack([jnp.where(use_low, lo, hi) for lo, hi in zip(low, high)], axis=-1)


def _boys0_impl(t: jax.Array) -> jax.Array:
    """F_0 alone: erf form, with its Taylor series below 1e-6 where erf(x)/x is 0/0."""
    small = t < 1e-6
    ts = jnp.where(small, 1.0, t)
    sq = jnp.sqrt(ts)
    big = (0.5 * math.sqrt(math.pi)) * jax.lax.erf(sq) / sq
    series = 1.0 - t / 3.0 + t * t / 10.0 - t * t * t / 42.0
    return jnp.where(small, series, big)[..., None]


@partial(jax.custom_jvp, nondiff_argnums=(0,))
def boys(m_max: int, t: jax.Array) -> jax.Array:
    r"""Boys functions :math:`F_0(T) \ldots F_{m_{max}}(T)`.

    Args:
      m_max: highest order (static int, 0..MAX_ORDER).
      t: argument T >= 0, any shape, float32 or float64.

    Returns:
      Array of shape ``t.shape + (m_max + 1,)`` and dtype of ``t``.
    """
    t = jnp.asarray(t)
    if m_max == 0:
        return _boys0_impl(t)
    return _boys_impl(m_max, t)


@boys.defjvp
def _boys_jvp(m_max, primals, tangents):
    (t,), (dt,) = primals, tangents
    f = boys(m_max + 1, t)
    return f[..., :-1], -f[..., 1:] * dt[..., None]
