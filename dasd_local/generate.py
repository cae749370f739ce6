"""`dasd-local generate`: problems in, DASD (or baseline) records out, resumably.

Ties the pieces together: load the problems, skip those already written, decode the
rest in one DecodeSession (session.py: model, engine, views, context), append records
as they finish, show progress, write the manifest last. The decoding itself lives in
decode.py, the settings in config.py.
"""

from __future__ import annotations

import time
from dataclasses import asdict

from .config import DecodeConfig, RunConfig, resolved
from .decode_state import Failed, Stats
from .lock import one_writer


@one_writer(lambda run, cfg, console=None: run.with_out(cfg.strategy).out)
def generate(run: RunConfig, cfg: DecodeConfig, console=None) -> dict:
    """Run generation; returns the manifest (also written beside the output)."""
    from .data import load_source
    from .records import RunWriter, sha256_file, versions
    from .session import DecodeSession

    run = run.with_out(cfg.strategy)
    task, source, problems, skipped = load_source(run)
    writer = RunWriter(run.out)
    todo = [p for p in problems if p.id not in writer.done and p.id not in writer.failed]
    session = DecodeSession(run, task, cfg)
    started = time.time()
    try:
        session.open()
        failed = _run(session, todo, writer, console)
    finally:
        writer.close()
        session.close()
    engine = session.engine
    manifest = {
        "model": str(engine.path), "model_sha256": sha256_file(engine.path), "versions": versions(),
        "task": task.name, "data": str(source), "split": run.split, "out": str(run.out),
        "decode": asdict(session.cfg), "run": resolved(run),
        "engine": asdict(engine.config), "template": session.builder.template_source,
        "counts": {"problems": len(problems), "done": len(writer.done), "ran_now": len(todo) - len(failed),
                   "failed": len(writer.failed), "skipped_rows": len(skipped.rows)},
        "skipped": skipped.rows[:100], "failed_now": failed[:100],
        "stats": _stats_dict(session.stats, time.time() - started),
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


def _run(session, todo, writer, console) -> list[str]:
    """Decode with a rich progress bar; write each record as it finishes."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    failed = []
    start = time.time()
    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TextColumn("{task.fields[info]}")]
    with Progress(*columns, console=console, transient=False) as bar:
        job = bar.add_task(session.cfg.strategy, total=len(todo), info="")

        def on_step(stats: Stats) -> None:
            total = sum(stats.categories.values()) or 1
            shares = " ".join(f"{k[:4]} {100 * v / total:.1f}%" for k, v in stats.categories.items()) \
                if session.cfg.strategy == "dasd" else ""
            rate = stats.emitted / max(time.time() - start, 1e-9)
            spec = f"draft {stats.accepted}/{stats.drafted}  " if stats.drafted else ""
            bar.update(job, info=f"{rate:.0f} tok/s  {stats.rows / max(stats.decode_calls, 1):.1f} rows/call  {spec}{shares}")

        for item in session.run(todo, on_step):
            if isinstance(item, Failed):
                writer.write_failed(item.problem.id, item.error)
                failed.append(f"{item.problem.id}: {item.error}")
            else:
                writer.write(item)
            bar.advance(job)
    return failed
