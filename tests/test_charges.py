"""Net charge and multiplicity end to end (shard schema 2), and datasets of other schema
versions: an older one reads with those fields unknown, a newer one is refused by name."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
from test_shards import legacy_index

import qmgen
from qmgen.cli import main as cli
from qmgen.storage import manifest as mf
from qmgen.storage.files import sha256_file
from qmgen.storage.schema import CorruptShardError

SMILES = {"[NH4+]": 1, "CC(=O)[O-]": -1, "CCO": 0}


@pytest.fixture(scope="module")
def charged(tmp_path_factory):
    d = tmp_path_factory.mktemp("charged")
    (d / "in.smi").write_text("".join(f"{s}\n" for s in SMILES))
    args = ["generate", str(d / "in.smi"), "--out", str(d / "ds"), "--workers", "1"]
    assert cli(args + ["--conformers", "1", "--no-progress", "--quiet"]) == 0
    return d / "ds"


def test_loader_returns_the_input_charges(charged):
    ds = qmgen.open_dataset(charged)
    assert ds.schema_version == 2 and ds.unknown_fields == ()
    want = list(SMILES.values())
    assert [row["charge"] for row in ds] == want
    assert [row["multiplicity"] for row in ds] == [1, 1, 1]
    np.testing.assert_array_equal(ds.column("charge"), want)
    batch = next(ds.batches(3, shuffle=False))
    np.testing.assert_array_equal(batch["charge"], want)
    # the stored charge is the molecule's: nuclear charge minus electrons the SCF occupied
    for row in ds:
        assert np.sum(row["charges"]) == pytest.approx(row["charge"], abs=1e-8)


def test_parquet_export_carries_charges(charged, tmp_path):
    out = tmp_path / "c.parquet"
    assert cli(["export", str(charged), "--format", "parquet", str(out)]) == 0
    df = pd.read_parquet(out)
    assert df["charge"].tolist() == list(SMILES.values())
    assert df["multiplicity"].tolist() == [1, 1, 1]


def test_validate_recomputes_with_the_stored_charges(charged, capsys):
    from qmgen.pipeline.validate import validate_dataset

    report = validate_dataset(charged, sample=3)
    assert report["ok"] and report["n"] == 3
    assert report["labels"]["energy"]["max"] < 1e-6


def _as_version_1(src, dst):
    """A copy of ``src`` as an older qmgen wrote it: no charge or multiplicity columns,
    schema version 1 in every shard and the index (checksums and sizes updated)."""
    shutil.copytree(src, dst)
    index = legacy_index(dst)  # JSON shard list and flat shards/, as that qmgen wrote
    for entry in index["shards"]:
        path = dst / "shards" / Path(entry["file"]).name
        (dst / entry["file"]).rename(path)
        entry["file"] = path.relative_to(dst).as_posix()
        with h5py.File(path, "r+") as f:
            del f["conformers/charge"], f["conformers/multiplicity"]
            f.attrs["schema_version"] = 1
        entry.update(sha256=sha256_file(path), size=path.stat().st_size)
    index["schema_version"] = 1
    (dst / mf.INDEX_NAME).write_text(json.dumps(index))
    lines = [{k: v for k, v in e.items() if k != "row_offset"} for e in index["shards"]]
    (dst / mf.MANIFEST_NAME).write_text("".join(json.dumps(e) + "\n" for e in lines))
    return dst


def test_version_1_dataset_reads_with_charges_unknown(charged, tmp_path, capsys):
    old = _as_version_1(charged, tmp_path / "v1")
    with pytest.warns(UserWarning, match="schema version 1 .* did not store charge"):
        ds = qmgen.open_dataset(old)
    assert ds.unknown_fields == ("charge", "multiplicity")
    new = qmgen.open_dataset(charged)
    for a, b in zip(ds, new, strict=True):
        assert a["charge"] is None and a["multiplicity"] is None
        assert a["energy"] == b["energy"]
        np.testing.assert_array_equal(a["positions"], b["positions"])
    assert "charge" not in next(ds.batches(3, shuffle=False))
    assert cli(["verify", str(old)]) == 0
    out = tmp_path / "v1.parquet"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert cli(["export", str(old), "--format", "parquet", str(out)]) == 0
        assert pd.read_parquet(out)["charge"].isna().all()
        capsys.readouterr()
        assert cli(["validate", str(old), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "schema version 1" in err and "net charges" in err


def test_generate_will_not_extend_a_version_1_dataset(charged, tmp_path, capsys):
    old = tmp_path / "v1"
    shutil.copytree(charged, old)
    config = json.loads((old / "config.json").read_text())
    del config["schema_version"]  # as written by an older qmgen
    (old / "config.json").write_text(json.dumps(config))
    args = ["generate", config["input"]["path"], "--out", str(old), "--workers", "1"]
    assert cli(args + ["--conformers", "1", "--no-progress", "--quiet"]) == 2
    assert "shard schema version 1" in capsys.readouterr().err


def test_newer_schema_is_refused_by_name(charged, tmp_path):
    new = tmp_path / "v3"
    shutil.copytree(charged, new)
    index = json.loads((new / mf.INDEX_NAME).read_text())
    index["schema_version"] = 3
    (new / mf.INDEX_NAME).write_text(json.dumps(index))
    with pytest.raises(mf.DatasetIndexError, match="schema_version 3 .*newer qmgen"):
        qmgen.open_dataset(new)
    index["schema_version"] = 2
    (new / mf.INDEX_NAME).write_text(json.dumps(index))
    index = legacy_index(new)
    entry = index["shards"][0]
    with h5py.File(new / entry["file"], "r+") as f:
        f.attrs["schema_version"] = 3
    entry.update(size=(new / entry["file"]).stat().st_size)
    index["schema_version"] = 2
    (new / mf.INDEX_NAME).write_text(json.dumps(index))
    with pytest.raises(CorruptShardError, match="schema version 3: written by a newer qmgen"):
        qmgen.open_dataset(new, verify="none")[0]


def test_reading_imports_neither_jax_nor_pyscf(charged):
    """(POSIX-only modules are checked in the source by test_layout: at run time the
    standard library's own subprocess module imports fcntl on POSIX.)"""
    code = (
        "import sys, qmgen\n"
        f"ds = qmgen.open_dataset({str(charged)!r})\n"
        "row = ds[0]; batch = next(ds.batches(2))\n"
        "from qmgen.dataset.info import dataset_info; from qmgen.dataset.verify import "
        "verify_dataset\n"
        f"dataset_info({str(charged)!r}); verify_dataset({str(charged)!r})\n"
        "print(sorted(m for m in ('jax', 'pyscf', 'rdkit', 'distributed') "
        "if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_info_prints_the_level_of_theory_once(charged, capsys):
    """config.json's options repeat the level of theory; info shows it once."""
    assert cli(["info", str(charged)]) == 0
    out = capsys.readouterr().out
    assert out.count("b3lyp5") == 1 and out.count("sto-3g") == 1
    assert "level of theory xc b3lyp5, basis sto-3g, grid_level 0" in out
    assert "options " in out and "conformers 1" in out
