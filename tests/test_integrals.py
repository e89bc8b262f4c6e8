"""JAX integrals against PySCF's libcint (int1e_ovlp, int1e_kin, int1e_nuc, int1e_r, int2e).

Small molecules of one basis are padded to one common shell structure, so one compiled
program serves them all (this also exercises padding). Marked slow (each new shell
structure costs 20-60 s of XLA compile on a 2-core CPU, or a lot of memory): the
9-heavy-atom molecule in 6-31G* and def2-SVP (134-146 AOs, a 2.6 GB dense ERI tensor) and
the float32 runs of those two bases.
"""

from functools import cache

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from molecules import AMMONIA, FORMALDEHYDE, WATER

import qmgen
from qmgen import Molecule, MoleculeError
from qmgen.dft.basis import BasisError, build_basis
from qmgen.dft.batching import Bucket, merge_buckets
from qmgen.dft.integrals import api
from qmgen.dft.integrals.eri import eri
from qmgen.dft.integrals.one_electron import one_electron
from qmgen.dft.reference import pyscf_mol

SMALL = [WATER, AMMONIA, FORMALDEHYDE]
BASES = ["sto-3g", "6-31g*", "def2-svp"]


def common_structure(mols, basis):
    from qmgen.dft.basis import structure_of

    bucket = None
    for m in mols:
        b = Bucket(basis, structure_of(m.z, basis), m.n_atoms, 0)
        bucket = b if bucket is None else merge_buckets(bucket, b)
    return bucket.structure


@cache
def small_results(basis, precision):
    mols = [Molecule.from_xyz(x) for x in SMALL]
    structure = common_structure(mols, basis)
    dtype = jnp.float64 if precision == "float64" else jnp.float32
    out = []
    for m in mols:
        b, layout = build_basis(m, basis, structure=structure)
        res = api._program()(
            b.astype(dtype), jnp.asarray(m.positions, dtype), jnp.asarray(m.z, dtype)
        )
        res = jax.device_get(res)
        out.append((m, layout, res))
    return out


def pyscf_reference(mol, basis):
    pm = pyscf_mol(mol, basis)
    return dict(
        overlap=pm.intor("int1e_ovlp"),
        kinetic=pm.intor("int1e_kin"),
        nuclear=pm.intor("int1e_nuc"),
        dipole=pm.intor("int1e_r"),
        eri=pm.intor("int2e"),
    )


def reorder(layout, res):
    out = {
        k: layout.to_pyscf_order(np.asarray(res[k], np.float64), (0, 1))
        for k in ("overlap", "kinetic", "nuclear")
    }
    out["dipole"] = layout.to_pyscf_order(np.asarray(res["dipole"], np.float64), (1, 2))
    out["eri"] = layout.to_pyscf_order(np.asarray(res["eri"], np.float64), (0, 1, 2, 3))
    return out


# def2-svp (~30-40 s) is slow: 6-31g* keeps d shells in the default run
@pytest.mark.parametrize(
    "basis", [pytest.param(b, marks=pytest.mark.slow) if b == "def2-svp" else b for b in BASES]
)
def test_small_molecules_match_libcint_float64(basis):
    for mol, layout, res in small_results(basis, "float64"):
        ref = pyscf_reference(mol, basis)
        got = reorder(layout, res)
        for key in ref:
            err = np.max(np.abs(got[key] - ref[key]))
            assert err <= 1e-10, f"{mol.name} {basis} {key}: {err:.2e}"


@pytest.mark.parametrize(
    "basis",
    [
        "sto-3g",
        pytest.param("6-31g*", marks=pytest.mark.slow),
        pytest.param("def2-svp", marks=pytest.mark.slow),
    ],
)
def test_float32_within_1e5_of_float64(basis):
    for (_, layout, r64), (_, _, r32) in zip(
        small_results(basis, "float64"), small_results(basis, "float32"), strict=True
    ):
        a, b = reorder(layout, r64), reorder(layout, r32)
        for key in a:
            scale = np.max(np.abs(a[key]))
            assert np.max(np.abs(a[key] - b[key])) <= 1e-5 * scale, key


def test_public_api_nine_heavy_atoms_sto3g(nine_heavy):
    """qmgen.dft.integrals on a 9-heavy-atom RDKit conformer (58 AOs), both precisions."""
    got = qmgen.integrals(nine_heavy, "sto-3g")
    ref = pyscf_reference(nine_heavy, "sto-3g")
    for key in ref:
        assert np.max(np.abs(got[key] - ref[key])) <= 1e-10, key
    got32 = qmgen.integrals(nine_heavy, "sto-3g", precision="float32")
    for key in ref:
        assert got32[key].dtype == np.float32
        assert np.max(np.abs(got32[key] - got[key])) <= 1e-5 * np.max(np.abs(got[key])), key


@pytest.mark.slow
@pytest.mark.parametrize("basis", ["6-31g*", "def2-svp"])
def test_nine_heavy_atoms_larger_bases(nine_heavy, basis):
    got = qmgen.integrals(nine_heavy, basis)
    ref = pyscf_reference(nine_heavy, basis)
    for key in ref:
        assert np.max(np.abs(got[key] - ref[key])) <= 1e-10, key


