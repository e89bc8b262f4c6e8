"""D3(BJ) dispersion (issue 14): the ``dftd3`` library against PySCF's own ``<xc>-d3bj``
(pyscf-dispersion), analytic forces against finite differences, ``qmgen.compute`` totals
against PySCF's RKS, the ``dispersion`` label through shards, dataset, export and
``qmgen generate``/``validate``, and the error when the optional library is missing.
"""

from __future__ import annotations

import json
import sys

import h5py
import numpy as np
import pytest
from test_shards import ATTRS, make_rows

import qmgen
from qmgen.dft import dispersion
from qmgen.dft.reference import pyscf_mol, reference_labels
from qmgen.dft.xc import get_functional
from qmgen.dft.xc.registry import XC_NAMES
from qmgen.storage import manifest as mf
from qmgen.storage.check import check_shard
from qmgen.storage.reader import read_shard
from qmgen.storage.writer import write_shard
from qmgen.units import HARTREE_TO_EV

pytest.importorskip("dftd3")
pytest.importorskip("pyscf.dispersion")

D3BJ = [name for name in XC_NAMES if get_functional(name).dispersion == "d3bj"]


def pyscf_dispersion(mol, xc: str) -> tuple[float, np.ndarray]:
    """PySCF's dispersion energy and gradient of the ``<xc>-d3bj`` RKS object (no SCF)."""
    from pyscf import dft

    mf_ = dft.RKS(pyscf_mol(mol), xc=get_functional(xc).pyscf_name)
    assert mf_.do_disp()
    energy = float(mf_.get_dispersion())
    gradient = np.asarray(mf_.nuc_grad_method().get_dispersion())
    return energy, gradient


def test_pyscf_d3bj_is_two_body():
    """PySCF's ``-d3bj`` has no ATM three-body term; ``-d3bjatm`` would add it."""
    from pyscf.scf.dispersion import parse_disp

    assert parse_disp("b3lyp-d3bj") == ("b3lyp", "d3bj", False)
    assert parse_disp("b3lyp-d3bjatm") == ("b3lyp", "d3bj", True)


@pytest.mark.parametrize("xc", D3BJ)
@pytest.mark.parametrize("which", ["water", "nine_heavy"])
def test_d3bj_matches_pyscf(xc, which, request):
    mol = request.getfixturevalue(which)
    f = get_functional(xc)
    energy, forces = dispersion.d3bj(mol.z, mol.positions, f.d3_method)
    ref_e, ref_g = pyscf_dispersion(mol, xc)
    assert energy < 0 and forces.shape == (mol.n_atoms, 3)
    assert abs(energy - ref_e) < 1e-10, (energy, ref_e)
    np.testing.assert_allclose(forces, -ref_g, rtol=0, atol=1e-10)
    assert dispersion.correction(get_functional("b3lyp"), mol.z, mol.positions) is None
    e2, f2 = dispersion.correction(f, mol.z, mol.positions)
    assert e2 == energy and np.array_equal(f2, forces)


def test_three_body_is_left_out(nine_heavy):
    """The ATM term is not negligible at 1e-10 Ha, so leaving it out is a real choice."""
    from dftd3.interface import DispersionModel, RationalDampingParam

    energy, _ = dispersion.d3bj(nine_heavy.z, nine_heavy.positions, "b3lyp")
    model = DispersionModel(nine_heavy.z, nine_heavy.positions)
    with_atm = model.get_dispersion(RationalDampingParam(method="b3lyp", atm=True), grad=False)
    assert abs(float(with_atm["energy"]) - energy) > 1e-8


def test_forces_are_minus_the_energy_gradient(nine_heavy):
    z, pos = nine_heavy.z, np.array(nine_heavy.positions, dtype=np.float64)
    _, forces = dispersion.d3bj(z, pos, "b3lyp")
    h = 1e-4
    fd = np.zeros_like(pos)
    for a in range(len(z)):
        for k in range(3):
            plus, minus = pos.copy(), pos.copy()
            plus[a, k] += h
            minus[a, k] -= h
            ep = dispersion.d3bj(z, plus, "b3lyp")[0]
            em = dispersion.d3bj(z, minus, "b3lyp")[0]
            fd[a, k] = -(ep - em) / (2 * h)
    assert np.abs(forces).max() > 1e-5
    np.testing.assert_allclose(forces, fd, rtol=0, atol=1e-9)


