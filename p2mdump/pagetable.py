"""Walk a Xen PV guest's x86 page tables over machine memory.

A Linux PV guest that keeps its p2m as a *linear* list (3.19 and later) maps
that list into its kernel address space; shared_info tells where
(``arch.p2m_vaddr``) and through which top-level table (``arch.p2m_cr3``).
In a PV guest every page-table entry holds a *machine* frame number, so the
walk runs straight on a :class:`~p2mdump.sources.base.FrameSource`.

Two ways in:

* :meth:`PageTableWalker.translate`: one virtual address, entry by entry,
  with the path it took (for ``lookup``-style questions and for tests);
* :meth:`PageTableWalker.map_range`: a range of 4 KiB pages in bulk.  Each
  table page is read once and the part of it the range covers is decoded
  with numpy in one go; Python only loops over the entries that name further
  tables or large pages, never over the 4 KiB pages themselves.  This is how
  Xen's own save code reads the list (``map_p2m_list``): level by level, all
  the table pages that cover the range.

What looks wrong is a :class:`~p2mdump.findings.Finding` and the walk goes
on; the pages under a bad entry are reported unmapped.  Page-table findings
name the *entry*: ``level`` is the level of the entry (``"pt-l2"``: a PMD
entry), ``slot`` its index, ``parent_mfn`` the table holding it, ``mfn`` the
frame it names.  The walk is bounded by the fixed number of levels, so a
table that names itself (a self-map) is reported but cannot hang it.
"""
from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from . import findings as F
from .errors import LayoutError
from .layout import PAGE_SHIFT, PAGE_SIZE
from .paging import (PTE_FRAME_MASK, PTE_NX, PTE_PRESENT, PTE_PSE, PagingMode, level_name,
                     level_pages)
from .ptlookup import PathTranslator, Translation, check_vaddr, root_for_cr3
from .sources.base import FrameSource

Progress = Callable[[int, int], None]

#: numpy type of one page-table entry (always a little-endian 64-bit word)
PTE_DTYPE = np.dtype("<u8")

_PRESENT = np.uint64(PTE_PRESENT)
_PSE = np.uint64(PTE_PSE)
_NX = np.uint64(PTE_NX)
_FRAME_MASK = np.uint64(PTE_FRAME_MASK)
_PAGE_SHIFT = np.uint64(PAGE_SHIFT)


# -- the numpy fast path (a test checks it against schemas.pagetable) ----------------

def pte_present(words: np.ndarray) -> np.ndarray:
    """Present bit of each entry."""
    return (words & _PRESENT) != 0


def pte_pse(words: np.ndarray) -> np.ndarray:
    """PSE (large page) bit of each entry."""
    return (words & _PSE) != 0


def pte_nx(words: np.ndarray) -> np.ndarray:
    """NX bit of each entry."""
    return (words & _NX) != 0


def pte_frames(words: np.ndarray) -> np.ndarray:
    """Frame number (bits 12-51) each entry names."""
    return (words & _FRAME_MASK) >> _PAGE_SHIFT


# -- results (a Translation of one address: p2mdump.ptlookup) ------------------------

@dataclass
class RangeMap:
    """What a range of 4 KiB virtual pages maps to."""

    vaddr: int
    npages: int
    #: uint64 (npages,): machine frame of each page, 0 where unmapped
    mfns: np.ndarray
    #: bool (npages,): True where a present chain maps the page
    mapped: np.ndarray
    #: uint64 (npages,): MFN of the level-1 table whose entry maps the page;
    #: 0 for pages in large mappings or unmapped
    l1_tables: np.ndarray
    #: level -> sorted uint64 array of the distinct table MFNs read at that level
    tables: dict
    #: level -> {table MFN: number of parent entries naming it} (the root is
    #: named by cr3, not by an entry)
    table_refs: dict
    #: number of 2 MiB / 1 GiB mappings used
    large_pages: int
    findings: list = field(default_factory=list)


# -- the walker ---------------------------------------------------------------------

