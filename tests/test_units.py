"""qmgen.units against PySCF's constants (pyscf.data.nist): conversions round-trip exactly."""

from pyscf.data import nist

from qmgen import units


def test_constants_are_pyscfs():
    assert units.BOHR == nist.BOHR  # Angstrom per Bohr
    assert units.ANGSTROM_TO_BOHR == 1.0 / nist.BOHR
    assert units.HARTREE_TO_EV == nist.HARTREE2EV
    assert units.length_factor("angstrom") == nist.BOHR
    assert units.energy_factor("eV") == nist.HARTREE2EV
