"""MATH-shaped problems: the final answer is the last \\boxed{}, checked by equivalence.

Schema (Hendrycks MATH, MATH-500): `problem`, `solution`, `answer`, `level`, `subject`
(or `type`), `unique_id`. When `answer` is absent it is taken from the solution's last
\\boxed{}. Two answers are equivalent when their normalised strings match (cheap, and
the only way for answers math-verify cannot parse, e.g. words or odd notation) or
when math-verify says so. math-verify runs in guarded worker processes (`tasks.guard`)
so that an expression like `10^{10^{10}}` costs a timeout, never a hung tool.
"""

from __future__ import annotations

import functools
import os
import re
import threading
from decimal import Decimal
from typing import Iterable, Iterator

from .base import FieldMap, Task, Verdict
from .guard import Guard, GuardCrash, GuardTimeout

MV_SECONDS = 5  # math-verify's own (SIGALRM) limit per parse/comparison, inside a worker
HARD_SECONDS = 30.0  # the worker is killed past this (several parses + comparisons)
ANSWER_IS_INSTRUCTION = 'Please reason step by step, and end with "The answer is" and the final answer.'
_BOXED = re.compile(r"\\(?:boxed|fbox)\b")
_PLAIN_NUMBER = re.compile(r"-?\d+(?:\.\d+)?$")


def last_boxed(text: str) -> str | None:
    """Content of the last \\boxed{...} / \\fbox{...} (brace-balanced), or of the
    brace-less form `\\boxed 5`; None when there is none or it is unterminated."""
    starts = [m.end() for m in _BOXED.finditer(text)]
    if not starts:
        return None
    i = starts[-1]
    rest = text[i:].lstrip()
    if not rest.startswith("{"):  # `\boxed 5$`: up to the end of the math or the line
        m = re.match(r"[^\s$]+", rest)
        return m.group(0) if m else None
    i = text.index("{", i) + 1
    depth = 1
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i:j]
    return None


_TOKEN = r"(\\[a-zA-Z]+|\w)"  # a one-token LaTeX argument: a control word or one character


def _space(m: re.Match) -> str:
    r"""Drop whitespace, except one space that ends a control word before a letter
    (`\pi r` must not become the unknown command `\pir`)."""
    return (m.group(1) or "") + (" " if m.group(1) and m.group(2).isalpha() else "")


def _thousands(m: re.Match) -> str:
    return m.group(0).replace(",", "")


# (pattern, replacement) applied in order; each removes notation that does not change a
# MATH answer under the dataset's own grading convention (units and percent signs are
# not part of the answer). tests/test_tasks_math.py checks every rewrite of a gold
# answer against math-verify. _NOTATION keeps the spacing (math-verify reads "45, 135"
# as a pair but "45,135" as a number); _CANONICAL then makes the comparison key.
_NOTATION = [
    (r",\s*\\!\s*(?=\d{3}(?!\d))", ""),  # 5,\!525 -> 5525 (MATH writes thousands so)
    (r"(?<!\\)\\(?:left|right|displaystyle|!|,|;|:|\s)", ""),  # not the `\\` row break
    (r"\\[dt]frac", r"\\frac"),
    (r"\^\s*\{\s*\\circ\s*\}|\^\s*\\circ|\\circ|\\degree", ""),
    (r"\\?%", ""),
    (r"\\\$|\$", ""),
    # a unit in \text{} after a value: `12\text{ square units}`; never a.m./p.m.
    (r"^(?=.*\d)(.*?\S)\s*\\(?:text|mbox|mathrm)\s*\{\s*(?![ap]\.?m\b)[a-zA-Z][a-zA-Z.\s]*\}(?:\^\d|\^\{\d\})?\s*$", r"\1"),
    (r"\\(?:text|textbf|textit|mbox|mathrm|mathbf)\s*\{([^{}]*)\}", r"\1"),
    (r"(?<=\d)\s*(?:units?|degrees?|cm|inches|feet|dollars|cents)\b(?:\^\d|\^\{\d\})?\s*$", ""),
    (r"\\frac\s*" + _TOKEN + r"\s*" + _TOKEN, r"\\frac{\1}{\2}"),  # \frac12 -> \frac{1}{2}
    (r"\\frac\s*(\{[^{}]*\})\s*" + _TOKEN, r"\\frac\1{\2}"),
    (r"\\sqrt\s*" + _TOKEN, r"\\sqrt{\1}"),
    (r"\s*\.\s*$", ""),  # a sentence's full stop: `\frac{1}{5} i.`
]
_CANONICAL = [
    (r"^-?\d{1,3}(?:,\d{3})+(?:\.\d+)?$", _thousands),  # 1,000 -> 1000, but not `45, 135`
    (r"(\\[a-zA-Z]+)?\s+(?=(.?))", _space),
    (r"^[a-zA-Z]\w*=(?=.)", ""),  # x=5 -> 5 (a single name on the left only)
    (r"(?<![\d.])\.(?=\d)", "0."),  # .5 -> 0.5
    (r"\d+\.\d+", lambda m: m.group(0).rstrip("0").rstrip(".")),  # 2.50 -> 2.5, 3.0 -> 3
    (r"^(-?\d+)/(\d+)$", r"\\frac{\1}{\2}"),  # 1/2 -> \frac{1}{2}
]
_NOTATION = [(re.compile(p), r) for p, r in _NOTATION]
_CANONICAL = [(re.compile(p), r) for p, r in _CANONICAL]


