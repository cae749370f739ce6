"""The code task and its sandbox: every MBPP reference passes its own tests; hostile
programs end as failed samples within the timeout and leave the tool healthy."""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

from dasd_local.store.problems import load_problems
from dasd_local.tasks import FieldMap, get_task
from dasd_local.tasks.code import CodeTask, build_program, entry_point, extract_code
from dasd_local.tasks.sandbox import NOBODY, Limits, run_python

SPLITS = ("prompt", "train", "validation", "test")
TIMEOUT = 3.0  # hostile programs: short wall clock keeps the suite fast
FAST = Limits(timeout_s=TIMEOUT)


def mbpp_rows(data_dir):
    rows = []
    for split in SPLITS:
        with (data_dir / "mbpp" / f"{split}.jsonl").open(encoding="utf-8") as f:
            rows += [json.loads(line) for line in f]
    return rows


def test_every_mbpp_reference_passes_its_own_tests(data_dir):
    rows = mbpp_rows(data_dir)
    assert len(rows) == 974
    task = CodeTask()
    verdicts = task.verify_many(((r["code"], r) for r in rows), workers=2)
    failed = {r["task_id"]: v.detail for r, v in zip(rows, verdicts) if not v.correct}
    assert failed == {}


def test_a_reference_fails_another_problems_tests(data_dir):
    rows = mbpp_rows(data_dir)[:40]
    task = CodeTask()
    shifted = [(rows[i - 1]["code"], rows[i]) for i in range(len(rows))]
    assert not any(v.correct for v in task.verify_many(shifted, workers=2))


def _nobody_processes() -> int:
    out = subprocess.run(["ps", "-u", str(NOBODY), "-o", "pid="], capture_output=True, text=True).stdout
    return len(out.split())


HOSTILE = {
    "infinite loop": "while True:\n    pass\n",
    "sleeping forever": "import time\nwhile True:\n    time.sleep(1)\n",
    "fork bomb": "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n",
    "huge allocation": "x = bytearray(10 ** 12)\n",
    "slow allocation": "x = []\nwhile True:\n    x.append(' ' * 10 ** 7)\n",
    "write outside the workdir": "open('/tmp/dasd-sandbox-escape.txt', 'w').write('x')\n",
    "write via os.open": "import os\nos.close(os.open('/tmp/dasd-sandbox-escape.txt', os.O_CREAT | os.O_WRONLY))\n",
    "network call": "import socket\nsocket.create_connection(('1.1.1.1', 53), timeout=2)\n",
    "dns lookup": "import socket\nsocket.getaddrinfo('example.com', 80)\n",
    "subprocess": "import subprocess\nsubprocess.run(['true'])\n",
    "exit before the tests": "import sys\nsys.exit(0)\nassert False\n",
    "os._exit before the tests": "import os\nos._exit(0)\nassert False\n",
    "output flood": "while True:\n    print('x' * 10000)\n",
}


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_program_is_a_failed_sample_and_the_tool_stays_healthy(name):
    start = time.monotonic()
    result = run_python(HOSTILE[name], FAST)
    elapsed = time.monotonic() - start
    assert not result.passed, result
    assert elapsed < TIMEOUT + 3.0, f"{name}: {elapsed:.1f} s"  # + the bounded process-group drain
    assert not os.path.exists("/tmp/dasd-sandbox-escape.txt")
    assert run_python("assert sum(range(10)) == 45\n", FAST).passed  # healthy afterwards
    if os.geteuid() == 0:
        assert _nobody_processes() == 0  # nothing left running


def test_reading_the_users_files_is_refused():
    if os.geteuid() != 0:
        pytest.skip("file protection by uid needs root to drop to nobody")
    result = run_python(f"print(open({os.path.abspath(__file__)!r}).read())\n", FAST)
    assert not result.passed and "Permission" in result.detail


def test_working_directory_is_writable_and_thrown_away():
    import glob
    import tempfile

    before = set(glob.glob(os.path.join(tempfile.gettempdir(), "dasd-sandbox-*")))
    src = "open('note.txt', 'w').write('hi')\nassert open('note.txt').read() == 'hi'\n"
    assert run_python(src, FAST).passed
    assert set(glob.glob(os.path.join(tempfile.gettempdir(), "dasd-sandbox-*"))) <= before


def test_timeout_is_reported_as_such():
    r = run_python("while True: pass\n", Limits(timeout_s=1.0))
    assert (r.passed, r.status) == (False, "timeout")


def test_limits_are_checked():
    with pytest.raises(ValueError, match="timeout"):
        Limits(timeout_s=0)


def test_extract_code_prefers_the_block_that_defines_the_function():
    response = ("Here is how:\n```python\nprint('demo')\n```\nand the solution:\n"
                "```python\ndef add(a, b):\n    return a + b\n```\n")
    assert extract_code(response, "add").startswith("def add")
    assert extract_code("```py\ndef f():\n  return 1\n", "f") == "def f():\n  return 1"  # unterminated fence
    assert extract_code("def f(): return 1", "f") == "def f(): return 1"  # no fence: the whole text


def test_entry_point_skips_builtins():
    assert entry_point("assert set(similar_elements((3, 4), (5, 4))) == set((4,))") == "similar_elements"
    assert entry_point("assert math.isclose(area(2), 12.5)") == "area"


def test_generated_answer_is_judged_by_the_tests(data_dir):
    task = get_task("code")
    problems, _ = load_problems(data_dir / "mbpp" / "test.jsonl", task, FieldMap(), limit=1)
    p = problems[0]
    assert "remove_Occ" in task.base_user(p) and "```python" in task.base_user(p)  # the name and format are shown
    good = f"Sure.\n```python\n{p.reference}\n```"
    assert task.verify(good, p.fields).correct
    bad = "```python\ndef remove_Occ(s, ch):\n    return s\n```"
    v = task.verify(bad, p.fields)
    assert not v.correct and "AssertionError" in v.detail
    assert "\r" not in p.reference and p.reference in task.reference_user(p)


def test_setup_code_runs_between_code_and_asserts(data_dir):
    row = next(r for r in mbpp_rows(data_dir) if r["task_id"] == 367)
    program = build_program(row["code"], row)
    assert program.index("class Node") < program.index("root = Node(1)") < program.index("assert is_tree_balanced")


def test_the_all_tests_format_shows_every_assert_and_checks_the_same(data_dir):
    """`--answer-format code-block-all-tests` (lm-evaluation-harness's mbpp prompt shows all
    three asserts); the sanitized split, whose question column is `prompt`, loads with it."""
    one, every = get_task("code"), get_task("code", "code-block-all-tests")
    path = data_dir / "mbpp" / "sanitized" / "test.jsonl"
    (p1,), _ = load_problems(path, one, FieldMap(question="prompt"), limit=1)
    (pn,), _ = load_problems(path, every, FieldMap(question="prompt"), limit=1)
    asserts = pn.fields["test_list"]
    assert len(asserts) == 3 and all(t.strip() in pn.question for t in asserts)
    assert asserts[0].strip() in p1.question and asserts[1].strip() not in p1.question
    assert pn.question.startswith(p1.question.split("\n\n")[0])
    answer = f"```python\n{pn.reference}\n```"
    assert every.verify(answer, pn.fields).correct and one.verify(answer, p1.fields).correct
