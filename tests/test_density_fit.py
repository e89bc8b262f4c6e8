"""Density fitting against PySCF: three- and two-centre integrals (int3c2e, int2c2e, with
and without the long-range operator), and the density-fitted SCF energy and forces of
``mf.density_fit()`` with PySCF's default auxiliary basis. Larger bases and
range-separated hybrids with density fitting are in test_levels.py (slow)."""

from functools import cache

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import qmgen
from qmgen.dft import density_fit, engine
from qmgen.dft.basis import aux_basis_spec, build_basis
from qmgen.dft.integrals.three_center import int2c, int3c
from qmgen.dft.reference import pyscf_mol, reference_labels
from qmgen.pipeline.options import GenerateOptions
from qmgen.status import Status


@cache
def _pyscf_df_ints(mol, basis, omega):
    from pyscf import df

    pm = pyscf_mol(mol, basis)
    aux = df.addons.make_auxmol(pm, df.addons.make_auxbasis(pm))
    with pm.with_range_coulomb(omega), aux.with_range_coulomb(omega):
        return df.incore.aux_e2(pm, aux, "int3c2e"), aux.intor("int2c2e"), aux.nao


@pytest.mark.parametrize("basis", ["6-31g*", "def2-svp", "sto-3g"])
def test_default_auxbasis_is_pyscfs(basis):
    from pyscf import df, gto

    pm = gto.M(atom="H 0 0 0; C 0 0 2; N 0 2 0; O 2 0 0; F 2 2 2", basis=basis, spin=1, verbose=0)
    want = df.addons.make_auxbasis(pm)
    for symbol, z in (("H", 1), ("C", 6), ("N", 7), ("O", 8), ("F", 9)):
        label, spec = aux_basis_spec(z, basis)
        assert spec == want[symbol]
        assert label == (spec if isinstance(spec, str) else f"etb:{basis}")
    assert aux_basis_spec(8, "6-31g*", "def2-universal-jkfit")[0] == "def2-universal-jkfit"


def test_three_and_two_centre_integrals_match_pyscf(water):
    basis, layout = build_basis(water, "sto-3g")
    aux, aux_layout = build_basis(water, "sto-3g", aux="default")  # has g shells on O

    @jax.jit
    def ints(pos):
        return [(int3c(basis, aux, pos, w), int2c(aux, pos, w)) for w in (0.0, 0.3)]

    for (j3, j2), omega in zip(ints(jnp.asarray(water.positions)), (0.0, 0.3), strict=True):
        ref3, ref2, naux = _pyscf_df_ints(water, "sto-3g", omega)
        assert aux_layout.n_ao == naux
        got3 = aux_layout.to_pyscf_order(layout.to_pyscf_order(np.asarray(j3), (0, 1)), (2,))
        got2 = aux_layout.to_pyscf_order(np.asarray(j2), (0, 1))
        assert np.max(np.abs(got3 - ref3)) < 1e-11
        assert np.max(np.abs(got2 - ref2)) < 1e-11
        assert np.max(np.abs(ref3)) > 1.0  # a real comparison, not of zeros


def test_singular_long_range_metric_is_factored_as_pyscf(water):
    """The long-range metric of water's fitting basis at omega = 0.2 is singular (Cholesky
    fails in PySCF); PySCF's incore.cholesky_eri then keeps eigenvalues above 1e-7. The
    fitted integrals (ij|kl) = (T A)^T (T A) are PySCF's, and their derivative is PySCF's
    DF-gradient convention, -A^T V+ dV V+ A with V+ from its eigen-solver (the
    pseudo-inverse itself is ill-conditioned; the fitted integrals are not). A regular
    (positive definite) matrix keeps the Cholesky factor, whose derivative is that of the
    inverse."""
    import scipy.linalg
    from pyscf.df import incore

    j3, j2_lr, _ = _pyscf_df_ints(water, "sto-3g", 0.2)
    with pytest.raises(scipy.linalg.LinAlgError):
        scipy.linalg.cholesky(j2_lr, lower=True)
    low = incore._eig_decompose(pyscf_mol(water, "sto-3g"), j2_lr)
    assert low.shape[0] < j2_lr.shape[0]  # PySCF dropped functions
    a = j3.reshape(-1, j3.shape[-1]).T  # (n_aux, n^2)
    dj2 = np.random.default_rng(0).normal(size=j2_lr.shape)
    dj2 = dj2 + dj2.T
    t, dt = jax.jvp(density_fit.metric_factor, (jnp.asarray(j2_lr),), (jnp.asarray(dj2),))
    t, dt = np.asarray(t), np.asarray(dt)
    want = (low @ a).T @ (low @ a)
    assert np.max(np.abs((t @ a).T @ (t @ a) - want)) < 1e-12 * np.abs(want).max()
    pinv = low.T @ low
    want = -(a.T @ pinv) @ dj2 @ (pinv @ a)
    got = (dt @ a).T @ (t @ a) + (t @ a).T @ (dt @ a)
    assert np.max(np.abs(got - want)) < 1e-6 * np.abs(want).max()

    q = np.random.default_rng(1).normal(size=j2_lr.shape)
    j2 = q @ q.T + len(q) * np.eye(len(q))  # well conditioned, so differences are exact
    t, dt = jax.jvp(density_fit.metric_factor, (jnp.asarray(j2),), (jnp.asarray(dj2),))
    want = np.linalg.inv(scipy.linalg.cholesky(j2, lower=True))
    assert np.max(np.abs(np.asarray(t) - want)) < 1e-10 * np.abs(want).max()
    step = 1e-6  # the derivative of the inverse, by central differences
    fd = (np.linalg.inv(j2 + step * dj2) - np.linalg.inv(j2 - step * dj2)) / (2 * step)
    got = np.asarray(dt).T @ np.asarray(t) + np.asarray(t).T @ np.asarray(dt)
    assert np.max(np.abs(got - fd)) < 1e-6 * np.abs(fd).max()