def test_compute_adds_dispersion_and_matches_pyscf(water):
    kw = dict(basis="sto-3g", grid_level=0, forces=True, conv_tol=1e-10)
    (d3,) = qmgen.compute([water], xc="b3lyp-d3bj", **kw)
    (plain,) = qmgen.compute([water], xc="b3lyp", **kw)
    assert d3["status"] == 0 and plain["status"] == 0
    assert plain["dispersion"] is None
    e_disp, f_disp = dispersion.d3bj(water.z, water.positions, "b3lyp")
    assert d3["dispersion"] == e_disp
    assert abs(d3["energy"] - (plain["energy"] + e_disp)) < 1e-12
    np.testing.assert_allclose(d3["forces"], plain["forces"] + f_disp, rtol=0, atol=1e-12)
    for key in ("homo", "lumo", "gap"):  # the density does not see the correction
        assert d3[key] == pytest.approx(plain[key], abs=1e-12)
    ref = reference_labels(water, xc="b3lyp-d3bj", forces=True, conv_tol=1e-10)
    assert abs(d3["energy"] - ref["energy"]) < 1e-6, (d3["energy"], ref["energy"])
    assert abs(d3["dispersion"] - ref["dispersion"]) < 1e-10
    np.testing.assert_allclose(d3["forces"], ref["forces"], rtol=0, atol=1e-5)


# ----------------------------------------------------------------- storage and dataset
def _disp_rows(n: int, seed: int = 0) -> list[dict]:
    rows = make_rows(n, seed=seed, forces=False)
    rng = np.random.default_rng(seed + 100)
    for r in rows:
        r["dispersion"] = -1e-3 * rng.random()
    return rows


def test_shard_round_trip_with_dispersion(tmp_path):
    rows = _disp_rows(12)
    path = tmp_path / "s.h5"
    write_shard(path, 0, rows, [], ATTRS)
    assert check_shard(path) == []
    with h5py.File(path) as f:
        assert f["conformers/dispersion"].attrs["units"] == "hartree"
        assert bool(f.attrs["has_dispersion"])
    back = read_shard(path)["rows"]
    assert [r["dispersion"] for r in back] == [r["dispersion"] for r in rows]
    # without dispersion: no dataset, the attribute False, rows read back None
    plain = make_rows(4, forces=False)
    write_shard(tmp_path / "p.h5", 1, plain, [], ATTRS)
    assert check_shard(tmp_path / "p.h5") == []
    with h5py.File(tmp_path / "p.h5") as f:
        assert "dispersion" not in f["conformers"] and not f.attrs["has_dispersion"]
    assert all(r["dispersion"] is None for r in read_shard(tmp_path / "p.h5")["rows"])


def test_shard_dispersion_all_or_none_and_checked(tmp_path):
    rows = _disp_rows(4)
    rows[2]["dispersion"] = None
    with pytest.raises(ValueError, match="dispersion must be given for all rows"):
        write_shard(tmp_path / "bad.h5", 0, rows, [], ATTRS)
    assert not (tmp_path / "bad.h5").exists()
    path = tmp_path / "s.h5"
    write_shard(path, 0, _disp_rows(4), [], ATTRS)
    with h5py.File(path, "r+") as f:
        del f["conformers/dispersion"]
    assert "missing dataset /conformers/dispersion" in check_shard(path)
    # shards of qmgen before this label have no has_dispersion attribute: still sound
    plain = tmp_path / "old.h5"
    write_shard(plain, 0, make_rows(3, forces=False), [], ATTRS)
    with h5py.File(plain, "r+") as f:
        del f.attrs["has_dispersion"]
    assert check_shard(plain) == []
    with pytest.raises(ValueError, match="reserved"):
        write_shard(tmp_path / "r.h5", 0, make_rows(1), [], dict(ATTRS, has_dispersion=True))


def test_dataset_reads_dispersion_in_chosen_units(tmp_path):
    root = tmp_path / "ds"
    rows, entries = [], []
    for sid, size in enumerate((5, 7)):
        part = _disp_rows(size, seed=sid)
        for r in part:
            r["molecule_index"] += 100 * sid
        info = write_shard(mf.shard_path(root, sid), sid, part, [], ATTRS)
        entry = mf.manifest_entry(info, root)
        mf.append_manifest(root, entry)
        entries.append(entry)
        rows += part
    mf.write_index(root, ATTRS, entries)
    want = np.array([r["dispersion"] for r in rows])
    ds = qmgen.open_dataset(root)
    assert ds.has_dispersion
    assert ds[3]["dispersion"] == want[3]
    np.testing.assert_array_equal(ds.column("dispersion"), want)
    np.testing.assert_array_equal([r["dispersion"] for r in ds], want)
    ev = qmgen.open_dataset(root, energy_unit="ev")
    np.testing.assert_allclose(ev.column("dispersion"), want * HARTREE_TO_EV, rtol=1e-15)
    assert ev[8]["dispersion"] == pytest.approx(want[8] * HARTREE_TO_EV, rel=1e-15)
    for layout in ("padded", "packed"):
        (batch,) = ds.batches(len(ds), shuffle=False, layout=layout)
        np.testing.assert_array_equal(batch["dispersion"], want)
    torch = pytest.importorskip("torch")
    tds = ds.to_torch()
    out = tds.collate([tds[i] for i in range(3)])
    assert out["dispersion"].dtype == torch.float64
    np.testing.assert_array_equal(out["dispersion"].numpy(), want[:3])


