"""A spec's pfn space as runs of one kind, and the p2m entries of any pfn range.

The tree writer can afford a full boolean mask per rule; a list guest may
describe 2^32 pfns, so the list writer describes the guest by its ranges
instead: :class:`Segments` cuts [0, end) into maximal runs of one class
(own RAM, identity, foreign, missing) with the spec's precedence, and
:meth:`Segments.entries` produces the entries of any pfn window from them,
so a big guest is generated chunk by chunk.
"""
from __future__ import annotations

import numpy as np

#: segment classes
MISSING, IDENTITY, OWN, FOREIGN = range(4)
#: pfns computed at once by :meth:`Segments.entries` (1 MiB of 64-bit temporaries)
PIECE = 1 << 17


class Segments:
    """Runs [starts[i], ends[i]) of class classes[i] covering pfns [0, end)."""

    def __init__(self, spec, end: int):
        cuts = {0, end}
        rules = {}
        for name in ("ram", "holes", "ballooned", "identity", "foreign"):
            rules[name] = [(min(a, end), min(b, end)) for a, b in getattr(spec, name)]
            for a, b in rules[name]:
                cuts.update((a, b))
        points = np.array(sorted(cuts), dtype=np.int64)
        starts = points[:-1]

        def covered(name):
            mask = np.zeros(len(starts), dtype=bool)
            for a, b in rules[name]:
                mask[np.searchsorted(starts, a):np.searchsorted(starts, b)] = True
            return mask

        foreign = covered("foreign")
        identity = covered("identity") & ~foreign
        own = covered("ram") & ~covered("holes") & ~covered("ballooned") & ~identity & ~foreign
        classes = np.full(len(starts), MISSING, dtype=np.uint8)
        classes[identity] = IDENTITY
        classes[own] = OWN
        classes[foreign] = FOREIGN
        # merge neighbours of one class
        keep = np.ones(len(starts), dtype=bool)
        keep[1:] = classes[1:] != classes[:-1]
        self.starts = starts[keep]
        self.classes = classes[keep]
        self.ends = np.append(self.starts[1:], end).astype(np.int64)
        self.end = end
        lengths = self.ends - self.starts
        #: rank of the first pfn of each segment among the own / foreign pfns
        self.own_before = np.concatenate([[0], np.cumsum(np.where(self.classes == OWN,
                                                                  lengths, 0))])
        self.foreign_before = np.concatenate([[0], np.cumsum(np.where(self.classes == FOREIGN,
                                                                      lengths, 0))])

    @property
    def n_own(self) -> int:
        return int(self.own_before[-1])

    @property
    def n_foreign(self) -> int:
        return int(self.foreign_before[-1])

    def last_end(self, *classes) -> int:
        """One past the last pfn of any of ``classes`` (0 if there is none)."""
        sel = np.isin(self.classes, classes)
        return int(self.ends[sel].max()) if sel.any() else 0

    def overlapping(self, a: int, b: int):
        """(index, start, end) of the segments meeting [a, b), clipped to it."""
        i = int(np.searchsorted(self.ends, a, side="right"))
        while i < len(self.starts) and self.starts[i] < b:
            yield i, max(int(self.starts[i]), a), min(int(self.ends[i]), b)
            i += 1

    def entries(self, a: int, b: int, layout, own_mfn, foreign_mfn) -> np.ndarray:
        """The p2m entries of pfns [a, b): ``own_mfn(first, count)`` /
        ``foreign_mfn(first, count)`` number ``count`` own / foreign pfns from
        rank ``first``; identity pfns hold ``pfn | IDENTITY_FRAME_BIT``.

        Computed in pieces of :data:`PIECE` pfns, so the temporaries stay small
        beside the result."""
        dtype = np.dtype(layout.numpy_dtype)
        out = np.full(b - a, layout.invalid, dtype=dtype)
        for i, s0, e0 in self.overlapping(a, b):
            cls = self.classes[i]
            if cls == MISSING:
                continue
            for s in range(s0, e0, PIECE):
                e = min(s + PIECE, e0)
                if cls == IDENTITY:
                    out[s - a:e - a] = (np.arange(s, e, dtype=np.uint64)
                                        | np.uint64(layout.identity_bit))
                    continue
                first = s - int(self.starts[i])
                if cls == OWN:
                    r0 = int(self.own_before[i]) + first
                    out[s - a:e - a] = own_mfn(r0, e - s)
                else:
                    r0 = int(self.foreign_before[i]) + first
                    mfns = foreign_mfn(r0, e - s)
                    out[s - a:e - a] = mfns | np.uint64(layout.foreign_bit)
        return out

    def own_runs(self, limit: int):
        """(first pfn, first rank, count) of the own pfns below ``limit``, ascending."""
        for i in np.flatnonzero(self.classes == OWN).tolist():
            s, e = int(self.starts[i]), min(int(self.ends[i]), limit)
            if s >= limit:
                break
            yield s, int(self.own_before[i]), e - s

    def own_count(self, limit: int) -> int:
        """Own pfns below ``limit``."""
        return sum(n for _, _, n in self.own_runs(limit))

    def last_own(self, limit: int, k: int) -> np.ndarray:
        """The ``k`` highest own pfns below ``limit``, ascending (fewer if there are fewer)."""
        parts, need = [], k
        for i in np.flatnonzero(self.classes == OWN)[::-1].tolist():
            if need <= 0:
                break
            s, e = int(self.starts[i]), min(int(self.ends[i]), limit)
            if e <= s:
                continue
            take = min(need, e - s)
            parts.append(np.arange(e - take, e, dtype=np.uint64))
            need -= take
        if not parts:
            return np.zeros(0, dtype=np.uint64)
        return np.concatenate(parts[::-1])


def guest_entries(guest, a: int, b: int) -> np.ndarray:
    """What a generated guest's p2m says for pfns [a, b) (identity entries kept):
    its ``segments`` numbered by its ``numbering`` and ``foreign`` frames, then its
    ``override_pfns`` -> ``override_mfns`` (sorted by pfn).  The tree and the list
    guest (writer.tree.TreeGuest, writer.listguest.ListGuest) share it."""
    out = guest.segments.entries(a, b, guest.layout, guest.numbering.run,
                                 lambda first, count: guest.foreign[first:first + count])
    if len(guest.override_pfns):
        lo, hi = np.searchsorted(guest.override_pfns, [a, b])
        out[(guest.override_pfns[lo:hi] - np.uint64(a)).astype(np.int64)] = \
            guest.override_mfns[lo:hi]
    return out
