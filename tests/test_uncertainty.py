"""Bootstrap intervals, paired comparisons, segment PPL and --sample: pure functions on
hand-made records (no model)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from typer.testing import CliRunner

from dasd_local.analysis import intervals, metrics, preflight
from dasd_local.store.problems import sample_ids, select


def rec(pid, ps, level=1, cats=None, correct=None, texts=None):
    steps = [{"p_base": p, "category": (cats or [None] * len(ps))[i], "argmax_base": 1, "argmax_ref": 1,
              "text": (texts or ["x"] * len(ps))[i]} for i, p in enumerate(ps)]
    r = {"id": pid, "level": level, "strategy": "dasd", "steps": steps}
    return r if correct is None else {**r, "correct": correct}


def records(n=40, seed=1):
    rng = np.random.default_rng(seed)
    return [rec(str(i), list(rng.uniform(0.05, 1.0, size=rng.integers(3, 12))), level=1 + i % 3,
                cats=None, correct=bool(i % 2)) for i in range(n)]


def test_bootstrap_ci_brackets_the_estimate_and_is_reproducible():
    rng = np.random.default_rng(0)
    den = rng.integers(1, 50, size=30)
    num = rng.binomial(den, 0.2)
    a = intervals.ratio_ci(num, den, seed=7)
    assert a["estimate"] == pytest.approx(num.sum() / den.sum())
    assert a["lo"] < a["estimate"] < a["hi"]
    assert a == intervals.ratio_ci(num, den, seed=7)  # same seed, same interval
    assert a != intervals.ratio_ci(num, den, seed=8)
    assert intervals.ratio_ci([0, 0], [0, 0])["estimate"] is None


def test_every_stats_ratio_gets_an_interval_matching_the_analysis():
    from dasd_local.analysis.metrics import summarize

    rs = records()
    ci = intervals.cis(rs, seed=3)
    s = summarize(rs)["all"]
    assert ci["high_ppl_ratio"]["estimate"] == pytest.approx(s["high_ppl_ratio"])
    assert ci["ppl"]["estimate"] == pytest.approx(s["ppl"])
    assert ci["pass_rate"]["estimate"] == pytest.approx(s["pass_rate"])
    for m in ("high_ppl_ratio", "ppl", "pass_rate"):
        assert ci[m]["lo"] <= ci[m]["estimate"] <= ci[m]["hi"]
    per = intervals.file_cis(rs)
    assert sorted(per["by_level"]) == ["1", "2", "3"]


def test_paired_comparison_of_a_run_with_itself_is_zero():
    rs = records()
    out = intervals.compare(rs, rs, seed=5)
    assert out["common"] == len(rs) and out["only_a"] == out["only_b"] == 0
    for d in out["metrics"].values():
        assert d["diff"] == 0 and d["lo"] <= 0 <= d["hi"] and d["per_problem_mean"] == 0


def test_paired_comparison_sees_a_shift_and_matches_ids():
    a = records()
    b = [rec(r["id"], [min(1.0, s["p_base"] + 0.3) for s in r["steps"]], r["level"]) for r in reversed(a)]
    d = intervals.compare(a, b + [rec("extra", [0.5])])
    assert d["only_b"] == 1 and d["common"] == len(a)
    hp = d["metrics"]["high_ppl_ratio"]
    assert hp["diff"] < 0 and hp["hi"] < 0  # b is more likely under the base view everywhere


def test_pooled_and_per_problem_differences_each_get_an_interval_and_opposite_signs_are_said():
    """`stats --compare` printed a pooled top1_agree of -1.98 points beside a per-problem mean of
    +1.96, unexplained: a long response weighs more in the pooled ratio of sums. Both now come
    with their own interval, and the table says when their signs differ."""
    import io

    from rich.console import Console

    from dasd_local.analysis.tables import paired_table

    high, low = 0.1, 0.9  # p_base: PPL 10 (high) and 1.1
    a = [rec("long", [high] * 50 + [low] * 50), rec("short", [low, low])]
    b = [rec("long", [high] * 40 + [low] * 60), rec("short", [high, high])]
    d = intervals.compare(a, b, seed=0)["metrics"]["high_ppl_ratio"]
    assert d["diff"] == pytest.approx(42 / 102 - 50 / 102) and d["diff"] < 0  # pooled: b has fewer high tokens
    assert d["per_problem_mean"] == pytest.approx((0.4 - 0.5 + 1.0 - 0.0) / 2) and d["per_problem_mean"] > 0
    assert d["per_problem_lo"] <= d["per_problem_mean"] <= d["per_problem_hi"]
    out = io.StringIO()
    Console(file=out, width=200).print(paired_table(intervals.compare(a, b, seed=0), "a", "b"))
    assert "opposite signs" in out.getvalue() and "high_ppl_ratio" in out.getvalue()


def test_segment_ppl_is_the_geometric_mean_of_its_token_ppl():
    ps = [0.5, 0.25, 0.8]
    assert metrics.segment_ppl(ps) == pytest.approx(math.prod(1 / p for p in ps) ** (1 / 3))
    r = rec("s", [0.5, 0.25, 0.9, 0.01, 0.02], texts=["a", "b\n", "c", "d", "e"])
    segs = metrics.segments(r)
    assert segs == [[0.5, 0.25], [0.9, 0.01, 0.02]]
    table = metrics.segment_table([r])["all"]
    assert table["segments"] == 2 and sum(table["bins"].values()) == pytest.approx(1.0)
    # (0.9 * 0.01 * 0.02) ** (-1/3) = 17.7 > 15: one of two segments is ultra-high
    assert table["ultra_share"] == 0.5 and table["bins"][">15"] == 0.5 and table["bins"]["2.5-5"] == 0.5


def test_histogram_bins_are_closed_above():
    h = metrics.histogram([1.0, 1.5, 15.0, 15.01])
    labels = metrics.bin_labels()
    assert dict(zip(labels, h)) == {"1-1.5": 0.5, "1.5-2": 0, "2-2.5": 0, "2.5-5": 0, "5-10": 0, "10-15": 0.25,
                                    ">15": 0.25}


def test_sample_is_seeded_order_free_and_a_subset():
    ids = [str(i) for i in range(100)]
    a = sample_ids(ids, 10, seed=1)
    assert len(a) == 10 and a == sample_ids(list(reversed(ids)), 10, seed=1)
    assert a != sample_ids(ids, 10, seed=2)
    assert sample_ids(ids[:50] + ["x"] + ids[50:], 10, seed=1) <= a | {"x"}
    assert select(ids, str, 10, 1, 3) == [i for i in ids if i in a][:3]


def test_stats_cli_prints_intervals_and_the_paired_table(tmp_path):
    from dasd_local.cli import app

    path = tmp_path / "run.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records(12)))
    out = tmp_path / "s.json"
    res = CliRunner().invoke(app, ["stats", str(path), str(path), "--compare", "--segments", "--json", str(out)])
    assert res.exit_code == 0, res.output
    assert "bootstrap intervals" in res.output and "paired" in res.output and "segment PPL" in res.output
    data = json.loads(out.read_text())
    assert data["paired"]["metrics"]["high_ppl_ratio"]["diff"] == 0
    assert data["files"][0]["ci"]["all"]["high_ppl_ratio"]["lo"] is not None


def test_preflight_finds_the_answer_opening_and_warns_below_tau():
    good = rec("g", [0.9, 0.6, 0.5, 0.9], texts=["so ", "\\bo", "xed{", "4}"])
    bad = rec("b", [0.9, 0.05, 0.9, 0.9], texts=["so ", "\\bo", "xed{", "4}"])
    none = rec("n", [0.9], texts=["4"])
    assert preflight.answer_opening(good, "\\boxed") == [0.6, 0.5]
    assert preflight.answer_opening(none, "\\boxed") is None
    out = preflight.preflight([good, bad, none], "\\boxed", 0.2)
    assert (out["with_marker"], out["below_tau"], out["share_below"], out["warn"]) == (2, 1, 0.5, False)
    assert preflight.preflight([bad], "\\boxed", 0.2)["warn"]


def test_sample_picks_the_same_problems_for_generate_and_score(data_dir):
    from dasd_local.store.problems import load_problems
    from dasd_local.decoding.forcing import row_id
    from dasd_local.store.records import read_jsonl
    from dasd_local.tasks import FieldMap, get_task

    path = data_dir / "math" / "train.jsonl"
    task = get_task("math")
    problems, _ = load_problems(path, task, sample=5, seed=1)
    rows, _ = read_jsonl(path)
    chosen = select(list(enumerate(rows)), lambda ir: row_id(ir[1], task, FieldMap(), ir[0]), 5, 1, None)
    assert [p.id for p in problems] == [row_id(r, task, FieldMap(), i) for i, r in chosen]
    assert len(problems) == 5 and [p.id for p in load_problems(path, task, sample=5, seed=1, limit=2)[0]] == \
        [p.id for p in problems][:2]


def test_category_intervals_follow_the_analysis_scope():
    from dasd_local.analysis.metrics import summarize

    rs = [rec("a", [0.9, 0.9], cats=["consistent", "hard"], correct=True),
          rec("b", [0.9, 0.9], cats=["hard", "hard"], correct=False)]
    assert intervals.cis(rs)["hard"]["estimate"] == summarize(rs)["all"]["category_shares"]["hard"] == 0.5
