"""The settings of the verbs that read records: `stats` and `view`. Standard library only."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .fields import check_fields, setting

# A response token is "high-PPL" when its perplexity under the base view, 1 / p_base, is
# above this (p_base < 0.4): the paper's Table 3 threshold, and every default that uses it.
HIGH_PPL = 2.5


@dataclass(frozen=True)
class StatsConfig:
    """`stats`: which files, which tables, intervals and figures."""

    paths: tuple = setting((), "Generation, verify or score outputs.", lambda v: len(v) > 0, "at least one RUN.jsonl",
                           metavar="RUN.jsonl...", argument=True)
    threshold: float = setting(HIGH_PPL, "High-PPL threshold: PPL = 1 / p_base above it (paper: 2.5).",
                               lambda v: v > 1, "> 1 (PPL is at least 1)", flag="--threshold")
    json_out: Path | None = setting(None, "Write all statistics to this JSON file.", flag="--json")
    plots: Path | None = setting(None, "Write PNG figures (the paper's Fig. 3, 5, 7, Table 3) here.", flag="--plots")
    compare: bool = setting(False, "Strategies side by side: one table per metric, levels down.",
                            flag="--compare/--no-compare")
    overlap: bool = setting(False, "Rescore records without both views' top-k lists (teacher forcing; needs the model).",
                            flag="--overlap/--no-overlap")
    model: str | None = setting(None, "Model for --overlap (default: the embedded SmolLM2-135M).", flag="--model",
                                short="-m")
    ci: bool = setting(True, "95% bootstrap intervals over problems on every ratio.", flag="--ci/--no-ci")
    boot: int = setting(1000, "Bootstrap resamples.", lambda v: v >= 10, ">= 10", flag="--boot")
    seed: int = setting(0, "Bootstrap seed (same seed, same intervals).", flag="--seed")
    segments: bool = setting(False, "Segment-level (per line) PPL distributions per level (Fig. 2).",
                             flag="--segments/--no-segments")
    level_field: str | None = setting(None, "Record field read as the difficulty level (default: level).",
                                      flag="--level-field")

    def __post_init__(self):
        check_fields(self)


@dataclass(frozen=True)
class ViewConfig:
    """`view`: one run's responses, token by token, in the terminal or as an HTML page."""

    path: Path = setting(Path(), "A generation output JSONL.", metavar="PATH", argument=True)
    id: str | None = setting(None, "Show only this problem.", flag="--id")
    candidates: bool = setting(False, "List each non-consistent token's candidates with p_R and p_B.",
                               flag="--candidates/--no-candidates")
    limit: int = setting(3, "How many records to show without --id.", flag="--limit")
    model: str | None = setting(None, "Model to spell candidate tokens (default: the run's).", flag="--model", short="-m")
    html: Path | None = setting(None, "Write every record as one self-contained HTML report here instead.",
                                flag="--html")

    def __post_init__(self):
        check_fields(self)
