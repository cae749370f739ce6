"""`dasd-local verify` on generation-shaped records built from the real splits."""

from __future__ import annotations

import json
import sys

import pytest

from dasd_local import cli
from dasd_local.errors import ConfigError, InputError
from dasd_local.verify import VerifyConfig, verify_file


def write_jsonl(path, rows, extra_lines=()):
    with path.open("w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
        for line in extra_lines:
            f.write(line + "\n")
    return path


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def math_records(data_dir, n=8):
    """Generation records: even ones answer correctly, odd ones wrongly."""
    rows = [json.loads(line) for line in (data_dir / "math" / "math500.jsonl").open()][:n]
    return [{"id": r["unique_id"], "task": "math", "strategy": "dasd" if i < n // 2 else "self-distill",
             "response": r["solution"] if i % 2 == 0 else "So the answer is $\\boxed{-123456}$.",
             "response_tokens": [1, 2, 3], "steps": [{"p_base": 0.5}], "stop_step": None,
             "reference_solution": r["solution"], "answer": r["answer"], "level": r["level"], "subject": r["subject"]}
            for i, r in enumerate(rows)]


def test_drop_keeps_only_correct_records_with_verdicts(tmp_path, data_dir):
    inp = write_jsonl(tmp_path / "in.jsonl", math_records(data_dir))
    report = verify_file(inp, tmp_path / "out.jsonl", VerifyConfig(workers=2))
    kept = read_jsonl(tmp_path / "out.jsonl")
    assert [r["id"] for r in kept] == [r["id"] for r in math_records(data_dir)[::2]]  # input order
    assert all(r["correct"] is True and r["extracted"] == r["answer"] for r in kept)
    assert all(r["response_source"] == "generated" and r["response_tokens"] == [1, 2, 3] for r in kept)
    assert report.totals() == (8, 4, 4)
    assert {k[0] for k in report.groups} == {"dasd", "self-distill"}  # counted per strategy and level
    assert sum(g[0] for (s, _), g in report.groups.items() if s == "dasd") == 4


def test_keep_reference_replaces_wrong_rewrites_with_the_gold_solution(tmp_path, data_dir):
    records = math_records(data_dir)
    inp = write_jsonl(tmp_path / "in.jsonl", records)
    report = verify_file(inp, tmp_path / "out.jsonl", VerifyConfig(on_fail="keep-reference", workers=2))
    kept = read_jsonl(tmp_path / "out.jsonl")
    assert len(kept) == 8 and report.replaced == 4 and report.totals() == (8, 4, 8)
    for rec, orig in zip(kept, records):
        if rec["response_source"] == "reference":
            assert rec["response"] == orig["reference_solution"] and rec["rejected_response"] == orig["response"]
            assert rec["rewrite_correct"] is False and rec["correct"] is True
            assert "response_tokens" not in rec and "steps" not in rec  # they described the rejected text
        else:
            assert rec["response"] == orig["response"]


def test_malformed_lines_and_records_without_gold_are_counted_and_skipped(tmp_path, data_dir):
    records = math_records(data_dir, 4)
    no_gold = {k: v for k, v in records[1].items() if k != "answer"}
    inp = write_jsonl(tmp_path / "in.jsonl", [records[0], no_gold, records[2]], ["{not json", "[1, 2]", ""])
    report = verify_file(inp, tmp_path / "out.jsonl", VerifyConfig(workers=1))
    assert report.totals()[0] == 2
    assert sorted(report.skipped) == [f"{inp}:2: no field 'answer'",
                                      f"{inp}:4: malformed JSON (Expecting property name enclosed in double quotes)",
                                      f"{inp}:5: not a JSON object"]


def test_a_file_without_the_tasks_gold_field_is_one_clear_error(tmp_path, data_dir):
    records = [{k: v for k, v in r.items() if k != "answer"} for r in math_records(data_dir, 2)]
    inp = write_jsonl(tmp_path / "in.jsonl", records)
    with pytest.raises(InputError, match=r"in.jsonl:1: no field 'answer', which task 'math' needs"):
        verify_file(inp, tmp_path / "out.jsonl", VerifyConfig())


def test_task_errors(tmp_path, data_dir):
    inp = write_jsonl(tmp_path / "in.jsonl", math_records(data_dir, 2))
    with pytest.raises(ConfigError, match="--task physics is not allowed"):
        verify_file(inp, tmp_path / "o.jsonl", VerifyConfig(task="physics"))
    with pytest.raises(ConfigError, match="generated with task 'math'"):
        verify_file(inp, tmp_path / "o.jsonl", VerifyConfig(task="code"))
    with pytest.raises(ConfigError, match="is the input file"):
        verify_file(inp, inp, VerifyConfig())
    with pytest.raises(ConfigError, match="on_fail"):
        VerifyConfig(on_fail="retry")
    with pytest.raises(InputError, match="no such file"):
        verify_file(tmp_path / "missing.jsonl", tmp_path / "o.jsonl", VerifyConfig())


def test_code_records_run_in_parallel_sandboxes(tmp_path, data_dir):
    rows = [json.loads(line) for line in (data_dir / "mbpp" / "test.jsonl").open()][:6]
    records = [{"id": str(r["task_id"]), "strategy": "dasd", "reference_solution": r["code"],
                "response": f"```python\n{r['code'] if i % 3 else 'while True: pass'}\n```",
                "test_list": r["test_list"], "test_setup_code": r["test_setup_code"]} for i, r in enumerate(rows)]
    inp = write_jsonl(tmp_path / "in.jsonl", records)
    verify_file(inp, tmp_path / "out.jsonl", VerifyConfig(task="code", workers=3, timeout_s=2))
    kept = read_jsonl(tmp_path / "out.jsonl")
    assert [r["id"] for r in kept] == [rec["id"] for i, rec in enumerate(records) if i % 3]


def test_mcq_records(tmp_path, data_dir):
    rows = [json.loads(line) for line in (data_dir / "arc_challenge" / "test.jsonl").open()][:10]
    records = [{"id": r["id"], "strategy": "base", "response": f"The answer is ({r['answerKey']}).",
                "answerKey": r["answerKey"], "choices": r["choices"]} for r in rows]
    records[0]["response"] = "no idea"
    inp = write_jsonl(tmp_path / "in.jsonl", records)
    report = verify_file(inp, tmp_path / "out.jsonl", VerifyConfig(task="mcq"))
    assert report.totals() == (10, 9, 9)


def run_cli(monkeypatch, capsys, *args):
    monkeypatch.setattr(sys, "argv", ["dasd-local", *map(str, args)])
    monkeypatch.setenv("COLUMNS", "300")  # no wrapping of rich's output
    with pytest.raises(SystemExit) as e:
        cli.main()
    out = capsys.readouterr()
    return e.value.code, out.out, out.err


def test_cli_prints_a_table_and_errors_as_one_line(tmp_path, data_dir, monkeypatch, capsys):
    inp = write_jsonl(tmp_path / "in.jsonl", math_records(data_dir, 4), ["{torn"])
    code, out, err = run_cli(monkeypatch, capsys, "verify", inp, "-o", tmp_path / "out.jsonl")
    assert code == 0 and "total" in out and "2 of 4 records kept" in out
    assert f"{inp}:5: malformed JSON" in err
    code, out, err = run_cli(monkeypatch, capsys, "verify", inp, "-o", tmp_path / "out.jsonl", "--task", "physics")
    assert code == 1 and err.strip().splitlines() == ["error: --task physics is not allowed: expected one of math, code, mcq"]


def test_a_replaced_gold_solution_keeps_its_end_of_turn_label(tmp_path, data_dir, model_path):
    """verify -> training.data: a wrong rewrite cut at max_new_tokens (`length`) is replaced by
    the gold solution, which is complete, so training must still teach it to stop."""
    from dasd_local.train import TrainConfig
    from dasd_local.training.data import prepare_examples, read_training_records

    rows = [json.loads(line) for line in (data_dir / "math" / "math500.jsonl").open()][:4]
    records = [{**r, "question": row["problem"], "finish_reason": "length", "steps": [{"p_base": 0.5}] * 3}
               for r, row in zip(math_records(data_dir, 4), rows)]
    inp = write_jsonl(tmp_path / "in.jsonl", records)
    verify_file(inp, tmp_path / "out.jsonl", VerifyConfig(on_fail="keep-reference", workers=1))
    kept = read_jsonl(tmp_path / "out.jsonl")
    gold = [r for r in kept if r["response_source"] == "reference"]
    assert len(gold) == 2 and all(r["finish_reason"] == "stop" and r["rejected_finish_reason"] == "length" for r in gold)
    recs, report = read_training_records(tmp_path / "out.jsonl")
    cfg = TrainConfig(data=str(tmp_path / "out.jsonl"), out="o", max_length=1024, threads=1)
    examples = prepare_examples(recs, model_path, cfg, report)
    for rec, ex in zip(recs, examples):
        ends = ex.labels[-1] == 2  # <|im_end|>, SmolLM2's end of an assistant turn
        assert ends == (rec["response_source"] == "reference"), rec["id"]  # generated ones were cut


def test_published_sdft_rewrites_must_pass_its_phrase_filter(tmp_path, data_dir):
    """A correct rewrite that mentions "the reference answer" fails SDFT's published filter
    and is replaced by the gold solution (--on-fail keep-reference), as gen_distilled_data.py does."""
    records = math_records(data_dir, 4)[::2]  # both answer correctly
    chatty = {**records[0], "strategy": "self-distill", "config": {"baseline_form": "published"},
              "response": "As the reference answer shows, " + records[0]["response"]}
    controlled = {**chatty, "id": "controlled", "config": {"baseline_form": "controlled"}}
    inp = write_jsonl(tmp_path / "in.jsonl", [chatty, controlled, {**records[1], "strategy": "self-distill",
                                                                    "config": {"baseline_form": "published"}}])
    report = verify_file(inp, tmp_path / "out.jsonl", VerifyConfig(on_fail="keep-reference", workers=1))
    first, second, third = read_jsonl(tmp_path / "out.jsonl")
    assert first["response_source"] == "reference" and "SDFT filter" in first["verify_detail"]
    assert second["response_source"] == third["response_source"] == "generated"  # controlled form: no filter
    assert report.replaced == 1


def test_dedupe_keeps_one_of_identical_samples_and_counts_problems(tmp_path, data_dir):
    """`generate --samples` records: identical correct samples of one problem are kept once
    and still count as correct; the report counts problems with a correct sample."""
    base = math_records(data_dir, 4)
    rows = []
    for r in base:  # 3 samples each: the record's own response twice, then a wrong one
        for k, response in enumerate([r["response"], r["response"], "So the answer is $\\boxed{-123456}$."]):
            rows.append({**r, "id": f"{r['id']}#{k}", "problem_id": r["id"], "sample": k, "response": response,
                         "response_tokens": [1, 2, 3] if k < 2 else [9]})
    inp = write_jsonl(tmp_path / "in.jsonl", rows)
    report = verify_file(inp, tmp_path / "out.jsonl", VerifyConfig(workers=2, dedupe=True))
    kept = read_jsonl(tmp_path / "out.jsonl")
    assert [r["id"] for r in kept] == [f"{r['id']}#0" for r in base[::2]]
    assert report.totals() == (12, 4, 2) and report.duplicates == 2
    assert (report.solved(), len(report.problems)) == (2, 4)
    counts = json.loads((tmp_path / "out.manifest.json").read_text())["counts"]
    assert (counts["duplicates"], counts["problems"], counts["problems_with_a_correct_sample"]) == (2, 4, 2)
    assert verify_file(inp, tmp_path / "all.jsonl", VerifyConfig(workers=2)).totals() == (12, 4, 4)
