"""`dasd-local generate`: problems in, DASD (or baseline) records out, resumably.

Ties the pieces together: load the problems, skip those already written, decode the
rest in one DecodeSession (session.py: model, engine, views, context) or, with `--ray`,
on a Ray cluster's actors (distributed.py), append records as they finish, show
progress, write the manifest last. The decoding itself lives in
decode.py, the settings in config.py.
"""

from __future__ import annotations

import time
from dataclasses import asdict

from .config import DecodeConfig, RunConfig, resolved
from .decode_state import Failed, Stats
from .distributed import RayConfig  # light: Ray is imported inside its functions


def generate(run: RunConfig, cfg: DecodeConfig, console=None, ray: RayConfig | None = None) -> dict:
    """Run generation (here, or on a Ray cluster with `ray`); returns the manifest (also
    written beside the output)."""
    from .data import load_source
    from .records import RunWriter, versions

    if ray is not None and ray.enabled:
        from .distributed import import_ray

        import_ray()  # before the output is opened again: no Ray, nothing touched
    run = run.with_out(cfg.strategy)
    task, source, problems, skipped = load_source(run)
    writer = RunWriter(run.out)
    todo = [p for p in problems if p.id not in writer.done and p.id not in writer.failed]
    started = time.time()
    try:
        if ray is not None and ray.enabled:
            failed, facts = _run_on_ray(run, cfg, ray, todo, writer, console)
        else:
            failed, facts = _run_here(run, task, cfg, todo, writer, console)
    finally:
        writer.close()
    stats = facts.pop("stats")
    manifest = {
        **facts, "versions": versions(), "task": task.name, "data": str(source), "split": run.split, "out": str(run.out),
        "run": resolved(run),
        "counts": {"problems": len(problems), "done": len(writer.done), "ran_now": len(todo) - len(failed),
                   "failed": len(writer.failed), "skipped_rows": len(skipped.rows)},
        "skipped": skipped.rows[:100], "failed_now": failed[:100],
        "stats": _stats_dict(stats, time.time() - started),
    }
    writer.finish([p.id for p in problems], manifest)
    return manifest


def _run_here(run: RunConfig, task, cfg: DecodeConfig, todo, writer, console) -> tuple[list[str], dict]:
    """Decode in this process: one DecodeSession."""
    from .records import sha256_file
    from .session import DecodeSession

    session = DecodeSession(run, task, cfg)
    try:
        session.open()
        failed = _run(session, todo, writer, console)
    finally:
        session.close()
    engine = session.engine
    return failed, {"model": str(engine.path), "model_sha256": sha256_file(engine.path), "decode": asdict(session.cfg),
                    "engine": asdict(engine.config), "template": session.builder.template_source,
                    "stats": session.stats}


def _run_on_ray(run: RunConfig, cfg: DecodeConfig, ray: RayConfig, todo, writer, console) -> tuple[list[str], dict]:
    """Decode on a Ray cluster's actor pool; records stream back and are written here."""
    from .distributed import DecodeJob, for_worker, model_facts, problem_payload, run_blocks

    failed: list[str] = []

    def on_result(pid: str, record: dict | None, error: str | None) -> None:
        if record is None:
            writer.write_failed(pid, error)
            failed.append(f"{pid}: {error}")
        else:
            writer.write(record)

    job = DecodeJob(for_worker(run, ray), run.task, cfg)
    ray_info = run_blocks(job, [(p.id, problem_payload(p)) for p in todo], ray, on_result,
                         skip=writer.done | writer.failed, batch=cfg.batch, label=f"{cfg.strategy} (ray)",
                         console=console) if todo else {}
    info, totals = ray_info.pop("info", {}), ray_info.pop("stats", {})
    stats = Stats(**{k: v for k, v in totals.items() if k in Stats.__dataclass_fields__})
    return failed, {**model_facts(info, run.model), "decode": info.get("decode", asdict(cfg)),
                    "engine": info.get("engine"), "template": info.get("template"), "ray": ray_info, "stats": stats}


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
