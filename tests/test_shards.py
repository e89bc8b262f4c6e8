"""Shard files and dataset bookkeeping: round trips, atomic writes, checks, manifest.

``make_rows`` and ``write_dataset`` build small synthetic datasets; test_dataset.py and
test_inspect.py import them.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest

from qmgen.status import Status
from qmgen.storage import manifest as mf
from qmgen.storage.check import check_shard
from qmgen.storage.files import sha256_file
from qmgen.storage.reader import ShardReader, read_shard
from qmgen.storage.schema import SCHEMA_VERSION, CorruptShardError
from qmgen.storage.writer import remove_stale_tmp, write_shard

ODD_INPUT = b"C1=CC\xff\xfe\x00junk".decode("utf-8", "surrogateescape")  # raw bytes, NUL
ATTRS = dict(
    xc="b3lyp5",
    basis="sto-3g",
    grid_level=0,
    precision="float32",
    conv_tol=1e-9,
    max_cycle=50,
    versions={"qmgen": "0.1.0", "jax": "0.4.30"},
    config={"forces": True, "shapes": [1, 2, 3], "note": None},
)


def make_rows(n: int, seed: int = 0, forces: bool = True, first_molecule: int = 0) -> list:
    """n synthetic conformers: 1-12 atoms, 3 conformers per molecule, every 5th unconverged."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        na = 1 if i % 11 == 0 else int(rng.integers(2, 13))
        z = rng.choice([1, 6, 7, 8, 9], size=na)
        converged = i % 5 != 4
        mol = first_molecule + i // 3
        rows.append(
            dict(
                z=z,
                positions=rng.normal(scale=2.0, size=(na, 3)),
                energy=-10.0 * na + rng.normal(),
                homo=-0.3 + 0.01 * rng.normal(),
                lumo=0.05 + 0.01 * rng.normal(),
                gap=0.35 + 0.01 * rng.normal(),
                mo_energy=np.sort(rng.normal(size=na + int(rng.integers(0, 4)))),
                dipole=rng.normal(size=3),
                charges=rng.normal(scale=0.3, size=na),
                forces=rng.normal(scale=0.05, size=(na, 3)) if forces else None,
                converged=converged,
                n_iter=int(rng.integers(5, 50)),
                status=int(Status.OK if converged else Status.NOT_CONVERGED),
                scf_error=1e-7 * rng.random(),
                molecule_index=mol,
                conformer_index=i % 3,
                charge=(mol % 3) - 1,
                multiplicity=1,
                smiles=f"C{mol}[N@H]ü",
                name=f"molécule-{mol}",
            )
        )
    return rows


def make_failures(molecule_index: int) -> list:
    return [
        dict(
            molecule_index=molecule_index,
            input=ODD_INPUT,
            smiles="",
            status=int(Status.INVALID_INPUT),
            message="unparsable line\nwith a newline ✗",
        ),
        dict(
            molecule_index=molecule_index + 1,
            input="[U]",
            smiles="[U]",
            status=int(Status.UNSUPPORTED_ELEMENT),
            message="element U",
        ),
    ]


def write_dataset(root, sizes=(20, 0, 35), forces: bool = True, seed: int = 0):
    """Shards of ``sizes`` rows (each with two failure records); return (rows, failures)."""
    root = Path(root)
    all_rows, all_failures, entries = [], [], []
    molecule = 0
    for sid, size in enumerate(sizes):
        rows = make_rows(size, seed=seed + sid, forces=forces, first_molecule=molecule)
        molecule += size // 3 + 1
        failures = make_failures(10_000 + 10 * sid)
        info = write_shard(mf.shard_path(root, sid), sid, rows, failures, ATTRS)
        entry = mf.manifest_entry(info, root)
        mf.append_manifest(root, entry)
        entries.append(entry)
        all_rows += rows
        all_failures += failures
    mf.write_index(root, ATTRS, entries)
    return all_rows, all_failures


def legacy_index(root) -> dict:
    """index.json as qmgen wrote it before the compact table (the shard list in JSON, with
    the same file names), for tests of that reader; the table file is removed."""
    index = mf.read_index(root)
    table = index["table"]
    shards = [table[i] for i in range(len(table))]
    (Path(root) / index["table_spec"]["file"]).unlink()
    return dict(
        schema_version=index["schema_version"],
        attrs=index["attrs"],
        n_rows=index["n_rows"],
        n_failures=index["n_failures"],
        row_offsets=table.offsets.tolist(),
        shards=shards,
    )


def assert_row_equal(got: dict, want: dict) -> None:
    for key in ("z", "positions", "charges", "dipole", "mo_energy"):
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)
    if want["forces"] is None:
        assert got.get("forces") is None
    else:
        np.testing.assert_array_equal(got["forces"], want["forces"])
    for key in ("energy", "homo", "lumo", "gap", "scf_error", "n_iter", "status"):
        assert got[key] == want[key], key
    for key in ("converged", "molecule_index", "conformer_index", "smiles", "name"):
        assert got[key] == want[key], key


