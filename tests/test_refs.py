"""Issue 16, reference energies: ``qmgen refs DIR`` (least-squares per-element constants),
``open_dataset(energy="referenced")`` and ``export --energy referenced``, against
constants planted in a synthetic dataset and a fit on a real generated one; isolated-atom
energies (``qmgen refs DIR --atoms``, ``qmgen refs --xc --basis --elements``,
``energy="atomization"``) against PySCF UKS at the same multiplicity."""

from __future__ import annotations

import json

import ase.io
import numpy as np
import pytest
from test_shards import ATTRS, make_rows

import qmgen
from qmgen.cli import main as cli
from qmgen.dataset.refs import GROUND_MULTIPLICITY, ReferenceEnergyError
from qmgen.dft.reference import pyscf_mol, pyscf_scf
from qmgen.pipeline.refs import isolated_atom_energies
from qmgen.storage import manifest as mf
from qmgen.storage.writer import write_shard
from qmgen.units import HARTREE_TO_EV

PLANTED = {1: -0.5, 6: -37.8, 7: -54.5, 8: -75.0, 9: -99.7}  # Hartree, per element
SYMBOL = {1: "H", 6: "C", 7: "N", 8: "O", 9: "F"}


# the level of the generated dataset and of the isolated atoms below (one compile each)
LEVEL = dict(xc="b3lyp5", basis="sto-3g", grid_level=0, precision="float64", conv_tol=1e-9)


def planted_dataset(root, noise=1e-3, only_water=False, attrs=ATTRS):
    """A one-shard dataset whose energies are sum of PLANTED + Gaussian noise (Hartree)."""
    rows = make_rows(60, seed=3)
    rng = np.random.default_rng(5)
    for row in rows:
        if only_water:
            row["z"] = np.array([8, 1, 1])
            row["positions"] = rng.normal(scale=2.0, size=(3, 3))
            row["charges"] = rng.normal(scale=0.3, size=3)
            row["forces"] = rng.normal(scale=0.05, size=(3, 3))
        row["energy"] = sum(PLANTED[int(z)] for z in row["z"]) + noise * rng.normal()
    info = write_shard(mf.shard_path(root, 0), 0, rows, [], attrs)
    entry = mf.manifest_entry(info, root)
    mf.append_manifest(root, entry)
    mf.write_index(root, attrs, [entry])
    return rows


def test_fit_recovers_planted_constants(tmp_path, capsys):
    rows = planted_dataset(tmp_path / "ds")
    assert cli(["refs", str(tmp_path / "ds")]) == 0
    assert "least-squares" in capsys.readouterr().out
    doc = json.loads((tmp_path / "ds" / "refs.json").read_text())
    assert doc["method"] == "least-squares" and doc["unit"] == "hartree"
    assert doc["n_conformers"] == sum(r["converged"] for r in rows)
    for z, sym in SYMBOL.items():
        assert abs(doc["energies"][sym] - PLANTED[z]) < 2e-3, sym  # noise 1e-3 Ha
    assert 5e-4 < doc["rms_residual"] < 2e-3

    ds = qmgen.open_dataset(tmp_path / "ds", energy="referenced", energy_unit="ev")
    total = qmgen.open_dataset(tmp_path / "ds", energy_unit="ev")
    for got, row in zip(ds, total, strict=True):
        ref = sum(doc["energies"][SYMBOL[int(z)]] for z in row["z"])
        assert got["energy"] == pytest.approx(row["energy"] - ref * HARTREE_TO_EV, abs=1e-9)
        assert got["gap"] == row["gap"]  # only the energy changes
        assert abs(got["energy"]) < 0.1  # planted constants removed: the noise is left

    out = tmp_path / "ref.xyz"
    args = [
        "export",
        str(tmp_path / "ds"),
        "--format",
        "extxyz",
        str(out),
        "--energy",
        "referenced",
    ]
    assert cli(args) == 0
    frames = ase.io.read(out, index=":")
    want = [row["energy"] for row in ds if row["converged"]]
    assert [f.info["REF_energy"] for f in frames] == want


