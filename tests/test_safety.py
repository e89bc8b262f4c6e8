"""Hostile datasets: what ``open_dataset`` and ``verify`` refuse to trust.

Datasets travel, so a shard table may have been edited by someone else. Each test plants
one hostile change in a copy of a small real dataset (shards written by qmgen's writer)
and checks that the loader refuses it with an error naming the entry, that ``qmgen
verify`` reports it, and that no byte of a file outside the dataset directory is served,
hashed or echoed. Careless runs of ``qmgen generate`` are in test_safety_cli.py.
"""

from __future__ import annotations

import json
import shutil

import h5py
import numpy as np
import pytest
from test_shards import legacy_index, write_dataset

import qmgen
from qmgen.cli import main
from qmgen.storage import manifest as mf
from qmgen.storage.files import sha256_file
from qmgen.storage.schema import CorruptShardError


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("ds")
    write_dataset(root, (6, 0, 5))
    return root


@pytest.fixture
def copy(data, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(data, root)
    return root


def edit_index(root, edit) -> None:
    """Edit index.json in the JSON shard-list form older qmgen wrote (converted first; the
    compact table's own checks are in test_scale_index.py)."""
    index = json.loads((root / mf.INDEX_NAME).read_text())
    if "index_format" in index:
        index = legacy_index(root)
    edit(index)
    (root / mf.INDEX_NAME).write_text(json.dumps(index))


def rewrite_manifest(root, edit) -> None:
    lines = [json.loads(x) for x in (root / mf.MANIFEST_NAME).read_text().splitlines()]
    for entry in lines:
        edit(entry)
    (root / mf.MANIFEST_NAME).write_text("".join(json.dumps(e) + "\n" for e in lines))


def reseal(root, shard_id: int) -> None:
    """Record a modified shard's new checksum and size everywhere, as a forger would."""
    path = mf.shard_path(root, shard_id)
    digest, size = sha256_file(path), path.stat().st_size

    def fix(entry):
        if entry["shard_id"] == shard_id:
            entry.update(sha256=digest, size=size)

    edit_index(root, lambda index: [fix(e) for e in index["shards"]])
    rewrite_manifest(root, fix)


def verify_cli(root, capsys) -> tuple[int, str]:
    rc = main(["verify", str(root)])
    captured = capsys.readouterr()
    return rc, captured.out + captured.err


# ----------------------------------------------------------------- paths outside shards/
OUTSIDE = ["../outside.h5", "shards/../../outside.h5", "{abs}", "/etc/passwd", "index.json"]
OUTSIDE += ["shards/x\\..\\..\\outside.h5", "shards/./shard-000000.h5", ""]


@pytest.mark.parametrize("name", OUTSIDE)
def test_shard_file_outside_shards_is_refused(copy, tmp_path, capsys, name):
    outside = tmp_path / "outside.h5"  # a real shard, with the right checksum, elsewhere
    shutil.copy(mf.shard_path(copy, 0), outside)
    name = name.format(abs=outside)
    edit_index(copy, lambda index: index["shards"][0].update(file=name))
    with pytest.raises(mf.DatasetIndexError, match=r"shards\[0\].*shard file.*refused"):
        qmgen.open_dataset(copy)
    rc, out = verify_cli(copy, capsys)
    assert rc == 1 and "refused" in out
    assert "sha256 " not in out  # nothing outside was hashed (/etc/passwd's digest, say)
    # the same entry in the manifest (index.json gone: the loader reads the manifest)
    (copy / mf.INDEX_NAME).unlink()
    rewrite_manifest(copy, lambda e: e.update(file=name) if e["shard_id"] == 0 else None)
    with pytest.raises(mf.DatasetIndexError, match=r"manifest.jsonl, line 1.*refused"):
        qmgen.open_dataset(copy)
    rc, out = verify_cli(copy, capsys)
    assert rc == 1 and "manifest.jsonl, line 1" in out


def test_symlink_out_of_the_dataset_is_refused(copy, tmp_path, capsys):
    outside = tmp_path / "elsewhere.h5"
    shard = mf.shard_path(copy, 0)
    shutil.move(shard, outside)
    shard.symlink_to(outside)  # same bytes, same checksum: only the location is wrong
    ds = qmgen.open_dataset(copy)
    with pytest.raises(mf.DatasetIndexError, match="outside the dataset directory"):
        ds[0]
    rc, out = verify_cli(copy, capsys)
    assert rc == 1 and "resolves (through a symlink) outside" in out
    # a symlinked shards/ directory that leads out is refused the same way
    (copy / "shards").rename(tmp_path / "moved-shards")
    (copy / "shards").symlink_to(tmp_path / "moved-shards")
    with pytest.raises(mf.DatasetIndexError, match="outside the dataset directory"):
        qmgen.open_dataset(copy)[len(qmgen.open_dataset(copy)) - 1]


def test_symlink_inside_the_dataset_is_followed(copy):
    shard = mf.shard_path(copy, 2)
    target = copy / "shards" / "moved.h5"
    shard.rename(target)
    shard.symlink_to("../moved.h5")
    ds = qmgen.open_dataset(copy)
    assert len(ds) == 11 and ds[10]["energy"] == qmgen.open_dataset(copy)[10]["energy"]


def test_two_entries_for_one_file_are_refused(copy):
    def dup(index):
        index["shards"][2]["file"] = index["shards"][0]["file"]

    edit_index(copy, dup)
    with pytest.raises(mf.DatasetIndexError, match="repeats shard"):
        qmgen.open_dataset(copy)


# ----------------------------------------------------------------- shards that point away
def _external_link(f, other):
    del f["conformers/energy"]
    f["conformers/energy"] = h5py.ExternalLink(str(other), "/energy")


def _virtual(f, other):
    n = f["conformers/energy"].shape[0]
    del f["conformers/energy"]
    layout = h5py.VirtualLayout(shape=(n,), dtype="f8")
    layout[:] = h5py.VirtualSource(str(other), "energy", shape=(n,))
    f.create_virtual_dataset("conformers/energy", layout)


def _external_storage(f, other):
    n = f["conformers/energy"].shape[0]
    raw = other.with_suffix(".raw")
    raw.write_bytes(np.full(n, 42.0).tobytes())
    del f["conformers/energy"]
    f.create_dataset("conformers/energy", (n,), "f8", external=[(str(raw), 0, 8 * n)])


def _soft_link(f, other):
    del f["conformers/energy"]
    f["conformers/energy"] = h5py.SoftLink("/conformers/homo")


@pytest.mark.parametrize(
    "plant, words",
    [
        (_external_link, "ExternalLink"),
        (_virtual, "virtual dataset"),
        (_external_storage, "external files"),
        (_soft_link, "SoftLink"),
    ],
)
def test_shard_with_foreign_data_is_refused(data, copy, tmp_path, capsys, plant, words):
    other = tmp_path / "other.h5"
    n = 5  # rows of shard 2
    with h5py.File(other, "w") as f:
        f["energy"] = np.full(n, 42.0)
    path = mf.shard_path(copy, 2)
    with h5py.File(path, "r+") as f:
        plant(f, other)
    reseal(copy, 2)
    with h5py.File(path, "r") as f:  # the attack works on a plain HDF5 reader
        honest = [row["energy"] for row in qmgen.open_dataset(data)][6:]
        assert not np.array_equal(f["conformers/energy"][()], honest)
    ds = qmgen.open_dataset(copy)
    assert ds[0]["energy"] < 0  # shard 0 is sound
    with pytest.raises(CorruptShardError, match=f"outside itself.*{words}"):
        ds[6]
    rc, out = verify_cli(copy, capsys)
    assert rc == 1 and "CORRUPT shards/0000/shard-000002.h5" in out and words in out


# ----------------------------------------------------------------- values of index.json
BAD_VALUES = [
    (lambda i: i["shards"][0].update(n_rows=-1), "n_rows must be an integer"),
    (lambda i: i["shards"][0].update(n_rows=10**30), "n_rows must be an integer"),
    (lambda i: i["shards"][0].update(n_rows=6.0), "n_rows must be an integer"),
    (lambda i: i["shards"][0].update(n_rows=True), "n_rows must be an integer"),
    (lambda i: i["shards"][0].update(n_failures=float("inf")), "n_failures must be"),
    (lambda i: i["shards"][0].update(shard_id="0"), "shard_id must be"),
    (lambda i: i["shards"][0].update(size=-5), "size must be"),
    (lambda i: i["shards"][0].update(sha256="zz"), "sha256 is not 64 hex digits"),
    (lambda i: i["shards"][1].update(row_offset=3), "row_offset 3"),
    (lambda i: i.update(n_rows=12), "n_rows 12, the shards add up to 11"),
    (lambda i: i.update(row_offsets=[0, 6, 6, 99]), "row_offsets disagree"),
    (lambda i: i["shards"].append(dict(i["shards"][0])), "repeats shard 0"),
    (lambda i: i.update(shards={"a": 1}), "shards a list"),
    (lambda i: i["shards"].__setitem__(0, [1, 2]), "not a shard entry"),
    (lambda i: i.update(schema_version=99), "schema_version 99"),
]


@pytest.mark.parametrize("edit, words", BAD_VALUES)
def test_index_values_are_validated(copy, capsys, edit, words):
    edit_index(copy, edit)
    with pytest.raises(mf.DatasetIndexError, match=words.replace("[", r"\[")):
        qmgen.open_dataset(copy)
    assert main(["info", str(copy)]) == 2
    err = capsys.readouterr().err
    assert words in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    rc, out = verify_cli(copy, capsys)
    assert rc == 1 and words in out


@pytest.mark.parametrize(
    "text, words",
    [
        ("{not json", "invalid JSON at line 1, column 2"),
        ('{\n "schema_version": 1,\n "shards": [,]}', "invalid JSON at line 3"),
        ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
        ('{"n_rows": ' + "9" * 5000 + "}", "unreadable JSON value"),
        ("[1, 2]", "not a JSON object"),
        ("\xff\xfe", "not UTF-8"),
    ],
)
def test_malformed_index_is_a_clear_error(copy, capsys, text, words):
    (copy / mf.INDEX_NAME).write_bytes(text.encode("latin-1" if "\xff" in text else "utf-8"))
    with pytest.raises(mf.DatasetIndexError, match=words):
        qmgen.open_dataset(copy)
    assert main(["info", str(copy)]) == 2
    err = capsys.readouterr().err
    assert words in err and "index.json" in err and "Traceback" not in err


def test_negative_rows_no_longer_hide_rows(copy):
    """The reported attack: n_rows -1 made the loader serve 10 of 11 rows, no error."""
    index = legacy_index(copy)
    index["shards"][0].update(n_rows=5)
    mf.write_index(copy, index["attrs"], index["shards"])  # consistent offsets and totals
    ds = qmgen.open_dataset(copy)  # consistent, but the shard itself holds 6 rows
    with pytest.raises(CorruptShardError, match="holds 6 rows, index.json says 5"):
        ds[0]


def test_manifest_line_values_are_validated(copy, capsys):
    lines = (copy / mf.MANIFEST_NAME).read_text().splitlines()
    bad = json.loads(lines[1])
    bad["n_failures"] = -2
    lines[1] = json.dumps(bad)
    (copy / mf.MANIFEST_NAME).write_text("\n".join(lines) + "\n")
    with pytest.raises(mf.DatasetIndexError, match="line 2 .*n_failures must be"):
        mf.read_manifest(copy)
    rc, out = verify_cli(copy, capsys)
    assert rc == 1 and "manifest.jsonl, line 2" in out


def test_new_never_deletes_outside_the_directory(tmp_path):
    from qmgen.pipeline.run import clear_dataset

    root, elsewhere = tmp_path / "ds", tmp_path / "elsewhere"
    root.mkdir()
    elsewhere.mkdir()
    (elsewhere / "shard-000000.h5").write_bytes(b"precious")
    (root / "shards").symlink_to(elsewhere)  # a hostile layout, then `generate --new`
    (root / "config.json").write_text("{}")
    clear_dataset(root)
    assert (elsewhere / "shard-000000.h5").read_bytes() == b"precious"
    assert not (root / "shards").exists() and not (root / "config.json").exists()
