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
#: entries of a piece of the run scan of a held table (:meth:`P2MTable._scan`,
#: :class:`ScanAhead`): small enough that the last piece, cut once the table
#: is filled, takes a few milliseconds
SCAN_CHUNK = 1 << 20
#: block of the run scan: small enough to stay in a CPU's cache, large enough
#: that the threads of :meth:`P2MTable._scan` do not queue for the
#: interpreter lock between its numpy operations
BLOCK = 1 << 17

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


class RunScanner:
    """The runs of a table fed to it in consecutive pieces (:meth:`feed`),
    so that a table too large to hold -- or never held, as in a streamed
    walk -- can be summarised as it goes by.

    A run continues while the raw entry steps by one or two INVALIDs follow
    each other; each piece is processed in cache-sized blocks with a handful
    of vector operations each.  Stepping by one can cross a kind boundary
    (INVALID -> 0 by wrap-around, a carry into a flag bit, INVALID-1 ->
    INVALID); such runs are rare and split where the kind changes.  Identity
    entries may carry the FOREIGN bit too, so identity runs whose decoded
    mfns step by one are joined at the end (:meth:`finish`).  Fed in one
    piece or in many, the runs are the same.
    """

    def __init__(self, layout: Layout):
        self.layout = layout
        #: entries fed so far
        self.n = 0
        self._starts: list[np.ndarray] = []
        self._firsts: list[np.ndarray] = []   # the entry at each start
        self._befores: list[np.ndarray] = []  # the entry before each start (the first's: any)
        self._last: int | None = None         # the last entry fed
        self._scratch = SegmentScratch()

    def feed(self, words: np.ndarray, cut: Cut | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Take the entries of pfns ``n``.. ; returns the piece's segments:
        (first index in the piece, kind code) of each stretch of one run
        within it -- the first may continue a run of the previous piece.
        ``cut``: :func:`cut_piece` of ``words``, when worked out already
        (``words`` is then not read)."""
        if cut is None:
            if not len(words):
                return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.uint8)
            cut = cut_piece(words, self.layout, self._scratch)
        lay = self.layout
        seg = cut.seg
        codes = classify(cut.firsts, lay)
        prev = self._last
        w0 = int(cut.firsts[0])
        # the piece's first entry continues the last run when it would have
        # within one piece: it steps by one (or stays INVALID), same kind
        joined = prev is not None and (
            w0 == (prev + 1) & lay.word_mask or w0 == prev == lay.invalid) and (
            lay.kind_of(prev) == lay.kind_of(w0))
        if joined:
            starts, firsts, before = seg[1:], cut.firsts[1:], cut.befores[1:]
        else:
            starts, firsts, before = seg, cut.firsts, cut.befores.copy()
            if prev is not None:
                before[0] = prev
        if len(starts):
            self._starts.append(starts + self.n)
            self._firsts.append(firsts)
            self._befores.append(before)
        self._last = cut.last
        self.n += cut.n
        return seg, codes

    def finish(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(counts per kind, first pfn of every run, its raw entry); once,
        after the last piece (the scanner lets go of what it gathered)."""
        dt = np.dtype(self.layout.numpy_dtype)
        if not self.n:
            return np.zeros(4, dtype=np.int64), np.zeros(0, dtype=np.int64), np.zeros(0, dt)
        starts = np.concatenate(self._starts)
        firsts = np.concatenate(self._firsts).astype(dt, copy=False)
        # the last entry of every run: the one before the next run's start
        lasts = np.append(np.concatenate(self._befores)[1:].astype(dt, copy=False),
                          dt.type(self._last))
        self._starts, self._firsts, self._befores = [], [], []
        n = self.n
        lay = self.layout
        ends = np.append(starts[1:], n)
        codes = classify(firsts, lay)
        # identity entries may carry the FOREIGN bit too: runs follow the
        # decoded mfn, so join identity runs whose decoded mfns step by one
        ident = codes == IDENTITY
        if np.count_nonzero(ident) > 1:
            first = decode(firsts, lay)
            last = decode(lasts, lay)
            join = ident[1:] & ident[:-1] & (last[:-1] + dt.type(1) == first[1:])
            if join.any():
                keep = np.ones(len(starts), dtype=bool)
                keep[1:] = ~join
                starts, codes, firsts = starts[keep], codes[keep], firsts[keep]
                ends = np.append(starts[1:], n)
        counts = np.bincount(codes, weights=(ends - starts), minlength=4)
        return counts.astype(np.int64), starts, firsts


class SegmentScratch:
    """Scratch buffers of :func:`cut_piece` for one thread: its temporaries
    are written into them, so that no block allocates memory (fresh pages
    cost a fault each, several microseconds on a virtual machine)."""

    def __init__(self):
        self._steps: dict = {}
        #: three rows of booleans for a block (and the entry before it)
        self.flags = np.empty((3, BLOCK + 1), dtype=bool)

    def step(self, dtype) -> np.ndarray:
        buf = self._steps.get(dtype)
        if buf is None:
            buf = self._steps[dtype] = np.empty(BLOCK, dtype=dtype)
        return buf


class Cut:
    """A piece of a table cut into the stretches of its runs
    (:func:`cut_piece`): what :meth:`RunScanner.feed` needs of the piece, so
    that a piece cut ahead, in another thread, is not read again."""

    __slots__ = ("seg", "firsts", "befores", "last", "n")

    def __init__(self, seg: np.ndarray, firsts: np.ndarray, befores: np.ndarray, last: int,
                 n: int):
        #: first index of every stretch (ascending, 0 first)
        self.seg = seg
        #: the entry at each, and the one before each (the first's: itself)
        self.firsts = firsts
        self.befores = befores
        #: the piece's last entry and its length
        self.last = last
        self.n = n


def cut_piece(words: np.ndarray, layout: Layout, scratch: SegmentScratch | None = None) -> Cut:
    """``words`` (not empty) cut into the stretches over which the entry
    steps by one, or stays INVALID, within one kind: the runs of
    :class:`RunScanner`, before they are joined to the pieces fed before.
    Worked out in cache-sized blocks with a handful of vector operations
    each, in ``scratch`` (the calling thread's own; a new one when None);
    depends on ``words`` alone, so the pieces of one table can be cut in
    several threads (:meth:`P2MTable._scan`, :class:`ScanAhead`)."""
    n = len(words)
    sc = scratch or SegmentScratch()
    inv = words.dtype.type(layout.invalid)
    one = words.dtype.type(1)
    step = sc.step(words.dtype)
    parts = [np.zeros(1, dtype=np.int64)]
    for a in range(0, n, BLOCK):
        e = min(a + BLOCK, n)
        window = words[max(a - 1, 0):e]
        k = len(window) - 1
        invb = np.equal(window, inv, out=sc.flags[0, :k + 1])
        nxt = np.add(window[:-1], one, out=step[:k])
        brk = np.not_equal(window[1:], nxt, out=sc.flags[1, :k])
        both = np.logical_and(invb[1:], invb[:-1], out=sc.flags[2, :k])
        np.greater(brk, both, out=brk)             # no step, and not two INVALIDs
        at = np.flatnonzero(brk)
        if len(at):
            parts.append(at + max(a, 1))
    seg = _split_mixed(words, np.concatenate(parts), layout)
    return Cut(seg, words[seg], words[np.maximum(seg - 1, 0)], int(words[-1]), n)


class ScanAhead:
    """The :func:`cut_piece` of a table's chunks (:data:`SCAN_CHUNK` entries, the
    pieces of :meth:`P2MTable._scan`) worked out by a thread while the table
    is still being filled, on a CPU the fill leaves idle (the kernel's copy
    of the leaves into a raw output, a read into memory).

    ``words`` holds the table's first ``n`` entries once they are final;
    :meth:`settled` says how many are final so far (entries become final in
    pfn order); :meth:`take` stops the thread and gives the chunks done, to
    be passed to :class:`P2MTable` (``cuts=``), which works out the
    others itself.  The thread reads only final entries."""

    def __init__(self, words: np.ndarray, layout: Layout, n: int):
        import queue
        import threading

        self.words = words[:n]
        self.layout = layout
        self.n = n
        self.done: dict[int, Cut] = {}
        self._sent = 0                        # chunks handed to the thread
        self._todo: queue.SimpleQueue = queue.SimpleQueue()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="p2mdump-scan-ahead",
                                        daemon=True)
        self._thread.start()

    def settled(self, entries: int) -> None:
        """Entries 0..``entries``-1 are final: their whole chunks can be cut."""
        entries = min(entries, self.n)
        step = SCAN_CHUNK
        while self._sent * step < self.n and min((self._sent + 1) * step, self.n) <= entries:
            self._todo.put(self._sent)
            self._sent += 1

    def _run(self) -> None:
        scratch = SegmentScratch()
        while True:
            k = self._todo.get()
            if k is None or self._stop.is_set():
                return
            piece = self.words[k * SCAN_CHUNK:(k + 1) * SCAN_CHUNK]
            self.done[k] = cut_piece(piece, self.layout, scratch)

    def take(self) -> dict[int, Cut]:
        """Stop (after the chunk being cut, if any) and give {chunk: its
        Cut} of the chunks done; the others are left to the table."""
        self._stop.set()
        self._todo.put(None)
        self._thread.join()
        return self.done


