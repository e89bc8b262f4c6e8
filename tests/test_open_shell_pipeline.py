"""``qmgen generate --open-shell`` and ``--unrestricted`` end to end (issue 15).

One file mixes closed-shell molecules and radicals (doublets, a charged doublet, triplet
O2, spins from RDKit's radical electrons). With ``--open-shell`` every line is stored:
closed-shell ones with RKS, open-shell ones with UKS, each checked here against PySCF
(RKS or UKS at the stored geometry, conv_tol 1e-10). A driver killed after its first shard
and rerun gives the same rows; ``qmgen validate`` passes; the loader, Parquet and extxyz
exports carry the open-shell labels. Without the flag the radicals are ODD_ELECTRONS
failures, and ``--unrestricted`` gives closed-shell molecules their RKS energies.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import qmgen
from qmgen.dft.reference import reference_labels
from qmgen.status import Status
from qmgen.storage import manifest as mf
from qmgen.storage.reader import read_shard

LINES = [
    "C methane",
    "[CH3] methyl",
    "O water",
    "C=C[CH2] allyl",
    "[O][O] triplet_oxygen",
    "[NH3+] ammonia_cation",
]
SPIN = [0, 1, 0, 1, 2, 1]  # 2S from RDKit's radical electrons
CHARGE = [0, 0, 0, 0, 0, 1]
FIELDS = ("energy", "homo", "lumo", "s2", "homo_beta", "mo_energy", "spin_populations")


def _cli(inp, out, *extra):
    cmd = [sys.executable, "-m", "qmgen.cli", "generate", str(inp), "--out", str(out)]
    return cmd + ["--workers", "1", "--no-progress", "--quiet", "--forces", *map(str, extra)]


def run(inp, out, *extra):
    result = subprocess.run(_cli(inp, out, *extra), capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return qmgen.open_dataset(out)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    path = tmp_path_factory.mktemp("inputs") / "mixed.smi"
    path.write_text("\n".join(LINES) + "\n")
    return path


@pytest.fixture(scope="module")
def open_shell(inputs, tmp_path_factory):
    return run(inputs, tmp_path_factory.mktemp("ds") / "open", "--open-shell", "--shard-size", "1")


def by_line(ds):
    return {int(ds[i]["molecule_index"]): ds[i] for i in range(len(ds))}


def test_open_shell_stores_every_line_as_pyscf_computes_it(open_shell):
    ds = open_shell
    assert ds.has_spin and not ds.failures and len(ds) == len(LINES)
    assert "unrestricted" in ds.attrs["method"] and ds.attrs["open_shell"] is True
    rows = by_line(ds)
    for i, row in rows.items():
        assert (row["multiplicity"], row["charge"]) == (SPIN[i] + 1, CHARGE[i]), LINES[i]
        assert bool(row["unrestricted"]) == (SPIN[i] > 0)
        mol = qmgen.Molecule(row["z"], row["positions"], charge=CHARGE[i], spin=SPIN[i])
        ref = reference_labels(mol, forces=True, conv_tol=1e-10)
        assert abs(row["energy"] - ref["energy"]) < 1e-6, LINES[i]
        assert np.abs(row["forces"] - ref["forces"]).max() < 1e-5, LINES[i]
        assert abs(row["homo"] - ref["homo"]) < 1e-5 and abs(row["lumo"] - ref["lumo"]) < 1e-5
        if SPIN[i]:
            assert abs(row["s2"] - ref["s2"]) < 1e-5, LINES[i]
            np.testing.assert_allclose(row["mo_energy"], np.ravel(ref["mo_energy"]), atol=1e-5)
            np.testing.assert_allclose(row["spin_populations"], ref["spin_populations"], atol=1e-4)
            assert abs(row["spin_populations"].sum() - SPIN[i]) < 1e-8  # n_alpha - n_beta
            n_b = (mol.n_electrons - SPIN[i]) // 2
            assert abs(row["homo_beta"] - ref["mo_energy"][1][n_b - 1]) < 1e-5
        else:
            assert row["s2"] == 0.0 and row["homo_alpha"] == row["homo_beta"] == row["homo"]
            assert row["mo_energy"].size == row["n_basis"]


def test_loader_and_exports_carry_the_open_shell_labels(open_shell, tmp_path):
    ds = open_shell
    batch = next(iter(ds.batches(len(ds), shuffle=False, layout="padded")))
    assert batch["spin_populations"].shape == batch["charges"].shape
    np.testing.assert_array_equal(batch["s2"], ds.column("s2"))
    ev = qmgen.open_dataset(ds.root, energy_unit="ev")
    np.testing.assert_allclose(ev.column("homo_beta"), ds.column("homo_beta") * 27.211386245988)
    import pyarrow.parquet as pq
    from ase.io import read

    from qmgen.dataset.export import export_parquet
    from qmgen.dataset.export_ase import export_extxyz

    table = pq.read_table(export_parquet(ds.root, tmp_path / "x.parquet")["path"]).to_pydict()
    np.testing.assert_array_equal(table["s2"], ds.column("s2"))
    assert table["unrestricted"] == [bool(u) for u in ds.column("unrestricted")]
    frames = read(export_extxyz(ds.root, tmp_path / "x.extxyz")["path"], index=":")
    for atoms, i in zip(frames, range(len(ds)), strict=True):
        row = ds[i]
        assert atoms.info["multiplicity"] == row["multiplicity"]
        assert atoms.info["s2"] == row["s2"] and atoms.info["unrestricted"] == row["unrestricted"]
        np.testing.assert_array_equal(atoms.arrays["spin_populations"], row["spin_populations"])


def test_validate_recomputes_radicals_with_pyscf_uks(open_shell):
    from qmgen.pipeline.validate import validate_dataset

    report = validate_dataset(open_shell.root, sample=len(LINES))
    assert report["ok"] and report["n"] == len(LINES), json.dumps(report["labels"])
    assert report["labels"]["s2"]["n"] == sum(s > 0 for s in SPIN)
    assert report["labels"]["s2"]["max"] < 1e-5


@pytest.mark.slow  # ~70 s: a third generate run
def test_killed_run_resumes_to_the_same_rows(open_shell, inputs, tmp_path):
    out = tmp_path / "killed"
    cmd = _cli(inputs, out, "--open-shell", "--shard-size", "1")
    proc = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 600
        while not mf.read_manifest(out) and time.monotonic() < deadline:
            assert proc.poll() is None, "the run ended before its first shard"
            time.sleep(0.02)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    done = len(mf.read_manifest(out))
    assert 0 < done < len(LINES) and not (out / mf.INDEX_NAME).exists(), "not killed mid-run"
    resumed = run(inputs, out, "--open-shell", "--shard-size", "1")
    assert len(mf.read_manifest(out)) == len(LINES)
    a, b = by_line(open_shell), by_line(resumed)
    assert sorted(a) == sorted(b) == list(range(len(LINES)))
    for i in a:  # the same options as the uninterrupted run: bitwise equal labels
        for key in FIELDS + ("forces", "positions"):
            np.testing.assert_array_equal(b[i][key], a[i][key], err_msg=key)
    entries = mf.read_manifest(out)
    assert sorted(e["shard_id"] for e in entries) == list(range(len(LINES)))
    for e in entries:
        assert read_shard(out / e["file"])["attrs"]["open_shell"] is True


@pytest.mark.slow  # ~35 s: two more generate runs
def test_closed_shell_runs_refuse_radicals_and_unrestricted_matches_rks(inputs, tmp_path):
    closed = run(inputs, tmp_path / "closed")
    assert not closed.has_spin
    failures = {f["molecule_index"]: f for f in closed.failures}
    assert sorted(failures) == [i for i, s in enumerate(SPIN) if s]
    for f in failures.values():
        assert f["status"] == Status.ODD_ELECTRONS and "--open-shell" in f["message"]
    unres = run(inputs, tmp_path / "unres", "--unrestricted", "--open-shell")
    assert all(unres.column("unrestricted")) and len(unres) == len(LINES)
    rks, uks = by_line(closed), by_line(unres)
    for i in rks:  # methane, water: the UKS energy is the RKS energy
        assert abs(uks[i]["energy"] - rks[i]["energy"]) < 1e-8, LINES[i]
        assert abs(uks[i]["s2"]) < 1e-8
        np.testing.assert_allclose(uks[i]["forces"], rks[i]["forces"], atol=1e-7)
