"""Confidence intervals over problems: bootstrap of ratios, paired comparisons, segment PPL.

Every ratio the analysis reports is a ratio of sums over problems (high-PPL tokens /
tokens, a category's tokens / categorized tokens, passed / judged). Tokens of one
response are not independent, so the unit resampled is the problem: one (numerator,
denominator) pair per problem, problems drawn with replacement, the ratio of the sums
recomputed, the percentile interval taken. A paired comparison of two runs over the same
problem ids resamples the ids jointly, so what the two runs share cancels.

Pure numpy: knows arrays and seeds, nothing about records or files.
"""

from __future__ import annotations

import numpy as np

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
    """ratio(b) - ratio(a) over the same problems (arrays aligned by problem id), with a
    bootstrap interval that resamples the problems jointly; plus the mean per-problem
    difference of the two ratios (problems where both are defined)."""
    a_n, a_d, b_n, b_d = (np.asarray(x, float) for x in (num_a, den_a, num_b, den_b))
    if a_d.sum() <= 0 or b_d.sum() <= 0:
        return {"diff": None, "lo": None, "hi": None, "per_problem_mean": None, "n": len(a_n)}
    diff = float(b_n.sum() / b_d.sum() - a_n.sum() / a_d.sum())
    idx = _draws(len(a_n), boot, seed)
    samples = _ratio(b_n[idx].sum(1), b_d[idx].sum(1)) - _ratio(a_n[idx].sum(1), a_d[idx].sum(1))
    lo, hi = _interval(samples, level)
    both = (a_d > 0) & (b_d > 0)
    per = _ratio(b_n[both], b_d[both]) - _ratio(a_n[both], a_d[both])
    return {"diff": diff, "lo": min(lo, diff), "hi": max(hi, diff),
            "per_problem_mean": float(per.mean()) if both.any() else None, "n": len(a_n)}


# ---- segments (Fig. 2) ----------------------------------------------------------------------

def segment_ppl(p_tokens) -> float:
    """A segment's PPL: the geometric mean of its tokens' PPL (1 / p), i.e. exp(mean -log p)."""
    p = np.maximum(np.asarray(p_tokens, float), 1e-300)  # an underflowed p is just very unlikely
    return float(np.exp(-np.log(p).mean()))


# Fig. 2's bins of segment PPL; the paper singles out segments above 15 as ultra-high
SEGMENT_BINS = (1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0)
ULTRA = 15.0


def bin_labels(edges=SEGMENT_BINS) -> list[str]:
    return [f"{a:g}-{b:g}" for a, b in zip(edges, edges[1:])] + [f">{edges[-1]:g}"]


def histogram(values, edges=SEGMENT_BINS) -> list[float]:
    """Share of `values` in each bin (edges[i], edges[i+1]] (the first also holds its lower
    edge), the last bin open above: > edges[-1]."""
    v = np.asarray(values, float)
    if not len(v):
        return [0.0] * len(edges)
    idx = np.searchsorted(np.asarray(edges[1:]), v, side="left")  # > last edge -> last bin
    return [float(x) for x in np.bincount(idx, minlength=len(edges)) / len(v)]