class PageTableWalker:
    """The page tables under one top-level table, read from ``source``.

    Table pages are read at most once (cached by MFN); ``pages_read`` counts
    the distinct table frames read."""

    def __init__(self, source: FrameSource, root_mfn: int, mode: PagingMode):
        self.source = source
        self.root_mfn = root_mfn
        self.mode = mode
        #: the page cache and single-address walk this walker shares
        self._path = PathTranslator(source, root_mfn, mode)

    @property
    def pages_read(self) -> int:
        return self._path.pages_read

    def entries(self, mfn: int) -> np.ndarray | None:
        """Table page ``mfn`` as 512 ``<u8`` words, None when it is not in the image."""
        data = self._path.page(mfn)
        return None if data is None else np.frombuffer(data, dtype=PTE_DTYPE)

    # -- addresses -------------------------------------------------------------
    def _linear_page(self, vaddr: int) -> int:
        """Page number of ``vaddr`` with the sign-extension bits dropped, so
        that the address space is one run of pages from 0."""
        return (vaddr & ((1 << self.mode.va_bits) - 1)) >> PAGE_SHIFT

    def _vaddr(self, linear_page: int) -> int:
        """The canonical virtual address of a linear page number."""
        va = linear_page << PAGE_SHIFT
        bits = self.mode.va_bits
        if self.mode.word_size == 8 and va >> (bits - 1):
            va |= (1 << 64) - (1 << bits)
        return va

    # -- one address -----------------------------------------------------------
    def translate(self, vaddr: int) -> Translation:
        """Follow ``vaddr`` from the top table down, entry by entry
        (:meth:`p2mdump.ptlookup.PathTranslator.translate`, on this walker's cache)."""
        return self._path.translate(vaddr)

    # -- a range ---------------------------------------------------------------
    def _check_range(self, vaddr, npages) -> tuple[int, int, int]:
        """Validate a range: (vaddr, npages, linear page number of the start)."""
        mode = self.mode
        try:
            count = operator.index(npages)
        except TypeError:
            count = -1
        if count < 0:
            raise LayoutError(f"number of pages must be a non-negative integer (got {npages!r})")
        npages = count
        space = 1 << (mode.va_bits - PAGE_SHIFT)
        if npages > space:
            raise LayoutError(f"a range of {npages:#x} pages is longer than the "
                              f"{mode.va_bits}-bit address space of {mode.name} "
                              f"({space:#x} pages)")
        vaddr = check_vaddr(mode, vaddr, "range start")
        if vaddr % PAGE_SIZE:
            raise LayoutError(f"range start {vaddr:#x} is not page-aligned")
        start = self._linear_page(vaddr)
        if npages:
            last = vaddr + (npages - 1) * PAGE_SIZE
            if last >= mode.va_limit:
                raise LayoutError(f"range {vaddr:#x} + {npages:#x} pages wraps past the end "
                                  "of the address space")
            if not mode.canonical(last) or self._linear_page(last) != start + npages - 1:
                raise LayoutError(f"range {vaddr:#x} + {npages:#x} pages runs into "
                                  f"non-canonical addresses (last page {last:#x})")
        return vaddr, npages, start

    def map_range(self, vaddr: int, npages: int, progress: Progress | None = None) -> RangeMap:
        """Map ``npages`` 4 KiB pages from ``vaddr`` (page-aligned, canonical)
        to machine frames.  ``progress(done, total)`` is called in pages."""
        vaddr, npages, start = self._check_range(vaddr, npages)
        try:
            mfns = np.zeros(npages, dtype=np.uint64)
            mapped = np.zeros(npages, dtype=bool)
            l1_tables = np.zeros(npages, dtype=np.uint64)
        except MemoryError:
            raise LayoutError(f"a range of {npages:#x} pages is too large to map in memory") \
                from None
        walk = _RangeWalk(self, start, npages, mfns, mapped, l1_tables, progress)
        walk.run()
        levels = range(1, self.mode.levels + 1)
        return RangeMap(
            vaddr=vaddr, npages=npages, mfns=mfns, mapped=mapped, l1_tables=l1_tables,
            tables={lv: np.array(sorted(walk.tables[lv]), dtype=np.uint64) for lv in levels},
            table_refs={lv: dict(sorted(walk.refs[lv].items())) for lv in levels},
            large_pages=walk.large_pages, findings=walk.findings)


