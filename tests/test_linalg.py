"""Parallel Jacobi eigensolver (qmgen.dft.linalg) against numpy's LAPACK eigh."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qmgen.dft import linalg
from qmgen.dft.linalg import _shift, eigh, jacobi_eigh

solve = jax.jit(lambda a: jacobi_eigh(a, return_sweeps=True))
solve_warm = jax.jit(lambda a, v0: jacobi_eigh(a, v0, return_sweeps=True))


def symmetric(n, seed=0, scale=3.0):
    x = np.random.default_rng(seed).normal(size=(n, n))
    return scale * (x + x.T) / 2


def rotated(values, seed=0):
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(len(values),) * 2))
    return (q * np.asarray(values, dtype=float)) @ q.T


def check(a, w, v, tol_w=1e-10, tol_v=1e-12):
    a, w, v = np.asarray(a, dtype=np.float64), np.asarray(w), np.asarray(v)
    n = a.shape[0]
    assert np.all(np.isfinite(w)) and np.all(np.isfinite(v))
    assert np.all(np.diff(w) >= 0)
    assert np.max(np.abs(w - np.linalg.eigvalsh(a))) < tol_w
    assert np.max(np.abs(v.T @ v - np.eye(n))) < tol_v
    assert np.max(np.abs(a @ v - v * w)) < tol_w


@pytest.mark.parametrize("m", [2, 4, 6, 56])
def test_round_robin_meets_every_pair_once_per_sweep(m):
    x, pairs = jnp.arange(m).reshape(2, m // 2), []
    for _ in range(m - 1):
        pairs += [tuple(sorted(p)) for p in np.asarray(x).T.tolist()]
        x = _shift(x, 0)
    assert sorted(pairs) == sorted({(i, j) for i in range(m) for j in range(i + 1, m)})
    np.testing.assert_array_equal(np.asarray(x).ravel(), np.arange(m))  # back to start


@pytest.mark.parametrize("n", [5, 32, 55, 72])
def test_float64_matches_lapack(n):
    a = symmetric(n, seed=n)
    w, v, sweeps = solve(jnp.asarray(a))
    check(a, w, v)
    assert int(sweeps) <= 12


@pytest.mark.parametrize("n", [5, 55])
def test_float32_relative_accuracy(n):
    a = symmetric(n, seed=n)
    w, v, _ = solve(jnp.asarray(a, jnp.float32))
    assert w.dtype == v.dtype == jnp.float32
    norm = np.max(np.abs(np.linalg.eigvalsh(a)))
    check(a.astype(np.float32), w, v, tol_w=1e-4 * norm, tol_v=1e-4)


def test_degenerate_spectrum():
    # repeated values under a random rotation, and an exactly degenerate identity block
    a = rotated([1.0] * 6 + [2.0] * 3 + [-1.0, 0.5, 0.5, 4.0, -3.0, 2.5], seed=1)
    w, v, _ = solve(jnp.asarray(a))
    check(a, w, v)
    b = np.zeros((12, 12))
    b[:5, :5] = 3.0 * np.eye(5)
    b[5:, 5:] = symmetric(7, seed=2)
    w, v, _ = solve(jnp.asarray(b))
    check(b, w, v)


@pytest.mark.parametrize("a", [np.zeros((5, 5)), np.diag([3.0, 1.0, 2.0, 1.0, -7.0])])
def test_diagonal_and_zero_input_finite_without_sweeps(a):
    w, v, sweeps = solve(jnp.asarray(a))
    check(a, w, v)
    assert int(sweeps) == 0


def test_max_sweeps_caps_the_loop():
    _, _, sweeps = jacobi_eigh(jnp.asarray(symmetric(8)), max_sweeps=1, return_sweeps=True)
    assert int(sweeps) == 1


def test_warm_start_needs_fewer_sweeps():
    n = 40
    a = symmetric(n, seed=3)
    noise = 1e-4 * symmetric(n, seed=4)
    v0 = np.linalg.eigh(a + noise)[1]  # previous cycle's orbitals
    w_cold, _, cold = solve(jnp.asarray(a))
    w, v, warm = solve_warm(jnp.asarray(a), jnp.asarray(v0))
    check(a, w, v)
    np.testing.assert_allclose(w, w_cold, atol=1e-12)
    assert int(warm) <= 3 < int(cold)


def test_vmap_batch_equals_one_by_one():
    batch = np.stack([symmetric(33, seed=10 + k, scale=1.0 + k) for k in range(8)])
    w_b, v_b = jax.jit(jax.vmap(jacobi_eigh))(jnp.asarray(batch))
    for k in range(8):
        w, v, _ = solve(jnp.asarray(batch[k]))
        np.testing.assert_allclose(w_b[k], w, atol=1e-12)
        # the batch runs until all converge, so vectors agree up to sign (spectra simple)
        overlap = np.abs(np.diag(np.asarray(v_b[k]).T @ np.asarray(v)))
        np.testing.assert_allclose(overlap, 1.0, atol=1e-10)


def test_jit_does_not_retrace():
    traces = []

    @jax.jit
    def f(a):
        traces.append(1)
        return jacobi_eigh(a)

    for seed in (20, 21, 22):
        w, v = f(jnp.asarray(symmetric(17, seed=seed)))
        check(symmetric(17, seed=seed), w, v)
    assert len(traces) == 1


def test_fock_like_generalised_problem():
    # F C = S C e through X = S^-1/2: orbital-energy spread, SPD overlap with near-dependencies
    n = 48
    rng = np.random.default_rng(5)
    b = rng.normal(size=(n, n))
    s = b @ b.T / n + 1e-3 * np.eye(n)
    s = s / np.sqrt(np.outer(np.diag(s), np.diag(s)))  # unit diagonal, like normalised AOs
    e, u = np.linalg.eigh(s)
    x = (u / np.sqrt(e)) @ u.T
    f = np.diag(np.sort(rng.uniform(-20.0, 3.0, n))) + 0.3 * symmetric(n, seed=6, scale=1.0)
    fp = x.T @ f @ x
    w, v, _ = solve(jnp.asarray(fp))
    check(fp, w, v, tol_w=1e-10 * max(1.0, np.abs(fp).max()))
    c = x @ np.asarray(v)
    np.testing.assert_allclose(f @ c, s @ c * np.asarray(w), atol=1e-8 * np.abs(fp).max())


def test_dispatch(monkeypatch):
    a = jnp.asarray(symmetric(9, seed=7))
    w_l, v_l = eigh(a, method="lapack")
    w_ref, v_ref = jnp.linalg.eigh(a)
    np.testing.assert_array_equal(w_l, w_ref)
    np.testing.assert_array_equal(v_l, v_ref)
    w_j, _ = eigh(a, method="jacobi")
    np.testing.assert_array_equal(w_j, jacobi_eigh(a)[0])
    np.testing.assert_allclose(w_j, w_ref, atol=1e-12)

    calls = []
    monkeypatch.setattr(linalg, "jacobi_eigh", lambda a, v0=None: calls.append(v0) or (0, 0))
    monkeypatch.setattr(linalg.jax, "default_backend", lambda: "cpu")
    eigh(a)
    assert calls == []
    monkeypatch.setattr(linalg.jax, "default_backend", lambda: "gpu")
    eigh(a, v0="warm")
    assert calls == ["warm"]


def test_bad_method_and_shape():
    with pytest.raises(ValueError, match="unknown eigh method 'qr'; valid: auto, lapack, jacobi"):
        eigh(jnp.eye(3), method="qr")
    with pytest.raises(ValueError, match="one square matrix"):
        jacobi_eigh(jnp.zeros((2, 3, 3)))
    with pytest.raises(TypeError, match="floating"):
        jacobi_eigh(jnp.eye(3, dtype=jnp.int32))
