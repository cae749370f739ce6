"""Why the data is better: high-PPL ratios, token categories, view overlap; tables and plots.

Pure functions over generation (or scoring-pass) records, per file and per difficulty
`level`, mirroring the paper's evidence:
- high-PPL token ratio under the base view (Table 3): share of response tokens with
  PPL = 1 / p_base above the threshold (2.5, i.e. p_base < 0.4), plus the data's
  perplexity exp(mean -log p_base) and the arithmetic mean token PPL (mean of 1 / p_base,
  which a few very unlikely tokens dominate);
- category shares (Fig. 5, Fig. 7): consistent / reserved / base_selected / hard over the
  tokens that carry a category (DASD runs); filtered = base_selected + hard. Like the paper,
  only verified-correct responses count when a file carries verdicts (`correct`; scope
  "correct"), else every record does (scope "all");
- verification pass rate where `correct` exists (a rewrite replaced by the gold solution
  counts as failed);
- view overlap (Fig. 3), per response position: reference top-1 == base top-1 (from the
  argmaxes); reference top-1 within base top-3 / top-6; base top-3 within reference
  top-3 / top-6, as the covered share of the base's 3 tokens. All but the first need both
  views' top-k lists (`topk_base`, `topk_ref`), which the scoring pass writes.
Knows the record layout; knows nothing about models (scoring.py recomputes top-k lists).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from ..store.records import problem_id_of

HIGH_PPL = 2.5
CATEGORIES = ("consistent", "reserved", "base_selected", "hard")
OVERLAP = ("top1_agree", "ref1_in_base3", "ref1_in_base6", "base3_in_ref3", "base3_in_ref6")
NO_LEVEL = "-"


def step_overlap(step: dict) -> dict[str, float]:
    """The overlap metrics measurable at one step (each 0..1); missing ones are left out."""
    out = {}
    tb, tr = step.get("topk_base"), step.get("topk_ref")
    a_b = tb[0] if tb else step.get("argmax_base")
    a_r = tr[0] if tr else step.get("argmax_ref")
    if a_b is not None and a_r is not None:
        out["top1_agree"] = float(a_b == a_r)
    if tb and tr and len(tb) >= 6 and len(tr) >= 6:
        out["ref1_in_base3"] = float(tr[0] in tb[:3])
        out["ref1_in_base6"] = float(tr[0] in tb[:6])
        out["base3_in_ref3"] = len(set(tb[:3]) & set(tr[:3])) / 3
        out["base3_in_ref6"] = len(set(tb[:3]) & set(tr[:6])) / 3
    return out


@dataclass
class Tally:
    """Counts over a group of records; `summary()` turns them into ratios."""

    threshold: float = HIGH_PPL
    category_scope: str = "all"  # "correct": categories of verified-correct responses only
    records: int = 0
    tokens: int = 0  # response tokens with a base probability
    high_ppl: int = 0
    nll: float = 0.0
    ppl_sum: float = 0.0
    categories: Counter = field(default_factory=Counter)
    judged: int = 0
    passed: int = 0
    overlap: Counter = field(default_factory=Counter)
    overlap_n: Counter = field(default_factory=Counter)
    problems: set = field(default_factory=set)  # `generate --samples`: a problem's samples count once
    solved: set = field(default_factory=set)  # problems with a verified-correct sample
    sampled: bool = False

    def add(self, record: dict) -> None:
        self.records += 1
        correct = record.get("rewrite_correct", record.get("correct")) is True  # a replaced rewrite failed
        pid = problem_id_of(record)
        self.problems.add(pid)
        self.sampled = self.sampled or "problem_id" in record
        if "correct" in record:
            self.judged += 1
            self.passed += correct
            if correct:
                self.solved.add(pid)
        for step in record.get("steps") or []:
            self._add_step(step, self.category_scope == "all" or correct)

    def _add_step(self, step: dict, categorize: bool) -> None:
        p = step.get("p_base")
        if p is not None:
            p = max(float(p), 1e-300)  # an underflowed probability is just very unlikely
            self.tokens += 1
            self.high_ppl += 1 / p > self.threshold
            self.nll -= math.log(p)
            self.ppl_sum += 1 / p
        if categorize and step.get("category") is not None:
            self.categories[step["category"]] += 1
        for k, v in step_overlap(step).items():
            self.overlap[k] += v
            self.overlap_n[k] += 1

    def summary(self) -> dict:
        n, cats = self.tokens, sum(self.categories.values())
        shares = {c: self.categories[c] / cats for c in CATEGORIES} if cats else None
        return {
            "records": self.records, "tokens": n,
            "high_ppl_ratio": self.high_ppl / n if n else None,
            "ppl": math.exp(self.nll / n) if n else None,
            "mean_token_ppl": self.ppl_sum / n if n else None,
            "categorized": cats, "category_shares": shares, "category_scope": self.category_scope,
            "filtered_share": shares["base_selected"] + shares["hard"] if shares else None,
            "judged": self.judged, "pass_rate": self.passed / self.judged if self.judged else None,
            "problems": len(self.problems), "sampled": self.sampled,
            "problems_with_a_correct_sample": len(self.solved) if self.judged else None,
            "overlap": {k: self.overlap[k] / self.overlap_n[k] if self.overlap_n[k] else None for k in OVERLAP},
            "overlap_steps": {k: self.overlap_n[k] for k in OVERLAP},
        }


def level_of(record: dict) -> str:
    level = record.get("level")
    return NO_LEVEL if level is None else str(level)


def level_key(level: str) -> tuple:
    """Numeric levels in order, then the rest, the missing level last."""
    digits = level.removeprefix("Level ").strip()
    return (0, int(digits), "") if digits.isdigit() else (1 + (level == NO_LEVEL), 0, level)


def summarize(records: list[dict], threshold: float = HIGH_PPL) -> dict:
    """{'all': summary, 'by_level': {level: summary}} (by_level empty when no record has a level)."""
    scope = "correct" if any("correct" in r for r in records) else "all"
    total, levels = Tally(threshold, scope), {}
    for rec in records:
        total.add(rec)
        levels.setdefault(level_of(rec), Tally(threshold, scope)).add(rec)
    by_level = {} if set(levels) <= {NO_LEVEL} else {k: levels[k].summary() for k in sorted(levels, key=level_key)}
    return {"all": total.summary(), "by_level": by_level}


def file_stats(path: Path, records: list[dict], threshold: float = HIGH_PPL, label: str | None = None) -> dict:
    """Summary of one file's records, labelled by its strategy (or its name when mixed)."""
    strategies = sorted({str(r.get("strategy", "?")) for r in records})
    return {"path": str(path), "label": label or (strategies[0] if len(strategies) == 1 else Path(path).stem),
            "strategies": strategies, "threshold": threshold, **summarize(records, threshold)}