def test_rank_deficient_fit_and_missing_refs_are_refused(tmp_path, capsys):
    planted_dataset(tmp_path / "water", only_water=True)
    assert cli(["refs", str(tmp_path / "water")]) == 2
    err = capsys.readouterr().err
    assert "determine only 1 of 2" in err and "composition" in err
    assert not (tmp_path / "water" / "refs.json").exists()
    with pytest.raises(ReferenceEnergyError, match="qmgen refs"):
        qmgen.open_dataset(tmp_path / "water", energy="referenced")
    with pytest.raises(ReferenceEnergyError, match="does not exist.*refs .*water --atoms"):
        qmgen.open_dataset(tmp_path / "water", energy="atomization")
    with pytest.raises(ValueError, match="unknown energy='binding'"):
        qmgen.open_dataset(tmp_path / "water", energy="binding")


def test_fit_and_atoms_on_a_generated_dataset(tmp_path, capsys):
    """Real B3LYP/STO-3G energies of water, methanol and ethanol conformers: the fitted
    constants reproduce the totals to a few mEh and H's constant is near an H atom's;
    ``--atoms`` adds the isolated H, C, O atoms at the dataset's level, and
    energy="atomization" subtracts them."""
    (tmp_path / "in.smi").write_text("O\nCO\nCCO\nC=O\n")
    qmgen.generate(tmp_path / "in.smi", tmp_path / "ds", workers=1, progress=False, conformers=2)
    assert cli(["refs", str(tmp_path / "ds")]) == 0
    doc = json.loads((tmp_path / "ds" / "refs.json").read_text())
    assert set(doc["energies"]) == {"H", "C", "O"} and doc["n_conformers"] == 8
    assert doc["level"]["xc"] == "b3lyp5" and doc["level"]["basis"] == "sto-3g"
    assert doc["max_residual"] < 0.02  # Hartree: bonding differs little among these
    assert -0.7 < doc["energies"]["H"] < -0.4
    ds = qmgen.open_dataset(tmp_path / "ds", energy="referenced")
    assert max(abs(row["energy"]) for row in ds) < 0.02
    with pytest.raises(ReferenceEnergyError, match="only least-squares.*--atoms"):
        qmgen.open_dataset(tmp_path / "ds", energy="atomization")

    capsys.readouterr()
    assert cli(["refs", str(tmp_path / "ds"), "--atoms"]) == 0
    out = capsys.readouterr().out
    assert "least-squares" in out and "isolated-atom energies" in out
    doc = json.loads((tmp_path / "ds" / "refs.json").read_text())
    assert doc["format"] == 2 and set(doc["energies"]) == set(doc["atoms"]) == {"H", "C", "O"}
    meta = doc["atoms_meta"]
    assert meta["method"] == "isolated-atoms" and meta["multiplicity"] == {"H": 2, "C": 3, "O": 3}
    assert meta["scf"] == {"H": "UKS", "C": "UKS", "O": "UKS"}
    assert meta["level"] == dict(LEVEL)  # the dataset's level of theory
    assert meta["s2"]["H"] == pytest.approx(0.75, abs=1e-6)
    assert [meta["s2"]["C"], meta["s2"]["O"]] == pytest.approx([2.0, 2.0], abs=1e-6)
    atoms = isolated_atom_energies(["O", "H", "C", "H"], **LEVEL)["atoms"]  # same level, again
    assert atoms == pytest.approx(doc["atoms"], abs=1e-9)

    total = qmgen.open_dataset(tmp_path / "ds")
    atomization = qmgen.open_dataset(tmp_path / "ds", energy="atomization")
    sym = {1: "H", 6: "C", 8: "O"}
    for got, row in zip(atomization, total, strict=True):
        e_atoms = sum(doc["atoms"][sym[int(z)]] for z in row["z"])
        assert got["energy"] == pytest.approx(row["energy"] - e_atoms, abs=1e-9)
        assert -1.5 < got["energy"] < -0.2  # bound molecules, by molecular amounts (Hartree)
    referenced = qmgen.open_dataset(tmp_path / "ds", energy="referenced")  # still there
    assert max(abs(row["energy"]) for row in referenced) < 0.02

    out = tmp_path / "atomization.xyz"
    args = ["export", str(tmp_path / "ds"), "--format", "extxyz", str(out)]
    assert cli([*args, "--energy", "atomization"]) == 0
    frames = ase.io.read(out, index=":")
    want = [row["energy"] * HARTREE_TO_EV for row in atomization]
    assert [f.info["REF_energy"] for f in frames] == pytest.approx(want, abs=1e-9)

    assert cli(["refs", str(tmp_path / "ds")]) == 0  # a new fit keeps the atoms
    assert "kept the isolated-atom energies of H, C, O" in capsys.readouterr().out
    assert json.loads((tmp_path / "ds" / "refs.json").read_text())["atoms"] == doc["atoms"]


