"""``qmgen generate``: input file -> dataset directory of checksummed HDF5 shards, with Dask.

The driver (this module) plans (:mod:`qmgen.pipeline.plan`), submits one Dask task per
shard (:func:`qmgen.pipeline.task.run_shard`) to a local cluster of worker processes or to
an existing Dask scheduler, and commits each finished shard: it checks the staged file's
SHA-256, renames it to ``shards/GGGG/shard-NNNNNN.h5`` and appends the manifest line. Only
then is a shard done. At the end it writes ``index.json``.

Crash safety and resume: a rerun of the same command recomputes the (deterministic) plan,
checks it against ``plan.json``, skips every shard whose manifest line and checksum match
(:func:`~qmgen.storage.manifest.iter_completed`) and computes the rest. Files written
by a worker that died, or by a task whose driver died, stay in the staging folder and are
never mistaken for finished shards. A worker that dies is replaced and its task rerun by
Dask; a shard that kills ``allowed_failures + 1`` workers in a row is stored as
WORKER_DIED failure records so the run still ends.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections import Counter, deque
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from qmgen.errors import QmgenError, UserError, environment_problem
from qmgen.pipeline.lock import LOCK_NAME, DirectoryLock
from qmgen.pipeline.options import GenerateOptions, option_changes
from qmgen.pipeline.plan import Plan, make_plan
from qmgen.pipeline.records import InputChangedError
from qmgen.status import Status
from qmgen.storage import manifest as mf
from qmgen.storage.files import atomic_write_text, fsync, sha256_file
from qmgen.storage.runfiles import CONFIG_NAME, PLAN_NAME, check_config, check_plan, read_json
from qmgen.storage.schema import SCHEMA_VERSION
from qmgen.storage.table import shard_relpath

log = logging.getLogger("qmgen.pipeline")

SOFTWARE: tuple[str, ...] = (
    "qmgen",
    "jax",
    "jaxlib",
    "numpy",
    "scipy",
    "pyscf",
    "rdkit",
    "h5py",
    "dask",
)
SOFTWARE += ("distributed",)
LEVEL_KEYS = ("xc", "basis", "grid_level", "precision", "forces", "conv_tol", "max_cycle")


class DatasetExistsError(UserError):
    """The output directory holds a different dataset (or other files)."""


class PipelineError(QmgenError):
    """Some shards could not be computed; rerunning the command retries them."""


# ------------------------------------------------------------------ metadata
def software_versions() -> dict:
    """Versions of qmgen and the libraries that shape its labels."""
    from importlib import metadata

    out: dict[str, str | None] = {}
    for name in SOFTWARE:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    import platform

    out["python"] = platform.python_version()
    return out


def dataset_attrs(plan: Plan, input_path) -> dict:
    """Root attributes of every shard: level of theory, units, config, provenance."""
    opts = plan.options
    attrs = {k: getattr(opts, k) for k in LEVEL_KEYS}
    if opts.density_fit is not None:  # absent: exact ERIs
        attrs.update(density_fit=opts.density_fit, auxbasis=opts.auxbasis_labels())
    if opts.spin_labels:  # absent: closed shell only, restricted (RKS/RHF)
        method = (
            "unrestricted (UKS/UHF) for every molecule"
            if opts.unrestricted
            else "restricted for closed-shell molecules, unrestricted (UKS/UHF) for open-shell"
        )
        attrs.update(open_shell=opts.open_shell, unrestricted=opts.unrestricted, method=method)
    attrs.update(
        units="energies hartree, lengths bohr, dipole e*bohr, forces hartree/bohr",
        config=opts.to_dict(),
        options_hash=plan.options_hash,
        input=dict(path=str(input_path), sha256=plan.input_sha256),
        software=software_versions(),
        generator="qmgen generate",
    )
    return attrs


# ------------------------------------------------------------------ directory
def _dataset_files(root: Path) -> list[Path]:
    names = (mf.INDEX_NAME, mf.MANIFEST_NAME, CONFIG_NAME, PLAN_NAME)
    files = [root / n for n in names if (root / n).exists()]
    files += sorted(root.glob("index-*.npy"))  # shard tables of index.json
    shards = root / mf.SHARDS_DIR
    if shards.is_dir():
        files += sorted(shards.rglob("shard-*.h5")) + sorted(shards.rglob(".*.h5.tmp-*"))
    return files


def clear_dataset(root: Path) -> None:
    """Delete the dataset files of ``root`` (index, manifest, config, plan, shards).

    A ``shards`` symlink is removed as a link: nothing outside ``root`` is deleted."""
    if (root / mf.SHARDS_DIR).is_symlink():
        (root / mf.SHARDS_DIR).unlink()
    for path in _dataset_files(root):
        path.unlink()
    shutil.rmtree(root / mf.SHARDS_DIR / ".staging", ignore_errors=True)
    shards = root / mf.SHARDS_DIR
    for group in sorted(shards.iterdir()) if shards.is_dir() else []:
        if group.is_dir() and not group.is_symlink() and not any(group.iterdir()):
            group.rmdir()  # an emptied directory of the nested layout


def make_directory(root: Path) -> None:
    """Create the output directory ``root``; a clear error when that is impossible."""
    if root.exists() and not root.is_dir():
        raise UserError(f"--out {root} exists and is not a directory; choose a directory path")
    try:
        root.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise UserError(f"--out {root}: a part of this path is a file, not a directory") from None


def _stored(root: Path, name: str, check):
    """A stored JSON file of the dataset, validated; unreadable ones refused (``--new``)."""
    try:
        doc = read_json(root / name)
        return None if doc is None else check(doc, str(root / name))
    except mf.DatasetIndexError as err:
        raise DatasetExistsError(
            f"{err}; this directory cannot be resumed: pass --new to delete the dataset "
            "there and start over"
        ) from None


def prepare_directory(root: Path, config: dict, new: bool) -> bool:
    """Check ``root`` (existing, locked) against ``config``; returns True when resuming
    a dataset there.

    Refuses (:class:`DatasetExistsError`) a directory made with other options, holding
    other files or an unreadable config.json, unless ``new`` (then qmgen's files there
    are deleted first, whatever state they are in).
    """
    if new:
        clear_dataset(root)
        return False
    old = _stored(root, CONFIG_NAME, check_config)
    if old is None:
        if _dataset_files(root):
            raise DatasetExistsError(
                f"{root} holds dataset files but no {CONFIG_NAME} (not made by `qmgen generate`"
                "?); choose another --out, or pass --new to delete them and start over"
            )
        if any(p.name != LOCK_NAME for p in root.iterdir()):
            raise DatasetExistsError(
                f"{root} is not empty and is not a qmgen dataset; choose another --out"
            )
        return False
    if old["options_hash"] != config["options_hash"]:
        changes = option_changes(old["options"], config["options"])
        if old["input"].get("sha256") != config["input"]["sha256"]:
            changes.insert(0, "the input file's content changed")
        raise DatasetExistsError(
            f"{root} holds a dataset made with different options ("
            + "; ".join(changes or ["options hash differs"])
            + "); rerun with the original options to resume it, choose another --out, or "
            "pass --new to delete it and start a new dataset"
        )
    version = old.get("schema_version", 1)  # config.json recorded it from version 2 on
    if version != SCHEMA_VERSION:
        raise DatasetExistsError(
            f"{root} was begun by a qmgen writing shard schema version {version!r}; this "
            f"qmgen writes version {SCHEMA_VERSION} and cannot add shards to it: finish it "
            "with that qmgen, choose another --out, or pass --new to start over"
        )
    layout = old.get("shard_layout", "flat")  # recorded from the nested layout on
    if layout != mf.SHARD_LAYOUT:
        raise DatasetExistsError(
            f"{root} was begun by a qmgen that put shards in a {layout!r} layout; this qmgen "
            f"uses {mf.SHARD_LAYOUT!r} and cannot add shards to it: finish it with that "
            "qmgen, choose another --out, or pass --new to start over"
        )
    return True


def _check_plan(root: Path, plan_hash: str, resuming: bool) -> None:
    stored = _stored(root, PLAN_NAME, check_plan)
    if resuming and stored is not None and stored["plan_hash"] != plan_hash:
        raise DatasetExistsError(
            f"the shard plan of this input differs from {root / PLAN_NAME} although the "
            "options match (another qmgen version?); pass --new to start over"
        )


# ------------------------------------------------------------------ commit
class CommitError(Exception):
    """A staged shard file is missing or does not match its checksum."""


def commit(root: Path, info: dict) -> dict:
    """Move a staged shard to its final name and append its manifest line; returns it."""

    staged, final = Path(info["path"]), mf.shard_path(root, info["shard_id"])
    if staged != final:
        try:
            digest = sha256_file(staged)
        except FileNotFoundError as err:
            raise CommitError(f"staged shard {staged} is missing") from err
        if digest != info["sha256"]:
            raise CommitError(f"staged shard {staged} does not match its SHA-256")
        if not final.parent.is_dir():  # a new directory of the nested layout
            final.parent.mkdir(parents=True, exist_ok=True)
            fsync(final.parent.parent, directory=True)
        os.replace(staged, final)
        fsync(final.parent, directory=True)
    entry = mf.manifest_entry(dict(info, path=str(final)), root)
    for key in ("n_conformers", "n_items", "worker", "timing", "device", "conformer_processes"):
        if key in info:
            entry[key] = info[key]
    mf.append_manifest(root, entry)
    return entry


def died_shard(root: Path, shard, attrs: dict, reason: str) -> dict:
    """Write shard ``shard`` as WORKER_DIED failure records (one per input item)."""
    from qmgen.storage.writer import write_shard

    failures = [
        dict(
            molecule_index=it.molecule_index,
            input=it.raw,
            smiles=it.smiles,
            status=int(Status.WORKER_DIED),
            message=reason,
        )
        for it in shard.items
    ]
    attrs = dict(attrs, created=time.strftime("%Y-%m-%dT%H:%M:%S%z"), device="none")
    path = mf.shard_path(root, shard.shard_id)
    info = write_shard(path, shard.shard_id, [], failures, attrs)
    info.update(
        n_conformers=0,
        n_items=len(shard.items),
        failure_status=[int(Status.WORKER_DIED)] * len(failures),
    )
    return info


# ------------------------------------------------------------------ driver
def generate(
    input_path,
    out_dir,
    *,
    workers: int | None = None,
    scheduler: str | None = None,
    client=None,
    new: bool = False,
    progress: bool = True,
    allowed_failures: int = 3,
    conformer_processes: int | None = None,
    wait: bool = False,
    task=None,
    **options,
) -> dict:
    """Compute a dataset from ``input_path`` into ``out_dir``; resumes an unfinished one.

    ``options``: :class:`~qmgen.pipeline.options.GenerateOptions` fields (``xc``, ``basis``,
    ``grid_level``, ``precision``, ``forces``, ``conformers``, ``shard_size``,
    ``split="K/N"`` for job K of N of a job array, ...).
    Execution: ``workers`` local worker processes (default: one per GPU, else per core),
    or ``scheduler`` (address of an existing Dask scheduler), or ``client`` (a connected
    ``distributed.Client``, left open). ``new`` deletes a dataset already in ``out_dir``
    instead of refusing changed options. ``allowed_failures``: worker deaths tolerated
    per shard on a local cluster before its lines are stored as WORKER_DIED.
    ``conformer_processes``: CPU processes per worker that make conformers ahead of the
    compute (None: min(8, cores / GPUs - 2) on an accelerator, 0 on CPU; 0: a thread of
    the shard's task makes them). Results do not depend on it, so, like ``workers``, it
    is not one of the dataset's options: a run may be resumed with another value.
    ``wait``: when another run holds ``out_dir``'s lock, wait for it instead of refusing.
    ``task``: the function run per shard (default :func:`qmgen.pipeline.task.run_shard`;
    tests and instrumentation wrap it).

    One writer per directory: the run holds ``out_dir``'s lock (:mod:`~qmgen.pipeline.lock`)
    from before it writes anything to its end.

    Returns a summary dict (out_dir, complete, counts, timings). Raises
    :class:`~qmgen.errors.UserError` (bad options or input, :class:`DatasetExistsError`
    for a directory holding another dataset), :class:`~qmgen.errors.EnvironmentProblem`
    (disk full, unwritable directory, unreachable scheduler, the lock held by another
    run) or :class:`PipelineError` (shards that failed for reasons other than their
    input; rerunning retries them).
    """
    t_start = time.perf_counter()
    root = Path(out_dir)
    opts = GenerateOptions(**options)
    for name, value, low in (
        ("workers", workers, 1),
        ("conformer_processes", conformer_processes, 0),
    ):
        if value is not None and (type(value) is not int or value < low):
            raise UserError(f"{name} must be an integer >= {low}, got {value!r}")
    input_path = Path(input_path)
    if not input_path.is_file():
        raise UserError(f"no such input file: {str(input_path)!r}")
    input_sha = sha256_file(input_path)
    config: dict[str, Any] = dict(
        options=opts.to_dict(),
        options_hash=opts.digest(input_sha),
        input=dict(path=str(input_path.resolve()), sha256=input_sha),
        schema_version=SCHEMA_VERSION,
        shard_layout=mf.SHARD_LAYOUT,
    )
    with environment_errors():
        make_directory(root)
    with environment_errors(), DirectoryLock(root, wait=wait):
        resuming = prepare_directory(root, config, new)
        config.update(software=software_versions())
        if resuming:
            old = (read_json(root / CONFIG_NAME) or {}).get("software", {})
            changed = option_changes(old, config["software"]) if old else []
            if changed:
                log.warning("resuming a dataset begun with other software: %s", "; ".join(changed))
        else:  # first: a crash from here on leaves a resumable directory
            atomic_write_text(root / CONFIG_NAME, _dumps(config))
        t0 = time.perf_counter()
        plan = make_plan(input_path, opts, config["input"]["sha256"])
        t_plan = time.perf_counter() - t0
        _check_plan(root, plan.plan_hash, resuming)
        plan.write_json(root / PLAN_NAME)  # streamed, shard by shard
        config.update(plan_hash=plan.plan_hash)
        atomic_write_text(root / CONFIG_NAME, _dumps(config))
        (root / mf.SHARDS_DIR).mkdir(exist_ok=True)
        from qmgen.storage.writer import remove_stale_tmp

        remove_stale_tmp(root / mf.SHARDS_DIR)
        done, old_devices = _completed(root, plan.n_shards)
        todo = np.flatnonzero(~done)
        log.info(
            "plan: %d input records (%d valid, %d failed validation) -> %d shards of <= %d "
            "conformers, %d planned conformers; %.2f s%s",
            plan.n_records,
            plan.n_valid,
            plan.n_records - plan.n_valid,
            len(plan.shards),
            plan.shard_size,
            plan.n_planned,
            t_plan,
            f"; resuming: {int(done.sum())} shards already done" if resuming else "",
        )
        attrs = dataset_attrs(plan, input_path.resolve())
        run = _Run(root, plan, attrs, done, progress, task, conformer_processes)
        run.devices |= old_devices
        if len(todo):
            with ExitStack() as stack:
                client = _client(stack, client, scheduler, workers, allowed_failures)
                run.execute(client, todo)
        return run.finish(t_start, t_plan)


@contextmanager
def environment_errors():
    """Turn an ``OSError`` from a full disk or an unwritable path into an
    :class:`~qmgen.errors.EnvironmentProblem` (others pass unchanged)."""
    try:
        yield
    except OSError as err:
        problem = environment_problem(err)
        if problem is None:
            raise
        raise problem from err


def _dumps(doc) -> str:
    import json

    return json.dumps(doc, indent=1, sort_keys=True) + "\n"


def _client(stack: ExitStack, client, scheduler, workers, allowed_failures):
    from qmgen.pipeline import cluster

    if client is not None:
        return client
    if scheduler:
        return stack.enter_context(cluster.connect(scheduler))
    local, client = cluster.local_cluster(workers, allowed_failures)
    stack.enter_context(local)
    return stack.enter_context(client)


def _completed(root: Path, n_shards: int) -> tuple[np.ndarray, set[str]]:
    """Shards of the plan already done (bool, one per shard id) and the devices that
    computed them, streamed from :func:`~qmgen.storage.manifest.iter_completed`."""
    done = np.zeros(n_shards, dtype=bool)
    devices: set[str] = set()
    try:
        for entry in mf.iter_completed(root):
            shard_id = int(entry["shard_id"])
            if 0 <= shard_id < n_shards:
                done[shard_id] = True
                if entry.get("device"):
                    devices.add(entry["device"])
    except mf.DatasetIndexError as err:
        raise DatasetExistsError(
            f"{err}; remove that line to recompute its shard, or pass --new to start over"
        ) from None
    return done, devices


class _Queue:
    """Shard ids to submit, in order: a cursor over an array (O(1) per pop)."""

    def __init__(self, ids: np.ndarray):
        self.ids, self.next = ids, 0

    def __bool__(self) -> bool:
        return self.next < len(self.ids)

    def popleft(self) -> int:
        self.next += 1
        return int(self.ids[self.next - 1])


def submission_order(plan: Plan, todo: np.ndarray) -> np.ndarray:
    """Shard ids ``todo`` by largest estimated cost first (ties: by id), so the last
    shards to finish are small ones."""
    todo = np.asarray(todo, dtype=np.int64)
    return todo[np.lexsort((todo, -plan.shard_cost[todo]))]


class _Run:
    """State of one driver run: submission window, commits, progress, totals.

    Memory does not grow with finished shards: done shards are a bool array (one per
    shard id), totals are counters, and a shard's items exist only while it is in flight.
    """

    def __init__(self, root: Path, plan: Plan, attrs: dict, done, progress: bool, task, processes):
        from qmgen.pipeline.task import run_shard

        self.root, self.plan, self.attrs = root, plan, attrs
        self.task = task or run_shard
        self.conformer_processes = None if processes is None else int(processes)
        self.done = np.array(done, dtype=bool)  # by shard id
        self.n_done = int(self.done.sum())
        self.errors: dict[int, str] = {}
        self.timing: Counter[str] = Counter()
        self.failures: Counter[str] = Counter()
        self.rows = self.computed = self.n_conformers = 0
        self.devices: set[str] = set()
        self.progress = progress
        self.bar = None

    # -------------------------------------------------------------- execution
    def execute(self, client, todo) -> None:
        """Compute shards ``todo`` (ids) on ``client``: a window of about two shards per
        worker in flight, each committed as it finishes."""
        from distributed import as_completed

        from qmgen.pipeline import cluster

        queue = _Queue(submission_order(self.plan, todo))
        self.bar = self._bar()
        ac = as_completed()
        inflight: dict = {}
        tag = self.plan.options_hash[:10]

        def submit(shard, attempt=0):
            key = f"qmgen-shard-{tag}-{shard.shard_id:06d}" + (f"-{attempt}" if attempt else "")
            payload = dict(
                shard_id=shard.shard_id,
                items=shard.items,  # made now, dropped with the shard when it is done
                options=self.plan.options,
                root=str(self.root.resolve()),
                attrs=self.attrs,
                conformer_processes=self.conformer_processes,
            )
            fut = client.submit(self.task, payload, key=key, pure=False)
            inflight[fut.key] = (shard, attempt)
            ac.add(fut)

        isolated: deque = deque()  # shards whose worker died, retried alone before blamed

        def refill():
            if isolated:  # drain the cluster, then run the suspect with nothing beside it
                if not inflight:
                    shard, attempt = isolated.popleft()
                    submit(shard, attempt)
                return
            window = max(4, 2 * cluster.n_workers(client))
            while queue and len(inflight) < window:
                submit(self.plan.shards[queue.popleft()])

        try:
            refill()
            for fut in ac:
                shard, attempt = inflight.pop(fut.key)
                try:
                    retry = self._handle(fut, shard, attempt)
                except BaseException:  # disk full, Ctrl-C: start nothing more, stop the rest
                    client.cancel(list(ac.futures))
                    raise
                fut.release()
                if retry == "isolate":
                    isolated.append((shard, attempt + 1))
                elif retry:
                    submit(shard, attempt + 1)
                refill()
        except InputChangedError:
            client.cancel(list(ac.futures))
            raise
        finally:
            if self.bar is not None:
                self.bar.close()

    def _handle(self, fut, shard, attempt: int) -> bool | str:
        """Commit a finished future; returns True when the shard should be resubmitted,
        "isolate" when its worker died while other shards shared it (a shard queued on a
        worker that another shard crashed is charged with that death too)."""
        from distributed import KilledWorker

        try:
            info = fut.result()
        except KilledWorker as err:
            if attempt == 0:
                log.warning("shard %d: its worker died; retrying it alone", shard.shard_id)
                return "isolate"
            reason = (
                f"the worker computing this shard died {err.args[2] + 1} times in a row "
                "(killed, out of memory, or a crash in native code); its lines were not computed"
            )
            log.error("shard %d: %s; storing WORKER_DIED records", shard.shard_id, reason)
            info = died_shard(self.root, shard, self.attrs, reason)
        except Exception as err:  # noqa: BLE001 - reported, the other shards go on
            where = f"shard {shard.shard_id} under {self.root}"
            problem = environment_problem(err, where)
            if problem is not None:  # a full disk: every other shard would fail alike
                raise problem from err
            self.errors[shard.shard_id] = f"{type(err).__name__}: {err}"
            log.error("shard %d failed: %s: %s", shard.shard_id, type(err).__name__, err)
            return False
        try:
            entry = commit(self.root, info)
        except CommitError as err:
            if attempt < 2:
                log.warning("shard %d: %s; computing it again", shard.shard_id, err)
                return True
            self.errors[shard.shard_id] = str(err)
            return False
        self._record(shard, info, entry)
        return False

    def _record(self, shard, info: dict, entry: dict) -> None:
        self.done[shard.shard_id] = True
        self.n_done += 1
        self.computed += 1
        self.rows += info["n_rows"]
        self.n_conformers += info.get("n_conformers", 0)
        self.failures.update(Status(s).label for s in info.get("failure_status", []))
        t = info.get("timing", {})
        self.timing.update(t)
        if info.get("device"):
            self.devices.add(info["device"])
        log.info(
            "shard %d done (%d/%d): %d rows, %d failures; conformers %.2f s (compute "
            "waited %.2f s for them), compute %.2f s (after %.2f s waiting for the device), "
            "write %.3f s; %s",
            shard.shard_id,
            self.n_done,
            self.plan.n_shards,
            info["n_rows"],
            info["n_failures"],
            t.get("conformers", 0.0),
            t.get("wait", 0.0),
            t.get("compute", 0.0),
            t.get("device_wait", 0.0),
            t.get("write", 0.0),
            info.get("worker", "driver"),
        )
        if self.bar is not None:
            self.bar.set_postfix(
                shards=f"{self.n_done}/{self.plan.n_shards}",
                failed=sum(self.failures.values()),
                refresh=False,
            )
            self.bar.update(shard.n_conformers)

    def _bar(self):
        if not self.progress:
            return None
        from tqdm.auto import tqdm

        initial = int(self.plan.shard_conformers[self.done].sum())
        return tqdm(
            total=self.plan.n_planned,
            initial=initial,
            unit="conf",
            desc="qmgen generate",
            dynamic_ncols=True,
            smoothing=0.1,
        )

    # -------------------------------------------------------------- the end
    def finish(self, t_start: float, t_plan: float) -> dict:
        """Write index.json when every shard is done; log and return the summary."""
        missing = np.flatnonzero(~self.done).tolist()
        wall = time.perf_counter() - t_start
        summary = dict(
            out_dir=str(self.root),
            complete=not missing,
            n_shards=self.plan.n_shards,
            n_shards_computed=self.computed,
            n_shards_skipped=self.n_done - self.computed,
            n_input_records=self.plan.n_records,
            n_rows_computed=self.rows,
            n_conformers_computed=self.n_conformers,
            failures_computed=dict(self.failures),
            wall_s=round(wall, 3),
            plan_s=round(t_plan, 3),
            timing_s={k: round(v, 3) for k, v in self.timing.items()},
            errors=dict(self.errors),
        )
        summary["conformers_per_s"] = round(self.n_conformers / wall, 3) if wall else 0.0
        if self.computed:
            t = self.timing
            log.info(
                "time: wall %.1f s (plan %.1f s); summed over shards: conformers %.1f s "
                "(compute waited %.1f s for them), compute %.1f s, write %.2f s; "
                "%d conformers computed, %.2f/s",
                wall,
                t_plan,
                t["conformers"],
                t["wait"],
                t["compute"],
                t["write"],
                self.n_conformers,
                summary["conformers_per_s"],
            )
        if missing:
            summary["missing_shards"] = missing
            raise PipelineError(
                f"{len(missing)} of {self.plan.n_shards} shards are not done "
                f"({'; '.join(f'shard {k}: {v}' for k, v in sorted(self.errors.items())[:5])}); "
                "finished shards are kept: rerun the same command to retry the others"
            )
        attrs = dict(self.attrs, created=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
        attrs.update(devices=sorted(self.devices))
        index = mf.write_index(self.root, attrs, self._index_entries())
        shutil.rmtree(self.root / mf.SHARDS_DIR / ".staging", ignore_errors=True)
        summary.update(n_rows=index["n_rows"], n_failures=index["n_failures"])
        log.info(
            "dataset %s: %d conformers, %d failure records in %d shards",
            self.root,
            index["n_rows"],
            index["n_failures"],
            index["n_shards"],
        )
        return summary

    def _index_entries(self) -> Iterator[dict]:
        """The manifest's entries of this plan's shards, streamed in append order
        (:func:`~qmgen.storage.manifest.write_index` keeps the last one per shard: the
        one checked when resuming, or committed by this run)."""
        n_shards = self.plan.n_shards
        for entry in mf.iter_manifest(self.root):
            sid = entry["shard_id"]
            if sid < n_shards and entry["file"] == shard_relpath(sid):
                yield entry  # (an entry elsewhere never counted as done: superseded)
