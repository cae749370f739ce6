"""Confidence intervals over problems: bootstrap of ratios and paired comparisons of runs.

Every ratio the analysis reports is a ratio of sums over problems (high-PPL tokens /
tokens, a category's tokens / categorized tokens, passed / judged). Tokens of one
response are not independent, so the unit resampled is the problem: one (numerator,
denominator) pair per problem, problems drawn with replacement, the ratio of the sums
recomputed, the percentile interval taken. A paired comparison of two runs over the same
problem ids resamples the ids jointly, so what the two runs share cancels.

Per problem (one record) the counts come from metrics.counts, so a ratio here is the same
number `stats` prints. Knows arrays, seeds and metrics' counts; nothing about files.
"""

from __future__ import annotations

import numpy as np

from ..config import HIGH_PPL
from .metrics import by_level, counts, segment_table

BOOT = 1000  # resamples: the 2.5% / 97.5% percentiles settle to about 0.1 point at this count
LEVEL = 0.95


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return num / den


def _draws(n: int, boot: int, seed: int) -> np.ndarray:
    """(boot, n) problem indices drawn with replacement, fixed by the seed."""
    return np.random.default_rng(seed).integers(0, n, size=(boot, n))


def _interval(samples: np.ndarray, level: float) -> tuple[float | None, float | None]:
    samples = samples[np.isfinite(samples)]  # a resample without any denominator has no ratio
    if not len(samples):
        return None, None
    lo, hi = np.quantile(samples, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def ratio_ci(num, den, boot: int = BOOT, seed: int = 0, level: float = LEVEL) -> dict:
    """sum(num) / sum(den) with its percentile bootstrap interval over problems.

    `num[i]`, `den[i]`: problem i's numerator and denominator (den 0: the problem has no
    say in this ratio). Returns {"estimate", "lo", "hi", "n"}; None where undefined."""
    num, den = np.asarray(num, float), np.asarray(den, float)
    n = int((den > 0).sum())
    if den.sum() <= 0:
        return {"estimate": None, "lo": None, "hi": None, "n": n}
    est = float(num.sum() / den.sum())
    idx = _draws(len(num), boot, seed)
    lo, hi = _interval(_ratio(num[idx].sum(1), den[idx].sum(1)), level)
    # the percentile interval of a ratio of sums always holds it unless the resamples are
    # degenerate (one problem); widen to the estimate so the interval never excludes it
    lo, hi = min(lo, est), max(hi, est)
    return {"estimate": est, "lo": lo, "hi": hi, "n": n}


def paired_diff(num_a, den_a, num_b, den_b, boot: int = BOOT, seed: int = 0, level: float = LEVEL) -> dict:
    """ratio(b) - ratio(a) over the same problems (arrays aligned by problem id), pooled (a
    ratio of sums: problems weigh by their denominators), with a bootstrap interval that
    resamples the problems jointly; plus the mean of the per-problem differences of the two
    ratios (problems where both are defined, each weighing the same) with its own interval.
    The two may differ in sign (long responses pull the pooled one)."""
    a_n, a_d, b_n, b_d = (np.asarray(x, float) for x in (num_a, den_a, num_b, den_b))
    if a_d.sum() <= 0 or b_d.sum() <= 0:
        return {"diff": None, "lo": None, "hi": None, "per_problem_mean": None, "per_problem_lo": None,
                "per_problem_hi": None, "n": len(a_n)}
    diff = float(b_n.sum() / b_d.sum() - a_n.sum() / a_d.sum())
    idx = _draws(len(a_n), boot, seed)
    samples = _ratio(b_n[idx].sum(1), b_d[idx].sum(1)) - _ratio(a_n[idx].sum(1), a_d[idx].sum(1))
    lo, hi = _interval(samples, level)
    both = (a_d > 0) & (b_d > 0)
    per = _ratio(b_n[both], b_d[both]) - _ratio(a_n[both], a_d[both])
    mean, per_lo, per_hi = None, None, None
    if both.any():  # the same resampling of the problems where both ratios are defined
        mean = float(per.mean())
        per_lo, per_hi = _interval(per[_draws(len(per), boot, seed)].mean(1), level)
        per_lo, per_hi = min(per_lo, mean), max(per_hi, mean)
    return {"diff": diff, "lo": min(lo, diff), "hi": max(hi, diff), "per_problem_mean": mean,
            "per_problem_lo": per_lo, "per_problem_hi": per_hi, "n": len(a_n)}


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


def attach(stats: list[dict], records: list[list[dict]], threshold: float, boot: int, seed: int,
           segment_stats: bool) -> None:
    """Add each file's intervals (and segment distributions) to its stats, in place."""
    for s, rs in zip(stats, records):
        s["ci"] = {**file_cis(rs, threshold, boot, seed), "boot": boot, "seed": seed}
        if segment_stats:
            s["segments"] = segment_table(rs)
