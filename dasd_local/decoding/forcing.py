"""Teacher-forced scoring: per-token probabilities of a given response under a view.

Feeds prompt + response through the engine in chunks and reads the logits at every
response position, so any response (a gold solution, another tool's output, a DASD
record) can be analysed the way generation records its own tokens. Knows the engine
and rules' numerics; knows nothing about files.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .rules import logsumexp, prob_of, rank_of, top_k


@dataclass
class Scored:
    p: np.ndarray  # (n,) probability of each response token
    rank: np.ndarray  # (n,) its 0-based rank
    argmax: np.ndarray  # (n,) the view's top token
    topk: np.ndarray  # (n, k) the view's top-k tokens


def score(engine, prompt: list[int], response: list[int], k: int = 6, seq: int = 0, chunk: int | None = None) -> Scored:
    """Probabilities of `response` after `prompt` under one sequence of `engine`."""
    tokens = list(prompt) + list(response)
    first = len(prompt) - 1  # the position whose logits predict response[0]
    chunk = chunk or engine.config.n_batch
    parts: list[Scored] = []
    engine.drop(seq)
    try:
        for start in range(0, len(tokens) - 1, chunk):
            end = min(start + chunk, len(tokens) - 1)
            want = [p >= first for p in range(start, end)]
            logits = engine.decode(tokens[start:end], list(range(start, end)), [seq] * (end - start), want)
            if len(logits):
                targets = np.array(tokens[max(start, first) + 1:end + 1])
                lse = logsumexp(logits)
                parts.append(Scored(prob_of(logits, lse, targets), rank_of(logits, targets),
                                    logits.argmax(axis=1), top_k(logits, k)))
    finally:
        engine.drop(seq)
    if not parts:
        empty = np.zeros(0)
        return Scored(empty, empty.astype(int), empty.astype(int), np.zeros((0, k), int))
    return Scored(*(np.concatenate([getattr(s, f) for s in parts]) for f in ("p", "rank", "argmax", "topk")))
