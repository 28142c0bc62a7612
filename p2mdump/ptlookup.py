"""Translate single guest virtual addresses, reading only the tables on the path.

A single lookup (one pfn of a linear p2m list, one ``lookup --vaddr``) needs
one entry from each of three to five page-table pages.  This module reads
each of those pages once, as bytes, and unpacks the one entry it needs with
:mod:`struct`: no numpy, no construct, no dataclasses, so such a lookup
starts about as fast as the interpreter itself.

:func:`translate_path` is the one entry-by-entry walk of the x86 page
tables.  The bulk walker :class:`p2mdump.pagetable.PageTableWalker` reads
its table pages through a :class:`PathTranslator` and translates single
addresses with it; its numpy range walk is the independent second way a
test checks the two against.  The bit layout of an entry is
:mod:`p2mdump.paging`'s (the Construct schema in
:mod:`p2mdump.schemas.pagetable` is derived from the same constants).
"""
from __future__ import annotations

import operator
import struct

from .errors import LayoutError, TreeError
from .layout import PAGE_SHIFT
from .paging import (PTE_PRESENT, PTE_PSE, PTE_SIZE, PagingMode, level_name, level_pages,
                     level_span, mode_for, pte_frame, unfold_cr3)
from .record import Record

#: one page-table entry: a little-endian 64-bit word (x86-64 and PAE alike)
_PTE = struct.Struct("<Q")


class Step(Record):
    """One entry read on a translation path: entry ``index`` of the
    level-``level`` table at ``table_mfn`` holds ``entry``."""

    __slots__ = ("level", "table_mfn", "index", "entry")

    def __init__(self, level: int, table_mfn: int, index: int, entry: int):
        self.level = level
        self.table_mfn = table_mfn
        self.index = index
        self.entry = entry

    def as_dict(self) -> dict:
        """The step as a lookup path entry: {"level": "pt-lN", "mfn", "slot", "entry"}."""
        return {"level": level_name(self.level), "mfn": self.table_mfn, "slot": self.index,
                "entry": self.entry}


class Translation(Record):
    """Where one virtual address leads."""

    __slots__ = ("vaddr", "maddr", "page_size", "path", "problem", "frame_in_image")

    def __init__(self, vaddr: int, maddr: int | None, page_size: int, path: list,
                 problem: str | None, frame_in_image: bool):
        self.vaddr = vaddr
        #: machine address, None when the address is not mapped
        self.maddr = maddr
        #: 4096, 2 MiB or 1 GiB; 0 when not mapped
        self.page_size = page_size
        #: the :class:`Step` s taken, top level first
        self.path = path
        #: why the address is not mapped (None when it is)
        self.problem = problem
        #: whether the final machine frame is in the image
        self.frame_in_image = frame_in_image

    @property
    def mfn(self) -> int | None:
        return None if self.maddr is None else self.maddr >> PAGE_SHIFT


# -- checks shared with the bulk walker ------------------------------------------------------

def check_vaddr(mode: PagingMode, vaddr, what: str = "virtual address") -> int:
    """``vaddr`` as a Python int; LayoutError unless it is a canonical address of ``mode``."""
    try:
        vaddr = operator.index(vaddr)
    except TypeError:
        raise LayoutError(f"{what} must be an integer (got {vaddr!r})") from None
    if not mode.canonical(vaddr):
        raise LayoutError(f"{what} {vaddr:#x} is not a canonical {mode.name} address")
    return vaddr


def root_for_cr3(cr3: int, word_size: int, five_level: bool = False,
                 what: str = "cr3") -> tuple[int, PagingMode]:
    """(top table MFN, paging mode) of a PV guest's cr3 register value
    (folded on 32-bit guests, see :func:`~p2mdump.paging.unfold_cr3`).

    LayoutError for a value that cannot be such a cr3 (bits 32-63 set on a
    32-bit guest: Xen's save code refuses it), TreeError for cr3 0."""
    try:
        mode = mode_for(word_size, five_level)
    except ValueError as exc:
        raise LayoutError(str(exc)) from None
    if not isinstance(cr3, int) or not 0 <= cr3 < 1 << 64:
        raise LayoutError(f"{what} must be a 64-bit value (got {cr3!r})")
    if word_size == 4 and cr3 >> 32:
        raise LayoutError(f"{what} {cr3:#x} of a 32-bit guest has bits 32-63 set "
                          "(Xen's save code refuses it)")
    if cr3 == 0:
        raise TreeError(f"{what} is 0: no page tables to walk")
    return unfold_cr3(cr3, word_size), mode


