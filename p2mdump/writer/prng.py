"""A tiny deterministic PRNG (splitmix64 over a counter), vectorised.

numpy's Generator streams may change between numpy releases; fixtures must
be remade byte for byte on any machine, so the writer draws its shuffles
from this fixed function instead.
"""
from __future__ import annotations

import numpy as np

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


class Stream:
    """Independent draws: each call uses a fresh counter range."""

    def __init__(self, seed: int):
        self.seed = np.uint64(seed & 0xFFFFFFFFFFFFFFFF)
        self.counter = 0

    def words(self, n: int) -> np.ndarray:
        with np.errstate(over="ignore"):
            x = (np.arange(self.counter, self.counter + n, dtype=np.uint64) + self.seed) * _GOLDEN
            self.counter += n
            x = (x ^ (x >> np.uint64(30))) * _M1
            x = (x ^ (x >> np.uint64(27))) * _M2
            return x ^ (x >> np.uint64(31))

    def permutation(self, n: int) -> np.ndarray:
        return np.argsort(self.words(n), kind="stable")

    def choice(self, span: int, k: int) -> np.ndarray:
        """k distinct integers from range(span)."""
        if k > span:
            raise ValueError("cannot choose more values than the span holds")
        return self.permutation(span)[:k]
