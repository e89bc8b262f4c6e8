"""ERI timing: qmgen's JAX kernels against PySCF's libcint, measured in one run.

For each molecule of the 9-11 heavy-atom set in STO-3G: the one-time compile of its shell
structure, the steady-state time of ``eri_packed`` (all unique (ij|kl), the same work as
``mol.intor("int2e", aosym="s8")``), PySCF's time, their ratio and the max error. On a
GPU also the time per molecule at batch sizes 1, 16 and 128 (vmap over geometries).

Usage: python benchmarks/integrals.py [--n 10] [--basis sto-3g]
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np
from common import OUT, conformers, machine, median_time, table

import qmgen  # noqa: F401  (float64)
from qmgen.dft.basis import build_basis
from qmgen.dft.integrals.eri import eri_packed
from qmgen.dft.reference import pyscf_mol

HEADER = [
    "molecule",
    "atoms",
    "AOs",
    "compile s",
    "qmgen ERI s",
    "PySCF int2e s8 s",
    "qmgen/PySCF",
    "max abs err",
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=10)
    ap.add_argument("--basis", default="sto-3g")
    args = ap.parse_args()
    print(machine())
    rows, records = [], []
    fn = jax.jit(eri_packed)
    for mol in conformers(args.n):
        b, layout = build_basis(mol, args.basis)
        pos = jnp.asarray(mol.positions)
        t = time.perf_counter()
        compiled = fn.lower(b, pos).compile()
        t_compile = time.perf_counter() - t
        jax.block_until_ready(compiled(b, pos))
        t_jax = median_time(lambda: jax.block_until_ready(compiled(b, pos)))
        pm = pyscf_mol(mol, args.basis)
        t_pyscf = median_time(lambda: pm.intor("int2e", aosym="s8"))
        # accuracy on the dense tensor (PySCF order)
        from qmgen.dft.integrals.pairs import packed_to_dense

        dense = layout.to_pyscf_order(
            np.asarray(packed_to_dense(compiled(b, pos), b.n_ao)), (0, 1, 2, 3)
        )
        err = float(np.max(np.abs(dense - pm.intor("int2e"))))
        rows.append(
            [mol.name, mol.n_atoms, layout.n_ao, t_compile, t_jax, t_pyscf, t_jax / t_pyscf, err]
        )
        records.append(
            dict(
                zip(
                    ["name", "atoms", "nao", "compile_s", "jax_s", "pyscf_s", "ratio", "max_err"],
                    rows[-1],
                    strict=True,
                )
            )
        )
        print(
            table(HEADER, rows[-1:]).splitlines()[-1],
            flush=True,
        )
    print()
    print(table(HEADER, rows))
    ratio = np.median([r[6] for r in rows])
    compile_s = np.median([r[3] for r in rows])
    print(f"\nmedian time ratio qmgen/PySCF: {ratio:.2f}; median compile {compile_s:.1f} s")
    if jax.devices()[0].platform != "cpu":
        records.append(dict(gpu=gpu_batches(conformers(1)[0], args.basis)))
    OUT.mkdir(exist_ok=True)
    (OUT / "integrals.json").write_text(json.dumps(dict(machine=machine(), rows=records), indent=1))


def gpu_batches(mol, basis):
    """Time per molecule of vmapped ERIs at batch sizes 1, 16, 128 (same structure)."""
    b, _ = build_basis(mol, basis)
    out = {}
    for bs in (1, 16, 128):
        pos = jnp.asarray(mol.positions)[None] + 0.01 * jnp.arange(bs)[:, None, None]
        fn = jax.jit(jax.vmap(lambda p: eri_packed(b, p)))
        jax.block_until_ready(fn(pos))
        t = median_time(lambda: jax.block_until_ready(fn(pos)))
        out[bs] = t / bs
        print(f"GPU batch {bs}: {t / bs * 1e3:.2f} ms per molecule", flush=True)
    return out


if __name__ == "__main__":
    main()
