"""qmgen.dft.xc against PySCF's libxc (7.0.0): values, derivatives, libxc's screening of tiny
densities, robustness (no NaN/inf, values and gradients), float32, jit and vmap.

Tolerance for parity with libxc, per point: ``|ours - libxc| <= 1e-10 |libxc| + 1e-13 scale``
where ``scale`` is the natural size of that output at that density: ``|eps_x^LDA(rho)|``
(0.74 rho^(1/3) Hartree) for exc and vrho, and ``rho |eps_x^LDA| / (sigma + rho^(8/3))`` for
vsigma. The floor is needed only where the exact value nearly cancels (PBE correlation at
large reduced gradient, eps_c = eps_c^PW92 + H -> 0; derivatives crossing zero): there
libxc itself rounds at about 1e-14..1e-13 of the scale (it evaluates log(1 + x) with
x ~ 1e-3 at low density), and qmgen uses a cancellation-free form.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from pyscf import dft, gto
from pyscf.dft import libxc

from qmgen.dft.xc import XC_NAMES, eval_xc, get_functional
from qmgen.dft.xc.evaluate import F32_DENS_FLOOR, eval_component
from qmgen.dft.xc.registry import COMPONENTS

RTOL = 1e-10
FLOOR = 1e-13
S_PER_X = 1.0 / (2.0 * (3.0 * np.pi**2) ** (1.0 / 3.0))  # s = S_PER_X |grad rho| / rho^(4/3)

_xc = jax.jit(eval_xc, static_argnums=0)
# components that are a libxc functional on their own, at its default parameters (the
# range-separated ones are checked in tests/test_xc_rsh.py)
STANDALONE = [k for k, c in COMPONENTS.items() if c.pyscf_name is not None and c.omega == 0.0]
_component = jax.jit(
    lambda key, rho, sigma: eval_component(COMPONENTS[key], rho, sigma), static_argnums=0
)


# ----------------------------------------------------------------------------- helpers
def libxc_ref(pyscf_name: str, rho: np.ndarray, grad: np.ndarray):
    """(exc, vrho, vsigma) from pyscf.dft.libxc.eval_xc; grad is (3, n) drho/dx,y,z."""
    if libxc.xc_type(pyscf_name) in ("LDA", "HF"):
        exc, vxc = libxc.eval_xc(pyscf_name, rho, spin=0, deriv=1)[:2]
        vrho = np.zeros_like(rho) if vxc is None else vxc[0]  # HF: exc = 0, vxc = None
        return exc, vrho, np.zeros_like(rho)
    exc, vxc = libxc.eval_xc(pyscf_name, np.vstack([rho[None], grad]), spin=0, deriv=1)[:2]
    return exc, vxc[0], vxc[1]


def as_grad(sigma: np.ndarray) -> np.ndarray:
    """A (3, n) gradient with |grad|^2 = sigma."""
    return np.vstack([np.sqrt(sigma), np.zeros_like(sigma), np.zeros_like(sigma)])


def sigma_of(grad: np.ndarray) -> np.ndarray:
    return grad[0] ** 2 + grad[1] ** 2 + grad[2] ** 2


def natural_scales(rho, sigma):
    e = 0.75 * (3.0 / np.pi) ** (1.0 / 3.0) * np.cbrt(rho)
    return e, e, rho * e / (sigma + rho ** (8.0 / 3.0) + 1e-300)


def parity(ours, ref, rho, sigma):
    """Max of |ours - ref| / (RTOL |ref| + FLOOR scale) per output (<= 1 passes), and the
    max relative error where |ref| is above the floor."""
    crit, rel = [], []
    for a, b, scale in zip(ours, ref, natural_scales(rho, sigma), strict=True):
        a = np.asarray(a, dtype=np.float64)
        diff = np.abs(a - b)
        crit.append(float(np.max(diff / (RTOL * np.abs(b) + FLOOR * scale + 1e-300))))
        sig = np.abs(b) > FLOOR * scale / RTOL
        rel.append(float(np.max(diff[sig] / np.abs(b[sig]))) if sig.any() else 0.0)
    return crit, rel


def component_scale(name, rho, sigma):
    """Per output, the sum of the absolute component contributions |c_i out_i|, from libxc
    (float64): the size of the terms that may cancel in the total."""
    rho, sigma = np.asarray(rho, np.float64), np.asarray(sigma, np.float64)
    scale = [np.zeros_like(rho) for _ in range(3)]
    for coef, key in get_functional(name).components:
        ref = libxc_ref(COMPONENTS[key].pyscf_name, rho, as_grad(sigma))
        for i in range(3):
            scale[i] += np.abs(coef * np.nan_to_num(ref[i]))
    return scale


def assert_same_screening(exc, ref_exc, rho):
    """Screened points are exactly zero where libxc's are: ours == 0 only where libxc's is,
    and every libxc zero at rho < 1e-9 (screening, not a large-gradient cancellation) is ours."""
    exc = np.asarray(exc)
    assert np.all(ref_exc[exc == 0] == 0)
    low = (ref_exc == 0) & (rho < 1e-9)
    assert np.all(exc[low] == 0)


def random_points(n: int, seed: int, log_rho=(-16.0, 5.0), log_s=(-8.0, 6.0)):
    """rho log-uniform, reduced gradient s log-uniform; the first tenth has sigma = 0."""
    rng = np.random.default_rng(seed)
    rho = 10.0 ** rng.uniform(*log_rho, n)
    s = 10.0 ** rng.uniform(*log_s, n)
    sigma = (s * rho ** (4.0 / 3.0) / S_PER_X) ** 2
    sigma[: n // 10] = 0.0
    return rho, as_grad(sigma)


def threshold_points():
    """Densities on both sides of every libxc threshold (thr and 2 thr), zero, 1e-30,
    with sigma = 0, tiny, moderate and huge (s up to ~1e6)."""
    rho = [0.0, 1e-30, 1e-20, 1e-16, 3e-15, 1e-13, 1e-11, 1e-9]
    for thr in (1e-15, 1e-14, 1e-12):
        for base in (thr, 2.0 * thr):
            rho += [base * (1.0 - 1e-15), base, base * (1.0 + 4e-16), base * 1.5]
    rho = np.array(rho)
    rhos, sigmas = [], []
    for s in (0.0, 1e-30, 1e-3, 1.0, 30.0, 1e3, 1e6):
        rhos.append(rho)
        sigmas.append((s * rho ** (4.0 / 3.0) / S_PER_X) ** 2)
    rhos.append(rho)
    sigmas.append(np.full_like(rho, 1e-40))
    return np.concatenate(rhos), as_grad(np.concatenate(sigmas))


@pytest.fixture(scope="module")
def molecule_points():
    """Realistic density: water 6-31G, minimal-atomic-orbital guess, PySCF grid level 0
    (2328 points, rho from 3e-17 to 290, s up to 3e5)."""
    mol = gto.M(atom="O 0 0 0; H 0 0.757 0.587; H 0 -0.757 0.587", basis="6-31g", verbose=0)
    grids = dft.gen_grid.Grids(mol)
    grids.level = 0
    grids.build()
    ao = dft.numint.eval_ao(mol, grids.coords, deriv=1)
    rho = dft.numint.eval_rho(mol, ao, dft.RKS(mol).get_init_guess(), xctype="GGA")
    return rho[0], rho[1:4]


@pytest.fixture(scope="module")
def all_points(molecule_points):
    sets = [random_points(4000, 0), threshold_points(), molecule_points]
    return np.concatenate([r for r, _ in sets]), np.hstack([g for _, g in sets])


# ----------------------------------------------------------------------------- registry
def test_names_and_metadata():
    assert XC_NAMES == (
        "lda", "svwn", "pbe", "pbe0", "b3lyp", "b3lyp5", "hf", "wb97x", "camb3lyp",
        "wb97x-d3bj", "b3lyp-d3bj", "pbe0-d3bj",
    )  # fmt: skip
    for name in XC_NAMES:
        f = get_functional(name)
        assert f.name == name
        hyb = dft.numint.NumInt().rsh_and_hybrid_coeff(f.pyscf_name)[2]  # hybrid_coeff w/o RSH
        assert f.hyb == pytest.approx(hyb, abs=1e-15)
        xc_type = libxc.xc_type(f.pyscf_name)
        assert f.is_gga == (xc_type == "GGA"), (name, xc_type)
    assert get_functional("B3LYP5") is get_functional(" b3lyp5 ")
    assert get_functional("SVWN").pyscf_name == "lda,vwn"
    assert get_functional("hf").hyb == 1.0
    with pytest.raises(ValueError, match="b3lyp5.*hf|supported"):
        get_functional("m06")
    with pytest.raises(ValueError) as err:
        get_functional("b3lyp3")
    for name in XC_NAMES:
        assert name in str(err.value)


def test_b3lyp_coefficients_from_libxc():
    """Least-squares fit of libxc's B3LYP (id 402) and PySCF's B3LYP5 on their components
    recovers qmgen's coefficients (verifies VWN-RPA vs VWN5 and the mixing)."""
    rho, grad = random_points(200, 1, log_rho=(-3.0, 2.0), log_s=(-2.0, 1.0))
    parts = {k: libxc_ref(COMPONENTS[k].pyscf_name, rho, grad) for k in STANDALONE}
    for name in ("b3lyp", "b3lyp5"):
        f = get_functional(name)
        keys = [k for _, k in f.components]
        target = libxc_ref(f.pyscf_name, rho, grad)
        for i in range(3):  # exc, vrho, vsigma
            mat = np.stack([parts[k][i] for k in keys], axis=1)
            cols = np.abs(mat).max(axis=0) > 0
            coef = np.linalg.lstsq(mat[:, cols], target[i], rcond=None)[0]
            want = np.array([c for c, _ in f.components])[cols]
            np.testing.assert_allclose(coef, want, rtol=0, atol=1e-9, err_msg=f"{name} {i}")
    assert dict((k, c) for c, k in get_functional("b3lyp").components)["vwn_rpa"] == (
        pytest.approx(0.19)
    )


