"""One short GPU run: throughput at QM1B settings, where the time goes, and float32 error.

Input: the bundled RDKit conformers of 9-11 heavy-atom molecules (``data/qm1b_like.xyz``,
made by ``make_inputs.py``), so the GPU host needs neither RDKit nor PySCF. Settings:
b3lyp5 / sto-3g / grid level 0 (QM1B's), conv_tol 1e-9, all conformers in one shape
bucket (one compiled program per precision and batch size).

Sections, each written to the JSON as soon as it is done and skipped when the time
budget (``--budget``, default 420 s, compilation included) would be exceeded:
  1. steady-state conformers/s, float32 (finished in float64) and float64, at ``--batch``;
     SCF cycle histogram; float32 against float64 (|dE|, |dgap|) on the same conformers;
  2. per-stage times (``stages.py``) at ``--stage-batch``, with XLA's bytes for each stage
     and the achieved GB/s against the card's 4.8 TB/s;
  3. the eigensolver alone at batch 256 for n = 32, 55, 72: batched Jacobi
     (``qmgen.dft.linalg``) against ``jnp.linalg.eigh`` (cuSOLVER);
  4. a batch-size sweep (float32);
  5. TF32: float32 mode with JAX's default matmul precision instead of "highest",
     its error against float64 and its speed.
Writes ``out/gpu.json``, ``out/gpu.md`` (Markdown tables) and ``out/gpu_cycles.png``.

Usage: python benchmarks/gpu.py [--batch 256] [--n 512] [--budget 420] [--sweep 32,128]
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np
from common import OUT, machine, table
from stages import (
    H200_BYTES_PER_S,
    QM1B,
    batch_inputs,
    cost_of,
    load_conformers,
    one_bucket,
    settings_for,
    stage_programs,
)

import qmgen
from qmgen.dft import engine
from qmgen.dft.linalg import eigh
from qmgen.units import HARTREE_TO_EV

MEV = HARTREE_TO_EV * 1000.0
T0 = time.perf_counter()


def elapsed() -> float:
    return time.perf_counter() - T0


def jittered(mols, n: int, seed: int = 0):
    """``n`` conformers: the bundled ones, then copies moved by ~0.01 Bohr (new geometries,
    same molecules), so a large batch holds distinct real work, never identical copies."""
    rng = np.random.default_rng(seed)
    out = list(mols[:n])
    while len(out) < n:
        m = mols[len(out) % len(mols)]
        out.append(type(m)(m.z, m.positions + rng.normal(0, 0.01, m.positions.shape), m.charge))
    return out


def timed_compute(mols, precision, batch):
    """(results, first-call seconds, steady-state seconds) of one qmgen.compute."""
    kw = dict(QM1B, precision=precision, batch_size=batch, min_bucket_size=len(mols))
    t = time.perf_counter()
    first = qmgen.compute(mols, **kw)
    t_first = time.perf_counter() - t
    t = time.perf_counter()
    out = qmgen.compute(mols, **kw)
    return out, t_first, time.perf_counter() - t, first


def deltas(a, b):
    de = [abs(x["energy"] - y["energy"]) * MEV for x, y in zip(a, b, strict=True)]
    dg = [abs(x["gap"] - y["gap"]) * MEV for x, y in zip(a, b, strict=True)]
    return dict(max_dE_meV=max(de), max_dgap_meV=max(dg), mean_dE_meV=float(np.mean(de)))


def block(x):
    return jax.block_until_ready(x)


def time_call(fn, args, repeat=3):
    block(fn(*args))  # compile + warm
    t = time.perf_counter()
    for _ in range(repeat):
        block(fn(*args))
    return (time.perf_counter() - t) / repeat


class Report:
    def __init__(self):
        self.data = dict(machine=machine(), sections={})
        self.md = [f"Machine: {self.data['machine']}\n"]

    def add(self, key, value, md=None):
        self.data["sections"][key] = value
        if md:
            self.md.append(md)
        self.write()

    def write(self):
        OUT.mkdir(exist_ok=True)
        self.data["elapsed_s"] = elapsed()
        (OUT / "gpu.json").write_text(json.dumps(self.data, indent=1, default=float))
        (OUT / "gpu.md").write_text("\n\n".join(self.md) + "\n")


def throughput(rep, mols, batch):
    rows, res = [], {}
    for precision in ("float32", "float64"):
        out, t_first, t_steady, first = timed_compute(mols, precision, batch)
        res[precision] = out
        ok = sum(r["status"] == 0 for r in out)
        cycles = [r["n_iter"] for r in out]
        rows.append(
            [precision, len(mols) / t_steady, t_first - t_steady, ok, float(np.mean(cycles))]
        )
        rep.add(
            f"throughput_{precision}",
            dict(
                conf_per_s=len(mols) / t_steady,
                compile_s=t_first - t_steady,
                n=len(mols),
                batch=batch,
                n_ok=ok,
                cycles=cycles,
                repeat_equal=[r["energy"] for r in out] == [r["energy"] for r in first],
            ),
        )
        print(rows[-1], flush=True)
    d = deltas(res["float32"], res["float64"])
    rep.add(
        "float32_vs_float64",
        d,
        "### Throughput (steady state)\n\n"
        + table(["precision", "conformers/s", "compile s", "status OK", "mean SCF cycles"], rows)
        + f"\n\nfloat32 vs float64, same conformers: max |dE| {d['max_dE_meV']:.4f} meV, "
        f"max |dgap| {d['max_dgap_meV']:.4f} meV",
    )
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5, 3.2))
        for p, out in res.items():
            ax.hist([r["n_iter"] for r in out], bins=range(0, 52), alpha=0.6, label=p)
        ax.set_xlabel("SCF cycles")
        ax.set_ylabel("conformers")
        ax.legend()
        fig.tight_layout()
        fig.savefig(OUT / "gpu_cycles.png", dpi=120)
    except ImportError:
        pass
    return res


def stage_times(rep, mols, batch):
    rows, out = [], {}
    bucket = one_bucket(mols)
    for precision in ("float32", "float64"):
        settings = settings_for(precision)
        inp64 = batch_inputs(mols[:batch], bucket, np.float64)
        dtype = np.float32 if precision == "float32" else np.float64
        inp = batch_inputs(mols[:batch], bucket, dtype) if dtype != np.float64 else inp64
        progs = stage_programs(settings, bucket, inp64, inp)
        for name, (fn, args) in progs.items():
            if elapsed() > rep.budget:
                break
            t = time_call(fn, args, repeat=2 if name == "whole conformer" else 3)
            nbytes = cost_of(fn, args)["bytes"] if name != "whole conformer" else float("nan")
            per = t / batch
            rows.append(
                [
                    precision,
                    name,
                    per * 1e6,
                    nbytes / batch / 1e9,
                    nbytes / t / 1e9,
                    nbytes / t / H200_BYTES_PER_S * 100,
                ]
            )
            out[f"{precision}/{name}"] = dict(us_per_conf=per * 1e6, bytes_per_conf=nbytes / batch)
            print(rows[-1], flush=True)
        rep.add(
            "stages",
            out,
            None,
        )
    rep.md.append(
        f"### Stages (batch {batch}, one bucket of {bucket.n_ao} AOs, {bucket.n_points} points)"
        "\n\n"
        + table(
            ["precision", "stage", "us / conf", "GB / conf (XLA)", "GB/s", "% of 4.8 TB/s"],
            rows,
        )
    )
    rep.write()


def eigensolvers(rep):
    rows = []
    key = jax.random.PRNGKey(0)
    for n in (32, 55, 72):
        for dtype in (jnp.float32, jnp.float64):
            a = jax.random.normal(key, (256, n, n), dtype)
            a = a + jnp.swapaxes(a, 1, 2)
            for method in ("jacobi", "lapack"):
                fn = jax.jit(jax.vmap(lambda m, method=method: eigh(m, method=method)))
                t = time_call(fn, (a,))
                rows.append([n, jnp.dtype(dtype).name, method, t * 1e3])
                print(rows[-1], flush=True)
    rep.add(
        "eigensolver",
        rows,
        "### Eigensolver alone, batch 256 (cold start)\n\n"
        + table(["n", "dtype", "method", "ms per batch"], rows),
    )


def sweep(rep, mols, sizes):
    rows = []
    for bs in sizes:
        if elapsed() > rep.budget:
            break
        batch = mols[: max(2 * bs, 64)]
        out, t_first, t_steady, _ = timed_compute(batch, "float32", bs)
        rows.append([bs, len(batch) / t_steady, t_first - t_steady])
        print(rows[-1], flush=True)
        rep.add("sweep", rows)
    header = ["batch", "conf/s", "compile s"]
    rep.md.append("### Batch-size sweep (float32)\n\n" + table(header, rows))
    rep.write()


def tf32(rep, mols, batch, ref64):
    engine.MATMUL_PRECISION = "default"
    engine._batched.cache_clear()
    jax.clear_caches()
    out, t_first, t_steady, _ = timed_compute(mols, "float32", batch)
    engine.MATMUL_PRECISION = "highest"
    engine._batched.cache_clear()
    d = deltas(out, ref64)
    d.update(conf_per_s=len(mols) / t_steady, n_ok=sum(r["status"] == 0 for r in out))
    rep.add(
        "tf32",
        d,
        f"### TF32 (JAX default matmul precision) in float32 mode\n\n{len(mols) / t_steady:.1f} "
        f"conformers/s; vs float64: max |dE| {d['max_dE_meV']:.4f} meV, max |dgap| "
        f"{d['max_dgap_meV']:.4f} meV; {d['n_ok']} of {len(out)} converged",
    )


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--n", type=int, default=512, help="conformers for the throughput runs")
    ap.add_argument("--stage-batch", type=int, default=64)
    ap.add_argument("--sweep", default="32,128")
    ap.add_argument("--budget", type=float, default=420.0, help="seconds; later sections skip")
    ap.add_argument("--skip", default="", help="comma list: stages,eigh,sweep,tf32")
    args = ap.parse_args()
    rep = Report()
    rep.budget = args.budget
    print(rep.data["machine"], flush=True)
    mols = jittered(load_conformers(), args.n)
    skip = set(args.skip.split(","))
    res = throughput(rep, mols, args.batch)
    if "eigh" not in skip and elapsed() < args.budget:
        eigensolvers(rep)
    if "stages" not in skip and elapsed() < args.budget:
        stage_times(rep, mols, args.stage_batch)
    if "sweep" not in skip and elapsed() < args.budget:
        sweep(rep, mols, [int(s) for s in args.sweep.split(",") if s])
    if "tf32" not in skip and elapsed() < args.budget:
        tf32(rep, mols, args.batch, res["float64"])
    rep.write()
    print("\n\n".join(rep.md))
    print(f"done in {elapsed():.0f} s; wrote {OUT / 'gpu.json'} and {OUT / 'gpu.md'}")


if __name__ == "__main__":
    main()
