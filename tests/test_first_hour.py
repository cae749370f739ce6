"""A new user's first hour, piece by piece: the answer format the embedded model writes,
the run fingerprint that guards resume, the user's columns passing through, one line for
every bad path or empty file, and renderings that survive an 80-column terminal."""

from __future__ import annotations

import io
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from rich.console import Console

from dasd_local.store.problems import load_problems
from dasd_local.errors import ConfigError, InputError, OutputError
from dasd_local.tasks import FieldMap, get_task
from dasd_local.tasks.math import answer_phrase


def render(renderable, width: int = 80) -> str:
    out = io.StringIO()
    Console(file=out, width=width, color_system=None).print(renderable)
    return out.getvalue()


# ---- the answer format --------------------------------------------------------------

@pytest.mark.parametrize("text, answer", [
    ("So, the answer is 7.", "7"),
    ("The answer is: 100", "100"),
    ("So, the final answer is 0.", "0"),
    ("The answer is $360$ kilometres.", "360"),
    ("The answer is $\\boxed{23}$.", "23"),
    ("The answer is 3.5.", "3.5"),
    ("The answer is **42**\n\nThanks", "42"),
    ("The answer is 5. Wait, the answer is 6.", "6"),
    ("The answer is 4 * 4 = 16.", "16"),
    ("The answer is 14 cm².", "14"),
    ("The answer is 1/2.", "1/2"),
    ("The answer is x^2 + 1.", "x^2 + 1"),
    ("I do not know.", None),
])
def test_answer_phrase(text, answer):
    assert answer_phrase(text) == answer


def test_the_answer_format_is_a_task_option_used_by_instruction_and_check():
    boxed, said = get_task("math"), get_task("math", "answer-is")
    assert "\\boxed{}" in boxed.instruction and '"The answer is"' in said.instruction
    assert not boxed.verify("So, the answer is 7.", {"answer": "7"}).correct  # boxed stays strict
    assert said.verify("So, the answer is 7.", {"answer": "7"}).correct
    assert not said.verify("So, the answer is 8.", {"answer": "7"}).correct
    with pytest.raises(ConfigError, match="--answer-format boxed is not allowed for task code"):
        get_task("code", "boxed")
    with pytest.raises(ConfigError, match="--task nope"):
        get_task("nope")


def test_demo_solutions_end_in_the_demo_format():
    from dasd_local.store.demo import ANSWER_FORMAT, demo_rows

    task = get_task("math", ANSWER_FORMAT)
    rows = demo_rows()
    assert len(rows) == 36
    assert all(task.verify(r["solution"], r).correct for r in rows)


# ---- the fingerprint -----------------------------------------------------------------

def _fingerprint(tmp_path: Path, **rule) -> dict:
    from dasd_local.store import fingerprint

    data = tmp_path / "in.jsonl"
    if not data.exists():
        data.write_text('{"problem": "1+1?", "solution": "2"}\n')
    rule = {"strategy": "dasd", "top_k": 6, "tau": 0.2, "hard_mode": "ref", "hint_beta": 3.0,
            "max_new_tokens": 512, **rule}
    return fingerprint.make("ab" * 32, None, data, "train", FieldMap(), get_task("math"), rule, None)


def test_a_changed_run_stops_at_the_fingerprint(tmp_path):
    from dasd_local.store.fingerprint import claim

    out = tmp_path / "out.jsonl"
    claim(out, _fingerprint(tmp_path))
    out.write_text('{"id": "0"}\n')
    claim(out, _fingerprint(tmp_path))  # the same run resumes
    with pytest.raises(ConfigError) as e:
        claim(out, _fingerprint(tmp_path, tau=0.5))
    assert "--tau 0.2 -> 0.5" in str(e.value) and "--restart" in str(e.value) and "\n" not in str(e.value)
    (tmp_path / "in.jsonl").write_text('{"problem": "1+1?", "solution": "2", "extra": 1}\n')
    with pytest.raises(ConfigError, match=r"--data \(its content\)"):
        claim(out, _fingerprint(tmp_path))
    claim(out, _fingerprint(tmp_path, tau=0.5), restart=True)
    assert not out.exists()
    assert json.loads((tmp_path / "out.fingerprint.json").read_text())["tau"] == 0.5


