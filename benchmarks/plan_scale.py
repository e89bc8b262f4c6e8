"""Planning a million-line input, and the driver's memory over many shards.

**Planning** (``qmgen generate``'s first step, before any compute): for inputs of 1e4,
1e5 and 1e6 SMILES lines, a fresh process imports qmgen, hashes the input (as
``generate`` does) and runs :func:`qmgen.pipeline.plan.make_plan` and
:meth:`~qmgen.pipeline.plan.Plan.write_json`, nothing else. Reported: wall time per
step, resident memory after the imports and its peak (``ru_maxrss``) over the run, the
peak of the validation pool's processes (their resident memory summed, sampled every
0.2 s) and the plan's own columns (bytes per record).

The input: realistic molecules of the QM1B size range, the SMILES of ``qmgen sample``
(random valid closed-shell molecules of 9, 10 and 11 heavy atoms of C, N, O, F; seeded,
``--unique`` of each size) plus the bundled ``data/molecules.smi``, repeated in a seeded
shuffled order with a distinct name per line, until the file has N lines. All are valid
for the default elements (H, C, N, O, F); nothing in planning caches per SMILES, so the
repetition does not flatter the figures (shape keys are cached per composition, as they
would be for distinct molecules of those sizes).

**Driver** (``--driver-shards S``): ``qmgen.generate`` on an S-line input with one line
per shard, on a local cluster of 2 worker processes, with a stand-in task that writes an
empty shard at once (allowed in this benchmark only: it measures the driver, not DFT). A
thread samples the driver process's VmRSS and the number of committed shards; reported:
RSS at 10%, 25%, 50%, 75% and 100% of the shards, and shards per second.

Usage: ``python benchmarks/plan_scale.py [--lines 10000 100000 1000000]
[--driver-shards 10000] [--processes N] [--out DIR]``. Inputs are kept in DIR (default
benchmarks/out/plan_scale) and reused; results also go to benchmarks/out/plan_scale.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
OUT = HERE / "out"
HEAVY_ATOMS = (9, 10, 11)


# ------------------------------------------------------------------ input
def base_smiles(out: Path, unique: int) -> list[str]:
    """Sampled (cached in ``out``) and bundled SMILES, all valid for H, C, N, O, F."""
    cache = out / f"base-{unique}.smi"
    if not cache.exists():
        from qmgen.chem.sampler import sample_molecules

        smiles = []
        for heavy in HEAVY_ATOMS:
            smiles += sample_molecules(
                unique, heavy_atoms=heavy, elements="CNOF", seed=0, check_embed=False
            )
        cache.write_text("\n".join(smiles) + "\n")
    bundled = [
        line.split()[0]
        for line in (ROOT / "data" / "molecules.smi").read_text().splitlines()
        if line.strip() and not line.startswith("#") and not line.startswith("smiles")
    ]
    return cache.read_text().split() + bundled


def make_input(path: Path, n_lines: int, base: list[str]) -> Path:
    """``n_lines`` lines ``SMILES name`` (a header first), base molecules in seeded
    shuffled passes."""
    if path.exists():
        return path
    rng = random.Random(0)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w") as fh:
        fh.write("smiles name\n")
        written = 0
        while written < n_lines - 1:
            order = base[:]
            rng.shuffle(order)
            for smi in order[: n_lines - 1 - written]:
                fh.write(f"{smi} mol-{written}\n")
                written += 1
    tmp.rename(path)
    return path


# ------------------------------------------------------------------ measurements
def vm_rss_kb() -> int:
    """This process's resident memory now (kB, /proc/self/status)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class PoolMemory:
    """Peak summed resident memory of this process's children (the validation pool),
    sampled every 0.2 s in a thread."""

    def __init__(self):
        import psutil

        self.me, self.peak_mb, self.n_max = psutil.Process(), 0.0, 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        import psutil

        while not self.stop.wait(0.2):
            total, n = 0, 0
            for child in self.me.children(recursive=True):
                try:
                    total += child.memory_info().rss
                    n += 1
                except psutil.Error:
                    pass
            self.peak_mb = max(self.peak_mb, total / 2**20)
            self.n_max = max(self.n_max, n)

    def close(self) -> None:
        self.stop.set()
        self.thread.join()


def child_plan(path: str, processes: int | None, plan_out: str) -> None:
    """In a fresh process: hash, plan and write plan.json; print the figures as JSON."""
    t0 = time.perf_counter()
    from qmgen.pipeline.options import GenerateOptions
    from qmgen.pipeline.plan import make_plan
    from qmgen.pipeline.records import planning_processes
    from qmgen.storage.files import sha256_file

    options = GenerateOptions()  # imports what generate imports (JAX, the basis data)
    t_import = time.perf_counter() - t0
    rss0 = vm_rss_kb()
    pool = PoolMemory()
    t0 = time.perf_counter()
    sha = sha256_file(path)
    t_sha = time.perf_counter() - t0
    t0 = time.perf_counter()
    plan = make_plan(path, options, sha, processes=processes)
    t_plan = time.perf_counter() - t0
    t0 = time.perf_counter()
    plan.write_json(plan_out)
    t_json = time.perf_counter() - t0
    rss1 = vm_rss_kb()
    pool.close()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(
        json.dumps(
            dict(
                n_records=plan.n_records,
                n_valid=plan.n_valid,
                n_shards=plan.n_shards,
                n_shapes=len(plan.shape_keys),
                import_s=t_import,
                sha256_s=t_sha,
                plan_s=t_plan,
                plan_json_s=t_json,
                rss_after_imports_mb=rss0 / 1024,
                rss_end_mb=rss1 / 1024,
                peak_rss_mb=usage.ru_maxrss / 1024,
                processes=planning_processes(path, processes),
                pool_peak_rss_mb=pool.peak_mb,  # summed over the pool's processes
                plan_bytes_per_record=plan.records.nbytes / max(plan.n_records, 1),
                plan_json_mb=Path(plan_out).stat().st_size / 2**20,
                plan_hash=plan.plan_hash,
            )
        )
    )