# ----------------------------------------------------------------------------- parity
@pytest.mark.parametrize("key", STANDALONE)
def test_component_matches_libxc(key, all_points):
    rho, grad = all_points
    sigma = sigma_of(grad)
    ours = _component(key, jnp.asarray(rho), jnp.asarray(sigma))
    ref = libxc_ref(COMPONENTS[key].pyscf_name, rho, grad)
    crit, rel = parity(ours, ref, rho, sigma)
    assert max(crit) <= 1.0, (key, crit, rel)
    assert_same_screening(ours[0], ref[0], rho)


@pytest.mark.parametrize("name", XC_NAMES)
def test_functional_matches_libxc(name, all_points):
    rho, grad = all_points
    sigma = sigma_of(grad)
    f = get_functional(name)
    ours = _xc(name, jnp.asarray(rho), jnp.asarray(sigma) if f.is_gga else None)
    ref = libxc_ref(f.pyscf_name, rho, grad)
    for a in ours:
        assert a.dtype == jnp.float64 and a.shape == rho.shape
    crit, rel = parity(ours, ref, rho, sigma)
    assert max(crit) <= 1.0, (name, crit, rel)
    assert_same_screening(ours[0], ref[0], rho)
    for a in ours:  # rho = 0 (any sigma) and everything below every threshold: exactly zero
        assert not np.any(np.asarray(a)[rho < 1e-15])
    if not f.is_gga:
        assert not np.any(np.asarray(ours[2]))