def axis_aligned_uks(z, spin):
    """PySCF UKS of the atom ``z`` from a guess with its p electrons along the axes:
    diagonal AO occupations filled in basis order (1s, 2s, 2px, 2py, 2pz)."""
    from pyscf import dft

    mol = qmgen.Molecule(np.array([z]), np.zeros((1, 3)), spin=spin)
    pm = pyscf_mol(mol, "sto-3g")
    n_a, n_b = pm.nelec
    n_ao = pm.nao_nr()
    guess = np.array([np.diag((np.arange(n_ao) < n).astype(float)) for n in (n_a, n_b)])
    mf = dft.UKS(pm)
    mf.xc, mf.grids.level, mf.conv_tol = "b3lyp5", 0, 1e-10
    mf.kernel(dm0=guess)
    assert mf.converged
    return float(mf.e_tot), float(mf.spin_square()[0])


def test_isolated_atoms_match_pyscf(tmp_path, capsys):
    """H, He, C, N, O at B3LYP/STO-3G, grid level 0, against PySCF at the same
    multiplicity, to 1e-6 Ha (measured at conv_tol 1e-9: 5e-8 Ha for C, 1e-11 or better
    for the others).

    H, He and N (a spherical half-filled shell) against the UKS (He: RKS) of
    ``pyscf_scf``, the SCF behind ``reference_labels``, which fails on these atoms: their
    alpha electrons fill the STO-3G basis, and it takes an alpha LUMO. C and O have
    partly filled p shells, and at this coarse grid their energy depends on how the p
    orbitals lie relative to the angular grid: PySCF from its default guess settles O
    with its beta p electron tilted off the axes, 1.1e-4 Ha below qmgen, and does not
    converge C. qmgen's atoms equal PySCF's UKS started with the p electrons along the
    axes, the same state, so C and O
    are checked against that."""
    doc = isolated_atom_energies(["H", "He", "C", "N", "O"], **LEVEL)
    atoms, meta = doc["atoms"], doc["atoms_meta"]
    assert list(atoms) == ["H", "He", "C", "N", "O"]
    assert meta["scf"] == {"H": "UKS", "He": "RKS", "C": "UKS", "N": "UKS", "O": "UKS"}
    assert all(meta["multiplicity"][s] == GROUND_MULTIPLICITY[s] for s in atoms)
    z_of = {"H": 1, "He": 2, "C": 6, "N": 7, "O": 8}
    ref = {}
    for sym in ("H", "He", "N"):
        mult = meta["multiplicity"][sym]
        mol = qmgen.Molecule(np.array([z_of[sym]]), np.zeros((1, 3)), spin=mult - 1)
        mf = pyscf_scf(mol, "sto-3g", "b3lyp5", 0, conv_tol=1e-10)
        assert mf.converged
        ref[sym] = (float(mf.e_tot), float(mf.spin_square()[0]) if mult > 1 else 0.0)
    ref["C"] = axis_aligned_uks(6, 2)
    ref["O"] = axis_aligned_uks(8, 2)
    for sym, (energy, s2) in ref.items():
        assert abs(atoms[sym] - energy) < 1e-6, (sym, atoms[sym] - energy)
        assert abs(meta["s2"][sym] - s2) < 1e-5, sym

    # the same numbers from the command line, without a dataset
    out = tmp_path / "atoms.json"
    level = ["--xc", "b3lyp5", "--basis", "sto-3g", "--grid-level", "0"]
    assert cli(["refs", *level, "--elements", "O,H", "--out", str(out)]) == 0
    assert "O  UKS 2S+1=3" in capsys.readouterr().out
    written = json.loads(out.read_text())
    assert written["atoms"] == pytest.approx({"H": atoms["H"], "O": atoms["O"]}, abs=1e-9)
    assert "energies" not in written and written["atoms_meta"]["level"] == LEVEL


