"""Long-range (erf-attenuated) ERIs, erf(omega r12)/r12, against PySCF's libcint.

The reference is ``with mol.with_range_coulomb(omega): mol.intor(...)``. omega = 0.3 is
wb97x's, 0.33 camb3lyp's; 0.4 is a third value. Water and ammonia are padded to one shell
structure per basis, and one jitted program evaluates all three omegas (omega is static:
each value is its own kernel). Marked slow: 6-31g* and def2-svp (12-27 s of XLA compile
per molecule on the 2-core CPU) and the 6-31g* derivative.
"""

from functools import cache

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from molecules import AMMONIA, WATER
from test_integrals import common_structure

import qmgen
from qmgen import Molecule
from qmgen.dft.basis import build_basis
from qmgen.dft.integrals import api
from qmgen.dft.integrals.eri import eri, eri_energy
from qmgen.dft.properties import _two_electron_density
from qmgen.dft.reference import pyscf_mol

OMEGAS = (0.3, 0.4, 0.33)
SLOW = pytest.mark.slow


@cache
def omega_results(basis: str, precision: str):
    """[(mol, layout, [eri per omega in OMEGAS], in PySCF order, float64)] for water, ammonia."""
    mols = [Molecule.from_xyz(x) for x in (WATER, AMMONIA)]
    structure = common_structure(mols, basis)
    dtype = jnp.float64 if precision == "float64" else jnp.float32
    program = jax.jit(lambda b, p: [eri(b, p, omega) for omega in OMEGAS])
    out = []
    for m in mols:
        b, layout = build_basis(m, basis, structure=structure)
        res = jax.device_get(program(b.astype(dtype), jnp.asarray(m.positions, dtype)))
        assert all(r.dtype == dtype for r in res)
        res = [layout.to_pyscf_order(np.asarray(r, np.float64), (0, 1, 2, 3)) for r in res]
        out.append((m, layout, res))
    return out


@cache
def pyscf_lr_eri(mol: Molecule, basis: str, omega: float, intor: str = "int2e"):
    pm = pyscf_mol(mol, basis)
    with pm.with_range_coulomb(omega):
        return pm.intor(intor)


@pytest.mark.parametrize(
    "basis", ["sto-3g", pytest.param("6-31g*", marks=SLOW), pytest.param("def2-svp", marks=SLOW)]
)
def test_long_range_eri_matches_libcint_float64(basis):
    for mol, _, res in omega_results(basis, "float64"):
        full = pyscf_mol(mol, basis).intor("int2e")
        for omega, got in zip(OMEGAS, res, strict=True):
            ref = pyscf_lr_eri(mol, basis, omega)
            assert np.max(np.abs(ref - full)) > 0.1  # the attenuation is not negligible
            err = np.max(np.abs(got - ref))
            assert err <= 1e-10, f"{mol.name} {basis} omega={omega}: {err:.2e}"


@pytest.mark.parametrize(
    "basis", ["sto-3g", pytest.param("6-31g*", marks=SLOW), pytest.param("def2-svp", marks=SLOW)]
)
def test_long_range_eri_float32(basis):
    """float32 within 1e-5 of the largest integral, as the full-Coulomb float32 ERIs."""
    for mol, _, res in omega_results(basis, "float32"):
        for omega, got in zip(OMEGAS, res, strict=True):
            ref = pyscf_lr_eri(mol, basis, omega)
            err = np.max(np.abs(got - ref))
            assert err <= 1e-5 * np.max(np.abs(ref)), f"{mol.name} {basis} omega={omega}: {err:.2e}"


def test_public_api_omega(water):
    """qmgen.integrals(omega=...): the long-range ERIs; omega=0 is the default program and
    exactly its values; the one-electron integrals do not depend on omega."""
    api._program.cache_clear()
    api.TRACE_COUNT["integrals"] = 0
    default = qmgen.integrals(water)
    zero = qmgen.integrals(water, omega=0.0)
    assert api.TRACE_COUNT["integrals"] == 1  # omega=0.0 reuses the default program
    for key in default:
        np.testing.assert_array_equal(zero[key], default[key])
    lr = qmgen.integrals(water, omega=0.3)
    assert api.TRACE_COUNT["integrals"] == 2
    assert np.max(np.abs(lr["eri"] - pyscf_lr_eri(water, "sto-3g", 0.3))) <= 1e-10
    for key in ("overlap", "kinetic", "nuclear", "dipole"):
        np.testing.assert_array_equal(lr[key], default[key])