def _split_mixed(words: np.ndarray, starts: np.ndarray, lay: Layout) -> np.ndarray:
    """``starts`` (ascending, from 0) with every stretch of ``words`` whose
    first and last entries differ in kind split where the kind changes."""
    n = len(words)
    while True:
        ends = np.append(starts[1:], n)
        mixed = np.flatnonzero(classify(words[starts], lay) != classify(words[ends - 1], lay))
        if not len(mixed):
            return starts
        extra = []
        for i in mixed.tolist():
            s, e = int(starts[i]), int(ends[i])
            codes = classify(words[s:e], lay)
            extra.append(s + int(np.flatnonzero(codes != codes[0])[0]))
        starts = np.sort(np.concatenate([starts, np.array(extra, dtype=np.int64)]))


class RunTable:
    """What follows from a table's runs alone -- counts per kind, the runs,
    duplicate machine frames -- whether the entries are held
    (:class:`P2MTable`) or were only seen going by (:class:`StreamedTable`)."""

    layout: Layout
    _summary: tuple[dict[str, int], np.ndarray, np.ndarray] | None

    def __len__(self) -> int:
        raise NotImplementedError

    @property
    def max_pfn(self) -> int:
        return len(self)

    def _scan(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(counts per kind, first pfn of every run, its raw entry)."""
        raise NotImplementedError

    def summary(self) -> tuple[dict[str, int], np.ndarray]:
        """(counts by kind name, run start pfns); computed once."""
        if self._summary is None:
            counts, run_starts, firsts = self._scan()
            self._summary = ({k: int(counts[i]) for i, k in enumerate(KINDS)}, run_starts,
                             firsts)
        return self._summary[0], self._summary[1]

    def counts(self) -> dict:
        return dict(self.summary()[0])

    def run_arrays(self):
        """(starts, ends, codes, first raw entry) of every run, as arrays."""
        self.summary()
        assert self._summary is not None
        run_starts = self._summary[1].astype(np.int64)
        first = self._summary[2]
        ends = np.empty_like(run_starts)
        ends[:-1] = run_starts[1:]
        if len(ends):
            ends[-1] = len(self)
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


class StreamedTable(RunTable):
    """The runs of a table whose entries went by once (a streamed walk, see
    :func:`p2mdump.walker.walk`) and were not kept: no single entry can be
    looked up, but everything :class:`RunTable` offers is there."""

    def __init__(self, scanner: RunScanner):
        self.layout = scanner.layout
        self._n = scanner.n
        counts, starts, firsts = scanner.finish()
        self._summary = ({k: int(counts[i]) for i, k in enumerate(KINDS)}, starts, firsts)

    def __len__(self) -> int:
        return self._n


class P2MTable(RunTable):
    """Raw p2m entries for pfns 0..len-1 of a guest with ``layout``."""

    def __init__(self, raw: np.ndarray, layout: Layout, cuts: dict[int, Cut] | None = None):
        """``cuts``: the :func:`cut_piece` of some of the table's chunks
        (:data:`SCAN_CHUNK` entries each), worked out already (:class:`ScanAhead`)."""
        if raw.dtype != np.dtype(layout.numpy_dtype):
            raw = raw.astype(layout.numpy_dtype)
        self.raw = raw
        self.layout = layout
        self._summary = None
        self._cuts = cuts or {}

    def __len__(self) -> int:
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
        """Counts per kind and the runs, in one pass (:class:`RunScanner`) of
        which the per-entry part (:func:`cut_piece`) runs on the usable CPUs,
        :data:`SCAN_CHUNK` entries at a time (the chunks given to the constructor
        are not cut again)."""
        from .workers import map_chunks

        raw, lay = self.raw, self.layout
        known, self._cuts = self._cuts, {}
        step = SCAN_CHUNK
        todo = [k for k in range(-(-len(raw) // step)) if k not in known]
        cut = map_chunks(lambda i, sc: cut_piece(raw[todo[i] * step:(todo[i] + 1) * step],
                                                 lay, sc), len(todo), SegmentScratch)
        known.update(zip(todo, cut))
        scanner = RunScanner(lay)
        for k in range(-(-len(raw) // step)):
            scanner.feed(raw[k * step:(k + 1) * step], known[k])
        return scanner.finish()

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
