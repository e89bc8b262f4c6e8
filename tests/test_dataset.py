"""The dataset reader: indexing, iteration, filters, units, batches, torch, corruption."""

from __future__ import annotations

import multiprocessing
import pickle
import shutil

import numpy as np
import pytest
from test_shards import ATTRS, _flip_byte_in_chunk, assert_row_equal, write_dataset

from qmgen.dataset import CorruptShardError, open_dataset
from qmgen.status import Status
from qmgen.storage import manifest as mf
from qmgen.units import BOHR, HARTREE_TO_EV

SIZES = (37, 0, 50, 13)  # an empty shard (failures only) in the middle


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("ds")
    rows, failures = write_dataset(root, SIZES)
    return root, rows, failures


@pytest.fixture(scope="module")
def data_no_forces(tmp_path_factory):
    root = tmp_path_factory.mktemp("ds_noforces")
    rows, _ = write_dataset(root, (9, 14), forces=False)
    return root, rows


def test_random_access_equals_written(data):
    root, rows, _ = data
    ds = open_dataset(root)
    assert len(ds) == len(rows) == 100
    assert ds.attrs["xc"] == ATTRS["xc"] and ds.has_forces
    for i in np.random.default_rng(0).permutation(len(rows)):
        got = ds[int(i)]
        assert got["index"] == i
        assert_row_equal(got, rows[i])
    assert_row_equal(ds[-1], rows[-1])
    with pytest.raises(ValueError, match="read-only"):
        ds[3]["positions"][0, 0] = 1.0  # views into the shared cache cannot be corrupted
    with pytest.raises(IndexError):
        ds[100]
    with pytest.raises(IndexError):
        ds[-101]


def test_iteration_equals_random_access(data):
    root, rows, _ = data
    ds = open_dataset(root, cache_bytes=0)  # no cache: every row read from HDF5 blocks
    seq = list(ds)
    assert len(seq) == len(rows)
    fresh = open_dataset(root)
    for i, got in enumerate(seq):
        assert got["index"] == i
        assert_row_equal(got, rows[i])
        want = fresh[i]
        for key in got:
            np.testing.assert_array_equal(got[key], want[key], err_msg=key)


def test_views(data):
    root, rows, _ = data
    ds = open_dataset(root)
    view = ds[5:90:7]
    expect = list(range(5, 90, 7))
    assert len(view) == len(expect)
    for j, i in enumerate(expect):
        assert_row_equal(view[j], rows[i])
        assert view[j]["index"] == j
    picked = ds[np.array([99, 0, 37, 36])]
    assert [r["molecule_index"] for r in picked] == [
        rows[i]["molecule_index"] for i in (99, 0, 37, 36)
    ]
    mask = np.zeros(len(ds), dtype=bool)
    mask[[3, 60]] = True
    assert [r["energy"] for r in ds[mask]] == [rows[3]["energy"], rows[60]["energy"]]
    assert len(view[1:3]) == 2 and view[1:3][0]["energy"] == rows[12]["energy"]
    with pytest.raises(TypeError):
        ds["energy"]


def test_filters(data):
    root, rows, _ = data
    conv = open_dataset(root, converged=True)
    assert len(conv) == sum(r["converged"] for r in rows)
    assert all(r["converged"] for r in conv)
    bad = open_dataset(root).filter(status=Status.NOT_CONVERGED)
    assert [r["molecule_index"] for r in bad] == [
        r["molecule_index"] for r in rows if r["status"] == Status.NOT_CONVERGED
    ]
    heavy = open_dataset(root, heavy_atoms=(2, 4))
    expect = [i for i, r in enumerate(rows) if 2 <= int((r["z"] > 1).sum()) <= 4]
    assert len(heavy) == len(expect) > 0
    for j, i in enumerate(expect):
        assert_row_equal(heavy[j], rows[i])
    both = open_dataset(root, converged=True, heavy_atoms=(None, 3), status=[0, 1])
    expect = [r for r in rows if r["converged"] and (r["z"] > 1).sum() <= 3]
    assert [r["energy"] for r in both] == [r["energy"] for r in expect]
    assert len(open_dataset(root).filter(n_atoms=1)) == sum(len(r["z"]) == 1 for r in rows)


def test_units(data):
    root, rows, _ = data
    ds = open_dataset(root, energy_unit="ev", length_unit="angstrom")
    for i in (0, 40, 99):
        got, want = ds[i], rows[i]
        for key in ("energy", "homo", "lumo", "gap", "scf_error"):
            assert got[key] == pytest.approx(want[key] * HARTREE_TO_EV, rel=1e-15)
        np.testing.assert_allclose(got["mo_energy"], want["mo_energy"] * HARTREE_TO_EV, rtol=1e-15)
        np.testing.assert_allclose(got["positions"], want["positions"] * BOHR, rtol=1e-15)
        np.testing.assert_allclose(got["dipole"], want["dipole"] * BOHR, rtol=1e-15)
        np.testing.assert_allclose(got["forces"], want["forces"] * HARTREE_TO_EV / BOHR, rtol=1e-14)
        np.testing.assert_array_equal(got["charges"], want["charges"])
    batch = next(ds.batches(8, shuffle=False))
    np.testing.assert_allclose(
        batch["positions"][0, : len(rows[0]["z"])], rows[0]["positions"] * BOHR
    )
    np.testing.assert_allclose(ds.column("gap"), [r["gap"] * HARTREE_TO_EV for r in rows])
    with pytest.raises(ValueError, match="valid: hartree, ev"):
        open_dataset(root, energy_unit="kcal")
    with pytest.raises(ValueError, match="valid: once, none"):
        open_dataset(root, verify="always")


