"""Boys function against mpmath (an independent arbitrary-precision reference)."""

import jax
import jax.numpy as jnp
import mpmath as mp
import numpy as np
import pytest

from qmgen.dft.integrals.boys import boys

mp.mp.dps = 40
T = np.concatenate(
    [[0.0, 1e-14, 1e-9, 1e-6, 1e-3], np.linspace(0.01, 50.0, 501), np.logspace(-3, 6, 60)]
)


def reference(m_max, t):
    def f(m, x):
        x = mp.mpf(float(x))
        if x == 0:
            return mp.mpf(1) / (2 * m + 1)
        return mp.gammainc(m + mp.mpf(0.5), 0, x) / (2 * x ** (m + mp.mpf(0.5)))

    return np.array([[float(f(m, x)) for m in range(m_max + 1)] for x in t])


@pytest.mark.parametrize("m_max", [0, 1, 4, 9, 13])
def test_float64_relative_error_below_1e14(m_max):
    ref = reference(m_max, T)
    got = np.asarray(boys(m_max, jnp.asarray(T)))
    assert np.max(np.abs(got - ref) / ref) < 1e-14


@pytest.mark.parametrize("m_max", [0, 4, 9, 13])
def test_float32_relative_error_below_1e6(m_max):
    t32 = T.astype(np.float32)
    ref = reference(m_max, t32.astype(np.float64))  # reference at the float32 argument
    got = np.asarray(boys(m_max, jnp.asarray(t32))).astype(np.float64)
    normal = ref > 1e-30  # below float32's normal range the value itself underflows
    assert np.max(np.abs(got - ref)[normal] / ref[normal]) < 1e-6
    assert np.all(np.isfinite(got))


def test_derivative_is_minus_next_order():
    t = jnp.asarray([0.0, 0.3, 7.0, 40.0])
    d = jax.vmap(jax.grad(lambda x: boys(3, x)[2]))(t)
    ref = reference(3, np.asarray(t))[:, 3]
    np.testing.assert_allclose(np.asarray(d), -ref, rtol=1e-14)
    # and against a central finite difference (away from T = 0)
    h, tp = 1e-5, t[1:]
    fd = (boys(2, tp + h)[:, 2] - boys(2, tp - h)[:, 2]) / (2 * h)
    np.testing.assert_allclose(np.asarray(d[1:]), np.asarray(fd), rtol=1e-7, atol=1e-12)


def test_order_outside_range_is_refused():
    with pytest.raises(ValueError, match="Boys order 99"):
        boys(99, jnp.zeros(3))
