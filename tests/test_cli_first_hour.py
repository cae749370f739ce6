"""A new user's first hour through the real CLI (subprocesses, the real model and demo set):
the demo yields verified training data, resume refuses a changed run, the user's columns
come through, every failure is one line naming the flag or path, Ctrl-C says how to
resume, and the terminal output survives 80 columns."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest


def cli(*args, cwd: Path, columns: int = 120, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": str(columns)}
    p = subprocess.run([sys.executable, "-m", "dasd_local", *map(str, args)], cwd=cwd, env=env,
                       capture_output=True, text=True, timeout=900)
    if check:
        assert p.returncode == 0, p.stderr
    return p


def one_error_line(p: subprocess.CompletedProcess, *names: str) -> str:
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 1 and len(lines) == 1 and lines[0].startswith("error: "), p.stderr
    for name in names:
        assert name in lines[0], lines[0]
    return lines[0]


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.slow
def test_the_demo_run_yields_verified_records(tmp_path):
    """generate (no data: the demo set) then verify keeps some records."""
    cli("generate", "--limit", "12", "--threads", "1", "--record-candidates", cwd=tmp_path)
    out = tmp_path / "dasd-out" / "demo-dasd.jsonl"
    assert records(out)[0]["answer_format"] == "answer-is"
    p = cli("verify", out, "-o", tmp_path / "kept.jsonl", "--workers", "1", cwd=tmp_path)
    kept = records(tmp_path / "kept.jsonl")
    assert kept and all(r["correct"] for r in kept), p.stdout
    assert f"{len(kept)} of 12 records kept" in p.stdout
    view = cli("view", out, "--candidates", "--limit", "1", cwd=tmp_path, columns=80)
    assert "non-consistent choices" in view.stdout and "run generate with --record-candidates" not in view.stdout


def test_a_changed_tau_stops_at_the_fingerprint(tmp_path):
    args = ["generate", "--limit", "1", "--max-new-tokens", "4", "--threads", "1", "--out", "o.jsonl"]
    cli(*args, cwd=tmp_path)
    before = (tmp_path / "o.jsonl").read_text()
    line = one_error_line(cli(*args, "--tau", "0.5", cwd=tmp_path, check=False), "--tau 0.2 -> 0.5", "--restart", "--out")
    assert "o.jsonl" in line and (tmp_path / "o.jsonl").read_text() == before  # nothing touched
    cli(*args, cwd=tmp_path)  # the same run still resumes
    cli(*args, "--tau", "0.5", "--restart", cwd=tmp_path)
    assert records(tmp_path / "o.jsonl")[0]["config"]["tau"] == 0.5


def test_the_users_columns_come_through(tmp_path):
    rows = [{"pid": f"q{i}", "problem": f"What is {i} + 1?", "solution": f"{i} + 1 = {i + 1}. The answer is {i + 1}.",
             "final": i + 1} for i in range(2)]
    (tmp_path / "mine.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    p = cli("generate", "--data", "mine.jsonl", "--answer-format", "answer-is", "--max-new-tokens", "4",
            "--threads", "1", cwd=tmp_path)
    assert "no id column 'unique_id'" in p.stderr and "--id-field" in p.stderr
    got = records(tmp_path / "dasd-out" / "mine-dasd.jsonl")
    assert [(r["id"], r["pid"], r["final"]) for r in got] == [("0", "q0", 1), ("1", "q1", 2)]
    cli("generate", "--data", "mine.jsonl", "--id-field", "pid", "--max-new-tokens", "4", "--threads", "1",
        "--out", "by-pid.jsonl", cwd=tmp_path)
    assert [(r["id"], r["final"]) for r in records(tmp_path / "by-pid.jsonl")] == [("q0", 1), ("q1", 2)]


def test_bad_rows_are_shown_before_decoding(tmp_path):
    (tmp_path / "d.jsonl").write_text('{"problem": "1+1?", "solution": "2"}\n{oops\n{"problem": "2+2?"}\n')
    p = cli("generate", "--data", "d.jsonl", "--max-new-tokens", "2", "--threads", "1", cwd=tmp_path)
    err = p.stderr
    assert "2 input rows skipped (1 malformed JSON, 1 missing field 'solution')" in err
    assert err.index("rows skipped") < p.stdout.index("wrote") + len(err)  # printed up front, on stderr


def test_errors_are_one_line_naming_the_flag_or_path(tmp_path):
    (tmp_path / "file.jsonl").write_text("")
    (tmp_path / "empty.jsonl").write_text("")
    gen = ["generate", "--limit", "1", "--max-new-tokens", "2"]
    one_error_line(cli(*gen, "--top-k", "0", cwd=tmp_path, check=False), "--top-k", ">= 1")
    one_error_line(cli(*gen, "--out", "file.jsonl/out.jsonl", cwd=tmp_path, check=False), "--out", "file.jsonl")
    one_error_line(cli(*gen, "--out", "/proc/x/out.jsonl", cwd=tmp_path, check=False), "--out", "/proc/x")
    one_error_line(cli(*gen, "--answer-format", "latex", cwd=tmp_path, check=False), "--answer-format")
    one_error_line(cli(*gen, "--data", "empty.jsonl", cwd=tmp_path, check=False), "empty.jsonl", "no usable rows")
    one_error_line(cli("view", "empty.jsonl", cwd=tmp_path, check=False), "empty.jsonl", "no records")
    one_error_line(cli("verify", "empty.jsonl", "-o", "v.jsonl", "--task", "math", cwd=tmp_path, check=False),
                   "empty.jsonl", "no records")
    one_error_line(cli("stats", "empty.jsonl", cwd=tmp_path, check=False), "empty.jsonl", "no records")


def test_ctrl_c_says_how_to_resume(tmp_path):
    env = {**os.environ, "COLUMNS": "120"}
    proc = subprocess.Popen([sys.executable, "-m", "dasd_local", "generate", "--limit", "36", "--batch", "1",
                             "--max-new-tokens", "48", "--threads", "1", "--out", "o.jsonl"],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            # a shell's background job (`pytest &`) starts with SIGINT ignored, and Python
                            # then installs no KeyboardInterrupt handler: Ctrl-C as a terminal sends it
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    out = tmp_path / "o.jsonl"
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None and not (out.exists() and out.read_text().count("\n") >= 1):
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    done = out.read_text().count("\n")
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1] == f"interrupted: {done} done, rerun the same command to resume"


def test_80_columns(tmp_path):
    p = cli("generate", "--limit", "2", "--max-new-tokens", "4", "--threads", "1", cwd=tmp_path, columns=80)
    assert "2/2" in p.stdout and "0:00:" in p.stdout  # the count and the elapsed time
    models = cli("models", cwd=tmp_path, columns=80).stdout
    for name in ("SmolLM2-135M-Instruct.Q4_1.gguf", "HuggingFaceTB/SmolLM2-135M-Instruct",
                 "Llama-3.2-3B-Instruct-Q4_K_M.gguf", "bartowski/Llama-3.2-3B-Instruct-GGUF"):
        assert name in models
    helptext = cli("generate", "--help", cwd=tmp_path, columns=80).stdout
    assert max(len(line) for line in helptext.splitlines()) <= 80
    words = " ".join(helptext.split())  # wrapped lines joined
    assert "[token, p_ref, p_base]" in words and "…" not in words and "<bool>" not in words
    assert "[default: 0.2]" in words and "--record-candidates Store" in words  # a plain flag, defaults whole
    assert "math: unique_id (id), problem (question), solution (reference solution), answer" in words
    assert "code: task_id (id)" in words and "mcq: id (id)" in words


def test_version(tmp_path):
    from importlib.metadata import version

    assert cli("--version", cwd=tmp_path).stdout.strip() == f"dasd-local {version('dasd-local')}"
