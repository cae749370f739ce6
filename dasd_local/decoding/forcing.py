"""Teacher forcing: the per-token probabilities of a given response under both views.

Turns any response (a gold solution, another tool's output, a DASD record, a dataset row)
into the per-token fields generation records, under the base and the reference view:
p_base, p_ref, ranks, argmaxes, and both views' top-k lists (which the view-overlap
analysis needs and generation does not keep). A record from `dasd-local generate` keeps its
prompts and token ids, so forcing it reproduces the recorded probabilities (up to
llama.cpp's batch-shape numerics, DESIGN section 6).

The response is the record's `response_tokens`, else its `response` text, else the
problem's reference solution (a raw dataset row: strategy `gold`). `teacher_force` feeds
prompt + response through one sequence in chunks; `with_topk` rescores records in memory
(`stats --overlap`); `ScoreJob` is the scoring pass as a runner job (`score`, here or on
Ray). Knows the engine's surface, the views and the tasks; knows nothing about files.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..config import ScoreConfig
from ..errors import ConfigError, InputError
from ..tasks import FieldMap, Problem, Task
from .rules import logsumexp, prob_of, rank_of, top_k


@dataclass
class Scored:
    p: np.ndarray  # (n,) probability of each response token
    rank: np.ndarray  # (n,) its 0-based rank
    argmax: np.ndarray  # (n,) the view's top token
    topk: np.ndarray  # (n, k) the view's top-k tokens



def teacher_force(engine, prompt: list[int], response: list[int], k: int = 6, seq: int = 0, chunk: int | None = None) -> Scored:
    """Probabilities of `response` after `prompt` under one sequence of `engine`."""
    tokens = list(prompt) + list(response)
    first = len(prompt) - 1  # the position whose logits predict response[0]
    chunk = chunk or engine.config.n_batch
    parts: list[Scored] = []
    engine.drop(seq)
    try:
        for start in range(0, len(tokens) - 1, chunk):
            end = min(start + chunk, len(tokens) - 1)
            want = [p >= first for p in range(start, end)]
            logits = engine.decode(tokens[start:end], list(range(start, end)), [seq] * (end - start), want)
            if len(logits):
                targets = np.array(tokens[max(start, first) + 1:end + 1])
                lse = logsumexp(logits)
                parts.append(Scored(prob_of(logits, lse, targets), rank_of(logits, targets),
                                    logits.argmax(axis=1), top_k(logits, k)))
    finally:
        engine.drop(seq)
    if not parts:
        empty = np.zeros(0)
        return Scored(empty, empty.astype(int), empty.astype(int), np.zeros((0, k), int))
    return Scored(*(np.concatenate([getattr(s, f) for s in parts]) for f in ("p", "rank", "argmax", "topk")))



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
    sb, sr = teacher_force(engine, base, response, k), teacher_force(engine, ref, response, k)
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
    from ..tasks import get_task
    from .session import DecodeSession

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


@dataclass(frozen=True)
class ScoreJob:
    """The scoring pass as a runner job: a session opens the model once and scores block
    after block (here: one block; on Ray: each actor its own)."""

    opts: ScoreConfig

    def open(self) -> ScoreRun:
        return ScoreRun(self.opts)


class ScoreRun:
    """A ScoreJob's open session."""

    def __init__(self, cfg: ScoreConfig):
        self.cfg, self.tokens = cfg, 0
        self.session = scoring_session(cfg)
        self.session.open()

    def run(self, payloads: list[dict], on_step=None):
        """Payloads {"index", "row"}: (id, scored record | None, why not | None) per row; the
        context is sized for the block's longest item (`on_step`: nothing to report per call)."""
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
