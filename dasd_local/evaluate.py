"""`dasd-local eval`: accuracy (MATH, ARC) or pass@1 (MBPP) of a GGUF model, with an
optional LoRA adapter, on one split.

Greedy answers from the base view only, through the same batched engine and decode
loop as generation (strategy `base`, one sequence per problem). Each answer is checked
by the task as soon as it finishes, on a thread pool, so code runs overlap decoding.
Writes OUT_DIR/predictions.jsonl (one line per problem, appended as it is judged, so a
killed run resumes where it stopped) and OUT_DIR/summary.json (score overall and by
level and subject where the data has them, the config, the model's sha256). One run at a
time holds OUT_DIR (lock.py); summary.json is removed when a run opens the directory and
written last, after predictions.jsonl is put back into input order (temp + rename), so a
resumed run ends with the same files as an uninterrupted one. Knows the decode loop's
surface and the tasks; knows nothing about llama.cpp.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from .config import EvalConfig, eval_decode  # noqa: F401  (callers import them from here too)
from .store.lock import one_writer
from .store.records import Appender, atomic_write_text, jsonl_text, recover_jsonl
from .tasks import Task

PREDICTIONS, SUMMARY = "predictions.jsonl", "summary.json"


def read_predictions(path: Path) -> dict[str, dict]:
    """Judged lines of an earlier run by id; a line cut by a kill is dropped (re-run)."""
    return {str(r["id"]): r for r in recover_jsonl(path) if "id" in r}


def finish_predictions(path: Path, order: list[str]) -> list[dict]:
    """predictions.jsonl in input order (ids not in `order` last), each id once; returns it."""
    rank = {pid: i for i, pid in enumerate(order)}
    lines = sorted(read_predictions(path).values(), key=lambda r: rank.get(str(r["id"]), len(rank)))
    atomic_write_text(path, jsonl_text(lines))
    return lines


def prediction(task: Task, record: dict, verdict) -> dict:
    """One predictions.jsonl line: the judged answer plus level/subject for the summary."""
    meta = {k: record[k] for k in ("level", "subject", "type") if k in record}
    return {"id": record["id"], "prediction": record["response"], "extracted": verdict.extracted,
            "correct": verdict.correct, "detail": verdict.detail, "finish_reason": record.get("finish_reason"),
            "response_tokens": len(record.get("response_tokens") or []), **meta}


def rejudge(task: Task, problems: list, done: dict[str, dict], path: Path, workers: int) -> int:
    """Check every saved answer of these problems again with today's checker (a fixed
    extractor changes old verdicts; nothing is decoded again) and rewrite `path` with the
    new verdicts (temp + rename); returns how many were judged. Lines of problems not in
    this run, and problems that never got an answer, are kept as they are."""
    again = [(p, done[p.id]) for p in problems if p.id in done and done[p.id].get("prediction") is not None]
    verdicts = task.verify_many(((line["prediction"], {**p.fields, "finish_reason": line.get("finish_reason")})
                                 for p, line in again), workers)
    for (p, line), verdict in zip(again, verdicts):
        done[p.id] = {**line, "extracted": verdict.extracted, "correct": verdict.correct, "detail": verdict.detail}
    atomic_write_text(path, jsonl_text(list(done.values())))
    return len(again)


class _Judge:
    """Checks finished answers on a pool while decoding goes on; writes in the main thread."""

    def __init__(self, task: Task, out, workers: int):
        self.task, self.out = task, out
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="eval-verify")
        self.pending: list[tuple[dict, Future]] = []

    def submit(self, record: dict) -> None:
        self.pending.append((record, self.pool.submit(self.task.verify, record["response"], record)))
        self.flush(wait=False)

    def failed(self, pid: str, error: str) -> None:
        self._write({"id": pid, "prediction": None, "extracted": None, "correct": False, "detail": f"not run: {error}"})

    def flush(self, wait: bool) -> None:
        still = []
        for record, fut in self.pending:
            if wait or fut.done():
                self._write(prediction(self.task, record, fut.result()))
            else:
                still.append((record, fut))
        self.pending = still

    def _write(self, line: dict) -> None:
        self.out.write(line)

    def close(self) -> None:
        self.flush(wait=True)
        self.pool.shutdown()


def _decode_and_judge(cfg: EvalConfig, task: Task, todo: list, path: Path, console, ray) -> dict:
    """Decode `todo` (base view, greedy; here or on Ray) and append each judged answer to `path`."""
    from .decoding.session import DecodeJob
    from .runner import run

    with Appender(path) as out:
        judge = _Judge(task, out, cfg.workers)

        def on_result(pid: str, record: dict | None, error: str | None) -> None:
            if record is None:
                judge.failed(pid, error)
            else:
                judge.submit(record)

        try:
            job = DecodeJob(cfg, task.name, task.answer_format, cfg.decode)
            facts = run(job, [(p.id, job.payload(p)) for p in todo], on_result, ray, batch=cfg.decode.most_batch,
                        label="eval", console=console)
        finally:
            judge.close()
    stats = facts["stats"]
    return {"decode_calls": stats.get("decode_calls", 0), "emitted_tokens": stats.get("emitted", 0),
            "cpu_weights": (facts["info"].get("engine") or {}).get("cpu_weights"), "info": facts["info"],
            **({"ray": facts["ray"]} if facts["ray"] else {})}


def accuracy(lines: list[dict]) -> dict:
    """{n, correct, score} overall and grouped by level and by subject where present."""
    def cell(rows: list[dict]) -> dict:
        ok = sum(bool(r.get("correct")) for r in rows)
        return {"n": len(rows), "correct": ok, "score": round(ok / len(rows), 4) if rows else None}

    out = cell(lines)
    for name, keys in (("by_level", ("level",)), ("by_subject", ("subject", "type"))):
        groups = defaultdict(list)
        for r in lines:
            value = next((r[k] for k in keys if r.get(k) is not None), None)
            if value is not None:
                groups[str(value)].append(r)
        if groups:
            out[name] = {k: cell(v) for k, v in sorted(groups.items())}
    return out


@one_writer(lambda cfg, console=None, ray=None: cfg.out_dir, directory=True)
def evaluate(cfg: EvalConfig, console=None, ray=None) -> dict:
    """Run (or resume) the evaluation, here or on a Ray cluster (`ray`: a config.RayConfig);
    returns the summary, also written to summary.json."""
    from .store.problems import load_source, source_name
    from .store.records import output_dir, versions

    on_ray = ray is not None and ray.enabled
    if on_ray:
        from .runner import import_ray

        import_ray()

    task, source, problems, skipped = load_source(cfg)
    task.set_timeout(cfg.timeout_s)
    output_dir(cfg.out_dir, "--out", is_dir=True)
    path = cfg.out_dir / PREDICTIONS
    done = read_predictions(path)
    (cfg.out_dir / SUMMARY).unlink(missing_ok=True)  # the run is open again
    rejudged = rejudge(task, problems, done, path, cfg.workers) if cfg.rejudge else None
    todo = [p for p in problems if p.id not in done]
    started = time.time()
    try:
        stats = _decode_and_judge(cfg, task, todo, path, console, ray) if todo else {"info": {}}
    finally:
        task.close()
    seconds = time.time() - started
    ids = {p.id for p in problems}
    lines = [r for r in finish_predictions(path, [p.id for p in problems]) if str(r["id"]) in ids]
    summary = {
        "task": task.name, "metric": "pass@1" if task.name == "code" else "accuracy", **accuracy(lines),
        "problems": len(problems), "ran_now": len(todo), "rejudged": rejudged, "seconds_now": round(seconds, 1),
        "problems_per_s_now": round(len(todo) / seconds, 3) if todo and seconds > 0 else None,
        "skipped_rows": len(skipped.rows), "data": source_name(source), **_model_info(cfg, stats.pop("info")), **stats,
        "versions": versions(),
        "config": cfg.flat(),
    }
    _rewrite_json(cfg.out_dir / SUMMARY, summary)
    return summary


def _model_info(cfg: EvalConfig, info: dict) -> dict:
    """The model's path and sha256 as the sessions opened it, and the adapter's."""
    from .runner import model_facts
    from .store.records import sha256_file

    facts = model_facts(info, cfg.model)
    if cfg.adapter:
        facts.update(adapter=str(cfg.adapter), adapter_sha256=sha256_file(cfg.adapter))
    return facts


def _rewrite_json(path: Path, obj: dict) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, default=str) + "\n")


def summary_table(summary: dict, title: str):
    """A rich Table: the overall score, then per level and per subject."""
    from rich.table import Table

    table = Table(title=title)
    for col, justify in (("group", "left"), ("n", "right"), ("correct", "right"), (summary["metric"], "right")):
        table.add_column(col, justify=justify)

    def row(name: str, c: dict, **style) -> None:
        pct = "-" if c["score"] is None else f"{100 * c['score']:.1f}%"
        table.add_row(name, str(c["n"]), str(c["correct"]), pct, **style)

    row("all", summary, style="bold")
    for group, prefix in (("by_level", "level "), ("by_subject", "")):
        for name, c in summary.get(group, {}).items():
            row(prefix + name, c)
    return table