def test_libxc_thresholds():
    """libxc 7.0.0 screening as probed from PySCF: zero below dens_threshold (1e-15; LYP
    1e-14; PBE-c 1e-12), exchange also zero for rho/2 <= 1e-15, and sigma floored at
    dens_threshold^(8/3) (so sigma = 0 and sigma = 1e-40 give identical results)."""
    for key in STANDALONE:
        comp = COMPONENTS[key]
        thr = comp.dens_threshold
        edge = 2.0 * thr if comp.spin_screen else thr
        below = edge * (1.0 - 1e-15) if not comp.spin_screen else edge
        above = edge if not comp.spin_screen else edge * (1.0 + 4e-16)
        rho = np.array([below, above, 1e-9, 1e-9])
        sigma = np.array([0.0, 0.0, 0.0, thr ** (8.0 / 3.0) * 0.9])
        ours = [np.asarray(a) for a in _component(key, jnp.asarray(rho), jnp.asarray(sigma))]
        ref = libxc_ref(comp.pyscf_name, rho, as_grad(sigma))
        assert ref[0][0] == 0.0 and ref[0][1] != 0.0, key  # the probe itself
        assert ours[0][0] == 0.0 and ours[1][0] == 0.0 and ours[2][0] == 0.0, key
        assert ours[0][1] != 0.0, key
        for a in ours:
            assert a[2] == a[3], key  # both sigmas are raised to the same floor
        crit, _ = parity(ours, ref, rho, sigma)
        assert max(crit) <= 1.0, (key, crit)