def test_omega_zero_is_the_default_kernel(water):
    """eri(omega=0.0) traces the same program as eri() (same jaxpr) and gives its values."""
    b, _ = build_basis(water, "sto-3g")
    pos = jnp.asarray(water.positions)
    default = jax.make_jaxpr(lambda p: eri(b, p))(pos)
    assert str(jax.make_jaxpr(lambda p: eri(b, p, 0.0))(pos)) == str(default)
    assert str(jax.make_jaxpr(lambda p: eri(b, p, 0.3))(pos)) != str(default)


def test_bad_omega_is_refused(water):
    b, _ = build_basis(water, "sto-3g")
    pos = jnp.asarray(water.positions)
    for bad in (-0.1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="omega must be a finite float >= 0"):
            eri(b, pos, bad)
        with pytest.raises(ValueError, match="omega must be a finite float >= 0"):
            qmgen.integrals(water, omega=bad)
    with pytest.raises(TypeError, match="static Python float"):
        jax.jit(lambda p, w: eri(b, p, w))(pos, 0.3)


def _density(n: int, seed: int = 0) -> np.ndarray:
    """A symmetric positive semi-definite density-like matrix (internal AO order)."""
    c = np.random.default_rng(seed).normal(size=(n, max(1, n // 2))) / np.sqrt(n)
    return c @ c.T


@pytest.mark.parametrize("basis", ["sto-3g", pytest.param("6-31g*", marks=SLOW)])
def test_long_range_eri_derivative_matches_int2e_ip1(water, basis):
    """grad of E2 = sum (ij|kl)_omega Gamma_ijkl (Coulomb and exchange parts, as forces
    contract them) against PySCF's (d/dr i j|k l) under with_range_coulomb."""
    omega = 0.33
    b, layout = build_basis(water, basis)
    dm = _density(b.n_ao)
    gamma = _two_electron_density(jnp.asarray(dm), 1.0)
    pos = jnp.asarray(water.positions)
    grad = np.asarray(jax.jit(jax.grad(lambda p: eri_energy(b, p, gamma, omega)))(pos))
    assert np.all(np.isfinite(grad))
    d = layout.to_pyscf_order(dm, (0, 1))
    # the dense Gamma of _two_electron_density: 1/2 D_ij D_kl - 1/8 (D_ik D_jl + D_il D_jk)
    g = 0.5 * np.einsum("ij,kl->ijkl", d, d)
    g -= 0.125 * (np.einsum("ik,jl->ijkl", d, d) + np.einsum("il,jk->ijkl", d, d))
    ip1 = pyscf_lr_eri(water, basis, omega, "int2e_ip1")  # (3, n,n,n,n): (d/dr i j|k l)
    aoslice = pyscf_mol(water, basis).aoslice_by_atom()
    ref = np.zeros((water.n_atoms, 3))
    for atom in range(water.n_atoms):
        p0, p1 = aoslice[atom, 2:]
        # d/dA of (ij|kl) = -(sum over the four indices on A); Gamma has 8-fold symmetry
        ref[atom] = -4.0 * np.einsum("xijkl,ijkl->x", ip1[:, p0:p1], g[p0:p1])
    err = np.max(np.abs(grad - ref))
    assert err <= 1e-8, f"{basis}: {err:.2e}"


def test_coincident_centres_are_finite():
    """One atom: every quartet has P = Q (Boys argument 0) and a zero derivative."""
    neon = Molecule.from_symbols(["Ne"], [[0.0, 0.0, 0.0]])
    b, layout = build_basis(neon, "sto-3g")
    pos = jnp.asarray(neon.positions)
    for omega in (0.3, 5.0):
        values, jac = jax.jit(
            lambda p, w=omega: (eri(b, p, w), jax.jacfwd(lambda q: eri(b, q, w))(p))
        )(pos)
        assert np.all(np.isfinite(np.asarray(values))) and np.all(np.isfinite(np.asarray(jac)))
        assert np.max(np.abs(np.asarray(jac))) <= 1e-12
        got = layout.to_pyscf_order(np.asarray(values), (0, 1, 2, 3))
        assert np.max(np.abs(got - pyscf_lr_eri(neon, "sto-3g", omega))) <= 1e-10
