"""The tables `stats` prints (rich): per file and level, strategies side by side, the
intervals, the paired comparison and the segment distribution. Knows the stats dicts that
metrics and intervals build; nothing about records or models."""

from __future__ import annotations

from ..config import HIGH_PPL
from ..schema import CATEGORIES
from .intervals import LEVEL
from .metrics import OVERLAP, ULTRA, bin_labels, level_key


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
    # PPL is the data's perplexity, exp(mean -log p_base). The arithmetic mean of 1 / p_base
    # (the JSON's mean_token_ppl) is not shown: one near-zero-probability token decides it
    # (measured: 8.4e+03 for self-distillation data whose PPL is 1.53)
    table = _table(f"response tokens under the base view (high PPL: PPL > {th:g})",
                   ["file", "level", "records", "tokens", "high-PPL", "PPL", "pass"])
    for label, level, s in _rows(stats):
        table.add_row(label, level, str(s["records"]), str(s["tokens"]), pct(s["high_ppl_ratio"]), num(s["ppl"]),
                      pct(s["pass_rate"], 1), style="bold" if level == "all" else None)
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



# the intervals printed (the estimates are in the tables above; the JSON has every metric)
SHOWN = {"high_ppl_ratio": "high-PPL", "ppl": "PPL", "filtered_share": "filtered", "pass_rate": "pass",
         "top1_agree": "R1 = B1"}


def _fmt(metric: str, x: float | None, digits: int = 2) -> str:
    if x is None:
        return "-"
    return f"{x:.3g}" if metric in ("ppl", "log_ppl") else f"{100 * x:.{digits}f}"


def ci_table(stats: list[dict], level: float = LEVEL):
    """The interval lo-hi per file, level and metric (percent; PPL as is), narrow enough
    for 80 columns."""
    from rich.table import Table

    metrics = [m for m in SHOWN if any(m in s["ci"]["all"] for s in stats)]
    table = Table(title=f"{100 * level:g}% bootstrap intervals over problems (%, PPL as is)")
    for c in ("file", "level", "n", *(SHOWN[m] for m in metrics)):
        table.add_column(c, justify="left" if c in ("file", "level") else "right")
    for s in stats:
        rows = [("all", s["ci"]["all"]), *s["ci"]["by_level"].items()]
        for i, (lv, c) in enumerate(rows):
            n = max((v["n"] for v in c.values()), default=0)
            cells = [f"{_fmt(m, c[m]['lo'], 1)}-{_fmt(m, c[m]['hi'], 1)}" if m in c else "-" for m in metrics]
            table.add_row(s["label"] if i == 0 else "", lv, str(n), *cells, style="bold" if lv == "all" else None)
    return table


def paired_table(result: dict, a: str, b: str):
    """The paired difference two ways, each with its interval: pooled (the ratio of sums over
    the common problems, as every table here reports a ratio: a problem counts by its tokens)
    and the mean of the per-problem differences (every problem counts once). They answer
    different questions and may differ in sign; the caption says so where they do."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    table = Table(title=f"paired: {b} minus {a} over {result['common']} common problems "
                        f"({result['only_a']} only in {a}, {result['only_b']} only in {b}); points, log PPL in nats")
    for c in ("metric", "pooled [95% interval]", "per-problem mean [95%]"):
        table.add_column(c, justify="left" if c == "metric" else "right", no_wrap=True)
    apart = []
    for m, d in result["metrics"].items():
        m_ = "log PPL" if m == "log_ppl" else m  # a difference of mean -log p_base
        table.add_row(m_, f"{_fmt(m, d['diff'])} [{_fmt(m, d['lo'])}, {_fmt(m, d['hi'])}]",
                      f"{_fmt(m, d['per_problem_mean'])} [{_fmt(m, d['per_problem_lo'])}, {_fmt(m, d['per_problem_hi'])}]")
        if opposite(d["diff"], d["per_problem_mean"]):
            apart.append(m_)
    if not apart:
        return table
    return Group(table, Text(f"{', '.join(apart)}: the pooled difference and the per-problem mean have opposite signs: "
                             "the pooled ratio weighs each problem by its tokens (long responses count more), the "
                             "per-problem mean weighs every problem alike; read the intervals, not the signs",
                             style="yellow"))


def opposite(x: float | None, y: float | None) -> bool:
    return x is not None and y is not None and x * y < 0


def segment_view(stats: list[dict]):
    """Fig. 2 as a table: the share of segments per PPL bin, per file and level."""
    from rich.table import Table

    labels = bin_labels()
    table = Table(title=f"segment PPL (geometric mean over a line's tokens): % of segments per bin; "
                        f">{ULTRA:g} is ultra-high")
    for c in ("file", "level", "segs", *labels):
        table.add_column(c, justify="left" if c in ("file", "level") else "right")
    for s in stats:
        seg = s["segments"]
        for i, (lv, d) in enumerate([("all", seg["all"]), *seg["by_level"].items()]):
            table.add_row(s["label"] if i == 0 else "", lv, str(d["segments"]),
                          *(f"{100 * d['bins'][k]:.1f}" for k in labels))
    return table