@pytest.mark.parametrize("forces", [True, False])
def test_round_trip(tmp_path, forces):
    rows = make_rows(40, forces=forces)
    path = tmp_path / "shard-000007.h5"
    info = write_shard(path, 7, rows, make_failures(100), ATTRS)
    assert info == dict(
        sha256=sha256_file(path),
        n_rows=40,
        n_failures=2,
        path=str(path),
        size=path.stat().st_size,
        shard_id=7,
    )
    assert hashlib.sha256(path.read_bytes()).hexdigest() == info["sha256"]
    back = read_shard(path)
    assert len(back["rows"]) == 40
    for got, want in zip(back["rows"], rows, strict=True):
        assert_row_equal(got, want)
        assert got["n_basis"] == len(want["mo_energy"])
    assert back["failures"] == make_failures(100)
    attrs = back["attrs"]
    assert attrs["schema_version"] == SCHEMA_VERSION and attrs["shard_id"] == 7
    assert attrs["has_forces"] is forces and attrs["n_molecules"] == 14
    for key, value in ATTRS.items():
        assert attrs[key] == value, key
    with h5py.File(path) as f:
        assert ("forces" in f["atoms"]) is forces
        for name, obj in f.items():
            for ds in obj.values():
                assert "units" in ds.attrs, f"{name}/{ds.name}"
                assert ds.fletcher32, ds.name
        assert f["atoms/positions"].attrs["units"] == "bohr"
        assert f["conformers/dipole"].attrs["units"] == "e*bohr"
        assert f["conformers/atom_offset"].dtype == np.int64
        # the raw input bytes are stored as they were read
        blob = f["failures/input"][()].tobytes()
        assert blob.startswith(b"C1=CC\xff\xfe\x00junk")
    assert check_shard(path, n_rows=40, n_failures=2) == []


def test_csr_boundaries(tmp_path):
    rows = make_rows(12)
    path = tmp_path / "s.h5"
    write_shard(path, 0, rows, [], {})
    with ShardReader(path) as reader:
        ao = reader.column("atom_offset")
        assert ao[0] == 0 and ao[-1] == sum(len(r["z"]) for r in rows)
        np.testing.assert_array_equal(np.diff(ao), [len(r["z"]) for r in rows])
        block = reader.read_block(5, 9)  # rows 5..8, offsets rebased to 0
        np.testing.assert_array_equal(
            np.diff(block["atom_offset"]), [len(r["z"]) for r in rows[5:9]]
        )
        np.testing.assert_array_equal(block["z"], np.concatenate([r["z"] for r in rows[5:9]]))
        np.testing.assert_array_equal(
            block["mo_energy"], np.concatenate([r["mo_energy"] for r in rows[5:9]])
        )
        heavy = reader.column("n_heavy")
        np.testing.assert_array_equal(heavy, [int((r["z"] > 1).sum()) for r in rows])


def test_shard_with_failures_only(tmp_path):
    path = tmp_path / "s.h5"
    write_shard(path, 3, [], make_failures(0), ATTRS)
    back = read_shard(path)
    assert back["rows"] == [] and back["failures"] == make_failures(0)
    assert check_shard(path, 0, 2) == []


def test_invalid_rows_are_refused_without_a_file(tmp_path):
    rows = make_rows(4)
    rows[2]["forces"] = None
    with pytest.raises(ValueError, match="forces"):
        write_shard(tmp_path / "a.h5", 0, rows, [], {})
    rows = make_rows(4)
    rows[1]["positions"] = rows[1]["positions"][:, :2]
    with pytest.raises(ValueError, match="row 1"):
        write_shard(tmp_path / "b.h5", 0, rows, [], {})
    rows = make_rows(4)
    rows[0]["status"] = 200
    with pytest.raises(ValueError):
        write_shard(tmp_path / "c.h5", 0, rows, [], {})
    with pytest.raises(ValueError, match="reserved"):
        write_shard(tmp_path / "d.h5", 0, make_rows(2), [], {"n_rows": 5})
    assert list(tmp_path.iterdir()) == []


def test_exception_mid_write_leaves_no_file(tmp_path):
    path = tmp_path / "shards" / "shard-000001.h5"
    # attributes are written after all datasets: this one fails half-way through the file
    with pytest.raises(TypeError, match="not JSON serialisable"):
        write_shard(path, 1, make_rows(30), make_failures(0), {"config": {"x": object()}})
    assert not path.exists()
    assert list(path.parent.iterdir()) == []


def test_killed_writer_leaves_no_final_file(tmp_path):
    path = tmp_path / "shard-000000.h5"
    script = (
        "import sys, numpy as np\n"
        "from qmgen.storage.writer import write_shard\n"
        "n = 150_000\n"
        "rows = [dict(z=np.full(20, 6), positions=np.zeros((20, 3)), energy=0.0, homo=0.0,\n"
        "  lumo=0.0, gap=0.0, mo_energy=np.zeros(40), dipole=np.zeros(3),\n"
        "  charges=np.zeros(20), forces=np.zeros((20, 3)), converged=True, n_iter=1, status=0,\n"
        "  scf_error=0.0, molecule_index=i, conformer_index=0, charge=0, multiplicity=1,\n"
        "  smiles='C', name='')\n"
        "  for i in range(n)]\n"
        "print('writing', flush=True)\n"
        "write_shard(sys.argv[1], 0, rows, [], {})\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script, str(path)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "writing"
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob(".shard-000000.h5.tmp-*")):
        assert proc.poll() is None and time.monotonic() < deadline, "writer never started"
        time.sleep(0.001)
    os.kill(proc.pid, signal.SIGKILL)  # mid-write: 150k rows take far longer than 1 ms
    proc.wait()
    assert not path.exists()
    stale = remove_stale_tmp(tmp_path)
    assert len(stale) == 1 and list(tmp_path.iterdir()) == []


