"""The compact shard index and the nested layout: what a million-shard dataset relies on.

The table (``index-<sha16>.npy``, memory-mapped) must give the same entries as the
manifest it was built from, be refused when tampered with (with a message naming the
problem), travel to DataLoader workers as a path rather than as data, and leave older
datasets (JSON shard list, flat ``shards/``) readable.
"""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
from test_shards import ATTRS, assert_row_equal, legacy_index, write_dataset

import qmgen
from qmgen.dataset.verify import verify_dataset
from qmgen.pipeline.merge import merge
from qmgen.storage import manifest as mf
from qmgen.storage.table import SHARDS_PER_DIR, TABLE_DTYPE, shard_relpath, table_of


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("ds")
    rows, _ = write_dataset(root, (6, 0, 5))
    return root, rows


@pytest.fixture
def copy(data, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(data[0], root)
    return root


def test_layout_puts_1000_shards_per_directory():
    assert shard_relpath(0) == "shards/0000/shard-000000.h5"
    assert shard_relpath(999) == "shards/0000/shard-000999.h5"
    assert shard_relpath(1000) == "shards/0001/shard-001000.h5"
    assert shard_relpath(999_999) == "shards/0999/shard-999999.h5"
    assert shard_relpath(12_345_678) == "shards/12345/shard-12345678.h5"
    groups = {shard_relpath(i).rsplit("/", 1)[0] for i in range(0, 1_000_000, 997)}
    assert len(groups) == 1_000_000 // SHARDS_PER_DIR


def test_table_matches_the_manifest_and_last_entry_wins(data):
    root, rows = data
    index = mf.read_index(root)
    assert index["index_format"] == 2 and index["n_shards"] == 3
    manifest = mf.read_manifest(root)
    table = index["table"]
    assert isinstance(table.data, np.memmap)  # mapped, not parsed
    assert [{k: v for k, v in table[i].items() if k != "row_offset"} for i in range(3)] == manifest
    assert table.offsets.tolist() == [0, 6, 6, 11] and len(rows) == 11
    # a shard computed twice (a resume) has two manifest lines: the later one counts
    later = dict(manifest[1], n_rows=4, sha256="f" * 64)
    data2 = table_of([manifest[2], manifest[0], manifest[1], later])
    assert data2["shard_id"].tolist() == [0, 1, 2]
    assert data2["n_rows"].tolist() == [6, 4, 5] and data2["row_offset"].tolist() == [0, 6, 10]
    assert bytes(data2["sha256"][1]).hex() == "f" * 64


def test_a_pickled_dataset_carries_the_table_path_not_its_rows(data):
    root, rows = data
    ds = qmgen.open_dataset(root)
    ds[0]  # opened and verified in this process
    blob = pickle.dumps(ds)
    assert len(blob) < 4000  # config, path and verified state; the table is re-mapped
    other = pickle.loads(blob)
    assert isinstance(other._store.table.data, np.memmap)
    for got, want in zip(other, rows, strict=True):
        assert_row_equal(got, want)


def _write_table(root: Path, data: np.ndarray, **header_changes) -> None:
    """Replace the table with ``data`` (raw, unchecked) and patch index.json to match."""
    index = json.loads((root / mf.INDEX_NAME).read_text())
    (root / index["table"]["file"]).unlink()
    name = "index-" + "0" * 16 + ".npy"
    np.save(root / name, data, allow_pickle=True)
    index["table"].update(file=name, size=(root / name).stat().st_size)
    index.update(header_changes)
    (root / mf.INDEX_NAME).write_text(json.dumps(index))


def _table(root: Path) -> np.ndarray:
    return np.array(mf.read_index(root)["table"].data)


def _edit(field: str, i: int, value):
    def edit(d):
        d[field][i] = value
        return d

    return edit


TAMPERED = [
    (_edit("n_rows", 0, -1), "shard 0: n_rows -1 is outside 0..", {}),
    (_edit("n_failures", 2, 2**50), "shard 2: n_failures", {}),
    (_edit("shard_id", 1, 0), "shard 1: shard_id 0 repeats or is out of order", {}),
    (_edit("shard_id", 2, -3), "shard 2: shard_id -3 is outside", {}),
    (_edit("row_offset", 2, 3), "shard 2: row_offset 3, the rows before it add up to 6", {}),
    (_edit("size", 0, -7), "shard 0: size -7 is outside", {}),
    (lambda d: d, "n_rows 12, the shard table adds up to 11", dict(n_rows=12)),
    (lambda d: d[:2], "n_shards 3, the shard table adds up to 2", {}),
    (lambda d: d["n_rows"], "shard table of dtype int64", {}),
    (lambda d: np.array([object()] * 3), "not a readable shard table", {}),
]


@pytest.mark.parametrize("edit, words, header", TAMPERED)
def test_a_tampered_table_is_refused_by_name(copy, capsys, edit, words, header):
    from qmgen.cli import main

    _write_table(copy, edit(_table(copy)), **header)
    with pytest.raises(mf.DatasetIndexError, match=words.replace("(", r"\(").replace(")", r"\)")):
        qmgen.open_dataset(copy)
    assert main(["verify", str(copy)]) == 1
    assert words in capsys.readouterr().out
    assert main(["info", str(copy)]) == 2
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err


@pytest.mark.parametrize(
    "spec, words",
    [
        (dict(file="../index-0000000000000000.npy"), "is not index-<hex16>.npy"),
        (dict(file="/etc/passwd"), "is not index-<hex16>.npy"),
        (dict(file="index-00000000000000ff.npy"), "is missing"),
        (dict(size=12), "bytes, index.json says 12 (truncated or replaced)"),
    ],
)
def test_a_table_entry_of_index_json_is_checked(copy, spec, words):
    index = json.loads((copy / mf.INDEX_NAME).read_text())
    index["table"].update(spec)
    (copy / mf.INDEX_NAME).write_text(json.dumps(index))
    with pytest.raises(mf.DatasetIndexError, match=words.replace("(", r"\(").replace(")", r"\)")):
        qmgen.open_dataset(copy)


def test_verify_checks_the_table_checksum(copy):
    index = json.loads((copy / mf.INDEX_NAME).read_text())
    path = copy / index["table"]["file"]
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 0x01  # the last digest byte of the last shard: values still in range
    path.write_bytes(bytes(raw))
    problems, _ = verify_dataset(copy)
    kinds = {(kind, name) for kind, name, _ in problems}
    assert ("CORRUPT", index["table"]["file"]) in kinds  # the table itself
    assert ("CORRUPT", "shards/0000/shard-000002.h5") in kinds  # and the shard it misdescribes


def test_an_older_dataset_reads_verifies_and_merges(data, tmp_path):
    """JSON shard list in index.json and flat shards/, as qmgen wrote before the table."""
    root, rows = data
    old = tmp_path / "old"
    shutil.copytree(root, old)
    index = legacy_index(old)
    for entry in index["shards"]:
        flat = old / "shards" / Path(entry["file"]).name
        (old / entry["file"]).rename(flat)
        entry["file"] = flat.relative_to(old).as_posix()
    (old / "shards" / "0000").rmdir()
    (old / mf.INDEX_NAME).write_text(json.dumps(index))
    lines = [{k: v for k, v in e.items() if k != "row_offset"} for e in index["shards"]]
    (old / mf.MANIFEST_NAME).write_text("".join(json.dumps(e) + "\n" for e in lines))
    ds = qmgen.open_dataset(old)
    assert ds.shards[2]["file"] == "shards/shard-000002.h5"
    for got, want in zip(ds, rows, strict=True):
        assert_row_equal(got, want)
    assert verify_dataset(old)[0] == []
    new = tmp_path / "new"
    merge(new, [old])  # into the nested layout and the compact index
    assert (new / "shards" / "0000" / "shard-000002.h5").is_file()
    for got, want in zip(qmgen.open_dataset(new), rows, strict=True):
        assert_row_equal(got, want)


def test_write_index_refuses_files_outside_the_layout(tmp_path):
    entry = dict(shard_id=3, file="shards/shard-000003.h5", n_rows=1, n_failures=0)
    with pytest.raises(ValueError, match="not its place in the layout"):
        mf.write_index(tmp_path, ATTRS, [dict(entry, sha256="0" * 64)])
    assert TABLE_DTYPE.itemsize == 72  # bytes per shard: 72 MB at a million shards
