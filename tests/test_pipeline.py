"""``qmgen generate`` end to end on real Dask clusters, crashes included, and ``validate``.

All molecules are C2H6O isomers (ethanol, dimethyl ether, spelled several ways), so every
shard uses one compiled program: the XLA compile (~20 s) is paid once per session through
the shared QMGEN_CACHE_DIR, and each new worker process only traces it (~5 s).

- a real LocalCluster (2 worker processes) makes the reference dataset; a rerun skips all;
- ``dask scheduler`` + two ``dask worker`` processes on 127.0.0.1 give identical shards;
- the driver (``qmgen generate`` in a subprocess) is SIGKILLed after its first committed
  shard, rerun, and the result equals the reference, each row once;
- conformers made by a pool of 2 CPU processes per worker give identical shards, and a
  dataset resumes with another number of them (it is not part of the options);
- a worker is SIGKILLed in the middle of a shard and the job still completes;
- a shard that kills its worker every time ends as WORKER_DIED failure records;
- a file of good and bad lines: each line ends as rows or one failure with a reason;
- ``qmgen validate`` agrees with PySCF within the SCF tolerances.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import cloudpickle
import numpy as np
import pytest

import qmgen
from qmgen.pipeline.run import generate
from qmgen.pipeline.task import run_shard
from qmgen.status import Status
from qmgen.storage import manifest as mf
from qmgen.storage.check import check_shard
from qmgen.storage.reader import read_shard

GOOD = [
    "CCO ethanol",
    "COC dimethyl_ether",
    "OCC ethanol_again",
    "C(O)C ethanol_3",
    "O(C)C dme_2",
    "CCO ethanol_4",
    "COC dme_3",
    "OCC ethanol_5",
]
OPTS = dict(conformers=2, shard_size=4)  # 8 molecules -> 16 conformers -> 4 shards
ROW_KEYS = ("energy", "homo", "lumo", "gap", "dipole", "charges", "mo_energy", "positions", "z")

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # task wrappers reach workers


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    """One persistent compilation cache for every process of this module."""
    path = str(tmp_path_factory.mktemp("jax-cache"))
    old = os.environ.get("QMGEN_CACHE_DIR")
    os.environ["QMGEN_CACHE_DIR"] = path
    yield path
    if old is None:
        os.environ.pop("QMGEN_CACHE_DIR", None)
    else:
        os.environ["QMGEN_CACHE_DIR"] = old


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("inputs")
    (d / "good.smi").write_text("\n".join(GOOD) + "\n")
    return d


@pytest.fixture(scope="module")
def client(cache_dir):
    """A real LocalCluster of 2 worker processes (a shard may kill at most 2 workers)."""
    from qmgen.pipeline.cluster import local_cluster

    cluster, client = local_cluster(workers=2, allowed_failures=1)
    yield client
    client.close()
    cluster.close()


@pytest.fixture(scope="module")
def reference(client, inputs, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "ds"
    summary = generate(inputs / "good.smi", out, client=client, progress=False, **OPTS)
    assert summary["complete"] and summary["n_shards_computed"] == 4
    return out


def rows_by_key(root) -> dict:
    ds = qmgen.open_dataset(root)
    out = {}
    for row in ds:
        key = (row["molecule_index"], row["conformer_index"])
        assert key not in out, f"row {key} stored twice"
        out[key] = row
    return out


def assert_same_dataset(a, b):
    """Same rows (each once) with bitwise equal labels, same failures, same shards."""
    ra, rb = rows_by_key(a), rows_by_key(b)
    assert sorted(ra) == sorted(rb)
    for key in ra:
        for field in ROW_KEYS:
            assert np.array_equal(ra[key][field], rb[key][field]), (key, field)
    ia, ib = mf.read_index(a), mf.read_index(b)
    assert [s["n_rows"] for s in ia["table"]] == [s["n_rows"] for s in ib["table"]]
    for sa, sb in zip(ia["table"], ib["table"], strict=True):
        da, db = read_shard(Path(a) / sa["file"]), read_shard(Path(b) / sb["file"])
        assert [r["molecule_index"] for r in da["rows"]] == [
            r["molecule_index"] for r in db["rows"]
        ]
        assert da["failures"] == db["failures"]


def test_local_cluster_dataset(reference, inputs, client):
    index = mf.read_index(reference)
    assert index["n_rows"] == 16 and index["n_failures"] == 0
    assert index["attrs"]["xc"] == "b3lyp5" and index["attrs"]["basis"] == "sto-3g"
    assert index["attrs"]["software"]["qmgen"] == qmgen.__version__
    for shard in index["table"]:
        assert check_shard(reference / shard["file"], shard["n_rows"], shard["n_failures"]) == []
    rows = rows_by_key(reference)
    assert sorted(rows) == [(m, c) for m in range(8) for c in range(2)]
    assert all(r["status"] == Status.OK and r["converged"] for r in rows.values())
    assert not (reference / "shards" / ".staging").exists()
    # the same command again: everything is done, nothing is recomputed
    before = (reference / mf.MANIFEST_NAME).read_text()
    summary = generate(inputs / "good.smi", reference, client=client, progress=False, **OPTS)
    assert summary["n_shards_computed"] == 0 and summary["n_shards_skipped"] == 4
    assert (reference / mf.MANIFEST_NAME).read_text() == before
    # changed options are refused before anything is touched
    with pytest.raises(Exception, match="different options"):
        generate(inputs / "good.smi", reference, client=client, progress=False, conformers=3)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(procs) -> None:
    for p in procs:
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    for p in procs:
        try:
            p.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()


@pytest.fixture
def external_cluster(cache_dir, tmp_path):
    """``dask scheduler`` and two ``dask worker`` processes on 127.0.0.1."""
    from distributed import Client

    dask = str(Path(sys.executable).with_name("dask"))
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    from qmgen.pipeline.cluster import worker_env

    # configured like the local cluster's workers (same XLA flags: same compiled code)
    env = dict(os.environ)
    env.update(worker_env(2, 0), QMGEN_CACHE_DIR=cache_dir)
    procs = []
    log = open(tmp_path / "dask.log", "w")  # noqa: SIM115 - closed in the finalizer
    try:
        cmd = [dask, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"]
        procs.append(subprocess.Popen(cmd, env=env, stdout=log, stderr=log, start_new_session=True))
        for i in range(2):
            cmd = [dask, "worker", address, "--nthreads", "1", "--host", "127.0.0.1"]
            cmd += ["--no-dashboard", "--name", f"ext-{i}"]
            procs.append(
                subprocess.Popen(cmd, env=env, stdout=log, stderr=log, start_new_session=True)
            )
        with Client(address, timeout=60) as c:
            c.wait_for_workers(2, timeout=120)
        yield address
    finally:
        _stop(procs)
        log.close()


def test_external_scheduler_gives_identical_shards(reference, inputs, external_cluster, tmp_path):
    out = tmp_path / "ext"
    summary = generate(inputs / "good.smi", out, scheduler=external_cluster, progress=False, **OPTS)
    assert summary["complete"]
    workers = {e["worker"] for e in mf.read_manifest(out)}
    assert all(w.startswith("tcp://127.0.0.1:") for w in workers)
    assert_same_dataset(reference, out)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _cli(out, inputs, *extra):
    cmd = [sys.executable, "-m", "qmgen.cli", "generate", str(inputs / "good.smi"), "--out"]
    cmd += [str(out), "--workers", "2", "--no-progress", "--quiet"]
    cmd += ["--conformers", str(OPTS["conformers"]), "--shard-size", str(OPTS["shard_size"])]
    return cmd + list(extra)


def test_driver_sigkill_then_resume(reference, inputs, tmp_path, cache_dir):
    out = tmp_path / "killed"
    env = dict(os.environ, QMGEN_CACHE_DIR=cache_dir)
    proc = subprocess.Popen(
        _cli(out, inputs),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 240
        while not mf.read_manifest(out) and time.monotonic() < deadline:
            assert proc.poll() is None, "the driver ended before its first shard"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)  # the driver only; its workers are orphaned
        proc.wait()
        done_before = {e["shard_id"]: e for e in mf.read_manifest(out)}
        assert done_before and not (out / mf.INDEX_NAME).exists(), "not killed mid-run"
        # the local cluster's processes notice their parent's death and exit
        deadline = time.monotonic() + 30
        while _group_alive(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _group_alive(proc.pid), "worker processes outlived the killed driver"
    finally:
        if _group_alive(proc.pid):
            os.killpg(proc.pid, signal.SIGKILL)
    # resumed with conformer processes (not a dataset option: the same dataset)
    resume = _cli(out, inputs, "--conformer-processes", "2")
    result = subprocess.run(resume, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "Dataset ready" in result.stdout and "open_dataset" in result.stdout
    entries = mf.read_manifest(out)
    ids = [e["shard_id"] for e in entries]
    assert sorted(ids) == [0, 1, 2, 3], "a shard was committed twice or never"
    for sid, entry in done_before.items():  # finished shards were not recomputed
        assert entries[ids.index(sid)] == entry
    assert all(e["conformer_processes"] == 2 for e in entries if e["shard_id"] not in done_before)
    assert_same_dataset(reference, out)


def test_conformer_processes_give_identical_shards(reference, inputs, client, tmp_path):
    """Conformers made by 2 processes per worker (forced on CPU): the reference's rows."""
    out = tmp_path / "pool"
    summary = generate(
        inputs / "good.smi", out, client=client, progress=False, conformer_processes=2, **OPTS
    )
    assert summary["complete"] and summary["n_shards_computed"] == 4
    assert {e["conformer_processes"] for e in mf.read_manifest(out)} == {2}
    assert {e["conformer_processes"] for e in mf.read_manifest(reference)} == {0}  # CPU default
    assert summary["timing_s"]["conformers"] > 0
    assert_same_dataset(reference, out)
    # resume after losing a shard, with conformers made in-thread: same dataset
    lines = (out / mf.MANIFEST_NAME).read_text().splitlines(keepends=True)
    lost = mf.read_manifest(out)[-1]
    (out / mf.MANIFEST_NAME).write_text("".join(lines[:-1]))
    (out / lost["file"]).unlink()
    (out / mf.INDEX_NAME).unlink()
    summary = generate(
        inputs / "good.smi", out, client=client, progress=False, conformer_processes=0, **OPTS
    )
    assert summary["n_shards_computed"] == 1 and summary["n_shards_skipped"] == 3
    assert mf.read_manifest(out)[-1]["shard_id"] == lost["shard_id"]
    assert mf.read_manifest(out)[-1]["conformer_processes"] == 0
    assert_same_dataset(reference, out)


