"""Issue 16, first part: ``qmgen.ase.Calculator`` and the extxyz / ASE database exports.

The calculator against ``qmgen.compute`` (eV units), against finite differences of its own
energy, without retracing on moved atoms, in BFGS; the exports of a ``qmgen generate``
dataset and of a synthetic one (unconverged rows, awkward strings) read back with
``ase.io.read`` / ``ase.db.connect`` equal to ``qmgen.open_dataset`` in float64.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import ase
import ase.db
import ase.io
import numpy as np
import pytest
from ase.calculators.calculator import CalculationFailed, CalculatorSetupError
from ase.optimize import BFGS
from molecules import WATER
from test_shards import ATTRS, make_rows

import qmgen
from qmgen.ase import Calculator
from qmgen.cli import main as cli
from qmgen.dft import engine
from qmgen.storage import manifest as mf
from qmgen.storage.writer import write_shard
from qmgen.units import ANGSTROM_TO_BOHR, BOHR, HARTREE_TO_EV

REPO = Path(__file__).resolve().parents[1]
SETTINGS = dict(xc="b3lyp5", basis="sto-3g", grid_level=3)  # the calculator's default grid


def water_atoms() -> ase.Atoms:
    lines = WATER.strip().splitlines()[2:]
    symbols = [line.split()[0] for line in lines]
    pos = [[float(x) for x in line.split()[1:]] for line in lines]
    return ase.Atoms(symbols, positions=pos)


def atoms_of(mol: qmgen.Molecule) -> ase.Atoms:
    return ase.Atoms(numbers=mol.z, positions=np.asarray(mol.positions) * BOHR)


def fd_forces(atoms: ase.Atoms, h: float = 1e-3) -> np.ndarray:
    """-dE/dx by central differences of the calculator's energy (eV/Angstrom)."""
    out = np.zeros((len(atoms), 3))
    probe = atoms.copy()
    probe.calc = atoms.calc
    for i in range(len(atoms)):
        for k in range(3):
            probe.positions[i, k] += h
            e_plus = probe.get_potential_energy()
            probe.positions[i, k] -= 2 * h
            e_minus = probe.get_potential_energy()
            probe.positions[i, k] += h
            out[i, k] = -(e_plus - e_minus) / (2 * h)
    return out


# ------------------------------------------------------------------------- calculator


def test_calculator_equals_compute_in_ev():
    atoms = water_atoms()
    atoms.calc = Calculator(**SETTINGS)
    energy, forces = atoms.get_potential_energy(), atoms.get_forces()
    mol = qmgen.Molecule(atoms.numbers, atoms.positions * ANGSTROM_TO_BOHR)
    (rec,) = qmgen.compute([mol], forces=True, **SETTINGS)
    assert rec["status"] == 0
    de = abs(energy - rec["energy"] * HARTREE_TO_EV)
    df = np.abs(forces - rec["forces"] * HARTREE_TO_EV / BOHR).max()
    print(f"calculator vs compute: |dE| = {de:.1e} eV, max |dF| = {df:.1e} eV/A")
    assert de < 1e-10 and df < 1e-10
    np.testing.assert_allclose(atoms.get_dipole_moment(), rec["dipole"] * BOHR, rtol=0, atol=1e-12)
    np.testing.assert_allclose(atoms.get_charges(), rec["charges"], rtol=0, atol=1e-12)
    assert abs(atoms.calc.results["gap"] - rec["gap"] * HARTREE_TO_EV) < 1e-10
    assert atoms.get_potential_energy() == energy  # cached: no second SCF


def test_moved_atoms_do_not_retrace():
    atoms = water_atoms()
    atoms.calc = Calculator(**SETTINGS)
    e0 = atoms.get_potential_energy()
    before = dict(engine.TRACE_COUNT)
    atoms.positions[1] += [0.0, 0.05, -0.03]
    e1 = atoms.get_potential_energy()
    atoms.rattle(0.02, seed=1)
    e2 = atoms.get_potential_energy()
    assert len({e0, e1, e2}) == 3  # three real calculations ...
    assert engine.TRACE_COUNT == before  # ... on the one compiled program


