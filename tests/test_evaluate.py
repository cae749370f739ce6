"""`dasd-local eval`: scoring, resumable predictions, and a short real run of the
embedded model through the batched engine."""

from __future__ import annotations

import json

import pytest

from dasd_local.errors import ConfigError
from dasd_local.evaluate import PREDICTIONS, SUMMARY, EvalConfig, accuracy, eval_decode, evaluate, read_predictions

from conftest import REPO


def test_score_groups_by_level_and_subject():
    lines = [{"id": "1", "correct": True, "level": 1, "subject": "Algebra"},
             {"id": "2", "correct": False, "level": 1, "subject": "Geometry"},
             {"id": "3", "correct": True, "level": 2, "type": "Geometry"},
             {"id": "4", "correct": False}]
    s = accuracy(lines)
    assert (s["n"], s["correct"], s["score"]) == (4, 2, 0.5)
    assert s["by_level"] == {"1": {"n": 2, "correct": 1, "score": 0.5}, "2": {"n": 1, "correct": 1, "score": 1.0}}
    assert s["by_subject"]["Geometry"] == {"n": 2, "correct": 1, "score": 0.5}
    assert "by_level" not in accuracy([{"id": "x", "correct": True}])


def test_a_line_cut_by_a_kill_is_dropped_and_rerun(tmp_path):
    path = tmp_path / PREDICTIONS
    path.write_text('{"id": "a", "correct": true}\n{"id": "b", "corr')
    assert list(read_predictions(path)) == ["a"]
    assert path.read_text() == '{"id": "a", "correct": true}\n'  # safe to append to again


def test_config_checks():
    with pytest.raises(ConfigError, match="--data"):
        EvalConfig(task="math")
    with pytest.raises(ConfigError, match="workers"):
        EvalConfig(data="x.jsonl", workers=0)


def run(tmp_path, data_dir, task, split_file, limit, **kw):
    decode = eval_decode(max_new_tokens=kw.pop("max_new_tokens", 12), batch=kw.pop("batch", 3))
    cfg = EvalConfig(task=task, data=str(data_dir / split_file), out_dir=tmp_path / task, limit=limit,
                     decode=decode, threads=1, workers=2, **kw)
    return evaluate(cfg)


def test_real_model_eval_is_resumable(tmp_path, data_dir):
    first = run(tmp_path, data_dir, "mcq", "arc_challenge/test.jsonl", 3)
    assert (first["n"], first["ran_now"], first["metric"]) == (3, 3, "accuracy")
    lines = [json.loads(x) for x in (tmp_path / "mcq" / PREDICTIONS).read_text().splitlines()]
    assert {tuple(sorted(x)) for x in lines} == {("correct", "detail", "extracted", "finish_reason", "id",
                                                    "prediction", "response_tokens")}
    assert all(isinstance(x["prediction"], str) and isinstance(x["correct"], bool) for x in lines)
    second = run(tmp_path, data_dir, "mcq", "arc_challenge/test.jsonl", 5)
    assert (second["n"], second["ran_now"]) == (5, 2)  # the first three were not decoded again
    summary = json.loads((tmp_path / "mcq" / SUMMARY).read_text())
    assert summary["n"] == 5 and len(summary["model_sha256"]) == 64 and summary["config"]["batch"] == 3


def test_real_model_code_eval_runs_the_tests(tmp_path, data_dir):
    s = run(tmp_path, data_dir, "code", "mbpp/test.jsonl", 2, max_new_tokens=48, timeout_s=5)
    assert s["metric"] == "pass@1" and s["n"] == 2
    lines = [json.loads(x) for x in (tmp_path / "code" / PREDICTIONS).read_text().splitlines()]
    # every answer was actually executed: a verdict from the sandbox, not a placeholder
    assert all(x["detail"].split(":")[0] in {"passed", "failed", "timeout", "exited-early"} for x in lines)


def test_rejudge_checks_saved_answers_again_without_decoding(tmp_path, data_dir):
    rows = [json.loads(x) for x in (data_dir / "arc_challenge" / "test.jsonl").read_text().splitlines()[:3]]
    out = tmp_path / "mcq"
    out.mkdir()
    # verdicts an older checker wrote: a boxed right answer marked wrong, a bare guess marked right
    saved = [{"id": rows[0]["id"], "prediction": f"(A) ... so \\boxed{{{rows[0]['answerKey']}}}", "extracted": "A",
              "correct": False, "detail": "", "finish_reason": "stop", "response_tokens": 9},
             {"id": rows[1]["id"], "prediction": "Looking at (A) and", "extracted": rows[1]["answerKey"],
              "correct": True, "detail": "", "finish_reason": "length", "response_tokens": 512},
             {"id": rows[2]["id"], "prediction": None, "extracted": None, "correct": False, "detail": "not run: x"}]
    (out / PREDICTIONS).write_text("".join(json.dumps(x) + "\n" for x in saved))
    s = run(tmp_path, data_dir, "mcq", "arc_challenge/test.jsonl", 3, rejudge=True)
    assert (s["ran_now"], s["rejudged"], s["correct"]) == (0, 2, 1)  # nothing decoded; the unanswered line kept
    lines = [json.loads(x) for x in (out / PREDICTIONS).read_text().splitlines()]
    assert [x["extracted"] for x in lines] == [rows[0]["answerKey"], None, None]
    assert "token limit" in lines[1]["detail"] and lines[2]["detail"] == "not run: x"
    assert run(tmp_path, data_dir, "mcq", "arc_challenge/test.jsonl", 3)["rejudged"] is None


TABLE1 = REPO / "results" / "mbpp-qwen2.5-coder-0.5b" / "eval"


@pytest.mark.slow
@pytest.mark.parametrize("row", sorted(p.name.split(".")[0] for p in TABLE1.glob("*.predictions.jsonl.gz")))
def test_the_committed_mbpp_pass_at_1_is_reproduced_by_the_checker(tmp_path, data_dir, row):
    """Each committed Table 1 row (Qwen2.5-Coder-0.5B on MBPP test) judged again from its predictions."""
    import gzip

    out = tmp_path / "code"
    out.mkdir()
    (out / PREDICTIONS).write_bytes(gzip.decompress((TABLE1 / f"{row}.predictions.jsonl.gz").read_bytes()))
    s = run(tmp_path, data_dir, "code", "mbpp/test.jsonl", None, rejudge=True, answer_format="code-block")
    published = json.loads((TABLE1 / f"{row}.summary.json").read_text())
    assert (s["ran_now"], s["rejudged"]) == (0, 500)
    assert (s["n"], s["correct"]) == (published["n"], published["correct"])
    if row == "origin":
        assert s["correct"] == 156


def test_a_log_file_gets_plain_progress_lines(tmp_path, data_dir, monkeypatch):
    """Under `nohup ... > log` rich draws nothing until the end: plain lines instead."""
    import io

    from rich.console import Console

    from dasd_local.store import progress

    monkeypatch.setattr(progress, "LOG_EVERY_S", 0.0)
    log = io.StringIO()
    decode = eval_decode(max_new_tokens=8, batch=2)
    evaluate(EvalConfig(task="mcq", data=str(data_dir / "arc_challenge" / "test.jsonl"), out_dir=tmp_path / "e",
                        limit=2, decode=decode, threads=1, workers=1), Console(file=log))
    lines = [x for x in log.getvalue().splitlines() if x.startswith("eval: ")]
    assert lines and lines[-1].startswith("eval: 2/2 done, ") and "tok/s" in log.getvalue()