def unique_labels(stats: list[dict]) -> None:
    """Two files of the same strategy are told apart by their file names."""
    count = Counter(s["label"] for s in stats)
    for s in stats:
        if count[s["label"]] > 1:
            s["label"] = f"{s['label']} ({Path(s['path']).stem})"


def collect(paths: list[Path], threshold: float = HIGH_PPL, overlap_cfg=None,
            level_field: str | None = None) -> tuple[list[dict], list[str]]:
    """Stats of every file and the problems found (malformed lines, records not rescored).
    With `overlap_cfg` (a scoring.ScoreConfig), records without both views' top-k lists are
    rescored by teacher forcing first; `level_field`: the column read as the level."""
    from ..errors import ConfigError
    from ..store.records import read_records

    if not threshold > 1:
        raise ConfigError(f"threshold = {threshold} is not allowed: expected > 1 (PPL is at least 1)")
    stats, problems = [], []
    for path in paths:
        records, bad = read_records(Path(path))
        problems += bad
        records = [{**r, "level": r.get(level_field)} for r in records] if level_field else records
        if overlap_cfg is not None:
            records, failed = _rescored(records, overlap_cfg)
            problems += [f"{path}: {f}" for f in failed]
        stats.append(file_stats(Path(path), records, threshold))
    unique_labels(stats)
    return stats, problems


