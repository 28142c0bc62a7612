"""Machine frame numbers of a generated guest: where its p2m pages sit, how its RAM is numbered.

Shared by the tree writer (:mod:`.tree`) and the list writer
(:mod:`.listguest`), so both place their structure pages and number the
guest's RAM the same way:

* *placement*: the structure pages (tree pages, or list pages, page tables
  and shared frames) get MFNs either ``compact`` (1, 2, 3, ...) with the
  guest's RAM right after them, or ``scattered`` at random over
  ``scatter_span`` frames with the RAM above them;
* *numbering*: the guest's own pfns, in pfn order, get the MFNs
  ``base .. base + count - 1`` in ``linear``, ``chunked`` (2 MiB chunks in
  random order) or ``shuffled`` order.  A :class:`Numbering` answers for
  any rank, so a big guest can be numbered chunk by chunk;
* *foreign frames*: distinct MFNs of other domains, above everything else.

Every draw comes from the fixed :class:`~.prng.Stream`, in the order
placement, numbering, foreign frames, so fixtures stay byte for byte.
"""
from __future__ import annotations

import numpy as np

from ..errors import SpecError
from ..layout import layout_for
from .prng import PermutationIndex

#: pfns per chunk of the ``chunked`` order (2 MiB of guest RAM)
CHUNK_PFNS = 512
#: gap between the guest's own frames and the foreign ones
FOREIGN_GAP = 0x1000


class Numbering:
    """MFN of the guest's own pfn of rank ``r`` (0 = lowest own pfn)."""

    def __init__(self, order: str, count: int, base: int, rng):
        self.order = order
        self.count = count
        self.base = np.uint64(base)
        #: the chunks in random order ("chunked"); empty otherwise
        self.perm = np.zeros(0, dtype=np.uint64)
        #: the shuffled ranks ("shuffled"): the only pfn-sized array a generated
        #: guest holds, 2 bytes an own pfn (see :class:`~.prng.PermutationIndex`)
        self.shuffle: PermutationIndex | None = None
        if order == "shuffled":
            self.shuffle = rng.permutation_index(count)
        elif order == "chunked":
            self.perm = rng.permutation(-(-count // CHUNK_PFNS)).astype(np.uint64)

    def __call__(self, ranks: np.ndarray) -> np.ndarray:
        """MFNs of any ``ranks``."""
        ranks = np.asarray(ranks, dtype=np.uint64)
        if self.shuffle is not None:
            out = self.shuffle.take(ranks)
            out += self.base
            return out
        if self.order == "chunked":
            chunk = np.uint64(CHUNK_PFNS)
            return self.perm[(ranks // chunk).astype(np.int64)] * chunk + ranks % chunk + self.base
        return ranks + self.base

    def run(self, first: int, count: int) -> np.ndarray:
        """MFNs of ranks ``first`` .. ``first + count - 1`` (what the writers ask for)."""
        if self.shuffle is not None:
            out = self.shuffle.slice(first, first + count)
            out += self.base
            return out
        return self(np.arange(first, first + count, dtype=np.uint64))

    def top(self) -> int:
        """The highest MFN handed out (``count`` at least 1)."""
        if self.order != "chunked":
            return int(self.base) + self.count - 1
        last = self.count - (len(self.perm) - 1) * CHUNK_PFNS
        full = int(self.perm[:-1].max()) * CHUNK_PFNS + CHUNK_PFNS - 1 if len(self.perm) > 1 else 0
        return int(self.base) + max(full, int(self.perm[-1]) * CHUNK_PFNS + last - 1)

    @property
    def end(self) -> int:
        """One past the highest MFN handed out."""
        return int(self.base) + self.count


def foreign_mfns(count: int, base: int, rng) -> np.ndarray:
    """``count`` distinct MFNs of other domains, spread over 4x as many frames from ``base``."""
    return rng.choice(4 * count, count).astype(np.uint64) + np.uint64(base)


def foreign_base(data_end: int, pages_top: int) -> int:
    """First frame foreign MFNs may use: above the guest's RAM and its structure pages."""
    return max(data_end, pages_top + 1) + FOREIGN_GAP


def place_pages(spec, n_pages: int, n_own: int, rng, shuffle_tail: int = 0):
    """MFNs of ``n_pages`` structure pages and where the guest's RAM starts.

    Returns (page MFNs in the caller's order, RAM base, RAM end).  With
    ``compact`` placement and ``spec.shuffle_leaves`` the last
    ``shuffle_tail`` pages (the leaf / list pages) are put in random order.
    Everything is then shifted by ``spec.mfn_offset`` (the RAM numbering and
    the foreign frames follow from the base and the pages).
    """
    if spec.placement == "compact":
        mfns = np.arange(1, n_pages + 1, dtype=np.uint64)
        base = spec.mfn_base if spec.mfn_base is not None else n_pages + 1
        if base <= n_pages and n_own:
            raise SpecError(f"mfn_base {base:#x} overlaps the structure pages "
                            f"(MFNs 1-{n_pages:#x})")
        data_end = base + n_own
        if spec.shuffle_leaves and shuffle_tail:
            fixed = n_pages - shuffle_tail
            mfns[fixed:] = mfns[fixed:][rng.permutation(shuffle_tail)]
    else:
        # structure pages spread over MFNs [1, span]; guest RAM above them,
        # or the pages above the RAM when mfn_base puts the RAM low
        span = max(spec.scatter_span, 4 * n_pages)
        base = spec.mfn_base if spec.mfn_base is not None else span + 1
        data_end = base + n_own
        lo = 1 if base > span or not n_own else data_end
        mfns = rng.choice(span, n_pages).astype(np.uint64) + np.uint64(lo)
    if base < 1:
        raise SpecError("mfn_base must be at least 1 (MFN 0 is never a guest frame here)")
    off = spec.mfn_offset
    if off:
        mfns = mfns + np.uint64(off)
        check_fits(layout_for(spec.word_size), int(mfns.max()), "structure page MFNs")
    return mfns, base + off, data_end + off


def check_fits(layout, top_mfn: int, what: str) -> None:
    """Refuse MFNs that would run into the flag bits of the guest's word."""
    if top_mfn & layout.flag_mask or top_mfn > layout.word_mask:
        raise SpecError(f"{what} do not fit below the flag bits of the word")
