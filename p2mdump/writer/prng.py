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
#: words drawn (and sorted) at once by :meth:`Stream.permutation_u32`
SORT_CHUNK = 1 << 18


class Stream:
    """Independent draws: each call uses a fresh counter range."""

    def __init__(self, seed: int):
        self.seed = np.uint64(seed & 0xFFFFFFFFFFFFFFFF)
        self.counter = 0

    def _mix(self, counters: np.ndarray) -> np.ndarray:
        """The words of the given counter values."""
        with np.errstate(over="ignore"):
            x = (counters + self.seed) * _GOLDEN
            x = (x ^ (x >> np.uint64(30))) * _M1
            x = (x ^ (x >> np.uint64(27))) * _M2
            return x ^ (x >> np.uint64(31))

    def words(self, n: int) -> np.ndarray:
        x = self._mix(np.arange(self.counter, self.counter + n, dtype=np.uint64))
        self.counter += n
        return x

    def permutation(self, n: int) -> np.ndarray:
        return np.argsort(self.words(n), kind="stable")

    def permutation_u32(self, n: int) -> np.ndarray:
        """``permutation(n)`` as uint32 (n at most 2^32), holding little beside it.

        The words are distinct (splitmix64 is a bijection), so the permutation
        is their sort order: a counting sort by their top bits, a chunk of
        words at a time, puts every position in its bucket; each run of
        buckets is then sorted by its words, recomputed from the positions."""
        if n > 1 << 32:
            raise ValueError("a uint32 permutation holds at most 2^32 values")
        first = self.counter
        self.counter += n
        out = np.empty(n, dtype=np.uint32)
        bits = max(1, min(16, (4 * n // SORT_CHUNK).bit_length()))
        shift, nb = np.uint64(64 - bits), 1 << bits
        chunks = [(a, min(a + SORT_CHUNK, n)) for a in range(0, n, SORT_CHUNK)]

        def buckets(a, b):
            return (self._mix(np.arange(first + a, first + b, dtype=np.uint64)) >> shift
                    ).astype(np.uint16)

        counts = np.zeros(nb, dtype=np.int64)
        for a, b in chunks:
            counts += np.bincount(buckets(a, b), minlength=nb)
        ends = np.cumsum(counts)
        fill = ends - counts
        for a, b in chunks:
            bk = buckets(a, b)
            order = np.argsort(bk, kind="stable")
            sb = bk[order].astype(np.intp)
            c = np.bincount(sb, minlength=nb)
            group_first = np.cumsum(c) - c
            out[fill[sb] + np.arange(b - a) - group_first[sb]] = order + a
            fill += c
        lo = 0
        while lo < n:
            hi = int(ends[max(np.searchsorted(ends, lo + SORT_CHUNK, side="right") - 1,
                              np.searchsorted(ends, lo, side="right"))])
            seg = out[lo:hi]
            out[lo:hi] = seg[np.argsort(self._mix(seg.astype(np.uint64) + np.uint64(first)))]
            lo = hi
        return out

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
