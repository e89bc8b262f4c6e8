"""Where shards run: a local Dask cluster of worker processes, or an existing scheduler.

Local (the default): ``LocalCluster(n_workers, threads_per_worker=1, processes=True)``.
On a CPU host there is one worker per core and each worker's XLA runs single-threaded
(more workers beat more threads per SCF here); every worker shares the persistent
compilation cache (``QMGEN_CACHE_DIR``, default ~/.cache/qmgen/jax), so a program is
compiled once per machine. On a GPU host (a CUDA build of JAX and ``nvidia-smi`` seeing
devices) there is one worker per GPU, pinned with ``CUDA_VISIBLE_DEVICES`` by a worker
plugin, with two Dask threads: while one shard computes on the GPU (holding the worker's
device lock) the other waits with its conformers made, which the worker's own pool of CPU
processes makes ahead of the device (see :mod:`qmgen.pipeline.task`). On an external
cluster start GPU workers the same way: ``CUDA_VISIBLE_DEVICES=i dask worker ADDRESS
--nthreads 2``.

Existing cluster: ``scheduler="tcp://host:8786"`` connects a client to a scheduler started
with ``dask scheduler`` / ``dask worker`` or by dask-jobqueue; the workers need qmgen
installed and the output directory on a shared file system.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import signal
import subprocess

from distributed.diagnostics.plugin import WorkerPlugin

log = logging.getLogger("qmgen.pipeline")


def gpu_count() -> int:
    """CUDA devices usable by JAX here (0 without a CUDA build of JAX); no JAX init."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) == "":
        return 0
    plugins = ("jax_plugins.xla_cuda12", "jax_plugins.xla_cuda13", "jax_cuda12_plugin")
    try:
        has_cuda_jax = any(importlib.util.find_spec(p) is not None for p in plugins)
    except ModuleNotFoundError:
        has_cuda_jax = False
    if not has_cuda_jax:
        return 0
    n = nvidia_smi_gpus()
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible:
        n = min(n, len([v for v in visible.split(",") if v.strip()]))
    return n


