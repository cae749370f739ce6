"""The per-step rules on hand-made distributions (no model)."""

import numpy as np
import pytest

from dasd_local.decoding import rules
from dasd_local.decoding.rules import BASE_SELECTED, CONSISTENT, HARD, RESERVED, RuleConfig, choose

V = 10


def logits_from_probs(p):
    """Logits whose softmax is `p` (rows normalised; tiny floor for zeros)."""
    p = np.asarray(p, dtype=np.float64)
    p = p / p.sum(axis=-1, keepdims=True)
    return np.log(np.maximum(p, 1e-12)).astype(np.float32)


def dist(spec, v=V):
    """A distribution over v tokens from {token: prob}, the rest spread evenly."""
    p = np.zeros(v)
    for tok, pr in spec.items():
        p[tok] = pr
    rest = [i for i in range(v) if i not in spec]
    p[rest] = (1 - sum(spec.values())) / len(rest)
    return p


def one(strategy, pb, pr, **cfg):
    picks = choose(strategy, logits_from_probs([pb]), logits_from_probs([pr]), RuleConfig(**cfg))
    return picks, int(picks.token[0]), int(picks.category[0])


def test_identical_views_are_consistent():
    p = dist({3: 0.6, 1: 0.2})
    picks, tok, cat = one("dasd", p, p)
    assert (tok, cat) == (3, CONSISTENT)
    assert picks.p_base[0] == pytest.approx(0.6, rel=1e-5)
    assert picks.p_ref[0] == pytest.approx(0.6, rel=1e-5)
    assert picks.ref_rank[0] == 0


def test_reference_top_passing_threshold_is_reserved():
    pr = dist({5: 0.7, 2: 0.2})
    pb = dist({2: 0.5, 5: 0.25})  # base prefers 2, but 5 passes tau
    _, tok, cat = one("dasd", pb, pr)
    assert (tok, cat) == (5, RESERVED)


def test_candidate_just_under_tau_is_skipped():
    pr = dist({5: 0.5, 2: 0.3, 7: 0.1})
    pb = dist({5: 0.1999, 2: 0.15, 7: 0.4})
    picks, tok, cat = one("dasd", pb, pr, tau=0.2)
    assert (tok, cat) == (7, BASE_SELECTED)
    assert picks.ref_rank[0] == 2
    # the same candidate at exactly tau passes
    pb2 = dist({5: 0.2, 2: 0.15, 7: 0.4})
    _, tok2, cat2 = one("dasd", pb2, pr, tau=0.2)
    assert (tok2, cat2) == (5, RESERVED)


def test_hard_modes():
    pr = dist({1: 0.5, 2: 0.3, 3: 0.15}, v=40)  # top-6 = 1, 2, 3 and three tiny ones
    pb = dist({9: 0.9}, v=40)  # base finds no candidate plausible
    _, tok, cat = one("dasd", pb, pr, hard_mode="ref")
    assert (tok, cat) == (1, HARD)
    _, tok, cat = one("dasd", pb, pr, hard_mode="base")
    assert (tok, cat) == (9, HARD)


def test_top_k_limits_candidates():
    pr = dist({0: 0.3, 1: 0.25, 2: 0.2, 3: 0.15})
    pb = dist({3: 0.9})
    _, tok, cat = one("dasd", pb, pr, top_k=3)
    assert cat == HARD and tok == 0
    _, tok, cat = one("dasd", pb, pr, top_k=4)
    assert (tok, cat) == (3, BASE_SELECTED)


def test_shared_top1_below_tau_is_consistent():
    """Paper Section 5.4.3: the top-1 of both views is consistent even when p_B < tau."""
    flat = np.full(V, 1.0 / V) + np.eye(V)[4] * 0.05  # base argmax 4 with p < tau
    pr = dist({4: 0.9})
    for mode in ("ref", "base"):
        picks, tok, cat = one("dasd", flat, pr, hard_mode=mode)
        assert (tok, cat) == (4, CONSISTENT)
        assert picks.p_base[0] < 0.2


def test_no_candidate_passing_and_different_top1_is_hard():
    pb = dist({4: 0.15, 7: 0.14}, v=40)  # base top-1 4, below tau
    pr = dist({7: 0.9}, v=40)
    _, tok, cat = one("dasd", pb, pr, hard_mode="ref")
    assert (tok, cat) == (7, HARD)
    _, tok, cat = one("dasd", pb, pr, hard_mode="base")
    assert (tok, cat) == (4, HARD)


def test_greedy_strategies():
    pr = dist({5: 0.7})
    pb = dist({2: 0.6})
    assert one("self-distill", pb, pr)[1] == 5
    assert one("base", pb, pr)[1] == 2
    assert one("self-distill", pb, pr)[2] == rules.NO_CATEGORY


