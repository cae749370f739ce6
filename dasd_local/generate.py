"""`dasd-local generate`: problems in, DASD (or baseline) records out, resumably.

Ties the pieces together: load the problems (bad rows shown before anything runs),
check the output's fingerprint (fingerprint.py: a rerun resumes only the same run), skip
the problems already written, decode the rest in one DecodeSession (session.py: model,
engine, views, context) or, with `--ray`, on a Ray cluster's actors (distributed.py),
append records as they finish under the progress display (progress.py), write the
manifest last. The decoding itself lives in decode.py, the settings in config.py.
"""

from __future__ import annotations

import time
from dataclasses import asdict

from .config import DecodeConfig, RunConfig, resolved
from .decoding.slots import Stats
from .runner import RayConfig  # light: Ray is imported inside its functions
from .store.lock import one_writer


@one_writer(lambda run, cfg, console=None, warn=None, ray=None: run.with_out(cfg.strategy).out)
def generate(run: RunConfig, cfg: DecodeConfig, console=None, warn=None, ray: RayConfig | None = None) -> dict:
    """Run generation (here, or on a Ray cluster with `ray`); returns the manifest (also
    written beside the output). Input problems are shown through `warn` (default: stderr)
    before anything is decoded."""
    from .store.problems import load_source
    from .store.fingerprint import claim
    from .store.records import RunWriter, output_dir, versions

    on_ray = ray is not None and ray.enabled
    if on_ray:
        from .runner import import_ray

        import_ray()  # before the output is opened again: no Ray, nothing touched
    run = run.with_out(cfg.strategy)
    output_dir(run.out)  # an --out that cannot be written fails before anything loads
    task, source, problems, skipped = load_source(run)
    for line in [skipped.summary(), *(f"skipped: {r}" for r in skipped.rows[:5]), *skipped.notes]:
        if line:
            (warn or _stderr)(line)
    problems = samples_of(problems, cfg.samples)
    claim(run.out, _fingerprint(run, cfg, task, source, on_ray), run.restart)
    writer = RunWriter(run.out)
    todo = [p for p in problems if p.id not in writer.done and p.id not in writer.failed]
    started = time.time()
    try:
        if on_ray:
            failed, facts = _run_on_ray(run, cfg, ray, todo, writer, console)
        else:
            failed, facts = _run_here(run, task, cfg, todo, writer, console)
    finally:
        writer.close()
    stats = facts.pop("stats")
    manifest = {
        **facts, "versions": versions(), "task": task.name, "answer_format": task.answer_format,
        "data": str(source), "split": run.split, "out": str(run.out), "run": resolved(run),
        "counts": {"problems": len(problems), "done": len(writer.done), "ran_now": len(todo) - len(failed),
                   "failed": len(writer.failed), "skipped_rows": len(skipped.rows)},
        "skipped": skipped.rows[:100], "failed_now": failed[:100],
        "stats": _stats_dict(stats, time.time() - started),
    }
    writer.finish([p.id for p in problems], manifest)
    return manifest


def samples_of(problems: list, n: int) -> list:
    """`--samples N`: each problem N times, as '<id>#<k>' with `problem_id` and `sample` in
    its fields (so in its records); each sample then has its own generator (decode.py
    seeds it from the id), is resumed on its own, and waits for the first one to cache
    the prompts it then shares. N = 1: the problems as they are."""
    if n == 1:
        return problems
    from dataclasses import replace

    return [replace(p, id=f"{p.id}#{k}", fields={**p.fields, "problem_id": p.id, "sample": k})
            for p in problems for k in range(n)]


def _run_here(run: RunConfig, task, cfg: DecodeConfig, todo, writer, console) -> tuple[list[str], dict]:
    """Decode in this process: one DecodeSession."""
    from .store.progress import decode_to, interrupted
    from .store.records import sha256_file
    from .decoding.session import DecodeSession

    session = DecodeSession(run, task, cfg)
    try:
        session.open()
        failed = decode_to(writer, session.run, todo, session.cfg.strategy, console)
    except KeyboardInterrupt:  # while the model loads; decode_to reports its own
        raise interrupted(len(writer.done)) from None
    finally:
        session.close()
    engine = session.engine
    return failed, {"model": str(engine.path), "model_sha256": sha256_file(engine.path), "decode": asdict(session.cfg),
                    "engine": asdict(engine.config), "template": session.builder.template_source,
                    "stats": session.stats}


def _run_on_ray(run: RunConfig, cfg: DecodeConfig, ray: RayConfig, todo, writer, console) -> tuple[list[str], dict]:
    """Decode on a Ray cluster's actor pool; records stream back and are written here."""
    from .runner import DecodeJob, for_worker, model_facts, problem_payload, run_blocks

    failed: list[str] = []

    def on_result(pid: str, record: dict | None, error: str | None) -> None:
        if record is None:
            writer.write_failed(pid, error)
            failed.append(f"{pid}: {error}")
        else:
            writer.write(record)

    job = DecodeJob(for_worker(run, ray), run.task, cfg)
    ray_info = run_blocks(job, [(p.id, problem_payload(p)) for p in todo], ray, on_result,
                          skip=writer.done | writer.failed, batch=cfg.most_batch, label=f"{cfg.strategy} (ray)",
                          console=console) if todo else {}
    info, totals = ray_info.pop("info", {}), ray_info.pop("stats", {})
    stats = Stats(**{k: v for k, v in totals.items() if k in Stats.__dataclass_fields__})
    return failed, {**model_facts(info, run.model), "decode": info.get("decode", asdict(cfg)),
                    "engine": info.get("engine"), "template": info.get("template"), "ray": ray_info, "stats": stats}


def _stderr(line: str) -> None:
    import sys

    print(line, file=sys.stderr)


def _fingerprint(run: RunConfig, cfg: DecodeConfig, task, source, on_ray: bool = False) -> dict:
    """What this output is made with. On Ray the driver need not hold the model: where it
    cannot resolve it, the model is fingerprinted by its name (the workers resolve it)."""
    from .errors import DasdError
    from .store.fingerprint import make
    from .models import resolve
    from .store.records import sha256_file

    try:
        model = sha256_file(resolve(run.model)[0])
    except (DasdError, OSError):
        if not on_ray:
            raise
        model = f"name:{run.model}"
    return make(model, run.adapter, source, run.split, run.fields, task, cfg.record_config(), run.system,
                run.cpu_weights)


def _stats_dict(stats: Stats, seconds: float) -> dict:
    d = asdict(stats)
    d["seconds"] = round(seconds, 3)
    d["emitted_per_s"] = round(stats.emitted / seconds, 2) if seconds > 0 else None
    d["rows_per_call"] = round(stats.rows / stats.decode_calls, 2) if stats.decode_calls else None
    total = sum(stats.categories.values())
    d["category_shares"] = {k: round(v / total, 4) for k, v in stats.categories.items()} if total else {}
    return d
