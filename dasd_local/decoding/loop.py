"""The dual-view decode loop: admit problems, step all sequences in one call, select, record.

Each problem in flight owns two sequence ids in the engine's one context: B (base view)
and R (reference view). Every iteration makes ONE `Engine.decode` call (continuous
batching): either a decode call, the pending token of every decoding view, or a prefill
call, prompt chunks of the problems still being admitted. The strategy's rule (rules.py)
then picks one token per ready problem from the two views' logits and that token is fed
to both views next time.

A problem's record does not depend on which other problems share the run (its --limit,
--batch, a resume). llama.cpp's CPU kernels give a sequence the same numbers whatever
other sequences' single tokens share its decode call (split KV cache, one micro-batch per
call), but not whatever its own tokens are grouped with: its attention changes with the
number of its tokens in a micro-batch, and llama.cpp cuts a call's micro-batches so that
every sequence in one has as many tokens as the shortest (split_equal). So decode rows and
prompt chunks never share a call, a prompt is cut into chunks at fixed positions (every
PREFILL_CHUNK tokens, so the cut depends on the prompt alone), a prefill call carries only
chunks of one length, and a prefix is taken from another problem's cache only in whole
chunks, which that problem computed exactly as this one would (measured on
Qwen2.5-Coder-0.5B; tests/test_determinism.py).
Knows the engine's narrow surface and the rules; knows nothing about files or the CLI.
"""

from __future__ import annotations

import time
import zlib
from typing import Callable, Iterable, Iterator

import numpy as np

from . import rules
from ..config import DecodeConfig  # noqa: F401  (callers import it from here too)
from .slots import Entry, Failed, Loop, Slot, Stats, View, Want, problem_record, step_record
from .draft import DraftLength, NgramIndex
from ..errors import ConfigError
from .views import ViewBuilder, Views, shared_prefix
from ..tasks import Problem, Task

BOXED = b"\\boxed{"
# prompts are prefilled in chunks that end at multiples of this position; a prefix is taken
# from another problem's cache in whole chunks (at least one: a split cache copies a whole stream)
PREFILL_CHUNK = 32


