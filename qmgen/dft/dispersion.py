"""Empirical dispersion: Grimme's D3 with Becke-Johnson (rational) damping, D3(BJ).

Host-side NumPy, evaluated once per molecule after its SCF (the correction depends on the
geometry only, not on the density): :func:`d3bj` calls the ``dftd3`` library (simple-dftd3's
Python API, an optional dependency: ``pip install qmgen[d3]``), which PySCF's
``<xc>-d3bj`` functionals use too (through pyscf-dispersion, the same library).

The two-body energy (Grimme, Antony, Ehrlich & Krieg, J. Chem. Phys. 132, 154104 (2010),
eq. 3 without the three-body term; BJ damping: Grimme, Ehrlich & Goerigk, J. Comput. Chem.
32, 1456 (2011), eq. 4) is

.. math::

    E_{disp} = -\\sum_{A<B} \\sum_{n=6,8} s_n \\frac{C_n^{AB}}{r_{AB}^n + f(R_0^{AB})^n},
    \\qquad f(R_0^{AB}) = a_1 \\sqrt{C_8^{AB}/C_6^{AB}} + a_2

with coordination-number dependent :math:`C_6^{AB}` and the functional's ``s6``, ``s8``,
``a1``, ``a2`` from the library's parameter table. PySCF's ``-d3bj`` leaves out the
Axilrod-Teller-Muto three-body term (``pyscf.scf.dispersion.parse_disp``: "d3" without the
"atm" suffix has ``with_3body=False``), and so does qmgen, so total energies agree.
"""

from __future__ import annotations

import numpy as np

from qmgen.errors import EnvironmentProblem

INSTALL_HINT = "pip install 'qmgen[d3]' (or pip install dftd3)"


class DispersionUnavailable(EnvironmentProblem, ImportError):
    """A functional with D3(BJ) dispersion was asked for without the ``dftd3`` library."""


def _dftd3():
    """The ``dftd3.interface`` module, or :class:`DispersionUnavailable`."""
    try:
        from dftd3 import interface
    except ImportError as err:
        raise DispersionUnavailable(
            f"D3(BJ) dispersion needs the dftd3 library, an optional dependency: {INSTALL_HINT}"
            f" ({err})"
        ) from err
    return interface


def check_available(functional) -> None:
    """Raise :class:`DispersionUnavailable` (naming ``pip install qmgen[d3]``) when
    ``functional`` (a :class:`qmgen.dft.xc.registry.Functional`) adds dispersion that this
    installation cannot compute; ValueError for an unknown dispersion model."""
    if functional.dispersion is None:
        return
    if functional.dispersion != "d3bj":
        raise ValueError(
            f"{functional.name}: unknown dispersion model {functional.dispersion!r}; valid: d3bj"
        )
    try:
        _dftd3()
    except DispersionUnavailable as err:
        raise DispersionUnavailable(f"xc={functional.name!r}: {err}") from err.__cause__


def d3bj(z, positions_bohr, method: str) -> tuple[float, np.ndarray]:
    """D3(BJ) two-body dispersion energy and forces of one molecule.

    Args:
      z: (n,) atomic numbers.
      positions_bohr: (n, 3) positions in Bohr.
      method: functional name in the dftd3 library's parameter table ("b3lyp", "pbe0",
        "wb97x", ...; :attr:`Functional.d3_method`).

    Returns:
      ``(energy, forces)``: the dispersion energy in Hartree and the forces
      -dE/dR, (n, 3) in Hartree/Bohr. Three-body (ATM) term off, as PySCF's ``-d3bj``.
    """
    d3 = _dftd3()
    z = np.ascontiguousarray(z, dtype=np.int32).reshape(-1)
    pos = np.ascontiguousarray(positions_bohr, dtype=np.float64).reshape(len(z), 3)
    param = d3.RationalDampingParam(method=method, atm=False)
    res = d3.DispersionModel(z, pos).get_dispersion(param, grad=True)
    return float(res["energy"]), -np.asarray(res["gradient"], dtype=np.float64)


def correction(functional, z, positions_bohr) -> tuple[float, np.ndarray] | None:
    """The dispersion ``(energy, forces)`` that ``functional`` adds to the SCF labels of the
    molecule (Hartree, Hartree/Bohr), or None for functionals without dispersion."""
    if functional.dispersion is None:
        return None
    check_available(functional)
    return d3bj(z, positions_bohr, functional.d3_method or functional.name)
