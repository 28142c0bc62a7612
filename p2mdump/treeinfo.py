"""Where a tree's own pages are: the top page, the mid pages and the leaf page
of every leaf slot, read from the top and mid pages only (at most
per_page + 1 frames).  Used by verify (which leaf holds a bad entry) and map
(where the tree sits in machine memory)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .arrays import unique
from .layout import Layout


@dataclass
class TreePages:
    layout: Layout
    top_mfn: int
    #: mid MFN of each top slot
    top: np.ndarray
    #: top slots whose mid page is readable (and not MFN 0)
    mid_ok: np.ndarray
    #: leaf MFN of each leaf slot (pfn // per_page); 0 where the mid is unusable
    leaf: np.ndarray
    leaf_usable: np.ndarray

    def leaf_ref_counts(self) -> tuple[np.ndarray, np.ndarray]:
        """(distinct leaf MFNs, slots naming each), usable slots only."""
        return unique(self.leaf[self.leaf_usable], return_counts=True)

    def levels(self) -> dict:
        """{"top": [mfn], "mid": distinct mid MFNs, "leaf": distinct leaf MFNs}
        (MFN 0 left out)."""
        mids = unique(self.top[self.mid_ok])
        leaves = unique(self.leaf[self.leaf_usable])
        return {"top": np.array([self.top_mfn], dtype=np.uint64),
                "mid": mids[mids != 0], "leaf": leaves[leaves != 0]}

    def placeholders(self) -> tuple[int | None, set]:
        """(mid placeholder MFN or None, leaf MFNs named by more than one slot)."""
        mids, counts = unique(self.top[self.mid_ok], return_counts=True)
        mid_ph = int(mids[np.argmax(counts)]) if len(counts) and counts.max() > 1 else None
        lv, lc = self.leaf_ref_counts()
        return mid_ph, {int(m) for m in lv[lc > 1].tolist()}


def read_tree_pages(source, top_mfn: int, layout: Layout) -> TreePages:
    fpp = layout.per_page
    data = source.read_frame(top_mfn)
    if data is None:
        top = np.zeros(fpp, dtype=np.uint64)
    else:
        top = np.frombuffer(data, dtype=layout.numpy_dtype).astype(np.uint64)
    mid_ok = np.zeros(fpp, dtype=bool)
    leaf: np.ndarray = np.zeros((fpp, fpp), dtype=np.uint64)
    for mfn in unique(top).tolist():
        if mfn == 0 or not source.has_frame(mfn):
            continue
        page = source.read_frame(mfn)
        if page is None:
            continue
        slots = top == mfn
        mid_ok[slots] = True
        leaf[slots] = np.frombuffer(page, dtype=layout.numpy_dtype)
    leaf = leaf.reshape(-1)
    usable = np.repeat(mid_ok, fpp) & (leaf != 0)
    return TreePages(layout=layout, top_mfn=top_mfn, top=top, mid_ok=mid_ok, leaf=leaf,
                     leaf_usable=usable)