def _rescored(records: list[dict], cfg) -> tuple[list[dict], list[str]]:
    from dataclasses import replace

    from ..score import with_topk

    task = next((r["task"] for r in records if r.get("task")), cfg.task)
    return with_topk(records, replace(cfg, task=task))


# ---- tables ------------------------------------------------------------------------------

def pct(x: float | None, digits: int = 2) -> str:
    return "-" if x is None else f"{100 * x:.{digits}f}%"


def num(x: float | None) -> str:
    return "-" if x is None else f"{x:.3g}" if x < 1000 else f"{x:.3e}"


def _rows(stats: list[dict]):
    """(path and strategy, level, summary) for each file's total, then its levels."""
    for s in stats:
        yield f"{s['path']}\n({', '.join(s['strategies'])})", "all", s["all"]
        for level, summary in s["by_level"].items():
            yield "", level, summary


def _table(title: str, cols: list[str]):
    from rich.table import Table

    table = Table(title=title, box=None, pad_edge=False, header_style="bold underline")  # no rules: fits 80 columns
    for c in cols:  # whole headers over the numbers; the path folds into what is left, never cut
        table.add_column(c.replace("_", "_\n"), justify="left" if c in ("file", "level") else "right", overflow="fold", no_wrap=c != "file")
    return table


def token_table(stats: list[dict]):
    """High-PPL ratio, perplexity and pass rate per file and level (Table 3)."""
    th = stats[0]["threshold"] if stats else HIGH_PPL
    table = _table(f"response tokens under the base view (high PPL: PPL > {th:g})",
                   ["file", "level", "records", "tokens", "high-PPL", "PPL", "mean tok PPL", "pass"])
    for label, level, s in _rows(stats):
        table.add_row(label, level, str(s["records"]), str(s["tokens"]), pct(s["high_ppl_ratio"]), num(s["ppl"]),
                      num(s["mean_token_ppl"]), pct(s["pass_rate"], 1), style="bold" if level == "all" else None)
    return table


def category_table(stats: list[dict]):
    """How each token was chosen (Fig. 5, Fig. 7), for files whose tokens carry a category."""
    table = _table("token categories (shares of categorized tokens; filtered = base_selected + hard, not a fifth; records: "
                   "verified-correct ones, or all where a file has no verdicts)", ["file", "level", "records", "tokens", *CATEGORIES, "filtered"])
    for label, level, s in _rows([s for s in stats if s["all"]["category_shares"]]):
        shares = s["category_shares"] or {}
        table.add_row(label, level, s["category_scope"], str(s["categorized"]), *(pct(shares.get(c)) for c in CATEGORIES),
                      pct(s["filtered_share"]), style="bold" if level == "all" else None)
    return table


def overlap_table(stats: list[dict]):
    """The views' agreement per file and level (Fig. 3)."""
    table = _table("view overlap (reference R vs base B, per response position)",
                   ["file", "level", "steps", "R1 = B1", "R1 in B3", "R1 in B6", "B3 in R3", "B3 in R6"])
    for label, level, s in _rows(stats):
        table.add_row(label, level, str(s["overlap_steps"]["top1_agree"]), *(pct(s["overlap"][k], 1) for k in OVERLAP),
                      style="bold" if level == "all" else None)
    return table