def test_forces_equal_finite_differences():
    for settings, tol in ((dict(xc="hf", basis="sto-3g"), 1e-4), (SETTINGS, 2e-3)):
        atoms = water_atoms()
        atoms.rattle(0.05, seed=0)
        atoms.calc = Calculator(**settings)
        err = np.abs(atoms.get_forces() - fd_forces(atoms)).max()
        print(f"{settings['xc']}: max |F - FD| = {err:.1e} eV/A")
        assert err < tol


def test_bfgs_optimises_water():
    atoms = water_atoms()
    atoms.positions[1] += [0.0, 0.1, 0.05]
    atoms.calc = Calculator(**SETTINGS)
    assert BFGS(atoms, logfile=None).run(fmax=0.01, steps=100)
    mol = qmgen.Molecule(atoms.numbers, atoms.positions * ANGSTROM_TO_BOHR)
    (rec,) = qmgen.compute([mol], forces=True, **SETTINGS)
    fmax = np.linalg.norm(rec["forces"] * HARTREE_TO_EV / BOHR, axis=1).max()
    assert fmax < 0.01


@pytest.mark.slow
def test_bfgs_optimises_ethanol_from_an_rdkit_conformer():
    from qmgen.chem import smiles_to_molecules

    atoms = atoms_of(smiles_to_molecules("CCO", n_conformers=1, seed=0)[0])
    atoms.calc = Calculator(**SETTINGS)
    assert BFGS(atoms, logfile=None).run(fmax=0.01, steps=200)
    mol = qmgen.Molecule(atoms.numbers, atoms.positions * ANGSTROM_TO_BOHR)
    (rec,) = qmgen.compute([mol], forces=True, **SETTINGS)
    fmax = np.linalg.norm(rec["forces"] * HARTREE_TO_EV / BOHR, axis=1).max()
    print(f"ethanol: final qmgen max |F| = {fmax:.1e} eV/A")
    assert fmax < 0.01


def test_amino_radical_is_a_uks_doublet_as_pyscf_computes_it():
    """NH2 (bent, so its singly occupied orbital is not degenerate: a linear radical such
    as OH has two pi-hole states that a coarse grid splits by 1e-5 Ha, and qmgen and
    PySCF may land in different ones)."""
    from ase.build import molecule

    from qmgen.dft.reference import reference_labels

    nh2 = molecule("NH2")
    nh2.calc = Calculator(xc="b3lyp5", basis="sto-3g", grid_level=0, conv_tol=1e-10)
    energy, forces = nh2.get_potential_energy(), nh2.get_forces()  # 9 electrons: doublet
    mol = qmgen.Molecule(nh2.numbers, nh2.positions * ANGSTROM_TO_BOHR, spin=1)
    ref = reference_labels(mol, forces=True, conv_tol=1e-10)
    print(f"NH2 radical: |dE| = {abs(energy / HARTREE_TO_EV - ref['energy']):.1e} Ha")
    assert abs(energy / HARTREE_TO_EV - ref["energy"]) < 1e-6
    assert np.abs(forces / HARTREE_TO_EV * BOHR - ref["forces"]).max() < 1e-5
    assert nh2.calc.results["magmom"] == 1.0 and abs(nh2.calc.results["s2"] - ref["s2"]) < 1e-5
    np.testing.assert_allclose(nh2.get_magnetic_moments(), ref["spin_populations"], atol=1e-4)