def test_records_without_a_fingerprint_are_not_resumed(tmp_path):
    from dasd_local.store.fingerprint import claim

    out = tmp_path / "old.jsonl"
    out.write_text('{"id": "0"}\n')
    with pytest.raises(ConfigError, match="no fingerprint"):
        claim(out, _fingerprint(tmp_path))


# ---- the user's data -----------------------------------------------------------------

def _rows(tmp_path: Path, rows: list, name: str = "mine.jsonl") -> Path:
    path = tmp_path / name
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_unmapped_columns_pass_through(tmp_path):
    rows = [{"pid": f"p{i}", "problem": f"{i}+1?", "solution": f"{i + 1}", "final": i + 1, "steps": "mine"}
            for i in range(3)]
    problems, notes = load_problems(_rows(tmp_path, rows), get_task("math"))
    assert [p.id for p in problems] == ["0", "1", "2"]
    assert "no id column 'unique_id'" in notes.notes[0] and "--id-field" in notes.notes[0]
    assert problems[1].fields["pid"] == "p1" and problems[1].fields["final"] == 2
    assert problems[1].fields["input_steps"] == "mine"  # a record field keeps its value under another name
    assert "problem" not in problems[1].fields and "solution" not in problems[1].fields
    problems, notes = load_problems(_rows(tmp_path, rows), get_task("math"), FieldMap(id="pid"))
    assert [p.id for p in problems] == ["p0", "p1", "p2"] and not notes.notes


def test_bad_rows_are_counted_before_decoding(tmp_path):
    rows = [{"problem": "a", "solution": "b"}, "{broken", {"problem": "c"}, "[1]", {"problem": "d", "solution": "e"}]
    problems, skipped = load_problems(_rows(tmp_path, rows), get_task("math"))
    assert len(problems) == 2
    line = skipped.summary()
    assert line.startswith("3 input rows skipped (1 malformed JSON, 1 missing field 'solution', 1 not a JSON object)")
    assert "mine.jsonl:2" in line


@pytest.mark.parametrize("rows, why", [([], r"no usable rows \(empty\)"), (["{x", "{y"], "2 malformed JSON")])
def test_no_usable_row_is_one_error(tmp_path, rows, why):
    with pytest.raises(InputError, match=why):
        load_problems(_rows(tmp_path, rows), get_task("math"))


def test_every_task_names_its_schema():
    assert "unique_id (id), problem (question), solution (reference solution), answer" == get_task("math").schema()
    assert "task_id (id)" in get_task("code").schema() and "answerKey" in get_task("mcq").schema()


# ---- paths and files -----------------------------------------------------------------

def test_an_output_directory_that_cannot_be_made_is_one_line(tmp_path):
    from dasd_local.store.records import output_dir

    (tmp_path / "file.jsonl").write_text("")
    with pytest.raises(OutputError, match=r"^--out .*file.jsonl/out.jsonl: cannot create the directory .*is a file$"):
        output_dir(tmp_path / "file.jsonl" / "out.jsonl")
    with pytest.raises(OutputError, match=r"^--out /proc/x/out.jsonl: cannot create the directory /proc/x"):
        output_dir(Path("/proc/x/out.jsonl"))
    with pytest.raises(OutputError, match="is a directory"):
        output_dir(tmp_path)


def test_view_of_an_empty_file_is_one_error(tmp_path):
    from dasd_local.reporting.terminal import show

    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(InputError, match=r"empty.jsonl: no records \(the file is empty\)"):
        show(tmp_path / "empty.jsonl")


# ---- 80 columns ----------------------------------------------------------------------

def test_models_at_80_columns_keep_whole_names():
    from dasd_local.models import registry, registry_table

    text = render(registry_table())
    _, entries = registry()
    for e in entries.values():
        assert e.file in text and (not e.hf or e.hf in text) and e.name in text
    assert max(len(line.rstrip()) for line in text.splitlines()) <= 80


def test_progress_at_80_columns_keeps_count_and_time():
    from dasd_local.store.progress import Bar

    stats = SimpleNamespace(categories={"consistent": 90, "reserved": 5, "base_selected": 3, "hard": 2},
                            emitted=100, rows=400, decode_calls=30, accepted=0, drafted=0)
    out = io.StringIO()
    console = Console(file=out, width=80, color_system=None, force_terminal=False)
    with Bar("dasd", 36, console=console) as bar:
        for _ in range(12):
            bar.done_one()
        bar.step(stats)
    text = out.getvalue()
    assert "12/36" in text and "0:00:0" in text and "tok/s" in text and "cons 90.0%" in text