def test_atoms_without_a_fit_and_refused_options(tmp_path, capsys):
    """--atoms on a dataset whose fit is impossible (only water) still writes the atoms;
    options that need no dataset are refused with one, and the other way round."""
    root = tmp_path / "water"
    planted_dataset(root, only_water=True, attrs=dict(ATTRS, **LEVEL))
    assert cli(["refs", str(root), "--atoms"]) == 0
    assert "no least-squares constants" in capsys.readouterr().err
    doc = json.loads((root / "refs.json").read_text())
    assert "energies" not in doc and set(doc["atoms"]) == {"H", "O"}
    ds = qmgen.open_dataset(root, energy="atomization")
    assert len(ds) == 60
    with pytest.raises(ReferenceEnergyError, match="no least-squares constants"):
        qmgen.open_dataset(root, energy="referenced")

    assert cli(["refs", str(root), "--xc", "pbe"]) == 2
    assert "--xc: only without DIR" in capsys.readouterr().err
    assert cli(["refs", "--xc", "b3lyp5", "--elements", "H"]) == 2
    assert "needs --basis" in capsys.readouterr().err
    assert cli(["refs", "--xc", "b3lyp5", "--basis", "sto-3g", "--elements", "H,Kr"]) == 2
    assert "no ground-state multiplicity tabulated for Kr" in capsys.readouterr().err


def test_old_refs_file_and_kept_atoms(tmp_path, capsys):
    """A refs.json of format 1 (least-squares part only, before isolated atoms) still
    gives energy="referenced" and says how to get "atomization"; a refit keeps isolated
    atoms of the dataset's level and drops those of another level."""
    root = tmp_path / "ds"
    planted_dataset(root)
    old = {
        "method": "least-squares",
        "unit": "hartree",
        "energies": {SYMBOL[z]: e for z, e in PLANTED.items()},
        "n_conformers": 48,
        "level": {"xc": "b3lyp5", "basis": "sto-3g", "grid_level": 0, "precision": "float32"},
    }
    (root / "refs.json").write_text(json.dumps(old))
    ds = qmgen.open_dataset(root, energy="referenced")
    total = qmgen.open_dataset(root)
    for got, row in zip(ds, total, strict=True):
        ref = sum(PLANTED[int(z)] for z in row["z"])
        assert got["energy"] == pytest.approx(row["energy"] - ref, abs=1e-9)
    with pytest.raises(ReferenceEnergyError, match="only least-squares constants.*--atoms"):
        qmgen.open_dataset(root, energy="atomization")

    atoms = {"H": -0.46, "C": -37.3, "N": -53.9, "O": -74.0, "F": -98.2}
    level = {k: ATTRS[k] for k in ("xc", "basis", "grid_level", "precision")}
    meta = {"method": "isolated-atoms", "level": dict(level, conv_tol=1e-9)}
    (root / "refs.json").write_text(json.dumps(dict(old, atoms=atoms, atoms_meta=meta)))
    assert cli(["refs", str(root)]) == 0
    doc = json.loads((root / "refs.json").read_text())
    assert doc["format"] == 2 and doc["atoms"] == atoms and doc["atoms_meta"] == meta
    assert doc["energies"]["O"] == pytest.approx(-75.0, abs=2e-3)  # refitted

    meta["level"]["basis"] = "def2-svp"
    (root / "refs.json").write_text(json.dumps(dict(doc, atoms_meta=meta)))
    capsys.readouterr()
    assert cli(["refs", str(root)]) == 0
    assert "dropping isolated-atom energies of another level" in capsys.readouterr().err
    assert "atoms" not in json.loads((root / "refs.json").read_text())


@pytest.mark.slow
def test_unconverged_atom_is_named():
    """An atom whose SCF does not converge is an error naming it (real compute: two
    cycles cannot converge triplet O; another max_cycle is another compile, so slow)."""
    with pytest.raises(ReferenceEnergyError, match=r"failed for O \(multiplicity 3: SCF not"):
        isolated_atom_energies(["O", "H"], max_cycle=2, **LEVEL)
