"""What every task shares: a problem, a verdict, dataset column names, and the Task base.

A task knows its dataset schema (which fields hold the question, the reference
solution, the id and the gold data that verification needs), the answer-format
instruction, and how to verify a response. It knows nothing about models.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Iterator


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
    """Dataset column names; None means the task's default."""

    id: str | None = None
    question: str | None = None
    reference: str | None = None


REFERENCE_ASK = (
    "Here is a reference solution to the problem:\n\n{reference}\n\n"
    "Now solve the problem yourself, step by step, in your own words. "
    "Do not mention the reference solution."
)


class Task:
    """Base class; subclasses set the class attributes and override `verify`."""

    name = ""
    instruction = ""
    id_field = "id"
    question_field = "question"
    reference_field = "solution"
    gold_fields: tuple[str, ...] = ()  # required for verification
    meta_fields: tuple[str, ...] = ()  # kept when present (level, subject ...)
    reference_ask = REFERENCE_ASK  # how the reference view presents the gold solution

    def question(self, row: dict, fields: FieldMap) -> str:
        return str(row[fields.question or self.question_field])

    def reference(self, row: dict, fields: FieldMap) -> str:
        return str(row[fields.reference or self.reference_field])

    def required(self, fields: FieldMap) -> list[str]:
        """Columns a row must have."""
        return [fields.question or self.question_field, fields.reference or self.reference_field]

    def base_user(self, problem: Problem) -> str:
        """The base view's user message: question and answer-format instruction."""
        return f"{problem.question}\n\n{self.instruction}".strip()

    def reference_user(self, problem: Problem) -> str:
        """The reference view: the base message with the gold solution appended, so the
        two views share the longest possible token prefix."""
        return self.base_user(problem) + "\n\n" + self.reference_ask.format(reference=problem.reference)

    def keep(self, row: dict) -> dict:
        return {k: row[k] for k in (*self.gold_fields, *self.meta_fields) if k in row}

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
