"""Datasets of a million shards: open time, memory per process, random access, verify, merge.

Fabricates a dataset of N shards from one small synthetic shard (written by qmgen's
writer: ``--rows`` conformers of ~20 atoms with forces), hard-linked N times into the
nested layout (a fresh copy every 30,000 links: ext4's limit is 65,000 per file), with
a manifest line per shard and the compact index written by
``qmgen.storage.manifest.write_index``, then measures, each reader in a fresh process:

- ``open``: wall time of ``qmgen.open_dataset(DIR)`` and the process's resident memory
  (VmRSS) after it, and the growth over a process that only imported qmgen;
- ``access``: random ``dataset[i]`` over the rows of 20 shards spread over the dataset,
  once those shards are open and decoded (the warm rate of a training process);
- ``verify``: ``qmgen verify`` time per shard, on a dataset of distinct copies (hard links
  of one file are reported as such, rightly), measured at ``--verify-shards`` shards;
- ``merge``: ``qmgen merge`` of the dataset into a new directory (hard links, every
  checksum re-verified), time per shard.

A 20-shard dataset is measured the same way as the reference random-access rate. With
``--index json`` the datasets get the JSON shard list older qmgen wrote instead (no
merge); with ``--reader-path`` pointing at a checkout of an older qmgen that gives the
figures the compact index replaced.

Usage: ``python benchmarks/scale.py [--shards 10000 100000 1000000] [--out DIR]``.
``--out DIR`` keeps the fabricated dataset(s): with one ``--shards N`` the dataset is DIR
itself, so ``qmgen.open_dataset(DIR)`` checks the figures; with several, DIR/nN each.
``--reader-path P`` runs the reader processes with qmgen imported from checkout P
(e.g. an older qmgen on an ``--index json`` dataset). Results go to stdout and
benchmarks/out/scale-*.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from loader import synthetic_rows  # noqa: E402  (a sibling script)

from qmgen.storage import manifest as mf  # noqa: E402
from qmgen.storage.writer import write_shard  # noqa: E402

OUT = Path(__file__).resolve().parent / "out"
# ext4 allows 65,000 names per file: every 30,000 shards start from a fresh copy, so that
# a merge of the dataset (30,000 more links each) still links rather than copies
LINKS_PER_FILE = 30_000
ATTRS = dict(xc="b3lyp5", basis="sto-3g", grid_level=0, precision="float64", synthetic=True)

READER = r"""
import json, os, sys, time
import numpy as np
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024
import qmgen
base = rss()
t0 = time.perf_counter()
ds = qmgen.open_dataset(sys.argv[1])
t_open = time.perf_counter() - t0
after_open = rss()
out = dict(open_s=t_open, rss_mb=after_open, rss_import_mb=base, n=len(ds))
if sys.argv[2] == "access":
    shards = ds.shards
    n_shards = len(shards)
    picks = np.linspace(0, n_shards - 1, 20).astype(int)
    rows = []
    for s in picks:
        e = shards[int(s)]
        rows.extend(range(e["row_offset"], e["row_offset"] + e["n_rows"]))
        ds[e["row_offset"]]  # open, hash and decode the shard
    rng = np.random.default_rng(0)
    order = rng.choice(np.array(rows), size=20000)
    t0 = time.perf_counter()
    for i in order.tolist():
        ds[i]
    out["access_per_s"] = len(order) / (time.perf_counter() - t0)
    out["rss_after_access_mb"] = rss()
print(json.dumps(out))
"""


def template_shard(rows: int) -> tuple[Path, Path]:
    """A synthetic shard written by qmgen's writer in a temporary directory."""
    tmp = Path(tempfile.mkdtemp(prefix="qmgen-scale-template-"))
    path = tmp / "template.h5"
    write_shard(path, 0, synthetic_rows(rows, seed=1), [], ATTRS)
    return tmp, path


def fabricate(root: Path, n: int, template: Path, copies: bool, legacy: bool) -> float:
    """Dataset of ``n`` shards at ``root``: links (or copies) of ``template``, a manifest
    line each, then the compact index (or, ``legacy``, the older JSON shard list)."""
    t0 = time.perf_counter()
    root.mkdir(parents=True)
    from qmgen.storage.files import sha256_file
    from qmgen.storage.reader import ShardReader

    sha, size = sha256_file(template), template.stat().st_size
    with ShardReader(template) as r:
        n_rows = r.n_rows
    entries = []
    with open(root / mf.MANIFEST_NAME, "w") as manifest:
        for sid in range(n):
            dst = mf.shard_path(root, sid)
            if sid % 1000 == 0:
                dst.parent.mkdir(parents=True, exist_ok=True)
            if copies or sid % LINKS_PER_FILE == 0:
                shutil.copyfile(template, dst)
                base = dst
            else:
                os.link(base, dst)
            e = dict(
                shard_id=sid,
                file=dst.relative_to(root).as_posix(),
                n_rows=n_rows,
                n_failures=0,
                sha256=sha,
                size=size,
            )
            manifest.write(json.dumps(e, sort_keys=True) + "\n")
            if legacy:
                entries.append(dict(e, row_offset=sid * n_rows))
    if legacy:
        doc = dict(
            schema_version=2,
            attrs=ATTRS,
            n_rows=n * n_rows,
            n_failures=0,
            row_offsets=[i * n_rows for i in range(n + 1)],
            shards=entries,
        )
        (root / mf.INDEX_NAME).write_text(json.dumps(doc, indent=1, sort_keys=True))
    else:
        mf.write_index(root, ATTRS, mf.iter_manifest(root))
    return time.perf_counter() - t0