def test_base_without_reference_view():
    picks = choose("base", logits_from_probs([dist({2: 0.6})]), None, RuleConfig())
    assert int(picks.token[0]) == 2 and picks.p_ref is None
    with pytest.raises(ValueError, match="reference"):
        choose("dasd", logits_from_probs([dist({2: 0.6})]), None, RuleConfig())


def test_hint_phases_and_mixing():
    pr = dist({5: 0.6, 2: 0.3})
    pb = dist({2: 0.9})
    lb, lr = logits_from_probs([pb] * 3), logits_from_probs([pr] * 3)
    phase = np.array([rules.HINT_REF, rules.HINT_MIX, rules.HINT_BASE])
    picks = choose("hint", lb, lr, RuleConfig(hint_beta=3.0), hint_phase=phase)
    assert int(picks.token[0]) == 5  # R alone
    assert int(picks.token[2]) == 2  # B alone
    # mixed: l = clamp(3 H/log V) -> compare with a direct computation
    logp_r, logp_b = np.log(pr), np.log(pb)
    lam = min(1.0, 3 * -(pr * logp_r).sum() / np.log(V))
    assert int(picks.token[1]) == int(np.argmax((1 - lam) * logp_r + lam * logp_b))


def test_rows_are_independent_and_vectorized():
    rng = np.random.default_rng(0)
    lb = rng.normal(size=(7, 300)).astype(np.float32) * 3
    lr = rng.normal(size=(7, 300)).astype(np.float32) * 3
    cfg = RuleConfig(tau=0.05)
    batch = choose("dasd", lb, lr, cfg)
    for i in range(7):
        single = choose("dasd", lb[i:i + 1], lr[i:i + 1], cfg)
        assert single.token[0] == batch.token[i] and single.category[0] == batch.category[i]
        # check the rule directly on a full sort
        pr = np.exp(lr[i] - np.logaddexp.reduce(lr[i].astype(np.float64)))
        pb = np.exp(lb[i] - np.logaddexp.reduce(lb[i].astype(np.float64)))
        cands = np.argsort(-pr, kind="stable")[:6]
        want = next((c for c in cands if pb[c] >= 0.05), cands[0])
        assert batch.token[i] == want
        assert batch.p_ref[i] == pytest.approx(pr[want], rel=1e-4)


def test_unknown_strategy():
    with pytest.raises(ValueError, match="strategy"):
        choose("beam", np.zeros((1, 3), np.float32), np.zeros((1, 3), np.float32), RuleConfig())


# ---- the published forms' sampling and repetition stop ------------------------------------

def test_nucleus_keeps_the_published_prefix():
    scores = np.log(np.array([[0.5, 0.3, 0.15, 0.05]]))
    hd = rules.Sampling(temperature=0.3, top_p=0.85, top_p_first=True)  # mass before 0.15 is 0.8: kept
    order, p = rules.sampling_probs(scores, hd)
    assert order.tolist() == [[0, 1, 2, 3]] and (p[0] > 0).tolist() == [True, True, True, False]
    want = np.array([0.5, 0.3, 0.15]) ** (1 / 0.3)  # temperature applied after the cut
    assert p[0, :3] == pytest.approx(want / want.sum())
    hf = rules.Sampling(temperature=1.0, top_p=0.75)  # mass before 0.15 is 0.8: cut
    assert (rules.sampling_probs(scores, hf)[1][0] > 0).tolist() == [True, True, False, False]
    top2 = rules.Sampling(temperature=1.0, top_k=2)
    assert rules.sampling_probs(scores, top2)[1][0] == pytest.approx([0.625, 0.375, 0, 0])


def test_seeded_sampling_repeats_and_follows_the_distribution():
    scores = np.log(np.tile([0.6, 0.3, 0.1], (4, 1)))
    s = rules.Sampling(temperature=1.0)

    def draws(seed):
        rngs = [np.random.default_rng([seed, row]) for row in range(4)]
        return np.stack([rules.sample(scores, s, rngs) for _ in range(3000)])

    a = draws(7)
    assert np.array_equal(a, draws(7)) and not np.array_equal(a, draws(8))
    freq = np.bincount(a.ravel(), minlength=3) / a.size
    assert freq == pytest.approx([0.6, 0.3, 0.1], abs=0.02)
    with pytest.raises(ValueError, match="one random generator per row"):
        rules.sample(scores, s, None)


def test_sampled_strategies_and_greedy_dasd():
    pr, pb = dist({5: 0.7}), dist({2: 0.6})
    cfg = RuleConfig(sampling=rules.Sampling(temperature=1e-3))  # near-greedy sampling
    rng = [np.random.default_rng(0)]
    assert int(choose("self-distill", logits_from_probs([pb]), logits_from_probs([pr]), cfg, rngs=rng).token[0]) == 5
    assert int(choose("base", logits_from_probs([pb]), logits_from_probs([pr]), cfg, rngs=rng).token[0]) == 2


