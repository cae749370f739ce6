"""The dual-view decode loop: admit problems, step all sequences in one call, select, record.

Each problem in flight owns two sequence ids in the engine's one context: B (base view)
and R (reference view). Every iteration makes ONE `Engine.decode` call that carries the
pending token of every decoding view plus chunks of prompts still being prefilled
(continuous batching); the strategy's rule (rules.py) then picks one token per ready
problem from the two views' logits and that token is fed to both views next time.
Knows the engine's narrow surface and the rules; knows nothing about files or the CLI.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Callable, Iterable, Iterator

import numpy as np

from . import rules
from .errors import ConfigError
from .draft import DraftLength, NgramIndex
from .prompts import ViewBuilder, Views, shared_prefix
from .tasks import Problem, Task

BOXED = b"\\boxed{"
# shortest prefix worth taking from another problem's cache (a split cache copies a whole stream)
MIN_SHARED = 16


@dataclass(frozen=True)
class DecodeConfig:
    strategy: str = field(default="dasd", metadata={"help": "dasd | self-distill | base | hint"})
    top_k: int = field(default=6, metadata={"help": "reference candidates K"})
    tau: float = field(default=0.2, metadata={"help": "base-view probability a candidate needs"})
    hard_mode: str = field(default="ref", metadata={"help": "no candidate passes: ref (C[0]) | base (argmax p_B)"})
    hint_beta: float = field(default=3.0, metadata={"help": "hinted decoding's entropy scale"})
    max_new_tokens: int = field(default=512, metadata={"help": "response length limit"})
    batch: int = field(default=16, metadata={"help": "problems in flight"})
    step_tokens: int = field(default=512, metadata={"help": "most tokens one decode call carries"})
    record_candidates: bool = field(default=False, metadata={"help": "store each step's K candidates"})
    base_only: bool = field(default=False, metadata={"help": "decode the base view alone (strategy base)"})
    share_prefix: bool = field(default=True, metadata={"help": "prefill the views' common prefix once"})
    speculate: str = field(default="auto", metadata={"help": "prompt-lookup drafts: on | off | auto"})
    draft_max: int = field(default=8, metadata={"help": "most drafted tokens per problem and step"})
    ngram: int = field(default=3, metadata={"help": "longest suffix matched when drafting"})
    # measured on a 2-core CPU (scripts/bench_generate.py): drafts cost more rows than they
    # save even at batch 1 (on/off 0.93x), so the CLI sets 0 there and 512 with GPU offload
    spec_rows: int = field(default=0, metadata={"help": "auto: draft only while a decode call has fewer rows"})

    def __post_init__(self):
        checks = [
            (self.strategy in rules.STRATEGIES, "strategy", f"one of {', '.join(rules.STRATEGIES)}"),
            (self.top_k >= 1, "top_k", ">= 1"),
            (0.0 <= self.tau <= 1.0, "tau", "in [0, 1]"),
            (self.hard_mode in ("ref", "base"), "hard_mode", "ref or base"),
            (self.hint_beta >= 0, "hint_beta", ">= 0"),
            (self.max_new_tokens >= 1, "max_new_tokens", ">= 1"),
            (1 <= self.batch <= 128, "batch", "in [1, 128]"),
            (self.step_tokens >= 2 * self.batch, "step_tokens", f">= 2 x batch = {2 * self.batch}"),
            (not self.base_only or self.strategy == "base", "base_only", "only with strategy base"),
            (self.speculate in ("on", "off", "auto"), "speculate", "on, off or auto"),
            (0 <= self.draft_max <= 64, "draft_max", "in [0, 64]"),
            (self.ngram >= 1, "ngram", ">= 1"),
        ]
        for ok, name, legal in checks:
            if not ok:
                raise ConfigError(f"{name} = {getattr(self, name)!r} is not allowed: expected {legal}")

    def rule(self) -> rules.RuleConfig:
        return rules.RuleConfig(self.top_k, self.tau, self.hard_mode, self.hint_beta)

    def record_config(self) -> dict:
        """The part of the config that decides the output (goes into every record)."""
        keys = ("strategy", "top_k", "tau", "hard_mode", "hint_beta", "max_new_tokens")
        return {k: v for k, v in asdict(self).items() if k in keys}


@dataclass
class View:
    """One view's sequence: prompt tokens, how many are in the KV cache, the next token to feed."""

    seq: int
    prompt: list[int]
    fed: int = 0  # positions already in the KV cache
    ready: bool = False  # prompt (all but its last token) is in the cache

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

    @property
    def decoding(self) -> bool:
        return self.b.ready and (self.r is None or self.r.ready)

    def place(self, index: int) -> None:
        """Take the sequence ids of slot `index`: 2i for B, 2i+1 for R (i alone without R)."""
        if self.r is None:
            self.b.seq = index
        else:
            self.b.seq, self.r.seq = 2 * index, 2 * index + 1

    def cells(self, max_new: int) -> int:
        """KV cells this problem may need at most."""
        n = len(self.b.prompt) + max_new
        return n + (len(self.r.prompt) + max_new if self.r else 0)