class Decoder:
    """Runs problems through the engine under one DecodeConfig; `run` yields a finished
    record (dict) or a Failed per problem, in completion order."""

    def __init__(self, engine, task: Task, config: DecodeConfig, system: str | None = None,
                 views: Callable[[Problem], Views] | None = None, stats: Stats | None = None):
        # spec_rows unset: resolved for the engine's device (0 on a CPU)
        self.engine, self.task, self.cfg = engine, task, config.for_device(getattr(engine.config, "n_gpu_layers", 0))
        # a DecodeSession hands in views it tokenized already; alone, the Decoder builds them
        # (alone, published hint views lack the analysis pre-pass, which the session runs)
        self.views = views or ViewBuilder(engine, task, system, config.published).views
        self.rule = self.cfg.rule()
        self.sampled = self.rule.sampling.temperature > 0
        self.repetition_stop = self.cfg.strategy == "hint" and self.cfg.baseline_form == "published"
        self.stats = stats if stats is not None else Stats()
        n_views = 1 if config.base_only else 2
        if engine.config.n_seq_max < n_views:
            raise ConfigError(f"one problem needs n_seq_max >= {n_views}, engine has {engine.config.n_seq_max}")
        # problems in flight: the configured batch, or fewer when the engine was sized for
        # fewer (a run with fewer problems than --batch)
        self.n_slots = min(config.most_batch, engine.config.n_seq_max // n_views)
        if engine.config.n_batch < config.step_tokens:
            raise ConfigError(f"step_tokens {config.step_tokens} exceeds the engine's n_batch {engine.config.n_batch}")

    # ---- admission -------------------------------------------------------------------

    def _admit(self, problem: Problem) -> Slot | Failed:
        views = self.views(problem)
        b = View(-1, list(views.base_tokens))  # copies: views grow as tokens are emitted
        r = None if self.cfg.base_only else View(-1, list(views.ref_tokens))
        slot = Slot(problem, views, b, r, lookup=NgramIndex((r or b).prompt, self.cfg.ngram),
                    dlen=DraftLength(self.cfg.draft_max // 2, self.cfg.draft_max))
        if r is not None and self.cfg.share_prefix:
            # whole chunks, so R takes what it would compute itself (B's cuts are R's)
            common = min(shared_prefix(b.prompt, r.prompt), len(b.prompt) - 1, len(r.prompt) - 1)
            slot.shared = max(0, common) // PREFILL_CHUNK * PREFILL_CHUNK
        if self.sampled:  # one generator per problem: its draws do not depend on the batch
            slot.rng = np.random.default_rng([self.cfg.seed, zlib.crc32(problem.id.encode())])
        slot.twins = hash((tuple(b.prompt), tuple(r.prompt) if r is not None else None))
        need, longest = slot.need(self.cfg.max_new_tokens)
        if need > self.engine.config.n_ctx or longest > min(self.engine.seq_cells, self.engine.n_ctx_train):
            return Failed(problem, f"prompt ({len(b.prompt)}/{len(r.prompt) if r else 0} tokens) + "
                                   f"max_new_tokens {self.cfg.max_new_tokens} does not fit the context "
                                   f"({self.engine.seq_cells} cells per sequence, trained for {self.engine.n_ctx_train})")
        return slot

    # ---- one iteration ------------------------------------------------------------------

    def _chunk(self, slot: Slot, view: View) -> int:
        """Tokens of the view's next prompt chunk: up to the next multiple of PREFILL_CHUNK,
        never past the prompt's last token (fed as the first decode row); 0 when the view
        waits (R until B has cached their common prefix, which R then takes)."""
        if view is slot.r and self.cfg.share_prefix and view.fed == 0 and slot.shared > 0:
            if slot.b.fed < slot.shared:
                return 0
            self.engine.copy(slot.b.seq, view.seq, 0, slot.shared)
            view.fed = view.borrowed = slot.shared
        if view.fed >= len(view.prompt) - 1:
            view.ready = True
            return 0
        return min(len(view.prompt) - 1, (view.fed // PREFILL_CHUNK + 1) * PREFILL_CHUNK) - view.fed

    def _prefill_entries(self, slots: list[Slot]) -> list[Entry]:
        """One prefill call: the next chunk of every prefilling view whose chunk has the
        length of the first one's (so llama.cpp keeps each chunk whole in one micro-batch),
        within step_tokens."""
        entries, length = [], None
        cached = [(s.b.prompt, s.b.fed, s.b.seq) for s in slots if s is not None and s.b.fed > 0]
        cached_r = [(s.r.prompt, s.r.fed, s.r.seq) for s in slots if s is not None and s.r is not None and s.r.fed > 0]
        # prompts a problem in flight is prefilling: a problem with the same two prompts (another
        # sample of it, `generate --samples`) waits for them, then takes them from its cache whole
        prefilling = {s.twins for s in slots if s is not None and not s.decoding and s.b.fed > 0}
        for s in slots:
            if s is None or s.decoding:
                continue
            if self.cfg.share_prefix and s.b.fed == 0:
                if s.twins in prefilling:
                    continue
                prefilling.add(s.twins)
                self._share_opening(s, cached, cached_r)
            for view in (s.r, s.b):  # R first: it may only share what B cached in earlier calls
                if view is None or view.ready:
                    continue
                n = self._chunk(s, view)
                if n == 0 or (length is not None and n != length) or len(entries) + n > self.cfg.step_tokens:
                    continue
                length = n
                entries += [Entry(view.prompt[p], p, view.seq) for p in range(view.fed, view.fed + n)]
                view.fed += n
                view.ready = view.fed == len(view.prompt) - 1
        return entries

    def _draft_allowance(self, n_ready: int) -> int:
        """Draft tokens each decoding problem may add this step. `auto` fills the decode call
        up to `spec_rows` rows: on a compute-bound CPU with a full batch that is none."""
        if self.cfg.speculate == "off" or n_ready == 0 or self.sampled:  # drafts are checked greedily
            return 0
        views = 1 if self.cfg.base_only else 2
        room = self.cfg.step_tokens // (n_ready * views) - 1
        if self.cfg.speculate == "auto":
            room = min(room, self.cfg.spec_rows // (n_ready * views) - 1)
        return max(0, min(room, self.cfg.draft_max))

    def _entries(self, slots: list[Slot]) -> list[Entry]:
        """The next call: prefill and decode calls take turns while both have work (a new
        problem's prompt does not stall the others' decoding); wanted entries say which
        slot, view and draft row they are."""
        ready = [i for i, s in enumerate(slots) if s is not None and s.decoding]
        if not ready or not self._prefilled_last:
            entries = self._prefill_entries(slots)
            ready = [i for i, s in enumerate(slots) if s is not None and s.decoding]  # prompts of one token
            if entries or not ready:
                self._prefilled_last = bool(entries)
                return entries
        self._prefilled_last = False
        entries = []
        allowance = self._draft_allowance(len(ready))
        for i in ready:
            s = slots[i]
            d = min(allowance, s.dlen.value, self.cfg.max_new_tokens - len(s.response) - 1)
            s.draft = s.lookup.draft(d) if d > 0 else []
            for name, view in (("b", s.b), ("r", s.r)):
                if view is not None:
                    for j, tok in enumerate([view.next_token, *s.draft]):
                        entries.append(Entry(tok, view.fed + j, view.seq, Want(i, name, j)))
        return entries

    def _share_opening(self, slot: Slot, cached: list, cached_r: list) -> None:
        """Start a new problem's B view from the longest prefix that another problem's B
        view has in the cache (from earlier calls): every prompt opens with the same chat
        template text (system prompt, role markers), so that part is never prefilled twice.
        Its R view likewise from another R view, where that gives more than B would (another
        sample of the same problem: its whole reference prompt). Whole chunks only: the donor
        computed them with the cuts this view would make."""
        for view, donors, floor in ((slot.b, cached, 0), (slot.r, cached_r, slot.shared)):
            if view is None:
                continue
            limit = len(view.prompt) - 1
            best, donor = floor, None
            for prompt, fed, seq in donors:
                n = min(shared_prefix(prompt, view.prompt), fed, limit) // PREFILL_CHUNK * PREFILL_CHUNK
                if n > best:
                    best, donor = n, seq
            if donor is not None:
                self.engine.copy(donor, view.seq, 0, best)
                view.fed = view.borrowed = best

    def _select(self, slots: list[Slot], entries: list[Entry], logits: np.ndarray) -> None:
        """Apply the rule to every wanted row at once, then walk each problem's draft."""
        wanted = [e.want for e in entries if e.want is not None]
        row_of = {(i, v, j): n for n, (i, v, j) in enumerate(wanted)}
        keys = [(i, j) for (i, v, j) in wanted if v == "b"]
        lb = logits[[row_of[(i, "b", j)] for i, j in keys]]
        lr = None if self.cfg.base_only else logits[[row_of[(i, "r", j)] for i, j in keys]]
        phase = np.array([self._hint_phase(slots[i], j) for i, j in keys])
        rngs = [slots[i].rng for i, _ in keys] if self.sampled else None
        picks = rules.choose(self.cfg.strategy, lb, lr, self.rule, phase, self.cfg.record_candidates, rngs)
        first = {}
        for n, (i, j) in enumerate(keys):
            first.setdefault(i, n)  # a problem's rows are consecutive, in draft order
        for i, n in first.items():
            self._accept(slots[i], picks, n)

    def _hint_phase(self, slot: Slot, j: int) -> int:
        """Hinted decoding's phase at draft row j: R alone first, B alone once the task's
        answer marker (\\boxed{, "answer is") is written."""
        if self.cfg.strategy != "hint":
            return rules.HINT_MIX
        if not slot.response and j == 0:
            return rules.HINT_REF
        text = slot.text + b"".join(self.engine.token_text(t, special=False) for t in slot.draft[:j])
        return rules.HINT_BASE if (self.task.answer_marker or BOXED) in text else rules.HINT_MIX

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
        step = step_record(picks, row, piece, self.cfg.record_candidates)
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
        elif self.repetition_stop and rules.repetition_stop(slot.response):
            slot.finish = "repetition"  # Hinted decoding's published stop

    # ---- the loop -----------------------------------------------------------------------

    def _record(self, slot: Slot) -> dict:
        return problem_record(slot, self.task, self.cfg, self.engine.detokenize(slot.response))

    def _release(self, slot: Slot) -> None:
        for view in (slot.b, slot.r):
            if view is not None:
                self.engine.drop(view.seq)

    def _reserve(self, slot: Slot) -> int:
        """Cells of the shared pool a problem holds at most (the views' common prefix once);
        a split cache gives every slot its own streams, so there is nothing to reserve."""
        if not self.engine.config.kv_unified:
            return 0
        return slot.need(self.cfg.max_new_tokens, slot.shared)[0]

    def _fill(self, loop: Loop) -> Iterator[Failed]:
        """Admit problems into free slots while their worst-case KV cells fit the cache."""
        slots = loop.slots
        reserved = sum(self._reserve(s) for s in slots if s is not None)
        for i in range(len(slots)):
            while slots[i] is None:
                if loop.waiting is None:
                    problem = next(loop.todo, None)
                    if problem is None:
                        return
                    admitted = self._admit(problem)
                    if isinstance(admitted, Failed):
                        yield admitted
                        continue
                    loop.waiting = admitted
                need = self._reserve(loop.waiting)
                if reserved + need > self.engine.config.n_ctx:
                    return  # wait for a running problem to free its cells
                slots[i], loop.waiting = loop.waiting, None
                slots[i].place(i)
                reserved += need

    def _step(self, slots: list) -> None:
        """One decode call over every in-flight problem, then the rule on the wanted rows."""
        entries = self._entries(slots)
        if not entries:
            return
        start = time.perf_counter()
        logits = self.engine.decode([e.token for e in entries], [e.pos for e in entries],
                                    [e.seq for e in entries], [e.want is not None for e in entries])
        self.stats.decode_seconds += time.perf_counter() - start
        self.stats.decode_calls += 1
        self.stats.rows += len(entries)
        # cells in the cache now: what the problems held before this call + its decode rows
        held = sum(s.held(self.engine.config.kv_unified) for s in slots if s is not None)
        self.stats.peak_cells = max(self.stats.peak_cells, held + sum(e.want is not None for e in entries))
        if any(e.want is not None for e in entries):
            self._select(slots, entries, logits)

    def _finished(self, slots: list) -> Iterator[dict]:
        """Records of the problems that finished this step; their slots and cells are freed."""
        for i, s in enumerate(slots):
            if s is not None and s.finish:
                self._release(s)
                slots[i] = None
                self.stats.finished += 1
                yield self._record(s)

    def run(self, problems: Iterable[Problem], on_step: Callable[[Stats], None] | None = None) -> Iterator[dict | Failed]:
        loop = Loop(todo=iter(problems), slots=[None] * self.n_slots)
        self._prefilled_last = False
        while True:
            yield from self._fill(loop)
            if all(s is None for s in loop.slots):
                return
            self._step(loop.slots)
            yield from self._finished(loop.slots)
            if on_step:
                on_step(self.stats)