def test_same_structure_other_elements_does_not_retrace(methane, ammonium):
    """CH4 and NH4+ share the STO-3G shell structure: one trace, two molecules."""
    api._program.cache_clear()
    api.TRACE_COUNT["integrals"] = 0
    a = qmgen.integrals(methane)
    b = qmgen.integrals(ammonium)
    assert api.TRACE_COUNT["integrals"] == 1
    assert not np.allclose(a["nuclear"], b["nuclear"])
    np.testing.assert_allclose(b["eri"], pyscf_reference(ammonium, "sto-3g")["eri"], atol=1e-10)


def test_vmap_over_a_batch_of_geometries(water):
    b, layout = build_basis(water, "sto-3g")
    shifts = jnp.asarray([[0.0, 0.0, 0.0], [0.1, -0.2, 0.05], [0.0, 0.3, -0.1]])
    pos = jnp.asarray(water.positions)[None] + jnp.stack([shifts * 0, shifts * 0, shifts], axis=1)
    batched = jax.jit(jax.vmap(lambda p: eri(b, p)))(pos)
    for k in range(pos.shape[0]):
        moved = Molecule(water.z, np.asarray(pos[k]))
        ref = pyscf_reference(moved, "sto-3g")["eri"]
        assert (
            np.max(np.abs(layout.to_pyscf_order(np.asarray(batched[k]), (0, 1, 2, 3)) - ref))
            < 1e-10
        )


@pytest.mark.parametrize("basis", ["sto-3g", pytest.param("6-31g*", marks=pytest.mark.slow)])
def test_overlap_derivative_matches_int1e_ipovlp(water, basis):
    b, layout = build_basis(water, basis)
    charges = jnp.asarray(water.z, float)
    jac = jax.jacfwd(lambda p: one_electron(b, p, charges)["overlap"])(
        jnp.asarray(water.positions)
    )  # (n, n, natom, 3)
    jac = layout.to_pyscf_order(np.asarray(jac), (0, 1))
    pm = pyscf_mol(water, basis)
    ip = pm.intor("int1e_ipovlp")  # <d/dr i | j> = -d/dA_i
    ref = np.zeros_like(jac)
    aoslice = pm.aoslice_by_atom()
    for atom in range(water.n_atoms):
        p0, p1 = aoslice[atom, 2:]
        for x in range(3):
            ref[p0:p1, :, atom, x] -= ip[x, p0:p1, :]
            ref[:, p0:p1, atom, x] -= ip[x, p0:p1, :].T
    assert np.max(np.abs(jac - ref)) < 1e-7


@pytest.mark.slow  # 55 s; the default suite checks forces end to end against PySCF
def test_eri_derivative_matches_int2e_ip1_and_finite_differences(water):
    b, layout = build_basis(water, "sto-3g")
    pos = jnp.asarray(water.positions)
    jac = jax.jacfwd(lambda p: eri(b, p))(pos)
    jac = layout.to_pyscf_order(np.asarray(jac), (0, 1, 2, 3))  # (n,n,n,n,natom,3)
    pm = pyscf_mol(water, "sto-3g")
    ip1 = pm.intor("int2e_ip1")  # (3, n,n,n,n): (d/dr i j|k l)
    aoslice = pm.aoslice_by_atom()
    ref = np.zeros_like(jac)
    for atom in range(water.n_atoms):
        p0, p1 = aoslice[atom, 2:]
        for x in range(3):
            g = ip1[x]
            ref[p0:p1, :, :, :, atom, x] -= g[p0:p1]
            ref[:, p0:p1, :, :, atom, x] -= g[p0:p1].transpose(1, 0, 2, 3)
            ref[:, :, p0:p1, :, atom, x] -= g[p0:p1].transpose(2, 3, 0, 1)
            ref[:, :, :, p0:p1, atom, x] -= g[p0:p1].transpose(2, 3, 1, 0)
    assert np.max(np.abs(jac - ref)) < 1e-7
    # central finite difference on one coordinate
    h = 1e-4
    step = jnp.zeros_like(pos).at[1, 2].set(h)
    fd = (eri(b, pos + step) - eri(b, pos - step)) / (2 * h)
    fd = layout.to_pyscf_order(np.asarray(fd), (0, 1, 2, 3))
    assert np.max(np.abs(fd - jac[..., 1, 2])) < 1e-7


def test_bad_input_gets_clear_errors():
    with pytest.raises(BasisError, match="no functions for element U"):
        qmgen.integrals(Molecule.from_symbols(["U", "H"], [[0, 0, 0], [0, 0, 2.0]]))
    with pytest.raises(BasisError, match="l=4"):
        qmgen.integrals(Molecule.from_symbols(["C", "H"], [[0, 0, 0], [0, 0, 1.1]]), "cc-pvqz")
    with pytest.raises(MoleculeError, match="expected a qmgen.Molecule"):
        qmgen.integrals("H2O")
    with pytest.raises(ValueError, match="unknown precision 'float16'"):
        qmgen.integrals(
            Molecule.from_symbols(["H", "H"], [[0, 0, 0], [0, 0, 0.74]]), precision="float16"
        )