COMPARE = {  # metric -> (title, value of a summary)
    "high_ppl_ratio": ("high-PPL token ratio", lambda s: s["high_ppl_ratio"]),
    "ppl": ("perplexity under the base view", lambda s: s["ppl"]),
    "filtered_share": ("filtered tokens (base_selected + hard)", lambda s: s["filtered_share"]),
    "pass_rate": ("verification pass rate", lambda s: s["pass_rate"]),
    "top1_agree": ("reference top-1 == base top-1", lambda s: s["overlap"]["top1_agree"]),
    "ref1_in_base3": ("reference top-1 within base top-3", lambda s: s["overlap"]["ref1_in_base3"]),
}


def compare_tables(stats: list[dict]) -> list:
    """One table per metric: levels down, files (strategies) across; metrics no file has are left out."""
    from rich.table import Table

    levels = sorted({lv for s in stats for lv in s["by_level"]}, key=level_key)
    tables = []
    for metric, (title, value) in COMPARE.items():
        if all(value(s["all"]) is None for s in stats):
            continue
        table = Table(title=title)
        table.add_column("level")
        for s in stats:
            table.add_column(s["label"], justify="right")
        fmt = num if metric == "ppl" else pct
        for level in ["all", *levels]:
            cells = [s["all"] if level == "all" else s["by_level"].get(level) for s in stats]
            table.add_row(level, *(fmt(value(c)) if c else "-" for c in cells), style="bold" if level == "all" else None)
        tables.append(table)
    return tables


def report_tables(stats: list[dict], compare: bool = False) -> list:
    """The tables `dasd-local stats` prints: per file and level, or strategies side by side."""
    if compare:
        return compare_tables(stats)
    tables = [token_table(stats)]
    if any(s["all"]["category_shares"] for s in stats):
        tables.append(category_table(stats))
    return tables + ([overlap_table(stats)] if any(s["all"]["overlap_steps"]["top1_agree"] for s in stats) else [])


def needs_topk(stats: list[dict]) -> bool:
    """Some file has tokens but no top-k lists: the finer overlap metrics need a scoring pass."""
    return any(s["all"]["tokens"] and not s["all"]["overlap_steps"]["ref1_in_base3"] for s in stats)


# ---- plots (matplotlib, the `analysis` extra) ----------------------------------------------

def _levels(s: dict) -> list[tuple[str, dict]]:
    return [("all", s["all"]), *s["by_level"].items()]


def _axis(stats: list[dict]) -> list[str]:
    """The x axis of a by-level figure: all, then every level any file has."""
    return ["all", *sorted({lv for s in stats for lv in s["by_level"]}, key=level_key)]


def _tick(level: str) -> str:
    return level if level in ("all", NO_LEVEL) else f"L{level}"


def _series(s: dict, levels: list[str], value) -> list[float]:
    """value(summary) x 100 per level; NaN (nothing drawn) where the file lacks it."""
    cells = dict(_levels(s))
    vals = [value(cells[lv]) if lv in cells else None for lv in levels]
    return [float("nan") if v is None else 100 * v for v in vals]


def _grouped_bars(ax, stats: list[dict], value, ylabel: str) -> None:
    """x = levels (all first), one bar per file."""
    import numpy as np

    levels = _axis(stats)
    width = 0.8 / max(len(stats), 1)
    x = np.arange(len(levels))
    for i, s in enumerate(stats):
        ax.bar(x + (i - (len(stats) - 1) / 2) * width, _series(s, levels, value), width, label=s["label"])
    ax.set_xticks(x, [_tick(lv) for lv in levels])
    ax.set_ylabel(ylabel)
    ax.legend(fontsize="small")


