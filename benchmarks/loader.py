"""Loader throughput: conformers/s for batched and random reads of a qmgen dataset.

Writes a synthetic dataset (default 200,000 conformers of 15-25 atoms, with forces, in
shards of 10,000 rows) with ``write_shard`` into a temporary directory, then measures in
one process, next to two baselines on the same data:

- ``batches(1024, shuffle=False)`` and ``shuffle=True``, padded NumPy batches, first pass
  (includes SHA-256 verification of every shard) and second pass;
- random single-conformer access ``dataset[i]``: cold (decodes shards into the cache) and
  warm;
- baseline: plain h5py per-row reads (dataset slices per field, files kept open);
- baseline: NumPy memmap of the same columns (.npy files), batched and per-row.

Usage: ``python benchmarks/loader.py [--n 200000] [--shard-rows 10000] [--dir DIR]``.
With ``--dir`` an existing dataset there is reused (written if absent) and kept. Files are
in the OS page cache (just written): the numbers are decode/assembly throughput, not disk
bandwidth.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

from qmgen.dataset import open_dataset, store
from qmgen.storage import manifest as mf
from qmgen.storage.writer import write_shard


def synthetic_rows(n: int, seed: int) -> list[dict]:
    """n conformers: 5-11 heavy atoms (C/N/O/F) + hydrogens, ~20 atoms, STO-3G-sized MOs."""
    rng = np.random.default_rng(seed)
    n_heavy = rng.integers(5, 12, size=n)
    n_h = rng.integers(6, 15, size=n)
    rows = []
    for i in range(n):
        nh, na = int(n_heavy[i]), int(n_heavy[i] + n_h[i])
        z = np.concatenate([rng.choice([6, 7, 8, 9], size=nh), np.ones(na - nh, dtype=np.int64)])
        n_mo = 5 * nh + (na - nh)
        homo, lumo = -0.25 - 0.1 * rng.random(), 0.05 + 0.1 * rng.random()
        rows.append(
            dict(
                z=z,
                positions=rng.normal(scale=3.0, size=(na, 3)),
                energy=-40.0 * nh - 0.5 * (na - nh) + rng.normal(),
                homo=homo,
                lumo=lumo,
                gap=lumo - homo,
                mo_energy=np.sort(rng.normal(size=n_mo)),
                dipole=rng.normal(size=3),
                charges=rng.normal(scale=0.3, size=na),
                forces=rng.normal(scale=0.05, size=(na, 3)),
                converged=True,
                n_iter=int(rng.integers(8, 16)),
                status=0,
                scf_error=1e-7 * rng.random(),
                molecule_index=i // 50,
                conformer_index=i % 50,
                charge=0,
                multiplicity=1,
                smiles="C" * nh,
                name=f"mol{i // 50}",
            )
        )
    return rows


def write_dataset(root: Path, n: int, shard_rows: int) -> float:
    t0 = time.perf_counter()
    entries = []
    for sid, start in enumerate(range(0, n, shard_rows)):
        rows = synthetic_rows(min(shard_rows, n - start), seed=sid)
        for r in rows:
            r["molecule_index"] += start // 50
        info = write_shard(mf.shard_path(root, sid), sid, rows, [], dict(xc="b3lyp5"))
        entry = mf.manifest_entry(info, root)
        mf.append_manifest(root, entry)
        entries.append(entry)
    mf.write_index(root, dict(xc="b3lyp5", basis="sto-3g", synthetic=True), entries)
    return time.perf_counter() - t0


def rate(n: int, seconds: float) -> float:
    return n / seconds


def fresh(root: Path, **kwargs):
    """A dataset opened as a new process would: forget which shards were verified."""
    store._VERIFIED.clear()
    return open_dataset(root, **kwargs)


def bench_batches(root: Path, shuffle: bool, cache_bytes=None) -> tuple[float, float]:
    ds = fresh(root, cache_bytes=cache_bytes)
    out = []
    for _ in range(2):
        t0 = time.perf_counter()
        n = sum(len(b["energy"]) for b in ds.batches(1024, shuffle=shuffle, seed=0))
        out.append(rate(n, time.perf_counter() - t0))
    return out[0], out[1]


def bench_random(root: Path, n_access: int) -> tuple[float, float]:
    ds = fresh(root)
    idx = np.random.default_rng(1).integers(0, len(ds), size=n_access)
    out = []
    for _ in range(2):
        t0 = time.perf_counter()
        for i in idx.tolist():
            ds[i]
        out.append(rate(n_access, time.perf_counter() - t0))
    return out[0], out[1]


def bench_h5py_rows(root: Path, n_access: int) -> float:
    """Per-row reads with plain h5py: files open and datasets resolved once, one slice per
    field per row (each read decodes and checksums whole HDF5 chunks)."""
    index = mf.read_index(root)
    files = [h5py.File(root / s["file"], "r") for s in index["shards"]]
    names = ("atom_offset", "mo_offset", "energy", "gap", "dipole")
    handles = [
        {**{k: f["conformers"][k] for k in names}, "mo_energy": f["orbitals/mo_energy"]}
        | {k: f["atoms"][k] for k in ("z", "positions", "forces", "charges")}
        for f in files
    ]
    offsets = np.asarray(index["row_offsets"])
    idx = np.random.default_rng(2).integers(0, offsets[-1], size=n_access)
    t0 = time.perf_counter()
    for g in idx.tolist():
        s = int(np.searchsorted(offsets, g, side="right") - 1)
        d, r = handles[s], g - int(offsets[s])
        a0, a1 = d["atom_offset"][r : r + 2]
        m0, m1 = d["mo_offset"][r : r + 2]
        row = {k: d[k][a0:a1] for k in ("z", "positions", "forces", "charges")}
        row["mo_energy"] = d["mo_energy"][m0:m1]
        row.update(energy=d["energy"][r], gap=d["gap"][r], dipole=d["dipole"][r])
    seconds = time.perf_counter() - t0
    for f in files:
        f.close()
    return rate(n_access, seconds)


def memmap_baseline(root: Path, npy_dir: Path, n_access: int) -> tuple[float, float, float]:
    """Same columns as .npy files opened with mmap: (convert s, batched/s, random/s)."""
    t0 = time.perf_counter()
    ds = open_dataset(root)
    cols = {k: [] for k in ("z", "positions", "forces", "charges", "mo_energy", "energy", "gap")}
    n_atoms, n_mo = [], []
    for b in ds.batches(8192, shuffle=False, layout="packed"):
        for k in cols:
            cols[k].append(b[k])
        n_atoms.append(np.diff(b["atom_offset"]))
        n_mo.append(np.diff(b["mo_offset"]))
    npy_dir.mkdir(parents=True, exist_ok=True)
    for k, v in cols.items():
        np.save(npy_dir / f"{k}.npy", np.concatenate(v))
    for k, v in (("atom_offset", n_atoms), ("mo_offset", n_mo)):
        np.save(npy_dir / f"{k}.npy", np.concatenate([[0], np.cumsum(np.concatenate(v))]))
    convert = time.perf_counter() - t0
    mm = {p.stem: np.load(p, mmap_mode="r") for p in npy_dir.glob("*.npy")}
    ao, mo = mm["atom_offset"], mm["mo_offset"]
    n = len(ao) - 1
    t0 = time.perf_counter()
    for start in range(0, n, 1024):
        stop = min(n, start + 1024)
        a0, a1, m0, m1 = ao[start], ao[stop], mo[start], mo[stop]
        {k: np.array(mm[k][a0:a1]) for k in ("z", "positions", "forces", "charges")}
        np.array(mm["mo_energy"][m0:m1])
        np.array(mm["energy"][start:stop]), np.array(mm["gap"][start:stop])
    batched = rate(n, time.perf_counter() - t0)
    idx = np.random.default_rng(3).integers(0, n, size=n_access)
    t0 = time.perf_counter()
    for r in idx.tolist():
        a0, a1, m0, m1 = ao[r], ao[r + 1], mo[r], mo[r + 1]
        d = {k: mm[k][a0:a1] for k in ("z", "positions", "forces", "charges")}
        d["mo_energy"] = mm["mo_energy"][m0:m1]
        d["energy"], d["gap"] = mm["energy"][r], mm["gap"][r]
    return convert, batched, rate(n_access, time.perf_counter() - t0)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200_000, help="conformers")
    parser.add_argument("--shard-rows", type=int, default=10_000)
    parser.add_argument("--random", type=int, default=100_000, help="random accesses")
    parser.add_argument("--dir", type=Path, default=None, help="dataset dir (kept)")
    args = parser.parse_args()
    tmp = None
    root = args.dir
    if root is None:
        tmp = Path(tempfile.mkdtemp(prefix="qmgen-bench-"))
        root = tmp / "dataset"
    try:
        if not (root / mf.INDEX_NAME).exists():
            seconds = write_dataset(root, args.n, args.shard_rows)
            print(f"wrote {args.n} conformers in {seconds:.1f} s ({args.n / seconds:,.0f}/s)")
        ds = open_dataset(root)
        n = len(ds)
        size = sum(p.stat().st_size for p in (root / mf.SHARDS_DIR).rglob("*.h5"))
        mean_atoms = ds.column("n_atoms").mean()
        print(
            f"dataset: {n:,} conformers, {len(ds.shards)} shards, {size / 1e6:.0f} MB, "
            f"{mean_atoms:.1f} atoms/conformer, forces stored"
        )
        versions = (
            f"h5py {h5py.__version__} (HDF5 {h5py.version.hdf5_version}), numpy {np.__version__}"
        )
        print(
            f"machine: {cpu_model()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}"
        )
        print(f"software: Python {platform.python_version()}, {versions}")
        seq = bench_batches(root, shuffle=False)
        shuf = bench_batches(root, shuffle=True)
        seq0 = bench_batches(root, shuffle=False, cache_bytes=0)
        shuf0 = bench_batches(root, shuffle=True, cache_bytes=0)
        rnd = bench_random(root, args.random)
        h5rows = bench_h5py_rows(root, min(args.random, 5000))
        npy = (tmp or root.parent) / f"{root.name}-npy"
        convert, mm_batched, mm_random = memmap_baseline(root, npy, args.random)
        if tmp is None:
            shutil.rmtree(npy, ignore_errors=True)
        table = [
            ("batches(1024, shuffle=False), epoch 1 (+sha256, fills cache)", seq[0]),
            ("batches(1024, shuffle=False), epoch 2 (from cache)", seq[1]),
            ("batches(1024, shuffle=True), epoch 1 (+sha256, fills cache)", shuf[0]),
            ("batches(1024, shuffle=True), epoch 2 (from cache)", shuf[1]),
            ("batches(1024, shuffle=False), streaming (cache_bytes=0), ep. 1", seq0[0]),
            ("batches(1024, shuffle=False), streaming (cache_bytes=0), ep. 2", seq0[1]),
            ("batches(1024, shuffle=True), streaming (cache_bytes=0), ep. 1", shuf0[0]),
            ("batches(1024, shuffle=True), streaming (cache_bytes=0), ep. 2", shuf0[1]),
            ("dataset[i] random, cold (+sha256, decodes shards)", rnd[0]),
            ("dataset[i] random, warm cache", rnd[1]),
            ("baseline h5py per-row slices, random", h5rows),
            ("baseline numpy memmap, batches of 1024 (copied)", mm_batched),
            ("baseline numpy memmap, random row (views)", mm_random),
        ]
        print(f"\n| {'read pattern':<62} | {'conformers/s':>13} |")
        print(f"|{'-' * 64}|{'-' * 15}:|")
        for label, value in table:
            print(f"| {label:<62} | {value:>13,.0f} |")
        print(f"\n(memmap baseline: {convert:.1f} s to convert the dataset to .npy first)")
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