def slow_shard(task):
    """run_shard after a pause, leaving time to kill its worker mid-shard; each start is
    recorded as a marker file."""
    marks = Path(task["root"]) / "starts"
    marks.mkdir(exist_ok=True)
    (marks / f"{task['shard_id']}-{os.getpid()}-{time.monotonic_ns()}").touch()
    time.sleep(3.0)
    return run_shard(task)


def test_worker_killed_mid_shard(reference, inputs, client, tmp_path):
    out = tmp_path / "worker-killed"
    result = {}

    def drive():
        result["summary"] = generate(
            inputs / "good.smi", out, client=client, progress=False, task=slow_shard, **OPTS
        )

    thread = threading.Thread(target=drive)
    thread.start()
    pids = client.run(os.getpid)
    victim = None
    deadline = time.monotonic() + 60
    while victim is None and time.monotonic() < deadline:
        # a worker whose shard has started (its marker names its pid): it is in the pause
        started = set()
        if (out / "starts").is_dir():
            started = {int(p.name.split("-")[1]) for p in (out / "starts").iterdir()}
        busy = [w for w, keys in client.processing().items() if keys and pids[w] in started]
        victim = busy[0] if busy else None
        time.sleep(0.05)
    assert victim is not None
    os.kill(pids[victim], signal.SIGKILL)
    thread.join(timeout=240)
    assert not thread.is_alive()
    assert result["summary"]["complete"]
    starts = [p.name.split("-")[0] for p in (out / "starts").iterdir()]
    assert len(starts) > len(set(starts)), "no shard was restarted after the kill"
    assert sorted(e["shard_id"] for e in mf.read_manifest(out)) == [0, 1, 2, 3]
    assert_same_dataset(reference, out)


