"""The paper's evidence with its uncertainty: per-problem counts, bootstrap CIs on every
ratio `stats` reports, paired comparisons of two runs, and segment-level PPL by level.

Per problem (one record) the counts come from analysis.Tally, so a ratio here is the
same number `stats` prints; uncertainty.py resamples the problems. Segments (Fig. 2):
the paper does not define its segment beyond "a span of the response"; here a segment
is one line of the response (the steps of a worked solution are lines), split after
every token whose text holds a line break; a line without a token that has a base
probability is left out. Knows the record layout; knows nothing about models.
"""

from __future__ import annotations

from .metrics import CATEGORIES, HIGH_PPL, OVERLAP, Tally, level_key, level_of
from .intervals import BOOT, ULTRA, bin_labels, histogram, paired_diff, ratio_ci, segment_ppl


def counts(record: dict, threshold: float = HIGH_PPL, scope: str = "all") -> dict[str, tuple[float, float]]:
    """metric -> (numerator, denominator) of one problem, for every ratio `stats` reports
    (`scope` 'correct': categories of verified-correct responses only, as analysis.summarize)."""
    t = Tally(threshold, scope)
    t.add(record)
    cats = sum(t.categories.values())
    out = {"high_ppl_ratio": (t.high_ppl, t.tokens), "log_ppl": (t.nll, t.tokens),
           "pass_rate": (t.passed, t.judged)}
    for c in CATEGORIES:
        out[c] = (t.categories[c], cats)
    out["filtered_share"] = (t.categories["base_selected"] + t.categories["hard"], cats)
    for k in OVERLAP:
        out[k] = (t.overlap[k], t.overlap_n[k])
    return out


def _columns(records: list[dict], threshold: float) -> dict[str, tuple[list, list]]:
    scope = "correct" if any("correct" in r for r in records) else "all"  # as analysis.summarize decides
    per = [counts(r, threshold, scope) for r in records]
    names = per[0].keys() if per else ()
    return {m: ([c[m][0] for c in per], [c[m][1] for c in per]) for m in names}


def _finish(metric: str, ci: dict) -> dict:
    """log_ppl's interval becomes the perplexity's (exp is monotone)."""
    if metric != "log_ppl" or ci["estimate"] is None:
        return ci
    import math

    return {**ci, **{k: math.exp(ci[k]) for k in ("estimate", "lo", "hi")}}


def cis(records: list[dict], threshold: float = HIGH_PPL, boot: int = BOOT, seed: int = 0) -> dict:
    """{metric: {estimate, lo, hi, n}} over the problems; metrics no problem has are left out
    ('log_ppl' is reported as 'ppl')."""
    out = {}
    for m, (num, den) in _columns(records, threshold).items():
        if sum(den) > 0:
            out["ppl" if m == "log_ppl" else m] = _finish(m, ratio_ci(num, den, boot, seed))
    return out


def by_level(records: list[dict]) -> dict[str, list[dict]]:
    groups: dict[str, list[dict]] = {}
    for r in records:
        groups.setdefault(level_of(r), []).append(r)
    return {k: groups[k] for k in sorted(groups, key=level_key)}


def file_cis(records: list[dict], threshold: float = HIGH_PPL, boot: int = BOOT, seed: int = 0) -> dict:
    """{'all': cis, 'by_level': {level: cis}} (by_level empty without levels)."""
    levels = by_level(records)
    per = {} if set(levels) <= {"-"} else {lv: cis(rs, threshold, boot, seed) for lv, rs in levels.items()}
    return {"all": cis(records, threshold, boot, seed), "by_level": per}


def compare(a: list[dict], b: list[dict], threshold: float = HIGH_PPL, boot: int = BOOT, seed: int = 0) -> dict:
    """Run b minus run a over the problem ids both have: {metric: paired_diff}, plus the ids
    counted and those only one run has."""
    ia, ib = {str(r.get("id")): r for r in a}, {str(r.get("id")): r for r in b}
    ids = [i for i in ia if i in ib]
    ca, cb = _columns([ia[i] for i in ids], threshold), _columns([ib[i] for i in ids], threshold)
    out = {}
    for m in ca:
        if sum(ca[m][1]) > 0 and sum(cb[m][1]) > 0:
            out[m] = paired_diff(*ca[m], *cb[m], boot, seed)
    return {"common": len(ids), "only_a": len(ia) - len(ids), "only_b": len(ib) - len(ids), "metrics": out}


