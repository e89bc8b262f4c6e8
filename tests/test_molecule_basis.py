"""Molecule validation and basis-set arrays (against PySCF's own basis handling)."""

import numpy as np
import pytest

from qmgen import Molecule, MoleculeError
from qmgen.dft.basis import BasisError, build_basis, structure_of
from qmgen.dft.reference import pyscf_mol
from qmgen.units import ANGSTROM_TO_BOHR


def test_xyz_is_converted_to_bohr(water):
    d = np.linalg.norm(water.positions[0] - water.positions[1])
    ref = np.linalg.norm(np.array([0, 0.7572, -0.4692]) - np.array([0, 0, 0.1173]))
    assert d == pytest.approx(ref * ANGSTROM_TO_BOHR, rel=1e-12)
    assert water.symbols == ["O", "H", "H"] and water.n_electrons == 10


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: Molecule([], np.zeros((0, 3))), "empty molecule"),
        (lambda: Molecule.from_symbols(["Xx"], [[0, 0, 0]]), "unknown element symbol 'Xx'"),
        (lambda: Molecule([200], [[0, 0, 0]]), "unknown element: atomic number 200"),
        (lambda: Molecule([1, 1], [[0, 0, 0], [0, 0, np.nan]]), "non-finite coordinate"),
        (lambda: Molecule([1, 1], [[0, 0, 0], [0, 0, 0.05]]), "Bohr apart"),
        (lambda: Molecule([1, 1], [[0, 0, 0]]), "positions must have shape (2, 3)"),
        (lambda: Molecule.from_symbols(["H", "H"], [[0, 0, 0]]), "2 symbols"),
        (lambda: Molecule.from_xyz("3\n\nH 0 0 0\n"), "says 3 atoms"),
        (lambda: Molecule.from_xyz(""), "empty molecule"),
    ],
)
def test_bad_molecules_are_refused_with_a_clear_error(make, message):
    with pytest.raises(MoleculeError, match=message.replace("(", r"\(").replace(")", r"\)")):
        make()


@pytest.mark.parametrize("basis", ["sto-3g", "6-31g", "6-31g*", "def2-svp", "cc-pvtz"])
def test_basis_arrays_follow_pyscf_ao_order(formaldehyde, basis):
    b, layout = build_basis(formaldehyde, basis)
    pm = pyscf_mol(formaldehyde, basis)
    assert layout.n_ao == pm.nao
    assert sorted(layout.ao_index[layout.ao_index >= 0]) == list(range(pm.nao))
    # each internal AO sits on the atom PySCF puts it on
    labels = pm.ao_labels(fmt=False)
    for internal, ao in enumerate(layout.ao_index):
        assert labels[ao][0] == layout.ao_atom[internal]


def test_sto3g_merges_2s_2p_into_l_shells(water):
    assert structure_of(water.z, "sto-3g") == (((0,), 3, 3), ((0, 1), 3, 1))


def test_padding_to_a_larger_structure(water):
    b, layout = build_basis(water, "sto-3g", structure=(((0,), 3, 5), ((0, 1), 3, 2)))
    assert b.n_ao == 5 + 2 * 4 and layout.n_ao == 7 and layout.ao_mask.sum() == 7
    with pytest.raises(BasisError, match="needs 3 shells"):
        build_basis(water, "sto-3g", structure=(((0,), 3, 2), ((0, 1), 3, 1)))


def test_element_missing_from_basis_is_named():
    mol = Molecule.from_symbols(["U", "H"], [[0, 0, 0], [0, 0, 2.0]])
    with pytest.raises(BasisError, match="no functions for element U"):
        build_basis(mol, "sto-3g")


def test_unknown_basis_name():
    mol = Molecule.from_symbols(["H", "H"], [[0, 0, 0], [0, 0, 0.74]])
    with pytest.raises(BasisError, match="nonsense-basis"):
        build_basis(mol, "nonsense-basis")


def test_angular_momentum_above_f_is_refused():
    mol = Molecule.from_symbols(["C"], [[0, 0, 0]])
    with pytest.raises(BasisError, match="l=4"):
        build_basis(mol, "cc-pvqz")
