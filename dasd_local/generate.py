"""`dasd-local generate`: problems in, DASD (or baseline) records out, resumably.

Ties the pieces together: load the problems (bad rows shown before anything runs;
store.problems), check the output's fingerprint (store.fingerprint: a rerun resumes only the
same run), skip the problems already written, decode the rest as a DecodeJob
(decoding.session: model, engine, views, context) here or, with `--ray`, on a Ray
cluster's actors (runner.run), append records as they finish (store.records), write the
manifest last. The decoding itself lives in decoding/, the settings in config/.
"""

from __future__ import annotations

import time
from dataclasses import asdict

from .config import DecodeConfig, RayConfig, RunConfig, resolved
from .store.lock import one_writer


@one_writer(lambda run, cfg, console=None, warn=None, ray=None: run.with_out(cfg.strategy).out)
def generate(run: RunConfig, cfg: DecodeConfig, console=None, warn=None, ray: RayConfig | None = None) -> dict:
    """Run generation (here, or on a Ray cluster with `ray`); returns the manifest (also
    written beside the output). Input problems are shown through `warn` (default: stderr)
    before anything is decoded."""
    from .decoding.session import DecodeJob
    from .decoding.slots import Stats
    from .runner import import_ray, model_facts
    from .runner import run as run_job
    from .store.fingerprint import claim
    from .store.problems import load_source, source_name
    from .store.progress import interrupted
    from .store.records import RunWriter, output_dir, versions

    on_ray = ray is not None and ray.enabled
    if on_ray:
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
    seen = writer.done | writer.failed
    todo = [p for p in problems if p.id not in seen]
    failed: list[str] = []

    def on_result(pid: str, record: dict | None, error: str | None) -> None:
        if record is None:
            writer.write_failed(pid, error)
            failed.append(f"{pid}: {error}")
        else:
            writer.write(record)

    started = time.time()
    try:
        job = DecodeJob(run, task.name, task.answer_format, cfg)
        facts = run_job(job, [(p.id, job.payload(p)) for p in todo], on_result, ray, skip=seen, batch=cfg.most_batch,
                        label=cfg.strategy, console=console) if todo else {"stats": {}, "info": {}, "ray": None}
    except KeyboardInterrupt:
        raise interrupted(len(writer.done)) from None
    finally:
        writer.close()
    info = facts["info"]
    stats = Stats(**{k: v for k, v in facts["stats"].items() if k in Stats.__dataclass_fields__})
    manifest = {
        **model_facts(info, run.model), "decode": info.get("decode", asdict(cfg)), "engine": info.get("engine"),
        "template": info.get("template"), **({"ray": facts["ray"]} if facts["ray"] else {}),
        "versions": versions(), "task": task.name, "answer_format": task.answer_format,
        "data": source_name(source), "split": run.split, "out": str(run.out), "run": resolved(run),
        "counts": {"problems": len(problems), "done": len(writer.done), "ran_now": len(todo) - len(failed),
                   "failed": len(writer.failed), "skipped_rows": len(skipped.rows)},
        "skipped": skipped.rows[:100], "failed_now": failed[:100],
        "stats": _stats_dict(stats, time.time() - started),
    }
    writer.finish([p.id for p in problems], manifest)
    return manifest


def samples_of(problems: list, n: int) -> list:
    """`--samples N`: each problem N times, as '<id>#<k>' with `problem_id` and `sample` in
    its fields (so in its records); each sample then has its own generator (decoding/loop.py
    seeds it from the id), is resumed on its own, and waits for the first one to cache
    the prompts it then shares. N = 1: the problems as they are."""
    if n == 1:
        return problems
    from dataclasses import replace

    return [replace(p, id=f"{p.id}#{k}", fields={**p.fields, "problem_id": p.id, "sample": k})
            for p in problems for k in range(n)]


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


def _stats_dict(stats, seconds: float) -> dict:
    d = asdict(stats)
    d["seconds"] = round(seconds, 3)
    d["emitted_per_s"] = round(stats.emitted / seconds, 2) if seconds > 0 else None
    d["rows_per_call"] = round(stats.rows / stats.decode_calls, 2) if stats.decode_calls else None
    total = sum(stats.categories.values())
    d["category_shares"] = {k: round(v / total, 4) for k, v in stats.categories.items()} if total else {}
    return d
