"""qmgen.dft.xc.eval_xc_spin (spin-polarised exchange-correlation) against PySCF's libxc
7.0.0 (``eval_xc(..., spin=1)``): values and derivatives of every functional and component,
libxc's polarised screening (fully polarised points, tiny spin densities, sigma floors and
the sigma_ab clamp), the closed-shell limit, float32, and finite values and gradients.

Parity per point: ``|ours - libxc| <= 1e-10 |libxc| + 1e-13 scale``, ``scale`` the natural
size of that output at that point: ``|eps_x^LDA(rho)|`` (0.74 rho^(1/3), rho the total
density) for exc and vrho, and ``rho |eps_x^LDA| / min_s(sigma_ss + rho_s^(8/3))`` for the
vsigmas. The floor matters where the exact value nearly cancels (PBE correlation at large
gradients, LYP at full polarisation, where it vanishes; the spin-summed exchange
derivatives of a channel libxc screens, which it returns as ~1e-16 of the other channel's).
"""

from __future__ import annotations

import ctypes

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from pyscf import dft, gto
from pyscf.dft import libxc

from qmgen.dft.xc import XC_NAMES, eval_xc, eval_xc_spin, get_functional
from qmgen.dft.xc.evaluate import F32_DENS_FLOOR
from qmgen.dft.xc.polarized import eval_component_spin
from qmgen.dft.xc.registry import COMPONENTS

RTOL, FLOOR = 1e-10, 1e-13
S_PER_X = 1.0 / (2.0 * (3.0 * np.pi**2) ** (1.0 / 3.0))  # s = S_PER_X |grad rho| / rho^(4/3)
N_PAD = 8192  # every call is padded to this length: one compilation per (kernel, dtype)
SEMILOCAL = [n for n in XC_NAMES if get_functional(n).components]

# every kernel once: slater, vwn5, pbe_x, pbe_c, b88, lyp, vwn_rpa, ityh, wB97X, wB97X-V
# (the parity tests run every name, which covers every component)
KERNEL_NAMES = ["lda", "pbe", "b3lyp", "camb3lyp", "wb97x", "wb97x-d3bj"]
# eval_xc_spin and eval_xc compile themselves (once per semilocal part / name, shape, dtype)
_component_jit = jax.jit(
    lambda key, rho, sigma: eval_component_spin(COMPONENTS[key], rho, sigma), static_argnums=0
)


def _padded(fn, key, rho, sigma, dtype=np.float64):
    """``fn(key, rho, sigma)`` on inputs padded to N_PAD points, as numpy arrays."""
    n = rho.shape[1]
    assert n <= N_PAD
    r = np.concatenate([rho, np.ones((2, N_PAD - n))], axis=1)
    s = np.concatenate([sigma, np.ones((3, N_PAD - n))], axis=1)
    out = fn(key, jnp.asarray(r, dtype), jnp.asarray(s, dtype))
    return [np.array(a[..., :n]) for a in out]


def ours(name, rho, sigma, dtype=np.float64):
    return _padded(eval_xc_spin, name, rho, sigma, dtype)


# ----------------------------------------------------------------------------- references
def sigmas(grad_a, grad_b):
    """(3, n) sigma_aa, sigma_ab, sigma_bb of (3, n) gradients."""
    return np.stack([(grad_a * grad_a).sum(0), (grad_a * grad_b).sum(0), (grad_b * grad_b).sum(0)])