def sampled_dasd(pb, pr, temperature=1.0, seed=0, draws=1, **cfg):
    """Tokens and categories of `draws` steps of DASD's sampling form on the same rows."""
    lb, lr = logits_from_probs(pb), logits_from_probs(pr)
    rc = RuleConfig(sampling=rules.Sampling(temperature=temperature), **cfg)
    rngs = [np.random.default_rng([seed, row]) for row in range(len(lb))]
    picks = [choose("dasd", lb, lr, rc, rngs=rngs) for _ in range(draws)]
    return np.stack([p.token for p in picks]), np.stack([p.category for p in picks])


def test_dasd_sampling_never_draws_a_candidate_under_tau_and_weights_by_p_ref():
    # reference top-3: 4 (0.4), 7 (0.3), 1 (0.2); the base view (argmax 1) passes 4 and 1 only
    pr, pb = dist({4: 0.4, 7: 0.3, 1: 0.2}), dist({1: 0.3, 4: 0.25, 0: 0.2, 7: 0.19})
    tokens, cats = sampled_dasd([pb], [pr], draws=4000)
    freq = {t: (tokens == t).mean() for t in (4, 7, 1)}
    assert freq[7] == 0 and set(np.unique(tokens)) <= {4, 1}
    assert freq[4] == pytest.approx(0.4 / 0.6, abs=0.03)  # in proportion to p_ref among the passing
    assert set(cats[tokens == 4]) == {RESERVED} and set(cats[tokens == 1]) == {BASE_SELECTED}
    hot, _ = sampled_dasd([pb], [pr], temperature=4.0, draws=4000)  # flatter: (0.4/0.2)^(1/4)
    assert (hot == 4).mean() == pytest.approx(2 ** 0.25 / (1 + 2 ** 0.25), abs=0.03)


def test_dasd_sampling_near_temperature_0_is_greedy_dasd_and_keeps_the_fallback():
    rng = np.random.default_rng(3)
    pb, pr = rng.dirichlet(np.full(V, 0.3), size=64), rng.dirichlet(np.full(V, 0.3), size=64)
    greedy = choose("dasd", logits_from_probs(pb), logits_from_probs(pr), RuleConfig())
    tokens, cats = sampled_dasd(pb, pr, temperature=1e-4)
    assert np.array_equal(tokens[0], greedy.token) and np.array_equal(cats[0], greedy.category)
    # nothing passes: the hard mode's token, whatever the draw
    pr, pb = dist({4: 0.5}), dist({2: 0.15})
    for mode, want in (("ref", 4), ("base", 2)):
        tokens, cats = sampled_dasd([pb], [pr], draws=50, tau=0.2, hard_mode=mode)
        assert set(tokens[:, 0]) == {want} and set(cats[:, 0]) == {HARD}
    tokens, cats = sampled_dasd([dist({4: 0.15})], [dist({4: 0.5})], draws=20)  # shared top-1 under tau
    assert set(tokens[:, 0]) == {4} and set(cats[:, 0]) == {CONSISTENT}


def test_dasd_sampling_draws_repeat_whatever_rows_share_the_step():
    rng = np.random.default_rng(5)
    pb, pr = rng.dirichlet(np.full(V, 0.5), size=8), rng.dirichlet(np.full(V, 0.5), size=8)
    lb, lr = logits_from_probs(pb), logits_from_probs(pr)
    rc = RuleConfig(sampling=rules.Sampling(temperature=1.0), tau=0.05)

    def run(rows):  # each row's generator is its own, seeded by its id alone
        rngs = [np.random.default_rng([0, r]) for r in rows]
        return {r: t for _ in range(20) for r, t in zip(rows, choose("dasd", lb[rows], lr[rows], rc, rngs=rngs).token)}

    alone = {}
    for r in range(8):
        alone.update(run([r]))
    assert run(list(range(8))) == alone and run([6, 2, 7]) == {r: alone[r] for r in (6, 2, 7)}
    with pytest.raises(ValueError, match="one random generator per row"):
        choose("dasd", lb, lr, rc)


def test_repetition_stop_as_published():
    loop = list(range(30))
    assert not rules.repeats(loop * 5)  # the scan leaves out the last window, as published
    assert rules.repeats(loop * 5 + [99])
    assert not rules.repeats(list(range(200)))
    long = [7] * 10 + loop * 5 + [8] * 40  # 200 tokens; the loop's windows occur 5 times by 160
    assert rules.repeats(long[:190]) and not rules.repetition_stop(long[:190])  # only at multiples of 100
    assert rules.repetition_stop(long) and not rules.repetition_stop(long[:100])
    assert rules.repetition_stop([5] * 100) and not rules.repetition_stop([5] * 99)
