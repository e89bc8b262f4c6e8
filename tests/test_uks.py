"""Unrestricted Kohn–Sham and Hartree–Fock (issue 15) against PySCF UKS/UHF, conv_tol 1e-10.

Tolerances from the issue: energy 1e-6 Ha, forces 1e-5 Ha/Bohr, <S^2> 1e-5; orbital
energies, dipole and Mulliken (spin) populations as the closed-shell tests (test_scf.py).
Radicals that share a compiled program are computed in one call (``min_bucket_size``).
"""

from functools import cache

import numpy as np
import pytest
from molecules import METHYL, NINE_HEAVY, WATER

import qmgen
from qmgen import Molecule
from qmgen.dft.reference import reference_labels
from qmgen.molecule import MoleculeError
from qmgen.status import Status
from qmgen.units import HARTREE_TO_EV

TOL = dict(
    energy=1e-6,
    s2=1e-5,
    forces=1e-5,
    homo=1e-5,
    lumo=1e-5,
    mo_energy=1e-5,
    dipole=1e-4,
    charges=1e-4,
    spin_populations=1e-4,
)

# Angstrom geometries near their minima
NO2 = """3
nitrogen dioxide
N   0.0000  0.0000  0.3300
O   0.0000  1.0990 -0.1460
O   0.0000 -1.0990 -0.1460
"""
O2 = """2
triplet oxygen
O   0.0000  0.0000  0.0000
O   0.0000  0.0000  1.2100
"""


@cache
def radicals(name):
    if name == "small":
        return (
            Molecule.from_xyz(METHYL, spin=1),
            Molecule.from_xyz(NO2, spin=1),
            Molecule.from_xyz(O2, spin=2),
        )
    from qmgen.chem import smiles_to_molecules

    allyl = smiles_to_molecules("[CH2]C=C", seed=0, open_shell=True)[0]
    assert allyl.spin == 1  # RDKit's radical electron, read as 2S
    cation = smiles_to_molecules(NINE_HEAVY, seed=0)[0]
    return (
        allyl,
        Molecule(cation.z, cation.positions, charge=1, spin=1, name="cation"),
    )


@cache
def run(name, conv_tol=1e-10, **kw):
    mols = list(radicals(name))
    return qmgen.compute(mols, min_bucket_size=len(mols), conv_tol=conv_tol, **kw)


@cache
def ref(name, k, **kw):
    return reference_labels(radicals(name)[k], **kw)


def assert_close(got, want, keys):
    assert got["status"] == Status.OK and got["converged"], got["message"]
    assert got["method"] == "UKS"
    for key in keys:
        err = np.max(np.abs(np.asarray(got[key]) - np.asarray(want[key])))
        assert err <= TOL[key], f"{key}: {err:.2e} > {TOL[key]:.0e}"


ALL = ("energy", "s2", "homo", "lumo", "mo_energy", "dipole", "charges", "spin_populations")


def test_uhf_methyl_radical_matches_pyscf():
    got = run("small", xc="hf", forces=True)[0]
    want = ref("small", 0, xc="hf", forces=True)
    assert_close(got, want, ALL + ("forces",))
    assert 0.75 < got["s2"] < 0.77  # a doublet, slightly spin-contaminated


@pytest.mark.parametrize("k", range(3), ids=["methyl", "no2", "o2-triplet"])
def test_b3lyp5_radicals_match_pyscf_uks(k):
    got = run("small", xc="b3lyp5", forces=True)[k]
    want = ref("small", k, xc="b3lyp5", forces=True)
    assert_close(got, want, ALL + ("forces",))


def test_triplet_o2_has_two_unpaired_electrons():
    got = run("small", xc="b3lyp5", forces=True)[2]
    assert abs(got["s2"] - 2.0) < 0.02
    assert np.allclose(got["spin_populations"], [1.0, 1.0], atol=1e-8)
    assert got["mo_energy"].shape == (2, 10)


