"""Prompt-lookup drafting: guess the next tokens by n-gram match in the text so far.

DASD's output mostly follows the reference solution, which sits in the reference view's
prompt, so the continuation of the latest earlier occurrence of the last few emitted
tokens is a good guess. Pure Python, no model: the decode loop verifies every drafted
token with the rule itself, so a bad draft costs compute, never correctness.
"""

from __future__ import annotations


class NgramIndex:
    """Latest start of every 1..n-gram of a growing token list that has a successor."""

    def __init__(self, tokens: list[int], n: int = 3):
        self.n = n
        self.tokens: list[int] = []
        self.last: dict[tuple[int, ...], int] = {}
        self.extend(tokens)

    def extend(self, tokens: list[int]) -> None:
        for t in tokens:
            end = len(self.tokens)  # t follows the n-grams ending at end-1
            for k in range(1, self.n + 1):
                if end - k >= 0:
                    self.last[tuple(self.tokens[end - k:end])] = end - k
            self.tokens.append(t)

    def draft(self, d: int) -> list[int]:
        """Up to `d` tokens that followed the longest suffix (n down to 1 tokens) seen before."""
        if d <= 0:
            return []
        for k in range(min(self.n, len(self.tokens)), 0, -1):
            start = self.last.get(tuple(self.tokens[-k:]))
            if start is not None:
                return self.tokens[start + k:start + k + d]
        return []


class DraftLength:
    """Adaptive draft length: grows while drafts are accepted whole, shrinks when they are not."""

    def __init__(self, start: int = 4, most: int = 8):
        self.value, self.most = min(start, most), most

    def update(self, drafted: int, accepted: int) -> None:
        if drafted == 0:
            return
        if accepted == drafted:
            self.value = min(self.value + 2, self.most)
        elif accepted < drafted / 2:
            self.value = max(self.value // 2, 1)
