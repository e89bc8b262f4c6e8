"""``qmgen generate --split K/N``: N jobs of a job array, each a disjoint part of one input.

Job K keeps the records whose input index modulo N is K - 1 (valid and invalid alike),
after ``--limit`` has cut the whole input; indices stay those of the whole input, and
conformers do not depend on the split.
"""

from __future__ import annotations

import numpy as np
import pytest
from test_pipeline_plan import MIXED

import qmgen
from qmgen.cli import main
from qmgen.pipeline.conformers import rebuild_record
from qmgen.pipeline.options import GenerateOptions, parse_split
from qmgen.pipeline.plan import make_plan
from qmgen.pipeline.run import generate
from qmgen.status import Status

LINES = [  # the planner tests' mixed input (header, invalid, blank, comment lines), then more
    *MIXED,
    "C[O] radical",
    "OCC ethanol_again",
    "CCN ethylamine",
    "C1CC1 cyclopropane",
    "[CH2] carbene",
    "O water",
    "N ammonia",
]
RECORDS = [1, 2, 3, 4, 6, 7, 9, 10, 11, 12, 13, 14, 15, 16]  # lines that are records


@pytest.fixture
def smi(tmp_path):
    path = tmp_path / "in.smi"
    path.write_text("\n".join(LINES) + "\n")
    return path


def indices(plan) -> list[int]:
    return sorted(i for s in plan.shards for i in s.molecule_indices)


def statuses(plan) -> dict[int, int]:
    records = plan.records
    return dict(zip(records.molecule_index.tolist(), records.status.tolist(), strict=True))


def test_four_jobs_are_disjoint_and_cover_the_input(smi):
    whole = make_plan(smi, GenerateOptions(shard_size=2))
    assert indices(whole) == RECORDS
    parts = [make_plan(smi, GenerateOptions(shard_size=2, split=f"{k}/4")) for k in range(1, 5)]
    sets = [set(indices(p)) for p in parts]
    for k, part in enumerate(sets, start=1):
        assert part == {i for i in RECORDS if i % 4 == k - 1}
    assert sum(len(s) for s in sets) == len(RECORDS) and set().union(*sets) == set(RECORDS)
    # each record has the status it has in the whole input; valid and invalid alike split
    merged: dict[int, int] = {}
    for p in parts:
        merged.update(statuses(p))
    assert merged == statuses(whole)
    assert [p.n_records for p in parts] == [3, 3, 4, 4]
    assert sum(p.n_valid for p in parts) == whole.n_valid == 10
    # each job is a dataset of its own: the split is in the options hash
    hashes = {p.options_hash for p in parts} | {whole.options_hash}
    assert len(hashes) == 5


def test_limit_cuts_the_whole_input_before_the_split(smi):
    whole = make_plan(smi, GenerateOptions(limit=6))
    assert indices(whole) == RECORDS[:6]
    parts = [make_plan(smi, GenerateOptions(limit=6, split=f"{k}/3")) for k in (1, 2, 3)]
    assert [indices(p) for p in parts] == [[3, 6], [1, 4, 7], [2]]
    assert sorted(i for p in parts for i in indices(p)) == indices(whole)


def test_conformers_do_not_depend_on_the_split(smi):
    opts = GenerateOptions(conformers=2)
    whole = {it.molecule_index: it for s in make_plan(smi, opts).shards for it in s.items}
    part = make_plan(smi, GenerateOptions(conformers=2, split="2/4"))
    items = [it for s in part.shards for it in s.items if it.ok]
    assert [it.molecule_index for it in items] == [1, 9, 13]  # by shape, then index
    for it in items:
        a = rebuild_record(it, opts.chem_options())
        b = rebuild_record(whole[it.molecule_index], opts.chem_options())
        assert a.molecule_index == it.molecule_index and len(a.conformers) == 2
        for x, y in zip(a.conformers, b.conformers, strict=True):
            assert np.array_equal(x.positions, y.positions)


@pytest.mark.parametrize(
    "split, words",
    [
        ("0/4", "K must be in 1..4"),
        ("5/4", "K must be in 1..4"),
        ("1/0", "N must be >= 1"),
        ("a/b", "'K/N' with integers"),
        ("1-4", "'K/N' with integers"),
        ("", "'K/N' with integers"),
        ("1/4/2", "'K/N' with integers"),
        ("-1/4", "'K/N' with integers"),
        (3, "'K/N' with integers"),
    ],
)
def test_invalid_splits_are_refused(split, words):
    with pytest.raises(ValueError, match=words.replace(".", r"\.").replace("(", r"\(")):
        GenerateOptions(split=split)


def test_split_is_normalised_and_stored_only_when_set():
    assert GenerateOptions(split=" 2 / 4 ").split == "2/4" == GenerateOptions(split="2/4").split
    assert parse_split("4/4") == (4, 4) and parse_split("1/1") == (1, 1)
    assert GenerateOptions(split="2/4").to_dict()["split"] == "2/4"
    assert "split" not in GenerateOptions().to_dict()  # unsplit: the hash of older runs
    sha = "ab" * 32
    assert GenerateOptions(split="1/1").digest(sha) != GenerateOptions().digest(sha)


def test_cli_refuses_a_bad_split_in_one_line(smi, tmp_path, capsys):
    code = main(["generate", str(smi), "--out", str(tmp_path / "ds"), "--split", "5/4"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert "split '5/4'" in err[0] and "1..4" in err[0]
    assert not (tmp_path / "ds").exists()


@pytest.fixture(scope="module")
def client():
    from qmgen.pipeline.cluster import local_cluster

    cluster, client = local_cluster(workers=1, allowed_failures=1)
    yield client
    client.close()
    cluster.close()


def test_generate_split_over_four_jobs_stores_every_line_once(tmp_path, client):
    """Real runs on a line-only input (failures need no SCF): every line in one job."""
    bad = ["C1CC unclosed", "Xx1 no_element", "[CH3] methyl", "[Si] silicon", "", "[NH4] odd"]
    bad += ["C(C)(C)(C)(C)C pentavalent", "# comment", "xx2 junk", "[OH] hydroxyl"]
    path = tmp_path / "bad.smi"
    path.write_text("\n".join(bad) + "\n")
    owner: dict[int, int] = {}
    for k in range(1, 5):
        out = tmp_path / f"part-{k}"
        summary = generate(path, out, client=client, progress=False, split=f"{k}/4")
        assert summary["complete"] and summary["n_rows"] == 0
        ds = qmgen.open_dataset(out)
        for f in ds.failures:
            assert f["molecule_index"] % 4 == k - 1 and f["molecule_index"] not in owner
            assert f["status"] != Status.OK and f["input"] == bad[f["molecule_index"]]
            owner[f["molecule_index"]] = k
    assert sorted(owner) == [0, 1, 2, 3, 5, 6, 8, 9]  # every line but the blank and comment