# ----------------------------------------------------------------------------- robustness
def _extreme_inputs(dtype):
    big = 1e30 if dtype == np.float32 else 1e200
    rho = np.array(
        [0.0, 1e-30, 1e-20, 1e-15, 2.0000001e-15, 1e-14, 1e-12, 1e-10, 1e-8, 1e-4, 1.0, 1e4, 1e6]
    )
    sigma = np.array([0.0, 1e-45, 1e-30, 1e-10, 1.0, 1e10, 1e20, big])
    r, s = np.meshgrid(rho, sigma)
    return jnp.asarray(r.ravel(), dtype), jnp.asarray(s.ravel(), dtype)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name", ["lda", "pbe", "b3lyp"])
def test_finite_values_and_gradients(name, dtype):
    """rho = 0 (sigma = 0 and > 0), tiny rho with huge sigma, float32: values and jax.grad
    of sum(rho exc) with respect to rho and sigma are finite, and that gradient is
    (vrho, vsigma) wherever rho is not tiny."""
    rho, sigma = _extreme_inputs(dtype)
    gga = get_functional(name).is_gga

    def energy(r, s):
        exc = eval_xc(name, r, s if gga else None)[0]
        return jnp.sum(r * exc)

    out = _xc(name, rho, sigma if gga else None)
    g_rho, g_sigma = jax.jit(jax.grad(energy, argnums=(0, 1)))(rho, sigma)
    for a in (*out, g_rho, g_sigma):
        assert a.dtype == dtype
        assert bool(jnp.all(jnp.isfinite(a))), (name, a)
    inside = np.asarray(rho) > 1e-6
    rtol = 1e-9 if dtype == np.float64 else 1e-3
    _, v_scale, s_scale = component_scale(name, rho, sigma)
    err = np.abs(np.asarray(g_rho, np.float64) - np.asarray(out[1], np.float64))
    assert np.all(err[inside] <= rtol * v_scale[inside])
    # (below libxc's sigma floor vsigma is the value at the floor, the gradient is zero)
    inside &= np.asarray(sigma) > 1e-20
    err = np.abs(np.asarray(g_sigma, np.float64) - np.asarray(out[2], np.float64))
    assert np.all(err[inside] <= rtol * s_scale[inside])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_second_derivatives_finite(dtype):
    """Differentiating vrho and vsigma again (what an autodiff fxc would do) stays finite at
    screened points and at ordinary densities."""
    r, s = np.meshgrid([0.0, 1e-30, 1e-3, 1.0, 100.0], [0.0, 1e-2, 1.0, 1e3])
    rho, sigma = jnp.asarray(r.ravel(), dtype), jnp.asarray(s.ravel(), dtype)

    def potential(r, s):
        _, vr, vs = eval_xc("b3lyp", r, s)
        return jnp.sum(vr) + jnp.sum(vs)

    for g in jax.jit(jax.grad(potential, argnums=(0, 1)))(rho, sigma):
        assert bool(jnp.all(jnp.isfinite(g)))


