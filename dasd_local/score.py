"""`dasd-local score`: teacher-force every record of a file under both views, resumably.

Reads records (or dataset rows), has each one's response forced through the base and the
reference view (decoding.forcing: the numbers, and the runner job), and writes the records
with their per-token fields as they finish, here or on a Ray cluster (runner.run), with a
manifest last. Knows files and the runner; the teacher forcing lives in decoding/forcing.py.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

from .config import ScoreConfig, resolved
from .decoding.forcing import ScoreJob, fit_context, prepare, problem_of, row_id, score_items, scoring_session
from .errors import ConfigError
from .store.lock import one_writer


@one_writer(lambda inp, out, cfg, progress=None, ray=None: out)
def score_file(inp: Path, out: Path, cfg: ScoreConfig, progress=None, ray=None) -> dict:
    """Score every record of `inp` into `out` (resumable: ids already there are skipped),
    here or on a Ray cluster (`ray`: a distributed.RayConfig); returns the manifest, written
    last beside the output."""
    from .store.problems import select
    from .store.records import RunWriter, read_jsonl, versions
    from .tasks import get_task

    on_ray = ray is not None and ray.enabled
    if on_ray:
        from .runner import import_ray

        import_ray()
    if Path(inp).resolve() == Path(out).resolve():
        raise ConfigError(f"-o {out} is the input file: choose another output path")
    rows, malformed = read_jsonl(Path(inp))
    if cfg.answer_format is None:  # prompts rebuilt for records ask in the format they were made with
        cfg = replace(cfg, answer_format=next((r["answer_format"] for r in rows if r.get("answer_format")), None))
    task = get_task(cfg.task)
    chosen = select(list(enumerate(rows)), lambda ir: row_id(ir[1], task, cfg.fields, ir[0]),
                    cfg.sample, cfg.seed, cfg.limit)
    writer = RunWriter(Path(out), "--out")
    started, skipped = time.time(), []
    try:
        run = _score_on_ray if on_ray else _score_here
        ids, todo, facts = run(chosen, cfg, writer, skipped, progress, *([ray] if on_ray else []))
    finally:
        writer.close()
    manifest = {
        **facts, "versions": versions(), "input": str(inp), "out": str(out), "config": resolved(cfg),
        "counts": {"records": len(rows), "done": len(writer.done), "scored_now": todo - len(skipped),
                   "failed": len(writer.failed), "malformed": len(malformed)},
        "skipped": (skipped + malformed)[:100], "seconds": round(time.time() - started, 2),
    }
    writer.finish(ids, manifest)
    return manifest


def _score_here(chosen: list, cfg: ScoreConfig, writer, skipped: list, progress) -> tuple[list, int, dict]:
    """Score the chosen (index, row) pairs in this process; returns (ids in input order, how
    many ran, model facts)."""
    from .store.records import sha256_file

    with scoring_session(cfg) as session:
        engine = session.engine
        items = [prepare(r, i, engine, session.builder, cfg) for i, r in chosen]
        seen = writer.done | writer.failed
        todo = [it for it in items if it.record["id"] not in seen]
        fit_context(engine, todo)
        for item, result in score_items(engine, todo, cfg.top_k):
            failed = isinstance(result, str)
            _write(writer, skipped, item.record["id"], None if failed else result, result if failed else None)
            if progress:
                progress(item)
    return [it.record["id"] for it in items], len(todo), {"model": str(engine.path),
                                                         "model_sha256": sha256_file(engine.path)}


def _write(writer, skipped: list, pid: str, record: dict | None, error: str | None) -> None:
    if record is None:
        skipped.append(f"{pid}: {error}")
        writer.write_failed(pid, error)
    else:
        writer.write(record)


def _score_on_ray(chosen: list, cfg: ScoreConfig, writer, skipped: list, progress, ray) -> tuple[list, int, dict]:
    """Score on a Ray cluster's actors; each row's id is known here (no engine needed), the
    prompts are tokenized by the worker that scores it."""
    from .runner import for_worker, model_facts, run_blocks
    from .tasks import get_task

    task = get_task(cfg.task)
    ids = []
    for i, row in chosen:
        if row.get("task") not in (None, task.name):
            raise ConfigError(f"record {row.get('id', i)!r} is from task {row['task']!r}, not --task {task.name}")
        ids.append(problem_of(row, task, cfg.fields, i).id)
    seen = writer.done | writer.failed
    todo = [(pid, {"index": i, "row": row}) for pid, (i, row) in zip(ids, chosen) if pid not in seen]
    info = run_blocks(ScoreJob(for_worker(cfg, ray)), todo, ray, lambda *r: _write(writer, skipped, *r),
                      skip=seen, batch=1, label="score (ray)") if todo else {"info": {}}
    return ids, len(todo), {**model_facts(info.pop("info"), cfg.model), "ray": info}