def _rewrite(s: str, rules: list) -> str:
    for pattern, repl in rules:
        s = pattern.sub(repl, s)
    return s


def clean_notation(answer: str) -> str:
    """The answer without formatting math-verify may misread (what it is retried on)."""
    return _rewrite(answer.strip(), _NOTATION)


def normalize(answer: str) -> str:
    """A canonical string for a short LaTeX answer (the string fallback's key)."""
    return _rewrite(clean_notation(answer), _CANONICAL)


def _meridiem(answer: str) -> str | None:
    m = re.search(r"\b([ap])\.?\s*m\b", answer, re.I)
    return m.group(1).lower() if m else None


def mv_equal(gold: str, pred: str, seconds: int = MV_SECONDS) -> bool:
    """math-verify's verdict on two boxed-answer strings (runs inside a guard worker)."""
    from math_verify import verify

    g, p = _mv_parse(gold, seconds), _mv_parse(pred, seconds)
    return bool(g and p and verify(list(g), list(p), timeout_seconds=seconds))


def mv_warmup() -> None:
    """Import sympy and math-verify before the first timed call (seconds of start-up)."""
    mv_equal("1", "1")


@functools.lru_cache(maxsize=8192)
def _mv_parse(answer: str, seconds: int) -> tuple:
    """Parsed once per worker: short answers ("2", "\\frac{1}{2}") recur across problems."""
    import logging

    from math_verify import parse

    logging.getLogger("math_verify").setLevel(logging.ERROR)  # its timeouts are ours to report
    return tuple(parse("\\boxed{" + answer + "}", parsing_timeout=seconds))


# "The answer is 12." / "the final answer is: $\\frac{1}{2}$" (the last one counts)
_ANSWER_IS = re.compile(r"\banswer\s*(?:is|:)\s*:?\s*", re.I)
_NUMBER_THEN_UNIT = re.compile(r"(-?\d[\d,]*(?:\.\d+)?)\s*[^\W\d][^\d=]*")  # "360 kilometres", "14 cm²"


def answer_phrase(text: str) -> str | None:
    """The answer after the last "answer is": a \\boxed{} in it, else the rest of its
    sentence without $ and **, after its last "=" ("The answer is 4 * 4 = 16."), and
    without trailing unit words; None when there is none."""
    hits = list(_ANSWER_IS.finditer(text))
    if not hits:
        return None
    rest = text[hits[-1].end():]
    sentence = re.match(r"(.*?)(?:\.(?=\s|$)|\n|$)", rest).group(1)
    if _BOXED.search(sentence):
        return last_boxed(sentence)
    answer = sentence.replace("$", "").replace("**", "").rsplit("=", 1)[-1].strip()
    number = _NUMBER_THEN_UNIT.fullmatch(answer)
    return number.group(1) if number else answer or None


