"""One decode session: a model opened once, problems in, records out.

Owns what every decoding caller used to repeat: resolving the model, opening the engine,
building and tokenizing each problem's two views once, sizing the context for the
problems at hand, admission (through the Decoder) and the engine's lifetime. `generate`,
`eval` and `score` open one; a long-lived worker (a Ray actor) holds one and feeds it
block after block:

    with DecodeSession(engine_opts, task, decode_cfg) as s:
        for rec in s.run(problems): ...
        for rec in s.run(more_problems): ...   # same open engine

Knows the engine's surface, the prompts and the decode loop; knows nothing about files.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, replace
from typing import Callable, Iterable, Iterator

from ..config import AUTO, AUTO_BATCH, DecodeConfig, EngineOptions
from .loop import Decoder
from .slots import Failed, Stats, kv_need
from ..tasks import Problem, Task

# the most KV memory `--kv auto` gives a split cache, and a unified pool by default
KV_BUDGET = 4 << 30


def kv_budget() -> int:
    """Bytes a KV cache may take: 4 GiB or a quarter of the machine's memory, if less."""
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return KV_BUDGET
    return min(KV_BUDGET, ram // 4)


def auto_split(engine, split_cells: int) -> bool:
    """`--kv auto`: the split cache (a stream per sequence) wherever it fits the machine's
    budget. Only there is a problem's record independent of the other problems in its run:
    in the unified pool a sequence's attention runs over one pool with every other
    sequence's cells masked, and its numbers change with them (measured: Qwen2.5-Coder-0.5B,
    logits up to 0.35 apart with one other sequence decoding; loop.py). The split cache
    holds every sequence at the longest view's length (3x the memory on MATH); where that
    exceeds the budget the unified pool, sized by the real lengths, runs instead and the
    manifest's `kv_unified` says so."""
    return split_cells * engine.kv_bytes_per_cell <= kv_budget()


def auto_batch(engine, cells_per_seq: int, n_views: int, n_problems: int, n_gpu_layers: int) -> int:
    """`--batch auto`: the most problems a decode call gains from (AUTO_BATCH: on a CPU or
    with offload), no more than the run has, and no more than the split KV cache holds
    within the budget at `cells_per_seq` cells per sequence (then `--kv auto` stays split
    and a record independent of its neighbours; auto_split)."""
    most = AUTO_BATCH["gpu" if n_gpu_layers else "cpu"]
    fits = kv_budget() // max(1, int(cells_per_seq * n_views * engine.kv_bytes_per_cell))
    return max(1, min(most, fits, max(1, n_problems)))


def auto_ctx(needs: list[int], batch: int) -> int:
    """KV cells for `batch` problems in flight: the largest `batch` worst-case needs, so the
    admission check (Decoder._fill) never has to hold a problem back for want of cells."""
    top = sorted(needs, reverse=True)[:batch] or [256]
    return -(-sum(top) // 256) * 256


class DecodeSession:
    """An open engine + view builder for one task; `run` decodes a block of problems.

    Without a DecodeConfig the session only opens the engine and builds views (the
    scoring pass sizes its own single-sequence context)."""

    def __init__(self, opts: EngineOptions, task: Task, decode: DecodeConfig | None = None):
        self.opts, self.task = opts, task
        self.cfg = decode.for_device(opts.n_gpu_layers) if decode is not None else None
        self.requested = self.cfg  # the batch as asked (auto is resolved per block: with_batch)
        self.engine = self.builder = None
        self.stats = Stats()  # summed over every run of this session

    # ---- lifetime -------------------------------------------------------------------

    def __enter__(self) -> DecodeSession:
        self.open()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def open(self) -> None:
        from .engine import Engine, EngineConfig
        from ..models import resolve
        from .views import ViewBuilder

        path, _ = resolve(self.opts.model)
        o = self.opts
        # start small: the context is sized once the prompts are tokenized
        step = self.cfg.step_tokens if self.cfg else 512
        small = EngineConfig(n_ctx=512, n_seq_max=1, n_batch=step, n_ubatch=o.ubatch or step,
                             n_gpu_layers=o.n_gpu_layers, n_threads=o.threads,
                             kv_unified=o.kv != "split", kv_type=o.kv_type, cpu_weights=o.cpu_weights)
        self.engine = Engine(path, small, adapter=o.adapter)
        self.builder = ViewBuilder(self.engine, self.task, o.system, self.cfg.published if self.cfg else None)

    def close(self) -> None:
        if self.engine is not None:
            self.engine.close()

    # ---- decoding -------------------------------------------------------------------

    def run(self, problems: Iterable[Problem], on_step: Callable[[Stats], None] | None = None
            ) -> Iterator[dict | Failed]:
        """Decode a block of problems on the open engine; yields a record or a Failed per
        problem, in completion order. May be called again with the next block."""
        problems, analyses = list(problems), {}
        if self.cfg.published == "hint" and self.cfg.analysis_tokens > 0:
            analyses = yield from self._analyses(problems)
            problems = [p for p in problems if id(p) in analyses]
        # tokenized once here; the Decoder reads them by object identity for this block only
        views = {id(p): self.builder.views(p, analyses.get(id(p), "")) for p in problems}
        self.cfg = self.with_batch(problems, views)
        self.size_context(problems, views)
        decoder = Decoder(self.engine, self.task, self.cfg, views=lambda p: views[id(p)], stats=self.stats)
        yield from decoder.run(problems, on_step)

    def _analyses(self, problems: list[Problem]):
        """Published Hinted decoding's pre-pass (the authors' gen_fim_cot): a greedy decode of
        each problem's shadow prompt, kept up to its last "# CoT"; the target view continues
        the shadow prompt with it. Yields a Failed per problem without one (the authors skip
        those); returns {id(problem): analysis}."""
        from .baselines import HINTED_COT_MARK, hinted_analysis
        from .views import Views

        pre = replace(self.requested, strategy="base", base_only=True, baseline_form="controlled",
                      max_new_tokens=self.cfg.analysis_tokens, record_candidates=False)
        shadow = {}
        for p in problems:
            text = self.builder.reference_text(p)
            shadow[id(p)] = Views(text, "", self.engine.tokenize(text), [])
        pre = self.with_batch(problems, shadow, pre)
        self.size_context(problems, shadow, pre)
        by_id, analyses = {p.id: p for p in problems}, {}
        for rec in Decoder(self.engine, self.task, pre, views=lambda p: shadow[id(p)]).run(problems):
            if isinstance(rec, Failed):
                yield rec
                continue
            cut = hinted_analysis(rec["response"])
            if cut is None:
                yield Failed(by_id[rec["id"]], f"hinted decoding: the analysis pre-pass ({len(rec['response_tokens'])} "
                                               f"tokens) wrote no {HINTED_COT_MARK!r}; the authors skip such problems")
            else:
                analyses[id(by_id[rec["id"]])] = cut
        return analyses

    def with_batch(self, problems: list[Problem], views: dict, cfg: DecodeConfig | None = None) -> DecodeConfig:
        """The config with `--batch auto` resolved for this block (the manifest's `decode`
        then records the number that ran); a number is kept as it is."""
        cfg = cfg or self.requested
        if cfg.batch != AUTO:
            return cfg
        n_views = 1 if cfg.base_only else 2
        per = self.split_cells_per_seq(self.needs(problems, views, cfg)[1])
        return replace(cfg, batch=auto_batch(self.engine, per, n_views, len(problems), self.opts.n_gpu_layers))

    def needs(self, problems: list[Problem], views: dict, cfg: DecodeConfig) -> tuple[list[int], int]:
        """Each problem's worst-case cells (both views, prompt + max_new_tokens) and the
        longest single view."""
        counted = [kv_need(views[id(p)], cfg.max_new_tokens, cfg.base_only) for p in problems]
        return [need for need, _ in counted], max((view for _, view in counted), default=0)

    def split_cells_per_seq(self, longest: int) -> int:
        """A split cache's cells per sequence: the longest view, in whole 256s, within the trained context."""
        return min(-(-longest // 256) * 256 or 256, self.engine.n_ctx_train)

    def size_context(self, problems: list[Problem], views: dict, cfg: DecodeConfig | None = None) -> None:
        """Context for the real prompt lengths (or --ctx: all cells).

        Unified cache: the largest `batch` problem needs. Split cache: every sequence gets
        the cells of the longest view (prompt + max_new_tokens), within the trained context."""
        cfg, o, engine = cfg or self.cfg, self.opts, self.engine
        n_seq = max(1, min(cfg.batch, len(problems))) * (1 if cfg.base_only else 2)
        needs, longest = self.needs(problems, views, cfg)
        per = o.ctx // n_seq if o.ctx else self.split_cells_per_seq(longest)
        split_cells = max(per, 64) * n_seq
        n_ctx = o.ctx or min(auto_ctx(needs, cfg.batch), max(engine.n_ctx_train, max(needs, default=0)) * cfg.batch,
                             # admission bounded by memory: fewer problems in flight, never a pool over budget
                             max(max(needs, default=0), kv_budget() // int(engine.kv_bytes_per_cell)))
        if o.kv == "split" or (o.kv == "auto" and auto_split(engine, split_cells)):
            self._resize(split_cells, n_seq, False)
            return
        self._resize(n_ctx, n_seq, True)

    def _resize(self, n_ctx: int, n_seq: int, unified: bool) -> None:
        # always a fresh context, even at the same size: a block then decodes in exactly the
        # cache layout a new session would give it (the KV cells' placement stays bit-for-bit
        # reproducible), at the cost of one context allocation per block
        self.engine.resize(n_ctx, n_seq, kv_unified=unified)


# ---- the runner's job (runner.run: here or on Ray) --------------------------------------


@dataclass(frozen=True)
class DecodeJob:
    """Generation or eval as a runner job: a session holds one DecodeSession (the model
    loaded once) and decodes block after block with it (here: one block; on Ray: each
    actor its own). Picklable: the task travels by name and answer format."""

    opts: EngineOptions
    task: str
    answer_format: str | None
    cfg: DecodeConfig

    def open(self) -> DecodeRun:
        return DecodeRun(self)

    @staticmethod
    def payload(p: Problem) -> dict:
        """A problem as the JSON-able dict a session (here or on a Ray actor) rebuilds it from."""
        return {"id": p.id, "question": p.question, "reference": p.reference, "fields": p.fields}


class DecodeRun:
    """A DecodeJob's open session, fed one block of payloads at a time."""

    def __init__(self, job: DecodeJob):
        from ..tasks import get_task

        self.session = DecodeSession(job.opts, get_task(job.task, job.answer_format), job.cfg)
        self.session.open()

    def run(self, payloads: list[dict], on_step: Callable[[Stats], None] | None = None):
        for item in self.session.run([Problem(**p) for p in payloads], on_step):
            if isinstance(item, Failed):
                yield item.problem.id, None, item.error
            else:
                yield item["id"], item, None

    def stats(self) -> dict:
        return asdict(self.session.stats)

    def info(self) -> dict:
        s = self.session
        return {"model": str(s.engine.path), "engine": asdict(s.engine.config), "decode": asdict(s.cfg),
                "template": s.builder.template_source}

    def close(self) -> None:
        self.session.close()