def test_split_jobs_then_merge_equal_one_run(reference, inputs, client, tmp_path):
    """Issue 13's acceptance: ``--split K/4`` over 4 jobs + ``qmgen merge`` gives the rows
    (keyed by input line and conformer) of one run over the whole input."""
    from qmgen.dataset.verify import verify_dataset
    from qmgen.pipeline.merge import merge

    parts = []
    for k in range(1, 5):
        part = tmp_path / f"part-{k}"
        summary = generate(
            inputs / "good.smi", part, client=client, progress=False, split=f"{k}/4", **OPTS
        )
        assert summary["complete"]
        keys = {key[0] for key in rows_by_key(part)}
        assert keys == {m for m in range(8) if m % 4 == k - 1}  # disjoint, global indices
        parts.append(part)
    out = tmp_path / "merged"
    result = merge(out, parts)
    assert result["n_link"] == result["n_shards"] and result["n_copy"] == 0
    assert verify_dataset(out)[0] == []
    merged, whole = rows_by_key(out), rows_by_key(reference)
    assert sorted(merged) == sorted(whole)
    for key in whole:
        for field in ROW_KEYS:
            assert np.array_equal(merged[key][field], whole[key][field]), (key, field)
    attrs = qmgen.open_dataset(out).attrs
    assert [m["split"] for m in attrs["merged_from"]] == ["1/4", "2/4", "3/4", "4/4"]


