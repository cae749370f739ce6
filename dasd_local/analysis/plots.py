"""The paper's figures as PNG files (matplotlib, the `analysis` extra): high-PPL ratio by
level (Table 3), categories (Fig. 5), filtered tokens by level (Fig. 7), view overlap by
level (Fig. 3). Knows the stats dicts; a figure whose data no file has is not drawn."""

from __future__ import annotations

from pathlib import Path

from ..schema import CATEGORIES
from .metrics import OVERLAP, NO_LEVEL, level_key


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