def reader(root: Path, what: str, reader_path: str | None) -> dict:
    env = dict(os.environ)
    if reader_path:
        env["PYTHONPATH"] = reader_path + os.pathsep + env.get("PYTHONPATH", "")
    out = subprocess.run(
        [sys.executable, "-c", READER, str(root), what],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def timed(fn, *args, **kwargs) -> float:
    t0 = time.perf_counter()
    fn(*args, **kwargs)
    return time.perf_counter() - t0


def index_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in [root / mf.INDEX_NAME, *root.glob("index-*.npy")])


def measure(n: int, root: Path, template: Path, args) -> dict:
    from qmgen.pipeline.merge import merge

    res: dict = dict(n_shards=n, index=args.index)
    json_list = args.index == "json"
    res["fabricate_s"] = fabricate(root, n, template, copies=False, legacy=json_list)
    res["index_mb"] = index_bytes(root) / 1e6
    res.update(reader(root, "access", args.reader_path))
    if not json_list and not args.no_merge:
        merged = root.parent / f"{root.name}-merged"
        res["merge_s"] = timed(merge, merged, [root])
        res["merge_ms_per_shard"] = 1e3 * res["merge_s"] / n
        shutil.rmtree(merged)
    return res


def verify_rate(n: int, work: Path, template: Path) -> dict:
    from qmgen.dataset.verify import verify_dataset

    root = work / f"verify-{n}"
    fabricate(root, n, template, copies=True, legacy=False)
    t = time.perf_counter()
    problems, _ = verify_dataset(root)
    t = time.perf_counter() - t
    assert not problems, problems[:3]
    shutil.rmtree(root)
    return dict(verify_shards=n, verify_s=t, verify_ms_per_shard=1e3 * t / n)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shards", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--rows", type=int, default=4, help="conformers per shard")
    ap.add_argument("--out", type=Path, help="keep the fabricated dataset(s) here")
    ap.add_argument("--verify-shards", type=int, default=2000)
    ap.add_argument(
        "--index",
        choices=("table", "json"),
        default="table",
        help="json: write the shard list into index.json as older qmgen did (no merge)",
    )
    ap.add_argument("--reader-path", help="import qmgen from this checkout in readers")
    ap.add_argument("--no-merge", action="store_true")
    ap.add_argument("--no-verify", action="store_true")
    args = ap.parse_args()
    tmp, template = template_shard(args.rows)
    work = Path(tempfile.mkdtemp(prefix="qmgen-scale-"))
    results = []
    try:
        print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores")
        print(f"template shard: {args.rows} conformers, {template.stat().st_size / 1e3:.0f} kB")
        sizes = [20] + [n for n in args.shards if n != 20]
        for n in sizes:
            keep = args.out is not None and n != 20
            if keep:
                root = args.out if len(args.shards) == 1 else args.out / f"n{n}"
            else:
                root = work / f"n{n}"
            results.append(measure(n, root, template, args))
            r = results[-1]
            merge_text = f", merge {r['merge_ms_per_shard']:.3f} ms/shard" if "merge_s" in r else ""
            print(
                f"{n:>9,} shards ({r['index']}): index {r['index_mb']:8.2f} MB, open "
                f"{r['open_s']:6.3f} s, RSS {r['rss_mb']:6.1f} MB "
                f"({r['rss_mb'] - r['rss_import_mb']:+6.1f} over import), random access "
                f"{r['access_per_s']:8.0f} rows/s{merge_text}",
                flush=True,
            )
            if not keep:
                shutil.rmtree(root)
        v = {}
        if not args.no_verify:
            v = verify_rate(args.verify_shards, work, template)
            print(
                f"verify: {v['verify_ms_per_shard']:.2f} ms per shard ({v['verify_shards']} shards)"
            )
        OUT.mkdir(exist_ok=True)
        name = f"scale-{args.index}{'-' + Path(args.reader_path).name if args.reader_path else ''}"
        (OUT / f"{name}.json").write_text(json.dumps(dict(results=results, verify=v), indent=1))
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
