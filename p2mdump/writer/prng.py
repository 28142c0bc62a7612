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
#: positions per block of a :class:`PermutationIndex` (their offsets are uint16)
BLOCK = 1 << 16
#: at most 2^BUCKET_BITS buckets of words (bounds the per-block table: 4 bytes a
#: bucket a block, at most 1/16 of the offsets' 2 bytes a position)
BUCKET_BITS = 11
#: words a bucket should hold at least (a group of buckets is sorted at once)
BUCKET_MIN = 1 << 13
#: positions a group of buckets holds, about (sorted at once, a few hundred KiB)
GROUP = 1 << 14


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

    def permutation_index(self, n: int) -> "PermutationIndex":
        """``permutation(n)``, read a piece at a time (:class:`PermutationIndex`)."""
        first = self.counter
        self.counter += n
        return PermutationIndex(self, first, n)

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


def order_of_distinct(words: np.ndarray, lo: int, span: int) -> np.ndarray:
    """``np.argsort(words)`` of distinct uint64 ``words`` that all lie in
    [lo, lo + span).

    Their offsets from ``lo`` cut to 32 bits are sorted by two stable 16-bit
    radix passes (numpy sorts 16-bit keys by counting, in linear time); the
    rare runs of equal cut keys are then put in order by their whole words."""
    shift = np.uint64(max(0, (span - 1).bit_length() - 32))
    with np.errstate(over="ignore"):
        key = ((words - np.uint64(lo)) >> shift).astype(np.uint32)
    halves = key.astype("<u4", copy=False).view(np.uint16)     # low, high, low, high, ...
    order = np.argsort(halves[0::2], kind="stable")
    order = order[np.argsort(halves[1::2][order], kind="stable")]
    ks = key[order]
    tied = ks[1:] == ks[:-1]
    if tied.any():
        member = np.zeros(len(ks), dtype=bool)
        member[1:] |= tied
        member[:-1] |= tied
        at = np.flatnonzero(member)
        run_start = np.ones(len(at), dtype=bool)
        run_start[1:] = ~tied[at[1:] - 1]
        inside = np.lexsort((words[order[at]], np.cumsum(run_start)))
        order[at] = order[at][inside]
    return order


class PermutationIndex:
    """``permutation(n)`` of a :class:`Stream` (the stable argsort of ``n``
    fresh words), held in 2 bytes a position and produced a piece at a time.

    The words are cut into 2^bits buckets by their top bits; the buckets in
    order hold the permutation's ranks in order.  For each block of
    :data:`BLOCK` positions the index holds the block's offsets sorted by
    bucket (uint16) and where each bucket starts among them.  The positions
    of a group of buckets are gathered from every block, their words are
    recomputed and sorted (:func:`order_of_distinct`), which gives those
    ranks of the permutation; the last group is kept for the next call."""

    def __init__(self, stream: Stream, first: int, n: int):
        self.stream, self.first, self.n = stream, first, n
        self.bits = min(BUCKET_BITS, (n // BUCKET_MIN).bit_length())
        nb = 1 << self.bits
        blocks = -(-n // BLOCK)
        #: per block: its offsets sorted by bucket (stable: ascending inside a bucket)
        self.offsets = np.empty(n, dtype=np.uint16)
        #: per block: where each bucket starts among its offsets (and where the last ends)
        self.starts = np.zeros((blocks, nb + 1), dtype=np.uint32)
        for c in range(blocks):
            a, b = c * BLOCK, min(n, (c + 1) * BLOCK)
            bk = self._buckets(self._words(np.arange(a, b, dtype=np.uint64)))
            self.offsets[a:b] = np.argsort(bk, kind="stable")
            self.starts[c, 1:] = np.cumsum(np.bincount(bk, minlength=nb))
        sizes = (self.starts[:, 1:] - self.starts[:, :-1]).sum(axis=0, dtype=np.int64)
        #: buckets per group, and the rank each group ends at
        self.per_group = max(1, GROUP // max(1, n >> self.bits))
        self.group_end = np.cumsum(sizes)[self.per_group - 1::self.per_group]
        if len(sizes) % self.per_group:
            self.group_end = np.append(self.group_end, n)
        self._cached = (-1, np.zeros(0, dtype=np.uint64))

    def _words(self, positions: np.ndarray) -> np.ndarray:
        return self.stream._mix(positions + np.uint64(self.first))

    def _buckets(self, words: np.ndarray) -> np.ndarray:
        if not self.bits:
            return np.zeros(len(words), dtype=np.uint16)
        return (words >> np.uint64(64 - self.bits)).astype(np.uint16)

    def group(self, k: int) -> np.ndarray:
        """The positions of ranks ``group_end[k - 1]`` .. ``group_end[k] - 1``."""
        if self._cached[0] == k:
            return self._cached[1]
        j0 = k * self.per_group
        j1 = min(j0 + self.per_group, self.starts.shape[1] - 1)
        begin = self.starts[:, j0].astype(np.int64)
        lens = self.starts[:, j1].astype(np.int64) - begin
        held = np.cumsum(lens)
        m = int(held[-1]) if len(held) else 0
        block = np.repeat(np.arange(len(lens), dtype=np.uint64), lens)
        at = np.repeat(begin + np.arange(len(lens), dtype=np.int64) * BLOCK - (held - lens), lens)
        at += np.arange(m, dtype=np.int64)
        pos = (block << np.uint64(16)) | self.offsets[at].astype(np.uint64)
        shift = 64 - self.bits
        pos = pos[order_of_distinct(self._words(pos), j0 << shift, (j1 - j0) << shift)]
        self._cached = (k, pos)
        return pos

    def slice(self, a: int, b: int) -> np.ndarray:
        """``permutation(n)[a:b]`` as uint64 (0 <= a <= b <= n)."""
        if not 0 <= a <= b <= self.n:
            raise IndexError("ranks out of range of the permutation")
        out = np.empty(b - a, dtype=np.uint64)
        k = int(np.searchsorted(self.group_end, a, side="right"))
        r = a
        while r < b:
            first = int(self.group_end[k - 1]) if k else 0
            end = min(b, int(self.group_end[k]))
            out[r - a:end - a] = self.group(k)[r - first:end - first]
            r, k = end, k + 1
        return out

    def take(self, ranks) -> np.ndarray:
        """``permutation(n)[ranks]`` as uint64, for any ranks."""
        ranks = np.asarray(ranks, dtype=np.int64).ravel()
        if len(ranks) and ((ranks < 0).any() or (ranks >= self.n).any()):
            raise IndexError("rank out of range of the permutation")
        order = np.argsort(ranks, kind="stable")
        sorted_ranks = ranks[order]
        groups = np.searchsorted(self.group_end, sorted_ranks, side="right")
        cuts = np.flatnonzero(groups[1:] != groups[:-1]) + 1
        out = np.empty(len(ranks), dtype=np.uint64)
        for a, b in zip([0] + cuts.tolist(), cuts.tolist() + [len(ranks)]):
            if a == b:
                continue
            k = int(groups[a])
            first = int(self.group_end[k - 1]) if k else 0
            out[order[a:b]] = self.group(k)[sorted_ranks[a:b] - first]
        return out
