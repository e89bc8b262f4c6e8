"""Careless runs of ``qmgen generate``: one writer per directory, no crash, one-line errors.

Every run here is the real command in a subprocess. Inputs hold only lines that fail
validation (a 25,000-atom chain, a 10 MB junk line, bad SMILES), so a run goes through
planning, a real Dask cluster, shard writing and commit without an SCF to wait for.
Exit codes (qmgen.errors): 0 done, 1 shards left, 2 user error, 3 environment, 130 Ctrl-C.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import qmgen
from qmgen.pipeline.lock import LOCK_NAME, DirectoryLock
from qmgen.status import Status
from qmgen.storage import manifest as mf

BAD_LINES = ["C1CC unclosed_ring", "Xx1 no_element", "[CH3] methyl_radical", "[Si] silicon"]
BAD_LINES += ["C(C)(C)(C)(C)C pentavalent", "[NH4] odd"]


@pytest.fixture(scope="module")
def bad_input(tmp_path_factory):
    path = tmp_path_factory.mktemp("inputs") / "bad.smi"
    path.write_text("\n".join(BAD_LINES) + "\n")
    return path


def cli(*args, timeout=240, **kw):
    cmd = [sys.executable, "-m", "qmgen.cli", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)


def gen(inp, out, *extra, **kw):
    base = ["generate", inp, "--out", out, "--workers", "1", "--shard-size", "2"]
    return cli(*base, "--no-progress", "--quiet", *extra, **kw)


def one_error_line(result, code: int, *words):
    """The run ended with ``code`` and exactly one stderr line that names the problem."""
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert result.returncode == code, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert len(lines) == 1, lines
    for w in words:
        assert w in lines[0], lines[0]
    return lines[0]


def test_long_lines_are_failure_records_not_crashes(tmp_path):
    """A 25,000-atom chain once segfaulted RDKit during planning; a 10 MB junk line was
    echoed whole in its failure message."""
    inp = tmp_path / "long.smi"
    junk = "q" * 10_000_000
    inp.write_text("C" * 25_000 + " chain\n" + junk + "\nCC(\n")
    out = tmp_path / "ds"
    result = gen(inp, out)
    assert result.returncode == 0, result.stderr[-3000:]
    failures = sorted(qmgen.open_dataset(out).failures, key=lambda f: f["molecule_index"])
    assert [Status(f["status"]) for f in failures] == [
        Status.TOO_LARGE,
        Status.TOO_LARGE,
        Status.INVALID_INPUT,
    ]
    assert "25000 characters" in failures[0]["message"] and "--max-atoms" in failures[0]["message"]
    assert all(len(f["message"]) <= 500 for f in failures)
    assert failures[1]["input"] == junk  # the line itself is kept, not echoed
    assert cli("verify", out).returncode == 0


def test_bad_arguments_are_one_line_user_errors(bad_input, tmp_path):
    t0 = time.monotonic()
    one_error_line(gen(bad_input, tmp_path / "a", "--workers", "-1"), 2, "workers", ">= 1")
    assert time.monotonic() - t0 < 60  # refused, not hung
    afile = tmp_path / "file"
    afile.write_text("x")
    one_error_line(gen(bad_input, afile), 2, "not a directory")
    one_error_line(gen(bad_input, afile / "sub"), 2, "is a file")
    one_error_line(gen(tmp_path / "none.smi", tmp_path / "b"), 2, "no such input file")
    one_error_line(gen(bad_input, tmp_path / "c", "--conv-tol", "-1"), 2, "conv_tol")
    one_error_line(cli("info", tmp_path / "nowhere"), 2, "not a qmgen dataset")
    one_error_line(cli("verify", tmp_path / "nowhere"), 2, "not a directory")


def test_debug_shows_the_traceback(bad_input, tmp_path):
    result = gen(bad_input, tmp_path / "a", "--workers", "0", "--debug")
    assert result.returncode == 2 and "Traceback" in result.stderr


def test_unwritable_directory_is_an_environment_error(bad_input, tmp_path):
    locked = tmp_path / "ro"
    locked.mkdir()
    locked.chmod(0o555)
    target = locked / "ds"
    if os.access(locked, os.W_OK):  # root ignores modes: /sys refuses even root
        target = Path("/sys/qmgen-test-dataset")
    one_error_line(gen(bad_input, target), 3, "cannot write", str(target))


def test_unreachable_scheduler_fails_fast(bad_input, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    t0 = time.monotonic()
    result = gen(bad_input, tmp_path / "ds", "--scheduler", f"tcp://127.0.0.1:{port}")
    one_error_line(result, 3, "connection refused", f"127.0.0.1:{port}")
    assert time.monotonic() - t0 < 30  # was 32 s and "timed out"


def test_garbage_files_in_a_dataset_and_new(bad_input, tmp_path):
    out = tmp_path / "ds"
    assert gen(bad_input, out).returncode == 0
    (out / "config.json").write_text("{garbage")
    one_error_line(gen(bad_input, out), 2, "config.json", "line 1", "--new")
    assert cli("verify", out).returncode == 1
    assert gen(bad_input, out, "--new").returncode == 0  # --new always starts over
    assert cli("verify", out).returncode == 0
    # an invalid line in the middle of the manifest
    lines = (out / mf.MANIFEST_NAME).read_text().splitlines()
    lines[1] = lines[1][:-5] + "!!"
    (out / mf.MANIFEST_NAME).write_text("\n".join(lines) + "\n")
    one_error_line(gen(bad_input, out), 2, "manifest.jsonl, line 2", "invalid JSON")
    verify = cli("verify", out)
    assert verify.returncode == 1 and "manifest.jsonl, line 2" in verify.stdout
    # plan.json that does not match its own hash
    assert gen(bad_input, out, "--new").returncode == 0
    plan = json.loads((out / "plan.json").read_text())
    plan["n_valid"] = 5
    (out / "plan.json").write_text(json.dumps(plan))
    verify = cli("verify", out)
    assert verify.returncode == 1 and "plan_hash does not match" in verify.stdout
    one_error_line(gen(bad_input, out), 2, "plan.json", "--new")


def test_a_manifest_entry_outside_the_dataset_is_not_resumed(bad_input, tmp_path):
    out = tmp_path / "ds"
    assert gen(bad_input, out).returncode == 0
    elsewhere = tmp_path / "elsewhere.h5"
    first = mf.shard_path(out, 0)
    first.rename(elsewhere)  # moved out; the manifest now points at it
    lines = [json.loads(x) for x in (out / mf.MANIFEST_NAME).read_text().splitlines()]
    lines[0]["file"] = "../elsewhere.h5"
    (out / mf.MANIFEST_NAME).write_text("".join(json.dumps(e) + "\n" for e in lines))
    one_error_line(gen(bad_input, out), 2, "manifest.jsonl, line 1", "refused")
    table = mf.read_index(out)["table"]  # the earlier index is untouched
    assert [s["file"] for s in table] == [
        mf.shard_path(out, i).relative_to(out).as_posix() for i in range(len(table))
    ]


def _popen(args):
    """qmgen as a terminal's foreground job: its own process group, and Ctrl-C at its
    default disposition even when this test run was started in the background (a shell
    starts background jobs ignoring SIGINT, children inherit that, and Python then keeps
    ignoring it, as it should for a background job)."""
    cmd = [sys.executable, "-m", "qmgen.cli", *map(str, args)]
    return subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=_default_sigint,
    )


def _default_sigint():
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _two_writers(inp, out, *extra):
    base = ["generate", inp, "--out", out, "--workers", "1", "--shard-size", "2", "--quiet"]
    procs = [_popen([*base, "--no-progress", *extra]) for _ in range(2)]
    results = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=300)
        results.append((p.returncode, stdout, stderr))
    return results


def check_two_writers(inp, out):
    """Two runs started together: never two successes over a dataset verify rejects;
    a refused run exits 3 naming the holder; afterwards a rerun and verify pass."""
    results = _two_writers(inp, out)
    codes = sorted(rc for rc, _, _ in results)
    assert codes in ([0, 0], [0, 3]), results
    for rc, _, stderr in results:
        if rc == 3:
            assert "being written by another qmgen generate" in stderr and "pid" in stderr
    assert cli("verify", out).returncode == 0
    assert gen(inp, out).returncode == 0
    assert cli("verify", out).returncode == 0
    return codes


def test_two_writers_on_one_directory(bad_input, tmp_path):
    codes = [check_two_writers(bad_input, tmp_path / f"ds{i}") for i in range(2)]
    assert [0, 3] in codes  # they did overlap: one was refused


@pytest.mark.slow
def test_two_writers_ten_times(bad_input, tmp_path):
    codes = [check_two_writers(bad_input, tmp_path / f"ds{i}") for i in range(10)]
    print("exit codes of 10 pairs:", codes)


def _wait_for_lock_holder(out, proc, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lock = out / LOCK_NAME
        if lock.exists() and lock.read_text().strip():
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    raise AssertionError("the first run never took the lock")


def test_wait_queues_behind_the_holder(bad_input, tmp_path):
    """--wait blocks on a held lock and goes on once it is released. The holder is this
    test process (a real flock on the real lock file), so the queueing does not depend on
    a first run still being busy when the second starts (on a loaded 2-core CI machine a
    six-line run finished before the second was up)."""
    out = tmp_path / "ds"
    out.mkdir()
    holder = DirectoryLock(out)
    holder.acquire()
    try:
        second = _popen(
            ["generate", bad_input, "--out", out, "--workers", "1", "--no-progress", "--wait"]
        )
        seen = []
        for line in second.stderr:
            seen.append(line)
            if "waiting for the run that holds" in line:
                break
        assert any("waiting for the run that holds" in line for line in seen), seen
        time.sleep(1.0)
        assert second.poll() is None, "generate --wait went on while the lock was held"
        assert not (out / mf.MANIFEST_NAME).exists()  # nothing written while waiting
    finally:
        holder.release()
    _, rest = second.communicate(timeout=300)
    assert second.returncode == 0, ("".join(seen) + rest)[-2000:]
    assert cli("verify", out).returncode == 0
    assert len(qmgen.open_dataset(out).failures) == len(BAD_LINES)


def test_ctrl_c_is_exit_130_and_resumes(tmp_path):
    inp = tmp_path / "many.smi"
    inp.write_text("\n".join(BAD_LINES * 100) + "\n")  # 600 lines, one shard each
    out = tmp_path / "ds"
    base = ["generate", inp, "--out", out, "--workers", "1", "--shard-size", "1"]
    proc = _popen([*base, "--no-progress"])
    seen = []
    for line in proc.stderr:  # wait until shards are being committed
        seen.append(line)
        if " done (" in line:
            break
    # what a terminal's Ctrl-C sends to the group; a run still going 5 s later gets
    # another (the one run that once finished with exit 0 had inherited SIG_IGN: _popen)
    tail: list[str] = []
    reader = threading.Thread(target=lambda: tail.extend(proc.stderr), daemon=True)
    reader.start()
    for _ in range(6):
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=5)
            break
        except subprocess.TimeoutExpired:
            continue
    proc.wait(timeout=120)
    reader.join(timeout=30)
    rest = "".join(tail)
    stderr = "".join(seen) + rest
    assert proc.returncode == 130, stderr[-3000:]
    assert "Traceback" not in stderr and "Exception" not in stderr, stderr[-3000:]
    assert stderr.strip().splitlines()[-1].endswith("rerun the same command to go on")
    assert 0 < len(mf.read_manifest(out)) < 600 and not (out / mf.INDEX_NAME).exists()
    assert gen(inp, out, "--shard-size", "1").returncode == 0
    assert cli("verify", out).returncode == 0
    ds = qmgen.open_dataset(out)
    assert sorted(f["molecule_index"] for f in ds.failures) == list(range(600))


def _full_disk_task(calls_dir):
    def task(payload):
        (Path(calls_dir) / f"shard-{payload['shard_id']}-{os.getpid()}").touch()
        with open("/dev/full", "wb") as fh:  # a real ENOSPC from the kernel
            fh.write(b"\0" * 65536)
            fh.flush()
        raise AssertionError("/dev/full accepted the write")

    return task


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs Linux /dev/full")
def test_a_full_disk_stops_new_shards_at_once(tmp_path):
    import cloudpickle

    from qmgen.errors import EnvironmentProblem
    from qmgen.pipeline.run import generate

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    inp = tmp_path / "many.smi"
    inp.write_text("\n".join(BAD_LINES * 2) + "\n")  # 12 shards of one line
    calls = tmp_path / "calls"
    calls.mkdir()
    out = tmp_path / "ds"
    with pytest.raises(EnvironmentProblem, match="disk is full.*rerun the same command"):
        generate(inp, out, workers=1, progress=False, shard_size=1, task=_full_disk_task(calls))
    assert 1 <= len(list(calls.iterdir())) <= 4  # the first failure stopped the queue
    assert mf.read_manifest(out) == []
    summary = generate(inp, out, workers=1, progress=False, shard_size=1)  # space again
    assert summary["complete"] and summary["n_failures"] == 12


def test_printed_hints_work_as_given(bad_input, tmp_path):
    """The commands printed at the end run in the user's shell as it is (the quick start
    never activates .venv, so a bare `python`/`qmgen` would not find qmgen)."""
    result = gen(bad_input, tmp_path / "ds")
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    load = next(ln for ln in lines if "Load it:" in ln).split("Load it:", 1)[1].strip()
    check = next(ln for ln in lines if "Check:" in ln).split("Check:", 1)[1]
    check = check.split("Validate:")[0].strip()
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    env["PATH"] = "/usr/bin:/bin"  # no virtual environment on PATH
    for command in (load, check):
        done = subprocess.run(command, shell=True, capture_output=True, text=True, env=env)
        assert done.returncode == 0, (command, done.stderr[-2000:])
    assert subprocess.run(load, shell=True, capture_output=True, text=True, env=env).stdout == "0\n"
