"""One writer per output (lock.py) and the crash/full-disk safety of records.py: fast tests
with real processes and real files; the whole-verb kill tests are in test_crash.py."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from dasd_local.errors import WriteError
from dasd_local.store.lock import LockedError, acquire, lock_path, output_lock, release
from dasd_local.store.records import Appender, RunWriter, atomic_write_text, recover_jsonl, sidecar

REPO = Path(__file__).resolve().parents[1]


def holder(out: Path, directory: bool = False) -> subprocess.Popen:
    """Another process that takes the lock of `out` and sleeps; returns once it holds it."""
    code = textwrap.dedent(f"""
        import sys, time
        from dasd_local.store.lock import acquire
        acquire({str(out)!r}, {directory})
        print("held", flush=True)
        time.sleep(60)
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_second_writer_is_refused_with_path_and_pid_until_the_first_dies(tmp_path):
    out = tmp_path / "run.jsonl"
    proc = holder(out)
    try:
        with pytest.raises(LockedError) as e:
            acquire(out)
        assert str(out) in str(e.value) and f"pid {proc.pid}" in str(e.value)
        assert "\n" not in str(e.value)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    with output_lock(out):  # the kernel dropped the dead process's lock: no stale lock
        assert lock_path(out).read_text().strip() == str(os.getpid())
    assert not lock_path(out).exists()  # removed when the run ends


def test_directory_outputs_lock_inside_the_directory(tmp_path):
    run = tmp_path / "eval"
    with output_lock(run, directory=True):
        assert (run / ".lock").exists()
        with pytest.raises(LockedError, match="pid"):
            acquire(run, directory=True)
        fd = acquire(tmp_path / "other.jsonl")  # another output is free
        release(tmp_path / "other.jsonl", fd)
    assert not (run / ".lock").exists()


def test_a_forked_child_does_not_keep_the_lock(tmp_path):
    out = tmp_path / "o.jsonl"
    fd = acquire(out)
    child = os.fork()
    if child == 0:  # outlives the parent's run, like a straggling worker of a killed process
        time.sleep(5)
        os._exit(0)
    try:
        release(out, fd)
        proc = holder(out)  # would block or fail if the child still held the lock
        proc.kill()
        proc.wait()
    finally:
        os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)


def test_each_verb_takes_the_lock_before_any_work(tmp_path):
    """Every verb stops at once (before reading data or loading a model) on a held output."""
    from dasd_local.config import DecodeConfig, EvalConfig, RunConfig, ScoreConfig, TrainConfig, VerifyConfig
    from dasd_local.evaluate import evaluate
    from dasd_local.generate import generate
    from dasd_local.score import score_file
    from dasd_local.train import train
    from dasd_local.verify import verify_file

    out, run = tmp_path / "o.jsonl", tmp_path / "run"
    calls = [lambda: generate(RunConfig(data="missing.jsonl", out=out), DecodeConfig()),
             lambda: score_file(tmp_path / "missing.jsonl", out, ScoreConfig()),
             lambda: verify_file(tmp_path / "missing.jsonl", out, VerifyConfig(workers=1))]
    with output_lock(out):
        for call in calls:
            with pytest.raises(LockedError, match=str(out)):
                call()
    with output_lock(run, directory=True):
        with pytest.raises(LockedError, match=str(run)):
            evaluate(EvalConfig(data="missing.jsonl", out_dir=run))
        with pytest.raises(LockedError, match=str(run)):
            train(TrainConfig(data="missing.jsonl", out=str(run)), show_progress=False)


# ---- records: appends, recovery, rewrites ---------------------------------------------------


def test_recovery_drops_a_cut_line_and_mends_a_missing_newline(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text('{"id": "a"}\n{"id": "b", "x": [1, 2')
    assert recover_jsonl(path) == [{"id": "a"}]
    assert path.read_text() == '{"id": "a"}\n'
    path.write_text('{"id": "a"}\n{"id": "b"}')  # cut just before its newline: the record is whole
    assert [r["id"] for r in recover_jsonl(path)] == ["a", "b"]
    assert path.read_text() == '{"id": "a"}\n{"id": "b"}\n'  # the next append starts a new line


def test_a_failed_append_is_cut_back_to_the_last_whole_line(tmp_path, monkeypatch):
    path = tmp_path / "r.jsonl"
    app = Appender(path)
    app.write({"id": "a"})
    real = os.write

    def short_then_full(fd, data):
        real(fd, bytes(data[:5]))  # part of the line reached the disk, then it was full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", short_then_full)
    with pytest.raises(WriteError) as e:
        app.write({"id": "b", "text": "x" * 100})
    monkeypatch.undo()
    msg = str(e.value)
    assert str(path) in msg and "No space left on device" in msg and "run the same command again" in msg
    assert path.read_text() == '{"id": "a"}\n'
    app.write({"id": "c"})  # space freed: the same run could go on
    app.close()
    assert [r["id"] for r in recover_jsonl(path)] == ["a", "c"]


def test_a_failed_rewrite_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "r.jsonl"
    path.write_text("old\n")

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(WriteError, match="No space left"):
        atomic_write_text(path, "new\n")
    monkeypatch.undo()
    assert path.read_text() == "old\n" and os.listdir(tmp_path) == ["r.jsonl"]


def test_run_writer_resumes_and_finishes_each_id_once_in_input_order(tmp_path):
    out = tmp_path / "o.jsonl"
    out.write_text('{"id": "b"}\n{"id": "a"}\n{"id": "b"}\n{"id": "c", "cut')  # a duplicate, a cut line
    (tmp_path / "o.jsonl.123.tmp").write_text("a rewrite cut by a kill")
    sidecar(out, "manifest.json").write_text("{}")  # from an earlier, finished run
    w = RunWriter(out)
    assert w.done == {"a", "b"} and not sidecar(out, "manifest.json").exists()
    assert not (tmp_path / "o.jsonl.123.tmp").exists()
    w.write({"id": "c"})
    w.finish(["a", "b", "c"], {"counts": 3})
    assert [json.loads(x)["id"] for x in out.read_text().splitlines()] == ["a", "b", "c"]
    assert json.loads(sidecar(out, "manifest.json").read_text()) == {"counts": 3}
