"""The decode loop's state and what it writes: views in the cache, problems in flight, the
rows of one decode call, counters, and the step and problem records built from them.

Knows rules' Picks and a record's layout; knows nothing about the engine's internals.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, NamedTuple

from ..schema import CATEGORIES
from ..tasks import Problem
from . import rules
from .draft import DraftLength, NgramIndex
from .views import Views


class Want(NamedTuple):
    """Which logits row a decode entry asks for: problem slot, view ("b"/"r"), draft row."""

    slot: int
    view: str
    row: int


class Entry(NamedTuple):
    """One token of one decode call."""

    token: int
    pos: int
    seq: int
    want: Want | None = None  # None: prefill, no logits wanted


@dataclass
class View:
    """One view's sequence: prompt tokens, how many are in the KV cache, the next token to feed."""

    seq: int
    prompt: list[int]
    fed: int = 0  # positions already in the KV cache
    ready: bool = False  # prompt (all but its last token) is in the cache
    borrowed: int = 0  # leading positions copied from another sequence (shared cells in a unified cache)

    @property
    def next_token(self) -> int:
        return self.prompt[-1]


@dataclass
class Slot:
    problem: Problem
    views: Views
    b: View
    r: View | None
    response: list[int] = field(default_factory=list)
    steps: list[dict] = field(default_factory=list)
    text: bytes = b""
    boxed: bool = False
    finish: str | None = None
    stop_step: dict | None = None
    lookup: NgramIndex | None = None  # n-grams of the reference view's text, for drafting
    dlen: DraftLength = field(default_factory=DraftLength)
    draft: list[int] = field(default_factory=list)
    rng: object = None  # numpy Generator of a sampled (published) form: this problem's draws
    shared: int = 0  # leading prompt tokens R takes from B's cache (computed once, at admission)
    twins: int = 0  # hash of the two prompts: problems with equal ones (samples of one problem) share them

    @property
    def decoding(self) -> bool:
        return self.b.ready and (self.r is None or self.r.ready)

    def place(self, index: int) -> None:
        """Take the sequence ids of slot `index`: 2i for B, 2i+1 for R (i alone without R)."""
        if self.r is None:
            self.b.seq = index
        else:
            self.b.seq, self.r.seq = 2 * index, 2 * index + 1

    def need(self, max_new: int, shared: int = 0) -> tuple[int, int]:
        """kv_need of this problem, counted from the prompts as built (a view's token list
        grows as tokens are emitted)."""
        return kv_need(self.views, max_new, self.r is None, shared)

    def held(self, unified: bool) -> int:
        """KV cells this problem holds now; a unified cache stores copied prefixes once."""
        return sum(v.fed - (v.borrowed if unified else 0) for v in (self.b, self.r) if v is not None)


def kv_need(views: Views, max_new: int, base_only: bool = False, shared: int = 0) -> tuple[int, int]:
    """The KV cells one problem may need at most (both views' prompts and `max_new` tokens
    each; `shared`: prompt cells both views hold once, in a unified cache) and its longest
    view (what one sequence must hold). The one count that sizes the context (session.py)
    and admits problems into it (loop.py)."""
    base = len(views.base_tokens) + max_new
    ref = 0 if base_only else len(views.ref_tokens) + max_new
    return base + ref - (0 if base_only else shared), max(base, ref)


@dataclass
class Failed:
    problem: Problem
    error: str


@dataclass
class Loop:
    """All state of one `Decoder.run`: the problems still to come, the slots in flight, and
    an admitted problem that waits for KV cells."""

    todo: Iterator[Problem]
    slots: list[Slot | None]
    waiting: Slot | None = None


@dataclass
class Stats:
    decode_calls: int = 0
    rows: int = 0  # entries carried by decode calls
    emitted: int = 0
    drafted: int = 0
    accepted: int = 0
    finished: int = 0
    peak_cells: int = 0  # most KV cells the problems in flight held at once
    decode_seconds: float = 0.0  # wall time inside the engine's decode calls (llama.cpp, logits copied out)
    categories: dict = field(default_factory=lambda: {c: 0 for c in CATEGORIES})


def step_record(picks: rules.Picks, row: int, piece: bytes, candidates: bool) -> dict:
    """One emitted token's record: the choice, its category and both views' numbers."""
    cat = int(picks.category[row])
    step = {
        "token": int(picks.token[row]),
        "text": piece.decode("utf-8", "replace"),
        "category": CATEGORIES[cat] if cat >= 0 else None,
        "p_base": float(picks.p_base[row]),
        "p_ref": None if picks.p_ref is None else float(picks.p_ref[row]),
        "ref_rank": None if picks.ref_rank is None else int(picks.ref_rank[row]),
        "argmax_base": int(picks.argmax_base[row]),
        "argmax_ref": None if picks.argmax_ref is None else int(picks.argmax_ref[row]),
    }
    if candidates and picks.cand is not None:
        p_ref = [None] * len(picks.cand[row]) if picks.cand_p_ref is None else picks.cand_p_ref[row]
        step["candidates"] = [[int(t), None if pr is None else float(pr), float(pb)]
                              for t, pr, pb in zip(picks.cand[row], p_ref, picks.cand_p_base[row])]
    return step


def problem_record(slot: Slot, task, cfg, response_text: str) -> dict:
    """The finished problem's record (one JSONL line of `generate`)."""
    v = slot.views
    return {
        "id": slot.problem.id,
        "task": task.name,
        "answer_format": task.answer_format,
        "strategy": cfg.strategy,
        "config": cfg.record_config(),
        "question": slot.problem.question,
        "reference_solution": slot.problem.reference,
        **slot.problem.fields,
        "base_prompt": v.base_text,
        "reference_prompt": None if cfg.base_only else v.ref_text,
        "base_prompt_tokens": v.base_tokens,
        "reference_prompt_tokens": None if cfg.base_only else v.ref_tokens,
        "response": response_text,
        "response_tokens": slot.response,
        "finish_reason": slot.finish,
        "steps": slot.steps,
        "stop_step": slot.stop_step,
    }
