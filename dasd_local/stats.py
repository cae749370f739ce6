"""`dasd-local stats`: collect the statistics of runs, print their tables, write JSON and plots.

The statistics themselves live in analysis.py (point estimates) and evidence.py
(bootstrap intervals, paired comparisons, segment distributions); this module only
strings the verb's steps together so the CLI makes one call.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Evidence:
    """The uncertainty and difficulty options of `stats`."""

    ci: bool = True  # bootstrap intervals on every ratio
    boot: int = 1000
    seed: int = 0
    segments: bool = False  # Fig. 2: segment-level PPL per level
    level_field: str | None = None


def _records(paths: list[Path], level_field: str | None) -> list[list[dict]]:
    from .analysis.evidence import relevel
    from .store.records import read_jsonl

    out = [read_jsonl(Path(p))[0] for p in paths]
    return [relevel(r, level_field) for r in out] if level_field else out


def _nonempty(paths: list[Path]) -> tuple[list[Path], list[str]]:
    """Among several files, one without records is noted and left out (a pipeline's stage
    that kept nothing); a single file, or all of them empty, is the one-line error."""
    from .store.records import read_jsonl

    keep = [p for p in paths if not Path(p).is_file() or read_jsonl(Path(p))[0]]
    return (keep, [f"{p}: no records, left out" for p in paths if p not in keep]) if keep else (list(paths), [])


def sample_lines(found: list[dict]) -> list[str]:
    """Per file of `generate --samples` records: its samples per problem, and the
    per-problem yield beside the sample-level pass rate (from the file's verdicts, else
    from the verify manifest beside it, which counted the dropped samples too)."""
    import json

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


def report(paths: list[Path], threshold: float, compare: bool = False, overlap_cfg=None,
           json_out: Path | None = None, plots: Path | None = None, console=None,
           evidence: Evidence = Evidence()) -> list[str]:
    """Print every table (and notes on what is missing) to `console`, write the JSON and
    the figures when asked; returns the lines of records that were skipped."""
    from rich.console import Console

    from .analysis import evidence as ev
    from .analysis.metrics import collect, needs_topk, report_tables, write_json, write_plots

    console = console or Console()
    paths, empty = _nonempty(paths)
    found, problems = collect(paths, threshold, overlap_cfg, evidence.level_field)
    problems = empty + problems
    for table in report_tables(found, compare):
        console.print(table)
    for line in sample_lines(found):
        console.print(line)
    records = _records(paths, evidence.level_field) if evidence.ci or evidence.segments or compare else []
    if evidence.ci or evidence.segments:
        ev.attach(found, records, threshold, evidence.boot, evidence.seed, evidence.segments)
    if evidence.ci:
        console.print(ev.ci_table(found))
    if evidence.segments:
        console.print(ev.segment_view(found))
    paired = None
    if compare and len(paths) == 2:
        paired = ev.compare(records[0], records[1], threshold, evidence.boot, evidence.seed)
        console.print(ev.paired_table(paired, found[0]["label"], found[1]["label"]))
    if needs_topk(found) and overlap_cfg is None:
        console.print("[dim]top-k overlap needs both views' top-k lists: add --overlap, or run `dasd-local score` first[/dim]")
    if json_out:
        write_json(found, json_out, paired)
        console.print(f"wrote {json_out}")
    if plots:
        console.print("wrote " + ", ".join(str(p) for p in write_plots(found, plots)))
    return problems
