"""P2MTable: the pfn-indexed table of raw p2m entries, and what follows from it.

The table holds the raw leaf words exactly as the tree holds them (a numpy
array of ``<u4`` / ``<u8``).  Classification, decoding, runs, lookups and the
inverse (m2p) are computed from it in bulk, chunk by chunk, so a 2^27-entry
(1 GiB) table never needs a second full-size temporary.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np

from .layout import KINDS, Layout
from .record import Record

#: uint8 code of each kind (index into layout.KINDS)
VALID, MISSING, IDENTITY, FOREIGN = range(4)
CHUNK = 1 << 22
#: block of the run scan: small enough to stay in the CPU cache
BLOCK = 1 << 15

# kind code by the two flag bits (FOREIGN, IDENTITY); INVALID is patched after
_FLAG_CODES = np.array([VALID, IDENTITY, FOREIGN, IDENTITY], dtype=np.uint8)


def empty_words(count: int, dtype, populate: bool = False) -> np.ndarray:
    """An uninitialised array of ``count`` words in plain 4 KiB pages.

    numpy asks the kernel for transparent huge pages (MADV_HUGEPAGE) for large
    arrays; once the machine's memory is fragmented, the direct compaction
    that asks for costs far more than the page faults it saves (measured on a
    1 GiB table: 1.3-1.5 s more kernel time per walk).  An anonymous private
    mapping without that advice behaves like the C walker's malloc.
    ``populate``: the caller writes every word, so the pages are allocated
    at once (MAP_POPULATE) instead of one fault at a time.
    """
    dtype = np.dtype(dtype)
    nbytes = count * dtype.itemsize
    if nbytes < (4 << 20):
        return np.empty(count, dtype=dtype)
    import mmap

    flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS
    if populate:
        flags |= getattr(mmap, "MAP_POPULATE", 0)
    try:
        buf = mmap.mmap(-1, nbytes, flags=flags)
    except (OSError, ValueError, AttributeError):
        return np.empty(count, dtype=dtype)
    return np.frombuffer(buf, dtype=dtype)


class Run(Record):
    """pfns [start, end) of one kind whose mfns step by one (mfn None if missing);
    immutable and hashable."""

    __slots__ = ("start", "end", "kind", "mfn")
    start: int
    end: int
    kind: str
    mfn: int | None

    def __init__(self, start: int, end: int, kind: str, mfn: int | None):
        for name, value in zip(self.__slots__, (start, end, kind, mfn)):
            object.__setattr__(self, name, value)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Run is immutable")

    def __hash__(self) -> int:  # type: ignore[override]  # Record is unhashable; a Run is not
        return hash((self.start, self.end, self.kind, self.mfn))

    @property
    def length(self) -> int:
        return self.end - self.start

    @property
    def mfn_end(self) -> int | None:
        return None if self.mfn is None else self.mfn + self.length


def classify(raw: np.ndarray, layout: Layout) -> np.ndarray:
    """Kind codes (uint8) of an array of raw entries: INVALID first, then the
    IDENTITY bit, then the FOREIGN bit, like the kernel's xen_p2m_elem_type."""
    codes = _FLAG_CODES[raw >> np.array(layout.bits - 2, dtype=raw.dtype)]
    codes[raw == raw.dtype.type(layout.invalid)] = MISSING
    return codes


def decode(raw: np.ndarray, layout: Layout) -> np.ndarray:
    """pfn_to_mfn(): flag bits cleared; missing entries stay INVALID."""
    inv = raw == raw.dtype.type(layout.invalid)
    out = raw & raw.dtype.type(layout.word_mask & ~layout.flag_mask)
    out[inv] = raw.dtype.type(layout.invalid)
    return out


