"""The scoring pass: any response under both views, by teacher forcing, as generation records.

Turns a record that generation did not write (a gold solution, another tool's output,
a dataset row) into the per-token fields that generation records, under the base and
the reference view: p_base, p_ref, ranks, argmaxes, and both views' top-k lists (which
the view-overlap analysis needs and generation does not keep). A record from
`dasd-local generate` keeps its prompts and token ids, so scoring it reproduces the
recorded probabilities (up to llama.cpp's batch-shape numerics, DESIGN section 6).

The response is the record's `response_tokens`, else its `response` text, else the
problem's reference solution (a raw dataset row: strategy `gold`). Views come from
prompts.ViewBuilder, probabilities from score.score. Knows records and the engine's
surface; knows nothing about analysis or the CLI.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

from .config import ScoreConfig, resolved
from .errors import ConfigError, InputError
from .store.lock import one_writer
from .tasks import FieldMap, Problem, Task

GOLD = "gold"  # strategy name of a record whose response is the reference solution


@dataclass
class Item:
    """One record ready to score: its output record (without steps) and token ids."""

    record: dict
    base: list[int]
    ref: list[int]
    response: list[int]

    @property
    def cells(self) -> int:
        return max(len(self.base), len(self.ref)) + len(self.response)


def problem_of(row: dict, task: Task, fields: FieldMap, index: int) -> Problem:
    """The problem a row poses: generation-record fields first, else the dataset's columns."""
    try:
        question = row["question"] if "question" in row else task.question(row, fields)
        reference = row["reference_solution"] if "reference_solution" in row else task.reference(row, fields)
    except KeyError as e:
        raise InputError(f"record {row.get('id', index)!r}: no field {e.args[0]!r} (fields: {', '.join(sorted(row))})") from None
    pid = row_id(row, task, fields, index)
    gold = {k: row[c] for k in (*task.gold_fields, *task.meta_fields) if (c := task.column(k, fields)) in row}
    return Problem(pid, str(question), "" if reference is None else str(reference), gold)


def row_id(row: dict, task: Task, fields: FieldMap, index: int) -> str:
    """The id problem_of gives a row (what --sample draws on), without building the problem."""
    return str(row.get("id", row.get(fields.id or task.id_field, index)))


def prepare(row: dict, index: int, engine, builder, cfg: ScoreConfig) -> Item:
    """Prompts and response tokens of a row: recorded token ids where present (exactly what
    generation saw), else rendered through the builder and tokenized."""
    task = builder.task
    if row.get("task") not in (None, task.name):
        raise ConfigError(f"record {row.get('id', index)!r} is from task {row['task']!r}, not --task {task.name}")
    problem = problem_of(row, task, cfg.fields, index)
    views = builder.views(problem)
    base = row.get("base_prompt_tokens") or views.base_tokens
    ref = row.get("reference_prompt_tokens") or views.ref_tokens
    if row.get("response_tokens"):
        response, text, strategy = [int(t) for t in row["response_tokens"]], row.get("response"), row.get("strategy")
    elif isinstance(row.get("response"), str):
        text, strategy = row["response"], row.get("strategy", "scored")
        response = engine.tokenize(text, special=False)  # plain text: never control tokens
    else:
        text, strategy = problem.reference, GOLD
        response = engine.tokenize(text, special=False)
    record = {**row, "id": problem.id, "task": task.name, "strategy": strategy, "question": problem.question,
              "reference_solution": problem.reference, **problem.fields,
              "base_prompt": row.get("base_prompt") or views.base_text,
              "reference_prompt": row.get("reference_prompt") or views.ref_text,
              "base_prompt_tokens": list(base), "reference_prompt_tokens": list(ref),
              "response": text if text is not None else engine.detokenize(response), "response_tokens": response,
              "finish_reason": row.get("finish_reason", "stop")}
    return Item(record, list(base), list(ref), response)


