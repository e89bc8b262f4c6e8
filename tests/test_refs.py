"""Issue 16, reference energies: ``qmgen refs DIR`` (least-squares per-element constants),
``open_dataset(energy="referenced")`` and ``export --energy referenced``, against
constants planted in a synthetic dataset and a fit on a real generated one."""

from __future__ import annotations

import json

import ase.io
import numpy as np
import pytest
from test_shards import ATTRS, make_rows

import qmgen
from qmgen.cli import main as cli
from qmgen.dataset.refs import ReferenceEnergyError
from qmgen.storage import manifest as mf
from qmgen.storage.writer import write_shard
from qmgen.units import HARTREE_TO_EV

PLANTED = {1: -0.5, 6: -37.8, 7: -54.5, 8: -75.0, 9: -99.7}  # Hartree, per element
SYMBOL = {1: "H", 6: "C", 7: "N", 8: "O", 9: "F"}


def planted_dataset(root, noise=1e-3, only_water=False):
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
    info = write_shard(mf.shard_path(root, 0), 0, rows, [], ATTRS)
    entry = mf.manifest_entry(info, root)
    mf.append_manifest(root, entry)
    mf.write_index(root, ATTRS, [entry])
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
    with pytest.raises(ReferenceEnergyError, match="UKS"):
        qmgen.open_dataset(tmp_path / "water", energy="atomization")
    with pytest.raises(ValueError, match="unknown energy='binding'"):
        qmgen.open_dataset(tmp_path / "water", energy="binding")


def test_fit_on_a_generated_dataset(tmp_path):
    """Real B3LYP/STO-3G energies of water, methanol and ethanol conformers: the fitted
    constants reproduce the totals to a few mEh and H's constant is near an H atom's."""
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
