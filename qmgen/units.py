"""Physical constants and unit conversions.

qmgen works in atomic units inside (Bohr, Hartree); conversions happen only at the edges
(XYZ input in Angstrom, QM1B-compatible export in eV). Values are the
numbers PySCF uses (``pyscf.data.nist``), so conversions round-trip against PySCF exactly.
"""

BOHR = 0.52917721092  # Angstrom per Bohr (PySCF's value)
ANGSTROM_TO_BOHR = 1.0 / BOHR
HARTREE_TO_EV = 27.21138602  # PySCF nist.HARTREE2EV

ENERGY_UNITS = ("hartree", "ev")
LENGTH_UNITS = ("bohr", "angstrom")


def energy_factor(unit: str) -> float:
    """Multiplier from Hartree to ``unit`` ("hartree" or "ev")."""
    unit = unit.lower()
    if unit == "hartree":
        return 1.0
    if unit == "ev":
        return HARTREE_TO_EV
    raise ValueError(f"unknown energy unit {unit!r}; valid: {', '.join(ENERGY_UNITS)}")


def length_factor(unit: str) -> float:
    """Multiplier from Bohr to ``unit`` ("bohr" or "angstrom")."""
    unit = unit.lower()
    if unit == "bohr":
        return 1.0
    if unit == "angstrom":
        return BOHR
    raise ValueError(f"unknown length unit {unit!r}; valid: {', '.join(LENGTH_UNITS)}")
