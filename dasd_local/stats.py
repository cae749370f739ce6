"""`dasd-local stats`: the statistics of runs: tables, intervals, JSON and plots.

Reads each file once; with `--overlap`, has the records that lack both views' top-k lists
rescored by teacher forcing (decoding.forcing) first, so the tables, the intervals and the
JSON all come from the same records. The numbers live in analysis/ (metrics, intervals,
tables, plots); this module only strings the verb's steps together.
"""

from __future__ import annotations

import json
from pathlib import Path

from .config import ScoreConfig, StatsConfig


def read(paths: tuple, level_field: str | None) -> tuple[list[tuple[Path, list[dict]]], list[str]]:
    """(path, records) of every file, each read once, and the problems found. Among several
    files, one without records is noted and left out (a pipeline's stage that kept
    nothing); a single file, or all of them empty, is the one-line error."""
    from .analysis.metrics import relevel
    from .store.records import no_records, read_jsonl

    runs, problems, empty = [], [], []
    for p in map(Path, paths):
        records, bad = read_jsonl(p)
        problems += bad
        if not records:
            empty.append((p, bad))
            continue
        runs.append((p, relevel(records, level_field) if level_field else records))
    if not runs:
        raise no_records(*empty[0])
    return runs, [f"{p}: no records, left out" for p, _ in empty] + problems


def rescore(runs: list[tuple[Path, list[dict]]], model: str | None) -> tuple[list, list[str]]:
    """Every run with its records' top-k lists (teacher forcing where they lack them)."""
    from .decoding.forcing import with_topk

    out, failed = [], []
    for path, records in runs:
        task = next((r["task"] for r in records if r.get("task")), "math")
        scored, bad = with_topk(records, ScoreConfig(model=model, task=task))
        out.append((path, scored))
        failed += [f"{path}: {f}" for f in bad]
    return out, failed


def sample_lines(found: list[dict]) -> list[str]:
    """Per file of `generate --samples` records: its samples per problem, and the
    per-problem yield beside the sample-level pass rate (from the file's verdicts, else
    from the verify manifest beside it, which counted the dropped samples too)."""
    from .store.records import sidecar

    lines = []
    for f in found:
        s = f["all"]
        if not s.get("sampled"):
            continue
        line = f"{f['label']}: {s['records']} samples of {s['problems']} problems"
        side = sidecar(Path(f["path"]), "manifest.json")
        counts = json.loads(side.read_text(encoding="utf-8")).get("counts", {}) if side.is_file() else {}
        if "problems_with_a_correct_sample" in counts:
            line += (f"; verify: {counts['problems_with_a_correct_sample']} of {counts['problems']} problems with a "
                     f"correct sample, {counts['correct']} of {counts['records']} samples correct")
        elif s["problems_with_a_correct_sample"] is not None:
            line += (f"; {s['problems_with_a_correct_sample']} with a correct sample, "
                     f"pass rate {100 * s['pass_rate']:.1f}% of samples")
        lines.append(line)
    return lines


def write_json(found: list[dict], path: Path, paired: dict | None = None) -> None:
    from .store.records import atomic_write_text

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(Path(path), json.dumps({"files": found, **({"paired": paired} if paired else {})}, indent=2) + "\n")


def stats(cfg: StatsConfig, console=None) -> dict:
    """Print every table (and notes on what is missing) to `console`, write the JSON and
    the figures when asked; returns {"files": per-file statistics (with intervals under
    "ci"), "paired": the --compare difference or None, "skipped": lines of records left out}."""
    from rich.console import Console

    from .analysis import intervals, tables
    from .analysis.metrics import collect_runs

    console = console or Console()
    runs, problems = read(cfg.paths, cfg.level_field)
    if cfg.overlap:
        runs, failed = rescore(runs, cfg.model)
        problems += failed
    found = collect_runs(runs, cfg.threshold)
    for table in tables.report_tables(found, cfg.compare):
        console.print(table)
    for line in sample_lines(found):
        console.print(line)
    records = [r for _, r in runs]
    if cfg.ci or cfg.segments:
        intervals.attach(found, records, cfg.threshold, cfg.boot, cfg.seed, cfg.segments)
    if cfg.ci:
        console.print(tables.ci_table(found))
    if cfg.segments:
        console.print(tables.segment_view(found))
    paired = None
    if cfg.compare and len(runs) == 2:
        paired = intervals.compare(records[0], records[1], cfg.threshold, cfg.boot, cfg.seed)
        console.print(tables.paired_table(paired, found[0]["label"], found[1]["label"]))
    if tables.needs_topk(found) and not cfg.overlap:
        console.print("[dim]top-k overlap needs both views' top-k lists: add --overlap, or run `dasd-local score` first[/dim]")
    if cfg.json_out:
        write_json(found, cfg.json_out, paired)
        console.print(f"wrote {cfg.json_out}")
    if cfg.plots:
        from .analysis.plots import write_plots

        console.print("wrote " + ", ".join(str(p) for p in write_plots(found, cfg.plots)))
    return {"files": found, "paired": paired, "skipped": problems}
