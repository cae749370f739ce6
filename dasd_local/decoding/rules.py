"""The per-step token choice of every strategy, as pure numpy on the two views' logits.

Rows are positions (one per problem in flight, or one per drafted position); columns
are the full vocabulary. Probabilities are full-vocabulary softmaxes at temperature 1.
This module never sees llama.cpp: the decode loop hands it logits and gets back the
chosen tokens with everything a record needs (category, p_base, p_ref, ref_rank).
Choices are argmaxes, except where a baseline's published form samples, or DASD's sampling
form (several rewrites per problem): then every row draws from its own numpy Generator,
passed in, so a seeded run repeats exactly.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

# the rule's settings (top_k, tau, hard_mode, hint_beta, sampling) with their ranges live in
# config/, standard-library-only modules, so this one still needs nothing but numpy
from ..config import GREEDY, PUBLISHED_SAMPLING, STRATEGIES, RuleConfig, Sampling  # noqa: F401

CONSISTENT, RESERVED, BASE_SELECTED, HARD = range(4)
NO_CATEGORY = -1

# hint-decoding phases, per row
HINT_REF, HINT_MIX, HINT_BASE = 0, 1, 2


@dataclass
class Picks:
    """One entry per row. p_ref/ref_rank/argmax_ref are None when the reference view was not run."""

    token: np.ndarray
    category: np.ndarray
    p_base: np.ndarray
    p_ref: np.ndarray | None
    ref_rank: np.ndarray | None
    argmax_base: np.ndarray
    argmax_ref: np.ndarray | None
    cand: np.ndarray | None = None  # (rows, K) reference top-K, dasd only
    cand_p_ref: np.ndarray | None = None
    cand_p_base: np.ndarray | None = None


def logsumexp(logits: np.ndarray) -> np.ndarray:
    """Row-wise log-sum-exp, accumulated in float64 so probabilities of 1e-6 stay exact."""
    m = logits.max(axis=1)
    s = np.exp(logits - m[:, None]).sum(axis=1, dtype=np.float64)
    return m.astype(np.float64) + np.log(s)


def prob_of(logits: np.ndarray, lse: np.ndarray, tokens: np.ndarray) -> np.ndarray:
    """p(token) per row; `tokens` is (rows,) or (rows, k)."""
    rows = np.arange(len(logits))
    if tokens.ndim == 1:
        return np.exp(logits[rows, tokens].astype(np.float64) - lse)
    return np.exp(logits[rows[:, None], tokens].astype(np.float64) - lse[:, None])


def top_k(logits: np.ndarray, k: int) -> np.ndarray:
    """(rows, k) token ids in descending logit order, ties by lower id (matches argmax).

    argpartition keeps this O(V) per row; only the k survivors are sorted."""
    k = min(k, logits.shape[1])
    part = np.argpartition(-logits, k - 1, axis=1)[:, :k]
    vals = np.take_along_axis(logits, part, axis=1)
    order = np.lexsort((part, -vals), axis=1)
    return np.take_along_axis(part, order, axis=1)


def rank_of(logits: np.ndarray, tokens: np.ndarray) -> np.ndarray:
    """0-based rank of each row's token: how many tokens have a strictly larger logit."""
    chosen = logits[np.arange(len(logits)), tokens]
    return (logits > chosen[:, None]).sum(axis=1)


