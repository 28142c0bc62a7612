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
#: words drawn at once by :meth:`Stream.choice`
DRAW_CHUNK = 1 << 20


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
        """k distinct integers from range(span): ``permutation(span)[:k]``, the
        positions of the k smallest of ``span`` fresh words, smallest first.

        The words are drawn :data:`DRAW_CHUNK` at a time; those below the k-th
        smallest so far are kept, and cut back to the k smallest whenever more
        than 2k are kept (splitmix64 is a bijection, so the words are distinct
        and their order is the stable argsort's)."""
        if k > span:
            raise ValueError("cannot choose more values than the span holds")
        kept_w, kept_i = [np.zeros(0, dtype=np.uint64)], [np.zeros(0, dtype=np.intp)]
        held = 0
        limit = None        # the k-th smallest word so far, once there are k

        def cut():
            w, i = np.concatenate(kept_w), np.concatenate(kept_i)
            if len(w) > k:
                keep = np.argpartition(w, k - 1)[:k] if k else np.zeros(0, dtype=np.intp)
                w, i = w[keep], i[keep]
            return w, i

        for a in range(0, span, DRAW_CHUNK):
            w = self.words(min(DRAW_CHUNK, span - a))
            i = np.arange(a, a + len(w), dtype=np.intp)
            if limit is not None:
                low = w < limit
                w, i = w[low], i[low]
            kept_w.append(w)
            kept_i.append(i)
            held += len(w)
            if held > 2 * k or (limit is None and held >= k):
                w, i = cut()
                kept_w, kept_i, held = [w], [i], len(w)
                limit = w.max() + np.uint64(1) if k else np.uint64(0)
        w, i = cut()
        return i[np.argsort(w)]
