"""`dasd-local generate`: problems in, DASD (or baseline) records out, resumably.

Ties the pieces together: resolve the model, load the problems, size the context from
the real prompt lengths, run the Decoder, append records as they finish, show progress,
write the manifest last. The decoding itself lives in decode.py.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .decode import DecodeConfig, Decoder, Failed, Stats
from .engine import KV_TYPES
from .errors import ConfigError
from .lock import one_writer
from .prompts import ViewBuilder
from .tasks import FieldMap


@dataclass(frozen=True)
class RunConfig:
    model: str | None = field(default=None, metadata={"help": "registry name or GGUF path (None: embedded default)"})
    data: str | None = field(default=None, metadata={"help": "JSON/JSONL/parquet file or hub id (None: the demo set)"})
    task: str = "math"
    split: str = "train"
    out: Path = Path("dasd-out/demo-dasd.jsonl")
    limit: int | None = None
    fields: FieldMap = FieldMap()
    ctx: int | None = field(default=None, metadata={"help": "KV cells for all sequences (None: from the prompts)"})
    n_gpu_layers: int = 0
    threads: int | None = None
    ubatch: int = field(default=32, metadata={"help": "llama.cpp micro-batch; > 32 is faster but batch-shape dependent"})
    kv: str = field(default="auto", metadata={"help": "KV cache layout: split (a stream per sequence: faster) | "
                                                      "unified (one pool: memory follows real lengths) | auto"})
    kv_type: str = field(default="f16", metadata={"help": "KV cache element type: f16 | q8_0 (half the memory)"})
    adapter: Path | None = None
    system: str | None = None

    def __post_init__(self):
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"limit = {self.limit} is not allowed: expected >= 1")
        if self.ctx is not None and self.ctx < 64:
            raise ConfigError(f"ctx = {self.ctx} is not allowed: expected >= 64")
        if self.kv not in ("auto", "split", "unified"):
            raise ConfigError(f"kv = {self.kv!r} is not allowed: expected auto, split or unified")
        if self.kv_type not in KV_TYPES:
            raise ConfigError(f"kv_type = {self.kv_type!r} is not allowed: expected {' or '.join(KV_TYPES)}")


# `--kv auto` takes the faster split cache while its KV memory stays within this budget
SPLIT_KV_BUDGET = 4 << 30


def split_budget() -> int:
    """Bytes the split cache may take: 4 GiB or a quarter of the machine's memory, if less."""
    import os

    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return SPLIT_KV_BUDGET
    return min(SPLIT_KV_BUDGET, ram // 4)


def auto_ctx(needs: list[int], batch: int) -> int:
    """KV cells for `batch` problems in flight: the largest `batch` worst-case needs, so the
    admission check (decode._fill) never has to hold a problem back for want of cells."""
    top = sorted(needs, reverse=True)[:batch] or [256]
    return -(-sum(top) // 256) * 256


def open_engine(run: RunConfig, cfg: DecodeConfig):
    from .engine import Engine, EngineConfig
    from .models import resolve

    path, _ = resolve(run.model)
    # start small: the context is resized once the prompts are tokenized
    small = EngineConfig(n_ctx=512, n_seq_max=1, n_batch=cfg.step_tokens, n_ubatch=run.ubatch,
                         n_gpu_layers=run.n_gpu_layers, n_threads=run.threads, kv_unified=run.kv != "split",
                         kv_type=run.kv_type)
    return Engine(path, small, adapter=run.adapter)


def load(run: RunConfig):
    from .data import load_problems
    from .demo import demo_path
    from .tasks import get_task

    task = get_task(run.task)
    source = run.data if run.data is not None else demo_path()
    problems, skipped = load_problems(source, task, run.fields, run.split, run.limit)
    return task, source, problems, skipped


def size_context(engine, builder, problems, run: RunConfig, cfg: DecodeConfig) -> None:
    """Resize the engine's context for the real prompt lengths (or --ctx: all cells).

    Unified cache: the largest `batch` problem needs. Split cache: every sequence gets the
    cells of the longest view (prompt + max_new_tokens), within the trained context."""
    n_seq = max(1, min(cfg.batch, len(problems))) * (1 if cfg.base_only else 2)
    needs, longest = [], 0
    for p in problems:
        v = builder.views(p)
        n = len(v.base_tokens) + cfg.max_new_tokens
        r = 0 if cfg.base_only else len(v.ref_tokens) + cfg.max_new_tokens
        needs.append(n + r)
        longest = max(longest, n, r)
    per = run.ctx // n_seq if run.ctx else min(-(-longest // 256) * 256 or 256, engine.n_ctx_train)
    split_cells = max(per, 64) * n_seq
    split = run.kv == "split" or (run.kv == "auto" and split_cells * engine.kv_bytes_per_cell <= split_budget())
    if split:
        engine.resize(split_cells, n_seq, kv_unified=False)
        return
    n_ctx = run.ctx or min(auto_ctx(needs, cfg.batch), max(engine.n_ctx_train, max(needs, default=0)) * cfg.batch)
    engine.resize(n_ctx, n_seq, kv_unified=True)


@one_writer(lambda run, cfg, console=None: run.out)
def generate(run: RunConfig, cfg: DecodeConfig, console=None) -> dict:
    """Run generation; returns the manifest (also written beside the output)."""
    from .records import RunWriter, sha256_file, versions

    task, source, problems, skipped = load(run)
    writer = RunWriter(run.out)
    todo = [p for p in problems if p.id not in writer.done and p.id not in writer.failed]
    engine = open_engine(run, cfg)
    started = time.time()
    try:
        size_context(engine, ViewBuilder(engine, task, run.system), todo, run, cfg)
        decoder = Decoder(engine, task, cfg, run.system)
        failed = _run(decoder, todo, writer, console)
    finally:
        writer.close()
        engine.close()
    manifest = {
        "model": str(engine.path), "model_sha256": sha256_file(engine.path), "versions": versions(),
        "task": task.name, "data": str(source), "split": run.split, "out": str(run.out),
        "decode": asdict(cfg), "run": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(run).items()},
        "engine": asdict(engine.config), "template": decoder.builder.template_source,
        "counts": {"problems": len(problems), "done": len(writer.done), "ran_now": len(todo) - len(failed),
                   "failed": len(writer.failed), "skipped_rows": len(skipped.rows)},
        "skipped": skipped.rows[:100], "failed_now": failed[:100],
        "stats": _stats_dict(decoder.stats, time.time() - started),
    }
    writer.finish([p.id for p in problems], manifest)
    return manifest


def _stats_dict(stats: Stats, seconds: float) -> dict:
    d = asdict(stats)
    d["seconds"] = round(seconds, 3)
    d["emitted_per_s"] = round(stats.emitted / seconds, 2) if seconds > 0 else None
    d["rows_per_call"] = round(stats.rows / stats.decode_calls, 2) if stats.decode_calls else None
    total = sum(stats.categories.values())
    d["category_shares"] = {k: round(v / total, 4) for k, v in stats.categories.items()} if total else {}
    return d


def _run(decoder: Decoder, todo, writer, console) -> list[str]:
    """Decode with a rich progress bar; write each record as it finishes."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    failed = []
    start = time.time()
    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TextColumn("{task.fields[info]}")]
    with Progress(*columns, console=console, transient=False) as bar:
        job = bar.add_task(decoder.cfg.strategy, total=len(todo), info="")

        def on_step(stats: Stats) -> None:
            total = sum(stats.categories.values()) or 1
            shares = " ".join(f"{k[:4]} {100 * v / total:.1f}%" for k, v in stats.categories.items()) \
                if decoder.cfg.strategy == "dasd" else ""
            rate = stats.emitted / max(time.time() - start, 1e-9)
            spec = f"draft {stats.accepted}/{stats.drafted}  " if stats.drafted else ""
            bar.update(job, info=f"{rate:.0f} tok/s  {stats.rows / max(stats.decode_calls, 1):.1f} rows/call  {spec}{shares}")

        for item in decoder.run(todo, on_step):
            if isinstance(item, Failed):
                writer.write_failed(item.problem.id, item.error)
                failed.append(f"{item.problem.id}: {item.error}")
            else:
                writer.write(item)
            bar.advance(job)
    return failed