def test_view_at_80_columns_keeps_the_counts_and_legend(tmp_path):
    from dasd_local.reporting.terminal import show

    steps = [{"text": w, "category": c, "p_base": 0.9} for w, c in
             [("The", "consistent"), (" answer", "reserved"), (" is", "base_selected"), (" 5.", "hard")] * 30]
    rec = {"id": "demo/x/0", "strategy": "dasd", "finish_reason": "stop", "steps": steps}
    (tmp_path / "r.jsonl").write_text(json.dumps(rec) + "\n")
    out = io.StringIO()
    show(tmp_path / "r.jsonl", console=Console(file=out, width=80, color_system=None))
    text = out.getvalue()
    assert "[dasd]" in text and "hard 30 (25.0%)" in text and "PPL > 2.5): 0" in text
    assert "no candidate plausible to base" in text and "a lower reference candidate the base finds" in text


def test_stats_at_80_columns_name_files_by_path_and_explain_filtered(tmp_path):
    from dasd_local.analysis.metrics import collect
    from dasd_local.analysis.tables import report_tables

    steps = [{"text": "x", "category": c, "p_base": 0.5} for c in ("consistent", "reserved", "base_selected", "hard")]
    path = tmp_path / "runs" / "demo-dasd.jsonl"
    path.parent.mkdir()
    path.write_text(json.dumps({"id": "0", "strategy": "dasd", "steps": steps}) + "\n")
    stats, _ = collect([path])
    text = "".join(render(t) for t in report_tables(stats))
    assert max(len(line.rstrip()) for line in text.splitlines()) <= 80
    lines = render(report_tables(stats)[0]).splitlines()
    width = lines[1].index("level")
    assert str(path) in "".join(line[:width].strip() for line in lines[2:])  # folded, never cut
    assert "filtered = base_selected + hard, not a fifth" in " ".join(text.split())
    assert "consistent" in text and "selected" in text and "50.00%" in text  # filtered = 25% + 25%


def test_verify_reads_answers_in_the_records_format(tmp_path):
    from dasd_local.verify import VerifyConfig, verify_file

    recs = [{"id": "a", "task": "math", "answer_format": "answer-is", "response": "So, the answer is 7.", "answer": "7"},
            {"id": "b", "task": "math", "answer_format": "answer-is", "response": "The answer is 8.", "answer": "7"}]
    (tmp_path / "r.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    report = verify_file(tmp_path / "r.jsonl", tmp_path / "k.jsonl", VerifyConfig(workers=1))
    assert report.totals() == (2, 1, 1)


@pytest.mark.parametrize("verb", ["verify", "stats"])
def test_an_empty_record_file_is_one_error(tmp_path, verb):
    from dasd_local.analysis.metrics import collect
    from dasd_local.verify import VerifyConfig, verify_file

    (tmp_path / "e.jsonl").write_text("\n")
    with pytest.raises(InputError, match=r"e.jsonl: no records \(the file is empty\)"):
        if verb == "verify":
            verify_file(tmp_path / "e.jsonl", tmp_path / "k.jsonl", VerifyConfig(task="math", workers=1))
        else:
            collect([tmp_path / "e.jsonl"])


def test_ctrl_c_while_decoding_keeps_what_is_written(tmp_path, monkeypatch):
    """generate through the runner with a job whose decoding is interrupted after one record."""
    from dataclasses import dataclass

    from dasd_local.config import DecodeConfig, RunConfig
    from dasd_local.decoding import session
    from dasd_local.errors import Interrupted
    from dasd_local.generate import generate

    class Session:
        def run(self, payloads, on_step=None):
            yield payloads[0]["id"], {"id": payloads[0]["id"]}, None
            raise KeyboardInterrupt

        def stats(self):
            return {}

        def info(self):
            return {}

        def close(self):
            pass

    @dataclass(frozen=True)
    class Job(session.DecodeJob):
        def open(self):
            return Session()

    monkeypatch.setattr(session, "DecodeJob", Job)
    out = tmp_path / "o.jsonl"
    with pytest.raises(Interrupted, match="^interrupted: 1 done, rerun the same command to resume$") as e:
        generate(RunConfig(limit=2, out=out), DecodeConfig(), Console(file=io.StringIO()))
    assert e.value.exit_code == 130 and out.read_text() == '{"id": "demo/apples/0"}\n'