class MathTask(Task):
    name = "math"
    formats = {
        "boxed": "Please reason step by step, and put your final answer within \\boxed{}.",
        # small models (the embedded SmolLM2-135M) end with this sentence but never box
        "answer-is": ANSWER_IS_INSTRUCTION,
    }
    id_field = "unique_id"
    question_field = "problem"
    reference_field = "solution"
    gold_fields = ("answer",)
    gold_slots = {"answer": "answer"}
    meta_fields = ("level", "subject", "type")

    def __init__(self, workers: int | None = None):
        self.use_format(None)
        self._workers = workers or os.cpu_count() or 1
        self._guard: Guard | None = None
        self._lock = threading.Lock()  # verify_many's threads share one guard

    def use_format(self, answer_format: str | None) -> "MathTask":
        super().use_format(answer_format)
        self.answer_marker = b"\\boxed{" if self.answer_format == "boxed" else b"answer is"
        return self

    def keep(self, row: dict, fields: FieldMap = FieldMap()) -> dict:
        kept = super().keep(row, fields)
        solution = row.get(fields.reference or self.reference_field)
        if kept.get("answer") is None and solution:
            said = answer_phrase(str(solution)) if self.answer_format == "answer-is" else None
            kept["answer"] = last_boxed(str(solution)) or said
        level = re.fullmatch(r"Level (\d)", str(kept.get("level")))  # the hub copies say "Level 3"
        if level:
            kept["level"] = int(level.group(1))
        return kept

    def equivalent(self, gold: str, pred: str, string_fallback: bool = True) -> tuple[bool, str]:
        """(equal, how): normalised strings first, then math-verify on the raw strings,
        then on cleaned notation (math-verify misreads e.g. `\\frac \\pi4` and `5 i.`)."""
        if not string_fallback:
            return self._math_verify(gold, pred)
        if normalize(gold) == normalize(pred):
            return True, "equal after normalisation"
        numbers = _PLAIN_NUMBER.match(gold.strip()), _PLAIN_NUMBER.match(pred.strip())
        if all(numbers):  # two plain numbers: exact, and no need to start sympy
            same = Decimal(numbers[0].group(0)) == Decimal(numbers[1].group(0))
            return same, "numbers " + ("equal" if same else "differ")
        times = _meridiem(gold), _meridiem(pred)
        if None not in times and times[0] != times[1]:  # math-verify drops \text{}: 9 a.m. == 9 p.m.
            return False, "a.m./p.m. differ"
        same, how = self._math_verify(gold, pred)
        clean = clean_notation(gold), clean_notation(pred)
        if not same and clean != (gold.strip(), pred.strip()):
            if self._math_verify(*clean)[0]:
                return True, "math-verify: equivalent after normalisation"
        return same, how

    def _math_verify(self, gold: str, pred: str) -> tuple[bool, str]:
        with self._lock:
            if self._guard is None:
                self._guard = Guard(f"{__name__}:mv_equal", HARD_SECONDS, workers=self._workers,
                                    warmup=f"{__name__}:mv_warmup")
            guard = self._guard
        try:
            same = guard(gold, pred)
        except GuardTimeout:
            return False, "math-verify timed out"
        except (GuardCrash, RuntimeError) as e:
            return False, f"math-verify failed: {e}"
        return same, "math-verify: " + ("equivalent" if same else "not equivalent")

    def verify(self, response: str, fields: dict) -> Verdict:
        gold = fields.get("answer")
        if gold is None or not str(gold).strip():
            return Verdict(False, None, "no gold answer")
        got = last_boxed(response) if self.answer_format == "boxed" else answer_phrase(response)
        if got is None or not got.strip():
            return Verdict(False, got, "no \\boxed{} answer" if self.answer_format == "boxed" else 'no "The answer is"')
        same, how = self.equivalent(str(gold), got)
        return Verdict(same, got, how)

    def verify_many(self, items: Iterable[tuple[str, dict]], workers: int = 1) -> Iterator[Verdict]:
        self._workers = max(self._workers, workers)
        return super().verify_many(items, workers)

    def close(self) -> None:
        with self._lock:
            guard, self._guard = self._guard, None
        if guard is not None:
            guard.close()
