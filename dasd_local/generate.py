"""`dasd-local generate`: problems in, DASD (or baseline) records out, resumably.

Ties the pieces together: load the problems (bad rows shown before anything runs),
check the output's fingerprint (fingerprint.py: a rerun resumes only the same run), skip
the problems already written, decode the rest in one DecodeSession (session.py: model,
engine, views, context), append records as they finish under the progress display
(progress.py), write the manifest last. The decoding itself lives in
decode.py, the settings in config.py.
"""

from __future__ import annotations

import time
from dataclasses import asdict

from .config import DecodeConfig, RunConfig, resolved
from .decode_state import Stats
from .lock import one_writer


@one_writer(lambda run, cfg, console=None, warn=None: run.with_out(cfg.strategy).out)
def generate(run: RunConfig, cfg: DecodeConfig, console=None, warn=None) -> dict:
    """Run generation; returns the manifest (also written beside the output). Input
    problems are shown through `warn` (default: stderr) before anything is decoded."""
    from .data import load_source
    from .fingerprint import claim
    from .progress import decode_to, interrupted
    from .records import RunWriter, output_dir
    from .session import DecodeSession

    run = run.with_out(cfg.strategy)
    output_dir(run.out)  # an --out that cannot be written fails before anything loads
    task, source, problems, skipped = load_source(run)
    for line in [skipped.summary(), *(f"skipped: {r}" for r in skipped.rows[:5]), *skipped.notes]:
        if line:
            (warn or _stderr)(line)
    claim(run.out, _fingerprint(run, cfg, task, source), run.restart)
    writer = RunWriter(run.out)
    todo = [p for p in problems if p.id not in writer.done and p.id not in writer.failed]
    session = DecodeSession(run, task, cfg)
    started = time.time()
    try:
        session.open()
        failed = decode_to(writer, session.run, todo, session.cfg.strategy, console)
    except KeyboardInterrupt:  # while the model loads; decode_to reports its own
        raise interrupted(len(writer.done)) from None
    finally:
        writer.close()
        session.close()
    manifest = _manifest(run, session, task, source, problems, skipped, writer, todo, failed, started)
    writer.finish([p.id for p in problems], manifest)
    return manifest


def _stderr(line: str) -> None:
    import sys

    print(line, file=sys.stderr)


def _fingerprint(run: RunConfig, cfg: DecodeConfig, task, source) -> dict:
    from .fingerprint import make
    from .models import resolve
    from .records import sha256_file

    model, _ = resolve(run.model)
    return make(sha256_file(model), run.adapter, source, run.split, run.fields, task, cfg.record_config(),
                run.system)


def _manifest(run, session, task, source, problems, skipped, writer, todo, failed, started) -> dict:
    from .records import sha256_file, versions

    engine = session.engine
    return {
        "model": str(engine.path), "model_sha256": sha256_file(engine.path), "versions": versions(),
        "task": task.name, "answer_format": task.answer_format, "data": str(source), "split": run.split,
        "out": str(run.out), "decode": asdict(session.cfg), "run": resolved(run),
        "engine": asdict(engine.config), "template": session.builder.template_source,
        "counts": {"problems": len(problems), "done": len(writer.done), "ran_now": len(todo) - len(failed),
                   "failed": len(writer.failed), "skipped_rows": len(skipped.rows)},
        "skipped": skipped.rows[:100], "failed_now": failed[:100],
        "stats": _stats_dict(session.stats, time.time() - started),
    }


def _stats_dict(stats: Stats, seconds: float) -> dict:
    d = asdict(stats)
    d["seconds"] = round(seconds, 3)
    d["emitted_per_s"] = round(stats.emitted / seconds, 2) if seconds > 0 else None
    d["rows_per_call"] = round(stats.rows / stats.decode_calls, 2) if stats.decode_calls else None
    total = sum(stats.categories.values())
    d["category_shares"] = {k: round(v / total, 4) for k, v in stats.categories.items()} if total else {}
    return d
