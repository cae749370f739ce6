"""What every task shares: a problem, a verdict, dataset column names, and the Task base.

A task knows its dataset schema (which fields hold the question, the reference
solution, the id and the gold data that verification needs), the answer-format
instruction, and how to verify a response. It knows nothing about models.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Iterator

from ..errors import ConfigError


@dataclass(frozen=True)
class Problem:
    id: str
    question: str  # the text both views see
    reference: str  # the gold solution, shown to the reference view only
    fields: dict = field(default_factory=dict)  # gold/meta fields carried into records


@dataclass(frozen=True)
class Verdict:
    correct: bool
    extracted: str | None
    detail: str = ""


@dataclass(frozen=True)
class FieldMap:
    """Dataset column names; None means the task's default. `answer`, `choices` and
    `tests` name the gold columns verification needs (math: answer; mcq: answerKey and
    choices; code: test_list); records carry them under the task's own names, so
    `verify` needs no column options."""

    id: str | None = None
    question: str | None = None
    reference: str | None = None
    answer: str | None = None
    choices: str | None = None
    tests: str | None = None

    def option(self, slot: str) -> str:
        """The CLI option that sets a slot: 'question' -> '--question-field'."""
        return f"--{slot}-field"


REFERENCE_ASK = (
    "Here is a reference solution to the problem:\n\n{reference}\n\n"
    "Now solve the problem yourself, step by step, in your own words. "
    "Do not mention the reference solution."
)


class Task:
    """Base class; subclasses set the class attributes and override `verify`."""

    name = ""
    # answer format -> the instruction that asks for it (the first is the default); one
    # format is used alike by both views, extraction in `verify`, and evaluation
    formats: dict[str, str] = {}
    answer_format = ""
    instruction = ""
    answer_marker = b""  # bytes after which the answer follows (hinted decoding's switch)
    id_field = "id"
    question_field = "question"
    reference_field = "solution"
    gold_fields: tuple[str, ...] = ()  # required for verification
    gold_slots: dict[str, str] = {}  # gold field -> the FieldMap slot that renames its column
    required_gold: tuple[str, ...] = ()  # gold fields a dataset row must have to be decoded
    meta_fields: tuple[str, ...] = ()  # kept when present (level, subject ...)
    reference_ask = REFERENCE_ASK  # how the reference view presents the gold solution

    def use_format(self, answer_format: str | None) -> "Task":
        """Ask for (and extract) answers in `answer_format` (None: the task's default)."""
        fmt = answer_format or next(iter(self.formats), "")
        if self.formats and fmt not in self.formats:
            raise ConfigError(f"--answer-format {fmt} is not allowed for task {self.name}: "
                              f"expected {' or '.join(self.formats)}")
        self.answer_format, self.instruction = fmt, self.formats.get(fmt, self.instruction)
        return self

    def schema(self) -> str:
        """The columns this task reads, for --help and error messages."""
        cols = [f"{self.id_field} (id)", f"{self.question_field} (question)",
                f"{self.reference_field} (reference solution)", *self.gold_fields]
        return ", ".join(dict.fromkeys(cols))

    def question(self, row: dict, fields: FieldMap) -> str:
        return str(row[fields.question or self.question_field])

    def reference(self, row: dict, fields: FieldMap) -> str:
        return str(row[fields.reference or self.reference_field])

    def column(self, name: str, fields: FieldMap) -> str:
        """The data's column for gold field `name` (its own name unless a slot renames it)."""
        slot = self.gold_slots.get(name)
        return (getattr(fields, slot) if slot else None) or name

    def slots(self, fields: FieldMap) -> dict[str, str]:
        """Column -> the FieldMap slot naming it, for every column a row must have: the
        question, the reference, the task's required gold fields and any column named by an option."""
        out = {fields.question or self.question_field: "question"}
        for name, slot in self.gold_slots.items():
            if name in self.required_gold or getattr(fields, slot):
                out.setdefault(self.column(name, fields), slot)
        out.setdefault(fields.reference or self.reference_field, "reference")
        return out

    def required(self, fields: FieldMap) -> list[str]:
        """Columns a row must have."""
        return list(self.slots(fields))

    def base_user(self, problem: Problem) -> str:
        """The base view's user message: question and answer-format instruction."""
        return f"{problem.question}\n\n{self.instruction}".strip()

    def reference_user(self, problem: Problem) -> str:
        """The reference view: the base message with the gold solution appended, so the
        two views share the longest possible token prefix."""
        return self.base_user(problem) + "\n\n" + self.reference_ask.format(reference=problem.reference)

    def keep(self, row: dict, fields: FieldMap = FieldMap()) -> dict:
        """Gold and meta fields to carry into records, under the task's own names."""
        names = (*self.gold_fields, *self.meta_fields)
        return {k: row[self.column(k, fields)] for k in names if self.column(k, fields) in row}

    def verify(self, response: str, fields: dict) -> Verdict:
        raise NotImplementedError

    def verify_many(self, items: Iterable[tuple[str, dict]], workers: int = 1) -> Iterator[Verdict]:
        """Verdicts for (response, fields) pairs, in order. Threads suffice for the slow
        checks: they wait on subprocesses (code) or guarded workers (math)."""
        if workers <= 1:
            return (self.verify(r, f) for r, f in items)
        from concurrent.futures import ThreadPoolExecutor

        pool = ThreadPoolExecutor(workers, thread_name_prefix=f"verify-{self.name}")
        return _ordered_then_close(pool, pool.map(lambda item: self.verify(*item), items))

    def missing_gold(self, record: dict) -> str | None:
        """The first gold field a record lacks (verification cannot judge it), or None."""
        return next((k for k in self.gold_fields if record.get(k) is None), None)

    def set_timeout(self, seconds: float) -> None:
        """Wall-clock limit for checking one response, where checking runs code."""

    def close(self) -> None:
        """Release verification resources (worker processes); the task stays usable."""


def _ordered_then_close(pool, results: Iterator[Verdict]) -> Iterator[Verdict]:
    try:
        yield from results
    finally:
        pool.shutdown(cancel_futures=True)
