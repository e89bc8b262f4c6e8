"""Issue 6 on a dataset made by ``qmgen generate``: read-back equals an independent
``qmgen.compute`` of the same seeded conformers, random access equals iteration, a 2-worker
PyTorch DataLoader sees every conformer once, corruption is caught, Parquet round-trips,
and README's training example runs.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import qmgen
from qmgen.cli import main as cli
from qmgen.status import Status
from qmgen.units import HARTREE_TO_EV

REPO = Path(__file__).resolve().parents[1]
LINES = ["CCO ethanol", "COC dimethyl_ether", "OCC ethanol_again", "[CH3] methyl", "C1CC1X junk"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    d = tmp_path_factory.mktemp("gen")
    (d / "in.smi").write_text("\n".join(LINES) + "\n")
    rc = cli(
        [
            "generate",
            str(d / "in.smi"),
            "--out",
            str(d / "ds"),
            "--conformers",
            "2",
            "--shard-size",
            "2",
            "--workers",
            "1",
            "--no-progress",
            "--quiet",
        ]
    )
    assert rc == 0
    return d / "ds"


def test_read_back_equals_independent_compute(dataset):
    from qmgen.chem import smiles_to_molecules

    ds = qmgen.open_dataset(dataset)
    assert len(ds) == 6  # 3 molecules x 2 conformers
    mols = {
        s.split()[0]: smiles_to_molecules(s.split()[0], n_conformers=2, seed=0) for s in LINES[:3]
    }
    by_line = {i: mols[LINES[i].split()[0]] for i in range(3)}
    confs = [by_line[row["molecule_index"]][row["conformer_index"]] for row in ds]
    ref = qmgen.compute(confs, min_bucket_size=len(confs))
    for row, want, mol in zip(ds, ref, confs, strict=True):
        np.testing.assert_array_equal(row["z"], mol.z)
        np.testing.assert_allclose(row["positions"], mol.positions, atol=1e-12)
        for key in ("energy", "homo", "lumo", "gap"):
            assert row[key] == pytest.approx(want[key], abs=1e-8)
        for key in ("dipole", "charges", "mo_energy"):
            np.testing.assert_allclose(row[key], want[key], atol=1e-7)
        assert row["status"] == Status.OK and row["converged"]


def test_every_input_line_is_accounted_for(dataset):
    ds = qmgen.open_dataset(dataset)
    stored = {row["molecule_index"] for row in ds}
    failed = {f["molecule_index"]: f for f in ds.failures}
    assert stored == {0, 1, 2} and set(failed) == {3, 4}
    assert failed[3]["status"] == Status.ODD_ELECTRONS
    assert failed[4]["status"] == Status.INVALID_INPUT and failed[4]["message"]


def test_random_access_equals_iteration(dataset):
    ds = qmgen.open_dataset(dataset)
    seq = list(ds)
    for i in np.random.default_rng(0).permutation(len(ds)):
        a, b = ds[int(i)], seq[int(i)]
        assert a["energy"] == b["energy"] and np.array_equal(a["positions"], b["positions"])
    ev = qmgen.open_dataset(dataset, energy_unit="ev")
    assert ev[0]["energy"] == pytest.approx(seq[0]["energy"] * HARTREE_TO_EV, rel=1e-15)


def test_torch_dataloader_two_workers_sees_each_conformer_once(dataset):
    torch = pytest.importorskip("torch")
    tds = qmgen.open_dataset(dataset).to_torch()
    loader = torch.utils.data.DataLoader(
        tds, batch_size=4, shuffle=True, num_workers=2, collate_fn=tds.collate
    )
    seen = []
    for batch in loader:
        seen += [
            (int(m), int(c))
            for m, c in zip(batch["molecule_index"], batch["conformer_index"], strict=True)
        ]
    assert sorted(seen) == sorted(
        (r["molecule_index"], r["conformer_index"]) for r in qmgen.open_dataset(dataset)
    )


def test_verify_and_loader_catch_corruption(dataset, tmp_path, capsys):
    assert cli(["verify", str(dataset)]) == 0
    bad = tmp_path / "bad"
    shutil.copytree(dataset, bad)
    shard = sorted((bad / "shards").rglob("shard-*.h5"))[0]
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0x40  # one flipped bit
    shard.write_bytes(bytes(data))
    assert cli(["verify", str(bad)]) != 0
    assert shard.name in capsys.readouterr().out
    shard.write_bytes(bytes(data[: len(data) // 3]))  # truncated
    ds = qmgen.open_dataset(bad)
    with pytest.raises(qmgen.dataset.CorruptShardError, match=shard.name):
        [ds[i] for i in range(len(ds))]


def test_parquet_export_round_trips(dataset, tmp_path):
    pd = pytest.importorskip("pandas")
    out = tmp_path / "qm1b.parquet"
    assert cli(["export", str(dataset), "--format", "parquet", str(out), "--dipoles"]) == 0
    df = pd.read_parquet(out)
    assert {"smile", "atoms", "z", "energy", "homo", "lumo", "N", "std", "y", "pos"} <= set(
        df.columns
    )
    ds = qmgen.open_dataset(dataset)
    assert len(df) == len(ds)
    row = ds[0]
    assert df["energy"].iloc[0] == pytest.approx(row["energy"] * HARTREE_TO_EV, rel=1e-12)
    assert df["y"].iloc[0] == pytest.approx(row["gap"] * HARTREE_TO_EV, rel=1e-12)
    np.testing.assert_allclose(np.asarray(df["pos"].iloc[0]).ravel(), row["positions"].ravel())


def test_readme_training_example_runs(dataset, tmp_path):
    text = (REPO / "README.md").read_text()
    code = re.search(r"<!-- train-example -->\s*```python\n(.*?)```", text, re.S).group(1)
    script = tmp_path / "train.py"
    script.write_text(code)
    res = subprocess.run(
        [sys.executable, str(script), str(dataset)], capture_output=True, text=True, timeout=300
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert "final batch MSE" in res.stdout


def test_input_without_molecules_warns_and_gives_an_empty_dataset(tmp_path, capsys):
    src = tmp_path / "comments.smi"
    src.write_text("# only a comment\nsmiles name\n\n")
    args = ["generate", str(src), "--out", str(tmp_path / "ds"), "--workers", "1"]
    assert cli([*args, "--no-progress", "--quiet"]) == 0
    captured = capsys.readouterr()
    assert f"no molecules in {src}" in captured.err
    assert "ds[0]" not in captured.out  # the load hint must not index an empty dataset
    assert len(qmgen.open_dataset(tmp_path / "ds")) == 0


def test_readme_api_example_runs(tmp_path):
    text = (REPO / "README.md").read_text()
    code = re.search(r"<!-- api-example -->\s*```python\n(.*?)```", text, re.S).group(1)
    script = tmp_path / "api.py"
    script.write_text(code)
    res = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    nelec = float(res.stdout.split()[0])
    assert abs(nelec - 10) < 1e-3  # the grid integrates the guess density's 10 electrons