def dasd_choice(lb, lse_b, lr, cfg: RuleConfig, lse_r=None, rngs=None):
    """DESIGN section 1: the first reference top-K candidate that the base view finds
    plausible (p_B >= tau); else C[0] (hard mode `ref`) or argmax p_B (`base`).

    The sampling form (`generate --samples N`, cfg.sampling.temperature T > 0) draws
    among the passing candidates instead, in proportion to p_R^(1/T) (passing_draw); the
    fallback stays the hard mode's token. As T goes to 0 the draw is the first passing
    candidate, greedy DASD's choice."""
    cand = top_k(lr, cfg.top_k)
    cand_pb = prob_of(lb, lse_b, cand)
    ok = cand_pb >= cfg.tau
    passed = ok.any(axis=1)
    rows = np.arange(len(lb))
    pick = ok.argmax(axis=1) if cfg.sampling.temperature == 0 else \
        passing_draw(lr, lse_r, cand, ok, cfg.sampling.temperature, rngs)
    argmax_b = lb.argmax(axis=1)
    fallback = cand[:, 0] if cfg.hard_mode == "ref" else argmax_b
    token = np.where(passed, cand[rows, pick], fallback)
    # Categories name the emitted token. Section 5.4.3: the top-1 of both views is
    # "consistent" whatever its p_B: when it is below tau no candidate passes (nothing beats
    # the base's own top-1), and both hard modes emit that same token, so only the label
    # changes; greedily, C[0] is emitted whenever it is the base's argmax.
    first = cand[:, 0]
    category = np.select(
        [(token == first) & (first == argmax_b), passed & (token == first), passed],
        [CONSISTENT, RESERVED, BASE_SELECTED],
        default=HARD,
    )
    return token, category, cand, cand_pb


def passing_draw(lr, lse_r, cand, ok, temperature: float, rngs) -> np.ndarray:
    """Per row, the index of the passing candidate (`ok`) drawn with weights p_R^(1/T).
    One uniform per row and step from the row's own Generator, whether or not a candidate
    passes, so a sample's draws depend on its seed alone (rows with none passing take the
    fallback, whatever is drawn here)."""
    if rngs is None or len(rngs) != len(cand):
        raise ValueError(f"sampling needs one random generator per row ({len(cand)} rows)")
    u = np.array([rng.random() for rng in rngs])
    rows = np.arange(len(cand))[:, None]
    logw = np.where(ok, (lr[rows, cand].astype(np.float64) - lse_r[:, None]) / temperature, -np.inf)
    logw[~ok.any(axis=1)] = 0.0
    cum = np.cumsum(np.exp(logw - logw.max(axis=1, keepdims=True)), axis=1)
    return np.minimum((cum < (u * cum[:, -1])[:, None]).sum(axis=1), cand.shape[1] - 1)


def hint_scores(lb, lse_b, lr, lse_r, phase: np.ndarray, beta: float) -> np.ndarray:
    """Hinted decoding: (1-l) log p_R + l log p_B with l = clamp(beta H(p_R) / log V);
    phase HINT_REF uses R alone (first token), HINT_BASE uses B alone (after \\boxed{)."""
    logp_r = lr - lse_r[:, None]
    ent = -(np.exp(logp_r) * logp_r).sum(axis=1)
    lam = np.clip(beta * ent / np.log(lr.shape[1]), 0.0, 1.0)
    lam = np.where(phase == HINT_REF, 0.0, np.where(phase == HINT_BASE, 1.0, lam))
    return (1.0 - lam)[:, None] * logp_r + lam[:, None] * (lb - lse_b[:, None])


