"""Planning, option checks and the shard task's pieces of ``qmgen generate`` (no Dask, no
SCF): deterministic shard assignment, shape sorting, refusal of changed options, input
records rebuilt in a worker identical to the reader's."""

from __future__ import annotations

import json

import numpy as np
import pytest

from qmgen.chem import read_molecules
from qmgen.pipeline.conformers import chunks, rebuild_record
from qmgen.pipeline.options import GenerateOptions
from qmgen.pipeline.plan import auto_shard_size, make_plan
from qmgen.pipeline.run import DatasetExistsError, prepare_directory
from qmgen.pipeline.task import outcome
from qmgen.status import Status
from qmgen.storage.schema import SCHEMA_VERSION

MIXED = [
    "smiles name",  # header: no record
    "CCO ethanol",
    "c1ccccc1 benzene",
    "C methane",
    "xx1 not_smiles",
    "",
    "CC ethane",
    "[Si](C)(C)C silicon",
    "# a comment",
    "COC dimethyl_ether",
]


@pytest.fixture
def smi(tmp_path):
    path = tmp_path / "in.smi"
    path.write_text("\n".join(MIXED) + "\n")
    return path


def test_plan_is_deterministic_and_complete(smi):
    opts = GenerateOptions(shard_size=2)
    a, b = make_plan(smi, opts), make_plan(smi, opts)
    assert a.to_json() == b.to_json()
    indices = [i for s in a.shards for i in s.molecule_indices]
    # every record once; header, blank and comment lines give none
    assert sorted(indices) == [1, 2, 3, 4, 6, 7, 9]
    assert a.n_records == 7 and a.n_valid == 5
    # valid records first, sorted by shape (small molecules first), failures in the last shard
    valid_shards = [s for s in a.shards if s.n_conformers]
    assert [s.molecule_indices for s in valid_shards] == [[3, 6], [1, 9], [2]]
    assert a.shards[-1].molecule_indices == [4, 7] and a.shards[-1].n_conformers == 0
    assert [s.shard_id for s in a.shards] == list(range(len(a.shards)))
    # options and input content are part of the identity
    assert (
        make_plan(smi, GenerateOptions(shard_size=2, basis="6-31g")).options_hash != a.options_hash
    )
    smi.write_text("\n".join(MIXED + ["O water"]) + "\n")
    assert make_plan(smi, opts).options_hash != a.options_hash


def test_limit_takes_the_first_records(smi):
    plan = make_plan(smi, GenerateOptions(limit=3))
    assert sorted(i for s in plan.shards for i in s.molecule_indices) == [1, 2, 3]
    assert plan.options_hash != make_plan(smi, GenerateOptions()).options_hash


def test_conformers_count_towards_shard_size(smi):
    plan = make_plan(smi, GenerateOptions(shard_size=4, conformers=2))
    assert [s.n_conformers for s in plan.shards if s.n_conformers] == [4, 4, 2]


def test_auto_shard_size():
    assert auto_shard_size(10) == 8
    assert auto_shard_size(800) == 100
    assert auto_shard_size(10**9) == 1000


def test_options_are_validated():
    with pytest.raises(ValueError, match="precision"):
        GenerateOptions(precision="float16")
    with pytest.raises(ValueError, match="basis"):
        GenerateOptions(basis="no-such-basis")
    with pytest.raises(ValueError):
        GenerateOptions(xc="nonsense")
    with pytest.raises(ValueError, match="conformers"):
        GenerateOptions(conformers=0)
    assert GenerateOptions(elements="HCNOF").elements == GenerateOptions().elements


