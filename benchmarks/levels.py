"""Throughput and compile time at levels of theory beyond QM1B's (issue 14), against PySCF
in the same run.

For each (basis, functional): the first ``qmgen.compute`` call on a fresh persistent cache
(compile + run), a second call on the same conformers (steady state), and PySCF's RKS on
the same conformers and settings (grid level, conv_tol), one after the other on this
machine. A level "basis:xc:df" runs density fitting on both sides (PySCF's
``mf.density_fit()`` and qmgen's ``density_fit=True``, the same default auxiliary basis).
Prints a Markdown table; ratio = PySCF seconds / qmgen steady seconds (> 1: qmgen
faster). Writes benchmarks/out/levels.json.

    python benchmarks/levels.py --levels "6-31g*:b3lyp,6-31g*:b3lyp:df" --n 1
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

from common import OUT, conformers, machine, table

import qmgen
from qmgen.dft.engine import enable_compilation_cache
from qmgen.dft.reference import pyscf_scf


def run(levels, n: int, grid_level: int, conv_tol: float) -> list[list]:
    mols = conformers(n)
    enable_compilation_cache(tempfile.mkdtemp(prefix="qmgen-levels-"))  # nothing cached
    rows = []
    for basis, xc, *mode in levels:
        fit = "df" in mode
        kw = dict(basis=basis, xc=xc, grid_level=grid_level, conv_tol=conv_tol, density_fit=fit)
        t = time.perf_counter()
        first = qmgen.compute(mols, **kw)
        t_first = time.perf_counter() - t
        t = time.perf_counter()
        again = qmgen.compute(mols, **kw)
        t_steady = time.perf_counter() - t
        t = time.perf_counter()
        df = "default" if fit else None
        ref = [pyscf_scf(m, basis, xc, grid_level, conv_tol, df) for m in mols]
        t_pyscf = time.perf_counter() - t
        err = max(abs(a["energy"] - r.e_tot) for a, r in zip(again, ref, strict=True))
        ok = sum(a["status"] == 0 for a in first)
        n_ao = ref[0].mol.nao
        rows.append(
            [
                basis,
                xc,
                "DF" if fit else "exact",
                len(mols),
                n_ao,
                t_first - t_steady,
                t_steady / len(mols),
                t_pyscf / len(mols),
                t_pyscf / t_steady,
                err,
                ok,
            ]
        )
        print(table(HEADER, rows[-1:]), flush=True)
    return rows


HEADER = [
    "basis",
    "xc",
    "ERIs",
    "conformers",
    "n_ao (first)",
    "compile s (first - steady)",
    "qmgen s/conf",
    "PySCF s/conf",
    "ratio",
    "max |dE| Ha",
    "converged",
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--levels", default="6-31g*:b3lyp,6-31g*:wb97x,def2-svp:b3lyp")
    ap.add_argument("--n", type=int, default=1, help="conformers of the 9-11 heavy-atom set")
    ap.add_argument("--grid-level", type=int, default=3)
    ap.add_argument("--conv-tol", type=float, default=1e-9)
    args = ap.parse_args()
    levels = [tuple(item.split(":")) for item in args.levels.split(",")]
    print(machine(), flush=True)
    rows = run(levels, args.n, args.grid_level, args.conv_tol)
    print(table(HEADER, rows))
    OUT.mkdir(exist_ok=True)
    (OUT / "levels.json").write_text(
        json.dumps(dict(machine=machine(), header=HEADER, rows=rows), indent=1)
    )


if __name__ == "__main__":
    main()
