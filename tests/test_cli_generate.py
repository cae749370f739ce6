"""The `dasd-local` CLI end to end with the real engine: the default run, resume after a kill,
the views, and one clear line for bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from typer.testing import CliRunner

from dasd_local.cli import app


def cli(*args, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "120"}
    p = subprocess.run([sys.executable, "-m", "dasd_local", *map(str, args)], cwd=cwd, env=env,
                       capture_output=True, text=True, timeout=900)
    if check:
        assert p.returncode == 0, p.stderr
    return p


def one_error_line(p: subprocess.CompletedProcess) -> str:
    assert p.returncode == 1
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), p.stderr
    return lines[0]


def test_default_run_on_the_demo_set(tmp_path):
    p = cli("generate", "--limit", "3", "--max-new-tokens", "24", cwd=tmp_path)
    out = tmp_path / "dasd-out" / "demo-dasd.jsonl"
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in records] == ["demo/apples/0", "demo/train/0", "demo/change/0"]
    manifest = json.loads((tmp_path / "dasd-out" / "demo-dasd.manifest.json").read_text())
    assert manifest["counts"]["done"] == 3 and len(manifest["model_sha256"]) == 64
    assert manifest["versions"]["llama-cpp-python"] == "0.3.36"
    r = records[0]
    for key in ("id", "strategy", "config", "base_prompt", "reference_prompt", "base_prompt_tokens",
                "reference_prompt_tokens", "response", "response_tokens", "steps", "answer"):
        assert key in r
    assert {"top_k", "tau", "hard_mode"} <= set(r["config"])
    assert len(r["steps"]) == len(r["response_tokens"])
    assert set(r["steps"][0]) >= {"token", "category", "p_base", "p_ref", "ref_rank"}
    assert "tok/s" in p.stdout


def test_resume_after_kill_gives_the_same_file(tmp_path, data_dir):
    args = ["generate", "--data", data_dir / "math" / "train.jsonl", "--limit", "5", "--batch", "1",
            "--max-new-tokens", "40", "--ctx", "6144", "--out", "run.jsonl"]
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    whole.mkdir(), killed.mkdir()
    cli(*args, cwd=whole)
    proc = subprocess.Popen([sys.executable, "-m", "dasd_local", *map(str, args)], cwd=killed,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    out = killed / "run.jsonl"
    deadline = time.time() + 600
    while time.time() < deadline and (not out.exists() or len(out.read_text().splitlines()) < 2):
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = out.read_text().splitlines()
    assert 2 <= len(partial) < 5, "kill came too late to test resume"
    assert not (killed / "run.manifest.json").exists()
    cli(*args, cwd=killed)
    assert out.read_text() == (whole / "run.jsonl").read_text()
    manifest = json.loads((killed / "run.manifest.json").read_text())
    assert manifest["counts"]["ran_now"] == 5 - len(partial)


def test_torn_last_line_is_dropped_and_redone(tmp_path):
    args = ["generate", "--limit", "2", "--batch", "1", "--max-new-tokens", "12", "--out", "r.jsonl"]  # batch 1: bit-exact reruns
    cli(*args, cwd=tmp_path)
    full = (tmp_path / "r.jsonl").read_text()
    lines = full.splitlines(keepends=True)
    (tmp_path / "r.jsonl").write_text(lines[0] + lines[1][:50])  # a kill mid-write
    cli(*args, cwd=tmp_path)
    assert (tmp_path / "r.jsonl").read_text() == full


def test_missing_data_file(tmp_path):
    line = one_error_line(cli("generate", "--data", "nope.jsonl", cwd=tmp_path, check=False))
    assert "nope.jsonl" in line and "no such file" in line


def test_wrong_field_name(tmp_path, data_dir):
    p = cli("generate", "--data", data_dir / "math" / "train.jsonl", "--question-field", "prompt", cwd=tmp_path, check=False)
    line = one_error_line(p)
    assert "'prompt'" in line and "problem" in line  # names the field and lists the real ones


def test_malformed_row_is_skipped_and_reported(tmp_path):
    rows = [{"problem": "What is 1+1?", "solution": "1+1 = \\boxed{2}", "unique_id": "a"},
            {"problem": "What is 2+2?", "unique_id": "b"},  # no solution
            {"problem": "What is 3+3?", "solution": "\\boxed{6}", "unique_id": "c"}]
    text = json.dumps(rows[0]) + "\n{not json\n" + json.dumps(rows[1]) + "\n" + json.dumps(rows[2]) + "\n"
    (tmp_path / "d.jsonl").write_text(text)
    p = cli("generate", "--data", "d.jsonl", "--max-new-tokens", "8", "--out", "o.jsonl", cwd=tmp_path)
    assert "d.jsonl:2: malformed JSON" in p.stderr and "d.jsonl:3: missing field 'solution'" in p.stderr
    ids = [json.loads(line)["id"] for line in (tmp_path / "o.jsonl").read_text().splitlines()]
    assert ids == ["a", "c"]
    assert json.loads((tmp_path / "o.manifest.json").read_text())["counts"]["skipped_rows"] == 2


def test_prompt_longer_than_the_context_is_a_failed_row(tmp_path):
    long = {"problem": "Add these numbers: " + " + ".join(["7"] * 400), "solution": "\\boxed{2800}", "unique_id": "long"}
    short = {"problem": "What is 1+1?", "solution": "\\boxed{2}", "unique_id": "short"}
    (tmp_path / "d.jsonl").write_text(json.dumps(long) + "\n" + json.dumps(short) + "\n")
    p = cli("generate", "--data", "d.jsonl", "--max-new-tokens", "8", "--ctx", "1024", "--out", "o.jsonl", cwd=tmp_path)
    failed = [json.loads(x) for x in (tmp_path / "o.failed.jsonl").read_text().splitlines()]
    assert [f["id"] for f in failed] == ["long"] and "does not fit the context" in failed[0]["error"]
    assert [json.loads(x)["id"] for x in (tmp_path / "o.jsonl").read_text().splitlines()] == ["short"]
    assert "long" in p.stderr


def test_not_a_gguf_and_not_a_causal_lm(tmp_path):
    (tmp_path / "fake.gguf").write_bytes(b"PK\x03\x04 not a model")
    line = one_error_line(cli("generate", "--model", "fake.gguf", cwd=tmp_path, check=False))
    assert "fake.gguf" in line and "not a GGUF" in line
    line = one_error_line(cli("generate", "--model", "no-such-model", cwd=tmp_path, check=False))
    assert "no-such-model" in line


def test_bad_option_value_names_it(tmp_path):
    line = one_error_line(cli("generate", "--tau", "2", cwd=tmp_path, check=False))
    assert "tau" in line and "[0, 1]" in line


def test_view_and_models(tmp_path):
    cli("generate", "--limit", "1", "--max-new-tokens", "24", "--record-candidates", "--out", "v.jsonl", cwd=tmp_path)
    runner = CliRunner()
    res = runner.invoke(app, ["view", str(tmp_path / "v.jsonl"), "--candidates"], env={"COLUMNS": "150"})
    assert res.exit_code == 0, res.output
    assert "legend" in res.output and "consistent" in res.output and "demo/apples/0" in res.output
    rec = json.loads((tmp_path / "v.jsonl").read_text())
    assert rec["steps"][0]["text"].strip() in res.output
    res = runner.invoke(app, ["view", str(tmp_path / "v.jsonl"), "--id", "missing"])
    assert res.exit_code != 0
    res = runner.invoke(app, ["models"], env={"COLUMNS": "200"})
    assert res.exit_code == 0 and "smollm2-135m" in res.output and "llama-3.2-3b-instruct" in res.output
