"""``qmgen.compute``: molecules in, one label record per molecule out, in input order.

This is the one vmap boundary: molecules are grouped by shape bucket (``qmgen.batching``),
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
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

from qmgen.basis import BasisError
from qmgen.batching import Bucket, BucketPolicy, bucket_of, coarsen, prepare, stack
from qmgen.grid import check_level
from qmgen.molecule import Molecule, MoleculeError
from qmgen.status import Status
from qmgen.xc import get_functional

Precision = Literal["float64", "float32"]
PRECISIONS = ("float64", "float32")

# float32 SCF stops here: its energies resolve ~1e-7 of the total (3e-5 Ha at 500 Ha) and
# its |g| stalls at a few 1e-4 (tighter thresholds ran to max_cycle); float64 DIIS cycles in
# qmgen.refine finish the job (f32 vs f64: |dE| < 0.01 meV, |dgap| < 0.2 meV)
F32_CONV_TOL = 1e-3
F32_CONV_TOL_GRAD = 1e-3

# Python-side count of traces of the batched kernel, keyed by bucket (for tests/logs)
TRACE_COUNT: dict = {}


def enable_compilation_cache(path: str | None = None) -> str | None:
    """Turn on JAX's persistent compilation cache (default ~/.cache/qmgen/jax).

    ``QMGEN_CACHE_DIR`` overrides the location; ``QMGEN_CACHE_DIR=none`` disables it.
    """
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


@dataclasses.dataclass(frozen=True)
class Settings:
    """Static settings of one compiled program (hashable)."""

    xc: str
    conv_tol: float
    max_cycle: int
    level_shift: float
    damping: float
    precision: str
    forces: bool
    diis_space: int = 8


def _labels_kernel(inputs, settings: Settings):
    """Labels of one molecule (pure; vmapped by ``_batched``)."""
    from qmgen import properties, refine
    from qmgen.integrals.eri import eri_packed
    from qmgen.scf import SCFOptions, build_hamiltonian, run_scf

    opts = SCFOptions(
        xc=settings.xc,
        conv_tol=settings.conv_tol,
        max_cycle=settings.max_cycle,
        diis_space=settings.diis_space,
        level_shift=settings.level_shift,
        damping=settings.damping,
    )
    packed64 = None
    if settings.precision == "float32":
        # ERIs once in float64 (see qmgen.refine), iterations in float32
        opts = dataclasses.replace(
            opts,
            conv_tol=max(opts.conv_tol, F32_CONV_TOL),
            conv_tol_grad=max(opts.tol_grad, F32_CONV_TOL_GRAD),
        )
        inp64 = refine._to64(inputs)
        packed64 = eri_packed(inp64.basis, inp64.positions)
    ham = build_hamiltonian(inputs, settings.xc, packed64)
    res = run_scf(inputs, opts, ham)
    out = dict(
        converged=res["converged"],
        n_iter=res["n_iter"],
        scf_error=res["scf_error"].astype(jnp.float64),
    )
    if settings.precision == "float32":
        # QM1B's approach: iterate in float32, re-evaluate energy and orbitals in float64
        fine = refine.refine_float64(
            inputs, ham, packed64, res["mo_coeff"], res["mo_occ"], settings.xc
        )
        # |g| after the float64 cycles; they must not have made it worse
        out["scf_error"] = fine["scf_error"]
        out["converged"] = res["converged"] & (fine["scf_error"] <= F32_CONV_TOL_GRAD)
        e_tot, mo_energy, dm, s, dip = (
            fine["e_tot"],
            fine["mo_energy"],
            fine["dm"],
            fine["s"],
            fine["dipole"],
        )
    else:
        e_tot, mo_energy, dm, s, dip = res["e_tot"], res["mo_energy"], res["dm"], ham.s, ham.dipole
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
        if settings.precision == "float32":
            mo_e = fine["mo_energy"].astype(inputs.positions.dtype)
            mo_c = fine["mo_coeff"].astype(inputs.positions.dtype)
        f = properties.forces(inputs, mo_e, mo_c, res["mo_occ"], settings.xc)
        out["forces"] = f.astype(jnp.float64)
    return jax.tree_util.tree_map(
        lambda x: x.astype(jnp.float64) if x.dtype == jnp.float32 else x, out
    )


@cache
def _batched(settings: Settings, bucket: Bucket):
    """The jitted, vmapped kernel for one bucket and setting (jax.jit caches per batch size)."""

    def run(batch):
        from qmgen.integrals.eri import vmap_width

        TRACE_COUNT[(bucket, settings)] = TRACE_COUNT.get((bucket, settings), 0) + 1
        with vmap_width(batch.n_occ.shape[0]):
            return jax.vmap(lambda inp: _labels_kernel(inp, settings))(batch)

    return jax.jit(run)


def default_batch_size(bucket: Bucket, settings: Settings) -> int:
    """Molecules per call: 1 on CPU (vmap gains nothing there and every molecule of a batch
    waits for the slowest to converge); on an accelerator, what fits in half its memory."""
    dev = jax.devices()[0]
    if dev.platform == "cpu":
        return 1
    n = bucket.n_ao
    npair = n * (n + 1) // 2
    width = 8 if settings.precision == "float64" else 4
    hyb = get_functional(settings.xc).hyb != 0.0
    per_mol = width * (3 * npair * npair + (2 * n**4 if hyb else 0) + 6 * bucket.n_points * n)
    try:
        total = dev.memory_stats()["bytes_limit"]
    except Exception:  # noqa: BLE001 - not every backend reports memory
        total = 16 * 2**30
    return int(max(1, min(1024, (total // 2) // max(per_mol, 1))))


def _failure(status: Status, message: str) -> dict:
    return dict(status=int(status), message=message, converged=False, energy=float("nan"))


def _check_options(xc, basis, grid_level, precision):
    get_functional(xc)
    check_level(grid_level)
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; valid: {', '.join(PRECISIONS)}")
    if not isinstance(basis, str) or not basis:
        raise ValueError(f"basis must be a basis-set name such as 'sto-3g', got {basis!r}")


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
) -> list[dict]:
    """Kohn–Sham (or Hartree–Fock for ``xc="hf"``) labels of many molecules.

    Args:
      molecules: ``qmgen.Molecule`` records (positions in Bohr).
      basis, xc, grid_level: level of theory ("b3lyp5" is QM1B's B3LYP with VWN5).
      precision: "float64", or "float32" (SCF in float32, final energy and orbital
        energies re-evaluated in float64 from the converged density).
      forces: also compute analytic forces (Hartree/Bohr, no grid response as PySCF).
      conv_tol, max_cycle, level_shift, damping: SCF settings, PySCF's meaning.
      batch_size: molecules per compiled call; default from the device memory.
      policy: padding granularity (``BucketPolicy``).
      min_bucket_size: merge shape buckets with fewer molecules into larger ones (fewer
        compiles, more padding); 1 keeps every bucket.
      progress: True for a progress bar, or a callable ``(n_done, n_total)``.

    Returns:
      One dict per input molecule, in input order, with ``energy``, ``homo``, ``lumo``,
      ``gap`` (Hartree), ``mo_energy`` (n_ao,), ``dipole`` (3,) e*Bohr, ``charges``
      (n_atoms,), ``forces`` (n_atoms, 3) or None, ``converged``, ``n_iter``,
      ``scf_error``, ``status`` (``qmgen.status.Status`` value) and ``message``.
    """
    _check_options(xc, basis, grid_level, precision)
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
    )
    results: list[dict | None] = [None] * len(molecules)
    buckets: dict[Bucket, list[int]] = {}
    for i, mol in enumerate(molecules):
        if not isinstance(mol, Molecule):
            results[i] = _failure(
                Status.INVALID_INPUT, f"not a qmgen.Molecule: {type(mol).__name__}"
            )
            continue
        if mol.n_electrons % 2:
            results[i] = _failure(
                Status.ODD_ELECTRONS,
                f"{mol.n_electrons} electrons: closed-shell (restricted) methods need an "
                "even count",
            )
            continue
        if mol.n_electrons <= 0:
            results[i] = _failure(Status.INVALID_INPUT, f"no electrons (charge {mol.charge})")
            continue
        try:
            b = bucket_of(mol, basis, grid_level, policy)
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
        fn = _batched(settings, bucket)
        for start in range(0, len(members), size):
            chunk = members[start : start + size]
            prepared = [prepare(molecules[i], bucket, grid_level, dtype) for i in chunk]
            items = [p[0] for p in prepared]
            items += [items[0]] * (size - len(items))  # fixed batch shape: pad with copies
            try:
                out = jax.device_get(fn(stack(items)))
            except Exception as err:  # noqa: BLE001 - a failed batch must not sink the run
                for i in chunk:
                    results[i] = _failure(Status.COMPUTE_ERROR, f"{type(err).__name__}: {err}")
            else:
                for k, i in enumerate(chunk):
                    results[i] = _unpack(out, k, molecules[i], prepared[k][1], settings)
            done += len(chunk)
            report(done)
    report(None)
    return results


def _unpack(out: dict, k: int, mol: Molecule, layout, settings: Settings) -> dict:
    """Record of molecule k of a batch, trimmed to its own atoms and orbitals."""
    n_atoms, n_ao = mol.n_atoms, layout.n_ao
    rec = dict(
        energy=float(out["energy"][k]),
        homo=float(out["homo"][k]),
        lumo=float(out["lumo"][k]),
        gap=float(out["gap"][k]),
        mo_energy=np.asarray(out["mo_energy"][k][:n_ao]),
        dipole=np.asarray(out["dipole"][k]),
        charges=np.asarray(out["charges"][k][:n_atoms]),
        forces=np.asarray(out["forces"][k][:n_atoms]) if settings.forces else None,
        converged=bool(out["converged"][k]),
        n_iter=int(out["n_iter"][k]),
        scf_error=float(out["scf_error"][k]),
    )
    finite = all(
        np.all(np.isfinite(rec[key]))
        for key in ("energy", "homo", "lumo", "mo_energy", "dipole", "charges")
    ) and (rec["forces"] is None or np.all(np.isfinite(rec["forces"])))
    if not finite:
        rec.update(status=int(Status.NON_FINITE), message="non-finite result", converged=False)
    elif not rec["converged"]:
        rec.update(
            status=int(Status.NOT_CONVERGED),
            message=f"SCF not converged in {rec['n_iter']} cycles (|g| = {rec['scf_error']:.2e})",
        )
    else:
        rec.update(status=int(Status.OK), message="")
    return rec


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
