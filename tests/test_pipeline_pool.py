"""Conformers made by a pool of CPU processes (:mod:`qmgen.pipeline.conformers`), no Dask, no SCF.

Real spawned processes: their records equal the in-thread ones bit for bit, failures
included (bad SMILES, an item whose rebuild raises, an invalid item), chunk by chunk; a
pool process that dies does not sink the shard: the item that kills it is stored as an
EMBED_FAILED record, its neighbours are unaffected, and the next shard gets a new pool.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from qmgen.cli import build_parser
from qmgen.pipeline import conformers
from qmgen.pipeline.conformers import chunks, record_source
from qmgen.pipeline.options import GenerateOptions
from qmgen.pipeline.plan import make_plan
from qmgen.pipeline.records import PlanItem
from qmgen.pipeline.run import generate
from qmgen.status import Status

LINES = ["CCO ethanol", "c1ccccc1O phenol", "C1CC( not_smiles", "CC(=O)N acetamide", "COC dme"]


@pytest.fixture(scope="module", autouse=True)
def _stop_pools():
    yield
    conformers.shutdown_conformer_pools()


@pytest.fixture(scope="module")
def items(tmp_path_factory):
    """Valid plan items, one the plan rejects, and two it accepts whose rebuild fails."""
    path = tmp_path_factory.mktemp("pool") / "in.smi"
    path.write_text("\n".join(LINES) + "\n")
    out = [it for s in make_plan(path, GenerateOptions(conformers=2)).shards for it in s.items]
    assert [it.ok for it in out].count(False) == 1  # the bad SMILES: no record to make
    out.append(PlanItem(10, "smiles", "C1CC( planned_valid", int(Status.OK)))  # INVALID_INPUT
    two_frames = "2\n\nH 0 0 0\nH 0 0 0.74\n" * 2
    out.append(PlanItem(11, "xyz", two_frames, int(Status.OK)))  # rebuild raises
    return out


class KillsItsProcess(str):
    """Input text that kills the process it is unpickled in (as a segfault would)."""

    def __reduce__(self):
        return (os._exit, (70,))


def take_all(items, processes, chem, chunk_size=0):
    timing = dict(conformers=0.0)
    parts = chunks(items, chem.n_conformers, chunk_size)
    source = record_source(items, chem, processes, timing, parts)
    records = [r for part in parts for r in source.take(part)]
    source.close()
    assert source.processes == processes
    return records, timing


def assert_same_record(a, b):
    if a is None or b is None:
        assert a is None and b is None
        return
    for field in ("molecule_index", "status", "message", "smiles", "name", "raw", "format"):
        assert getattr(a, field) == getattr(b, field), field
    assert len(a.conformers) == len(b.conformers)
    for x, y in zip(a.conformers, b.conformers, strict=True):
        assert np.array_equal(x.z, y.z) and np.array_equal(x.positions, y.positions)


def test_pool_records_equal_in_thread_records(items):
    chem = GenerateOptions(conformers=2).chem_options()
    here, t_here = take_all(items, 0, chem)
    pooled, t_pool = take_all(items, 2, chem, chunk_size=4)  # three chunks
    assert len(pooled) == len(items)
    for a, b in zip(here, pooled, strict=True):
        assert_same_record(a, b)
    assert t_pool["conformers"] > 0 and t_here["conformers"] > 0
    by_index = {r.molecule_index: r for r in pooled if r is not None}
    assert by_index[10].status == Status.INVALID_INPUT
    assert by_index[11].status == Status.EMBED_FAILED
    assert "making conformers raised ValueError" in by_index[11].message
    assert all(len(by_index[i].conformers) == 2 for i in (0, 1, 3, 4))


def test_a_crashing_item_becomes_a_failure_record(items):
    chem = GenerateOptions(conformers=2).chem_options()
    here, _ = take_all(items, 0, chem)
    crash = PlanItem(12, "smiles", KillsItsProcess("CCO"), int(Status.OK), smiles="CCO")
    mixed = items[:2] + [crash] + items[2:]
    pooled, _ = take_all(mixed, 2, chem, chunk_size=4)
    record = pooled[2]
    assert record.molecule_index == 12 and record.status == Status.EMBED_FAILED
    assert record.message == conformers.CRASH_MESSAGE and record.smiles == "CCO"
    for a, b in zip(here, pooled[:2] + pooled[3:], strict=True):
        assert_same_record(a, b)
    # the broken shared pool was replaced: the next shard uses a working one
    again, _ = take_all(items, 2, chem)
    for a, b in zip(here, again, strict=True):
        assert_same_record(a, b)


def test_conformer_processes_option(tmp_path):
    assert conformers.conformer_processes(None) == 0  # CPU: the cores compute
    assert conformers.conformer_processes(3) == 3 and conformers.conformer_processes(0) == 0
    assert 1 <= conformers.auto_conformer_processes() <= conformers.AUTO_MAX_PROCESSES
    args = build_parser().parse_args(["generate", "in.smi", "-o", "ds"])
    assert args.conformer_processes is None
    args = build_parser().parse_args(
        ["generate", "in.smi", "-o", "ds", "--conformer-processes", "2"]
    )
    assert args.conformer_processes == 2
    with pytest.raises(ValueError, match="conformer_processes"):
        generate(tmp_path / "in.smi", tmp_path / "ds", conformer_processes=-1)
    assert not (tmp_path / "ds").exists()
