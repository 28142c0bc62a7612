"""Walk a p2m tree in a memory image and rebuild the pfn -> mfn table.

From the top page (``p2m_top_mfn``) the walker reads every distinct mid page
once and every distinct leaf page once.  Leaves referenced from a single slot
are read straight into the preallocated table (runs of consecutive MFNs in
one ``preadv``); pages referenced from many slots (the shared placeholders)
are read once and broadcast.  What looks wrong is recorded as a
:class:`~p2mdump.findings.Finding` and the walk goes on; only a top page that
cannot be used at all raises :class:`~p2mdump.errors.TreeError`.

How long the table is, when no one gave ``--max-pfn`` (or the number came
from the image itself: ``arch.max_pfn``, a sidecar), is bounded by what the
image can really populate, so that a crafted tree cannot size the table:

* only a leaf page of its own (named by one slot, in the image) can end the
  table: the copies of a shared leaf page past the last such slot do not
  extend it (a shared page that is not all-INVALID is a finding of its own;
  a top page that names itself is its own mid and leaf page, and would
  otherwise claim every pfn of the capacity from one frame);
* the table never has more leaf rows than the image holds frames
  (:meth:`~p2mdump.sources.base.FrameSource.frames_held`), or than
  :data:`TABLE_FLOOR` pfns for a small image: a longer claim is cut there and
  reported as a ``table-beyond-image`` finding.  A genuine tree needs a frame
  of its own for every populated leaf, so this cuts only claims and very
  sparse trees; ``--max-pfn`` given on the command line overrides it.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from . import findings as F
from . import wordsize
from .arrays import grouped, unique
from .errors import LayoutError, TreeError
from .layout import LEVEL_LEAF, LEVEL_MID, LEVEL_TOP, Layout, layout_for
from .sources.base import FrameSource
from .result import WalkResult, table_findings  # noqa: F401  (re-exported)
from .tablerows import FillPlan, hold_rows, stream_rows

Progress = Callable[[int, int], None]
#: what a streamed walk hands on, window by window: (entries, first pfn,
#: segment starts in the window, segment kind codes; see RunScanner.feed)
Stream = Callable[[np.ndarray, int, np.ndarray, np.ndarray], None]

#: pfns a table may always have, whatever the image's size (8 MiB of 8-byte
#: words): a small image with a sparse tree is walked whole, a crafted one
#: costs no more than this
TABLE_FLOOR = 1 << 20


class PageCache:
    """Frames by MFN, each read from the source at most once."""

    def __init__(self, source: FrameSource):
        self.source = source
        self.pages: dict[int, bytes | None] = {}
        self.reads = 0

    def get(self, mfn: int) -> bytes | None:
        try:
            return self.pages[mfn]
        except KeyError:
            pass
        data = self.source.read_frame(mfn) if self.source.has_frame(mfn) else None
        self.reads += data is not None
        self.pages[mfn] = data
        return data

    def words(self, mfn: int, layout: Layout) -> np.ndarray | None:
        data = self.get(mfn)
        if data is None:
            return None
        return np.frombuffer(data, dtype=layout.numpy_dtype)


# -- word size detection ------------------------------------------------------

def _pointer_score(cache: PageCache, top_mfn: int, layout: Layout) -> float:
    """Fraction of the pointer slots of the top page and its mid pages that
    name a frame in the image, reading the pages at ``layout``'s word size."""
    top = cache.words(top_mfn, layout)
    if top is None:
        return 0.0
    present = cache.source.frames_present
    good = total = 0
    mids, counts = unique(top, return_counts=True)
    for mfn, n in zip(mids.tolist(), counts.tolist()):
        total += n
        if mfn == 0:
            continue
        mid = cache.words(mfn, layout) if _in_image(cache.source, mfn) else None
        if mid is None:
            continue
        good += n * (1 + int(np.count_nonzero(present(mid) & (mid != 0))))
        total += len(mid) * n
    return good / total if total else 0.0


def _in_image(source: FrameSource, mfn: int) -> bool:
    """Whether the image holds frame ``mfn`` (without reading it)."""
    return source.has_frame(mfn)


