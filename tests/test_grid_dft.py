"""Grids (Becke weights in JAX) and qmgen.dft.nr_rks against PySCF's Grids and NumInt."""

from functools import cache

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from molecules import NINE_HEAVY, WATER

import qmgen
from qmgen import Molecule
from qmgen.dft.grid import GridError, build_grid, place_grid
from qmgen.dft.reference import pyscf_mol
from qmgen.dft.xc import get_functional

XCS = ["lda", "pbe", "b3lyp", "b3lyp5"]


@cache
def molecule(name):
    if name == "water":
        return Molecule.from_xyz(WATER)
    from qmgen.chem import smiles_to_molecules

    return smiles_to_molecules(NINE_HEAVY, seed=0)[0]


@cache
def pyscf_grid(name, level):
    from pyscf import dft
    from pyscf.dft import gen_grid

    pm = pyscf_mol(molecule(name))
    g = dft.Grids(pm)
    g.level = level
    tab = g.gen_atomic_grids(pm, g.atom_grid, g.radi_method, g.level, g.prune)
    coords, weights = gen_grid.get_partition(
        pm, tab, g.radii_adjust, g.atomic_radii, g.becke_scheme
    )
    atom = np.repeat(np.arange(pm.natm), [tab[pm.atom_symbol(i)][1].size for i in range(pm.natm)])
    return coords, weights, atom


@pytest.mark.parametrize("name", ["water", "nine"])
@pytest.mark.parametrize("level", [0, 3])
def test_grid_weights_match_pyscf(name, level):
    mol = molecule(name)
    grid = build_grid(mol, level, n_points=None)
    coords, weights = jax.jit(place_grid)(grid, jnp.asarray(mol.positions), jnp.asarray(mol.z))
    ref_c, ref_w, ref_atom = pyscf_grid(name, level)
    np.testing.assert_allclose(np.asarray(coords), ref_c, atol=1e-12)
    assert np.max(np.abs(np.asarray(weights) - ref_w)) < 1e-10 * np.max(ref_w)
    assert float(weights.sum()) == pytest.approx(ref_w.sum(), rel=1e-12)
    per_atom = np.bincount(np.asarray(grid.owner), np.asarray(weights))
    np.testing.assert_allclose(per_atom, np.bincount(ref_atom, ref_w), rtol=1e-12)


def test_padded_grid_points_have_zero_weight(water):
    grid = build_grid(water, 0, n_points=3000)
    _, w = place_grid(grid, jnp.asarray(water.positions), jnp.asarray(water.z))
    n = pyscf_grid("water", 0)[1].size
    assert np.all(np.asarray(w)[n:] == 0)
    assert float(w.sum()) == pytest.approx(pyscf_grid("water", 0)[1].sum(), rel=1e-12)


@cache
def density(name):
    from pyscf import scf

    mf = scf.RHF(pyscf_mol(molecule(name)))
    mf.conv_tol = 1e-8
    mf.kernel()
    return mf.make_rdm1()


def pyscf_nr_rks(name, level, xc):
    from pyscf import dft

    pm = pyscf_mol(molecule(name))
    g = dft.Grids(pm)
    g.level = level
    g.build()
    return dft.numint.NumInt().nr_rks(pm, g, get_functional(xc).pyscf_name, density(name))


@pytest.mark.parametrize("name", ["water", "nine"])
@pytest.mark.parametrize("level", [0, 3])
@pytest.mark.parametrize("xc", XCS)
def test_nr_rks_matches_pyscf(name, level, xc):
    n_ref, e_ref, v_ref = pyscf_nr_rks(name, level, xc)
    n, e, v = qmgen.dft.nr_rks(molecule(name), density(name), xc=xc, grid_level=level)
    assert abs(n - n_ref) < 1e-9
    assert abs(e - e_ref) < 1e-9
    assert np.max(np.abs(v - v_ref)) < 1e-8


@pytest.mark.parametrize("xc", ["lda", "b3lyp5"])
def test_nr_rks_float32_close_to_float64(xc):
    n64, e64, v64 = qmgen.dft.nr_rks(molecule("nine"), density("nine"), xc=xc, grid_level=0)
    n32, e32, v32 = qmgen.dft.nr_rks(
        molecule("nine"), density("nine"), xc=xc, grid_level=0, precision="float32"
    )
    # measured: |dN| ~7e-6, |dExc| ~1e-5 Ha, |dVxc| ~1e-6 (benchmarks/README.md)
    assert abs(n32 - n64) < 1e-4 and abs(e32 - e64) < 1e-4 and np.max(np.abs(v32 - v64)) < 1e-5


def test_unknown_functional_and_level_are_refused(water):
    dm = np.eye(7)
    with pytest.raises(ValueError, match="b3lyp5"):
        qmgen.dft.nr_rks(water, dm, xc="b3lyp-x")
    with pytest.raises(GridError, match="supported levels: 0-9"):
        qmgen.dft.nr_rks(water, dm, grid_level=12)
    with pytest.raises(ValueError, match="dm must have shape"):
        qmgen.dft.nr_rks(water, np.eye(3))


def test_zero_density_gives_zero_not_nan(water):
    n, e, v = qmgen.dft.nr_rks(water, np.zeros((7, 7)), xc="b3lyp5")
    assert n == 0.0 and e == 0.0 and np.all(v == 0.0)