def view_steps(engine, base: list[int], ref: list[int], response: list[int], k: int = 6) -> list[dict]:
    """Per response token: its probability and rank under each view, each view's argmax and
    top-k list (teacher forcing: both views read the same response)."""
    from .decoding.forcing import score

    sb, sr = score(engine, base, response, k), score(engine, ref, response, k)
    steps = []
    for t, tok in enumerate(response):
        steps.append({
            "token": int(tok), "text": engine.token_text(int(tok), special=False).decode("utf-8", "replace"),
            "p_base": float(sb.p[t]), "p_ref": float(sr.p[t]),
            "base_rank": int(sb.rank[t]), "ref_rank": int(sr.rank[t]),
            "argmax_base": int(sb.argmax[t]), "argmax_ref": int(sr.argmax[t]),
            "topk_base": [int(x) for x in sb.topk[t]], "topk_ref": [int(x) for x in sr.topk[t]],
        })
    return steps


def merge_steps(recorded: list | None, scored: list[dict]) -> list[dict]:
    """Scored steps, keeping what only generation knew: each token's category (a decision of
    the rule, not a property of the text) and its recorded candidates."""
    if not recorded or len(recorded) != len(scored):
        return [{**s, "category": None} for s in scored]
    keep = ("category", "candidates")
    return [{**s, **{k: r[k] for k in keep if k in r}} for r, s in zip(recorded, scored)]


def scoring_session(cfg: ScoreConfig):
    """A DecodeSession used only for its engine and views: one sequence, sized later
    (fit_context) once the prompts are tokenized."""
    from .decoding.session import DecodeSession
    from .tasks import get_task

    return DecodeSession(cfg, get_task(cfg.task, cfg.answer_format))


def fit_context(engine, items: list[Item]) -> None:
    """A context as long as the longest prompt + response, capped at the training length
    (longer items are skipped by score_items)."""
    need = max((it.cells for it in items), default=1)
    engine.resize(min(-(-need // 256) * 256, engine.n_ctx_train), 1)


def score_items(engine, items: list[Item], k: int):
    """Yield (item, scored record) or (item, why it was skipped), in order."""
    for item in items:
        if item.cells > engine.config.n_ctx:
            yield item, f"prompt + response ({item.cells} tokens) exceeds the context ({engine.config.n_ctx})"
            continue
        steps = view_steps(engine, item.base, item.ref, item.response, k)
        yield item, {**item.record, "steps": merge_steps(item.record.get("steps"), steps)}


def with_topk(records: list[dict], cfg: ScoreConfig) -> tuple[list[dict], list[str]]:
    """Records whose steps all carry both views' top-k lists: those that lack them are
    scored again (in memory). Returns the records and the ids that could not be scored."""
    todo = [i for i, r in enumerate(records) if r.get("steps") and not has_topk(r)]
    if not todo:
        return records, []
    out, failed = list(records), []
    with scoring_session(cfg) as session:
        engine = session.engine
        items = [prepare(records[i], i, engine, session.builder, cfg) for i in todo]
        fit_context(engine, items)
        for i, (item, result) in zip(todo, score_items(engine, items, cfg.top_k)):
            if isinstance(result, str):
                failed.append(f"{item.record['id']}: {result}")
            else:
                out[i] = result
    return out, failed


def has_topk(record: dict) -> bool:
    steps = record.get("steps") or []
    return bool(steps) and all(s.get("topk_base") and s.get("topk_ref") for s in steps)


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


@dataclass(frozen=True)
class ScoreJob:
    """The scoring pass on Ray: each actor opens the model once and scores block after block."""

    cfg: ScoreConfig

    def open(self) -> "_ScoreRun":
        return _ScoreRun(self.cfg)


class _ScoreRun:
    def __init__(self, cfg: ScoreConfig):
        self.cfg, self.tokens = cfg, 0
        self.session = scoring_session(cfg)
        self.session.open()

    def run(self, payloads: list[dict]):
        engine = self.session.engine
        items = [prepare(p["row"], p["index"], engine, self.session.builder, self.cfg) for p in payloads]
        fit_context(engine, items)
        for item, result in score_items(engine, items, self.cfg.top_k):
            if isinstance(result, str):
                yield item.record["id"], None, result
            else:
                self.tokens += len(item.response)
                yield item.record["id"], result, None

    def stats(self) -> dict:
        return {"emitted": self.tokens}

    def info(self) -> dict:
        return {"model": str(self.session.engine.path)}

    def close(self) -> None:
        self.session.close()
