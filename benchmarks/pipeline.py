"""Pipeline overhead: end-to-end ``qmgen generate`` against compute-only on the same work.

Measures, on one input (default: the bundled data/molecules.smi) at default settings:

1. ``qmgen.generate`` into a fresh directory with a cold or warm compilation cache (the
   first run compiles; reported, not used for the overhead);
2. ``qmgen.generate`` again into a fresh directory, cache warm: the end-to-end wall time
   (local Dask cluster start, planning, conformers, compute, HDF5 writes, commits, index);
3. compute only: the same conformers (made beforehand, untimed), grouped into the same
   shards, each shard one ``qmgen.compute`` call with the same settings, run by a pool of
   as many fresh processes as the pipeline has workers (same environment: thread counts,
   cache), timed from the first call to the last result. Each process traces the
   programs it meets, as a pipeline worker does.

Overhead = (end-to-end wall - compute-only wall) / compute-only wall: everything the
pipeline adds around the compute (cluster start-up, Dask, conformers, I/O, imbalance).

Usage: ``python benchmarks/pipeline.py [--input FILE] [--limit N] [--workers N]
[--shard-size N] [--conformers K] [--batch-size B] [--chunk-size C] [--cache DIR] [--skip-cold]``.
Prints a Markdown table and writes benchmarks/out/pipeline.json.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import shutil
import tempfile
import time
from pathlib import Path

from common import machine

REPO = Path(__file__).resolve().parents[1]


def _init_worker() -> None:
    import qmgen.dft.engine  # noqa: F401  (imports outside the timed region)


def _compute_shard(args):
    molecules, kwargs = args
    from qmgen.dft.engine import compute

    t0 = time.perf_counter()
    out = compute(molecules, **kwargs)
    return time.perf_counter() - t0, len(out)


def compute_only(plan, workers: int) -> dict:
    """Wall time of the plan's shards computed by a pool of ``workers`` fresh processes."""
    from qmgen.pipeline.cluster import gpu_count, worker_env
    from qmgen.pipeline.task import rebuild_record

    opts = plan.options
    chem = opts.chem_options()
    t0 = time.perf_counter()
    shards = []
    for shard in sorted(plan.shards, key=lambda s: (-s.cost, s.shard_id)):  # as the driver
        mols = []
        for it in shard.items:
            if it.ok:
                rec = rebuild_record(it, chem)
                mols += list(rec.conformers) if rec.ok else []
        if mols:
            shards.append((mols, opts.compute_kwargs()))
    t_conf = time.perf_counter() - t0
    saved = dict(os.environ)
    os.environ.update(worker_env(workers, gpu_count()))  # inherited by the spawned pool
    try:
        ctx = mp.get_context("spawn")
        with ctx.Pool(workers, initializer=_init_worker) as pool:
            pool.map(_init_worker_barrier, range(workers))  # all processes up and imported
            t0 = time.perf_counter()
            results = list(pool.imap_unordered(_compute_shard, shards))
            wall = time.perf_counter() - t0
    finally:
        os.environ.clear()
        os.environ.update(saved)
    n = sum(k for _, k in results)
    return dict(
        wall_s=wall,
        n_conformers=n,
        conformers_per_s=n / wall,
        busy_s=sum(t for t, _ in results),
        conformers_s=t_conf,
    )


def _init_worker_barrier(_):
    time.sleep(0.5)
    return os.getpid()


