"""``qmgen info``, ``qmgen verify`` and ``qmgen export`` on small real datasets."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from test_shards import ATTRS, _flip_byte_in_chunk, legacy_index, write_dataset

from qmgen.cli import main
from qmgen.dataset.info import dataset_info
from qmgen.dataset.verify import verify_dataset
from qmgen.molecule import SYMBOLS
from qmgen.storage import manifest as mf
from qmgen.storage.files import atomic_write_text
from qmgen.storage.writer import write_shard
from qmgen.units import HARTREE_TO_EV

QM1B_COLUMNS = ["smile", "atoms", "z", "energy", "homo", "lumo", "N", "std", "y", "pos"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("ds")
    rows, failures = write_dataset(root, (30, 0, 25))
    return root, rows, failures


@pytest.fixture
def copy(data, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(data[0], root)
    return root


def test_verify_ok(data, capsys):
    root = data[0]
    assert main(["verify", str(root)]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out == [
        f"OK: {root}: 3 shards, 55 conformers, 6 failure records; "
        "checksums, schema and row counts verified"
    ]


def test_verify_reports_bit_flip(copy, capsys):
    _flip_byte_in_chunk(mf.shard_path(copy, 2), "atoms/positions")
    assert main(["verify", str(copy)]) == 1
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert any(line.startswith("CORRUPT shards/0000/shard-000002.h5: sha256") for line in lines)
    assert any("/atoms/positions: HDF5 read error" in line for line in lines)
    assert not any("shard-000000" in line or "shard-000001" in line for line in lines)
    assert "FAILED" in captured.err


def test_verify_reports_missing_and_unindexed_shards(copy, capsys):
    (mf.shard_path(copy, 1)).unlink()
    # a shard that finished (manifest line) after index.json was written, then vanished
    info = write_shard(mf.shard_path(copy, 7), 7, [], [], ATTRS)
    mf.append_manifest(copy, mf.manifest_entry(info, copy))
    mf.shard_path(copy, 7).unlink()
    assert main(["verify", str(copy)]) == 1
    out = capsys.readouterr().out
    assert "MISSING shards/0000/shard-000001.h5: listed in index.json, file not found" in out
    assert "MISSING shards/0000/shard-000007.h5: listed in manifest.jsonl, file not found" in out


def test_verify_row_count_mismatch_and_notes(copy):
    index = legacy_index(copy)
    index["shards"][0]["n_rows"] = 31  # the offsets after it no longer add up
    atomic_write_text(copy / mf.INDEX_NAME, json.dumps(index))
    (copy / "shards" / ".shard-000009.h5.tmp-123-abc").write_bytes(b"partial")
    problems, summary = verify_dataset(copy)
    assert any("row_offset 30, the rows before it add up to 31" in m for _, _, m in problems)
    assert any("temporary file" in note for note in summary["notes"])
    # a consistent index (offsets and totals rewritten) that disagrees with the shard
    mf.write_index(copy, index["attrs"], index["shards"])
    problems, _ = verify_dataset(copy)
    assert "shard has 30 rows, index.json says 31" in [m for _, _, m in problems]


def test_truncated_index_is_reported(copy, capsys):
    (copy / mf.INDEX_NAME).unlink()
    assert main(["verify", str(copy)]) == 1
    assert "INDEX index.json: missing" in capsys.readouterr().out


def test_info_and_plots(data, capsys):
    root, rows, _ = data
    assert main(["info", str(root), "--plot"]) == 0
    out = capsys.readouterr().out
    n_conv = sum(r["converged"] for r in rows)
    assert (
        f"conformers   55 ({n_conv} converged; not_converged: {55 - n_conv}; ok: {n_conv})" in out
    )
    assert "failures     6 (invalid_input: 3, unsupported_element: 3)" in out
    assert "xc b3lyp5" in out and "jax: 0.4.30" in out
    assert out.count("b3lyp5") == 1  # the level of theory is printed once
    for name in ("energy_per_heavy_atom", "gap", "n_atoms"):
        path = root / f"info_{name}.png"
        assert f"wrote {path}" in out
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    info = dataset_info(root, energy_unit="ev")
    assert info["n_molecules"] == len({r["molecule_index"] for r in rows})
    heavy = np.array([max(int(np.sum(np.asarray(r["z"]) > 1)), 1) for r in rows])
    per_heavy = np.array([r["energy"] for r in rows]) / heavy * HARTREE_TO_EV
    stats = info["stats"]["energy_per_heavy_atom"]
    assert stats["mean"] == pytest.approx(per_heavy.mean(), rel=1e-12)
    assert stats["min"] == pytest.approx(per_heavy.min(), rel=1e-12)
    assert info["stats"]["n_iter"]["max"] == max(r["n_iter"] for r in rows)


def test_export_parquet_qm1b_columns(data, tmp_path, capsys):
    root, rows, _ = data
    out = tmp_path / "qm1b.parquet"
    assert (
        main(["export", str(root), "--format", "parquet", str(out), "--forces", "--dipoles"]) == 0
    )
    conv = [r for r in rows if r["converged"]]
    assert f"wrote {len(conv)} conformers" in capsys.readouterr().out
    df = pd.read_parquet(out)
    assert list(df.columns) == QM1B_COLUMNS + ["charge", "multiplicity", "forces", "dipole"]
    assert len(df) == len(conv)
    for (_, got), want in zip(df.iterrows(), conv, strict=True):
        assert got["smile"] == want["smiles"]
        assert got["atoms"] == "".join(SYMBOLS[z] for z in want["z"])
        np.testing.assert_array_equal(got["z"], want["z"])
        assert got["energy"] == pytest.approx(want["energy"] * HARTREE_TO_EV, rel=1e-15)
        assert got["homo"] == pytest.approx(want["homo"] * HARTREE_TO_EV, rel=1e-15)
        assert got["lumo"] == pytest.approx(want["lumo"] * HARTREE_TO_EV, rel=1e-15)
        assert got["y"] == pytest.approx(want["gap"] * HARTREE_TO_EV, rel=1e-15)
        assert got["std"] == pytest.approx(want["scf_error"] * HARTREE_TO_EV, rel=1e-15)
        assert got["N"] == len(want["mo_energy"])  # number of orbitals, as in QM1B
        np.testing.assert_array_equal(got["pos"], want["positions"].reshape(-1))  # Bohr
        np.testing.assert_allclose(
            got["forces"], want["forces"].reshape(-1) * HARTREE_TO_EV, rtol=1e-15
        )
        np.testing.assert_array_equal(got["dipole"], want["dipole"])
        assert (got["charge"], got["multiplicity"]) == (want["charge"], want["multiplicity"])
    everything = tmp_path / "all.parquet"
    assert (
        main(["export", str(root), "--format", "parquet", str(everything), "--include-unconverged"])
        == 0
    )
    df = pd.read_parquet(everything)
    assert list(df.columns) == QM1B_COLUMNS + ["charge", "multiplicity"] and len(df) == len(rows)


def test_export_forces_without_forces(tmp_path, capsys):
    root = tmp_path / "ds"
    write_dataset(root, (6,), forces=False)
    out = tmp_path / "x.parquet"
    assert main(["export", str(root), "--format", "parquet", str(out), "--forces"]) == 2
    assert "stores no forces" in capsys.readouterr().err
    assert main(["info", str(tmp_path / "missing")]) == 2