def detect_word_size(cache: PageCache, top_mfn: int) -> tuple[int, dict]:
    """Guess 4 or 8 from how plausible the top and mid pages are as pointers.

    Read with the wrong width, a 64-bit tree shows a zero high half next to
    every pointer and a 32-bit tree shows pairs of MFNs glued into absurd
    64-bit values; the right width gives pointers that land in the image.
    Returns (word size, {4: score, 8: score}).
    """
    scores = {ws: _pointer_score(cache, top_mfn, layout_for(ws)) for ws in (8, 4)}
    return wordsize.choose(scores, top_mfn), scores


# -- the walk -----------------------------------------------------------------

def walk(source: FrameSource, top_mfn: int, *, word_size: int | str | None = "auto",
         max_pfn: int | None = None, progress: Progress | None = None,
         check_table: bool = True, raw_fd: int | None = None,
         max_pfn_claimed: bool = False, stream: Stream | None = None,
         scan_ahead: bool | None = None) -> WalkResult:
    """Walk the p2m tree whose top page is at ``top_mfn`` in ``source``.

    ``word_size`` is 4, 8 or "auto"; ``max_pfn`` the number of pfns to return
    (None: up to the last pfn whose entry is not missing).  With
    ``check_table=False`` the whole-table checks (duplicate machine frames)
    are left for :meth:`WalkResult.check_table`, so a caller can run them
    while it writes the table out.  ``raw_fd``: an empty regular file to build
    the table in as the ``--format raw`` output (:mod:`p2mdump.tablerows`).
    ``max_pfn_claimed``: ``max_pfn`` was read from the image (container,
    sidecar), not given by the user, so it is bounded like a derived one.
    ``stream``: the table is not kept but handed to ``stream`` in windows of
    :data:`~p2mdump.tablerows.STREAM_ROWS` leaf rows as they are read, in pfn order (with the
    window's runs, :meth:`~p2mdump.table.RunScanner.feed`); the result's
    table is then a :class:`~p2mdump.table.StreamedTable` -- counts, runs,
    duplicate frames, no entries -- and the walk needs memory for a window,
    not for the table.  Not together with ``raw_fd``.  ``scan_ahead``: the
    kept table will be scanned for its runs (counts, duplicates, a
    cross-check), so that is begun on another CPU while the leaves are read
    (:func:`~p2mdump.tablerows.hold_rows`); default: ``check_table``.
    """
    if stream is not None and raw_fd is not None:
        raise ValueError("a streamed walk writes no raw output")
    if top_mfn < 0:
        raise TreeError(f"top MFN must not be negative (got {top_mfn})")
    cache = PageCache(source)
    if not _in_image(source, top_mfn) or cache.get(top_mfn) is None:
        limit = source.frame_limit()
        where = f" (the image holds {limit:#x} frames)" if limit is not None else ""
        raise TreeError(f"top MFN {top_mfn:#x} is not in the image{where}")

    ws_source = "given"
    if word_size in (None, "auto"):
        ws, _ = detect_word_size(cache, top_mfn)
        ws_source = "detected"
    else:
        ws = int(word_size)
        layout_for(ws)
        wordsize.check_given(ws, lambda w: _pointer_score(cache, top_mfn, layout_for(w)),
                             top_mfn)
    layout = layout_for(ws)
    if max_pfn is not None:
        if max_pfn < 0:
            raise LayoutError(f"--max-pfn must not be negative (got {max_pfn})")
        if max_pfn > layout.capacity:
            raise LayoutError(
                f"--max-pfn {max_pfn:#x} is larger than a {ws}-byte-word tree can hold "
                f"({layout.capacity:#x} pfns)")
    result = _Walk(source, cache, layout, top_mfn, max_pfn, progress, ws_source, raw_fd,
                   max_pfn_claimed, stream,
                   check_table if scan_ahead is None else scan_ahead).run()
    if check_table:
        result.check_table()
    return result


