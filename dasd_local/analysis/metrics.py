"""The paper's data-level evidence as numbers: high-PPL ratios, perplexity, token
categories, pass rates, view overlap and segment PPL, per file and per difficulty `level`.

Pure functions over generation (or scoring-pass) records:
- high-PPL token ratio under the base view (Table 3): share of response tokens with
  PPL = 1 / p_base above the threshold (config.HIGH_PPL = 2.5, i.e. p_base < 0.4), plus the
  data's perplexity exp(mean -log p_base) and the arithmetic mean token PPL (mean of
  1 / p_base, which a single near-zero-probability token dominates: JSON only);
- category shares (Fig. 5, Fig. 7): consistent / reserved / base_selected / hard over the
  tokens that carry a category (DASD runs); filtered = base_selected + hard. Like the paper,
  only verified-correct responses count when a file carries verdicts (`correct`; scope
  "correct"), else every record does (scope "all");
- verification pass rate where `correct` exists (a rewrite replaced by the gold solution
  counts as failed);
- view overlap (Fig. 3), per response position: reference top-1 == base top-1 (from the
  argmaxes); reference top-1 within base top-3 / top-6; base top-3 within reference
  top-3 / top-6, as the covered share of the base's 3 tokens. All but the first need both
  views' top-k lists (`topk_base`, `topk_ref`), which the scoring pass writes;
- segments (Fig. 2): the paper does not define its segment beyond "a span of the
  response"; here a segment is one line of the response (the steps of a worked solution
  are lines), split after every token whose text holds a line break; a segment's PPL is
  the geometric mean of its tokens' PPL.
Knows the record layout; knows nothing about models (the `stats` verb has records
rescored by decoding.forcing first where it needs top-k lists).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path


from ..config import HIGH_PPL
from ..errors import ConfigError
from ..schema import CATEGORIES, problem_id_of

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



def read_runs(paths: list[Path], level_field: str | None = None) -> tuple[list[tuple[Path, list[dict]]], list[str]]:
    """Each file's records, read once, and the problems found (malformed lines); a file
    without records is one error. `level_field`: the column read as the level."""
    from ..store.records import read_records

    runs, problems = [], []
    for path in paths:
        records, bad = read_records(Path(path))
        problems += bad
        runs.append((Path(path), relevel(records, level_field) if level_field else records))
    return runs, problems


def collect_runs(runs: list[tuple[Path, list[dict]]], threshold: float = HIGH_PPL) -> list[dict]:
    """Stats of every (path, records) run, labelled by strategy (files told apart by name)."""
    if not threshold > 1:
        raise ConfigError(f"threshold = {threshold} is not allowed: expected > 1 (PPL is at least 1)")
    stats = [file_stats(path, records, threshold) for path, records in runs]
    unique_labels(stats)
    return stats


def collect(paths: list[Path], threshold: float = HIGH_PPL, level_field: str | None = None) -> tuple[list[dict], list[str]]:
    """Stats of every file and the problems found (malformed lines)."""
    runs, problems = read_runs(paths, level_field)
    return collect_runs(runs, threshold), problems


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


def by_level(records: list[dict]) -> dict[str, list[dict]]:
    groups: dict[str, list[dict]] = {}
    for r in records:
        groups.setdefault(level_of(r), []).append(r)
    return {k: groups[k] for k in sorted(groups, key=level_key)}


def relevel(records: list[dict], field: str) -> list[dict]:
    """Records whose `level` is read from another column (`--level-field`)."""
    return [{**r, "level": r.get(field)} for r in records]



# ---- segments (Fig. 2) ------------------------------------------------------------------------

def segment_ppl(p_tokens) -> float:
    """A segment's PPL: the geometric mean of its tokens' PPL (1 / p), i.e. exp(mean -log p)."""
    import numpy as np

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
    import numpy as np

    v = np.asarray(values, float)
    if not len(v):
        return [0.0] * len(edges)
    idx = np.searchsorted(np.asarray(edges[1:]), v, side="left")  # > last edge -> last bin
    return [float(x) for x in np.bincount(idx, minlength=len(edges)) / len(v)]


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