class P2MTable:
    """Raw p2m entries for pfns 0..len-1 of a guest with ``layout``."""

    def __init__(self, raw: np.ndarray, layout: Layout):
        if raw.dtype != np.dtype(layout.numpy_dtype):
            raw = raw.astype(layout.numpy_dtype)
        self.raw = raw
        self.layout = layout
        self._summary: tuple[dict[str, int], np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.raw)

    @property
    def max_pfn(self) -> int:
        return len(self.raw)

    # -- single entries ------------------------------------------------------
    def entry(self, pfn: int) -> int:
        return int(self.raw[pfn])

    def lookup(self, pfn: int) -> dict:
        """pfn -> {pfn, raw, kind, mfn}; pfns past the table are missing."""
        if pfn < 0:
            raise ValueError("pfn must not be negative")
        raw = self.entry(pfn) if pfn < len(self.raw) else self.layout.invalid
        return {"pfn": pfn, "raw": raw, "kind": self.layout.kind_of(raw),
                "mfn": self.layout.decode(raw)}

    # -- bulk ----------------------------------------------------------------
    def chunks(self, size: int = CHUNK) -> Iterator[tuple[int, np.ndarray]]:
        for start in range(0, len(self.raw), size):
            yield start, self.raw[start:start + size]

    def kinds(self) -> np.ndarray:
        """uint8 kind code per pfn (see :data:`VALID` ...)."""
        out = np.empty(len(self.raw), dtype=np.uint8)
        for start, chunk in self.chunks():
            out[start:start + len(chunk)] = classify(chunk, self.layout)
        return out

    def mfns(self) -> np.ndarray:
        """Decoded mfn per pfn (INVALID where missing)."""
        out = np.empty_like(self.raw)
        for start, chunk in self.chunks():
            out[start:start + len(chunk)] = decode(chunk, self.layout)
        return out

    def _scan(self):
        """Counts per kind and the first pfn of every run, in one pass.

        A run continues while the raw entry steps by one or two INVALIDs
        follow each other; the table is processed in cache-sized blocks with
        a handful of vector operations each.  Stepping by one can cross a
        kind boundary (INVALID -> 0 by wrap-around, a carry into a flag bit,
        INVALID-1 -> INVALID); such runs are rare and split afterwards.
        """
        lay = self.layout
        raw = self.raw
        n = len(raw)
        if n == 0:
            return np.zeros(4, dtype=np.int64), np.zeros(0, dtype=np.int64)
        inv = raw.dtype.type(lay.invalid)
        one = raw.dtype.type(1)
        parts = [np.zeros(1, dtype=np.int64)]
        for a in range(1, n, BLOCK):
            e = min(a + BLOCK, n)
            window = raw[a - 1:e]
            invb = window == inv
            cont = window[1:] == window[:-1] + one
            cont |= invb[1:] & invb[:-1]
            brk = np.flatnonzero(~cont)
            if len(brk):
                parts.append(brk + a)
        starts = np.concatenate(parts)
        starts = self._split_mixed(starts)
        ends = np.append(starts[1:], n)
        codes = classify(raw[starts], lay)
        # identity entries may carry the FOREIGN bit too: runs follow the
        # decoded mfn, so join identity runs whose decoded mfns step by one
        ident = codes == IDENTITY
        if np.count_nonzero(ident) > 1:
            first = decode(raw[starts], lay)
            last = decode(raw[ends - 1], lay)
            join = ident[1:] & ident[:-1] & (last[:-1] + raw.dtype.type(1) == first[1:])
            if join.any():
                keep = np.ones(len(starts), dtype=bool)
                keep[1:] = ~join
                starts, codes = starts[keep], codes[keep]
                ends = np.append(starts[1:], n)
        counts = np.bincount(codes, weights=(ends - starts), minlength=4)
        return counts.astype(np.int64), starts

    def _split_mixed(self, starts: np.ndarray) -> np.ndarray:
        """Split runs whose first and last entries differ in kind."""
        lay = self.layout
        n = len(self.raw)
        while True:
            ends = np.append(starts[1:], n)
            mixed = np.flatnonzero(classify(self.raw[starts], lay)
                                   != classify(self.raw[ends - 1], lay))
            if not len(mixed):
                return starts
            extra = []
            for i in mixed.tolist():
                s, e = int(starts[i]), int(ends[i])
                codes = classify(self.raw[s:e], lay)
                extra.append(s + int(np.flatnonzero(codes != codes[0])[0]))
            starts = np.sort(np.concatenate([starts, np.array(extra, dtype=np.int64)]))

    def summary(self) -> tuple[dict[str, int], np.ndarray]:
        """(counts by kind name, run start pfns); computed once."""
        if self._summary is None:
            counts, run_starts = self._scan()
            self._summary = ({k: int(counts[i]) for i, k in enumerate(KINDS)}, run_starts)
        return self._summary

    def counts(self) -> dict:
        return dict(self.summary()[0])

    def run_arrays(self):
        """(starts, ends, codes, first raw entry) of every run, as arrays."""
        run_starts = self.summary()[1].astype(np.int64)
        ends = np.empty_like(run_starts)
        ends[:-1] = run_starts[1:]
        if len(ends):
            ends[-1] = len(self.raw)
        first = self.raw[run_starts]
        codes = classify(first, self.layout) if len(first) else np.zeros(0, np.uint8)
        return run_starts, ends, codes, first

    def runs(self) -> Iterator[Run]:
        starts, ends, codes, first = self.run_arrays()
        lay = self.layout
        for s, e, c, r in zip(starts.tolist(), ends.tolist(), codes.tolist(), first.tolist()):
            yield Run(s, e, KINDS[c], None if c == MISSING else lay.decode(r))

    def duplicate_mfns(self, examples: int = 5):
        """Valid mfns claimed by more than one pfn.

        Works on the runs of valid entries (intervals of machine frames), so a
        1 GiB table needs no sort of its entries: after sorting the intervals
        by first mfn, the frames of an interval below the running maximum end
        of the earlier intervals are exactly the ones already claimed.
        Returns (number of pfns whose mfn was already claimed, examples) where
        an example is (mfn, first pfn, other pfn).
        """
        starts, ends, codes, first = self.run_arrays()
        sel = codes == VALID
        if not sel.any():
            return 0, []
        pfn0 = starts[sel]
        m0 = first[sel].astype(np.uint64)
        m1 = m0 + (ends[sel] - pfn0).astype(np.uint64)
        order = np.argsort(m0, kind="stable")
        pfn0, m0, m1 = pfn0[order], m0[order], m1[order]
        cummax = np.maximum.accumulate(m1)
        prev_max = np.empty_like(cummax)
        prev_max[0] = 0
        prev_max[1:] = cummax[:-1]
        overlap = np.minimum(m1, prev_max).astype(np.int64) - m0.astype(np.int64)
        overlap[0] = 0
        overlap = np.maximum(overlap, 0)
        total = int(overlap.sum())
        found = []
        if total:
            arg_of_max = np.maximum.accumulate(np.where(m1 == cummax, np.arange(len(m1)), 0))
            for i in np.flatnonzero(overlap)[:examples].tolist():
                j = int(arg_of_max[i - 1])
                mfn = int(m0[i])
                other = int(pfn0[j]) + (mfn - int(m0[j]))
                found.append((mfn, other, int(pfn0[i])))
        return total, found

    def inverse(self) -> dict:
        """m2p for valid entries: mfn -> sorted list of pfns."""
        out: dict[int, list[int]] = {}
        for start, chunk in self.chunks():
            codes = classify(chunk, self.layout)
            idx = np.flatnonzero(codes == VALID)
            for pfn, mfn in zip((idx + start).tolist(), chunk[idx].tolist()):
                out.setdefault(mfn, []).append(pfn)
        return out

    def pfns_of(self, mfn: int) -> list[int]:
        """All pfns whose valid entry is ``mfn`` (scan in bulk)."""
        hits: list[int] = []
        val = self.raw.dtype.type(mfn) if 0 <= mfn <= self.layout.word_mask else None
        if val is None or mfn & self.layout.flag_mask:
            return hits
        for start, chunk in self.chunks():
            hits.extend((np.flatnonzero(chunk == val) + start).tolist())
        return hits
