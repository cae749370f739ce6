"""`dasd-local stats`: collect the statistics of runs, print their tables, write JSON and plots.

The statistics themselves live in analysis.py; this module only strings the verb's
steps together so the CLI makes one call.
"""

from __future__ import annotations

from pathlib import Path


def report(paths: list[Path], threshold: float, compare: bool = False, overlap_cfg=None,
           json_out: Path | None = None, plots: Path | None = None, console=None) -> list[str]:
    """Print every table (and notes on what is missing) to `console`, write the JSON and
    the figures when asked; returns the lines of records that were skipped."""
    from rich.console import Console

    from .analysis import collect, needs_topk, report_tables, write_json, write_plots

    console = console or Console()
    found, problems = collect(paths, threshold, overlap_cfg)
    for table in report_tables(found, compare):
        console.print(table)
    if needs_topk(found) and overlap_cfg is None:
        console.print("[dim]top-k overlap needs both views' top-k lists: add --overlap, or run `dasd-local score` first[/dim]")
    if json_out:
        write_json(found, json_out)
        console.print(f"wrote {json_out}")
    if plots:
        console.print("wrote " + ", ".join(str(p) for p in write_plots(found, plots)))
    return problems