def test_refusals_name_the_problem():
    oh = ase.Atoms("OH", positions=[[0, 0, 0], [0, 0, 0.97]])
    oh.calc = Calculator(multiplicity=1, **SETTINGS)
    with pytest.raises(CalculatorSetupError, match="multiplicity 1 with 9 electrons"):
        oh.get_potential_energy()
    oh.calc = Calculator(charge=-1, **SETTINGS)
    oh.info["multiplicity"] = 2
    with pytest.raises(CalculatorSetupError, match="multiplicity 2 with 10 electrons"):
        oh.get_potential_energy()
    periodic = water_atoms()
    periodic.set_cell([10, 10, 10])
    periodic.pbc = True
    periodic.calc = Calculator(**SETTINGS)
    with pytest.raises(CalculatorSetupError, match="pbc"):
        periodic.get_potential_energy()
    with pytest.raises(TypeError, match="unknown qmgen.ase.Calculator argument"):
        Calculator(functional="pbe")
    stuck = water_atoms()
    stuck.calc = Calculator(xc="hf", basis="sto-3g", max_cycle=2)
    with pytest.raises(CalculationFailed, match="not_converged.*SCF not converged in 2"):
        stuck.get_potential_energy()


# ------------------------------------------------------------------------- exports


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    d = tmp_path_factory.mktemp("ase-gen")
    (d / "in.smi").write_text("O water\n[OH3+] hydronium\n")
    summary = qmgen.generate(
        d / "in.smi", d / "ds", workers=1, progress=False, conformers=2, forces=True
    )
    assert summary["complete"]
    return d / "ds"


def synthetic(root: Path, forces: bool = True) -> list[dict]:
    """A one-shard dataset of 12 synthetic rows (every 5th unconverged) whose SMILES and
    names are strings ASE's own key-value parser would not give back."""
    rows = make_rows(12, forces=forces)
    awkward = ["F", "T", "123", "", 'F/C=C\\F "q"', "C#N {x} [y]"]
    for i, row in enumerate(rows):
        row["smiles"] = awkward[i % len(awkward)]
        row["name"] = awkward[(i + 3) % len(awkward)] + ("é" if i % 2 else "")
    info = write_shard(mf.shard_path(root, 0), 0, rows, [], ATTRS)
    entry = mf.manifest_entry(info, root)
    mf.append_manifest(root, entry)
    mf.write_index(root, ATTRS, [entry])
    return rows


def check_frame(atoms: ase.Atoms, want: dict, info: dict, arrays: dict) -> None:
    """Every exported key of one frame equals the dataset's conformer (eV, Angstrom)."""
    np.testing.assert_array_equal(atoms.numbers, want["z"])
    np.testing.assert_array_equal(atoms.positions, want["positions"])
    assert not atoms.pbc.any()
    assert atoms.get_potential_energy() == want["energy"] == info["REF_energy"]
    np.testing.assert_array_equal(atoms.get_dipole_moment(), want["dipole"])
    np.testing.assert_array_equal(np.asarray(info["REF_dipole"]), want["dipole"])
    np.testing.assert_array_equal(atoms.get_charges(), want["charges"])
    if "REF_charges" in arrays:
        np.testing.assert_array_equal(arrays["REF_charges"], want["charges"])
    if want.get("forces") is not None:
        np.testing.assert_array_equal(atoms.get_forces(), want["forces"])
        if "REF_forces" in arrays:
            np.testing.assert_array_equal(arrays["REF_forces"], want["forces"])
    np.testing.assert_array_equal(np.atleast_1d(info["mo_energy"]), want["mo_energy"])
    for key in ("homo", "lumo", "gap", "scf_error", "n_heavy", "n_basis", "n_iter", "status"):
        assert info[key] == want[key], key
    for key in ("molecule_index", "conformer_index", "charge", "multiplicity", "converged"):
        assert info[key] == want[key], key
    assert info["total_charge"] == want["charge"]
    assert isinstance(info["smiles"], str) and info["smiles"] == want["smiles"]
    assert isinstance(info["name"], str) and info["name"] == want["name"]
    if want.get("dispersion") is not None:
        assert info["dispersion"] == want["dispersion"]


def read_extxyz(path) -> list[tuple[ase.Atoms, dict, dict]]:
    return [(a, a.info, a.arrays) for a in ase.io.read(path, index=":", format="extxyz")]


def read_db(path) -> list[tuple[ase.Atoms, dict, dict]]:
    out = []
    with ase.db.connect(str(path)) as db:
        for row in db.select(sort="id"):
            info = dict(row.key_value_pairs)
            info.update(row.data)
            out.append((row.toatoms(), info, {}))
    return out


