"""XLA's cost model of one conformer at QM1B settings, per stage, and the H200 floor it implies.

For a batch of the bundled 9-11 heavy-atom conformers (``benchmarks/data``) in one shape
bucket, each stage of the engine (``stages.py``) is compiled on its own and XLA's cost
analysis read: FLOPs and bytes accessed. Per-conformer totals are composed from the stages
with the SCF cycle count measured by running the whole program (XLA counts a while loop
once). The floor on one H200 is bytes / 4.8 TB/s and FLOPs / 67 TFLOP/s; the inverse of
the larger is the conformers/s that the design cannot exceed on that card.

Runs on any backend (the CPU here): the byte and FLOP counts are those of the program XLA
compiles for the current backend, so CPU and GPU counts differ somewhat (fusion).

Usage: python benchmarks/cost.py [--batch 4] [--precisions float32,float64] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import numpy as np
from common import OUT, machine, table
from stages import (
    H200_BYTES_PER_S,
    H200_FP64_FLOPS,
    batch_inputs,
    cost_of,
    load_conformers,
    one_bucket,
    per_conformer,
    settings_for,
    stage_programs,
)


def measure(precision: str, mols, eigensolver: str) -> dict:
    bucket = one_bucket(mols)
    settings = settings_for(precision, eigensolver=eigensolver)
    dtype = np.float32 if precision == "float32" else np.float64
    inp64 = batch_inputs(mols, bucket, np.float64)
    inp = batch_inputs(mols, bucket, dtype) if dtype != np.float64 else inp64
    progs = stage_programs(settings, bucket, inp64, inp)
    b = len(mols)
    stages = {}
    for name, (fn, args) in progs.items():
        c = cost_of(fn, args)
        stages[name] = {k: v / b for k, v in c.items()}
    t0 = time.perf_counter()
    fn, args = progs["whole conformer"]
    out = jax.device_get(fn(*args))
    cycles = float(np.mean(out["n_iter"]))
    wall = time.perf_counter() - t0
    comp = {
        key: per_conformer({k: v[key] for k, v in stages.items()}, cycles, precision)
        for key in ("bytes", "flops")
    }
    return dict(
        precision=precision,
        n_ao=bucket.n_ao,
        n_points=bucket.n_points,
        batch=b,
        scf_cycles=cycles,
        stages=stages,
        per_conformer=comp,
        whole_program_first_call_s=wall,  # compile included
    )


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--precisions", default="float32,float64")
    ap.add_argument("--eigensolver", default="jacobi", help="as on a GPU (auto = LAPACK on CPU)")
    ap.add_argument("--json", default=str(OUT / "cost.json"))
    args = ap.parse_args()
    print(machine(), flush=True)
    mols = load_conformers(n=args.batch)
    results = dict(machine=machine(), molecules=[m.name for m in mols], runs=[])
    for precision in args.precisions.split(","):
        r = measure(precision, mols, args.eigensolver)
        results["runs"].append(r)
        rows = [
            [name, v["flops"] / 1e9, v["bytes"] / 1e9, v["bytes"] / H200_BYTES_PER_S * 1e6]
            for name, v in r["stages"].items()
            if name != "whole conformer"
        ]
        pc = r["per_conformer"]
        for part in ("scf", "finish", "total"):
            if part in pc["bytes"]:
                label = {"scf": "SCF (composed)", "finish": "float64 finish (composed)"}
                rows.append(
                    [
                        f"**{label.get(part, 'per conformer')}**",
                        pc["flops"][part] / 1e9,
                        pc["bytes"][part] / 1e9,
                        pc["bytes"][part] / H200_BYTES_PER_S * 1e6,
                    ]
                )
        print(
            f"\n{precision}: {r['n_ao']} AOs (bucket), {r['n_points']} grid points, "
            f"{r['scf_cycles']:.1f} SCF cycles (measured), batch {r['batch']}"
        )
        print(table(["stage (per conformer)", "GFLOP", "GB accessed", "H200 floor us"], rows))
        total_b, total_f = pc["bytes"]["total"], pc["flops"]["total"]
        floor = max(total_b / H200_BYTES_PER_S, total_f / H200_FP64_FLOPS)
        r["h200_floor_conf_per_s"] = 1.0 / floor
        print(
            f"per conformer: {total_b / 1e9:.2f} GB, {total_f / 1e9:.2f} GFLOP -> H200 floor "
            f"{1.0 / floor:.0f} conformers/s (bandwidth {H200_BYTES_PER_S / total_b:.0f}/s, "
            f"FP64 {H200_FP64_FLOPS / total_f:.0f}/s)"
        )
    OUT.mkdir(exist_ok=True)
    with open(args.json, "w") as fh:
        json.dump(results, fh, indent=1)
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
