"""The embedded demo problem set: short arithmetic word problems with worked solutions.

Written by the project itself (deterministically, from templates and a seeded RNG) in
the MATH schema, so `dasd-local generate` runs with no data at all. The solutions end
with "The answer is N." and the demo uses the math task's `answer-is` format: the
embedded SmolLM2-135M ends its answers with that sentence and never writes \\boxed{}.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

from .records import atomic_write_text

N_PER_TEMPLATE = 6
ANSWER_FORMAT = "answer-is"


def _apples(r):
    a, b, c = r.randint(2, 9), r.randint(2, 5), r.randint(3, 8)
    q = f"Sam has {a} apples. He buys {b} bags with {c} apples in each bag. How many apples does he have now?"
    s = f"The bags hold {b} \\times {c} = {b * c} apples. Together with the {a} he had, Sam has {a} + {b * c} = {a + b * c} apples. The answer is {a + b * c}."
    return q, s, a + b * c


def _train(r):
    v, h = r.choice([40, 50, 60, 75, 80, 90]), r.randint(2, 6)
    q = f"A train travels at {v} kilometres per hour for {h} hours. How many kilometres does it travel?"
    s = f"Distance is speed times time: {v} \\times {h} = {v * h} kilometres. The answer is {v * h}."
    return q, s, v * h


def _change(r):
    n, p = r.randint(2, 6), r.randint(2, 9)
    bill = 50 if n * p < 50 else 100
    q = f"Mia buys {n} notebooks that cost ${p} each and pays with a ${bill} bill. How much change does she get, in dollars?"
    s = f"The notebooks cost {n} \\times {p} = {n * p} dollars. Her change is {bill} - {n * p} = {bill - n * p} dollars. The answer is {bill - n * p}."
    return q, s, bill - n * p


def _rectangle(r):
    w, h = r.randint(3, 12), r.randint(3, 12)
    q = f"A rectangle is {w} cm wide and {h} cm long. What is its perimeter in centimetres?"
    s = f"The perimeter is twice the sum of the sides: 2 \\times ({w} + {h}) = 2 \\times {w + h} = {2 * (w + h)} cm. The answer is {2 * (w + h)}."
    return q, s, 2 * (w + h)


def _share(r):
    k, each = r.randint(3, 8), r.randint(4, 12)
    t = k * each
    q = f"{t} cookies are shared equally among {k} friends. How many cookies does each friend get?"
    s = f"Each friend gets {t} \\div {k} = {each} cookies. The answer is {each}."
    return q, s, each


def _ages(r):
    a, d, y = r.randint(5, 14), r.randint(2, 9), r.randint(2, 10)
    total = (a + y) + (a + d + y)
    q = f"Tom is {a} years old and his sister is {d} years older than Tom. What will the sum of their ages be in {y} years?"
    s = (f"His sister is {a} + {d} = {a + d} years old. In {y} years Tom will be {a + y} and his sister {a + d + y}, "
         f"so the sum is {a + y} + {a + d + y} = {total}. The answer is {total}.")
    return q, s, total


TEMPLATES = [("apples", _apples), ("train", _train), ("change", _change),
             ("rectangle", _rectangle), ("share", _share), ("ages", _ages)]


def demo_rows(seed: int = 0) -> list[dict]:
    r = random.Random(seed)
    rows = []
    for i in range(N_PER_TEMPLATE):
        for name, make in TEMPLATES:
            q, s, ans = make(r)
            rows.append({"unique_id": f"demo/{name}/{i}", "problem": q, "solution": s, "answer": str(ans),
                         "level": 1, "subject": "Arithmetic"})
    return rows


def demo_path() -> Path:
    """The demo set, written on first use under DASD_HOME (default ~/.cache/dasd-local)."""
    home = Path(os.environ.get("DASD_HOME", Path.home() / ".cache" / "dasd-local"))
    path = home / "demo" / "math_demo.jsonl"
    text = "".join(json.dumps(row) + "\n" for row in demo_rows())
    if not path.exists() or path.read_text(encoding="utf-8") != text:  # written by an older version
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, text)
    return path