def run_generate(input_path, out, workers, options) -> dict:
    from qmgen.pipeline.run import generate

    t0 = time.perf_counter()
    summary = generate(input_path, out, workers=workers, new=True, progress=False, **options)
    summary["measured_wall_s"] = time.perf_counter() - t0
    return summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--input", default=str(REPO / "data" / "molecules.smi"))
    ap.add_argument("--limit", type=int, default=0, help="use only the first N lines")
    ap.add_argument("--workers", type=int, default=None, help="default: as qmgen generate")
    ap.add_argument("--shard-size", type=int, default=0)
    ap.add_argument("--conformers", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=None, help="molecules per compiled call")
    ap.add_argument("--chunk-size", type=int, default=0, help="conformers per compute call")
    ap.add_argument("--cache", default=None, help="QMGEN_CACHE_DIR (default: qmgen's)")
    ap.add_argument("--skip-cold", action="store_true", help="cache already warm")
    args = ap.parse_args()
    if args.cache:
        os.environ["QMGEN_CACHE_DIR"] = args.cache
    import logging

    logging.basicConfig(level=logging.WARNING)
    from qmgen.pipeline.cluster import default_workers
    from qmgen.pipeline.options import GenerateOptions
    from qmgen.pipeline.plan import make_plan

    workers = args.workers or default_workers()
    tmp = Path(tempfile.mkdtemp(prefix="qmgen-bench-"))
    try:
        src = Path(args.input)
        if args.limit:
            lines = src.read_text().splitlines(keepends=True)[: args.limit]
            src = tmp / f"input{Path(args.input).suffix}"
            src.write_text("".join(lines))
        options = dict(
            shard_size=args.shard_size,
            conformers=args.conformers,
            batch_size=args.batch_size,
            chunk_size=args.chunk_size,
        )
        plan = make_plan(src, GenerateOptions(**options))
        results = dict(machine=machine(), input=args.input, limit=args.limit, workers=workers)
        results.update(n_records=plan.n_records, n_shards=len(plan.shards))
        if not args.skip_cold:
            results["cold"] = run_generate(src, tmp / "cold", workers, options)
        e2e = run_generate(src, tmp / "warm", workers, options)
        results["e2e"] = e2e
        results["compute_only"] = base = compute_only(plan, workers)
        results["overhead_pct"] = 100 * (e2e["measured_wall_s"] - base["wall_s"]) / base["wall_s"]
        report(results)
        out = REPO / "benchmarks" / "out"
        out.mkdir(parents=True, exist_ok=True)
        (out / "pipeline.json").write_text(json.dumps(results, indent=1, default=str) + "\n")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def report(r: dict) -> None:
    e2e, base = r["e2e"], r["compute_only"]
    n = e2e["n_conformers_computed"]
    print(f"machine: {r['machine']}")
    subset = f" (first {r['limit']} lines)" if r["limit"] else ""
    print(
        f"input: {r['input']}{subset}: {r['n_records']} records -> {n} conformers in "
        f"{r['n_shards']} shards; {r['workers']} workers"
    )
    print()
    print("| run | wall (s) | conformers/s |")
    print("|---|---:|---:|")
    if "cold" in r:
        c = r["cold"]
        print(
            f"| qmgen generate, first run (compiles) | {c['measured_wall_s']:.1f} | "
            f"{c['n_conformers_computed'] / c['measured_wall_s']:.2f} |"
        )
    print(
        f"| qmgen generate, warm cache (end to end) | {e2e['measured_wall_s']:.1f} | "
        f"{n / e2e['measured_wall_s']:.2f} |"
    )
    print(
        f"| compute only (same shards, {r['workers']} processes) | {base['wall_s']:.1f} | "
        f"{base['conformers_per_s']:.2f} |"
    )
    print(f"| pipeline overhead | {r['overhead_pct']:+.1f} % of compute time | |")
    t = e2e["timing_s"]
    print()
    conf, wait, comp = t.get("conformers", 0), t.get("wait", 0), t.get("compute", 0)
    print(
        f"inside the pipeline (summed over shards): conformers {conf:.1f} s (a shard's compute "
        f"waited {wait:.1f} s for them), compute {comp:.1f} s, device lock waits "
        f"{t.get('device_wait', 0):.1f} s, HDF5 write {t.get('write', 0):.2f} s; "
        f"planning {e2e['plan_s']:.1f} s; compute-only busy time {base['busy_s']:.1f} s"
    )


if __name__ == "__main__":
    main()
