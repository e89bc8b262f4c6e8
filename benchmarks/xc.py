"""Grids and XC integration: qmgen (JAX) against PySCF, measured in one run.

Per molecule (water and the 9-11 heavy-atom set), levels 0 and 3, B3LYP: time to build
the molecular grid (PySCF ``Grids.build`` vs qmgen's placement + Becke weights), time of
one ``nr_rks`` (PySCF ``NumInt.nr_rks`` on its grid vs qmgen's jitted kernel, AO values
included), the ratios, and float32 errors of (N, E_xc, V_xc) against float64.

Usage: python benchmarks/xc.py [--n 4] [--levels 0,3]
"""

from __future__ import annotations

import argparse
import json

import jax
import jax.numpy as jnp
import numpy as np
from common import OUT, conformers, machine, median_time, table

import qmgen  # noqa: F401
from qmgen.dft.basis import build_basis
from qmgen.dft.grid import build_grid, place_grid
from qmgen.dft.numint import ao_values
from qmgen.dft.reference import pyscf_mol
from qmgen.dft.scf import xc_energy


def kernels(xc):
    grid_fn = jax.jit(place_grid)

    def rks(basis, positions, z, grid, dm):
        coords, weights = place_grid(grid, positions, z)
        ao = ao_values(basis, positions, coords, deriv=1)
        return xc_energy(ao, weights, dm, xc)

    return grid_fn, jax.jit(rks)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--levels", default="0,3")
    ap.add_argument("--xc", default="b3lyp")
    args = ap.parse_args()
    from pyscf import dft, scf

    print(machine(), flush=True)
    grid_fn, rks_fn = kernels(args.xc)
    rows = []
    for mol in conformers(args.n):
        pm = pyscf_mol(mol)
        mf = scf.RHF(pm).run(conv_tol=1e-8)
        dm_pyscf = mf.make_rdm1()
        b, layout = build_basis(mol)
        dm = np.zeros((b.n_ao, b.n_ao))
        real = np.flatnonzero(layout.ao_index >= 0)
        dm[np.ix_(real, real)] = dm_pyscf[np.ix_(layout.ao_index[real], layout.ao_index[real])]
        for level in [int(x) for x in args.levels.split(",")]:
            grid = build_grid(mol, level)
            pos, z = jnp.asarray(mol.positions), jnp.asarray(mol.z)
            jax.block_until_ready(grid_fn(grid, pos, z))
            t_grid = median_time(lambda: jax.block_until_ready(grid_fn(grid, pos, z)))

            def pyscf_grid():
                g = dft.Grids(pm)
                g.level = level
                return g.build()

            t_grid_ref = median_time(pyscf_grid)
            g = pyscf_grid()
            ni = dft.numint.NumInt()
            t_rks_ref = median_time(lambda: ni.nr_rks(pm, g, args.xc, dm_pyscf))
            n_ref, e_ref, _ = ni.nr_rks(pm, g, args.xc, dm_pyscf)
            args64 = (b, pos, z, grid, jnp.asarray(dm))
            jax.block_until_ready(rks_fn(*args64))
            t_rks = median_time(lambda: jax.block_until_ready(rks_fn(*args64)))
            e64, n64, v64 = rks_fn(*args64)
            to32 = lambda t: jax.tree_util.tree_map(
                lambda x: x.astype(jnp.float32) if x.dtype == jnp.float64 else x, t
            )
            e32, n32, v32 = rks_fn(*to32(args64))
            rows.append(
                [
                    mol.name,
                    level,
                    int(g.weights.size),
                    t_grid,
                    t_grid_ref,
                    t_grid / t_grid_ref,
                    t_rks,
                    t_rks_ref,
                    t_rks / t_rks_ref,
                    abs(float(e64) - e_ref),
                    abs(float(n32) - float(n64)),
                    abs(float(e32) - float(e64)),
                    float(jnp.max(jnp.abs(v32.astype(jnp.float64) - v64))),
                ]
            )
            print(rows[-1], flush=True)
    header = [
        "molecule",
        "level",
        "points",
        "grid s",
        "PySCF grid s",
        "ratio",
        "nr_rks s",
        "PySCF nr_rks s",
        "ratio",
        "|dExc| f64 vs PySCF",
        "|dN| f32",
        "|dExc| f32 Ha",
        "max|dVxc| f32",
    ]
    print(table(header, rows))
    OUT.mkdir(exist_ok=True)
    (OUT / "xc.json").write_text(
        json.dumps(dict(machine=machine(), header=header, rows=rows), indent=1, default=float)
    )


if __name__ == "__main__":
    main()