def libxc_ref(code, rho, grad_a, grad_b, omega=None):
    """(exc (n,), vrho (2, n), vsigma (3, n)) of ``pyscf.dft.libxc.eval_xc(code, ...,
    spin=1, deriv=1)`` given spin densities (2, n) and their (3, n) gradients."""
    n = rho.shape[1]
    if libxc.xc_type(code) == "HF":
        return np.zeros(n), np.zeros((2, n)), np.zeros((3, n))
    if libxc.xc_type(code) == "LDA":
        exc, vxc = libxc.eval_xc(code, (rho[0], rho[1]), spin=1, deriv=1, omega=omega)[:2]
        return exc, vxc[0].T, np.zeros((3, n))
    a = np.vstack([rho[0:1], grad_a])
    b = np.vstack([rho[1:2], grad_b])
    exc, vxc = libxc.eval_xc(code, (a, b), spin=1, deriv=1, omega=omega)[:2]
    return exc, vxc[0].T, vxc[1].T


def libxc_direct(code, rho, sigma, omega=None):
    """The same from libxc's ``xc_gga_exc_vxc`` called on the (3, n) sigmas themselves,
    through PySCF's handle on libxc: sigma_ab need not come from real gradients (PySCF's
    eval_xc always forms it from gradients, so within Cauchy-Schwarz)."""
    lib = libxc._itrf
    cache = libxc.XCFunctionalCache(code, 1, omega=omega)  # owns the libxc objects
    n = rho.shape[1]
    r = np.ascontiguousarray(rho.T, dtype=np.float64)
    s = np.ascontiguousarray(sigma.T, dtype=np.float64)
    exc, vrho, vsigma = np.zeros(n), np.zeros((n, 2)), np.zeros((n, 3))
    ptr = lambda a: a.ctypes.data_as(ctypes.c_void_p)
    for obj, fac, fid in zip(cache.xc_objs, cache.facs, cache.fn_ids, strict=True):
        zk, vr, vs = np.zeros(n), np.zeros((n, 2)), np.zeros((n, 3))
        if libxc.is_lda(int(fid)):
            lib.xc_lda_exc_vxc(obj, ctypes.c_size_t(n), ptr(r), ptr(zk), ptr(vr))
        else:
            lib.xc_gga_exc_vxc(obj, ctypes.c_size_t(n), ptr(r), ptr(s), ptr(zk), ptr(vr), ptr(vs))
        exc += fac * zk
        vrho += fac * vr
        vsigma += fac * vs
    del cache
    return exc, vrho.T, vsigma.T


def scales(rho, sigma, ref):
    """Natural sizes of exc, vrho and vsigma at each point (see the module docstring)."""
    total = rho.sum(0) + 1e-300
    e = 0.75 * (3.0 / np.pi) ** (1.0 / 3.0) * np.cbrt(total)
    v = np.maximum(e, np.abs(ref[1]).max(axis=0))
    rs = np.maximum(rho, 1e-15)
    denom = np.minimum(sigma[0] + rs[0] ** (8.0 / 3.0), sigma[2] + rs[1] ** (8.0 / 3.0))
    return e, v, total * e / denom


def libxc_noise(ref_fn, rho, ref):
    """libxc's own rounding noise per output: the largest change of ``ref_fn(rho')`` from
    ``ref`` under relative changes of 2^-46 and 2^-44 (1e-14, 6e-14) of both spin densities
    (eight combinations; densities within a factor 10 of a threshold, where a change may
    cross it, are kept). Smooth values change by ~1e-13 relative; libxc's values where large
    terms nearly cancel change by far more (fully polarised wB97: the opposite-spin bracket
    times the fast-varying g_ab of the floored rho_b; LYP; the floored channel's vrho)."""
    near = np.zeros(rho.shape, bool)
    for thr in (1e-15, 1e-14, 1e-12):
        near |= (rho > 0.1 * thr) & (rho < 10.0 * thr)
    noise = [np.zeros_like(r) for r in ref]
    for d in (2.0**-46, 2.0**-44):
        for sa, sb in ((1, 1), (1, -1), (-1, 1), (-1, -1)):
            f = np.array([[1.0 + sa * d], [1.0 + sb * d]])
            other = ref_fn(np.where(near, rho, rho * f))
            for i in range(3):
                noise[i] = np.maximum(noise[i], np.abs(other[i] - ref[i]))
    return noise