class _RangeWalk:
    """One :meth:`PageTableWalker.map_range`: table by table, in address order."""

    def __init__(self, walker: PageTableWalker, start: int, npages: int,
                 mfns: np.ndarray, mapped: np.ndarray, l1_tables: np.ndarray,
                 progress: Progress | None):
        self.w = walker
        self.mode = walker.mode
        self.start = start
        self.end = start + npages
        self.mfns, self.mapped, self.l1_tables = mfns, mapped, l1_tables
        self.progress = progress
        self.step = max(1, npages // 100)
        self.next_report = self.step
        self.findings: list[F.Finding] = []
        levels = range(1, self.mode.levels + 1)
        #: level -> table MFNs read at that level
        self.tables: dict[int, set] = {lv: set() for lv in levels}
        #: level -> {table MFN: parent entries naming it}
        self.refs: dict[int, dict] = {lv: {} for lv in levels}
        #: (level, table MFN) -> [parent MFN, slot, first linear page, end linear page]
        self.first_ref: dict[tuple, list] = {}
        self.large_pages = 0

    def run(self) -> None:
        top = self.mode.levels
        if self.end > self.start:
            root = self.w.root_mfn
            self.tables[top].add(root)
            words = self.w.entries(root)
            assert words is not None    # PathTranslator checked the root is in the image
            self._table(top, root, words, 0, self.start, self.end)
        self._shared_findings()
        self._loop_findings()
        if self.progress is not None:
            self.progress(self.end - self.start, self.end - self.start)

    # -- reporting ---------------------------------------------------------------
    def _reached(self, page: int) -> None:
        done = page - self.start
        if self.progress is not None and done >= self.next_report:
            self.progress(done, self.end - self.start)
            self.next_report = done + self.step

    def _va_range(self, first: int, end: int) -> dict:
        """vaddr_first / vaddr_last of linear pages [first, end)."""
        return dict(vaddr_first=self.w._vaddr(first),
                    vaddr_last=self.w._vaddr(end - 1) + PAGE_SIZE - 1)

    def _report_runs(self, kind: str, severity: str, what: str, level: int, table: int,
                     slots: np.ndarray, frames: np.ndarray | None, base: int, lo: int,
                     hi: int) -> None:
        """One finding per run of consecutive entries ``slots`` of ``table``
        (``frames``: what each names, None for non-present entries)."""
        if not len(slots):
            return
        per_entry = level_pages(level)
        cut = np.flatnonzero(np.diff(slots) != 1) + 1
        for run, names in zip(np.split(slots, cut),
                              np.split(frames, cut) if frames is not None else
                              [None] * (len(cut) + 1)):
            s0, s1 = int(run[0]), int(run[-1])
            first = max(lo, base + s0 * per_entry)
            end = min(hi, base + (s1 + 1) * per_entry)
            va = self._va_range(first, end)
            n = len(run)
            mfn = None if names is None else int(names[0])
            entries = f"level-{level} entr{'y' if n == 1 else 'ies'} {s0}" + (
                f"-{s1}" if n > 1 else "") + f" of table MFN {table:#x}"
            self.findings.append(F.Finding(
                kind, severity,
                f"{entries} {what.format(mfn=mfn)}: virtual {va['vaddr_first']:#x}-"
                f"{va['vaddr_last']:#x}" + (" is not mapped" if severity == F.WARNING else ""),
                level=level_name(level), slot=s0, mfn=mfn, parent_mfn=table, count=n, **va))

    def _reference(self, level: int, child: int, parent: int, slot: int, first: int,
                   end: int) -> None:
        """Note that entry ``slot`` of ``parent`` names table ``child`` of ``level``."""
        refs = self.refs[level]
        refs[child] = refs.get(child, 0) + 1
        self.tables[level].add(child)
        seen = self.first_ref.get((level, child))
        if seen is None:
            self.first_ref[(level, child)] = [parent, slot, first, end]
        else:
            seen[3] = end

    # -- the walk ----------------------------------------------------------------
    def _table(self, level: int, mfn: int, words: np.ndarray, base: int, lo: int,
               hi: int) -> None:
        """Map linear pages [lo, hi) through table ``mfn`` of ``level``, whose
        entry 0 maps linear page ``base``."""
        per_entry = level_pages(level)
        i0 = (lo - base) // per_entry
        i1 = (hi - 1 - base) // per_entry + 1
        w = words[i0:i1]
        present = pte_present(w)
        frames = pte_frames(w)
        slots = np.arange(i0, i1)
        report = dict(level=level, table=mfn, base=base, lo=lo, hi=hi)
        self._report_runs(F.PT_NOT_PRESENT, F.WARNING, "not present", slots=slots[~present],
                          frames=None, **report)
        if level == 1:
            self._leaf_table(mfn, present, frames, lo, hi)
            self._report_runs(F.PT_FRAME_ZERO, F.WARNING, "name frame 0",
                              slots=slots[present & (frames == 0)],
                              frames=frames[present & (frames == 0)], **report)
            self._reached(hi)
            return
        if level in self.mode.large_levels:
            large = present & pte_pse(w)
            if large.any():
                self._large_pages(level, np.flatnonzero(large), frames, i0, report)
        else:
            large = np.zeros_like(present)
        pointers = present & ~large
        zero = pointers & (frames == 0)
        self._report_runs(F.PT_FRAME_ZERO, F.WARNING, "name frame 0 as a table",
                          slots=slots[zero], frames=frames[zero], **report)
        unreadable = []
        for k in np.flatnonzero(pointers & ~zero).tolist():
            child = int(frames[k])
            child_words = self.w.entries(child)
            if child_words is None:
                unreadable.append(k)
                continue
            slot = i0 + k
            child_base = base + slot * per_entry
            c_lo, c_hi = max(lo, child_base), min(hi, child_base + per_entry)
            self._reference(level - 1, child, mfn, slot, c_lo, c_hi)
            self._table(level - 1, child, child_words, child_base, c_lo, c_hi)
        bad = np.array(unreadable, dtype=np.int64)
        self._report_runs(F.PT_UNREADABLE, F.WARNING,
                          "name table frames not in the image (first: MFN {mfn:#x})",
                          slots=slots[bad], frames=frames[bad], **report)
        self._reached(hi)

    def _leaf_table(self, mfn: int, present: np.ndarray, frames: np.ndarray, lo: int,
                    hi: int) -> None:
        """Level 1: entries i0.. map linear pages lo.. one to one."""
        ok = present & (frames != 0)
        out = slice(lo - self.start, hi - self.start)
        self.mfns[out] = np.where(ok, frames, np.uint64(0))
        self.mapped[out] = ok
        self.l1_tables[out] = np.where(ok, np.uint64(mfn), np.uint64(0))

    def _large_pages(self, level: int, which: np.ndarray, frames: np.ndarray, i0: int,
                     report: dict) -> None:
        """2 MiB / 1 GiB entries (``which``: positions in ``frames``)."""
        base, lo, hi = report["base"], report["lo"], report["hi"]
        per_entry = level_pages(level)
        first_frames = frames[which] & ~np.uint64(per_entry - 1)   # bit 12 is PAT
        zero = first_frames == 0
        for k, frame0 in zip(which[~zero].tolist(), first_frames[~zero].tolist()):
            entry_base = base + (i0 + k) * per_entry
            a, b = max(lo, entry_base), min(hi, entry_base + per_entry)
            out = slice(a - self.start, b - self.start)
            self.mfns[out] = np.arange(frame0 + (a - entry_base), frame0 + (b - entry_base),
                                       dtype=np.uint64)
            self.mapped[out] = True
        self.large_pages += int(np.count_nonzero(~zero))
        size = "1 GiB" if level == 3 else "2 MiB"
        self._report_runs(F.PT_LARGE_PAGE, F.INFO, f"map {size} pages (first: MFN {{mfn:#x}})",
                          slots=which[~zero] + i0, frames=first_frames[~zero], **report)
        self._report_runs(F.PT_FRAME_ZERO, F.WARNING, f"map {size} pages at frame 0",
                          slots=which[zero] + i0, frames=first_frames[zero], **report)

    # -- after the walk ----------------------------------------------------------------
    def _shared_findings(self) -> None:
        """One info finding per table page named by more than one entry."""
        for level in range(self.mode.levels, 0, -1):
            for mfn, count in sorted(self.refs[level].items()):
                if count < 2:
                    continue
                parent, slot, first, end = self.first_ref[(level, mfn)]
                va = self._va_range(first, end)
                self.findings.append(F.Finding(
                    F.PT_SHARED_TABLE, F.INFO,
                    f"level-{level} table MFN {mfn:#x} is named by {count} level-{level + 1} "
                    f"entries (first: entry {slot} of table MFN {parent:#x}), virtual "
                    f"{va['vaddr_first']:#x}-{va['vaddr_last']:#x}",
                    level=level_name(level + 1), slot=slot, mfn=mfn, parent_mfn=parent,
                    count=count, **va))

    def _loop_findings(self) -> None:
        """One warning per table page read at more than one level."""
        levels_of: dict[int, list] = {}
        for level in range(self.mode.levels, 0, -1):
            for mfn in self.tables[level]:
                levels_of.setdefault(mfn, []).append(level)
        for mfn, levels in sorted(levels_of.items()):
            if len(levels) < 2:
                continue
            again = levels[1]    # the first level below the highest it is used at
            parent, slot, first, end = self.first_ref[(again, mfn)]
            va = self._va_range(first, end)
            count = sum(self.refs[lv].get(mfn, 0) for lv in levels[1:])
            self.findings.append(F.Finding(
                F.PT_LOOP, F.WARNING,
                f"table MFN {mfn:#x} is used at levels {', '.join(map(str, levels))} "
                f"(entry {slot} of table MFN {parent:#x} names it again: a table that maps "
                "itself)",
                level=level_name(again + 1), slot=slot, mfn=mfn, parent_mfn=parent,
                count=count, **va))


def walker_for_cr3(source: FrameSource, cr3: int, word_size: int,
                   five_level: bool = False) -> PageTableWalker:
    """The walker of the page tables a PV guest's ``cr3`` value names
    (``arch.p2m_cr3``: folded on 32-bit guests, see :func:`~p2mdump.paging.unfold_cr3`)."""
    root, mode = root_for_cr3(cr3, word_size, five_level)
    return PageTableWalker(source, root, mode)
