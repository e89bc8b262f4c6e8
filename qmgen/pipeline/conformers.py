"""Input records with conformers for a shard task: in a thread, or in a process pool.

Conformers (:func:`rebuild_record`, milliseconds each) come from one of two sources
(:func:`record_source`):

- a pool of CPU processes (:func:`conformer_pool`, one pool per worker process, shared by
  its threads), the default on an accelerator: every item of a shard is submitted when
  its task starts and the records are taken in order, so the pool works ahead through the
  next chunks and the next shard while the device computes. Conformers are seeded, so a
  record made in a pool process equals the in-thread one;
- a background thread of the task (``conformer_processes=0``, the default on CPU, where
  every core already computes): it makes the next chunk's conformers while one computes.

A pool process that dies (a crash in native code, the OOM killer) breaks the pool: the
shard's records not yet made are then made one at a time in a one-process pool of the
shard's own, so an item that kills that process too, twice, is known to be the cause and
becomes an EMBED_FAILED failure record; the other items are unaffected, and the next
shards get a fresh shared pool. Timings: ``conformers`` is the time spent making them
(summed over pool processes), ``wait`` the time the task waited for them.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import queue
import sys
import tempfile
import threading
import time
import weakref
from concurrent.futures import BrokenExecutor, ProcessPoolExecutor
from pathlib import Path

from qmgen.status import Status

log = logging.getLogger("qmgen.pipeline")


# ------------------------------------------------------------------ input records
def rebuild_record(item, chem_options):
    """The :class:`~qmgen.chem.InputRecord` of a plan item, with conformers.

    Never raises: an unexpected error becomes a failure record naming it.
    """
    from qmgen.chem.records import failure

    try:
        record = _rebuild(item, chem_options)
    except MemoryError:
        raise
    except Exception as err:  # noqa: BLE001 - recorded as this line's failure
        return failure(
            item.molecule_index,
            Status.EMBED_FAILED,
            f"making conformers raised {type(err).__name__}: {err}",
            item.raw,
            smiles=item.smiles,
            name=item.name,
            format=item.format,
        )
    return dataclasses.replace(record, molecule_index=item.molecule_index)


def _rebuild(item, chem_options):
    if item.format == "smiles":
        from qmgen.chem.readers import split_smiles_line
        from qmgen.chem.smiles import smiles_record

        smiles, name = split_smiles_line(item.raw)
        return smiles_record(smiles, name, item.molecule_index, item.raw, chem_options)
    if item.format == "xyz":
        from qmgen.chem.readers import iter_xyz

        records = list(iter_xyz(item.raw, chem_options))
    else:
        from qmgen.chem.readers import iter_sdf

        with tempfile.TemporaryDirectory(prefix="qmgen-sdf-") as tmp:
            path = Path(tmp) / "block.sdf"
            path.write_text(item.raw, encoding="utf-8", errors="surrogateescape")
            records = list(iter_sdf(path, chem_options))
    if len(records) != 1:
        raise ValueError(f"input text of record {item.molecule_index} gave {len(records)} records")
    return records[0]


def chunks(items, conformers: int, chunk_size: int) -> list[list]:
    """Split items into consecutive chunks of at most ``chunk_size`` planned conformers
    (one chunk when ``chunk_size`` is 0)."""
    if not chunk_size:
        return [list(items)] if items else []
    out: list[list] = []
    current: list = []
    load = 0
    for it in items:
        weight = conformers if it.ok else 0
        if current and load + weight > chunk_size:
            out.append(current)
            current, load = [], 0
        current.append(it)
        load += weight
    if current:
        out.append(current)
    return out


class _ThreadRecords:
    """Records of a shard's chunks made by a background thread, one chunk ahead."""

    processes = 0

    def __init__(self, parts, chem_options, timing: dict):
        self.timing = timing
        self.queue: queue.Queue = queue.Queue(maxsize=1)
        self.thread = threading.Thread(
            target=self._produce, args=(parts, chem_options), name="qmgen-conformers", daemon=True
        )
        self.thread.start()

    def _produce(self, parts, chem_options) -> None:
        try:
            for part in parts:
                t0 = time.perf_counter()
                records = [rebuild_record(it, chem_options) if it.ok else None for it in part]
                self.timing["conformers"] += time.perf_counter() - t0
                self.queue.put(records)
        except BaseException as err:  # noqa: BLE001 - handed to the consumer, which re-raises
            self.queue.put(err)

    def take(self, part) -> list:
        """The records of the next chunk (``part``), in order (None for invalid items)."""
        got = self.queue.get()
        if isinstance(got, BaseException):
            raise got
        return got

    def close(self, done: bool = True) -> None:
        if done:
            self.thread.join()