def check_root_mfn(root_mfn: int) -> None:
    """TreeError unless ``root_mfn`` can name a top table (frame 0 cannot)."""
    if root_mfn <= 0:
        raise TreeError(f"top page-table MFN must be positive (got {root_mfn:#x})")


def root_not_in_image(source, root_mfn: int) -> TreeError:
    """The error for a top table that is not in the image."""
    limit = source.frame_limit()
    where = f" (the image holds {limit:#x} frames)" if limit is not None else ""
    return TreeError(f"top page-table MFN {root_mfn:#x} is not in the image{where}")


# -- the walk ---------------------------------------------------------------------------------

def translate_path(read_entry, has_frame, root_mfn: int, mode: PagingMode,
                   vaddr: int) -> Translation:
    """Follow canonical ``vaddr`` from the top table ``root_mfn`` down, entry by entry.

    ``read_entry(table_mfn, index)`` gives an entry as an int, None when
    that table page is not in the image (the root must be);
    ``has_frame(mfn)`` says whether the final frame is in the image."""
    path: list[Step] = []

    def unmapped(problem: str) -> Translation:
        return Translation(vaddr, None, 0, path, problem, False)

    table = root_mfn
    for level in range(mode.levels, 0, -1):
        index = mode.index(vaddr, level)
        entry = read_entry(table, index)
        if entry is None:
            step = path[-1]
            return unmapped(f"level-{level} table MFN {table:#x} (named by level-{step.level} "
                            f"entry {step.index} of table MFN {step.table_mfn:#x}) "
                            "is not in the image")
        path.append(Step(level, table, index, entry))
        where = f"level-{level} entry {index} of table MFN {table:#x}"
        if not entry & PTE_PRESENT:
            return unmapped(f"{where} is not present")
        frame = pte_frame(entry)
        large = level in mode.large_levels and bool(entry & PTE_PSE)
        if large:
            frame &= ~(level_pages(level) - 1)   # bit 12 is PAT
        if frame == 0:
            return unmapped(f"{where} names frame 0")
        if large or level == 1:
            size = level_span(level)
            maddr = (frame << PAGE_SHIFT) | (vaddr & (size - 1))
            return Translation(vaddr, maddr, size, path, None, has_frame(maddr >> PAGE_SHIFT))
        table = frame
    raise AssertionError("unreachable: level 1 always ends the walk")


class FramePages:
    """Whole frames of ``source`` as bytes, read once each (cached by MFN):
    the page cache of every single lookup (:class:`PathTranslator`,
    :class:`p2mdump.lookup.PathLookup`) and of the bulk
    :class:`~p2mdump.pagetable.PageTableWalker`.  :attr:`pages_read` counts
    the distinct frames read."""

    def __init__(self, source):
        self.source = source
        self.pages_read = 0
        self._pages: dict[int, bytes | None] = {}

    def page(self, mfn: int) -> bytes | None:
        """Frame ``mfn`` as 4096 bytes, None when it is not in the image."""
        try:
            return self._pages[mfn]
        except KeyError:
            pass
        data = None
        if mfn >= 0 and self.source.has_frame(mfn):
            data = self.source.read_frame(mfn)
            if data is not None:
                self.pages_read += 1
        self._pages[mfn] = data
        return data


class PathTranslator(FramePages):
    """Single translations through the page tables under ``root_mfn`` of
    ``source``.  Pages are read as bytes, once each (:class:`FramePages`);
    :meth:`page` is open to callers that read a data page through the same
    cache (a list page)."""

    def __init__(self, source, root_mfn: int, mode: PagingMode):
        check_root_mfn(root_mfn)
        super().__init__(source)
        self.root_mfn = root_mfn
        self.mode = mode
        if self.page(root_mfn) is None:
            raise root_not_in_image(source, root_mfn)

    def entry(self, table_mfn: int, index: int) -> int | None:
        """Entry ``index`` of table page ``table_mfn``, None when the page is not in the image."""
        data = self.page(table_mfn)
        return None if data is None else _PTE.unpack_from(data, index * PTE_SIZE)[0]

    def translate(self, vaddr: int) -> Translation:
        """Where ``vaddr`` leads; LayoutError unless it is canonical."""
        vaddr = check_vaddr(self.mode, vaddr)
        return translate_path(self.entry, self.source.has_frame, self.root_mfn, self.mode,
                              vaddr)


def translator_for_cr3(source, cr3: int, word_size: int, five_level: bool = False,
                       what: str = "cr3") -> PathTranslator:
    """The :class:`PathTranslator` of the page tables a PV guest's ``cr3`` names."""
    root, mode = root_for_cr3(cr3, word_size, five_level, what)
    return PathTranslator(source, root, mode)