def nvidia_smi_gpus() -> int:
    """NVIDIA GPUs of this host (or of this job's cgroup) as ``nvidia-smi -L`` lists them,
    whatever CUDA_VISIBLE_DEVICES says; 0 without nvidia-smi."""
    if shutil.which("nvidia-smi") is None:
        return 0
    try:
        out = subprocess.run(
            ["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20, check=False
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(1 for line in out.splitlines() if line.startswith("GPU "))


def default_workers() -> int:
    """One worker per GPU on a GPU host, else one per CPU core."""
    return gpu_count() or (os.cpu_count() or 1)


def worker_env(workers: int, gpus: int) -> dict:
    """Environment of local worker processes: cache location and thread counts."""
    from qmgen.dft.engine import enable_compilation_cache

    cores = os.cpu_count() or 1
    threads = max(1, cores // max(workers, 1))
    env = {k: str(threads) for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
    # Dask's per-worker housekeeping samples every 10-100 ms (statistical profiler, memory
    # and system monitors); with one single-threaded worker per core it steals cycles
    # from the compute, so sample less (the pipeline logs its own timings)
    env["DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED"] = "False"
    env["DASK_DISTRIBUTED__WORKER__MEMORY__MONITOR_INTERVAL"] = "2s"
    env["DASK_DISTRIBUTED__ADMIN__SYSTEM_MONITOR__INTERVAL"] = "2s"
    cache = os.environ.get("QMGEN_CACHE_DIR") or enable_compilation_cache()
    if cache:
        env["QMGEN_CACHE_DIR"] = str(cache)
    flags = os.environ.get("XLA_FLAGS", "")
    if not gpus and threads == 1 and "multi_thread_eigen" not in flags:
        flags += " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
    if flags.strip():
        env["XLA_FLAGS"] = flags.strip()
    if gpus and workers > gpus:  # several workers share a GPU: split its memory
        per_gpu = -(-workers // gpus)
        env["XLA_PYTHON_CLIENT_MEM_FRACTION"] = f"{0.9 / per_gpu:.2f}"
    return env


class PinDevice(WorkerPlugin):
    """Worker plugin: worker ``name`` (0, 1, ...) sees GPU ``devices[name % n]`` only.

    Runs when a worker starts, before JAX initialises CUDA in that process.
    """

    name = "qmgen-pin-device"

    def __init__(self, devices: list[str]):
        self.devices = list(devices)

    def setup(self, worker):
        try:
            index = int(worker.name)
        except (TypeError, ValueError):
            index = abs(hash(str(worker.name)))
        os.environ["CUDA_VISIBLE_DEVICES"] = self.devices[index % len(self.devices)]


def local_cluster(workers: int | None = None, allowed_failures: int = 3):
    """Start a local cluster of worker processes; returns ``(cluster, client)``."""

    gpus = gpu_count()
    workers = int(workers or gpus or (os.cpu_count() or 1))
    env = worker_env(workers, gpus)
    quiet = {  # the nannies and scheduler live in this process: the same sampling rates
        "distributed.worker.profile.enabled": False,
        "distributed.worker.memory.monitor-interval": "2s",
        "distributed.admin.system-monitor.interval": "2s",
    }
    quiet["distributed.scheduler.allowed-failures"] = int(allowed_failures)
    # Ctrl-C is for the driver: worker processes ignore SIGINT, so a terminal's Ctrl-C
    # (sent to the whole process group) neither kills them mid-shard nor fills the screen
    # with their tracebacks; they exit when the driver closes the cluster or dies. They
    # are born ignoring it (an ignored signal stays ignored through exec, and Python keeps
    # it so), and IgnoreInterrupts does the same in workers restarted later. The driver
    # itself ignores Ctrl-C for the seconds the cluster takes to start.
    handler = signal.signal(signal.SIGINT, signal.SIG_IGN) if _main_thread() else None
    try:
        cluster, client = _start_local(workers, gpus, env, quiet)
    finally:
        if handler is not None:
            signal.signal(signal.SIGINT, handler)
    client.register_plugin(IgnoreInterrupts())
    return cluster, client


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


class IgnoreInterrupts(WorkerPlugin):
    """Worker plugin: the worker process ignores SIGINT (Ctrl-C is the driver's)."""

    name = "qmgen-ignore-sigint"

    def setup(self, worker):
        if _main_thread():
            signal.signal(signal.SIGINT, signal.SIG_IGN)


def _start_local(workers: int, gpus: int, env: dict, quiet: dict):
    import dask
    from distributed import Client, LocalCluster

    with dask.config.set(quiet):
        cluster = LocalCluster(
            n_workers=workers,
            threads_per_worker=2 if gpus else 1,  # GPU: conformers of one shard overlap
            # the compute of another (the device lock serialises compute calls)
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
            env=env,
        )
    client = Client(cluster)
    if gpus:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        devices = [d.strip() for d in visible.split(",")] if visible else []
        devices = devices or [str(i) for i in range(gpus)]
        client.register_plugin(PinDevice(devices[:gpus]))
    log.info(
        "local Dask cluster: %d worker processes (%s), XLA threads/worker: %s, cache %s",
        workers,
        f"{gpus} GPUs" if gpus else "CPU",
        env.get("OMP_NUM_THREADS"),
        env.get("QMGEN_CACHE_DIR", "off"),
    )
    return cluster, client


def probe_scheduler(address: str, timeout: float = 5.0) -> None:
    """Fail fast, with the real reason, when nothing accepts TCP connections at
    ``address`` (Dask's own client retries a refused connection until its timeout and
    then reports a time-out). Raises :class:`~qmgen.errors.EnvironmentProblem`."""
    import socket

    from distributed.comm import parse_address
    from distributed.comm.addressing import parse_host_port

    from qmgen.errors import EnvironmentProblem, UserError

    try:
        scheme, location = parse_address(address)
    except (ValueError, TypeError) as err:
        raise UserError(f"--scheduler {address!r} is not a Dask address ({err})") from None
    if scheme not in ("tcp", "tls"):
        return  # inproc:// and other transports: leave it to Dask
    try:
        host, port = parse_host_port(location)
    except (ValueError, TypeError) as err:
        raise UserError(f"--scheduler {address!r}: {err}; write tcp://HOST:PORT") from None
    hint = "start it with `dask scheduler` (and `dask worker ADDRESS`), or fix --scheduler"
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except ConnectionRefusedError:
        raise EnvironmentProblem(
            f"no Dask scheduler at {address}: connection refused; {hint}"
        ) from None
    except socket.gaierror as err:
        raise EnvironmentProblem(
            f"cannot resolve the scheduler host {host!r} ({err.strerror}); {hint}"
        ) from None
    except TimeoutError:
        raise EnvironmentProblem(
            f"no answer from the Dask scheduler at {address} within {timeout:g} s "
            f"(firewall or wrong host?); {hint}"
        ) from None
    except OSError as err:
        raise EnvironmentProblem(f"cannot reach {address}: {err.strerror or err}; {hint}") from None


def connect(address: str, timeout: float = 30):
    """A client of the existing Dask scheduler at ``address`` (probed first, see
    :func:`probe_scheduler`)."""
    from distributed import Client

    from qmgen.errors import EnvironmentProblem

    probe_scheduler(address)
    try:
        client = Client(address, timeout=timeout)
    except OSError as err:  # accepts TCP but does not speak Dask, or times out
        raise EnvironmentProblem(
            f"could not connect to the Dask scheduler at {address}: {err}"
        ) from None
    n = len(client.nthreads())
    log.info("connected to Dask scheduler %s: %d workers", address, n)
    if not n:
        log.warning("the scheduler has no workers yet; shards wait until workers join")
    return client


def n_workers(client) -> int:
    """Workers currently connected to the client's scheduler."""
    try:
        return len(client.nthreads())
    except Exception:  # noqa: BLE001 - a scheduler hiccup must not stop the driver
        return 1


def device_kind() -> str:
    """What computes here, e.g. "cpu" or "gpu:NVIDIA H100 80GB HBM3"."""
    import jax

    dev = jax.devices()[0]
    return f"{dev.platform}:{getattr(dev, 'device_kind', '')}"
