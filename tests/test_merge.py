"""``qmgen merge``: datasets of independent runs combined without recomputation.

Sources are small real datasets (shards written by qmgen's writer, rows known); the merged
dataset must serve exactly the sources' rows in order, pass ``verify``, share the shard
bytes (hard links) and refuse sources that do not belong together.
"""

from __future__ import annotations

import json
import os

import h5py
import numpy as np
import pytest
from test_shards import ATTRS, _flip_byte_in_chunk, assert_row_equal, write_dataset

import qmgen
from qmgen.cli import main
from qmgen.dataset.verify import verify_dataset
from qmgen.pipeline.merge import MergeError, merge
from qmgen.storage import manifest as mf
from qmgen.storage.files import sha256_file


def _edit_attrs(root, **changes) -> None:
    """Rewrite the level-of-theory attrs of a synthetic dataset's index.json."""
    index = json.loads((root / mf.INDEX_NAME).read_text())
    index["attrs"].update(changes)
    (root / mf.INDEX_NAME).write_text(json.dumps(index))


@pytest.fixture
def sources(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    rows_a, _ = write_dataset(a, (6, 0, 5), seed=1)
    rows_b, _ = write_dataset(b, (4, 7), seed=7)
    return a, b, rows_a + rows_b


def test_merge_serves_the_sources_rows_and_verifies(sources, tmp_path):
    a, b, rows = sources
    out = tmp_path / "out"
    result = merge(out, [a, b])
    assert result["n_shards"] == 5 and result["n_rows"] == len(rows) == 22
    assert result["n_link"] == 5 and result["n_copy"] == 0
    ds = qmgen.open_dataset(out)
    assert len(ds) == 22
    for got, want in zip(ds, rows, strict=True):
        assert_row_equal(got, want)
    problems, summary = verify_dataset(out)
    assert problems == [] and summary["n_failures"] == 10  # two per source shard
    # the shard bytes are shared, not copied: OUT's files are hard links of the sources'
    for new, (src, sid) in enumerate([(a, 0), (a, 1), (a, 2), (b, 0), (b, 1)]):
        assert os.stat(mf.shard_path(out, new)).st_ino == os.stat(mf.shard_path(src, sid)).st_ino
    merged = ds.attrs["merged_from"]
    assert [m["first_shard"] for m in merged] == [0, 3]
    assert [m["n_rows"] for m in merged] == [11, 11]
    assert ds.attrs["generator"] == "qmgen merge"


def test_copy_mode_and_a_merge_of_merges(sources, tmp_path):
    a, b, rows = sources
    ab = tmp_path / "ab"
    assert merge(ab, [a, b], mode="copy")["n_copy"] == 5
    assert os.stat(mf.shard_path(ab, 0)).st_ino != os.stat(mf.shard_path(a, 0)).st_ino
    c = tmp_path / "c"
    rows_c, _ = write_dataset(c, (3,), seed=11)
    abc = tmp_path / "abc"
    merge(abc, [ab, c])
    ds = qmgen.open_dataset(abc)
    for got, want in zip(ds, rows + rows_c, strict=True):
        assert_row_equal(got, want)
    assert [m["first_shard"] for m in ds.attrs["merged_from"]] == [0, 3, 5]
    assert verify_dataset(abc)[0] == []


def test_mismatched_sources_are_refused_by_name(sources, tmp_path):
    a, b, _ = sources
    _edit_attrs(b, basis="6-31g")
    with pytest.raises(MergeError, match=r"basis: 'sto-3g' in .*a, '6-31g' in .*b"):
        merge(tmp_path / "out", [a, b])
    assert not (tmp_path / "out").exists()  # refused before anything was written
    with pytest.raises(MergeError, match="given twice"):
        merge(tmp_path / "out", [a, a])
    with pytest.raises(MergeError, match="inside it"):
        merge(a / "sub", [a])
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    _edit_attrs(b, basis=ATTRS["basis"])
    with pytest.raises(MergeError, match="not empty"):
        merge(tmp_path / "full", [a, b])
    (b / mf.INDEX_NAME).unlink()
    with pytest.raises(MergeError, match="no index.json"):
        merge(tmp_path / "out", [a, b])


def test_same_input_twice_is_refused_unless_disjoint_splits(sources, tmp_path):
    a, b, _ = sources
    sha = "ab" * 32
    for root, split in ((a, "1/4"), (b, "1/4")):
        _edit_attrs(root, input={"sha256": sha}, config=dict(ATTRS["config"], split=split))
    with pytest.raises(MergeError, match="same input lines twice"):
        merge(tmp_path / "out", [a, b])
    _edit_attrs(b, config=dict(ATTRS["config"], split=None))
    with pytest.raises(MergeError, match="same input lines twice"):
        merge(tmp_path / "out", [a, b])
    _edit_attrs(b, config=dict(ATTRS["config"], split="3/4", limit=10))
    with pytest.raises(MergeError, match="--limit None and 10"):
        merge(tmp_path / "out", [a, b])
    _edit_attrs(b, config=dict(ATTRS["config"], split="3/4"))
    ds = qmgen.open_dataset(merge(tmp_path / "out", [a, b])["out_dir"])
    assert [m["split"] for m in ds.attrs["merged_from"]] == ["1/4", "3/4"]
    assert "split" not in ds.attrs["config"]


def test_a_corrupt_source_shard_stops_the_merge(sources, tmp_path):
    a, b, _ = sources
    _flip_byte_in_chunk(mf.shard_path(b, 1), "atoms/positions")
    with pytest.raises(MergeError, match=r"shard 1: file .* has sha256 .* its index says"):
        merge(tmp_path / "out", [a, b])
    assert not (tmp_path / "out" / mf.INDEX_NAME).exists()


def test_an_interrupted_merge_resumes(sources, tmp_path):
    a, b, rows = sources
    out = tmp_path / "out"
    merge(out, [a, b])
    # what a crash before the end leaves: no index, a torn manifest, a half-placed shard
    (out / mf.INDEX_NAME).unlink()
    for table in out.glob("index-*.npy"):
        table.unlink()
    lines = (out / mf.MANIFEST_NAME).read_bytes().splitlines(keepends=True)
    (out / mf.MANIFEST_NAME).write_bytes(b"".join(lines[:3]) + lines[3][:20])
    mf.shard_path(out, 4).unlink()
    with pytest.raises(MergeError, match="unfinished merge of other sources"):
        merge(out, [b, a])
    with pytest.warns(UserWarning, match="torn last line"):
        result = merge(out, [a, b])
    assert result["n_kept"] == 3 and result["n_link"] == 2
    ds = qmgen.open_dataset(out)
    for got, want in zip(ds, rows, strict=True):
        assert_row_equal(got, want)
    assert verify_dataset(out)[0] == []
    with pytest.raises(MergeError, match="finished merged dataset"):
        merge(out, [a, b])


def test_merge_command_line(sources, tmp_path, capsys):
    a, b, _ = sources
    out = tmp_path / "out"
    assert main(["merge", str(out), str(a), str(b), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "5 shards (5 linked), 22 conformers, 10 failure records" in printed
    assert main(["verify", str(out)]) == 0
    _edit_attrs(b, xc="pbe")
    assert main(["merge", str(tmp_path / "o2"), str(a), str(b), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "xc: 'b3lyp5'" in err[0] and "'pbe'" in err[0]
    # a shard's sha256 attribute inside OUT still names its source's shard id
    with h5py.File(mf.shard_path(out, 3), "r") as f:
        assert int(f.attrs["shard_id"]) == 0
    assert sha256_file(mf.shard_path(out, 3)) == sha256_file(mf.shard_path(b, 0))
    np.testing.assert_array_equal(
        qmgen.open_dataset(out).column("energy")[11:15], qmgen.open_dataset(b).column("energy")[:4]
    )
