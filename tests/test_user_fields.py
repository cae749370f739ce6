"""User data with its own column names: --question/--reference/--answer/--choices/--tests-field
carry every gold field verification needs, so `generate` then `verify` runs without renaming."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from dasd_local.store.problems import load_problems
from dasd_local.errors import InputError
from dasd_local.tasks import FieldMap, get_task

MCQ_ROW = {"id": "q1", "stem": "Which is a planet?", "opts": {"label": ["A", "B"], "text": ["Mars", "Moon"]}, "key": "A"}


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_math_answer_column(tmp_path):
    rows = [{"q": "1 + 1?", "worked_solution": "One and one make 2.", "final": "2"}]
    fields = FieldMap(question="q", reference="worked_solution", answer="final")
    problems, skipped = load_problems(write_jsonl(tmp_path / "d.jsonl", rows), get_task("math"), fields)
    assert not skipped.rows
    assert (problems[0].question, problems[0].reference, problems[0].fields) == ("1 + 1?", "One and one make 2.", {"answer": "2"})
    # without an answer column, the boxed answer of the user's reference column is the gold answer
    boxed = get_task("math").keep({"worked_solution": "so $\\boxed{4}$"}, FieldMap(reference="worked_solution"))
    assert boxed == {"answer": "4"}
    with pytest.raises(InputError, match="no field 'finall'.*--answer-field"):  # a named column must exist
        load_problems(tmp_path / "d.jsonl", get_task("math"), FieldMap(question="q", reference="worked_solution", answer="finall"))


def test_mcq_and_code_gold_columns(tmp_path):
    task = get_task("mcq")
    fields = FieldMap(question="stem", answer="key", choices="opts")
    problems, _ = load_problems(write_jsonl(tmp_path / "m.jsonl", [MCQ_ROW]), task, fields)
    p = problems[0]
    assert "(A) Mars" in p.question and p.reference.startswith("The answer is (A) Mars")
    assert p.fields == {"answerKey": "A", "choices": MCQ_ROW["opts"]}
    assert task.verify("The answer is (A)", p.fields).correct
    with pytest.raises(InputError, match="no field 'opts'.*--choices-field"):
        load_problems(write_jsonl(tmp_path / "m2.jsonl", [{**MCQ_ROW, "opts": None}]), task, fields)
    code = get_task("code")
    row = {"task_id": 1, "prompt": "Add two numbers.", "sol": "def add(a, b):\n    return a + b", "asserts": ["assert add(1, 2) == 3"]}
    cf = FieldMap(question="prompt", reference="sol", tests="asserts")
    problems, _ = load_problems(write_jsonl(tmp_path / "c.jsonl", [row]), code, cf)
    assert problems[0].fields == {"test_list": row["asserts"]} and "assert add(1, 2) == 3" in problems[0].question
    with pytest.raises(InputError, match="no field 'asserts'.*--tests-field"):
        load_problems(write_jsonl(tmp_path / "c2.jsonl", [{**row, "asserts": None}]), code, cf)


def cli(*args, cwd):
    p = subprocess.run([sys.executable, "-m", "dasd_local", *map(str, args)], cwd=cwd, capture_output=True, text=True,
                       timeout=600, env={**os.environ, "COLUMNS": "120"})
    return p


@pytest.mark.slow
def test_a_new_users_columns_generate_then_verify(tmp_path):
    """Fields q, worked_solution, final: generate with the three options, then verify as is."""
    from dasd_local.store.demo import demo_rows

    rows = [{"q": r["problem"], "worked_solution": r["solution"].split(" The answer is")[0], "final": r["answer"]}
            for r in demo_rows()[:2]]
    data = write_jsonl(tmp_path / "mine.jsonl", rows)
    gen = ["generate", "--data", data, "--question-field", "q", "--reference-field", "worked_solution",
           "--limit", "2", "--max-new-tokens", "16", "--threads", "1"]
    p = cli(*gen, "--answer-field", "final", "-o", "out.jsonl", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    records = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r["answer"] for r in records] == [r["final"] for r in rows]
    p = cli("verify", "out.jsonl", "-o", "kept.jsonl", "--workers", "1", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert "of 2 records kept" in p.stdout and "skipped" not in p.stderr
    # the report's complaint: without --answer-field the gold answer is missing, and verify says which option carries it
    assert cli(*gen, "-o", "bare.jsonl", cwd=tmp_path).returncode == 0
    p = cli("verify", "bare.jsonl", "-o", "k2.jsonl", cwd=tmp_path)
    assert p.returncode == 1 and "no field 'answer'" in p.stderr and "--answer-field" in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1