def exported(root, fmt: str, out: Path, *extra: str):
    assert cli(["export", str(root), "--format", fmt, str(out), *extra]) == 0
    return read_extxyz(out) if fmt == "extxyz" else read_db(out)


@pytest.mark.parametrize("fmt", ["extxyz", "ase-db"])
def test_generated_dataset_round_trips(generated, fmt, tmp_path):
    ds = qmgen.open_dataset(generated, energy_unit="ev", length_unit="angstrom")
    want = [row for row in ds if row["converged"]]
    assert len(want) == 4 and {row["charge"] for row in want} == {0, 1}
    suffix = ".xyz" if fmt == "extxyz" else ".db"
    got = exported(generated, fmt, tmp_path / f"out{suffix}", "--forces")
    assert len(got) == len(want)
    for (atoms, info, arrays), row in zip(got, want, strict=True):
        check_frame(atoms, row, info, arrays)


@pytest.mark.parametrize("fmt", ["extxyz", "ase-db", "aselmdb"])
def test_synthetic_dataset_round_trips_with_awkward_strings(fmt, tmp_path):
    synthetic(tmp_path / "ds")
    ds = qmgen.open_dataset(tmp_path / "ds", energy_unit="ev", length_unit="angstrom")
    suffix = {"extxyz": ".xyz", "ase-db": ".db", "aselmdb": ".aselmdb"}[fmt]
    got = exported(tmp_path / "ds", fmt, tmp_path / f"conv{suffix}")
    want = [row for row in ds if row["converged"]]
    assert 0 < len(want) < len(ds) and len(got) == len(want)
    for (atoms, info, arrays), row in zip(got, want, strict=True):
        check_frame(atoms, row, info, arrays)
    got = exported(tmp_path / "ds", fmt, tmp_path / f"all{suffix}", "--include-unconverged")
    assert len(got) == len(ds)
    for (atoms, info, arrays), row in zip(got, ds, strict=True):
        check_frame(atoms, row, info, arrays)


def test_forces_flag_refuses_a_dataset_without_forces(tmp_path, capsys):
    synthetic(tmp_path / "ds", forces=False)
    assert cli(["export", str(tmp_path / "ds"), "--format", "extxyz", str(tmp_path / "x")]) == 0
    atoms = ase.io.read(tmp_path / "x", index=0)
    assert "REF_forces" not in atoms.arrays and "forces" not in atoms.calc.results
    args = ["export", str(tmp_path / "ds"), "--format", "extxyz", str(tmp_path / "y"), "--forces"]
    assert cli(args) == 2
    assert "stores no forces" in capsys.readouterr().err


def test_readme_ase_example_runs(generated, tmp_path):
    out = tmp_path / "out.xyz"
    assert cli(["export", str(generated), "--format", "extxyz", str(out)]) == 0
    text = (REPO / "README.md").read_text()
    code = re.search(r"<!-- ase-example -->\s*```python\n(.*?)```", text, re.S).group(1)
    script = tmp_path / "load.py"
    script.write_text(code.replace('"out.xyz"', repr(str(out))))
    res = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.split()[0] == "4"  # the four converged conformers


@pytest.mark.slow
def test_readme_calculator_example_relaxes_water():
    """README's Calculator block, run as written: BFGS stops below fmax = 0.01 eV/Angstrom,
    at an energy below the starting geometry's (the forces led downhill)."""
    from ase.build import molecule

    text = (REPO / "README.md").read_text()
    code = re.search(r"<!-- calculator-example -->\s*```python\n(.*?)```", text, re.S).group(1)
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)
    atoms = scope["atoms"]
    assert np.max(np.linalg.norm(atoms.get_forces(), axis=1)) < 0.01
    start = molecule("H2O")
    start.calc = Calculator(xc="b3lyp5", basis="sto-3g")
    assert atoms.get_potential_energy() < start.get_potential_energy() - 1e-4