def test_range_separated_density_fit_matches_pyscf_df():
    """wB97X with density fitting where the long-range metric is singular (formaldehyde:
    PySCF's Cholesky fails and it fits over the eigenvectors it keeps): PySCF's DF energy."""
    import scipy.linalg

    mol = qmgen.Molecule(
        z=np.array([6, 8, 1, 1]),
        positions=np.array([[0, 0, 0], [0, 0, 2.28], [1.77, 0, -1.02], [-1.77, 0, -1.02]]),
        charge=0,
    )
    _, j2_lr, _ = _pyscf_df_ints(mol, "sto-3g", 0.3)  # wB97X's omega
    with pytest.raises(scipy.linalg.LinAlgError):
        scipy.linalg.cholesky(j2_lr, lower=True)
    rec = qmgen.compute([mol], xc="wb97x", conv_tol=1e-11, density_fit=True)[0]
    assert rec["status"] == Status.OK, rec["message"]
    ref = reference_labels(mol, xc="wb97x", conv_tol=1e-11, density_fit="default")
    assert abs(rec["energy"] - ref["energy"]) < 1e-8


def _df_case(water, forces):
    moved = qmgen.Molecule(z=water.z, positions=water.positions * 1.02, charge=0)
    before = dict(engine.TRACE_COUNT)
    got = qmgen.compute([water, moved], xc="b3lyp", forces=forces, conv_tol=1e-11, density_fit=True)
    traced = {k: v - before.get(k, 0) for k, v in engine.TRACE_COUNT.items()}
    assert sorted(v for v in traced.values() if v) == [1]  # one program for both geometries
    for mol, rec in zip((water, moved), got, strict=True):
        assert rec["status"] == Status.OK, rec["message"]
        ref = reference_labels(
            mol, xc="b3lyp", forces=forces, conv_tol=1e-11, density_fit="default"
        )
        assert abs(rec["energy"] - ref["energy"]) < 1e-8
        assert abs(rec["gap"] - ref["gap"]) < 1e-7
        if forces:
            assert np.max(np.abs(rec["forces"] - ref["forces"])) < 1e-6
    return got


def test_density_fitted_scf_matches_pyscf_df(water):
    got = _df_case(water, forces=False)
    exact = reference_labels(water, xc="b3lyp", conv_tol=1e-11)
    # STO-3G is not what the fitting basis was made for: DF moves the energy by ~4e-4 Ha,
    # in PySCF as here, so the two methods are different programs, not the same numbers
    assert abs(got[0]["energy"] - exact["energy"]) > 1e-5


@pytest.mark.slow  # the forces program of a DF bucket compiles for minutes on 2 cores
def test_density_fitted_forces_match_pyscf_df(water):
    _df_case(water, forces=True)


def test_unknown_auxiliary_basis_is_named(water):
    rec = qmgen.compute([water], density_fit="no-such-fit")[0]
    assert rec["status"] == Status.UNSUPPORTED_ELEMENT
    assert "no-such-fit" in rec["message"]
    with pytest.raises(ValueError, match="no-such-fit"):
        GenerateOptions(density_fit="no-such-fit")
    with pytest.raises(ValueError, match="density_fit"):
        qmgen.compute([water], density_fit=3)


def test_density_fit_options_resolve_pyscf_default():
    opts = GenerateOptions(basis="def2-svp", density_fit="DEFAULT", elements="H,O")
    assert opts.density_fit == "default"
    assert opts.auxbasis_labels() == {"H": "def2-svp-jkfit", "O": "def2-svp-jkfit"}
    assert "density_fit" not in GenerateOptions().to_dict()  # exact runs hash as before
    assert opts.compute_kwargs()["density_fit"] == "default"


@pytest.mark.slow  # a DF bucket of its own: a few minutes of compile on 2 cores
def test_generate_and_validate_with_density_fit(tmp_path):
    import json

    from qmgen.cli import main as cli
    from qmgen.pipeline.validate import validate_dataset

    (tmp_path / "in.smi").write_text("O\nCO\n")
    out = tmp_path / "ds"
    args = ["generate", str(tmp_path / "in.smi"), "--out", str(out), "--workers", "1"]
    assert cli(args + ["--xc", "b3lyp", "--density-fit", "--no-progress", "--quiet"]) == 0
    ds = qmgen.open_dataset(out)
    assert ds.attrs["density_fit"] == "default"
    labels = ds.attrs["auxbasis"]
    labels = json.loads(labels) if isinstance(labels, str) else labels
    assert labels["O"] == "def2-svp-jkfit"  # PySCF's choice for STO-3G
    report = validate_dataset(out, sample=2)  # PySCF's DF as the reference
    assert report["ok"] and report["n"] == 2
    assert report["labels"]["energy"]["max"] < 1e-7
