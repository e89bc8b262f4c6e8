"""Levels of theory beyond QM1B's: range-separated hybrids and D3(BJ) at split-valence and
def2 bases, against PySCF (conv_tol 1e-10 on both sides, grid level 1).

Issue 14's acceptance: energies within 1e-6 Ha and forces within 1e-5 Ha/Bohr of PySCF's RKS
(``qmgen.dft.reference``, PySCF's own functional strings, pyscf-dispersion for ``-d3bj``);
float32 mode within 1 meV in energy and gap. Every case compiles a program of its own at a
6-31G*/def2-SVP bucket (about 1-2 minutes on the 2-core CPU) and the 9-heavy-atom cases run
about a minute each, so the module is marked slow: ``pytest -m slow tests/test_levels.py``.
"""

from functools import cache

import numpy as np
import pytest
from molecules import SCF_LARGE, WATER

import qmgen
from qmgen import Molecule
from qmgen.chem.smiles import smiles_to_molecules
from qmgen.dft.reference import reference_labels
from qmgen.status import Status

pytestmark = pytest.mark.slow

CONV_TOL = 1e-10
GRID = 1
MEV = 1e-3 / 27.211386245988


@cache
def molecule(name: str) -> Molecule:
    if name == "water":
        return Molecule.from_xyz(WATER)
    return smiles_to_molecules(name)[0]


@cache
def ours(name, xc, basis, precision="float64", density_fit=False):
    mol = molecule(name)
    return qmgen.compute(
        [mol],
        basis=basis,
        xc=xc,
        grid_level=GRID,
        conv_tol=CONV_TOL,
        forces=True,
        precision=precision,
        density_fit=density_fit,
    )[0]


@cache
def pyscf(name, xc, basis, density_fit=None):
    return reference_labels(
        molecule(name),
        basis=basis,
        xc=xc,
        grid_level=GRID,
        conv_tol=CONV_TOL,
        forces=True,
        density_fit=density_fit,
    )


CASES = [
    ("water", xc, basis) for xc in ("wb97x", "camb3lyp") for basis in ("6-31g*", "def2-svp")
] + [("water", "b3lyp-d3bj", "6-31g*"), ("water", "wb97x-d3bj", "def2-svp")]
LARGE = [(smi, "wb97x", "6-31g*") for smi in SCF_LARGE] + [(SCF_LARGE[0], "camb3lyp", "def2-svp")]


@pytest.mark.parametrize("name,xc,basis", CASES + LARGE)
def test_energy_and_forces_match_pyscf(name, xc, basis):
    got, want = ours(name, xc, basis), pyscf(name, xc, basis)
    assert got["status"] == Status.OK, got["message"]
    assert want["converged"]
    assert abs(got["energy"] - want["energy"]) < 1e-6
    assert np.max(np.abs(got["forces"] - want["forces"])) < 1e-5


@pytest.mark.parametrize("name,xc,basis", [("water", "wb97x", "6-31g*"), LARGE[0]])
def test_float32_mode_within_one_mev(name, xc, basis):
    got, want = ours(name, xc, basis, "float32"), pyscf(name, xc, basis)
    assert got["status"] == Status.OK, got["message"]
    assert abs(got["energy"] - want["energy"]) < MEV
    assert abs(got["gap"] - want["gap"]) < MEV


DF_CASES = [("water", xc, basis) for xc in ("b3lyp", "wb97x") for basis in ("6-31g*", "def2-svp")]


@pytest.mark.parametrize(
    "name,xc,basis",
    DF_CASES + [(SCF_LARGE[0], "b3lyp", "def2-svp"), (SCF_LARGE[0], "wb97x", "6-31g*")],
)
def test_density_fit_matches_pyscf_df(name, xc, basis):
    """PySCF's default auxiliary basis on both sides: energy within 1e-8 Ha, forces
    (auxiliary-basis response included) within 1e-5 Ha/Bohr of PySCF's DF gradient."""
    got, want = ours(name, xc, basis, density_fit=True), pyscf(name, xc, basis, "default")
    assert got["status"] == Status.OK, got["message"]
    assert abs(got["energy"] - want["energy"]) < 1e-8
    assert np.max(np.abs(got["forces"] - want["forces"])) < 1e-5


@pytest.mark.parametrize("name,xc,basis", DF_CASES)
def test_density_fit_error_against_exact_eris(name, xc, basis):
    """The fitting error itself, as PySCF's: our DF-minus-exact equals PySCF's within
    1e-8 Ha. The issue asked for DF within 1e-5 Ha of exact "as PySCF's own DF", but
    PySCF's own is 2.0e-5 Ha (6-31G*, cc-pvdz-jkfit) and 1.02e-5 Ha (def2-SVP,
    def2-universal-jkfit) for water at grid level 1, so the bound here is 5e-5 Ha."""
    got = ours(name, xc, basis, density_fit=True)["energy"] - ours(name, xc, basis)["energy"]
    want = pyscf(name, xc, basis, "default")["energy"] - pyscf(name, xc, basis)["energy"]
    assert abs(got - want) < 1e-8
    assert abs(got) < 5e-5


def test_density_fit_float32_within_one_mev():
    got = ours("water", "b3lyp", "def2-svp", "float32", density_fit=True)
    want = pyscf("water", "b3lyp", "def2-svp", "default")
    assert got["status"] == Status.OK, got["message"]
    assert abs(got["energy"] - want["energy"]) < MEV
    assert abs(got["gap"] - want["gap"]) < MEV