# ------------------------------------------------------------------ conformer processes
POOL_START_METHOD = "spawn"  # never fork: the worker runs JAX/CUDA and Dask threads
AUTO_MAX_PROCESSES = 8
CRASH_MESSAGE = (
    "making conformers crashed the conformer process twice, with nothing else in it "
    "(a crash in native code, e.g. RDKit, or the process was killed)"
)
_POOL_LOCK = threading.Lock()
_POOL: ProcessPoolExecutor | None = None
_POOL_SIZE = 0
_ALL_POOLS: weakref.WeakSet = weakref.WeakSet()  # shared and one-process pools, for the exit


def conformer_processes(requested: int | None) -> int:
    """Pool processes for this worker: ``requested``, or the default when it is None
    (0 on a CPU worker, where the cores compute; else :func:`auto_conformer_processes`)."""
    if requested is not None:
        return max(int(requested), 0)
    from qmgen.pipeline.cluster import device_kind

    if device_kind().startswith("cpu:"):
        return 0
    return auto_conformer_processes()


@functools.cache
def auto_conformer_processes() -> int:
    """min(8, CPU cores / GPUs of this host - 2), at least 1 (cores: this process's
    affinity, so a SLURM job's share; GPUs: ``nvidia-smi -L``, at least 1)."""
    from qmgen.pipeline.cluster import nvidia_smi_gpus

    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    gpus = max(nvidia_smi_gpus(), 1)
    return max(1, min(AUTO_MAX_PROCESSES, cores // gpus - 2))


def conformer_pool(processes: int) -> ProcessPoolExecutor:
    """This worker process's conformer pool of ``processes`` processes (made on first use;
    a request for another size replaces it, letting the old one finish its work)."""
    global _POOL, _POOL_SIZE
    with _POOL_LOCK:
        if _POOL is None or _POOL_SIZE != processes:
            old, _POOL, _POOL_SIZE = _POOL, _new_pool(processes), processes
            if old is not None:
                old.shutdown(wait=False)
        return _POOL


def _renew_pool(broken: ProcessPoolExecutor) -> None:
    """Replace the shared pool when it is ``broken`` (once, whichever thread notices)."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is broken:
            _POOL = _new_pool(_POOL_SIZE)
    broken.shutdown(wait=False)


def shutdown_conformer_pools() -> None:
    """Stop this process's conformer pools (a later task makes a new one)."""
    global _POOL
    with _POOL_LOCK:
        _POOL = None
        pools = list(_ALL_POOLS)
    for pool in pools:
        pool.shutdown(wait=True, cancel_futures=True)


def _new_pool(processes: int) -> ProcessPoolExecutor:
    import multiprocessing

    # Dask runs workers as daemonic processes, which multiprocessing forbids to have
    # children (they would be orphaned when the worker is killed): declare this one
    # non-daemonic; the pool processes watch their parent and exit when it is gone
    me = multiprocessing.current_process()
    if me.daemon:
        try:
            me.daemon = False
        except AssertionError:
            me._config["daemon"] = False  # type: ignore[attr-defined]  # as multiprocessing does
    _stop_pools_at_exit()
    pool = ProcessPoolExecutor(
        processes,
        mp_context=multiprocessing.get_context(POOL_START_METHOD),
        initializer=_pool_init,
        initargs=(os.getpid(),),
    )
    _ALL_POOLS.add(pool)
    return pool


@functools.cache
def _stop_pools_at_exit() -> None:
    """Stop the pools when this process exits, before multiprocessing joins its children
    (a worker started by multiprocessing, as Dask's are, joins them before the pools'
    own exit hook would stop them: without this its exit hangs until the nanny kills it)."""
    from multiprocessing import util

    util.Finalize(None, shutdown_conformer_pools, exitpriority=100)


def _pool_init(parent_pid: int) -> None:
    """First thing in a pool process: no GPU, single-threaded libraries, parent watch."""
    os.environ.update(
        CUDA_VISIBLE_DEVICES="",
        JAX_PLATFORMS="cpu",
        OMP_NUM_THREADS="1",
        OPENBLAS_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
    )
    if "jax" in sys.modules:  # imported with qmgen; no backend is initialised yet
        try:
            sys.modules["jax"].config.update("jax_platforms", "cpu")
        except Exception:  # noqa: BLE001 - never fail the pool process over this
            pass
    threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True).start()


def _watch_parent(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(0.5)
    os._exit(0)  # the worker is gone: nobody will collect results


def _pool_rebuild(item, chem_options):
    """In a pool process: the record of ``item`` and the seconds it took."""
    t0 = time.perf_counter()
    record = rebuild_record(item, chem_options)
    return record, time.perf_counter() - t0


def _pool_ping() -> int:
    return os.getpid()


class _PoolRecords:
    """Records of a shard's items made by the conformer pool, all submitted at once."""

    def __init__(self, items, chem_options, processes: int, timing: dict):
        self.chem, self.timing = chem_options, timing
        self.isolated: ProcessPoolExecutor | None = None  # this shard's, after a crash
        self.in_thread = False  # the pool does not work at all here: make them in-thread
        self.processes = processes
        self.pending = []
        try:
            pool = conformer_pool(processes)
            for it in items:
                fut = None
                if it.ok:
                    try:
                        fut = pool.submit(_pool_rebuild, it, chem_options)
                    except BrokenExecutor:  # broke under another shard: a new one, then ours
                        _renew_pool(pool)
                        pool = conformer_pool(processes)
                        fut = pool.submit(_pool_rebuild, it, chem_options)
                self.pending.append((it, pool, fut))
        except BaseException:
            self.close(done=False)
            raise
        self.pending.reverse()  # popped from the end: in order

    def take(self, part) -> list:
        """The records of the next ``len(part)`` items, in order (None for invalid ones)."""
        out = []
        for it in part:
            item, pool, fut = self.pending.pop()
            assert item is it, "chunks are taken in order"
            out.append(None if fut is None else self._record(item, pool, fut))
        return out

    def _record(self, item, pool, fut):
        if self.in_thread:
            fut.cancel()
            return self._make_here(item)
        try:
            record, seconds = fut.result()
        except BrokenExecutor:
            _renew_pool(pool)
            record, seconds = self._alone(item)
        except MemoryError:
            raise
        except Exception as err:  # noqa: BLE001 - the pool itself failed: make it here
            log.warning(
                "conformer pool failed (%s: %s); making them in-thread", type(err).__name__, err
            )
            self.in_thread = True
            return self._make_here(item)
        self.timing["conformers"] += seconds
        return record

    def _alone(self, item):
        """``item``'s record made in this shard's one-process pool; a failure record
        when it kills that process twice while a trivial call still works there."""
        for _ in range(2):
            try:
                return self._isolated_pool().submit(_pool_rebuild, item, self.chem).result()
            except BrokenExecutor:
                self._drop_isolated()
        try:
            self._isolated_pool().submit(_pool_ping).result()
        except BrokenExecutor:  # no pool process works here: not the item's fault
            self._drop_isolated()
            log.error("conformer processes cannot run here; making conformers in-thread")
            self.in_thread = True
            return self._make_here(item), 0.0
        from qmgen.chem.records import failure

        log.error("record %d: %s", item.molecule_index, CRASH_MESSAGE)
        record = failure(
            item.molecule_index,
            Status.EMBED_FAILED,
            CRASH_MESSAGE,
            item.raw,
            smiles=item.smiles,
            name=item.name,
            format=item.format,
        )
        return record, 0.0

    def _make_here(self, item):
        t0 = time.perf_counter()
        record = rebuild_record(item, self.chem)
        self.timing["conformers"] += time.perf_counter() - t0
        return record

    def _isolated_pool(self) -> ProcessPoolExecutor:
        if self.isolated is None:
            self.isolated = _new_pool(1)
        return self.isolated

    def _drop_isolated(self) -> None:
        if self.isolated is not None:
            self.isolated.shutdown(wait=False)
            self.isolated = None

    def close(self, done: bool = True) -> None:
        """Cancel what was not taken (a failed task) and stop the one-process pool."""
        for _, _, fut in self.pending:
            if fut is not None:
                fut.cancel()
        self.pending = []
        self._drop_isolated()


def record_source(items, chem_options, processes: int, timing: dict, parts=None):
    """Where a shard's records come from: a pool of ``processes`` processes, or (0) a
    background thread. Take each chunk's records with ``take(part)``, then ``close()``."""
    if processes > 0:
        try:
            return _PoolRecords(items, chem_options, processes, timing)
        except (OSError, RuntimeError, AssertionError, BrokenExecutor) as err:
            log.warning(
                "cannot start conformer processes (%s: %s); making them in-thread",
                type(err).__name__,
                err,
            )
    return _ThreadRecords(parts if parts is not None else [list(items)], chem_options, timing)