# ----------------------------------------------------------------- missing library
def _hide_dftd3(monkeypatch):
    monkeypatch.setitem(sys.modules, "dftd3", None)
    monkeypatch.setitem(sys.modules, "dftd3.interface", None)


def test_missing_dftd3_is_a_clear_error_before_any_scf(monkeypatch, water):
    from qmgen.dft import engine
    from qmgen.pipeline.options import GenerateOptions

    _hide_dftd3(monkeypatch)

    def no_work(*args, **kwargs):
        raise AssertionError("SCF work started although dftd3 is missing")

    monkeypatch.setattr(engine, "bucket_of", no_work)
    with pytest.raises(dispersion.DispersionUnavailable, match=r"pip install 'qmgen\[d3\]'"):
        qmgen.compute([water], xc="b3lyp-d3bj")
    with pytest.raises(ImportError, match="pbe0-d3bj"):
        GenerateOptions(xc="pbe0-d3bj")
    # functionals without dispersion do not need it
    dispersion.check_available(get_functional("b3lyp"))
    GenerateOptions(xc="b3lyp")


def test_missing_dftd3_on_the_command_line(monkeypatch, tmp_path, capsys):
    from qmgen.cli import main
    from qmgen.errors import EXIT_ENVIRONMENT

    _hide_dftd3(monkeypatch)
    (tmp_path / "in.smi").write_text("O water\n")
    argv = ["generate", str(tmp_path / "in.smi"), "--out", str(tmp_path / "ds")]
    assert main(argv + ["--xc", "b3lyp-d3bj", "--no-progress", "--quiet"]) == EXIT_ENVIRONMENT
    err = capsys.readouterr().err
    assert "pip install 'qmgen[d3]'" in err and "Traceback" not in err
    assert not (tmp_path / "ds" / "shards").exists()


# ----------------------------------------------------------------- qmgen generate
def test_generate_stores_dispersion_and_validate_compares_it(tmp_path):
    from qmgen.cli import main

    (tmp_path / "in.smi").write_text("O water\n")
    out = tmp_path / "ds"
    argv = ["generate", str(tmp_path / "in.smi"), "--out", str(out), "--xc", "b3lyp-d3bj"]
    argv += ["--workers", "1", "--no-progress", "--quiet"]
    assert main(argv) == 0
    ds = qmgen.open_dataset(out)
    assert len(ds) == 1 and ds.has_dispersion and ds.attrs["xc"] == "b3lyp-d3bj"
    row = ds[0]
    e_disp, _ = dispersion.d3bj(row["z"], row["positions"], "b3lyp")
    assert row["dispersion"] == e_disp
    shard = out / ds.shards[0]["file"]
    with h5py.File(shard) as f:
        assert f["conformers/dispersion"].attrs["units"] == "hartree"
    assert check_shard(shard) == []
    # the stored energy includes the dispersion: the same conformer without it differs by it
    mol = qmgen.Molecule(row["z"], row["positions"])
    (plain,) = qmgen.compute([mol], xc="b3lyp", conv_tol=1e-9)
    assert abs(row["energy"] - plain["energy"] - e_disp) < 1e-8
    # QM1B-style export carries it in eV
    import pyarrow.parquet as pq

    assert main(["export", str(out), "--format", "parquet", str(tmp_path / "x.parquet")]) == 0
    table = pq.read_table(tmp_path / "x.parquet")
    assert table.column("dispersion").to_pylist() == pytest.approx([e_disp * HARTREE_TO_EV])
    # validate recomputes with PySCF's b3lyp-d3bj and compares the dispersion too
    assert main(["validate", str(out), "--sample", "1", "--quiet"]) == 0
    report = json.loads((out / "validation.json").read_text())
    assert report["ok"] and report["labels"]["dispersion"]["max"] < 1e-10
    assert report["labels"]["energy"]["max"] < 1e-6
