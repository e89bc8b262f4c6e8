"""The stages of one conformer's labels as separate batched programs (cost.py, gpu.py).

A conformer's work at QM1B settings is: ERIs (float64), one-electron integrals and the J/K
layouts, grid + AO values, then per SCF cycle one Fock build (J, K, XC), the DIIS
extrapolation and one eigensolve, then (float32 mode) the float64 finish, then labels.
Each stage here is the engine's own function, vmapped over a batch of molecules of one
bucket and jitted, so its XLA cost analysis and its wall time can be read on its own.
``cycle`` runs one SCF iteration as the engine's loop body does (extrapolate, diagonalise,
Fock build of the new density, gradient norm).

While loops are counted once by XLA's cost analysis, so per-conformer totals are composed
from the stages and the measured cycle counts (``per_conformer``), not read off the whole
program.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import common  # noqa: F401  (float64 on for the process, as every benchmark)
import jax
import jax.numpy as jnp
import numpy as np

from qmgen import Molecule
from qmgen.dft.batching import BucketPolicy, bucket_of, merge_buckets, prepare, stack
from qmgen.dft.engine import Settings, _batched, batching_mode
from qmgen.dft.grid import place_grid
from qmgen.dft.integrals.eri import vmap_width
from qmgen.dft.integrals.one_electron import one_electron
from qmgen.dft.numint import ao_values
from qmgen.dft.refine import REFINE_CYCLES
from qmgen.dft.scf import (
    _diagonalize,
    _diis_extrapolate,
    _gradient_norm,
    _occupations,
    _orthogonalizer,
    build_hamiltonian,
    cast_hamiltonian,
    two_electron_ints,
    two_electron_layouts,
    veff,
)

DATA = Path(__file__).resolve().parent / "data" / "qm1b_like.xyz"
QM1B = dict(basis="sto-3g", xc="b3lyp5", grid_level=0)
H200_BYTES_PER_S = 4.8e12  # HBM3e bandwidth
H200_FP64_FLOPS = 67e12  # tensor-core FP64 peak
H200_FP32_FLOPS = 67e12  # FP32 (non-tensor) peak


def load_conformers(path=DATA, n: int | None = None) -> list[Molecule]:
    """The bundled conformers (multi-frame XYZ, Angstrom; SMILES as the comment)."""
    lines = Path(path).read_text().splitlines()
    mols, i = [], 0
    while i < len(lines) and lines[i].strip():
        k = int(lines[i])
        mol = Molecule.from_xyz("\n".join(lines[i : i + k + 2]))
        mols.append(dataclasses.replace(mol, name=lines[i + 1].strip()))
        i += k + 2
    return mols[:n]


def one_bucket(mols, basis="sto-3g", grid_level=0):
    """The smallest bucket holding every molecule of ``mols`` (so one program serves all)."""
    policy = BucketPolicy()
    b = bucket_of(mols[0], basis, grid_level, policy)
    for m in mols[1:]:
        b = merge_buckets(b, bucket_of(m, basis, grid_level, policy))
    return b


def batch_inputs(mols, bucket, dtype, grid_level=0):
    """Stacked padded inputs of ``mols`` in ``bucket`` (NumPy, leading batch axis)."""
    return stack([prepare(m, bucket, grid_level, dtype)[0] for m in mols])


def settings_for(precision: str, xc="b3lyp5", eigensolver="auto") -> Settings:
    return Settings(
        xc=xc,
        conv_tol=1e-9,
        max_cycle=50,
        level_shift=0.0,
        damping=0.0,
        precision=precision,
        forces=False,
        eigensolver=eigensolver,
    )


def _cycle(ham, dm, v, f_hist, e_hist, count, x, v_orth, occ, xc, eigensolver):
    """One SCF iteration as in ``qmgen.dft.scf.run_scf``'s loop body (DIIS always on): the
    potential ``v`` of ``dm`` comes from the previous iteration, one Fock build here."""
    f = ham.h + v
    m = f_hist.shape[0]
    err = f @ dm @ ham.s - ham.s @ dm @ f
    f_hist = f_hist.at[count % m].set(f)
    e_hist = e_hist.at[count % m].set(err)
    f_use = _diis_extrapolate(f_hist, e_hist, count + 1, m)
    _, c, v_orth = _diagonalize(f_use, x, v_orth, eigensolver)
    dm_new = (c * occ) @ c.T
    v_new, e2 = veff(ham, dm_new, xc)
    return dm_new, v_new, e2, _gradient_norm(ham.h + v_new, c, occ), v_orth


def stage_programs(settings: Settings, bucket, inputs64, inputs_loop):
    """{name: (jitted batched fn, args)} of every stage, for one batch of one bucket.

    ``inputs64``: the batch in float64; ``inputs_loop``: in the SCF loop's dtype.
    """
    xc, solver = settings.xc, settings.eigensolver
    width = int(np.asarray(inputs64.n_occ).shape[0])

    def vm(fn):
        def run(*args):
            with vmap_width(width):
                return jax.vmap(fn)(*args)

        return jax.jit(run)

    eri = vm(lambda i: two_electron_ints(i, xc))
    packed = eri(inputs64)
    n = bucket.n_ao

    def layouts(i, p):
        one = one_electron(i.basis, i.positions, i.z.astype(i.positions.dtype))
        return one, two_electron_layouts(p, n, i.positions.dtype)

    def grid_ao(i):
        coords, w = place_grid(i.grid, i.positions, i.z)
        return ao_values(i.basis, i.positions, coords, deriv=1), w

    ham_fn = vm(lambda i, p: build_hamiltonian(i, xc, p))
    ham64 = ham_fn(inputs64, packed)
    loop_dtype = inputs_loop.positions.dtype
    if loop_dtype != jnp.float64:
        ham = vm(lambda h, p: cast_hamiltonian(h, loop_dtype, p))(ham64, packed)
    else:
        ham = ham64
    dm = jnp.asarray(inputs_loop.dm0)
    x = vm(lambda h: _orthogonalizer(h.s, solver))(ham)
    b = dm.shape[0]
    m = settings.diis_space
    hist = jnp.zeros((b, m, n, n), loop_dtype)
    count = jnp.ones((b,), jnp.int32)
    eye = jnp.broadcast_to(jnp.eye(n, dtype=loop_dtype), (b, n, n))
    occ = vm(lambda k: _occupations(n, k, loop_dtype))(jnp.asarray(inputs_loop.n_occ))

    def fock(h, d):
        return h.h + veff(h, d, xc)[0]

    def cycle(h, d, vv, fh, eh, c, xx, v, o):
        return _cycle(h, d, vv, fh, eh, c, xx, v, o, xc, solver)

    def finish(i64, h64, d):
        from qmgen.dft.refine import refine_float64
        from qmgen.dft.scf import SCFOptions

        _, c = jnp.linalg.eigh(d)  # natural orbitals as stand-in converged orbitals
        occ_ = jnp.where(jnp.arange(n) >= n - i64.n_occ, 2.0, 0.0)
        opts = SCFOptions(
            xc=xc, conv_tol=settings.conv_tol, max_cycle=settings.max_cycle, eigensolver=solver
        )
        return refine_float64(i64, h64, c[:, ::-1], occ_[::-1], opts)

    progs = {
        "eri": (eri, (inputs64,)),
        "one-electron + J/K layouts": (vm(layouts), (inputs64, packed)),
        "grid + AO values": (vm(grid_ao), (inputs64,)),
        "Fock build": (vm(fock), (ham, dm)),
        "eigensolver": (vm(lambda f, xx, v: _diagonalize(f, xx, v, solver)), (ham.h, x, eye)),
        "SCF cycle": (vm(cycle), (ham, dm, ham.h, hist, hist, count, x, eye, occ)),
    }
    if settings.precision == "float32":
        d64 = jnp.asarray(inputs64.dm0)
        progs["float32 copy of the Hamiltonian"] = (
            vm(lambda h, p: cast_hamiltonian(h, loop_dtype, p)),
            (ham64, packed),
        )
        progs["float64 Fock build"] = (vm(fock), (ham64, d64))
        progs["float64 finish"] = (vm(finish), (inputs64, ham64, d64))
    progs["whole conformer"] = (  # the engine's own program (vmap on accelerators)
        _batched(settings, bucket, batching_mode()),
        (inputs_loop, jnp.full((b,), settings.max_cycle, jnp.int32)),
    )
    return progs


def cost_of(fn, args) -> dict:
    """XLA's cost analysis of ``fn(*args)``: {"flops", "bytes"} for the whole batch."""
    c = fn.lower(*args).compile().cost_analysis()
    if isinstance(c, list | tuple):
        c = c[0]
    return dict(flops=float(c.get("flops", 0.0)), bytes=float(c.get("bytes accessed", 0.0)))


def per_conformer(stage: dict, n_cycles: float, precision: str) -> dict:
    """Compose one conformer's total from per-stage values (any additive quantity).

    SCF: the initial Fock build, ``n_cycles`` cycles, the final diagonalisation and Fock
    build (``run_scf``). float32 mode adds the float64 finish: REFINE_CYCLES float64
    cycles plus its initial and final Fock builds and diagonalisations; its cost analysis
    counts its while loop once, so it is composed from the float64 Fock build instead.
    """
    scf = 2 * stage["Fock build"] + n_cycles * stage["SCF cycle"] + stage["eigensolver"]
    total = stage["eri"] + stage["one-electron + J/K layouts"] + stage["grid + AO values"] + scf
    parts = dict(scf=scf)
    if precision == "float32":
        total += stage["float32 copy of the Hamiltonian"]
        f64 = (REFINE_CYCLES + 2) * stage["float64 Fock build"]
        parts["finish"] = f64
        total += f64
    parts["total"] = total
    return parts