def plot_categories(stats: list[dict], ax) -> None:
    """Fig. 5: each DASD file's token categories as one stacked bar."""
    with_cats = [s for s in stats if s["all"]["category_shares"]]
    left = [0.0] * len(with_cats)
    for c in CATEGORIES:
        ys = [100 * s["all"]["category_shares"][c] for s in with_cats]
        bars = ax.barh([s["label"] for s in with_cats], ys, left=left, label=c)
        ax.bar_label(bars, labels=[f"{y:.1f}%" if y >= 4 else "" for y in ys], label_type="center", fontsize="small")
        left = [a + b for a, b in zip(left, ys)]
    ax.set_xlabel("share of response tokens (%)")
    ax.set_xlim(0, 100)
    ax.legend(ncol=4, fontsize="small", loc="lower center", bbox_to_anchor=(0.5, 1.0))


def plot_filtered(stats: list[dict], ax) -> None:
    """Fig. 7: filtered tokens split into base_selected and hard, by level."""
    import numpy as np

    with_cats = [s for s in stats if s["all"]["category_shares"]]
    levels = _axis(with_cats)
    width = 0.8 / max(len(with_cats), 1)
    for i, s in enumerate(with_cats):
        x = np.arange(len(levels)) + (i - (len(with_cats) - 1) / 2) * width
        sel = _series(s, levels, lambda c: c["category_shares"] and c["category_shares"]["base_selected"])
        hard = _series(s, levels, lambda c: c["category_shares"] and c["category_shares"]["hard"])
        ax.bar(x, sel, width, label=f"{s['label']}: base_selected")
        ax.bar(x, hard, width, bottom=sel, label=f"{s['label']}: hard", hatch="//")
    ax.set_xticks(np.arange(len(levels)), [_tick(lv) for lv in levels])
    ax.set_ylabel("share of response tokens (%)")
    ax.legend(fontsize="small")


def plot_overlap(s: dict, ax) -> None:
    """Fig. 3: the views' agreement across levels, one line per metric."""
    levels = _axis([s])
    names = {"top1_agree": "R top-1 = B top-1", "ref1_in_base3": "R top-1 in B top-3",
             "ref1_in_base6": "R top-1 in B top-6", "base3_in_ref3": "B top-3 in R top-3",
             "base3_in_ref6": "B top-3 in R top-6"}
    for k in OVERLAP:
        ys = _series(s, levels, lambda c: c["overlap"][k])
        if any(y == y for y in ys):  # not all NaN
            ax.plot([_tick(lv) for lv in levels], ys, marker="o", label=names[k])
    ax.set_title(s["label"])
    ax.set_ylim(top=100)
    ax.set_ylabel("share of positions (%)")
    ax.legend(fontsize="small")


def write_plots(stats: list[dict], out_dir: Path) -> list[Path]:
    """PNG figures mirroring the paper's; a figure whose data no file has is not drawn."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    figures = [("high_ppl_by_level.png", lambda ax: _grouped_bars(
        ax, stats, lambda c: c["high_ppl_ratio"], f"high-PPL tokens (%), PPL > {stats[0]['threshold']:g}"), 1)]
    if any(s["all"]["category_shares"] for s in stats):
        figures += [("categories.png", lambda ax: plot_categories(stats, ax), 1),
                    ("filtered_by_level.png", lambda ax: plot_filtered(stats, ax), 1)]
    with_overlap = [s for s in stats if s["all"]["overlap_steps"]["top1_agree"]]
    if with_overlap:
        figures.append(("overlap_by_level.png", lambda axes: [plot_overlap(s, ax) for s, ax in zip(with_overlap, axes)],
                        len(with_overlap)))
    written = []
    for name, draw, n in figures:
        fig, axes = plt.subplots(1, n, figsize=(6.4 * n, 4.2), squeeze=False)
        draw(axes[0] if n > 1 or name.startswith("overlap") else axes[0][0])
        fig.tight_layout()
        fig.savefig(out_dir / name, dpi=120)
        plt.close(fig)
        written.append(out_dir / name)
    return written


def write_json(stats: list[dict], path: Path, paired: dict | None = None) -> None:
    import json

    from ..store.records import atomic_write_text

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(Path(path), json.dumps({"files": stats, **({"paired": paired} if paired else {})}, indent=2) + "\n")