def measure_plan(path: Path, processes: int | None, out: Path) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--child-plan",
        str(path),
        "--plan-out",
        str(out / f"plan-{path.stem}.json"),
    ]
    if processes is not None:
        cmd += ["--processes", str(processes)]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["process_wall_s"] = time.perf_counter() - t0
    return result


def empty_shard(task: dict) -> dict:
    """Stand-in for run_shard: an empty shard written at once (driver benchmark only)."""
    from qmgen.pipeline.task import write_staged

    info = write_staged(task["root"], task["shard_id"], [], [], task["attrs"])
    info.update(n_conformers=0, n_items=len(task["items"]), failure_status=[])
    return info


def measure_driver(n_shards: int, base: list[str], out: Path) -> dict:
    """RSS of the driver over a run of ``n_shards`` one-line shards (see the module doc)."""
    import logging
    import shutil

    from qmgen.pipeline.cluster import local_cluster
    from qmgen.pipeline.run import generate

    logging.getLogger("qmgen").setLevel(logging.WARNING)
    path = make_input(out / f"driver-{n_shards}.smi", n_shards + 1, base)
    root = out / f"driver-{n_shards}"
    shutil.rmtree(root, ignore_errors=True)
    samples: list[tuple[float, int, int]] = []  # (seconds, shards committed, VmRSS kB)
    stop = threading.Event()

    def committed() -> int:
        try:
            with open(root / "manifest.jsonl", "rb") as fh:
                return sum(block.count(b"\n") for block in iter(lambda: fh.read(1 << 20), b""))
        except FileNotFoundError:
            return 0

    def sample(t0: float) -> None:
        while not stop.wait(1.0):
            samples.append((time.perf_counter() - t0, committed(), vm_rss_kb()))

    cluster, client = local_cluster(workers=2, allowed_failures=1)
    try:
        t0 = time.perf_counter()
        thread = threading.Thread(target=sample, args=(t0,), daemon=True)
        thread.start()
        summary = generate(
            path, root, client=client, progress=False, shard_size=1, task=empty_shard
        )
        wall = time.perf_counter() - t0
        stop.set()
        thread.join()
        samples.append((wall, committed(), vm_rss_kb()))
    finally:
        client.close()
        cluster.close()
    assert summary["complete"] and summary["n_shards"] == n_shards, summary
    at = {}
    for frac in (0.1, 0.25, 0.5, 0.75, 1.0):
        first = next(s for s in samples if s[1] >= frac * n_shards)
        at[f"{int(frac * 100)}%"] = round(first[2] / 1024, 1)
    computing = [s for s in samples if s[1] > 0]
    shutil.rmtree(root, ignore_errors=True)
    return dict(
        n_shards=n_shards,
        wall_s=round(wall, 1),
        plan_s=summary["plan_s"],
        shards_per_s=round(n_shards / (wall - summary["plan_s"]), 1),
        rss_mb_at_done=at,
        rss_mb_max=round(max(s[2] for s in samples) / 1024, 1),
        rss_mb_first_commit=round(computing[0][2] / 1024, 1) if computing else None,
    )


# ------------------------------------------------------------------ main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lines", type=int, nargs="*", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--processes", type=int, default=None, help="validation processes")
    ap.add_argument("--unique", type=int, default=10_000, help="sampled molecules per size")
    ap.add_argument("--driver-shards", type=int, nargs="*", default=[])
    ap.add_argument("--out", default=str(OUT / "plan_scale"))
    ap.add_argument("--child-plan", help=argparse.SUPPRESS)
    ap.add_argument("--plan-out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child_plan:
        child_plan(args.child_plan, args.processes, args.plan_out)
        return
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    base = base_smiles(out, args.unique)
    results: dict = dict(machine=machine(), processes=args.processes, plan=[], driver=[])
    print(f"{results['machine']}; {len(base)} distinct molecules in the inputs")
    print(
        f"{'lines':>9} {'records':>9} {'shards':>7} {'sha256 s':>9} {'plan s':>8} "
        f"{'us/line':>8} {'json s':>7} {'RSS0 MB':>8} {'peak MB':>8} {'pool':>4} "
        f"{'pool MB':>8} {'B/rec':>6}"
    )
    for n in args.lines:
        path = make_input(out / f"input-{n}.smi", n, base)
        r = measure_plan(path, args.processes, out)
        r["lines"] = n
        results["plan"].append(r)
        print(
            f"{n:>9} {r['n_records']:>9} {r['n_shards']:>7} {r['sha256_s']:>9.2f} "
            f"{r['plan_s']:>8.1f} {1e6 * r['plan_s'] / n:>8.0f} {r['plan_json_s']:>7.2f} "
            f"{r['rss_after_imports_mb']:>8.0f} {r['peak_rss_mb']:>8.0f} {r['processes']:>4} "
            f"{r['pool_peak_rss_mb']:>8.0f} {r['plan_bytes_per_record']:>6.0f}",
            flush=True,
        )
    for n in args.driver_shards:
        r = measure_driver(n, base, out)
        results["driver"].append(r)
        print(f"driver, {n} shards: {json.dumps(r)}", flush=True)
    OUT.mkdir(exist_ok=True)
    (OUT / "plan_scale.json").write_text(json.dumps(results, indent=1) + "\n")


def machine() -> str:
    import platform

    cpu = platform.machine()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    return f"{cpu}, {cores} cores, Python {platform.python_version()}"


if __name__ == "__main__":
    main()
