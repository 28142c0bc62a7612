"""Sparse x86 page tables of a generated PV guest (4-level x86-64 or 3-level PAE).

Built in two steps, because a table's content names the MFNs of the tables
below it and MFNs are handed out only once every page of the guest is
known: first record which 2 MiB slots (PMDs) need a private level-1 table
and which point at a shared one (:meth:`PageTables.add_l1`,
:meth:`PageTables.add_shared`); :meth:`PageTables.table_keys` then lists
every table page to place, and :meth:`PageTables.build` fills them once
their MFNs are known.

What an entry holds (``p2mdump.paging``): level-1 entries come from the
caller; an entry naming a lower table is ``_KERNPG_TABLE``, except the four
entries of a PAE top table (PDPTEs), which carry only the present bit.  In a
PV guest every frame number in a table is a machine frame.
"""
from __future__ import annotations

import numpy as np

from ..layout import PAGE_SHIFT
from ..paging import KERNPG_TABLE, PTE_PRESENT, PTES_PER_PAGE, PagingMode, level_shift

PMD_SHIFT = level_shift(2)


def entry_flags(mode: PagingMode, level: int) -> int:
    """Flags of an entry at ``level`` that names a lower table."""
    if mode.word_size == 4 and level == mode.levels:
        return PTE_PRESENT          # PAE PDPTE: other low bits are reserved
    return KERNPG_TABLE


class PageTables:
    """The page-table pages of one address space, keyed by (level, key).

    ``key`` is the virtual address shifted by the span of one table at that
    level (``vaddr >> level_shift(level + 1)``); the root is (levels, 0).
    """

    def __init__(self, mode: PagingMode):
        self.mode = mode
        #: PMD numbers with a private level-1 table
        self.l1: set[int] = set()
        #: PMD number -> name of the shared level-1 page it points at
        self.shared: dict[int, str] = {}

    def add_l1(self, pmd: int) -> None:
        """PMD number ``pmd`` (vaddr >> 21) gets a private level-1 table."""
        self.shared.pop(pmd, None)
        self.l1.add(pmd)

    def add_shared(self, pmd: int, name: str) -> None:
        """PMD number ``pmd`` points at the shared level-1 page called ``name``."""
        if pmd not in self.l1:
            self.shared[pmd] = name

    def _key(self, vaddr: int, level: int) -> int:
        return 0 if level == self.mode.levels else vaddr >> level_shift(level + 1)

    def table_keys(self) -> list:
        """Every table page to place: root first, then level by level, keys ascending."""
        top = self.mode.levels
        pmds = sorted(self.l1 | set(self.shared))
        keys = [(top, 0)]
        for level in range(top - 1, 1, -1):
            keys += [(level, k) for k in sorted({self._key(p << PMD_SHIFT, level) for p in pmds})]
        keys += [(1, p) for p in sorted(self.l1)]
        return keys

    def build(self, mfn_of: dict, shared_mfns: dict, l1_entries) -> dict:
        """MFN -> 512 uint64 entries of every table page.

        ``mfn_of`` maps each key of :meth:`table_keys` to its MFN,
        ``shared_mfns`` the names given to :meth:`add_shared` to MFNs, and
        ``l1_entries(pmd)`` returns the 512 entries of a private level-1 table.
        """
        mode = self.mode
        pages = {}
        for (level, key), mfn in mfn_of.items():
            if level == 1:
                pages[mfn] = np.asarray(l1_entries(key), dtype=np.uint64)
            else:
                pages[mfn] = np.zeros(PTES_PER_PAGE, dtype=np.uint64)

        def link(vaddr: int, level: int, target_mfn: int) -> None:
            """Entry at ``level`` for ``vaddr`` names ``target_mfn``."""
            table = pages[mfn_of[(level, self._key(vaddr, level))]]
            table[mode.index(vaddr, level)] = (target_mfn << PAGE_SHIFT) | entry_flags(mode, level)

        for (level, key), mfn in mfn_of.items():
            if level < mode.levels:
                link(key << level_shift(level + 1), level + 1, mfn)
        for pmd, name in self.shared.items():
            link(pmd << PMD_SHIFT, 2, shared_mfns[name])
        return pages
