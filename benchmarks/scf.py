"""SCF throughput at QM1B settings (B3LYP with VWN5, STO-3G, grid level 0): qmgen vs PySCF.

The same RDKit conformers of 9-11 heavy-atom molecules go through PySCF (its defaults:
conv_tol 1e-9, 'minao' guess, one core count = the machine's) and through
``qmgen.compute`` in float64 and float32, all in one run. Printed: conformers/s of each,
the ratio, the one-time compile time, and max |dE| and |dgap| against PySCF in meV.
Then a throughput-vs-batch-size sweep (molecules padded into one bucket) and a plot.

Usage: python benchmarks/scf.py [--n 10] [--batch-sizes 1,2,4] [--sweep-precision float64]
On a GPU use e.g. --batch-sizes 1,16,64,128,256,512,1024 (conformers are replicated with
small geometry jitter to fill large batches).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

import qmgen
from common import OUT, conformers, machine, table
from qmgen.units import HARTREE_TO_EV

MEV = HARTREE_TO_EV * 1000.0
SETTINGS = dict(basis="sto-3g", xc="b3lyp5", grid_level=0)


def run_pyscf(mols):
    from qmgen.reference import pyscf_mol

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


def jitter(mols, n, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        m = mols[k % len(mols)]
        out.append(type(m)(m.z, m.positions + rng.normal(0, 0.01, m.positions.shape), m.charge))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=10)
    ap.add_argument("--batch-sizes", default="1,2,4")
    ap.add_argument("--sweep-precision", default="float64")
    ap.add_argument("--skip-pyscf", action="store_true")
    args = ap.parse_args()
    print(machine(), flush=True)
    mols = conformers(args.n)
    results = {"machine": machine(), "n": len(mols)}
    if not args.skip_pyscf:
        ref, t_ref = run_pyscf(mols)
        results["pyscf"] = dict(conf_per_s=len(mols) / t_ref)
        print(f"PySCF: {len(mols) / t_ref:.3f} conformers/s", flush=True)
    rows = []
    for precision in ("float64", "float32"):
        out, t, t_compile = run_qmgen(mols, precision)
        rate = len(mols) / t
        row = [precision, rate, t_compile]
        if not args.skip_pyscf:
            de = max(abs(a["energy"] - b["energy"]) for a, b in zip(out, ref, strict=True)) * MEV
            dg = max(abs(a["gap"] - b["gap"]) for a, b in zip(out, ref, strict=True)) * MEV
            row += [results["pyscf"]["conf_per_s"], rate / results["pyscf"]["conf_per_s"], de, dg]
        rows.append(row)
        results[precision] = dict(zip(["precision", "conf_per_s", "compile_s", "pyscf_conf_per_s", "ratio", "max_dE_meV", "max_dgap_meV"], row, strict=False))
        print(rows[-1], flush=True)
    header = ["qmgen precision", "qmgen conf/s", "compile s (all buckets)"]
    if not args.skip_pyscf:
        header += ["PySCF conf/s", "qmgen/PySCF", "max |dE| meV", "max |dgap| meV"]
    print(table(header, rows))

    # throughput against batch size: all molecules padded into one bucket
    sweep = []
    for bs in [int(b) for b in args.batch_sizes.split(",")]:
        batch = jitter(mols, max(bs * 2, len(mols)))
        _, t, t_c = run_qmgen(batch, args.sweep_precision, batch_size=bs, min_bucket_size=len(batch))
        sweep.append([bs, len(batch) / t, t_c])
        print(f"batch {bs}: {len(batch) / t:.2f} conformers/s (compile {t_c:.1f} s)", flush=True)
    print(table(["batch size", "conformers/s", "compile s"], sweep))
    results["batch_sweep"] = sweep
    OUT.mkdir(exist_ok=True)
    (OUT / "scf.json").write_text(json.dumps(results, indent=1, default=float))
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