def test_failures(data):
    root, _, failures = data
    assert open_dataset(root).failures == failures


def _check_padded_batch(batch, rows):
    B = len(batch["energy"])
    n_at = [len(rows[i]["z"]) for i in batch["index"]]
    assert batch["z"].shape == batch["mask"].shape == (B, max(n_at))
    assert batch["positions"].shape == batch["forces"].shape == (B, max(n_at), 3)
    for b, i in enumerate(batch["index"]):
        n = n_at[b]
        assert batch["mask"][b].sum() == n and batch["mask"][b, :n].all()
        np.testing.assert_array_equal(batch["z"][b, :n], rows[i]["z"])
        assert (batch["z"][b, n:] == 0).all() and (batch["positions"][b, n:] == 0).all()
        np.testing.assert_array_equal(batch["positions"][b, :n], rows[i]["positions"])
        np.testing.assert_array_equal(batch["forces"][b, :n], rows[i]["forces"])
        np.testing.assert_array_equal(batch["charges"][b, :n], rows[i]["charges"])
        np.testing.assert_array_equal(batch["dipole"][b], rows[i]["dipole"])
        assert batch["energy"][b] == rows[i]["energy"] and batch["n_atoms"][b] == n


def test_batches_sequential_and_shuffled(data):
    root, rows, _ = data
    ds = open_dataset(root)
    seq = list(ds.batches(16, shuffle=False))
    assert [len(b["energy"]) for b in seq] == [16] * 6 + [4]
    np.testing.assert_array_equal(np.concatenate([b["index"] for b in seq]), np.arange(100))
    for b in seq:
        _check_padded_batch(b, rows)
    for cache in (None, 0):  # whole shards from the cache, or streamed blocks
        ds = open_dataset(root, cache_bytes=cache)
        runs = [
            np.concatenate([b["index"] for b in ds.batches(16, seed=s, block_size=8)])
            for s in (1, 1, 2)
        ]
        for run in runs:
            assert sorted(run.tolist()) == list(range(100))  # each conformer exactly once
        np.testing.assert_array_equal(runs[0], runs[1])  # same seed, same order
        assert not np.array_equal(runs[0], runs[2]) and not np.array_equal(runs[0], np.arange(100))
        for b in ds.batches(16, seed=3, block_size=8):
            _check_padded_batch(b, rows)
    assert [len(b["energy"]) for b in ds.batches(16, drop_last=True)] == [16] * 6


def test_batch_layouts_and_options(data):
    root, rows, _ = data
    ds = open_dataset(root)
    fixed = next(ds.batches(10, shuffle=False, pad_atoms=16, float_dtype=np.float32, orbitals=True))
    assert fixed["positions"].shape == (10, 16, 3) and fixed["positions"].dtype == np.float32
    assert fixed["mo_energy"].shape[1] == max(len(r["mo_energy"]) for r in rows[:10])
    np.testing.assert_allclose(
        fixed["mo_energy"][3][fixed["mo_mask"][3]], rows[3]["mo_energy"], rtol=1e-6
    )
    with pytest.raises(ValueError, match="pad_atoms=4"):
        next(ds.batches(10, shuffle=False, pad_atoms=4))
    packed = next(ds.batches(5, shuffle=False, layout="packed", strings=True))
    n_at = [len(r["z"]) for r in rows[:5]]
    np.testing.assert_array_equal(packed["z"], np.concatenate([r["z"] for r in rows[:5]]))
    np.testing.assert_array_equal(packed["batch"], np.repeat(np.arange(5), n_at))
    np.testing.assert_array_equal(np.diff(packed["atom_offset"]), n_at)
    assert packed["smiles"] == [r["smiles"] for r in rows[:5]]
    with pytest.raises(ValueError, match="valid: padded, packed"):
        next(ds.batches(5, layout="ragged"))
    view = open_dataset(root, converged=True)
    idx = np.concatenate([b["index"] for b in view.batches(7, seed=0, block_size=4)])
    assert sorted(idx.tolist()) == list(range(len(view)))
    energies = np.concatenate([b["energy"] for b in view.batches(7, shuffle=False)])
    np.testing.assert_array_equal(energies, [r["energy"] for r in rows if r["converged"]])


def test_without_forces(data_no_forces):
    root, rows = data_no_forces
    ds = open_dataset(root)
    assert not ds.has_forces and "forces" not in ds[0]
    for i, got in enumerate(ds):
        assert_row_equal(got, rows[i])
    batch = next(ds.batches(23, shuffle=False))
    assert "forces" not in batch and batch["positions"].shape[0] == 23