@dataclass
class Stats:
    decode_calls: int = 0
    rows: int = 0  # entries carried by decode calls
    emitted: int = 0
    drafted: int = 0
    accepted: int = 0
    finished: int = 0
    categories: dict = field(default_factory=lambda: {c: 0 for c in rules.CATEGORIES})


@dataclass
class Failed:
    problem: Problem
    error: str


class Decoder:
    """Runs problems through the engine under one DecodeConfig; `run` yields a finished
    record (dict) or a Failed per problem, in completion order."""

    def __init__(self, engine, task: Task, config: DecodeConfig, system: str | None = None):
        self.engine, self.task, self.cfg = engine, task, config
        self.builder = ViewBuilder(engine, task, system)
        self.rule = config.rule()
        self.stats = Stats()
        views = 1 if config.base_only else 2
        if engine.config.n_seq_max < views:
            raise ConfigError(f"one problem needs n_seq_max >= {views}, engine has {engine.config.n_seq_max}")
        # problems in flight: the configured batch, or fewer when the engine was sized for
        # fewer (a run with fewer problems than --batch)
        self.slots = min(config.batch, engine.config.n_seq_max // views)
        if engine.config.n_batch < config.step_tokens:
            raise ConfigError(f"step_tokens {config.step_tokens} exceeds the engine's n_batch {engine.config.n_batch}")

    # ---- admission -------------------------------------------------------------------

    def _admit(self, problem: Problem) -> Slot | Failed:
        views = self.builder.views(problem)
        b = View(-1, list(views.base_tokens))  # copies: views grow as tokens are emitted
        r = None if self.cfg.base_only else View(-1, list(views.ref_tokens))
        slot = Slot(problem, views, b, r, lookup=NgramIndex((r or b).prompt, self.cfg.ngram),
                    dlen=DraftLength(self.cfg.draft_max // 2, self.cfg.draft_max))
        limit = min(self.engine.seq_cells, self.engine.n_ctx_train)
        longest = max(len(b.prompt), len(r.prompt) if r else 0) + self.cfg.max_new_tokens
        if slot.cells(self.cfg.max_new_tokens) > self.engine.config.n_ctx or longest > limit:
            return Failed(problem, f"prompt ({len(b.prompt)}/{len(r.prompt) if r else 0} tokens) + "
                                   f"max_new_tokens {self.cfg.max_new_tokens} does not fit the context "
                                   f"({self.engine.seq_cells} cells per sequence, trained for {self.engine.n_ctx_train})")
        return slot

    # ---- one iteration ------------------------------------------------------------------

    def _prefill_entries(self, slot: Slot, budget: int, entries: list) -> int:
        """Queue prompt chunks (all but each view's last token); returns tokens queued."""
        used = 0
        for view in (slot.r, slot.b):  # R first: it may only share what B cached in earlier calls
            if view is None or view.ready:
                continue
            if view is slot.r and self.cfg.share_prefix and view.fed == 0:
                shared = min(shared_prefix(slot.b.prompt, view.prompt), len(slot.b.prompt) - 1, len(view.prompt) - 1)
                if shared > 0 and slot.b.fed < shared:
                    continue  # wait until B has the common prefix in the cache, then share it
                if shared > 0:
                    self.engine.copy(slot.b.seq, view.seq, 0, shared)
                    view.fed = shared
            end = min(len(view.prompt) - 1, view.fed + budget - used)
            for p in range(view.fed, end):
                entries.append((view.prompt[p], p, view.seq, False, None))
            used += end - view.fed
            view.fed = end
            view.ready = view.fed == len(view.prompt) - 1
        return used

    def _draft_allowance(self, n_ready: int) -> int:
        """Draft tokens each decoding problem may add this step. `auto` fills the decode call
        up to `spec_rows` rows: on a compute-bound CPU with a full batch that is none."""
        if self.cfg.speculate == "off" or n_ready == 0:
            return 0
        views = 1 if self.cfg.base_only else 2
        room = self.cfg.step_tokens // (n_ready * views) - 1
        if self.cfg.speculate == "auto":
            room = min(room, self.cfg.spec_rows // (n_ready * views) - 1)
        return max(0, min(room, self.cfg.draft_max))

    def _entries(self, slots: list[Slot]) -> list:
        """Decode rows of ready problems (next token + draft) first, then prefill chunks in
        the remaining budget. Wanted entries carry (slot index, view, row in draft)."""
        entries = []
        ready = [i for i, s in enumerate(slots) if s is not None and s.decoding]
        allowance = self._draft_allowance(len(ready))
        for i in ready:
            s = slots[i]
            d = min(allowance, s.dlen.value, self.cfg.max_new_tokens - len(s.response) - 1)
            s.draft = s.lookup.draft(d) if d > 0 else []
            for name, view in (("b", s.b), ("r", s.r)):
                if view is not None:
                    for j, tok in enumerate([view.next_token, *s.draft]):
                        entries.append((tok, view.fed + j, view.seq, True, (i, name, j)))
        budget = self.cfg.step_tokens - len(entries)
        cached = [(s.b.prompt, s.b.fed, s.b.seq) for s in slots if s is not None and s.b.fed > 0]
        for s in slots:
            if budget <= 0:
                break
            if s is not None and not s.decoding:
                if self.cfg.share_prefix and s.b.fed == 0:
                    self._share_opening(s, cached)
                budget -= self._prefill_entries(s, budget, entries)
        return entries

    def _share_opening(self, slot: Slot, cached: list) -> None:
        """Start a new problem's B view from the longest prefix that another problem's B
        view has in the cache (from earlier calls): every prompt opens with the same chat
        template text (system prompt, role markers), so that part is never prefilled twice."""
        limit = len(slot.b.prompt) - 1
        best, donor = 0, None
        for prompt, fed, seq in cached:
            n = min(shared_prefix(prompt, slot.b.prompt), fed, limit)
            if n > best:
                best, donor = n, seq
        if best >= MIN_SHARED:
            self.engine.copy(donor, slot.b.seq, 0, best)
            slot.b.fed = best

    def _select(self, slots: list[Slot], entries: list, logits: np.ndarray) -> None:
        """Apply the rule to every wanted row at once, then walk each problem's draft."""
        wanted = [e[4] for e in entries if e[3]]
        row_of = {(i, v, j): n for n, (i, v, j) in enumerate(wanted)}
        keys = [(i, j) for (i, v, j) in wanted if v == "b"]
        lb = logits[[row_of[(i, "b", j)] for i, j in keys]]
        lr = None if self.cfg.base_only else logits[[row_of[(i, "r", j)] for i, j in keys]]
        phase = np.array([self._hint_phase(slots[i], j) for i, j in keys])
        picks = rules.choose(self.cfg.strategy, lb, lr, self.rule, phase, self.cfg.record_candidates)
        first = {}
        for n, (i, j) in enumerate(keys):
            first.setdefault(i, n)  # a problem's rows are consecutive, in draft order
        for i, n in first.items():
            self._accept(slots[i], picks, n)

    def _hint_phase(self, slot: Slot, j: int) -> int:
        """Hinted decoding's phase at draft row j: R alone first, B alone after \\boxed{."""
        if self.cfg.strategy != "hint":
            return rules.HINT_MIX
        if not slot.response and j == 0:
            return rules.HINT_REF
        text = slot.text + b"".join(self.engine.token_text(t, special=False) for t in slot.draft[:j])
        return rules.HINT_BASE if BOXED in text else rules.HINT_MIX

    def _accept(self, slot: Slot, picks: rules.Picks, row: int) -> None:
        """Emit the rule's picks while they confirm the draft; the first pick that differs
        from the draft (or follows the whole draft) is emitted too. Rejected positions leave
        both views' KV cache."""
        emitted = []
        for j in range(len(slot.draft) + 1):
            tok = int(picks.token[row + j])
            emitted.append(tok)
            self._emit(slot, picks, row + j, tok)
            if slot.finish or j == len(slot.draft) or tok != slot.draft[j]:
                break
        accepted = len(emitted) - 1  # draft tokens confirmed (and kept in the cache)
        for view in (slot.b, slot.r):
            if view is not None:
                view.fed += len(emitted)
                view.prompt.extend(emitted)  # the last emitted token is the next one fed
                if len(slot.draft) > accepted and not slot.finish:
                    self.engine.drop(view.seq, view.fed, -1)
        slot.lookup.extend(emitted)
        slot.dlen.update(len(slot.draft), accepted)
        self.stats.drafted += len(slot.draft)
        self.stats.accepted += accepted

    def _emit(self, slot: Slot, picks: rules.Picks, row: int, tok: int) -> None:
        piece = self.engine.token_text(tok, special=False)
        step = self._step_record(picks, row, piece)
        if self.engine.is_eog(tok):
            slot.finish, slot.stop_step = "stop", step  # recorded apart: not part of the response
            return
        slot.response.append(tok)
        slot.steps.append(step)
        slot.text += piece
        slot.boxed = slot.boxed or BOXED in slot.text
        self.stats.emitted += 1
        if step["category"] is not None:
            self.stats.categories[step["category"]] += 1
        if len(slot.response) >= self.cfg.max_new_tokens:
            slot.finish = "length"

    def _step_record(self, picks: rules.Picks, row: int, piece: bytes) -> dict:
        cat = int(picks.category[row])
        step = {
            "token": int(picks.token[row]),
            "text": piece.decode("utf-8", "replace"),
            "category": rules.CATEGORIES[cat] if cat >= 0 else None,
            "p_base": float(picks.p_base[row]),
            "p_ref": None if picks.p_ref is None else float(picks.p_ref[row]),
            "ref_rank": None if picks.ref_rank is None else int(picks.ref_rank[row]),
            "argmax_base": int(picks.argmax_base[row]),
            "argmax_ref": None if picks.argmax_ref is None else int(picks.argmax_ref[row]),
        }
        if self.cfg.record_candidates and picks.cand is not None:
            p_ref = [None] * len(picks.cand[row]) if picks.cand_p_ref is None else picks.cand_p_ref[row]
            step["candidates"] = [[int(t), None if pr is None else float(pr), float(pb)]
                                  for t, pr, pb in zip(picks.cand[row], p_ref, picks.cand_p_base[row])]
        return step

    # ---- the loop -----------------------------------------------------------------------

    def _record(self, slot: Slot) -> dict:
        v = slot.views
        return {
            "id": slot.problem.id,
            "task": self.task.name,
            "strategy": self.cfg.strategy,
            "config": self.cfg.record_config(),
            "question": slot.problem.question,
            "reference_solution": slot.problem.reference,
            **slot.problem.fields,
            "base_prompt": v.base_text,
            "reference_prompt": None if self.cfg.base_only else v.ref_text,
            "base_prompt_tokens": v.base_tokens,
            "reference_prompt_tokens": None if self.cfg.base_only else v.ref_tokens,
            "response": self.engine.detokenize(slot.response),
            "response_tokens": slot.response,
            "finish_reason": slot.finish,
            "steps": slot.steps,
            "stop_step": slot.stop_step,
        }

    def _release(self, slot: Slot) -> None:
        for view in (slot.b, slot.r):
            if view is not None:
                self.engine.drop(view.seq)

    def _reserve(self, slot: Slot) -> int:
        """Cells of the shared pool a problem holds; a split cache gives every slot its own
        streams, so there is nothing to reserve."""
        return slot.cells(self.cfg.max_new_tokens) if self.engine.config.kv_unified else 0

    def _fill(self, slots: list, todo: Iterator[Problem]) -> Iterator[Failed]:
        """Admit problems into free slots while their worst-case KV cells fit the cache."""
        reserved = sum(self._reserve(s) for s in slots if s is not None)
        for i in range(len(slots)):
            while slots[i] is None:
                if self._waiting is None:
                    problem = next(todo, None)
                    if problem is None:
                        return
                    self._waiting = self._admit(problem)
                    if isinstance(self._waiting, Failed):
                        yield self._waiting
                        self._waiting = None
                        continue
                need = self._reserve(self._waiting)
                if reserved + need > self.engine.config.n_ctx:
                    return  # wait for a running problem to free its cells
                slots[i], self._waiting = self._waiting, None
                slots[i].place(i)
                reserved += need

    def _step(self, slots: list) -> None:
        entries = self._entries(slots)
        if not entries:
            return
        logits = self.engine.decode([e[0] for e in entries], [e[1] for e in entries],
                                    [e[2] for e in entries], [e[3] for e in entries])
        self.stats.decode_calls += 1
        self.stats.rows += len(entries)
        if any(e[3] for e in entries):
            self._select(slots, entries, logits)

    def run(self, problems: Iterable[Problem], on_step: Callable[[Stats], None] | None = None) -> Iterator[dict | Failed]:
        todo = iter(problems)
        slots: list[Slot | None] = [None] * self.slots
        self._waiting: Slot | Failed | None = None
        while True:
            yield from self._fill(slots, todo)
            if all(s is None for s in slots):
                return
            self._step(slots)
            for i, s in enumerate(slots):
                if s is not None and s.finish:
                    self._release(s)
                    slots[i] = None
                    self.stats.finished += 1
                    yield self._record(s)
            if on_step:
                on_step(self.stats)
