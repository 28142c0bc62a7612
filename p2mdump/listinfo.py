"""Where a linear p2m list's own pages are in machine memory: the top page
table (p2m_cr3), the page tables below it on the list's path, the list's own
pages and the shared frames (p2m_missing / p2m_identity and the shared PTE
pages).  Read from the page tables only (one table page per 2 MiB of list),
never from the list pages.  Used by ``map``, as :mod:`p2mdump.treeinfo` is
for a tree."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .layout import Layout
from .paging import mode_for


@dataclass
class ListPages:
    """The machine frames of one linear list and its page tables."""

    layout: Layout
    #: MFN of the top-level page table (p2m_cr3 unfolded)
    root_mfn: int
    #: level -> distinct MFNs of the page tables on the list's path (the root left out)
    tables: dict
    #: distinct MFNs of the list pages that are the list's own (not shared)
    list_mfns: np.ndarray
    #: the shared all-INVALID frames backing many list pages
    placeholders: np.ndarray
    #: the shared PTE pages (p2m_missing_pte / p2m_identity_pte)
    shared_ptes: np.ndarray

    def table_mfns(self) -> np.ndarray:
        """Every page table below the root, shared PTE pages left out."""
        parts = list(self.tables.values())
        allm = np.unique(np.concatenate(parts)) if parts else np.zeros(0, np.uint64)
        return np.setdiff1d(allm, self.shared_ptes).astype(np.uint64)


def _sorted_mfns(mfns) -> np.ndarray:
    """A list_info list of MFNs (or None) as a sorted uint64 array."""
    return np.array(sorted(int(m) for m in mfns or []), dtype=np.uint64)


def read_list_pages(source, list_info: dict, layout: Layout) -> ListPages:
    """The pages of the list a list walk found (``WalkResult.list_info``)."""
    from .pagetable import PageTableWalker

    mode = mode_for(layout.word_size, five_level=list_info.get("levels") == 5)
    root = int(list_info["root_mfn"])
    walker = PageTableWalker(source, root, mode)
    rmap = walker.map_range(int(list_info["p2m_vaddr"]), int(list_info["list_pages"]))
    mfns = np.unique(rmap.mfns[rmap.mapped])
    shared = _sorted_mfns(list_info.get("list_placeholders"))
    shared_ptes = _sorted_mfns(list_info.get("shared_pte_pages"))
    tables = {lv: m for lv, m in rmap.tables.items() if lv < mode.levels}
    return ListPages(layout=layout, root_mfn=root, tables=tables,
                     list_mfns=np.setdiff1d(mfns, shared).astype(np.uint64),
                     placeholders=shared, shared_ptes=shared_ptes)