def _softmax(x: np.ndarray) -> np.ndarray:
    z = np.exp(x - x.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def sampling_probs(scores: np.ndarray, s: Sampling) -> tuple[np.ndarray, np.ndarray]:
    """(order, probs): each row's token ids by descending score (ties: lower id first) and
    their sampling probabilities, zero outside the kept top-k / top-p prefix. Top-p keeps
    a token while the mass of the more likely kept tokens is below top_p (transformers'
    TopPLogitsWarper) or at most top_p (Hinted decoding's NucleusProcessor). A full sort
    of the vocabulary, which the greedy rules avoid: only the sampled forms pay for it."""
    order = np.argsort(-scores, axis=1, kind="stable")
    x = np.take_along_axis(scores, order, axis=1).astype(np.float64)
    if not s.top_p_first:
        x = x / s.temperature
    keep = np.ones(x.shape, dtype=bool)
    if s.top_k:
        keep[:, s.top_k:] = False
    if s.top_p < 1.0:
        p = _softmax(np.where(keep, x, -np.inf))
        before = np.cumsum(p, axis=1) - p
        keep &= (before <= s.top_p) if s.top_p_first else (before < s.top_p)
        keep[:, 0] = True
    if s.top_p_first:
        x = x / s.temperature
    return order, _softmax(np.where(keep, x, -np.inf))


def sample(scores: np.ndarray, s: Sampling, rngs) -> np.ndarray:
    """One token per row, drawn with that row's Generator (one uniform per row and step):
    the inverse of the cumulative sampling distribution."""
    if rngs is None or len(rngs) != len(scores):
        raise ValueError(f"sampling needs one random generator per row ({len(scores)} rows)")
    order, probs = sampling_probs(scores, s)
    cum = np.cumsum(probs, axis=1)
    u = np.array([rng.random() for rng in rngs]) * cum[:, -1]
    idx = np.minimum((cum < u[:, None]).sum(axis=1), scores.shape[1] - 1)
    return order[np.arange(len(scores)), idx]


def repeats(tokens: list[int], k: int = 30, m: int = 5) -> bool:
    """Some k-token window occurs at least m times. As Hinted decoding's
    has_k_words_repeated_at_least_m, whose scan leaves out the last window."""
    counts: Counter = Counter()
    for i in range(len(tokens) - k):
        window = tuple(tokens[i:i + k])
        counts[window] += 1
        if counts[window] >= m:
            return True
    return False


def repetition_stop(tokens: list[int], every: int = 100, k: int = 30, m: int = 5) -> bool:
    """Hinted decoding's stop: checked once per `every` emitted tokens (when the response
    reaches 100, 200, ... tokens and has not ended otherwise), true when it repeats."""
    return len(tokens) > 0 and len(tokens) % every == 0 and repeats(tokens, k, m)


def choose(strategy: str, logits_b: np.ndarray, logits_r: np.ndarray | None, cfg: RuleConfig,
           hint_phase: np.ndarray | None = None, candidates: bool = False, rngs=None) -> Picks:
    """Apply `strategy` to every row. `logits_r` may be None only for `base`. With
    `candidates`, every strategy reports the reference's top-K (the base's when there is
    no reference view) with both probabilities; dasd always does. With a sampling config
    (temperature > 0) every strategy samples, each row with its Generator in `rngs` (dasd:
    among its passing candidates)."""
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy {strategy!r} is not one of {STRATEGIES}")
    if logits_r is None and strategy != "base":
        raise ValueError(f"strategy {strategy!r} needs the reference view's logits")
    sampled = cfg.sampling.temperature > 0
    pick = (lambda scores: sample(scores, cfg.sampling, rngs)) if sampled else (lambda scores: scores.argmax(axis=1))
    lse_b = logsumexp(logits_b)
    argmax_b = logits_b.argmax(axis=1)
    lse_r = None if logits_r is None else logsumexp(logits_r)
    argmax_r = None if logits_r is None else logits_r.argmax(axis=1)
    category = np.full(len(logits_b), NO_CATEGORY)
    cand = cand_pb = None
    if strategy == "dasd":
        token, category, cand, cand_pb = dasd_choice(logits_b, lse_b, logits_r, cfg, lse_r, rngs)
    elif strategy == "self-distill":
        token = pick(logits_r) if sampled else argmax_r
    elif strategy == "base":
        token = pick(logits_b) if sampled else argmax_b
    else:
        phase = np.full(len(logits_b), HINT_MIX) if hint_phase is None else hint_phase
        token = pick(hint_scores(logits_b, lse_b, logits_r, lse_r, phase, cfg.hint_beta))
    picks = Picks(
        token=token, category=category, p_base=prob_of(logits_b, lse_b, token),
        p_ref=None if logits_r is None else prob_of(logits_r, lse_r, token),
        ref_rank=None if logits_r is None else rank_of(logits_r, token),
        argmax_base=argmax_b, argmax_ref=argmax_r,
    )
    if cand is None and candidates:
        cand = top_k(logits_b if logits_r is None else logits_r, cfg.top_k)
        cand_pb = prob_of(logits_b, lse_b, cand)
    if cand is not None:
        picks.cand, picks.cand_p_base = cand, cand_pb
        picks.cand_p_ref = None if logits_r is None else prob_of(logits_r, lse_r, cand)
    return picks