def _flip_byte_in_chunk(path, dataset: str) -> None:
    with h5py.File(path) as f:
        info = f[dataset].id.get_chunk_info(0)
    with open(path, "r+b") as fh:
        fh.seek(info.byte_offset + info.size // 2)
        byte = fh.read(1)
        fh.seek(-1, os.SEEK_CUR)
        fh.write(bytes([byte[0] ^ 0x10]))


def test_check_shard_finds_problems(tmp_path):
    path = tmp_path / "s.h5"
    write_shard(path, 0, make_rows(20), [], {})
    assert check_shard(path, n_rows=21)[0].startswith("shard has 20 rows")
    _flip_byte_in_chunk(path, "conformers/energy")
    problems = check_shard(path)
    assert any("/conformers/energy" in p and "read error" in p for p in problems)
    with ShardReader(path) as reader, pytest.raises(CorruptShardError, match="s.h5"):
        reader.read_block()
    path.write_bytes(path.read_bytes()[:5000])
    assert check_shard(path)[0].startswith("not a readable HDF5 file")
    assert check_shard(tmp_path / "nope.h5") == ["file not found"]


def test_manifest_append_read_and_torn_line(tmp_path):
    entries = [
        dict(
            shard_id=i,
            file=f"shards/0000/shard-00000{i}.h5",
            n_rows=i,
            n_failures=0,
            sha256="0" * 64,
        )
        for i in range(3)
    ]
    for e in entries[:2]:
        mf.append_manifest(tmp_path, e)
    manifest = tmp_path / mf.MANIFEST_NAME
    with open(manifest, "ab") as fh:  # a crash in the middle of an append
        fh.write(json.dumps(entries[2]).encode()[:17])
    with pytest.warns(UserWarning, match="torn last line"):
        assert mf.read_manifest(tmp_path) == entries[:2]
    mf.append_manifest(tmp_path, entries[2])  # cuts the torn tail first
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert mf.read_manifest(tmp_path) == entries
    assert manifest.read_bytes().count(b"\n") == 3
    with open(manifest, "ab") as fh:
        fh.write(b"not json\n")
    mf.append_manifest(tmp_path, entries[0])
    with pytest.raises(mf.DatasetIndexError, match="line 4"):
        mf.read_manifest(tmp_path)
    with pytest.raises(ValueError, match="lacks"):
        mf.append_manifest(tmp_path, {"shard_id": 1})


def test_index_and_completed_shards(tmp_path):
    rows, _ = write_dataset(tmp_path, sizes=(5, 0, 7))
    index = mf.read_index(tmp_path)
    table = index["table"]
    assert table.offsets.tolist() == [0, 5, 5, 12] and index["n_rows"] == len(rows) == 12
    assert index["n_failures"] == 6 and index["attrs"] == json.loads(json.dumps(ATTRS))
    assert [s["row_offset"] for s in table] == [0, 5, 5]
    assert [s["file"] for s in table] == [f"shards/0000/shard-00000{i}.h5" for i in range(3)]
    manifest = mf.read_manifest(tmp_path)
    offsets = [0, 5, 5]
    assert list(table) == [dict(e, row_offset=o) for e, o in zip(manifest, offsets, strict=True)]
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names[1:] == ["index.json", "manifest.jsonl", "shards"]
    assert names[0] == index["table_spec"]["file"] and names[0].startswith("index-")
    assert set(mf.completed_shards(tmp_path)) == {0, 1, 2}
    # a rewritten shard (resume after a crash) appends a second line: the last one wins
    info = write_shard(mf.shard_path(tmp_path, 1), 1, make_rows(4), [], ATTRS)
    mf.append_manifest(tmp_path, mf.manifest_entry(info, tmp_path))
    header = mf.write_index(tmp_path, ATTRS, mf.read_manifest(tmp_path))
    assert header["n_rows"] == 16 and header["n_shards"] == 3
    assert mf.read_index(tmp_path)["table"].offsets.tolist() == [0, 5, 9, 16]
    assert [p.name for p in tmp_path.glob("index-*.npy")] == [header["table"]["file"]]
    mf.shard_path(tmp_path, 2).unlink()
    with open(mf.shard_path(tmp_path, 0), "r+b") as fh:
        fh.seek(100)
        fh.write(b"\x00\x01")
    assert set(mf.completed_shards(tmp_path)) == {1}
    (tmp_path / mf.INDEX_NAME).write_text("{broken")
    with pytest.raises(mf.DatasetIndexError, match="invalid JSON"):
        mf.read_index(tmp_path)
