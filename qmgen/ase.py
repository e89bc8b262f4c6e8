"""``qmgen.ase.Calculator``: qmgen's Kohn–Sham labels as an ASE calculator.

>>> from ase.build import molecule
>>> from ase.optimize import BFGS
>>> from qmgen.ase import Calculator
>>> atoms = molecule("H2O")
>>> atoms.calc = Calculator(xc="b3lyp5", basis="sto-3g")
>>> BFGS(atoms).run(fmax=0.01)

Every calculation is one ``qmgen.compute`` call on one molecule, so ASE's optimisers and
MD reuse the engine's compiled program: the program depends on the shape bucket (element
pattern, basis, grid level and the static settings), never on the geometry, so moving the
atoms does not retrace (``qmgen.dft.engine.TRACE_COUNT``). Energy, forces, dipole and
Mulliken charges come from the same SCF every call, whichever property ASE asked for.

Units are ASE's: energies in eV, forces in eV/Angstrom, positions in Angstrom, the dipole
in e*Angstrom (about the origin of the coordinates, nuclei included), charges in e.
Conversions use :mod:`qmgen.units` (PySCF's constants). Extra results (eV):
``homo``, ``lumo``, ``gap``, ``mo_energy`` (n_ao,), ``dispersion`` (functionals with D3(BJ),
already part of ``energy``); ``self.record`` keeps the raw label record of the last call
(Hartree, Bohr) with ``n_iter``, ``scf_error`` and ``status``.

Open shell: a multiplicity above 1 (or ``unrestricted=True``) runs unrestricted Kohn-Sham
(UKS/UHF, :mod:`qmgen.dft.uscf`); then ``magmom`` (2S, ASE's total magnetic moment in
Bohr magnetons), ``magmoms`` (Mulliken spin populations per atom), ``s2`` (<S^2>) are
results too, and ``mo_energy`` is (2, n_ao). A multiplicity whose parity does not fit the
electron count is refused with ``CalculatorSetupError``, an SCF that does not converge
raises ``CalculationFailed`` naming the status and the engine's message, and periodic
systems are refused (molecules only).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from ase.calculators.calculator import (
    CalculationFailed,
    CalculatorSetupError,
    all_changes,
)
from ase.calculators.calculator import Calculator as _AseCalculator

from qmgen.molecule import Molecule
from qmgen.status import Status
from qmgen.units import ANGSTROM_TO_BOHR, BOHR, HARTREE_TO_EV

__all__ = ["Calculator"]

# keyword settings passed through to qmgen.compute (PySCF's vocabulary)
COMPUTE_SETTINGS = ("conv_tol", "max_cycle", "level_shift", "damping", "eigensolver", "density_fit")


class Calculator(_AseCalculator):
    """ASE calculator on ``qmgen.compute`` (energy, free_energy, forces, dipole, charges).

    Args:
      xc, basis: level of theory, as ``qmgen.compute`` (default QM1B's B3LYP/STO-3G with
        VWN5).
      grid_level: PySCF's grid level. Default 3 (PySCF's default), not ``compute``'s 0:
        forces have no grid response (as PySCF's), so on a coarse grid they are not the
        gradient of the energy: for water in B3LYP/STO-3G the largest difference from a
        central finite difference of the energy is 0.41 eV/Angstrom at level 0 and
        4e-4 eV/Angstrom at level 3 (tests/test_ase.py), which matters for MD energy
        conservation and energy-based line searches. Hartree-Fock has no grid.
      precision: "float64" or "float32" (float32 SCF cycles, float64 finish).
      charge: net charge (e); None reads ``atoms.info["charge"]`` (0 when absent).
      multiplicity: 2S+1. None reads ``atoms.info["multiplicity"]``; when that is absent
        too, 1 for an even electron count and 2 (a doublet) for an odd one. Above 1 the
        SCF is unrestricted.
      unrestricted: run UKS/UHF even for a singlet (default False).
      device: None for JAX's default device, a ``jax.Device``, or a platform name
        ("cpu", "gpu", "cuda", "tpu"; its first device). The compiled program is kept per
        device by JAX's jit cache.
      conv_tol, max_cycle, level_shift, damping, eigensolver, density_fit: SCF settings,
        passed to ``qmgen.compute`` (its defaults when not given).
    """

    implemented_properties: ClassVar[list[str]] = [  # type: ignore[misc]
        "energy",
        "free_energy",
        "forces",
        "dipole",
        "charges",
        "magmom",
        "magmoms",
    ]
    default_parameters: ClassVar[dict[str, Any]] = {  # type: ignore[misc]
        "xc": "b3lyp5",
        "basis": "sto-3g",
        "precision": "float64",
        "grid_level": 3,
        "charge": None,
        "multiplicity": None,
        "unrestricted": False,
    }
    nolabel = True  # no files: ASE's label/directory machinery is not used

    def __init__(self, *, device=None, **kwargs):
        unknown = set(kwargs) - set(self.default_parameters) - set(COMPUTE_SETTINGS)
        if unknown:
            valid = ", ".join([*self.default_parameters, *COMPUTE_SETTINGS, "device"])
            raise TypeError(
                f"unknown qmgen.ase.Calculator argument(s) {sorted(unknown)}; valid: {valid}"
            )
        super().__init__(**kwargs)
        self.device = device
        self.record: dict | None = None

    # ------------------------------------------------------------------ helpers
    def molecule(self, atoms) -> Molecule:
        """The ``qmgen.Molecule`` of ``atoms`` (positions converted to Bohr, spin 2S from
        the multiplicity), after the spin and non-periodic checks."""
        if np.any(atoms.pbc):
            raise CalculatorSetupError(
                "qmgen.ase.Calculator computes isolated molecules: set atoms.pbc = False"
            )
        p = self.parameters
        charge = p.charge if p.charge is not None else atoms.info.get("charge", 0)
        mult = p.multiplicity if p.multiplicity is not None else atoms.info.get("multiplicity")
        z = np.asarray(atoms.numbers, dtype=np.int64)
        n_electrons = int(z.sum()) - int(charge)
        if mult is None:
            mult = 1 + n_electrons % 2
        if int(mult) < 1 or (n_electrons - int(mult) + 1) % 2 or int(mult) - 1 > n_electrons:
            raise CalculatorSetupError(
                f"multiplicity {mult} with {n_electrons} electrons (charge {charge}): 2S = "
                "multiplicity - 1 must have the parity of the electron count; set the "
                'charge or multiplicity (Calculator(...) or atoms.info["charge"/"multiplicity"])'
            )
        pos = np.asarray(atoms.positions, dtype=np.float64) * ANGSTROM_TO_BOHR
        return Molecule(z, pos, charge=int(charge), spin=int(mult) - 1)

    def _device(self):
        if self.device is None or not isinstance(self.device, str):
            return self.device
        import jax

        name = {"cuda": "gpu"}.get(self.device.lower(), self.device.lower())
        return jax.devices(name)[0]

    # ------------------------------------------------------------------ ASE API
    def calculate(self, atoms=None, properties=None, system_changes=all_changes):
        """Run one SCF for ``self.atoms`` and fill ``self.results`` (ASE units)."""
        super().calculate(atoms, properties or ["energy"], system_changes)
        mol = self.molecule(self.atoms)
        settings = {k: self.parameters[k] for k in COMPUTE_SETTINGS if k in self.parameters}
        from qmgen.dft.engine import compute

        kwargs = dict(
            basis=self.parameters.basis,
            xc=self.parameters.xc,
            grid_level=self.parameters.grid_level,
            precision=self.parameters.precision,
            forces=True,
            batch_size=1,
            unrestricted=bool(self.parameters.unrestricted),
            **settings,
        )
        device = self._device()
        if device is None:
            (rec,) = compute([mol], **kwargs)
        else:
            import jax

            with jax.default_device(device):
                (rec,) = compute([mol], **kwargs)
        self.record = rec
        if rec["status"] != Status.OK:
            raise CalculationFailed(
                f"qmgen: {Status(rec['status']).label} for {mol!r}: {rec['message']}"
            )
        ev, ev_per_a = HARTREE_TO_EV, HARTREE_TO_EV * ANGSTROM_TO_BOHR
        energy = rec["energy"] * ev
        self.results = {
            "energy": energy,
            "free_energy": energy,
            "forces": np.asarray(rec["forces"], dtype=np.float64) * ev_per_a,
            "dipole": np.asarray(rec["dipole"], dtype=np.float64) * BOHR,
            "charges": np.asarray(rec["charges"], dtype=np.float64).copy(),
            "homo": rec["homo"] * ev,
            "lumo": rec["lumo"] * ev,
            "gap": rec["gap"] * ev,
            "mo_energy": np.asarray(rec["mo_energy"], dtype=np.float64) * ev,
        }
        if rec["dispersion"] is not None:
            self.results["dispersion"] = rec["dispersion"] * ev
        if rec["method"] == "UKS":
            self.results.update(
                magmom=float(mol.spin),
                magmoms=np.asarray(rec["spin_populations"], dtype=np.float64).copy(),
                s2=rec["s2"],
            )
        else:
            self.results.update(magmom=0.0, magmoms=np.zeros(mol.n_atoms))
