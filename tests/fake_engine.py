"""A scripted engine for unit tests of the decode loop: no weights, a byte-ish vocabulary.

Logits are a deterministic function of a sequence's whole history, so the loop's
output cannot depend on batching, and every KV edit is checked: positions must be
contiguous, a copy must come from cached positions, a dropped sequence starts empty.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

V = 48
EOG = 0


@dataclass(frozen=True)
class FakeConfig:
    n_ctx: int = 100_000
    n_seq_max: int = 256
    n_batch: int = 4096
    kv_unified: bool = True


def _tok(ch: str) -> int:
    return 1 + ord(ch) % (V - 1)


class FakeEngine:
    n_vocab = V
    n_ctx_train = 100_000
    bos_text = ""
    eos_text = ""

    @property
    def seq_cells(self) -> int:
        return self.config.n_ctx if self.config.kv_unified else self.config.n_ctx // self.config.n_seq_max

    def __init__(self, config: FakeConfig = FakeConfig(), stop_every: int = 13):
        self.config = config
        self.stop_every = stop_every
        self.history: dict[int, list[int]] = {}
        self.calls: list[int] = []  # entries per decode call
        self.copies: list[tuple[int, int, int]] = []  # (src, dst, positions)
        self.max_cells = 0
        self.cell_ids: dict[int, list[int]] = {}  # a unified cache's cells per sequence: a copy shares them
        self._next_cell = 0

    def chat_template(self):
        return "{% for m in messages %}[{{ m['role'] }}]{{ m['content'] }}{% endfor %}[assistant]"

    def tokenize(self, text: str, special: bool = True) -> list[int]:
        return [_tok(c) for c in text]

    def token_text(self, token: int, special: bool = True) -> bytes:
        return b"" if token == EOG else chr(ord("a") + token % 26).encode()

    def detokenize(self, tokens) -> str:
        return b"".join(self.token_text(t) for t in tokens).decode()

    def is_eog(self, token: int) -> bool:
        return token == EOG

    def logits_for(self, history: list[int]) -> np.ndarray:
        seed = int.from_bytes(hashlib.sha256(np.asarray(history, np.int64).tobytes()).digest()[:8], "little")
        rng = np.random.default_rng(seed)
        logits = rng.normal(size=V).astype(np.float32) * 2.5
        logits[EOG] = 6.0 if seed % self.stop_every == 0 else -6.0
        return logits

    def decode(self, tokens, positions, seqs, want) -> np.ndarray:
        assert 0 < len(tokens) <= self.config.n_batch
        self.calls.append(len(tokens))
        out = []
        for tok, pos, seq, w in zip(tokens, positions, seqs, want):
            hist = self.history.setdefault(seq, [])
            assert pos == len(hist), f"seq {seq}: position {pos} after {len(hist)} cached tokens"
            hist.append(int(tok))
            self.cell_ids.setdefault(seq, []).append(self._next_cell)
            self._next_cell += 1
            if w:
                out.append(self.logits_for(hist))
        self.max_cells = max(self.max_cells, len(set().union(*self.cell_ids.values())) if self.config.kv_unified
                             else sum(len(h) for h in self.history.values()))
        assert self.max_cells <= self.config.n_ctx, "KV cache overflow"
        return np.array(out, dtype=np.float32).reshape(len(out), V)

    def drop(self, seq: int, p0: int = 0, p1: int = -1) -> None:
        assert p1 == -1
        self.history[seq] = self.history.get(seq, [])[:p0]
        self.cell_ids[seq] = self.cell_ids.get(seq, [])[:p0]

    def copy(self, src: int, dst: int, p0: int = 0, p1: int = -1) -> None:
        assert p0 == 0 and not self.history.get(dst), "copy into a non-empty sequence"
        assert p1 <= len(self.history[src]), "copying positions that are not cached"
        self.history[dst] = list(self.history[src][p0:p1])
        self.cell_ids[dst] = list(self.cell_ids[src][p0:p1])
        self.copies.append((src, dst, p1))
