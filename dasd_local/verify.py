"""`dasd-local verify`: judge generated records against their gold data; keep the good ones.

Reads generation records (JSONL: `id`, `strategy`, `response`, `reference_solution`
and the task's gold fields at top level), adds `correct` and `extracted` to each, and
writes the kept records: the correct ones, plus, with `--on-fail keep-reference`, the
gold solution in place of a wrong rewrite (SDFT's original recipe). With `--dedupe`, one
of the kept records with the same response within a problem (`generate --samples`, whose
records name their `problem_id`); the report counts problems with a correct sample beside
the records. Rewrites of SDFT's published form must also pass its phrase filter
(decoding/baselines.py). Malformed lines and records the task cannot judge are counted and
skipped with their file:line. Knows the record layout and the tasks' verify(); knows
nothing about models.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from .config import VerifyConfig  # noqa: F401  (callers import it from here too)
from .errors import ConfigError, InputError
from .store.lock import one_writer
from .decoding.baselines import sdft_rejects
from .analysis.metrics import level_key
from .schema import problem_id_of
from .store.records import atomic_write_text, iter_jsonl, jsonl_text, no_records, output_dir
from .tasks import Task, Verdict, get_task

ON_FAIL = ("drop", "keep-reference")
# Per-token provenance of the generated response: meaningless once the response is the
# gold solution, and training would otherwise take these token ids for the response.
TOKEN_FIELDS = ("response_tokens", "steps", "stop_step")


@dataclass
class Report:
    """Counts per (strategy, level): [records, correct, kept]; skipped rows with reasons."""

    groups: dict = field(default_factory=lambda: defaultdict(lambda: [0, 0, 0]))
    skipped: list[str] = field(default_factory=list)
    replaced: int = 0
    duplicates: int = 0
    problems: dict = field(default_factory=dict)  # problem id -> has a correct (generated) sample
    sampled: bool = False  # records of `generate --samples N`

    def add(self, record: dict, kept: bool) -> None:
        self.sampled = self.sampled or "problem_id" in record
        pid = problem_id_of(record)
        self.problems[pid] = self.problems.get(pid, False) or bool(
            record["correct"] and record.get("response_source") != "reference")
        level = record.get("level")
        g = self.groups[(str(record.get("strategy", "-")), "-" if level is None else str(level))]
        g[0] += 1
        g[1] += bool(record["correct"] and record.get("response_source") != "reference")
        g[2] += kept

    def solved(self) -> int:
        """Problems with at least one correct generated sample (the per-problem yield)."""
        return sum(self.problems.values())

    def totals(self) -> tuple[int, int, int]:
        return tuple(sum(g[i] for g in self.groups.values()) for i in range(3))


def located_records(path: Path, skipped: list[str]) -> Iterator[tuple[str, dict]]:
    """(file:line, record) for every JSON object line; anything else is skipped."""
    for where, rec, why in iter_jsonl(path):
        if why is None:
            yield where, rec
        else:
            skipped.append(f"{where}: {why}")


def resolve_task(name: str | None, records: list[tuple[str, dict]]) -> Task:
    """--task, else the records' own `task`; they must agree when both are given. Answers
    are read back in the format the records asked for (`answer_format`, else the task's
    default)."""
    if name:
        get_task(name)  # an unknown name is its own error
    own = next((r.get("task") for _, r in records if r.get("task")), None)
    if name and own and name != own:
        raise ConfigError(f"--task {name} given, but the records were generated with task {own!r}")
    if not (name or own):
        raise ConfigError("the records name no task: pass --task math|code|mcq")
    answer_format = next((r["answer_format"] for _, r in records if r.get("answer_format")), None)
    return get_task(name or own, answer_format)


def usable(task: Task, records: list[tuple[str, dict]], skipped: list[str]) -> list[tuple[str, dict]]:
    """Records with a response and the task's gold fields. When the very first record
    lacks a gold field the file is wrong as a whole (another task's output): an error."""
    out = []
    for where, rec in records:
        missing = "response" if not isinstance(rec.get("response"), str) else task.missing_gold(rec)
        if missing and not out and missing != "response":
            slot = task.gold_slots.get(missing)
            hint = f"; generate with --{slot}-field COLUMN to carry it from your data" if slot else ""
            raise InputError(f"{where}: no field {missing!r}, which task {task.name!r} needs to verify "
                             f"(fields: {', '.join(sorted(rec))}){hint}")
        if missing:
            skipped.append(f"{where}: no field {missing!r}")
        else:
            out.append((where, rec))
    return out


def published_sdft(record: dict) -> bool:
    """Generated by SDFT in its published form, whose rewrites also pass its phrase filter."""
    config = record.get("config") if isinstance(record.get("config"), dict) else {}
    return record.get("strategy") == "self-distill" and config.get("baseline_form") == "published"


def judge(record: dict, verdict: Verdict, on_fail: str) -> dict | None:
    """The record to write (None: dropped), with `correct`, `extracted`, `response_source`."""
    hit = sdft_rejects(record["response"]) if verdict.correct and published_sdft(record) else None
    if hit:
        verdict = Verdict(False, verdict.extracted, f"SDFT filter: the rewrite contains {hit!r}")
    out = {**record, "correct": verdict.correct, "extracted": verdict.extracted, "verify_detail": verdict.detail}
    if verdict.correct:
        return {**out, "response_source": "generated"}
    if on_fail == "drop" or not record.get("reference_solution"):
        return None
    kept = {k: v for k, v in out.items() if k not in TOKEN_FIELDS}
    # The gold solution is complete: it must not inherit the rewrite's finish_reason
    # (a rewrite cut at `length` would make training drop the gold's end-of-turn label).
    return {**kept, "response": record["reference_solution"], "rejected_response": record["response"],
            "rejected_finish_reason": record.get("finish_reason"), "finish_reason": "stop",
            "response_source": "reference", "rewrite_correct": False, "correct": True}


def write_atomic(path: Path, records: list[dict]) -> None:
    """All kept records at once (temp + fsync + rename): a kill leaves the old output or the
    new one, never part of it; verifying again gives the same file."""
    output_dir(path, "--out")
    atomic_write_text(path, jsonl_text(records))


@one_writer(lambda inp, out, cfg: out)
def verify_file(inp: Path, out: Path, cfg: VerifyConfig) -> Report:
    """Verify every usable record of `inp`; write the kept ones to `out` (input order)."""
    if Path(inp).resolve() == Path(out).resolve():
        raise ConfigError(f"-o {out} is the input file: choose another output path")
    report = Report()
    records = list(located_records(Path(inp), report.skipped))
    if not records:
        raise no_records(inp, report.skipped)
    task = resolve_task(cfg.task, records)
    task.set_timeout(cfg.timeout_s)
    todo = usable(task, records, report.skipped)
    kept, seen = [], set()
    try:
        verdicts = task.verify_many(((r["response"], r) for _, r in todo), cfg.workers)
        for (_, rec), verdict in zip(todo, verdicts):
            result = judge(rec, verdict, cfg.on_fail)
            duplicate = False
            if result is not None and cfg.dedupe:
                key = (problem_id_of(result), tuple(result.get("response_tokens") or ()) or result["response"])
                duplicate = key in seen
                seen.add(key)
            report.duplicates += duplicate
            kept_now = result is not None and not duplicate  # a duplicate still counts as correct
            report.replaced += bool(kept_now and result["response_source"] == "reference")
            report.add(result or {**rec, "correct": False}, kept_now)
            if kept_now:
                kept.append(result)
    finally:
        task.close()
    write_atomic(Path(out), kept)
    write_manifest(Path(inp), Path(out), task, cfg, report)
    return report


def write_manifest(inp: Path, out: Path, task: Task, cfg: VerifyConfig, report: Report) -> None:
    """OUT.manifest.json: verify's counts and the input's own manifest (model, sha256, data),
    so the kept file still says where it came from (`export` writes them into its card)."""
    from .store.records import atomic_write_text, sidecar

    n, correct, kept = report.totals()
    source = sidecar(inp, "manifest.json")
    manifest = {"verb": "verify", "source": str(inp), "task": task.name, "on_fail": cfg.on_fail,
                "counts": {"records": n, "correct": correct, "kept": kept, "dropped": n - kept,
                           "replaced": report.replaced, "skipped": len(report.skipped),
                           "duplicates": report.duplicates, "problems": len(report.problems),
                           "problems_with_a_correct_sample": report.solved()},
                "source_manifest": json.loads(source.read_text(encoding="utf-8")) if source.is_file() else None}
    atomic_write_text(sidecar(out, "manifest.json"), json.dumps(manifest, indent=2) + "\n")


def report_table(report: Report, title: str):
    """A rich Table of the report (rows per strategy and level, then the total)."""
    from rich.table import Table

    table = Table(title=title)
    for col in ("strategy", "level", "records", "correct", "accuracy", "kept"):
        table.add_column(col, justify="left" if col in ("strategy", "level") else "right")

    def row(name: str, level: str, n: int, ok: int, kept: int, **style) -> None:
        table.add_row(name, level, str(n), str(ok), f"{100 * ok / n:.1f}%" if n else "-", str(kept), **style)

    order = sorted(report.groups, key=lambda k: (k[0], level_key(k[1])))
    for strategy, level in order:
        row(strategy, level, *report.groups[(strategy, level)])
    row("total", "", *report.totals(), style="bold")
    return table