# ---- segments (Fig. 2) ------------------------------------------------------------------------

def segments(record: dict) -> list[list[float]]:
    """The response's lines as lists of their tokens' base probabilities."""
    out, cur = [], []
    for step in record.get("steps") or []:
        if step.get("p_base") is not None:
            cur.append(float(step["p_base"]))
        if "\n" in str(step.get("text", "")):
            if cur:
                out.append(cur)
            cur = []
    return out + ([cur] if cur else [])


def segment_table(records: list[dict]) -> dict:
    """Per level (and 'all'): segment count, the share of segments per PPL bin, the share of
    ultra-high (> 15) segments."""
    def dist(rs):
        ppl = [segment_ppl(s) for r in rs for s in segments(r)]
        return {"segments": len(ppl), "bins": dict(zip(bin_labels(), histogram(ppl))),
                "ultra_share": sum(p > ULTRA for p in ppl) / len(ppl) if ppl else None}
    levels = by_level(records)
    return {"all": dist(records), "by_level": {} if set(levels) <= {"-"} else {lv: dist(rs) for lv, rs in levels.items()}}


def relevel(records: list[dict], field: str) -> list[dict]:
    """Records whose `level` is read from another column (`--level-field`)."""
    return [{**r, "level": r.get(field)} for r in records]


# ---- tables ------------------------------------------------------------------------------------

# the intervals printed (the estimates are in the tables above; the JSON has every metric)
SHOWN = {"high_ppl_ratio": "high-PPL", "ppl": "PPL", "filtered_share": "filtered", "pass_rate": "pass",
         "top1_agree": "R1 = B1"}


def _fmt(metric: str, x: float | None, digits: int = 2) -> str:
    if x is None:
        return "-"
    return f"{x:.3g}" if metric in ("ppl", "log_ppl") else f"{100 * x:.{digits}f}"


def ci_table(stats: list[dict], level: float = 0.95):
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
    from rich.table import Table

    table = Table(title=f"paired: {b} minus {a} over {result['common']} common problems "
                        f"({result['only_a']} only in {a}, {result['only_b']} only in {b}); points, log PPL in nats")
    for c in ("metric", "difference", "interval", "mean per-problem difference"):
        table.add_column(c, justify="left" if c == "metric" else "right")
    for m, d in result["metrics"].items():
        m_ = "log PPL" if m == "log_ppl" else m  # a difference of mean -log p_base
        table.add_row(m_, _fmt(m, d["diff"]), f"[{_fmt(m, d['lo'])}, {_fmt(m, d['hi'])}]", _fmt(m, d["per_problem_mean"]))
    return table


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


def attach(stats: list[dict], records: list[list[dict]], threshold: float, boot: int, seed: int,
           segment_stats: bool) -> None:
    """Add each file's intervals (and segment distributions) to its stats, in place."""
    for s, rs in zip(stats, records):
        s["ci"] = {**file_cis(rs, threshold, boot, seed), "boot": boot, "seed": seed}
        if segment_stats:
            s["segments"] = segment_table(rs)


# ---- the small-model pre-flight ---------------------------------------------------------------

def answer_opening(record: dict, marker: str) -> list[float] | None:
    """Base probabilities of the tokens that spell the first `marker` (e.g. '\\\\boxed') in the
    response: from the token where it starts to the one where it is complete; None when the
    response never writes it."""
    steps = record.get("steps") or []
    text, starts = "", []
    for s in steps:
        starts.append(len(text))
        text += str(s.get("text", ""))
    at = text.find(marker)
    if at < 0:
        return None
    end = at + len(marker)
    return [float(s["p_base"]) for s, st in zip(steps, starts)
            if st < end and st + len(str(s.get("text", ""))) > at and s.get("p_base") is not None]


def preflight(records: list[dict], marker: str, tau: float) -> dict:
    """Scored gold solutions: how often the base view gives the answer format's opening
    tokens p_base < tau, i.e. how often DASD would have to leave the reference's answer."""
    found = [o for o in (answer_opening(r, marker) for r in records) if o]
    below = [o for o in found if min(o) < tau]
    share = len(below) / len(found) if found else None
    return {"marker": marker, "tau": tau, "records": len(records), "with_marker": len(found), "below_tau": len(below),
            "share_below": share, "warn": bool(share and share > 0.5)}
