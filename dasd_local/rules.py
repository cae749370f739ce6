"""The per-step token choice of every strategy, as pure numpy on the two views' logits.

Rows are positions (one per problem in flight, or one per drafted position); columns
are the full vocabulary. Probabilities are full-vocabulary softmaxes at temperature 1.
This module never sees llama.cpp: the decode loop hands it logits and gets back the
chosen tokens with everything a record needs (category, p_base, p_ref, ref_rank).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# the rule's settings (top_k, tau, hard_mode, hint_beta) with their ranges live in config.py,
# a standard-library-only module, so this one still needs nothing but numpy
from .config import STRATEGIES, RuleConfig  # noqa: F401
CATEGORIES = ("consistent", "reserved", "base_selected", "hard")
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


def dasd_choice(lb, lse_b, lr, cfg: RuleConfig):
    """DESIGN section 1: the first reference top-K candidate that the base view finds
    plausible (p_B >= tau); else C[0] (hard mode `ref`) or argmax p_B (`base`)."""
    cand = top_k(lr, cfg.top_k)
    cand_pb = prob_of(lb, lse_b, cand)
    ok = cand_pb >= cfg.tau
    passed = ok.any(axis=1)
    first = ok.argmax(axis=1)
    rows = np.arange(len(lb))
    argmax_b = lb.argmax(axis=1)
    fallback = cand[:, 0] if cfg.hard_mode == "ref" else argmax_b
    token = np.where(passed, cand[rows, first], fallback)
    top_passed = passed & (first == 0)
    category = np.select(
        [top_passed & (cand[:, 0] == argmax_b), top_passed, passed],
        [CONSISTENT, RESERVED, BASE_SELECTED],
        default=HARD,
    )
    return token, category, cand, cand_pb


def hint_choice(lb, lse_b, lr, lse_r, phase: np.ndarray, beta: float):
    """Hinted decoding: argmax of (1-l) log p_R + l log p_B with l = clamp(beta H(p_R) / log V);
    phase HINT_REF uses R alone (first token), HINT_BASE uses B alone (after \\boxed{)."""
    logp_r = lr - lse_r[:, None]
    ent = -(np.exp(logp_r) * logp_r).sum(axis=1)
    lam = np.clip(beta * ent / np.log(lr.shape[1]), 0.0, 1.0)
    lam = np.where(phase == HINT_REF, 0.0, np.where(phase == HINT_BASE, 1.0, lam))
    score = (1.0 - lam)[:, None] * logp_r + lam[:, None] * (lb - lse_b[:, None])
    return score.argmax(axis=1)


def choose(strategy: str, logits_b: np.ndarray, logits_r: np.ndarray | None, cfg: RuleConfig,
           hint_phase: np.ndarray | None = None, candidates: bool = False) -> Picks:
    """Apply `strategy` to every row. `logits_r` may be None only for `base`. With
    `candidates`, every strategy reports the reference's top-K (the base's when there is
    no reference view) with both probabilities; dasd always does."""
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy {strategy!r} is not one of {STRATEGIES}")
    if logits_r is None and strategy != "base":
        raise ValueError(f"strategy {strategy!r} needs the reference view's logits")
    lse_b = logsumexp(logits_b)
    argmax_b = logits_b.argmax(axis=1)
    lse_r = None if logits_r is None else logsumexp(logits_r)
    argmax_r = None if logits_r is None else logits_r.argmax(axis=1)
    category = np.full(len(logits_b), NO_CATEGORY)
    cand = cand_pb = None
    if strategy == "dasd":
        token, category, cand, cand_pb = dasd_choice(logits_b, lse_b, logits_r, cfg)
    elif strategy == "self-distill":
        token = argmax_r
    elif strategy == "base":
        token = argmax_b
    else:
        phase = np.full(len(logits_b), HINT_MIX) if hint_phase is None else hint_phase
        token = hint_choice(logits_b, lse_b, logits_r, lse_r, phase, cfg.hint_beta)
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