def test_float32_mode_is_within_one_mev_of_pyscf():
    got = run("small", xc="b3lyp5", precision="float32")
    for k, rec in enumerate(got):
        want = ref("small", k, xc="b3lyp5")
        assert rec["status"] == Status.OK, rec["message"]
        assert abs(rec["energy"] - want["energy"]) * HARTREE_TO_EV < 1e-3
        assert abs(rec["s2"] - want["s2"]) < 1e-5


def test_closed_shell_through_uks_gives_the_rks_energy():
    water = Molecule.from_xyz(WATER)
    rks, uks = (
        qmgen.compute([water], xc="b3lyp5", conv_tol=1e-10, unrestricted=u)[0]
        for u in (False, True)
    )
    assert rks["method"] == "RKS" and uks["method"] == "UKS"
    assert abs(uks["energy"] - rks["energy"]) < 1e-8
    assert abs(uks["s2"]) < 1e-8
    assert np.abs(uks["mo_energy"] - rks["mo_energy"][None]).max() < 1e-6


@pytest.mark.slow
@pytest.mark.parametrize("k", range(2), ids=["allyl", "cation-9-heavy"])
def test_b3lyp5_larger_open_shells_match_pyscf_uks(k):
    """conv_tol 1e-12 on both sides: the 9-heavy-atom cation's UKS energy surface is soft,
    so at 1e-10 PySCF stops with its dipole 8e-4 e*Bohr from the converged one (qmgen's
    was 2e-5 away); at 1e-12 the two agree to 1.4e-6 (measured)."""
    got = run("large", conv_tol=1e-12, max_cycle=100, xc="b3lyp5", forces=True)[k]
    want = ref("large", k, xc="b3lyp5", forces=True, conv_tol=1e-12)
    assert_close(got, want, ALL + ("forces",))


@pytest.mark.slow
@pytest.mark.parametrize("name,k", [("small", 0), ("small", 1), ("small", 2), ("large", 0)])
def test_b3lyp_631gs_open_shells_match_pyscf_uks(name, k):
    kw = dict(xc="b3lyp", basis="6-31g*", forces=True)
    assert_close(run(name, **kw)[k], ref(name, k, **kw), ALL + ("forces",))


@pytest.mark.slow
@pytest.mark.xfail(
    strict=True,
    reason="measured 2026-12-06: qmgen's UKS converges to a higher solution, -460.523544 Ha, "
    "than PySCF's -460.523810 (PySCF needs more than its 50 default cycles to get there); "
    "a different stationary point, not noise (issue 15 open)",
)
def test_b3lyp_631gs_nine_heavy_atom_cation_matches_pyscf_uks():
    """The doublet cation alone (its own bucket; conv_tol 1e-12 as at STO-3G)."""
    kw = dict(xc="b3lyp", basis="6-31g*", forces=True, conv_tol=1e-12)
    (got,) = qmgen.compute([radicals("large")[1]], max_cycle=100, **kw)
    assert_close(got, ref("large", 1, **kw), ALL + ("forces",))


def test_spin_is_validated_against_the_electron_count():
    with pytest.raises(MoleculeError, match="spin 2S = 2 is impossible with 9 electrons"):
        Molecule.from_xyz(METHYL, spin=2)
    with pytest.raises(MoleculeError, match="non-negative integer"):
        Molecule.from_xyz(METHYL, spin=-1)
    assert Molecule.from_xyz(O2, spin=2).n_alpha == 9
    assert repr(Molecule.from_xyz(METHYL, spin=1)) == "Molecule(CH3, charge=0, spin=1)"


def test_odd_electrons_without_spin_are_a_failure_that_says_how_to_fix_it():
    rec = qmgen.compute([Molecule.from_xyz(METHYL)])[0]
    assert rec["status"] == Status.ODD_ELECTRONS
    assert "spin=1" in rec["message"]
