"""One Dask task = one whole shard: conformers, labels, an atomically written HDF5 file.

:func:`run_shard` runs in a worker process. It rebuilds the shard's valid input records
from their text (seeded conformers, so identical in any process and on any rerun), calls
:func:`qmgen.compute` on them chunk by chunk, turns every input record into stored rows
or failure records, and writes the shard with :func:`~qmgen.storage.write_shard`
into the dataset's staging folder. The driver then checks the file, renames it to its
final name and appends the manifest line (only the driver touches the manifest).

Keeping the device busy: the compute call holds a per-process device lock
(:data:`DEVICE_LOCK`), and on a GPU host each worker runs two shard tasks at once (two
Dask threads, see :mod:`qmgen.pipeline.cluster`): while one shard computes on the device,
the other waits for the lock with its conformers made, so the device idles only for the
lock hand-over. Each shard is still one compute call on the same molecules, so labels and
compiled programs do not depend on timing. Very large shards can also be split into
compute chunks (``chunk_size``); chunk boundaries depend only on the plan.

Conformers come from :mod:`qmgen.pipeline.conformers` (a pool of CPU processes on an
accelerator, a background thread on CPU).
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from pathlib import Path

import numpy as np

from qmgen.chem.records import MESSAGE_CHARS
from qmgen.errors import clip
from qmgen.pipeline.cluster import device_kind
from qmgen.pipeline.conformers import chunks, conformer_processes, record_source
from qmgen.status import Status

log = logging.getLogger("qmgen.pipeline")

STAGING_DIR = ".staging"  # under DIR/shards/: files a worker wrote, not yet committed
STORED = (Status.OK, Status.NOT_CONVERGED)  # compute statuses kept as rows
DEVICE_LOCK = threading.Lock()  # one compute call at a time per worker process


def staging_path(root, shard_id: int) -> Path:
    """A fresh, unique staging file name for shard ``shard_id`` (never reused)."""
    token = uuid.uuid4().hex[:12]
    return Path(root) / "shards" / STAGING_DIR / f"shard-{int(shard_id):06d}-{token}.h5"


# ------------------------------------------------------------------ rows / failures
def _failure(item, status, message, record=None) -> dict:
    return dict(
        molecule_index=item.molecule_index,
        input=item.raw,
        smiles=(record.smiles if record is not None else "") or item.smiles,
        status=int(status),
        message=clip(message, MESSAGE_CHARS),
    )


def _row(record, j: int, mol, res: dict, spin_labels: bool = False) -> dict:
    row = dict(
        z=mol.z,
        positions=mol.positions,
        energy=res["energy"],
        homo=res["homo"],
        lumo=res["lumo"],
        gap=res["gap"],
        scf_error=res["scf_error"],
        mo_energy=res["mo_energy"],
        dipole=res["dipole"],
        charges=res["charges"],
        forces=res["forces"],
        dispersion=res.get("dispersion"),  # None unless the functional adds D3(BJ)
        converged=res["converged"],
        n_iter=res["n_iter"],
        status=int(res["status"]),
        molecule_index=record.molecule_index,
        conformer_index=j,
        charge=int(mol.charge),
        multiplicity=int(mol.spin) + 1,
        smiles=record.smiles,
        name=record.name,
    )
    if spin_labels:
        row.update(open_shell_labels(mol, res))
    return row


def open_shell_labels(mol, res: dict) -> dict:
    """The open-shell labels of one computed conformer (``storage.schema``
    SPIN_CONFORMER_FIELDS, spin_populations, and mo_energy flattened alpha then beta);
    for a restricted result the alpha and beta values are equal and s2 is 0. A spin
    without an occupied (virtual) orbital has HOMO (LUMO) NaN."""
    mo = np.asarray(res["mo_energy"], dtype=np.float64)
    unrestricted = res.get("method") == "UKS"
    per_spin = mo if unrestricted else np.stack([mo, mo])
    n_occ = (mol.n_alpha, mol.n_beta) if unrestricted else (mol.n_electrons // 2,) * 2
    out = dict(unrestricted=unrestricted, s2=float(res.get("s2", 0.0)))
    for name, e, n in zip(("alpha", "beta"), per_spin, n_occ, strict=True):
        out[f"homo_{name}"] = float(e[n - 1]) if n > 0 else np.nan
        out[f"lumo_{name}"] = float(e[n]) if n < e.size else np.nan
    pops = res.get("spin_populations")
    out["spin_populations"] = np.zeros(mol.n_atoms) if pops is None else np.asarray(pops)
    if unrestricted:
        out.update(mo_energy=mo.reshape(-1), n_basis=mo.shape[-1])
    return out


def outcome(item, record, results, spin_labels: bool = False) -> tuple[list[dict], list[dict]]:
    """Rows and failure records of one input item given its record and compute results
    (``spin_labels``: rows carry the open-shell labels, see :func:`open_shell_labels`)."""
    if not item.ok:
        return [], [_failure(item, item.status, item.message)]
    if not record.ok:
        return [], [_failure(item, record.status, record.message, record)]
    if not record.conformers:
        return [], [_failure(item, Status.EMBED_FAILED, "no conformer was made", record)]
    rows, failures = [], []
    for j, (mol, res) in enumerate(zip(record.conformers, results, strict=True)):
        if int(res["status"]) in STORED:
            rows.append(_row(record, j, mol, res, spin_labels))
        else:
            message = res.get("message") or Status(int(res["status"])).label
            failures.append(_failure(item, res["status"], f"conformer {j}: {message}", record))
    return rows, failures


def _compute(molecules, options, timing: dict) -> list[dict]:
    """qmgen.compute on one chunk, holding the device lock; an exception becomes
    COMPUTE_ERROR records."""
    from qmgen.dft.engine import compute

    if not molecules:
        return []
    try:
        t0 = time.perf_counter()
        with DEVICE_LOCK:
            t1 = time.perf_counter()
            timing["device_wait"] += t1 - t0
            out = compute(molecules, **options.compute_kwargs())
            timing["compute"] += time.perf_counter() - t1
        return out
    except MemoryError:
        raise
    except Exception as err:  # noqa: BLE001 - compute should not raise; never sink a shard
        log.exception("compute raised on a chunk of %d conformers", len(molecules))
        message = f"compute raised {type(err).__name__}: {err}"
        return [dict(status=int(Status.COMPUTE_ERROR), message=message)] * len(molecules)


# ------------------------------------------------------------------ the task
def run_shard(task: dict) -> dict:
    """Compute and write one shard; returns the write info plus timings and counts.

    ``task``: shard_id, items (PlanItem list), options (GenerateOptions), root (dataset
    directory), attrs (root attributes of the shard).
    """
    t_start = time.perf_counter()
    options = task["options"]
    chem = options.chem_options()
    timing = dict(conformers=0.0, compute=0.0, write=0.0, wait=0.0, device_wait=0.0)
    parts = chunks(task["items"], options.conformers, options.chunk_size)
    processes = conformer_processes(task.get("conformer_processes"))
    source = record_source(task["items"], chem, processes, timing, parts)
    rows, failures, n_conf = [], [], 0
    try:
        for part in parts:
            t0 = time.perf_counter()
            records = source.take(part)
            timing["wait"] += time.perf_counter() - t0
            molecules = [m for r in records if r is not None and r.ok for m in r.conformers]
            n_conf += len(molecules)
            results = iter(_compute(molecules, options, timing))
            for item, record in zip(part, records, strict=True):
                n = len(record.conformers) if record is not None and record.ok else 0
                r, f = outcome(item, record, [next(results) for _ in range(n)], options.spin_labels)
                rows += r
                failures += f
    except BaseException:
        source.close(done=False)
        raise
    source.close()
    rows.sort(key=lambda r: (r["molecule_index"], r["conformer_index"]))
    failures.sort(key=lambda f: f["molecule_index"])
    t0 = time.perf_counter()
    info = write_staged(task["root"], task["shard_id"], rows, failures, task["attrs"])
    timing["write"] = time.perf_counter() - t0
    timing["total"] = time.perf_counter() - t_start
    info.update(
        timing={k: round(v, 4) for k, v in timing.items()},
        n_conformers=n_conf,
        n_items=len(task["items"]),
        worker=_worker_name(),
        device=device_kind(),
        conformer_processes=source.processes,
        failure_status=[int(f["status"]) for f in failures],
    )
    return info


def write_staged(root, shard_id: int, rows, failures, attrs) -> dict:
    """Write a shard under a unique staging name (see :func:`staging_path`)."""
    from qmgen.storage.writer import write_shard

    attrs = dict(attrs, created=time.strftime("%Y-%m-%dT%H:%M:%S%z"), device=device_kind())
    return write_shard(staging_path(root, shard_id), shard_id, rows, failures, attrs)


def _worker_name() -> str:
    try:
        from distributed import get_worker

        return str(get_worker().address)
    except (ImportError, ValueError):
        return f"pid {os.getpid()}"