def test_hf_lda_sigma_and_nan():
    rho = jnp.array([0.1, 1.0])
    for a in eval_xc("hf", rho):
        np.testing.assert_array_equal(np.asarray(a), 0.0)
    exc, vrho, vsigma = eval_xc("lda", rho, None)
    np.testing.assert_array_equal(np.asarray(vsigma), 0.0)
    assert np.all(np.asarray(exc) < 0)
    with pytest.raises(ValueError, match="sigma"):
        eval_xc("pbe", rho)
    out = eval_xc("b3lyp", jnp.array([jnp.nan, 1.0]), jnp.array([0.1, jnp.nan]))
    for a in out:
        assert np.all(np.isnan(np.asarray(a)))


# ----------------------------------------------------------------------------- precision
@pytest.mark.parametrize("name", ["lda", "pbe", "pbe0", "b3lyp", "b3lyp5"])
def test_float32_close_to_float64(name):
    """float32 within 1e-5 of the float64 values (libxc's, which float64 qmgen matches to
    1e-10), relative to the sum of the absolute component contributions: the terms of
    B3LYP or PBE partly cancel at large s, where no float32 evaluation can do better
    relative to the small total."""
    rho, grad = random_points(2000, 2, log_rho=(-4.0, 3.0), log_s=(-3.0, 1.5))
    sigma = sigma_of(grad)
    f = get_functional(name)
    f64 = libxc_ref(f.pyscf_name, rho, grad)
    f32 = _xc(name, jnp.asarray(rho, jnp.float32), jnp.asarray(sigma, jnp.float32))
    scale = component_scale(name, rho, sigma)
    for a, b, sc in zip(f32, f64, scale, strict=True):
        assert a.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(a)))
        err = np.abs(np.asarray(a, np.float64) - b)
        assert np.all(err <= 1e-5 * sc), float(np.max(err / (sc + 1e-300)))
    # below the float32 density floor everything is screened
    out = eval_xc(name, jnp.asarray([F32_DENS_FLOOR * 0.5], jnp.float32), jnp.asarray([1e-3]))
    assert not np.any(np.asarray(out[0]))


# ----------------------------------------------------------------------------- jit, vmap
def test_jit_does_not_retrace_and_vmaps():
    traces = []

    def kernel(rho, sigma):
        traces.append(1)  # runs only while tracing
        return eval_xc("b3lyp5", rho, sigma)

    jitted = jax.jit(kernel)
    rho, grad = random_points(64, 3, log_rho=(-6.0, 2.0), log_s=(-3.0, 1.0))
    sigma = sigma_of(grad)
    first = jitted(jnp.asarray(rho), jnp.asarray(sigma))
    second = jitted(jnp.asarray(rho * 1.5), jnp.asarray(sigma * 0.5))
    assert len(traces) == 1
    assert not np.allclose(np.asarray(first[0]), np.asarray(second[0]))
    batched = jax.vmap(kernel)(jnp.asarray(rho.reshape(4, 16)), jnp.asarray(sigma.reshape(4, 16)))
    for a, b in zip(batched, first, strict=True):
        np.testing.assert_allclose(np.asarray(a).ravel(), np.asarray(b), rtol=1e-14)