def parity(got, ref, rho, sigma, noise=None, rtol=RTOL, floor=FLOOR):
    """Per output: max of |got - ref| / (rtol |ref| + floor scale + 4 noise) (<= 1 passes)
    and the max relative error where |ref| is above the floor and the noise."""
    crit, rel = [], []
    noise = noise or [0.0, 0.0, 0.0]
    for a, b, scale, nz in zip(got, ref, scales(rho, sigma, ref), noise, strict=True):
        diff = np.abs(np.asarray(a, np.float64) - b)
        crit.append(float(np.max(diff / (rtol * np.abs(b) + floor * scale + 4.0 * nz + 1e-300))))
        sig = np.abs(b) * rtol > floor * scale + 4.0 * nz
        rel.append(float(np.max(diff[sig] / np.abs(b[sig]))) if sig.any() else 0.0)
    return crit, rel


# ----------------------------------------------------------------------------- points
def _grad(rng, rho, s):
    """Random-direction gradients of (n,) densities with reduced gradient s."""
    v = rng.normal(size=(3, rho.size))
    return v / np.linalg.norm(v, axis=0) * (s * rho ** (4.0 / 3.0) / S_PER_X)


def random_points(n, seed, log_rho=(-6.0, 1.3)):
    """Realistic points: total density log-uniform, polarisation zeta uniform in [-1, 1]
    (a tenth unpolarised), reduced gradient per spin log-uniform in 1e-3..30 in random
    directions (so sigma_ab of both signs); a tenth with no gradient."""
    rng = np.random.default_rng(seed)
    total = 10.0 ** rng.uniform(*log_rho, n)
    zeta = rng.uniform(-1.0, 1.0, n)
    zeta[: n // 10] = 0.0
    rho = np.stack([total * (1.0 + zeta) / 2.0, total * (1.0 - zeta) / 2.0])
    ga = _grad(rng, rho[0], 10.0 ** rng.uniform(-3.0, 1.5, n))
    gb = _grad(rng, rho[1], 10.0 ** rng.uniform(-3.0, 1.5, n))
    ga[:, -n // 10 :] = gb[:, -n // 10 :] = 0.0
    return rho, ga, gb


def polarised_points(seed):
    """rho_b = 0 exactly (and the mirror image), rho_a from below every threshold to 1e3
    (libxc's GGA exchange clamps zeta above 2 dens_threshold / DBL_EPSILON = 9 (B88) or 90
    (ITYH, LYP) Bohr^-3); and nearly polarised points, rho_b / rho_a down to 1e-10."""
    rng = np.random.default_rng(seed)
    ra = 10.0 ** rng.uniform(-15.5, 3.0, 400)
    ga = _grad(rng, ra, 10.0 ** rng.uniform(-3.0, 1.0, 400))
    ga[:, :40] = 0.0
    zero = np.zeros_like(ra)
    rb = ra[:150] * 10.0 ** rng.uniform(-10.0, -3.0, 150)
    gb = _grad(rng, rb, 10.0 ** rng.uniform(-3.0, 1.0, 150))
    rho = np.hstack([np.stack([ra, zero]), np.stack([zero[:100], ra[:100]])])
    rho = np.hstack([rho, np.stack([ra[:150], rb])])
    grad_a = np.hstack([ga, np.zeros((3, 100)), ga[:, :150]])
    grad_b = np.hstack([np.zeros((3, 400)), ga[:, :100], gb])
    return rho, grad_a, grad_b


def threshold_points():
    """Both spin densities on both sides of every libxc threshold (thr: total density;
    per spin channel; the sigma floor thr^(8/3)), zero and 1e-30, with no gradient and with
    s = 1 in orthogonal directions."""
    vals = [0.0, 1e-30, 1e-16]
    for thr in (1e-15, 1e-14, 1e-12):
        for base in (thr, 2.0 * thr):
            vals += [base * (1.0 - 1e-15), base, base * (1.0 + 4e-16), base * 1.5]
    vals += [1e-9, 1e-6]
    v = np.array(vals)
    ra, rb = (a.ravel() for a in np.meshgrid(v, v))
    rho = np.hstack([np.stack([ra, rb])] * 2)
    n = ra.size
    ga = np.zeros((3, 2 * n))
    gb = np.zeros((3, 2 * n))
    ga[0, n:] = ra ** (4.0 / 3.0) / S_PER_X
    gb[1, n:] = rb ** (4.0 / 3.0) / S_PER_X
    return rho, ga, gb


@pytest.fixture(scope="module")
def radical_points():
    """A realistic open-shell density: OH radical, 6-31G, UKS minimal-AO guess, PySCF grid
    level 0 (rho_a from 1e-17 to ~300, polarised tails)."""
    mol = gto.M(atom="O 0 0 0; H 0 0 0.97", basis="6-31g", spin=1, verbose=0)
    grids = dft.gen_grid.Grids(mol)
    grids.level = 0
    grids.build()
    ao = dft.numint.eval_ao(mol, grids.coords, deriv=1)
    dm = dft.UKS(mol).get_init_guess()
    ra, rb = (dft.numint.eval_rho(mol, ao, d, xctype="GGA") for d in dm)
    return np.stack([ra[0], rb[0]]), ra[1:4], rb[1:4]


@pytest.fixture(scope="module")
def all_points(radical_points):
    sets = [random_points(1500, 0), polarised_points(1), threshold_points(), radical_points]
    rho = np.hstack([s[0] for s in sets])
    return rho, np.hstack([s[1] for s in sets]), np.hstack([s[2] for s in sets])


# ----------------------------------------------------------------------------- parity
def _wb97_empty_channel(name, rho):
    """(2, n) mask of the spin channels libxc's wB97 kernels floor at 1e-14 (rho_s <= 1e-14)
    at points it evaluates. There vrho_s and vsigma_ss are dominated by rounding, in libxc
    as here: the opposite-spin bracket rho eps_PW(rho_a, rho_b) - rho_a eps_PW(rho_a, 0)
    nearly cancels and multiplies dg_ab/drho_s ~ 1/rho_s = 1e14 (g_ab of x_s^2 =
    sigma_floor / rho_s^(8/3) = 1 at the floors): libxc's own vrho_s moves by ~1e-4 of
    vrho under 1e-14 relative changes of rho_a."""
    if not name.startswith("wb97"):
        return np.zeros(rho.shape, bool)
    return (rho <= 1e-14) & (rho.sum(0) >= 1e-14)


@pytest.mark.parametrize("name", XC_NAMES)
def test_functional_matches_libxc(name, all_points):
    rho, ga, gb = all_points
    sigma = sigmas(ga, gb)
    f = get_functional(name)
    got = ours(name, rho, sigma)
    ref = libxc_ref(f.pyscf_name, rho, ga, gb)
    noise = libxc_noise(lambda r: libxc_ref(f.pyscf_name, r, ga, gb), rho, ref)
    empty = _wb97_empty_channel(name, rho)
    if empty.any():  # see _wb97_empty_channel: loose check, then leave out
        vmax = np.abs(ref[1]).max(axis=0)
        err = np.abs(got[1] - ref[1]) / (vmax * (1.0 + rho.sum(0)) + 1e-300)
        assert np.max(err[empty]) < 3e-4, (name, np.max(err[empty]))
        for s, k in ((0, 0), (1, 2)):  # spin s: vrho[s] (checked above), vsigma[k]
            assert np.all(np.isfinite(got[2][k][empty[s]]))
            got[1][s][empty[s]] = ref[1][s][empty[s]]
            got[2][k][empty[s]] = ref[2][k][empty[s]]
    crit, rel = parity(got, ref, rho, sigma, noise)
    assert max(crit) <= 1.0, (name, crit, rel)
    # below the total-density threshold of every component: exactly zero
    low = rho.sum(0) < 1e-15
    for a in got:
        assert not np.any(a[..., low])
    # screened exactly where libxc screens (exc == 0 at tiny densities)
    tiny = rho.sum(0) < 1e-11
    assert np.array_equal(got[0][tiny] == 0.0, ref[0][tiny] == 0.0), name


@pytest.mark.parametrize("name", [n for n in SEMILOCAL if get_functional(n).is_gga])
def test_sigma_clamps_match_libxc(name):
    """sigma_ab outside |sigma_ab| <= (sigma_aa + sigma_bb)/2 (libxc clamps it), negative
    sigma_ab, sigma_aa/sigma_bb below the floor thr^(8/3): libxc's xc_gga_exc_vxc called on
    the sigmas directly."""
    rng = np.random.default_rng(5)
    n = 600
    total = 10.0 ** rng.uniform(-6.0, 1.0, n)
    zeta = rng.uniform(-1.0, 1.0, n)
    rho = np.stack([total * (1.0 + zeta) / 2.0, total * (1.0 - zeta) / 2.0])
    ss = (10.0 ** rng.uniform(-2.0, 1.0, (2, n)) * rho ** (4.0 / 3.0) / S_PER_X) ** 2
    ss[0, :50] = 0.0
    ss[1, 50:100] = 1e-45
    ab = 0.5 * (ss[0] + ss[1]) * rng.uniform(-3.0, 3.0, n)  # a third of them clamped
    sigma = np.stack([ss[0], ab, ss[1]])
    got = ours(name, rho, sigma)
    code = get_functional(name).pyscf_name
    ref = libxc_direct(code, rho, sigma)
    noise = libxc_noise(lambda r: libxc_direct(code, r, sigma), rho, ref)
    crit, rel = parity(got, ref, rho, sigma, noise)
    assert max(crit) <= 1.0, (name, crit, rel)


def test_polarised_screening_rules():
    """libxc's polarised rules, probed directly (B3LYP5's parts: Slater, B88, VWN5, LYP):

    * a point with rho_a + rho_b < dens_threshold is zero; at rho_a = thr, rho_b = 0 it is
      not, and rho_b is evaluated at thr (correlation: exc at (thr, 0) == at (thr, thr));
    * an exchange channel with rho_s <= thr contributes nothing, not even to its vrho;
    * fully polarised points with rho > 2 thr/DBL_EPSILON: GGA exchange's vrho_b is the
      density-factor part of vrho_a (libxc's zeta clamp); LDA exchange's stays zero.
    """
    thr = 1e-15
    rho = np.array(
        [
            [0.99e-15, thr, thr, 2e-15, 1.0, 1.0, 20.0, 20.0],
            [0.0, 0.0, thr, 0.0, thr, 1.0001e-15, 0, 0],
        ]
    )
    for key in ("slater", "vwn5"):
        got = _padded(_component_jit, key, rho, np.zeros((3, 8)))
        z = np.zeros((3, 8))
        ref = libxc_ref(COMPONENTS[key].pyscf_name, rho, z, z)
        assert got[0][0] == ref[0][0] == 0.0
        crit, _ = parity(got, ref, rho, np.zeros((3, 8)))
        assert max(crit) <= 1.0, (key, crit)
    vwn = _padded(_component_jit, "vwn5", rho, np.zeros((3, 8)))
    assert vwn[0][1] == vwn[0][2] != 0.0  # rho_b raised to thr
    slater = _padded(_component_jit, "slater", rho, np.zeros((3, 8)))
    assert slater[0][1] == slater[0][2] == 0.0  # both channels at thr: screened
    assert slater[0][3] != 0.0
    assert slater[1][1, 4] == 0.0 and slater[1][1, 5] < -1e-5  # rho_b = thr vs just above
    assert abs(slater[1][1, 6]) < 1e-14  # no zeta clamp in LDA exchange
    sigma = np.zeros((3, 8))
    sigma[0] = 0.3
    b88 = _padded(_component_jit, "b88", rho, sigma)
    ga = np.zeros((3, 8))
    ga[0] = np.sqrt(0.3)
    ref = libxc_ref("b88,", rho, ga, np.zeros((3, 8)))
    crit, _ = parity(b88, ref, rho, sigma)
    assert max(crit) <= 1.0, crit
    assert b88[1][1, 4] == 0.0 and b88[1][1, 6] < -3.0  # clamp at rho = 20 > 9
    # the alpha channel's density factor (2 - eps) rho / 2, derivative d/drho only
    cx = 0.75 * (6.0 / np.pi) ** (1.0 / 3.0)
    assert b88[1][1, 6] == pytest.approx(
        -4.0 / 3.0 * cx * (20.0 * (1 - 1.1e-16)) ** (1 / 3), rel=1e-4
    )


def test_fully_polarised_hydrogen_like():
    """One-electron density (H atom 1s, rho_b = 0 everywhere): exc, vrho_a and vsigma_aa of
    every functional to 1e-10 relative of libxc (the empty channel's outputs are part of
    test_functional_matches_libxc), and E_xc = sum_g w rho exc to 1e-12 Ha."""
    r = np.geomspace(1e-4, 40.0, 2000)
    w = 4.0 * np.pi * r**2 * np.gradient(r)
    ra = np.exp(-2.0 * r) / np.pi
    rho = np.stack([ra, np.zeros_like(ra)])
    ga = np.stack([-2.0 * ra, np.zeros_like(ra), np.zeros_like(ra)])
    gb = np.zeros_like(ga)
    sigma = sigmas(ga, gb)
    for name in SEMILOCAL:
        got = ours(name, rho, sigma)
        ref = libxc_ref(get_functional(name).pyscf_name, rho, ga, gb)
        e, v, vs = scales(rho, sigma, ref)
        for a, b, sc in (
            (got[0], ref[0], e),
            (got[1][0], ref[1][0], v),
            (got[2][0], ref[2][0], vs),
        ):
            err = np.abs(a - b) / (RTOL * np.abs(b) + FLOOR * sc + 1e-300)
            assert np.max(err) <= 1.0, (name, float(np.max(err)))
        e_ours, e_ref = np.sum(w * ra * got[0]), np.sum(w * ra * ref[0])
        assert abs(e_ours - e_ref) < 1e-12, (name, e_ours, e_ref)


# ----------------------------------------------------------------------------- closed shell
@pytest.mark.parametrize("name", KERNEL_NAMES)
def test_closed_shell_limit(name):
    """rho_a = rho_b = rho/2, all sigmas sigma/4: exc and vrho_a = vrho_b equal the
    closed-shell eval_xc's exc and vrho; E(rho, sigma) = E_spin(rho/2, rho/2, sigma/4 x 3)
    gives vsigma = (vsigma_aa + vsigma_ab + vsigma_bb)/4, and vsigma_aa = vsigma_bb."""
    rng = np.random.default_rng(7)
    n = 2000
    # far above every threshold and sigma floor: libxc raises each spin density to its
    # threshold and floors each sigma_ss (the closed shell: rho and sigma), which differ there
    rho = 10.0 ** rng.uniform(-8.0, 3.0, n)
    sigma = (10.0 ** rng.uniform(-3.0, 1.5, n) * rho ** (4.0 / 3.0) / S_PER_X) ** 2
    closed = [
        np.asarray(a)
        for a in eval_xc(name, jnp.asarray(np.concatenate([rho, np.ones(N_PAD - n)])),
                             jnp.asarray(np.concatenate([sigma, np.ones(N_PAD - n)])))
    ]  # fmt: skip
    closed = [a[:n] for a in closed]
    spin = ours(name, np.stack([rho / 2, rho / 2]), np.stack([sigma / 4] * 3))
    # 1e-13 of the natural sizes (module docstring) for terms that cancel (PBE x + c)
    e = 0.75 * np.cbrt(rho)
    v_sigma = rho * e / (sigma + rho ** (8.0 / 3.0))
    vs = (spin[2][0] + spin[2][1] + spin[2][2]) / 4.0
    for a, b, atol in (
        (spin[0], closed[0], e),
        (spin[1][0], closed[1], e),
        (spin[1][1], closed[1], e),
        (spin[2][0], spin[2][2], v_sigma),
        (vs, closed[2], v_sigma),
    ):
        err = np.abs(a - b) / (1e-12 * np.abs(b) + 1e-13 * atol)
        assert np.max(err) <= 1.0, (name, float(np.max(err)))


# ----------------------------------------------------------------------------- float32
@pytest.mark.parametrize("name", KERNEL_NAMES)
def test_float32_matches_libxc(name):
    """float32 within 1e-4 of libxc's float64 values, relative to the sum of the absolute
    component contributions (terms of B3LYP or PBE partly cancel) plus 0.1 of the natural
    size (wB97's terms cancel too), on points with both spin densities above the float32
    floor and rho_s / rho >= 1e-3; below the floor: zero."""
    rho, ga, gb = random_points(1500, 11, log_rho=(-5.0, 2.0))
    keep = rho.min(0) >= 1e-3 * rho.sum(0)
    rho, ga, gb = rho[:, keep], ga[:, keep], gb[:, keep]
    sigma = sigmas(ga, gb)
    f = get_functional(name)
    got = ours(name, rho, sigma, np.float32)
    ref = libxc_ref(f.pyscf_name, rho, ga, gb)
    # wB97's parts are no libxc functionals on their own: 0.1 of the natural sizes instead
    scale = [np.abs(r) + 0.1 * n for r, n in zip(ref, scales(rho, sigma, ref), strict=True)]
    for coef, key in f.components:
        comp = COMPONENTS[key]
        if comp.pyscf_name is not None:
            part = libxc_ref(comp.pyscf_name, rho, ga, gb, comp.omega or None)
            for i in range(3):
                scale[i] += np.abs(coef * part[i])
    for a, b, sc in zip(got, ref, scale, strict=True):
        assert a.dtype == np.float32 and np.all(np.isfinite(a))
        err = np.abs(a.astype(np.float64) - b)
        assert np.all(err <= 1e-4 * sc + 1e-30), (name, float(np.max(err / (sc + 1e-300))))
    tiny = np.array([[F32_DENS_FLOOR * 0.4, 0.0], [F32_DENS_FLOOR * 0.4, 0.0]])
    out = ours(name, tiny, np.full((3, 2), 1e-3), np.float32)
    assert not np.any(out[0])


# ----------------------------------------------------------------------------- robustness
def _extreme_inputs():
    vals = [0.0, 1e-30, 1e-15, 2.0000001e-15, 1e-12, 1e-10, 1e-6, 1.0, 100.0, 1e4]
    ra, rb = (a.ravel() for a in np.meshgrid(vals, vals))
    n = ra.size
    rho = np.hstack([np.stack([ra, rb])] * 4)
    sig = []
    for s in (0.0, 1e-45, 1.0, 1e20):  # sigma_ab < 0: inside the clamp, then outside
        sig.append(np.stack([np.full(n, s), -np.full(n, s) * 0.5, np.full(n, s * 0.5)]))
        sig.append(np.stack([np.full(n, s), -np.full(n, s), np.full(n, s * 0.5)]))
    return np.hstack([rho, rho]), np.hstack(sig)


@pytest.mark.parametrize(
    ("name", "dtype"),
    [("b3lyp", np.float64)] + [(n, np.float32) for n in ("b3lyp", "pbe", "wb97x", "camb3lyp")],
)  # every kernel in float32 (the tighter case: camb3lyp has ITYH and VWN5)
def test_finite_values_and_gradients(name, dtype):
    """Zero density (one or both spins), rho_b = 0 exactly, tiny densities with huge sigma,
    negative sigma_ab (also beyond libxc's clamp): values and jax.grad of sum(rho exc) are
    finite; that gradient is vrho where the densities are ordinary, and vsigma there where
    sigma_ab is not clamped (through the clamp jax.grad follows the chain rule, libxc's
    vsigma does not)."""
    rho, sigma = _extreme_inputs()
    gga = get_functional(name).is_gga

    def energy(r, s):
        exc = eval_xc_spin(name, r, s if gga else None)[0]
        return jnp.sum((r[0] + r[1]) * exc)

    r, s = jnp.asarray(rho, dtype), jnp.asarray(sigma, dtype)
    out = eval_xc_spin(name, r, s if gga else None)
    g_rho, g_sigma = jax.jit(jax.grad(energy, argnums=(0, 1)))(r, s)
    for a in (*out, g_rho, g_sigma):
        assert a.dtype == dtype and bool(jnp.all(jnp.isfinite(a))), name
    inside = (rho.min(0) > 1e-6) & (sigma[0] < 1e10) & (sigma[0] > 1e-20)
    unclamped = inside & (np.abs(sigma[1]) <= 0.5 * (sigma[0] + sigma[2]))
    rtol = 1e-9 if dtype == np.float64 else 2e-3
    for g, v, m in ((g_rho, out[1], inside), (g_sigma, out[2], unclamped)):
        g, v = np.asarray(g, np.float64)[:, m], np.asarray(v, np.float64)[:, m]
        np.testing.assert_allclose(g, v, rtol=rtol, atol=rtol * np.abs(v).max())


def test_nan_and_argument_checks():
    rho = jnp.array([[jnp.nan, 0.1, 0.1], [0.1, 0.1, 0.1]])
    sigma = jnp.array([[0.1, jnp.nan, 0.1], [0.0, 0.0, 0.0], [0.1, 0.1, 0.1]])
    exc, vrho, vsigma = eval_xc_spin("b3lyp", rho, sigma)
    assert np.all(np.isnan(np.asarray(exc)[:2])) and np.isfinite(np.asarray(exc)[2])
    assert np.all(np.isnan(np.asarray(vrho)[:, :2])) and np.all(np.isnan(np.asarray(vsigma)[:, :2]))
    for a in eval_xc_spin("hf", rho[:, 1:]):
        assert not np.any(np.asarray(a))
    exc, vrho, vsigma = eval_xc_spin("lda", rho[:, 1:])
    assert exc.shape == (2,) and vrho.shape == (2, 2) and vsigma.shape == (3, 2)
    assert not np.any(np.asarray(vsigma))
    with pytest.raises(ValueError, match="sigma"):
        eval_xc_spin("pbe", rho)
    with pytest.raises(ValueError, match="shape"):
        eval_xc_spin("lda", rho[0])
    with pytest.raises(ValueError, match="shape"):
        eval_xc_spin("pbe", rho, sigma[:2])


def test_jit_once_per_shape_and_dtype():
    traces = []

    def kernel(rho, sigma):
        traces.append(1)  # runs only while tracing
        return eval_xc_spin("b3lyp5", rho, sigma)

    jitted = jax.jit(kernel)
    rho, ga, gb = random_points(64, 3)
    sigma = sigmas(ga, gb)
    first = jitted(jnp.asarray(rho), jnp.asarray(sigma))
    second = jitted(jnp.asarray(rho * 1.5), jnp.asarray(sigma * 0.5))
    assert len(traces) == 1
    assert not np.allclose(np.asarray(first[0]), np.asarray(second[0]))