def test_changed_options_are_refused(tmp_path, smi):
    root = tmp_path / "ds"
    root.mkdir()
    opts, sha = GenerateOptions(), "ab" * 32
    config = dict(options=opts.to_dict(), options_hash=opts.digest(sha), input={"sha256": sha})
    config.update(schema_version=SCHEMA_VERSION, shard_layout="nested-1000")  # as generate
    assert prepare_directory(root, config, new=False) is False
    (root / "config.json").write_text(json.dumps(config))
    assert prepare_directory(root, config, new=False) is True  # same options: resume
    other = GenerateOptions(basis="6-31g", forces=True)
    changed = dict(options=other.to_dict(), options_hash=other.digest(sha), input={"sha256": sha})
    with pytest.raises(DatasetExistsError) as info:
        prepare_directory(root, changed, new=False)
    text = str(info.value)
    assert "basis: 'sto-3g' -> '6-31g'" in text and "forces: False -> True" in text
    assert "--new" in text
    (root / "shards").mkdir()
    (root / "shards" / "shard-000000.h5").write_bytes(b"x")
    assert prepare_directory(root, changed, new=True) is False
    assert not (root / "config.json").exists() and not any((root / "shards").iterdir())
    stranger = tmp_path / "other"
    stranger.mkdir()
    (stranger / "notes.txt").write_text("mine")
    with pytest.raises(DatasetExistsError, match="not empty"):
        prepare_directory(stranger, config, new=False)


def _same_conformers(a, b):
    assert a.molecule_index == b.molecule_index and a.status == b.status
    assert a.smiles == b.smiles and len(a.conformers) == len(b.conformers)
    for x, y in zip(a.conformers, b.conformers, strict=True):
        assert np.array_equal(x.z, y.z) and np.array_equal(x.positions, y.positions)


def test_rebuilt_records_match_the_reader(tmp_path, smi):
    """A worker rebuilds a record from its text: same seeded conformers as the reader."""
    opts = GenerateOptions(conformers=2)
    plan = make_plan(smi, opts)
    direct = {r.molecule_index: r for r in read_molecules(smi, n_conformers=2)}
    for it in (it for s in plan.shards for it in s.items if it.ok):
        _same_conformers(rebuild_record(it, opts.chem_options()), direct[it.molecule_index])
    # XYZ (multi-frame) and SDF inputs
    from rdkit import Chem

    frames = [direct[1].conformers[0], direct[9].conformers[1]]
    xyz = tmp_path / "in.xyz"
    xyz.write_text("".join(m.to_xyz() + "\n" for m in frames))
    sdf = tmp_path / "in.sdf"
    with Chem.SDWriter(str(sdf)) as w:
        for s in ("CCO", "OCC=O"):
            w.write(Chem.MolFromSmiles(s))  # 2-D blocks: embedded like SMILES
    for path in (xyz, sdf):
        direct = {r.molecule_index: r for r in read_molecules(path, n_conformers=2)}
        plan = make_plan(path, opts)
        items = [it for s in plan.shards for it in s.items]
        assert len(items) == 2 and all(it.ok for it in items)
        for it in items:
            _same_conformers(rebuild_record(it, opts.chem_options()), direct[it.molecule_index])


def test_chunks_and_outcomes(smi):
    plan = make_plan(smi, GenerateOptions(conformers=2))
    items = [it for s in plan.shards for it in s.items]
    assert chunks(items, 2, 0) == [items]  # default: the whole shard in one compute call
    parts = chunks(items, 2, 4)
    assert [it for p in parts for it in p] == items
    assert all(sum(2 for it in p if it.ok) <= 4 for p in parts)
    bad = next(it for it in items if not it.ok)
    rows, failures = outcome(bad, None, [])
    assert rows == [] and failures[0]["status"] == bad.status and failures[0]["input"] == bad.raw
    good = next(it for it in items if it.ok)
    rec = rebuild_record(good, GenerateOptions(conformers=2).chem_options())
    res = [
        dict(status=int(Status.COMPUTE_ERROR), message="boom"),
        dict(status=int(Status.NON_FINITE), message="non-finite result"),
    ]
    rows, failures = outcome(good, rec, res)
    assert rows == [] and [f["message"] for f in failures] == [
        "conformer 0: boom",
        "conformer 1: non-finite result",
    ]
