"""SCF throughput at QM1B settings (B3LYP with VWN5, STO-3G, grid level 0): qmgen vs PySCF.

The same RDKit conformers of 9-11 heavy-atom molecules go through PySCF (its defaults:
conv_tol 1e-9, 'minao' guess, one core count = the machine's) and through
``qmgen.compute`` in float64 and float32, all in one run. Printed: conformers/s of each,
the ratio, the one-time compile time (cold cache unless QMGEN_CACHE_DIR is set), max |dE|
and |dgap| against PySCF in meV, and for float32 the same against qmgen's float64.
Then a throughput-vs-batch-size sweep (molecules padded into one bucket) and a plot.

Usage: python benchmarks/scf.py [--n 10] [--batch-sizes 1,2,4] [--sweep-precision float64]
On a GPU host without RDKit/PySCF references: make the inputs here with
``--save-inputs DIR`` (XYZ conformers + PySCF labels), then run there with
``--inputs DIR --batch-size 64 --batch-sizes 16,128,256`` (conformers are replicated with
small geometry jitter to fill large batches).
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
from common import OUT, conformers, machine, table

import qmgen
from qmgen.units import HARTREE_TO_EV

# compile times are of a cold compilation cache unless QMGEN_CACHE_DIR is set
os.environ.setdefault("QMGEN_CACHE_DIR", "none")
MEV = HARTREE_TO_EV * 1000.0
SETTINGS = dict(basis="sto-3g", xc="b3lyp5", grid_level=0)


def run_pyscf(mols):
    from qmgen.dft.reference import pyscf_mol

    out, t0 = [], time.perf_counter()
    for mol in mols:
        from pyscf import dft

        mf = dft.RKS(pyscf_mol(mol, "sto-3g"))
        mf.xc, mf.grids.level = "b3lyp5", 0
        mf.kernel()
        n_occ = mol.n_electrons // 2
        out.append(dict(energy=mf.e_tot, gap=mf.mo_energy[n_occ] - mf.mo_energy[n_occ - 1]))
    return out, time.perf_counter() - t0


def run_qmgen(mols, precision, **kw):
    t0 = time.perf_counter()
    first = qmgen.compute(mols, precision=precision, **SETTINGS, **kw)
    t_first = time.perf_counter() - t0
    t0 = time.perf_counter()
    out = qmgen.compute(mols, precision=precision, **SETTINGS, **kw)
    t_steady = time.perf_counter() - t0
    assert all(r["status"] == 0 for r in out), [r["message"] for r in out if r["status"]]
    assert [r["energy"] for r in out] == [r["energy"] for r in first]
    return out, t_steady, t_first - t_steady


def max_deltas(out, ref):
    """[max |dE|, max |dgap|] in meV between two lists of label records."""
    pairs = list(zip(out, ref, strict=True))
    return [
        max(abs(a["energy"] - b["energy"]) for a, b in pairs) * MEV,
        max(abs(a["gap"] - b["gap"]) for a, b in pairs) * MEV,
    ]


def save_inputs(path, mols, ref, rate):
    """Conformers as multi-frame XYZ plus PySCF labels, for hosts without RDKit/PySCF."""
    from pathlib import Path

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    (path / "conformers.xyz").write_text("".join(m.to_xyz(m.name) for m in mols))
    (path / "pyscf.json").write_text(json.dumps(dict(labels=ref, conf_per_s=rate), default=float))


def load_inputs(path):
    from pathlib import Path

    from qmgen import Molecule

    path = Path(path)
    lines = (path / "conformers.xyz").read_text().splitlines()
    mols, i = [], 0
    while i < len(lines) and lines[i].strip():
        n = int(lines[i])
        mols.append(Molecule.from_xyz("\n".join(lines[i : i + n + 2])))
        i += n + 2
    data = json.loads((path / "pyscf.json").read_text())
    return mols, data["labels"], data["conf_per_s"]


def jitter(mols, n, seed=0):
    """``n`` conformers: the originals first, then copies moved by ~0.01 Bohr."""
    rng = np.random.default_rng(seed)
    out = list(mols[:n])
    for k in range(len(out), n):
        m = mols[k % len(mols)]
        out.append(type(m)(m.z, m.positions + rng.normal(0, 0.01, m.positions.shape), m.charge))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=10)
    ap.add_argument("--batch-sizes", default="1,2,4")
    ap.add_argument("--sweep-precision", default="float64")
    ap.add_argument("--skip-pyscf", action="store_true")
    ap.add_argument("--batch-size", type=int, default=None, help="for the main table")
    ap.add_argument("--save-inputs", default=None, help="write conformers + PySCF labels")
    ap.add_argument("--inputs", default=None, help="read conformers + PySCF labels")
    ap.add_argument("--precisions", default="float64,float32", help="main table; '' skips it")
    args = ap.parse_args()
    print(machine(), flush=True)
    results = {"machine": machine()}
    if args.inputs:
        mols, ref, pyscf_rate = load_inputs(args.inputs)
        results["pyscf"] = dict(conf_per_s=pyscf_rate, note="measured on the CPU host")
    else:
        mols = conformers(args.n)
        if not args.skip_pyscf:
            ref, t_ref = run_pyscf(mols)
            results["pyscf"] = dict(conf_per_s=len(mols) / t_ref)
            print(f"PySCF: {len(mols) / t_ref:.3f} conformers/s", flush=True)
            if args.save_inputs:
                save_inputs(args.save_inputs, mols, ref, len(mols) / t_ref)
    results["n"] = len(mols)
    have_ref = "pyscf" in results
    rows, by_precision = [], {}
    for precision in [p for p in args.precisions.split(",") if p]:
        out, t, t_compile = run_qmgen(mols, precision, batch_size=args.batch_size)
        by_precision[precision] = out
        rate = len(mols) / t
        row = [precision, rate, t_compile]
        if have_ref:
            row += [results["pyscf"]["conf_per_s"], rate / results["pyscf"]["conf_per_s"]]
            row += max_deltas(out, ref)
        row += max_deltas(out, by_precision["float64"]) if "float64" in by_precision else [0, 0]
        rows.append(row)
        keys = ["precision", "conf_per_s", "compile_s"]
        if have_ref:
            keys += ["pyscf_conf_per_s", "ratio", "max_dE_meV", "max_dgap_meV"]
        keys += ["max_dE_vs_f64_meV", "max_dgap_vs_f64_meV"]
        results[precision] = dict(zip(keys, row, strict=True))
        print(rows[-1], flush=True)
    header = ["qmgen precision", "qmgen conf/s", "compile s (all buckets)"]
    if have_ref:
        header += ["PySCF conf/s", "qmgen/PySCF", "max |dE| meV", "max |dgap| meV"]
    header += ["|dE| vs f64 meV", "|dgap| vs f64 meV"]
    if rows:
        print(table(header, rows))

    # throughput against batch size: all molecules padded into one bucket
    sweep = []
    for bs in [int(b) for b in args.batch_sizes.split(",") if b]:
        batch = jitter(mols, max(bs * 2, len(mols)))
        out, t, t_c = run_qmgen(
            batch, args.sweep_precision, batch_size=bs, min_bucket_size=len(batch)
        )
        row = [bs, len(batch) / t, t_c]
        if have_ref:  # the first len(mols) entries are the unperturbed conformers
            row += max_deltas(out[: len(mols)], ref)
        sweep.append(row)
        print(f"batch {bs}: {row}", flush=True)
        results["batch_sweep"] = sweep
        OUT.mkdir(exist_ok=True)
        (OUT / "scf.json").write_text(json.dumps(results, indent=1, default=float))
    sweep_header = ["batch size", f"conformers/s ({args.sweep_precision})", "compile s"]
    if have_ref:
        sweep_header += ["max |dE| meV", "max |dgap| meV"]
    print(table(sweep_header, sweep))
    results["batch_sweep"] = sweep
    OUT.mkdir(exist_ok=True)
    (OUT / "scf.json").write_text(json.dumps(results, indent=1, default=float))
    if not sweep:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot([s[0] for s in sweep], [s[1] for s in sweep], "o-", label="qmgen")
    if "pyscf" in results:
        ax.axhline(results["pyscf"]["conf_per_s"], color="gray", ls="--", label="PySCF (CPU)")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("batch size (molecules per compiled call)")
    ax.set_ylabel("conformers / s")
    ax.set_title("B3LYP5/STO-3G, 9-11 heavy atoms")
    ax.legend()
    fig.tight_layout()
    fig.savefig(OUT / "scf_throughput.png", dpi=120)
    print(f"wrote {OUT / 'scf.json'} and {OUT / 'scf_throughput.png'}")


if __name__ == "__main__":
    main()