def test_mixed_good_and_bad_lines(client, tmp_path):
    lines = {
        0: "CCO ethanol",
        1: "C1CC( not_smiles",
        2: "C[Si](C)(C)C silicon",
        3: "C[O] methoxy_radical",
        4: "[CH2] radical",
        5: "",
        6: "C" * 66 + " two_hundred_atoms",
        8: "COC dimethyl_ether",
    }
    junk = b"\x00\x9f\xff\xfe binary \x01\x02"
    text = b"".join((lines.get(i, "").encode() if i != 7 else junk) + b"\n" for i in range(9))
    path = tmp_path / "mixed.smi"
    path.write_bytes(text)
    out = tmp_path / "mixed"
    summary = generate(path, out, client=client, progress=False, **OPTS)
    assert summary["complete"]
    ds = qmgen.open_dataset(out)
    stored = {int(m) for m in ds.column("molecule_index")}
    failures = {f["molecule_index"]: f for f in ds.failures}
    assert stored == {0, 8} and len(ds) == 4
    expected = {
        1: Status.INVALID_INPUT,
        2: Status.UNSUPPORTED_ELEMENT,
        3: Status.ODD_ELECTRONS,
        4: Status.ODD_ELECTRONS,
        6: Status.TOO_LARGE,
        7: Status.INVALID_INPUT,
    }
    assert {k: Status(f["status"]) for k, f in failures.items()} == expected
    assert "Si" in failures[2]["message"] and "200 atoms" in failures[6]["message"]
    assert "odd electron count" in failures[3]["message"]
    assert "radical" in failures[4]["message"] and "binary" in failures[7]["message"]
    assert failures[7]["input"].encode("utf-8", "surrogateescape") != b""
    # every line that is not blank ends as rows or exactly one failure record
    assert stored | set(failures) == {i for i in range(9) if i != 5}
    assert not stored & set(failures)


@pytest.mark.slow  # 100 s; test_dispersion runs validate in the default suite
def test_validate_agrees_with_pyscf(reference):
    from qmgen.cli import main

    report_png = reference / "validation-parity.png"
    assert main(["validate", str(reference), "--sample", "2", "--quiet"]) == 0
    assert report_png.stat().st_size > 10_000
    import json

    report = json.loads((reference / "validation.json").read_text())
    assert report["ok"] and report["n"] == 2
    assert set(report["labels"]) == {"energy", "homo", "lumo", "gap", "dipole", "charges"}
    assert report["labels"]["energy"]["max"] < 1e-6


def crash_shard(task):
    """Kills its worker process on shard 1, computes the others."""
    if task["shard_id"] == 1:
        os._exit(13)
    return run_shard(task)


def test_shard_that_keeps_killing_workers(inputs, client, tmp_path):
    """Last in this module: the crashing shard costs worker restarts."""
    out = tmp_path / "crashes"
    summary = generate(
        inputs / "good.smi", out, client=client, progress=False, task=crash_shard, **OPTS
    )
    assert summary["complete"]
    ds = qmgen.open_dataset(out)
    died = [f for f in ds.failures if f["status"] == Status.WORKER_DIED]
    plan = {s["shard_id"]: s["molecule_indices"] for s in mf_plan(out)}
    assert sorted(f["molecule_index"] for f in died) == sorted(plan[1])
    assert "died 2 times" in died[0]["message"]
    assert len(ds) == 16 - 2 * len(plan[1])


def mf_plan(root):
    import json

    return json.loads((Path(root) / "plan.json").read_text())["shards"]
