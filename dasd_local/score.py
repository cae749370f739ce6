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
from .decoding.forcing import ScoreJob, problem_of, row_id
from .errors import ConfigError
from .store.lock import one_writer


@one_writer(lambda inp, out, cfg, ray=None, console=None: out)
def score_file(inp: Path, out: Path, cfg: ScoreConfig, ray=None, console=None) -> dict:
    """Score every record of `inp` into `out` (resumable: ids already there are skipped),
    here or on a Ray cluster (`ray`: a config.RayConfig); returns the manifest, written last
    beside the output. Each row's id is known here without the model; the prompts are
    tokenized by the session that scores it."""
    from .runner import import_ray, model_facts, run
    from .store.problems import select
    from .store.records import RunWriter, read_jsonl, versions
    from .tasks import get_task

    if ray is not None and ray.enabled:
        import_ray()  # before the output is opened: no Ray, nothing touched
    if Path(inp).resolve() == Path(out).resolve():
        raise ConfigError(f"-o {out} is the input file: choose another output path")
    rows, malformed = read_jsonl(Path(inp))
    if cfg.answer_format is None:  # prompts rebuilt for records ask in the format they were made with
        cfg = replace(cfg, answer_format=next((r["answer_format"] for r in rows if r.get("answer_format")), None))
    task = get_task(cfg.task)
    chosen = select(list(enumerate(rows)), lambda ir: row_id(ir[1], task, cfg.fields, ir[0]),
                    cfg.sample, cfg.seed, cfg.limit)
    ids = []
    for i, row in chosen:
        if row.get("task") not in (None, task.name):
            raise ConfigError(f"record {row.get('id', i)!r} is from task {row['task']!r}, not --task {task.name}")
        ids.append(problem_of(row, task, cfg.fields, i).id)
    writer = RunWriter(Path(out), "--out")
    started, skipped = time.time(), []

    def on_result(pid: str, record: dict | None, error: str | None) -> None:
        if record is None:
            skipped.append(f"{pid}: {error}")
            writer.write_failed(pid, error)
        else:
            writer.write(record)

    seen = writer.done | writer.failed
    todo = [(pid, {"index": i, "row": row}) for pid, (i, row) in zip(ids, chosen) if pid not in seen]
    try:
        facts = run(ScoreJob(cfg), todo, on_result, ray, skip=seen, batch=1, label="score",
                    console=console) if todo else {"info": {}, "ray": None}
    finally:
        writer.close()
    manifest = {
        **model_facts(facts["info"], cfg.model), **({"ray": facts["ray"]} if facts["ray"] else {}),
        "versions": versions(), "input": str(inp), "out": str(out), "config": resolved(cfg),
        "counts": {"records": len(rows), "done": len(writer.done), "scored_now": len(todo) - len(skipped),
                   "failed": len(writer.failed), "malformed": len(malformed)},
        "skipped": (skipped + malformed)[:100], "seconds": round(time.time() - started, 2),
    }
    writer.finish(ids, manifest)
    return manifest
