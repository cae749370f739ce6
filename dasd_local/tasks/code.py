"""MBPP-shaped problems: write a Python function; it passes if the problem's asserts do.

Schema (MBPP full): `text`, `code`, `task_id`, `test_list`, `test_setup_code`,
`challenge_test_list`; the sanitized variant's `test_imports` is honoured too (its
question column is `prompt`: pass `--question-field prompt`). Following the MBPP
convention, the question shows the first test so that the function's name and
signature are known (`--answer-format code-block-all-tests`: all of them). Verification extracts the code from the response and runs it,
with the setup code and every assert of `test_list`, in `tasks.sandbox`.
"""

from __future__ import annotations

import ast
import builtins
import re
from dataclasses import replace

from .base import FieldMap, Task, Verdict
from .sandbox import Limits, run_python

_FENCE = re.compile(r"```[ \t]*([\w+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.S)
_PYTHON_TAGS = {"", "python", "python3", "py"}


def entry_point(test: str) -> str | None:
    """The first non-builtin function an assert calls: `assert f(x) == 1` -> "f"."""
    try:
        tree = ast.parse(test.strip())
    except SyntaxError:
        m = re.search(r"([A-Za-z_]\w*)\s*\(", test)
        return m.group(1) if m else None
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and not hasattr(builtins, node.func.id):
            return node.func.id
    return None


def extract_code(response: str, name: str | None = None) -> str:
    """The fenced Python block that defines `name` (else the first Python block; an
    unterminated fence runs to the end); with no fence at all, the whole response."""
    blocks = [body for tag, body in _FENCE.findall(response) if tag.lower() in _PYTHON_TAGS]
    if not blocks:
        return response.strip()
    if name:
        defining = [b for b in blocks if re.search(rf"^\s*def\s+{re.escape(name)}\s*\(", b, re.M)]
        blocks = defining or blocks
    return blocks[0].strip()


def build_program(code: str, fields: dict) -> str:
    """Imports, candidate code, setup, then the asserts: exit status 0 means pass."""
    parts = [*(fields.get("test_imports") or []), code, fields.get("test_setup_code") or "", *fields["test_list"]]
    return "\n".join(parts) + "\n"


class CodeTask(Task):
    name = "code"
    instruction = "Write the complete Python function in a single ```python code block."
    # code-block: the question shows the first assert (the MBPP paper's convention, which
    # names the function); code-block-all-tests: every assert of test_list, as
    # lm-evaluation-harness's `mbpp` prompt does. Either way all asserts are run.
    formats = {"code-block": instruction, "code-block-all-tests": instruction}
    answer_format, answer_marker = "code-block", b"```python"
    id_field = "task_id"
    question_field = "text"
    reference_field = "code"
    gold_fields = ("test_list",)
    gold_slots = {"test_list": "tests"}
    required_gold = ("test_list",)
    meta_fields = ("test_setup_code", "challenge_test_list", "test_imports")
    reference_ask = (
        "Here is a reference solution:\n\n```python\n{reference}\n```\n\n"
        "Now solve the problem yourself: explain your approach briefly in your own words, "
        "then give your complete code in a single ```python code block. "
        "Do not mention the reference solution."
    )

    def __init__(self, limits: Limits = Limits()):
        self.limits = limits

    def set_timeout(self, seconds: float) -> None:
        self.limits = replace(self.limits, timeout_s=seconds)

    def question(self, row: dict, fields: FieldMap) -> str:
        text = super().question(row, fields).strip()
        tests = [t.strip() for t in row.get(self.column("test_list", fields)) or []]
        if not tests:
            return text
        if self.answer_format == "code-block-all-tests" and len(tests) > 1:
            return f"{text}\n\nYour code should pass these tests:\n\n" + "\n".join(tests)
        return f"{text}\n\nYour code should pass this test:\n\n{tests[0]}"

    def reference(self, row: dict, fields: FieldMap) -> str:
        return super().reference(row, fields).replace("\r\n", "\n").strip()

    def verify(self, response: str, fields: dict) -> Verdict:
        tests = fields.get("test_list")
        if not tests:
            return Verdict(False, None, "no test_list")
        code = extract_code(response, entry_point(tests[0]))
        result = run_python(build_program(code, fields), self.limits)
        return Verdict(result.passed, code, result.status + (f": {result.detail}" if result.detail else ""))

