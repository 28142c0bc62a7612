"""Runs of an ``xl dump-core``'s .xen_p2m pairs: the index behind frames by MFN.

Xen writes pair k of ``.xen_p2m`` for page k of ``.xen_pages`` in the order it
dumps the pages: pfn-ascending stretches whose gmfns mostly step by one.  So
the pairs are kept as *runs* (first value, first page, length) over which both
the value (pfn or gmfn) and the page step by one: ~130k runs describe the
2^26 pairs of a 256 GiB guest, where an entry per pair would take 1 GiB.

:class:`PieceFinder` cuts each chunk of the section, as it is read, into
*pieces* over which the pfn, the gmfn and the page all step by one (both
columns in one pass); :func:`merge_pieces` joins them across chunks and
:func:`merge_continuing` turns them into the runs of either column.
:func:`resolve` turns runs into a lookup index sorted by value in which
each value names the first page (in file order) that holds it, and counts
the values that several pages hold.  No order or uniqueness of the pairs is
assumed: overlapping runs (repeated values) are resolved exactly, at a cost in
memory proportional to the repeated pairs only (never more than the pairs the
file holds).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

_EMPTY_U = np.zeros(0, dtype=np.uint64)
_EMPTY_I = np.zeros(0, dtype=np.int64)
#: (first values, first pages, lengths) of runs
Runs = tuple[np.ndarray, np.ndarray, np.ndarray]


def chunk_runs(values: np.ndarray, pages: np.ndarray | None, first: int = 0) -> Runs:
    """(first values, first pages, lengths) of the runs of one chunk of pairs in
    file order: a run goes on while the value and the page both step by one.
    ``values`` are uint64 below 2^64-1 (padding already removed), ``pages``
    int64 ascending, or None for pages ``first, first+1, ...``."""
    m = len(values)
    if not m:
        return _EMPTY_U, _EMPTY_I, _EMPTY_I
    brk = np.empty(m, dtype=bool)
    brk[0] = True
    np.not_equal(values[1:], values[:-1] + np.uint64(1), out=brk[1:])
    if pages is not None:
        brk[1:] |= pages[1:] != pages[:-1] + 1
    at = np.flatnonzero(brk)
    firsts = first + at if pages is None else pages[at].astype(np.int64)
    return values[at], firsts, np.diff(np.append(at, m)).astype(np.int64)


#: pairs per block of :class:`PieceFinder`: its temporaries (2 MiB) fit a
#: CPU's cache, and its numpy operations are long enough that threads do not
#: queue for the interpreter lock between them (1 << 15 did not scale to two
#: threads; measured with bench/bench_walks.py's 2^26 xl dump-core)
PIECE_BLOCK = 1 << 17
#: two booleans True side by side, read as one uint16 (either byte order)
_BOTH = 0x0101
#: (pfns, gmfns, first pages, lengths) of pieces
Pieces = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


class PieceFinder:
    """Cuts pairs into *pieces*: stretches over which the pfn, the gmfn and
    the page all step by one.  The pairs are given as Xen stores them,
    interleaved (pfn, gmfn, pfn, gmfn, ...); both columns are compared in
    one pass of cache-sized blocks, in scratch buffers of this finder (one
    finder a thread)."""

    def __init__(self):
        self._step = np.empty(2 * PIECE_BLOCK, dtype=np.uint64)
        self._one = np.empty(2 * PIECE_BLOCK, dtype=bool)

    def starts(self, pairs: np.ndarray) -> np.ndarray:
        """Indexes of the pairs (of the interleaved uint64 ``pairs``) that
        start a piece, ascending, 0 first: those whose pfn or gmfn is not the
        one before plus one."""
        m = len(pairs) // 2
        parts = [np.zeros(1, dtype=np.int64)]
        for a in range(0, m - 1, PIECE_BLOCK):
            k = 2 * min(PIECE_BLOCK, m - 1 - a)     # pairs a+1.. against a..
            step = np.subtract(pairs[2 * a + 2:2 * a + 2 + k], pairs[2 * a:2 * a + k],
                               out=self._step[:k])
            one = np.equal(step, 1, out=self._one[:k])
            cut = np.flatnonzero(one.view(np.uint16) != _BOTH)
            if len(cut):
                parts.append(cut + (a + 1))
        return np.concatenate(parts)

    def pieces(self, pairs: np.ndarray, pages: np.ndarray | None, first: int = 0) -> Pieces:
        """(pfns, gmfns, first pages, lengths) of the pieces of interleaved
        ``pairs`` (no ~0 in them) whose pages are ``pages`` (int64
        ascending), or ``first, first+1, ...`` when None."""
        m = len(pairs) // 2
        if not m:
            return _EMPTY_U, _EMPTY_U, _EMPTY_I, _EMPTY_I
        at = self.starts(pairs)
        if pages is not None:
            gap = np.flatnonzero(pages[1:] != pages[:-1] + 1) + 1
            if len(gap):
                at = np.union1d(at, gap)
            firsts = pages[at].astype(np.int64)
        else:
            firsts = first + at
        return (pairs[0::2][at], pairs[1::2][at], firsts,
                np.diff(np.append(at, m)).astype(np.int64))


def merge_pieces(pfns: np.ndarray, gmfns: np.ndarray, pages: np.ndarray,
                 lengths: np.ndarray) -> Pieces:
    """Pieces (in file order) with every piece that continues the one before
    it (next pfn, next gmfn, next page) joined to it."""
    if len(pfns) < 2:
        return pfns, gmfns, pages, lengths
    steps = lengths[:-1].astype(np.uint64)
    cont = ((pfns[1:] == pfns[:-1] + steps) & (gmfns[1:] == gmfns[:-1] + steps)
            & (pages[1:] == pages[:-1] + lengths[:-1]))
    if not cont.any():
        return pfns, gmfns, pages, lengths
    heads = np.flatnonzero(np.concatenate(([True], ~cont)))
    return pfns[heads], gmfns[heads], pages[heads], np.add.reduceat(lengths, heads)


def merge_continuing(starts: np.ndarray, pages: np.ndarray, lengths: np.ndarray) -> Runs:
    """Runs (in the given order) with every run that continues the one before
    it (next value, next page) joined to it."""
    if len(starts) < 2:
        return starts, pages, lengths
    cont = np.zeros(len(starts), dtype=bool)
    cont[1:] = ((starts[1:] == starts[:-1] + lengths[:-1].astype(np.uint64))
                & (pages[1:] == pages[:-1] + lengths[:-1]))
    if not cont.any():
        return starts, pages, lengths
    heads = np.flatnonzero(~cont)
    return starts[heads], pages[heads], np.add.reduceat(lengths, heads)


@dataclass
class RunIndex:
    """Value -> page lookup: disjoint runs sorted by first value; each value
    names the first page (file order) that holds it.  ``repeats`` is the
    number of pairs whose value an earlier pair already holds;
    ``examples`` the first of them in value order, as (value, earlier page,
    page) triples."""

    starts: np.ndarray = field(default_factory=lambda: _EMPTY_U)
    pages: np.ndarray = field(default_factory=lambda: _EMPTY_I)
    lengths: np.ndarray = field(default_factory=lambda: _EMPTY_I)
    repeats: int = 0
    examples: list = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.starts)

    def locate(self, values) -> tuple[np.ndarray, np.ndarray]:
        """(pages of ``values`` (uint64 array), held mask); pages are
        meaningless where not held."""
        v = np.asarray(values, dtype=np.uint64)
        if not len(self.starts):
            return np.zeros(len(v), dtype=np.int64), np.zeros(len(v), dtype=bool)
        r = np.searchsorted(self.starts, v, side="right") - 1
        rc = np.maximum(r, 0)
        off = v - self.starts[rc]            # wraps where v < start: masked below
        held = (r >= 0) & (off < self.lengths[rc].astype(np.uint64))
        pages = self.pages[rc] + np.where(held, off, 0).astype(np.int64)
        return pages, held

    def find(self, value: int) -> tuple[int, int]:
        """(page of ``value``, pages that follow it in the same run); (-1, 0)
        when no page holds it."""
        if value < 0 or value >= 1 << 64 or not len(self.starts):
            return -1, 0
        r = int(np.searchsorted(self.starts, np.uint64(value), side="right")) - 1
        if r < 0:
            return -1, 0
        off = value - int(self.starts[r])
        n = int(self.lengths[r])
        return (int(self.pages[r]) + off, n - off) if off < n else (-1, 0)

    def end(self) -> int:
        """One past the largest value held (0 when empty)."""
        return int(self.starts[-1]) + int(self.lengths[-1]) if len(self.starts) else 0


def resolve(starts: np.ndarray, pages: np.ndarray, lengths: np.ndarray,
            examples: int = 5) -> RunIndex:
    """The :class:`RunIndex` of runs given in file order (runs from
    :class:`RunBuilder`: pages ascending from run to run)."""
    order = np.argsort(starts, kind="stable")
    s, p, n = starts[order], pages[order], lengths[order]
    e = s + n.astype(np.uint64)
    if len(s) < 2 or bool((s[1:] >= e[:-1]).all()):
        return RunIndex(s, p, n)
    return _resolve_overlaps(starts, pages, lengths, order, s, p, e, examples)


def _resolve_overlaps(starts, pages, lengths, order, s, p, e, examples) -> RunIndex:
    """:func:`resolve` when runs overlap.  The values are cut into elementary
    segments at every run boundary; each segment is held by a fixed set of
    runs.  A segment held once names its run through the sum of the ids of
    the runs open over it; the segments held more than once are expanded to
    (value, page) pairs (as many as the repeated pairs) and the first page
    of each value wins."""
    bounds = np.unique(np.concatenate([s, e]))
    e_order = np.argsort(e, kind="stable")
    opened = np.searchsorted(s, bounds, side="right")
    closed = np.searchsorted(e[e_order], bounds, side="right")
    cover = (opened - closed)[:-1]
    ids = order.astype(np.int64)
    id_open = np.concatenate([[0], np.cumsum(ids)])[opened]
    id_closed = np.concatenate([[0], np.cumsum(ids[e_order])])[closed]
    seg_start, seg_len = bounds[:-1], np.diff(bounds).astype(np.int64)

    once = np.flatnonzero(cover == 1)
    run = (id_open - id_closed)[once]
    one_s = seg_start[once]
    one_p = pages[run] + (one_s - starts[run]).astype(np.int64)
    one_n = seg_len[once]

    many = np.flatnonzero(cover > 1)
    m_start, m_len = seg_start[many], seg_len[many]
    repeats = int(((cover[many] - 1) * m_len).sum())
    # expand: the repeated segments inside each run, then their values
    lo = np.searchsorted(m_start, s, side="left")
    hi = np.searchsorted(m_start, e, side="left")
    v, pg = _expand(s, p, lo, hi - lo, m_start, m_len)
    o = np.lexsort((pg, v))
    v, pg = v[o], pg[o]
    same = np.flatnonzero(v[1:] == v[:-1])
    ex = [(int(v[i]), int(pg[i]), int(pg[i + 1])) for i in same[:examples].tolist()]
    first = np.ones(len(v), dtype=bool)
    first[1:] = v[1:] != v[:-1]
    w_s, w_p, w_n = chunk_runs(v[first], pg[first])

    all_s = np.concatenate([one_s, w_s])
    o = np.argsort(all_s, kind="stable")
    idx_s, idx_p, idx_n = merge_continuing(all_s[o], np.concatenate([one_p, w_p])[o],
                                           np.concatenate([one_n, w_n])[o])
    return RunIndex(idx_s, idx_p, idx_n, repeats, ex)


def _expand(s, p, lo, count, m_start, m_len):
    """(values, pages) of the pairs of the repeated segments: run r (sorted
    position) holds segments lo[r] .. lo[r]+count[r]-1."""
    total = int(count.sum())
    rr = np.repeat(np.arange(len(s)), count)
    jj = lo[rr] + (np.arange(total) - np.repeat(np.cumsum(count) - count, count))
    lens = m_len[jj]
    size = int(lens.sum())
    r2 = np.repeat(rr, lens)
    off = np.arange(size) - np.repeat(np.cumsum(lens) - lens, lens)
    v = m_start[np.repeat(jj, lens)] + off.astype(np.uint64)
    return v, p[r2] + (v - s[r2]).astype(np.int64)