def _corrupt_copy(root, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    return copy, mf.shard_path(copy, 2)


def test_truncated_shard_is_refused(data, tmp_path):
    root, _, _ = data
    copy, shard = _corrupt_copy(root, tmp_path)
    shard.write_bytes(shard.read_bytes()[:-1000])
    ds = open_dataset(copy)
    assert ds[0]["energy"] is not None  # shard 0 is fine
    with pytest.raises(CorruptShardError, match=r"shard-000002\.h5.*truncated"):
        ds[40]
    with pytest.raises(CorruptShardError, match=r"shard-000002\.h5"):
        list(ds.batches(16))


def test_bit_flip_is_refused(data, tmp_path):
    root, _, _ = data
    copy, shard = _corrupt_copy(root, tmp_path)
    _flip_byte_in_chunk(shard, "conformers/energy")
    with pytest.raises(CorruptShardError, match=r"shard-000002\.h5.*sha256"):
        open_dataset(copy)[40]
    # without the SHA-256 check, HDF5's fletcher32 chunk checksum still catches it
    for kwargs in (dict(cache_bytes=0), {}):
        ds = open_dataset(copy, verify="none", **kwargs)
        with pytest.raises(CorruptShardError, match=r"shard-000002\.h5.*cannot read"):
            list(ds)


def test_manifest_only_dataset(data, tmp_path):
    root, rows, _ = data
    copy, _ = _corrupt_copy(root, tmp_path)
    (copy / mf.INDEX_NAME).unlink()
    with pytest.warns(UserWarning, match="index.json missing"):
        ds = open_dataset(copy)
    assert len(ds) == len(rows) and ds[99]["energy"] == rows[99]["energy"]
    assert ds.attrs["versions"] == ATTRS["versions"] and "shard_id" not in ds.attrs
    with pytest.raises(FileNotFoundError, match="not a qmgen dataset"):
        open_dataset(tmp_path / "nothing")


def test_pickle_round_trip(data):
    root, rows, _ = data
    ds = open_dataset(root, converged=True)
    ds[0]  # opens handles and fills the cache: neither may travel
    clone = pickle.loads(pickle.dumps(ds))
    assert len(clone) == len(ds)
    assert_row_equal(clone[3], ds[3])


def _read_in_child(ds, indices, queue):
    energies = [(i, ds[i]["energy"]) for i in indices]
    queue.put((energies, {id(h) for h in ds._store._handles.values()}))


def test_fork_after_use(data):
    root, rows, _ = data
    ds = open_dataset(root, cache_bytes=0)  # every read goes through a file handle
    ds[0], ds[60]  # the parent holds open handles before forking
    parent_handles = {id(h) for h in ds._store._handles.values()}
    assert len(parent_handles) == 2
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    children = [
        ctx.Process(target=_read_in_child, args=(ds, part, queue))  # inherited, not pickled
        for part in (range(0, 50), range(50, 100))
    ]
    for child in children:
        child.start()
    parts = [queue.get(timeout=60) for _ in children]
    for child in children:
        child.join()
        assert child.exitcode == 0
    for _, child_handles in parts:  # children opened their own files
        assert child_handles and not child_handles & parent_handles
    got = dict(pair for part, _ in parts for pair in part)
    assert got == {i: r["energy"] for i, r in enumerate(rows)}
    assert ds[99]["energy"] == rows[99]["energy"]  # parent still works
    assert {id(h) for h in ds._store._handles.values()} >= parent_handles


@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_torch_dataloader_two_workers(data, context):
    torch = pytest.importorskip("torch")
    from torch.utils.data import DataLoader

    root, rows, _ = data
    ds = open_dataset(root, cache_bytes=0 if context == "fork" else None)
    ds[5], ds[50]  # handles open in the parent
    tds = ds.to_torch(dtype=torch.float64)
    loader = DataLoader(
        tds,
        batch_size=8,
        shuffle=True,
        num_workers=2,
        collate_fn=tds.collate,
        multiprocessing_context=context,
        generator=torch.Generator().manual_seed(0),
    )
    seen = []
    for batch in loader:
        assert batch["z"].dtype == torch.int64 and batch["mask"].dtype == torch.bool
        assert batch["positions"].dtype == torch.float64
        for b, i in enumerate(batch["index"].tolist()):
            n = len(rows[i]["z"])
            assert batch["mask"][b].sum().item() == n
            np.testing.assert_array_equal(batch["positions"][b, :n].numpy(), rows[i]["positions"])
            np.testing.assert_array_equal(batch["forces"][b, :n].numpy(), rows[i]["forces"])
            assert batch["energy"][b].item() == rows[i]["energy"]
            assert batch["smiles"][b] == rows[i]["smiles"]
        seen += batch["index"].tolist()
    assert sorted(seen) == list(range(len(rows)))  # every conformer exactly once
    assert seen != list(range(len(rows)))
