"""``qmgen.compute``: molecules in, one label record per molecule out, in input order.

This is the one vmap boundary: molecules are grouped by shape bucket (``qmgen.dft.batching``),
padded, stacked and run through ``jit(vmap(labels_kernel))``; results are trimmed back to
each molecule's own atoms and orbitals. The engine owns the jit cache (one compiled program
per bucket, batch size and setting) and turns on JAX's persistent compilation cache so a
restarted job does not recompile.

Failures never raise: a molecule that cannot be computed (odd electron count, element the
basis lacks, SCF not converged, non-finite result) gets a status and a message, and the
other molecules of its batch are unaffected.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Sequence
from functools import cache
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np

from qmgen.dft import dispersion
from qmgen.dft.basis import BasisError
from qmgen.dft.batching import Bucket, BucketPolicy, bucket_of, coarsen, prepare, stack
from qmgen.dft.grid import check_level
from qmgen.dft.linalg import METHODS as EIGENSOLVERS
from qmgen.dft.precision import check_precision, with_x64
from qmgen.dft.xc import get_functional
from qmgen.molecule import Molecule, MoleculeError
from qmgen.status import Status

Precision = Literal["float64", "float32"]

# Python-side count of traces of the batched kernel, keyed by bucket (for tests/logs)
TRACE_COUNT: dict = {}


def enable_compilation_cache(path: str | None = None) -> str | None:
    """Turn on JAX's persistent compilation cache (default ~/.cache/qmgen/jax).

    ``QMGEN_CACHE_DIR`` overrides the location; ``QMGEN_CACHE_DIR=none`` disables it. A
    cache directory the caller already gave JAX is kept. Called by ``compute``, not at
    import.
    """
    chosen = getattr(jax.config, "jax_compilation_cache_dir", None)
    if path is None and chosen:
        return chosen
    path = (
        path
        or os.environ.get("QMGEN_CACHE_DIR")
        or os.path.join(os.path.expanduser("~"), ".cache", "qmgen", "jax")
    )
    if path.lower() == "none":
        return None
    os.makedirs(path, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return path


# Matrix products in every compiled program. "highest" keeps float32 products in full
# FP32 on GPUs: JAX's default precision lets cuBLAS use TF32, which rounds the inputs of
# a product to 10 mantissa bits (relative 5e-4, against 6e-8 for FP32). benchmarks/gpu.py
# measures what TF32 would do to the labels.
MATMUL_PRECISION = "highest"

# Under vmap a while_loop runs as long as its slowest member. On an accelerator (batch
# > 1) the first pass stops at this many SCF cycles; molecules not converged by then leave
# their batch and continue together from their last density (``compute(cycle_budget=)``)
DEFAULT_CYCLE_BUDGET = 16


@dataclasses.dataclass(frozen=True)
class Settings:
    """Static settings of one compiled program (hashable).

    ``max_cycle`` is the hard cap; the cycles a call may run are a traced argument of the
    program (see ``_labels_kernel``), so a first pass and a straggler pass share it.
    """

    xc: str
    conv_tol: float
    max_cycle: int
    level_shift: float
    damping: float
    precision: str
    forces: bool
    diis_space: int = 8
    eigensolver: str = "auto"


def _labels_kernel(inputs, cycles, settings: Settings):
    """Labels of one molecule (pure; vmapped by ``_batched``).

    ``cycles``: () int, the SCF cycles this call may run (at most ``settings.max_cycle``).
    float32 mode builds the Hamiltonian once in float64 (integrals, grid, AO values, J/K
    layouts), iterates on a float32 copy of it until ``refine.F32_CONV_TOL`` and finishes
    with float64 cycles on the float64 original until ``conv_tol`` holds
    (``qmgen.dft.refine``); both loops share the ``cycles``.
    """
    from qmgen.dft import properties, refine
    from qmgen.dft.scf import SCFOptions, build_hamiltonian, run_scf
    from qmgen.dft.uscf import is_unrestricted, run_uscf

    opts = SCFOptions(
        xc=settings.xc,
        conv_tol=settings.conv_tol,
        max_cycle=settings.max_cycle,
        diis_space=settings.diis_space,
        level_shift=settings.level_shift,
        damping=settings.damping,
        eigensolver=settings.eigensolver,
    )
    f32 = settings.precision == "float32"
    uks = is_unrestricted(inputs)
    scf = run_uscf if uks else run_scf
    if f32:
        inp64, ham64, ham = refine.hamiltonians(inputs, settings.xc)
        loop = scf(inputs, refine.loop_options(opts), ham, max_cycle=cycles, retry=False)
        left = jnp.maximum(cycles - loop["n_iter"], 0)
        res = refine.refine_float64(
            inp64, ham64, loop["mo_coeff"], loop["mo_occ"], opts, max_cycle=left
        )
        n_iter = loop["n_iter"] + res["n_iter"]
        s, dip = ham64.s, ham64.dipole
    else:
        ham = build_hamiltonian(inputs, settings.xc)
        res = scf(inputs, opts, ham, max_cycle=cycles)
        n_iter = res["n_iter"]
        s, dip = ham.s, ham.dipole
    # converged: |delta_e| < conv_tol and scf_error < sqrt(conv_tol), tested in float64 on
    # the final state in both precisions (run_scf)
    out = dict(
        converged=res["converged"],
        n_iter=n_iter,
        scf_error=res["scf_error"],
        delta_e=res["delta_e"],
        dm_scf=res["dm"],
    )
    e_tot, mo_energy, dm = res["e_tot"], res["mo_energy"], res["dm"]
    if uks:
        homo, lumo, gap = properties.frontier_spin(mo_energy, inputs.n_occ)
        spin_dm = dm[0] - dm[1]
        dm = dm[0] + dm[1]
        no_charge = jnp.zeros_like(inputs.z)
        out.update(
            s2=res["s2"],
            spin_populations=-properties.mulliken_charges(
                spin_dm, s, inputs.ao_atom, inputs.ao_mask, no_charge
            ),
        )
    else:
        homo, lumo, gap = properties.frontier(mo_energy, inputs.n_occ)
    pos64 = inputs.positions.astype(jnp.float64)
    out.update(
        energy=e_tot,
        homo=homo,
        lumo=lumo,
        gap=gap,
        mo_energy=mo_energy,
        dipole=properties.dipole_moment(dip, dm, pos64, inputs.z),
        charges=properties.mulliken_charges(dm, s, inputs.ao_atom, inputs.ao_mask, inputs.z),
    )
    if settings.forces:
        # from the final orbitals (in float32 mode the float64-refined ones, cast back)
        mo_e, mo_c = mo_energy, res["mo_coeff"]
        if f32:
            mo_e, mo_c = (x.astype(inputs.positions.dtype) for x in (mo_e, mo_c))
        occ = res["mo_occ"].astype(inputs.positions.dtype)
        f = properties.forces(inputs, mo_e, mo_c, occ, settings.xc)
        out["forces"] = f.astype(jnp.float64)
    return jax.tree_util.tree_map(
        lambda x: x.astype(jnp.float64) if x.dtype == jnp.float32 else x, out
    )


# How a call's molecules share a program: "vmap" (one batched program, accelerators),
# "map" (lax.map: the single-molecule program in a loop) or "auto" (map on CPU). On CPU
# vmap gains nothing, costs 40% in float32 mode (batched while loops and products), and
# jaxlib's CPU eigh deadlocks when two batched eigh calls (the float32 loop's and the float64
# finish's orthogonaliser, independent so run concurrently) each wait for the same
# 2-thread pool.
BATCHING = "auto"


def batching_mode() -> str:
    if BATCHING not in ("auto", "vmap", "map"):
        raise ValueError(f"unknown batching {BATCHING!r}; valid: auto, vmap, map")
    if BATCHING != "auto":
        return BATCHING
    return "map" if jax.default_backend() == "cpu" else "vmap"


@cache
def _batched(settings: Settings, bucket: Bucket, mode: str):
    """The jitted batched kernel for one bucket, setting and batching mode (jax.jit caches
    per batch size)."""

    def run(batch, cycles):
        from qmgen.dft.integrals.eri import vmap_width

        TRACE_COUNT[(bucket, settings)] = TRACE_COUNT.get((bucket, settings), 0) + 1
        width = batch.n_occ.shape[0]
        kernel = lambda args: _labels_kernel(*args, settings)
        # full-precision float32 products: no TF32 on GPUs (MATMUL_PRECISION)
        with jax.default_matmul_precision(MATMUL_PRECISION):
            if width == 1 or mode == "map":
                # the plain single-molecule program (in a loop for several molecules)
                if width == 1:
                    one = jax.tree_util.tree_map(lambda x: x[0], (batch, cycles))
                    return jax.tree_util.tree_map(lambda x: x[None], kernel(one))
                return jax.lax.map(kernel, (batch, cycles))
            with vmap_width(width):
                return jax.vmap(lambda inp, c: kernel((inp, c)))(batch, cycles)

    return jax.jit(run)


def batch_ladder(size: int) -> tuple[int, ...]:
    """Batch sizes a bucket may compile, largest first: ``size``, size/4, size/16, ... (>= 1).

    A few rungs bound both the number of compiled programs (log4 of the batch size) and
    the padding of the last, partial batch (see ``split_batches``).
    """
    rungs, r = [], max(1, int(size))
    while r >= 1:
        rungs.append(r)
        r //= 4
    return tuple(rungs)


def split_batches(n: int, size: int) -> list[tuple[int, int]]:
    """Split ``n`` molecules into calls of ladder sizes: [(n_real, batch_size), ...].

    Full batches of ``size`` first, then the largest rungs that the rest fills; only the
    last call is padded, to the smallest rung that holds it, so padding never exceeds
    3/4 of one small rung (never a whole batch of copies).
    """
    rungs = batch_ladder(size)
    out, left = [], int(n)
    while left > 0:
        fit = [r for r in rungs if r <= left]
        if fit:
            out.append((fit[0], fit[0]))
            left -= fit[0]
        else:
            out.append((left, min(r for r in rungs if r >= left)))
            left = 0
    return out


def default_batch_size(bucket: Bucket, settings: Settings) -> int:
    """Molecules per call: 1 on CPU (vmap gains nothing there and every molecule of a batch
    waits for the slowest to converge); on an accelerator, what fits in half its memory."""
    dev = jax.devices()[0]
    if dev.platform == "cpu":
        return 1
    n = bucket.n_ao
    npair = n * (n + 1) // 2
    # float32 mode holds the float64 Hamiltonian and its float32 copy
    width = 8 if settings.precision == "float64" else 12
    hyb = get_functional(settings.xc).has_exchange
    if bucket.auxbasis is not None:  # two fitted tensors at most, and K's intermediate
        two_e = 3 * bucket.n_aux * n * n
    else:
        two_e = 2 * npair * npair + (n**4 if hyb else 0)
    per_mol = width * (two_e + 5 * bucket.n_points * n)
    try:
        total = dev.memory_stats()["bytes_limit"]
    except Exception:  # noqa: BLE001 - not every backend reports memory
        total = 16 * 2**30
    return int(max(1, min(1024, (total // 2) // max(per_mol, 1))))


def _failure(status: Status, message: str) -> dict:
    return dict(status=int(status), message=message, converged=False, energy=float("nan"))


def _check_options(xc, basis, grid_level, precision):
    # a d3bj functional without the dftd3 library fails here, before any SCF work
    dispersion.check_available(get_functional(xc))
    check_level(grid_level)
    check_precision(precision)
    if not isinstance(basis, str) or not basis:
        raise ValueError(f"basis must be a basis-set name such as 'sto-3g', got {basis!r}")


def auxbasis_option(density_fit) -> str | None:
    """``compute``'s ``density_fit`` as the bucket's auxiliary basis: None (exact ERIs),
    "default" (PySCF's choice) or a basis name."""
    from qmgen.dft.basis import DEFAULT_AUX

    if density_fit is False or density_fit is None:
        return None
    if density_fit is True:
        return DEFAULT_AUX
    if isinstance(density_fit, str) and density_fit.strip():
        return density_fit.strip()
    raise ValueError(
        f"density_fit must be True, False or an auxiliary basis name, got {density_fit!r}"
    )


@with_x64
def compute(
    molecules: Sequence[Molecule],
    basis: str = "sto-3g",
    xc: str = "b3lyp5",
    grid_level: int = 0,
    precision: Precision = "float64",
    forces: bool = False,
    conv_tol: float = 1e-9,
    max_cycle: int = 50,
    batch_size: int | None = None,
    level_shift: float = 0.0,
    damping: float = 0.0,
    policy: BucketPolicy | None = None,
    min_bucket_size: int = 1,
    progress: bool | Callable[[int, int], None] = False,
    cycle_budget: int | None = None,
    eigensolver: str = "auto",
    density_fit: bool | str = False,
    unrestricted: bool = False,
) -> list[dict]:
    """Kohn–Sham (or Hartree–Fock for ``xc="hf"``) labels of many molecules.

    Args:
      molecules: ``qmgen.Molecule`` records (positions in Bohr).
      basis, xc, grid_level: level of theory ("b3lyp5" is QM1B's B3LYP with VWN5).
      precision: "float64", or "float32" (SCF cycles in float32 with float64 ERIs until
        |dE| and |g| are below 1e-3, then float64 cycles from that density until
        ``conv_tol`` holds; energy and orbital energies from the float64 state).
      forces: also compute analytic forces (Hartree/Bohr, no grid response as PySCF).
      conv_tol: the SCF is converged when the energy change of its last cycle is below
        ``conv_tol`` (Hartree) and the orbital gradient norm |g| (PySCF's ``get_grad``) is
        below ``sqrt(conv_tol)`` (PySCF's default ``conv_tol_grad``), both tested in
        float64 on the final state (after PySCF's closing diagonalisation). The same in
        both precisions: in float32 mode the float32 loop may stop earlier and the float64
        cycles continue until the test holds.
      max_cycle: cap on the SCF cycles (float32 and float64 cycles together in float32
        mode); a molecule that has not met ``conv_tol`` by then is NOT_CONVERGED.
      level_shift, damping: SCF settings, PySCF's meaning.
      batch_size: molecules per compiled call; default from the device memory.
      policy: padding granularity (``BucketPolicy``).
      min_bucket_size: merge shape buckets with fewer molecules into larger ones (fewer
        compiles, more padding); 1 keeps every bucket.
      progress: True for a progress bar, or a callable ``(n_done, n_total)``.
      cycle_budget: SCF cycles of the first pass when several molecules share a call
        (default ``DEFAULT_CYCLE_BUDGET``); molecules not converged by then continue in
        a second pass, batched together, from their last density, up to ``max_cycle``
        cycles in all. Ignored at batch size 1.
      eigensolver: "auto" (LAPACK on CPU, batched Jacobi on accelerators), "lapack" or
        "jacobi" (``qmgen.dft.linalg.eigh``).
      density_fit: False for exact ERIs; True for density-fitted J and K with PySCF's
        default auxiliary basis (``mf.density_fit()``: def2-svp-jkfit, i.e.
        def2-universal-jkfit, for def2-SVP; cc-pvdz-jkfit for 6-31G*; even-tempered
        functions where PySCF tabulates none); or an auxiliary basis name
        (``qmgen.dft.density_fit``). Forces then include the auxiliary-basis response.
      unrestricted: run unrestricted Kohn–Sham (UKS; UHF for ``xc="hf"``) for every
        molecule. Without it, molecules with ``spin`` > 0 run UKS and the rest RKS.

    Returns:
      One dict per input molecule, in input order, with ``energy``, ``homo``, ``lumo``,
      ``gap`` (Hartree), ``mo_energy`` (n_ao,), ``dipole`` (3,) e*Bohr, ``charges``
      (n_atoms,), ``forces`` (n_atoms, 3) or None, ``dispersion`` (Hartree; None for
      functionals without empirical dispersion), ``converged``, ``n_iter`` (SCF
      cycles), ``scf_error`` (final |g|), ``delta_e`` (energy change of the last cycle,
      Hartree), ``status`` (``qmgen.status.Status`` value) and ``message``. ``converged``
      implies ``scf_error < sqrt(conv_tol)`` and ``abs(delta_e) < conv_tol``.
      Unrestricted records have ``method`` "UKS" (else "RKS"), ``mo_energy`` (2, n_ao)
      (alpha, beta), ``homo`` the higher of the two spins' highest occupied and ``lumo``
      the lower of their lowest virtual orbital energies, ``s2`` (<S^2>) and
      ``spin_populations`` (n_atoms,), Mulliken populations of the spin density.
    """
    _check_options(xc, basis, grid_level, precision)
    auxbasis = auxbasis_option(density_fit)
    if eigensolver not in EIGENSOLVERS:
        raise ValueError(f"unknown eigensolver {eigensolver!r}; valid: {', '.join(EIGENSOLVERS)}")
    if cycle_budget is not None and (not isinstance(cycle_budget, int) or cycle_budget < 1):
        raise ValueError(f"cycle_budget must be a positive number of SCF cycles: {cycle_budget!r}")
    enable_compilation_cache()
    policy = policy or BucketPolicy()
    settings = Settings(
        xc=get_functional(xc).name,
        conv_tol=float(conv_tol),
        max_cycle=int(max_cycle),
        level_shift=float(level_shift),
        damping=float(damping),
        precision=precision,
        forces=bool(forces),
        eigensolver=eigensolver,
    )
    results: list[dict | None] = [None] * len(molecules)
    buckets: dict[Bucket, list[int]] = {}
    for i, mol in enumerate(molecules):
        if not isinstance(mol, Molecule):
            results[i] = _failure(
                Status.INVALID_INPUT, f"not a qmgen.Molecule: {type(mol).__name__}"
            )
            continue
        if mol.n_electrons % 2 and not mol.spin:
            results[i] = _failure(
                Status.ODD_ELECTRONS,
                f"{mol.n_electrons} electrons with spin 0: closed-shell (restricted) methods "
                "need an even count; give the molecule its spin (2S, e.g. spin=1 for a "
                "doublet) to run unrestricted Kohn-Sham",
            )
            continue
        if mol.n_electrons <= 0:
            results[i] = _failure(Status.INVALID_INPUT, f"no electrons (charge {mol.charge})")
            continue
        try:
            uks = bool(unrestricted) or mol.spin > 0
            b = bucket_of(mol, basis, grid_level, policy, auxbasis, unrestricted=uks)
        except (BasisError, MoleculeError) as err:
            results[i] = _failure(Status.UNSUPPORTED_ELEMENT, str(err))
            continue
        buckets.setdefault(b, []).append(i)
    buckets = coarsen(buckets, min_bucket_size)
    todo = sum(len(v) for v in buckets.values())
    report = _progress(progress, todo)
    done = 0
    dtype = np.float32 if precision == "float32" else np.float64
    for bucket, members in buckets.items():
        size = batch_size or default_batch_size(bucket, settings)
        fn = _batched(settings, bucket, batching_mode())
        budget = settings.max_cycle
        if size > 1:
            budget = min(budget, cycle_budget or DEFAULT_CYCLE_BUDGET)
        for start in range(0, len(members), size):
            chunk = members[start : start + size]
            prepared = {i: prepare(molecules[i], bucket, grid_level, dtype) for i in chunk}
            passes, failed = _run_batches(fn, chunk, prepared, size, budget)
            stragglers = [
                i
                for i, rec in passes.items()
                if not rec["converged"][()] and int(rec["n_iter"]) >= budget
            ]
            if stragglers and budget < settings.max_cycle:
                # continue from the last density with the cycles left, batched together
                for i in stragglers:
                    inp, layout = prepared[i]
                    dm = np.asarray(passes[i]["dm_scf"], dtype)
                    prepared[i] = (dataclasses.replace(inp, dm0=dm), layout)
                more, more_failed = _run_batches(
                    fn, stragglers, prepared, size, settings.max_cycle - budget
                )
                for i, rec in more.items():
                    rec["n_iter"] = rec["n_iter"] + budget
                    passes[i] = rec
                for i, rec in more_failed.items():  # the continuation raised
                    del passes[i]
                    failed[i] = rec
            for i in chunk:
                results[i] = (
                    _unpack(passes[i], molecules[i], prepared[i][1], settings)
                    if i in passes
                    else failed[i]
                )
            done += len(chunk)
            report(done)
    report(None)
    return results  # type: ignore[return-value]  # every slot was filled above


def _run_batches(fn, indices, prepared, size: int, cycles: int) -> tuple[dict, dict]:
    """Run molecules ``indices`` (prepared inputs) in ladder-sized calls of ``fn``, each
    allowed ``cycles`` SCF cycles. Returns ({index: per-molecule outputs}, {index: failure
    record} for the molecules of calls that raised)."""
    out, failed, start = {}, {}, 0
    for n_real, bs in split_batches(len(indices), size):
        chunk = indices[start : start + n_real]
        start += n_real
        items = [prepared[i][0] for i in chunk]
        items += [items[0]] * (bs - n_real)  # padding of the last call only (bounded)
        cyc = np.array([cycles] * n_real + [0] * (bs - n_real), np.int32)
        try:
            res = jax.device_get(fn(stack(items), cyc))
        except Exception as err:  # noqa: BLE001 - a failed batch must not sink the run
            for i in chunk:
                failed[i] = _failure(Status.COMPUTE_ERROR, f"{type(err).__name__}: {err}")
            continue
        for k, i in enumerate(chunk):
            out[i] = {key: np.asarray(v[k]) for key, v in res.items()}
    return out, failed


def _unpack(out: dict, mol: Molecule, layout, settings: Settings) -> dict:
    """Record of one molecule's outputs, trimmed to its own atoms and orbitals."""
    n_atoms, n_ao = mol.n_atoms, layout.n_ao
    rec: dict[str, Any] = dict(
        energy=float(out["energy"]),
        homo=float(out["homo"]),
        lumo=float(out["lumo"]),
        gap=float(out["gap"]),
        mo_energy=np.asarray(out["mo_energy"][..., :n_ao]),
        dipole=np.asarray(out["dipole"]),
        charges=np.asarray(out["charges"][:n_atoms]),
        forces=np.asarray(out["forces"][:n_atoms]) if settings.forces else None,
        converged=bool(out["converged"]),
        n_iter=int(out["n_iter"]),
        scf_error=float(out["scf_error"]),
        delta_e=float(out["delta_e"]),
        dispersion=None,
        method="RKS",
    )
    if "s2" in out:
        rec.update(
            method="UKS",
            s2=float(out["s2"]),
            spin_populations=np.asarray(out["spin_populations"][:n_atoms]),
        )
    try:
        _add_dispersion(rec, mol, settings)
    except Exception as err:  # noqa: BLE001 - a failed molecule must not sink the batch
        return _failure(Status.COMPUTE_ERROR, f"dispersion: {type(err).__name__}: {err}")
    finite = all(
        np.all(np.isfinite(rec[key]))
        for key in ("energy", "homo", "lumo", "mo_energy", "dipole", "charges")
    ) and (rec["forces"] is None or np.all(np.isfinite(rec["forces"])))
    if not finite:
        rec.update(status=int(Status.NON_FINITE), message="non-finite result", converged=False)
    elif not rec["converged"]:
        rec.update(
            status=int(Status.NOT_CONVERGED),
            message=f"SCF not converged in {rec['n_iter']} cycles (|g| = {rec['scf_error']:.2e}, "
            f"|dE| = {abs(rec['delta_e']):.2e} Ha)",
        )
    else:
        rec.update(status=int(Status.OK), message="")
    return rec


def _add_dispersion(rec: dict, mol: Molecule, settings: Settings) -> None:
    """Add the functional's empirical dispersion (D3(BJ), ``qmgen.dft.dispersion``) to
    ``energy`` and ``forces`` and store it as ``dispersion`` (Hartree); nothing for
    functionals without dispersion (``dispersion`` stays None)."""
    disp = dispersion.correction(get_functional(settings.xc), mol.z, mol.positions)
    if disp is None:
        return
    energy, forces = disp
    rec["dispersion"] = energy
    rec["energy"] += energy
    if rec["forces"] is not None:
        rec["forces"] = rec["forces"] + forces


def _progress(progress, total: int):
    """A callable(n_done or None) that reports progress (tqdm bar with conformers/s)."""
    if callable(progress):
        return lambda n: progress(n, total) if n is not None else None
    if not progress:
        return lambda n: None
    from tqdm.auto import tqdm

    bar = tqdm(total=total, unit="conf", desc="qmgen compute")
    state = {"n": 0, "t0": time.perf_counter()}

    def update(n):
        if n is None:
            bar.close()
            return
        bar.update(n - state["n"])
        state["n"] = n

    return update