class _Walk:
    def __init__(self, source, cache, layout, top_mfn, max_pfn, progress, ws_source,
                 raw_fd=None, max_pfn_claimed=False, stream=None, scan_ahead=False):
        self.source = source
        self.cache = cache
        self.L = layout
        self.top_mfn = top_mfn
        self.max_pfn = max_pfn
        self.progress = progress
        self.ws_source = ws_source
        self.findings: list[F.Finding] = []
        self.bulk_frames = 0
        self.raw_fd = raw_fd
        self.max_pfn_claimed = max_pfn_claimed
        self.stream = stream
        self.scan_ahead = scan_ahead

    # -- helpers -----------------------------------------------------------
    def add(self, *args, **kw):
        self.findings.append(F.Finding(*args, **kw))

    # -- levels --------------------------------------------------------------
    def read_mids(self):
        """Read the top page and every distinct mid page it names.

        The leaf slots are described by the mid pages rather than slot by
        slot: ``mid_rows`` holds the words of each usable distinct mid page
        (a last row of zeros stands for the top slots without one),
        ``slot_mid`` the row each top slot names, and ``row_slots`` /
        ``row_first`` / ``row_last`` how many top slots name each row, the
        first and the last.  A tree names few distinct mid pages (the rest of
        the top page names the mid placeholder), so the work over the tree's
        whole capacity stays in proportion to the pages it really has."""
        L = self.L
        fpp = L.per_page
        top = self.cache.words(self.top_mfn, L).astype(np.uint64)
        self.top = top
        self.mid_refs = {}
        rows: list[tuple[np.ndarray, np.ndarray]] = []   # (mid words, top slots)
        slot_mid = np.full(fpp, -1, dtype=np.intp)
        mids, inverse, counts = unique(top, return_inverse=True, return_counts=True)
        for u, mfn in enumerate(mids.tolist()):
            slots = np.flatnonzero(inverse == u)
            self.mid_refs[mfn] = slots
            t0 = int(slots[0])
            span = dict(level=LEVEL_MID, slot=t0, mfn=mfn, parent_mfn=self.top_mfn,
                        count=len(slots), pfn_first=L.first_pfn(t0),
                        pfn_last=L.first_pfn(int(slots[-1]) + 1) - 1)
            if mfn == 0:
                self.add(F.MFN_ZERO, F.WARNING,
                         f"{len(slots)} top slot(s) from {t0} hold MFN 0 instead of a mid page; "
                         "their pfns are treated as missing", **span)
                continue
            mid = self.cache.words(mfn, L) if _in_image(self.source, mfn) else None
            if mid is None:
                self.add(F.UNREADABLE, F.WARNING,
                         f"mid page MFN {mfn:#x} (top slot {t0}"
                         + (f" and {len(slots) - 1} more" if len(slots) > 1 else "")
                         + ") is not in the image; its pfns are treated as missing", **span)
                continue
            slot_mid[slots] = len(rows)
            rows.append((mid, slots))
        self.no_mid = len(rows)
        slot_mid[slot_mid < 0] = self.no_mid
        self.slot_mid = slot_mid
        self.mid_rows = np.zeros((len(rows) + 1, fpp), dtype=np.uint64)
        for r, (mid, _) in enumerate(rows):
            self.mid_rows[r] = mid
        self.row_slots = np.array([len(sl) for _, sl in rows], dtype=np.int64)
        self.row_first = np.array([int(sl[0]) for _, sl in rows], dtype=np.int64)
        self.row_last = np.array([int(sl[-1]) for _, sl in rows], dtype=np.int64)

    def _slots(self, a: int, b: int):
        """(leaf MFN, usable) of the leaf slots a..b-1 (numbered over the
        whole tree, slot s covering pfns s*per_page..)."""
        fpp = self.L.per_page
        ta, tb = a // fpp, -(-b // fpp)
        rows = self.slot_mid[ta:tb]
        off = a - ta * fpp
        n = max(b - a, 0)
        return (self.mid_rows[rows].reshape(-1)[off:off + n],
                np.repeat(rows != self.no_mid, fpp)[off:off + n])

    def _leaf_directory(self):
        """The distinct leaf MFNs named by usable slots (sorted) and, per
        MFN, how many slots name it, the first and the last."""
        fpp = self.L.per_page
        idx = np.arange(fpp, dtype=np.int64)
        self.leaves, self.leaf_counts, self.leaf_first, self.leaf_last = grouped(
            self.mid_rows[:self.no_mid], np.repeat(self.row_slots, fpp),
            self.row_first[:, None] * fpp + idx, self.row_last[:, None] * fpp + idx)

    def _slots_past(self, start: int):
        """(leaf MFN, slots naming it, first slot) over the usable slots from
        ``start`` to the tree's end that do not hold 0: the slots of the top
        slot ``start`` falls in one by one, the whole top slots after it one
        group per distinct mid page."""
        fpp = self.L.per_page
        t1 = -(-start // fpp)
        flat, usable = self._slots(start, t1 * fpp)
        here = np.flatnonzero(usable)
        rest = self.slot_mid[t1:]
        t = np.flatnonzero(rest != self.no_mid)
        rows, n, first, _ = grouped(rest[t], np.ones(len(t), np.int64), t + t1, t + t1)
        idx = np.arange(fpp, dtype=np.int64)
        mfns = np.concatenate([flat[here], self.mid_rows[rows].reshape(-1)])
        weights = np.concatenate([np.ones(len(here), np.int64), np.repeat(n, fpp)])
        slots = np.concatenate([here + start, (first[:, None] * fpp + idx).reshape(-1)])
        keep = mfns != 0
        return mfns[keep], weights[keep], slots[keep]

    def run(self) -> WalkResult:
        L = self.L
        self.read_mids()
        self._leaf_directory()
        leaves, counts = self.leaves, self.leaf_counts
        # read the shared leaves (placeholders) once
        self.shared = {}
        for u in np.flatnonzero(counts > 1).tolist():
            mfn = int(leaves[u])
            if mfn != 0:
                self.shared[mfn] = self._leaf_words(mfn)
        self._zero_leaf_findings()
        self.reported: set[int] = set()
        absent = np.flatnonzero(~self.source.frames_present(leaves) & (leaves != 0))
        for u in absent.tolist():
            self._unreadable_leaf(int(self.leaf_first[u]), int(leaves[u]), int(counts[u]),
                                  int(self.leaf_last[u]))
        self.prefetched: dict[int, np.ndarray | None] = {}
        if self.max_pfn is None:
            max_pfn = self._find_max_pfn()
            mp_source = "last-non-missing"
        else:
            max_pfn = self.max_pfn
            mp_source = "given"
        if self.max_pfn is None or self.max_pfn_claimed:
            max_pfn = self._within_budget(max_pfn)
        n_leaves = L.leaves_for(max_pfn)
        plan = self._plan(n_leaves)
        raw_written = False
        if self.stream is not None:
            table, past, read = stream_rows(plan, n_leaves, L, max_pfn, self.source,
                                            self._unreadable_leaf, self.progress, self.stream)
            self.bulk_frames += read
        else:
            table, past, read, raw_written = hold_rows(
                plan, n_leaves, L, max_pfn, self.source, self._unreadable_leaf, self.progress,
                self.raw_fd, self.scan_ahead)
            self.bulk_frames += read
        if mp_source == "given":
            self._check_past(past, max_pfn, n_leaves)
        self._shared_findings()
        if max_pfn == 0 and mp_source != "given":
            self.add(F.EMPTY_TREE, F.WARNING, "no pfn in the tree maps to anything",
                     level=LEVEL_TOP, mfn=self.top_mfn)
        result = WalkResult(
            table=table, layout=L, top_mfn=self.top_mfn, findings=self.findings,
            max_pfn_source=mp_source, word_size_source=self.ws_source,
            pages_read=self.cache.reads + self.bulk_frames,
            mid_placeholder=self.mid_placeholder, leaf_placeholders=self.leaf_placeholders,
            source=self.source.describe(), raw_written=raw_written)
        return result

    def _leaf_words(self, mfn):
        if mfn == 0 or not _in_image(self.source, mfn):
            return None
        return self.cache.words(mfn, self.L)

    def _leaf_refs(self, mfn: int) -> tuple[int, int, int]:
        """(first slot, number of slots, last slot) naming leaf ``mfn``."""
        u = int(np.searchsorted(self.leaves, mfn))
        return int(self.leaf_first[u]), int(self.leaf_counts[u]), int(self.leaf_last[u])

    def _zero_leaf_findings(self):
        if len(self.leaves) and self.leaves[0] == 0:
            s0, count, last = self._leaf_refs(0)
            fpp = self.L.per_page
            self.add(F.MFN_ZERO, F.WARNING,
                     f"{count} mid slot(s) hold MFN 0 instead of a leaf page "
                     f"(first: pfn {s0 * fpp:#x}); their pfns are treated as missing",
                     level=LEVEL_LEAF, slot=s0 % fpp, mfn=0,
                     parent_mfn=int(self._top_mid(s0 // fpp)), count=count,
                     pfn_first=s0 * fpp, pfn_last=(last + 1) * fpp - 1)

    def _top_mid(self, t):
        """MFN of the mid page named by top slot ``t``."""
        return int(self.top[t])

    def _unreadable_leaf(self, slot: int, mfn: int, count: int = 1, last: int | None = None):
        """Report leaf ``mfn`` (named by ``count`` slots from ``slot`` to
        ``last``) as not in the image, once per MFN."""
        if mfn in self.reported:
            return
        self.reported.add(mfn)
        fpp = self.L.per_page
        last = slot if last is None else last
        named = (f"named by {count} mid slots, pfns {slot * fpp:#x}-{(last + 1) * fpp - 1:#x}"
                 if count > 1 else f"pfns {slot * fpp:#x}-{(slot + 1) * fpp - 1:#x}")
        self.add(F.UNREADABLE, F.WARNING,
                 f"leaf page MFN {mfn:#x} ({named}) is not in the image; its pfns are "
                 "treated as missing",
                 level=LEVEL_LEAF, slot=slot % fpp, mfn=mfn,
                 parent_mfn=self._top_mid(slot // fpp), count=count,
                 pfn_first=slot * fpp, pfn_last=(last + 1) * fpp - 1)

    def _is_all_invalid(self, words) -> bool:
        return words is not None and bool(np.all(words == words.dtype.type(self.L.invalid)))

    def _within_budget(self, max_pfn: int) -> int:
        """``max_pfn`` cut to the leaf rows the image's frames can back (see
        the module docstring), with a finding naming the claim."""
        held = self.source.frames_held()
        if held is None:
            return max_pfn
        budget = min(max(held * self.L.per_page, TABLE_FLOOR), self.L.capacity)
        if max_pfn <= budget:
            return max_pfn
        what = "max_pfn read from the image" if self.max_pfn_claimed else "the tree"
        self.add(F.TABLE_BUDGET, F.WARNING,
                 f"{what} claims {max_pfn:#x} pfns, but the image holds only {held} frames, "
                 f"enough leaf pages for {budget:#x} pfns; the table stops there "
                 "(give --max-pfn to walk further)",
                 level=LEVEL_TOP, mfn=self.top_mfn, count=max_pfn - budget,
                 pfn_first=budget, pfn_last=max_pfn - 1)
        return budget

    def _find_max_pfn(self) -> int:
        """Number of pfns up to the last one whose entry is not missing, no
        further than the last slot whose leaf is a page of its own."""
        L = self.L
        # leaf pages of their own: named by one slot, not 0, in the image
        own = np.flatnonzero((self.leaf_counts == 1) & (self.leaves != 0))
        own = own[self.source.frames_present(self.leaves[own])]
        if not len(own):
            return 0
        flat, usable = self._slots(0, int(self.leaf_last[own].max()) + 1)
        dead = [mfn for mfn, words in self.shared.items()
                if words is None or self._is_all_invalid(words)]
        skip = ~usable | (flat == 0) | np.isin(flat, np.array(dead, dtype=np.uint64))
        invalid = L.invalid
        for slot in np.flatnonzero(~skip)[::-1].tolist():
            mfn = int(flat[slot])
            words = self.shared[mfn] if mfn in self.shared else self._read_leaf(mfn, keep=True)
            if words is None:
                continue
            nz = np.flatnonzero(words != words.dtype.type(invalid))
            if len(nz):
                return slot * L.per_page + int(nz[-1]) + 1
        return 0

    def _read_leaf(self, mfn: int, row: int | None = None, keep: bool = False):
        """One leaf page as words, None when it is not in the image (reported
        when ``row`` names the slot).  ``keep``: remember it for the fill, so
        it is not read a second time."""
        if mfn in self.prefetched:
            return self.prefetched[mfn]
        data = self.source.read_frame(mfn) if _in_image(self.source, mfn) else None
        self.bulk_frames += data is not None
        words = None if data is None else np.frombuffer(data, dtype=self.L.numpy_dtype)
        if words is None and row is not None:
            self._unreadable_leaf(row, mfn)
        if keep:
            self.prefetched[mfn] = words
        return words

    def _plan(self, n_leaves: int) -> FillPlan:
        """What fills each of leaf rows 0..n_leaves-1; the shared and
        prefetched pages that cannot be read are reported here, first."""
        flat, usable = self._slots(0, n_leaves)
        bad = ~usable | (flat == 0)
        done = bad.copy()
        pages = []
        for mfn, words in self.shared.items():
            rows = np.flatnonzero((flat == mfn) & usable)
            if not len(rows):
                continue
            done[rows] = True
            if words is None:
                self._unreadable_shared(mfn)
            pages.append((rows, words))
        # pages already read while looking for max_pfn: copied, not read again
        if self.prefetched:
            keys = np.fromiter(self.prefetched, dtype=np.uint64, count=len(self.prefetched))
            for row in np.flatnonzero(np.isin(flat, keys) & ~done).tolist():
                done[row] = True
                mfn = int(flat[row])
                words = self.prefetched[mfn]
                if words is None:
                    self._unreadable_leaf(row, mfn)
                pages.append((np.array([row]), words))
        return FillPlan(flat, np.flatnonzero(bad), pages, np.flatnonzero(~done))

    def _unreadable_shared(self, mfn):
        first, count, last = self._leaf_refs(mfn)
        self._unreadable_leaf(first, mfn, count, last)

    def _check_past(self, tail: np.ndarray, max_pfn: int, n_leaves: int):
        """Non-missing entries at or past max_pfn (``tail``: the words of the
        last leaf row past it), up to the tree's capacity."""
        L = self.L
        fpp = L.per_page
        inv = np.dtype(L.numpy_dtype).type(L.invalid)
        count = 0
        first = None
        nz = np.flatnonzero(tail != inv)
        if len(nz):
            count += len(nz)
            first = max_pfn + int(nz[0])
        mfns, named, rows = self._slots_past(n_leaves)
        is_shared = np.isin(mfns, np.fromiter(self.shared, dtype=np.uint64, count=len(self.shared)))
        # shared pages: count once, multiply by the slots naming them
        for mfn, words in self.shared.items():
            if words is None:
                continue
            nz = np.flatnonzero(words != inv)
            if not len(nz):
                continue
            where = mfns == mfn
            if where.any():
                count += len(nz) * int(named[where].sum())
                cand = int(rows[where].min()) * fpp + int(nz[0])
                first = cand if first is None else min(first, cand)
        # a page of its own is named by one slot: read it
        own = np.flatnonzero(~is_shared)
        own = own[np.argsort(rows[own], kind="stable")]
        for row, mfn in zip(rows[own].tolist(), mfns[own].tolist()):
            words = self._read_leaf(mfn, row)
            if words is None:
                continue
            nz = np.flatnonzero(words != inv)
            if len(nz):
                count += len(nz)
                cand = row * fpp + int(nz[0])
                first = cand if first is None else min(first, cand)
        if count:
            self.add(F.PAST_MAX_PFN, F.WARNING,
                     f"{count} entries at or past max_pfn {max_pfn:#x} are not missing "
                     f"(first: pfn {first:#x}); they are not in the table",
                     level=LEVEL_LEAF, count=count, pfn_first=first)

    def _shared_findings(self):
        """Shared pages, what they hold, and pages used at two levels."""
        L = self.L
        fpp = L.per_page
        self.mid_placeholder = None
        self.leaf_placeholders = []
        placeholder_leaves = set()
        for mfn, words in sorted(self.shared.items()):
            s0, count, last = self._leaf_refs(mfn)
            common = dict(level=LEVEL_LEAF, slot=s0 % fpp, mfn=mfn,
                          parent_mfn=self._top_mid(s0 // fpp), count=count,
                          pfn_first=s0 * fpp, pfn_last=(last + 1) * fpp - 1)
            if words is None:
                continue
            if self._is_all_invalid(words):
                placeholder_leaves.add(mfn)
                self.leaf_placeholders.append(mfn)
                self.add(F.SHARED_PAGE, F.INFO,
                         f"leaf placeholder MFN {mfn:#x} (all INVALID) is named by "
                         f"{count} mid slots", **common)
            else:
                valid = int(np.count_nonzero(words != words.dtype.type(L.invalid)))
                self.add(F.SHARED_PAGE, F.WARNING,
                         f"leaf page MFN {mfn:#x} is named by {count} mid slots but holds "
                         f"{valid} non-missing entries: the same mappings appear at "
                         f"{count} places", **common)
        best = 0
        for mfn, slots in sorted(self.mid_refs.items()):
            if len(slots) < 2 or mfn == 0:
                continue
            words = self.cache.pages.get(mfn)
            t0 = int(slots[0])
            common = dict(level=LEVEL_MID, slot=t0, mfn=mfn, parent_mfn=self.top_mfn,
                          count=len(slots), pfn_first=L.first_pfn(t0),
                          pfn_last=L.first_pfn(int(slots[-1]) + 1) - 1)
            if words is None:
                continue
            w = np.frombuffer(words, dtype=L.numpy_dtype)
            target = int(w[0])
            if np.all(w == w[0]) and target in placeholder_leaves:
                self.add(F.SHARED_PAGE, F.INFO,
                         f"mid placeholder MFN {mfn:#x} (every slot -> leaf placeholder "
                         f"{target:#x}) is named by {len(slots)} top slots", **common)
                if len(slots) > best:
                    best = len(slots)
                    self.mid_placeholder = mfn
            else:
                self.add(F.SHARED_PAGE, F.WARNING,
                         f"mid page MFN {mfn:#x} is named by {len(slots)} top slots but is not "
                         "a placeholder (its slots do not all name one all-INVALID leaf)",
                         **common)
        # pages used at two levels: the few top/mid MFNs looked up in the
        # sorted distinct leaf MFNs
        mids = np.array(sorted(m for m in self.mid_refs if m != 0), dtype=np.uint64)
        leaves = self.leaves[self.leaves != 0]

        def in_sorted(values, sorted_arr):
            pos = np.searchsorted(sorted_arr, values)
            pos = np.minimum(pos, max(len(sorted_arr) - 1, 0))
            return (sorted_arr[pos] == values) if len(sorted_arr) else np.zeros(len(values), bool)

        top = np.array([self.top_mfn], dtype=np.uint64)
        both = set(mids[in_sorted(mids, leaves)].tolist())
        both |= set(top[in_sorted(top, leaves) | in_sorted(top, mids)].tolist())
        for mfn in sorted(both):
            order = [name for name, group in ((LEVEL_TOP, top), (LEVEL_MID, mids),
                                             (LEVEL_LEAF, leaves))
                     if bool(in_sorted(np.array([mfn], dtype=np.uint64), group)[0])]
            self.add(F.CROSS_LEVEL, F.WARNING,
                     f"page MFN {mfn:#x} is used as a {' and a '.join(order)} page",
                     level=order[-1], mfn=mfn)
