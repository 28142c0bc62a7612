"""Shape a guest's p2m as a Linux PV guest does, and place its pages in MFNs.

Shaping (Linux arch/x86/xen/p2m.c, xen_build_mfn_list_list):

* a top slot whose 1 GiB (64-bit) / 4 GiB (32-bit) region is entirely missing
  names the shared mid placeholder ``p2m_mid_missing_mfn``, whose every slot
  names the leaf placeholder ``p2m_missing``; so does every top slot past the
  end of the table;
* inside a real mid page, a leaf whose entries are all missing names
  ``p2m_missing``; a leaf whose entries are all identity names ``p2m_identity``
  (or ``p2m_missing``, the 3.x boot order); both placeholders hold only
  INVALID_P2M_ENTRY, so such pfns *read* as missing from memory;
* every other leaf is a page of its own holding MFNs, ``pfn |
  IDENTITY_FRAME_BIT`` for partly-identity leaves, ``FOREIGN_FRAME(mfn)`` and
  INVALID, with INVALID past the last pfn.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..layout import Layout, layout_for
from .mfns import Numbering, check_fits, foreign_base, foreign_mfns, place_pages
from .prng import Stream
from .spec import GuestSpec

#: leaf row states
ROW_MISSING, ROW_IDENTITY, ROW_REAL = 0, 1, 2


@dataclass
class BuiltTree:
    spec: GuestSpec
    layout: Layout
    #: what the guest's p2m says, pfns 0..rows*per_page-1 (identity kept)
    entries: np.ndarray
    #: what the leaf slots hold (placeholders read as INVALID), same length
    leaf_table: np.ndarray
    top_mfn: int
    top: np.ndarray
    #: mid MFN -> words, for the real mid pages
    mids: dict
    #: real leaf rows and their MFNs
    leaf_rows: np.ndarray
    leaf_mfns: np.ndarray
    placeholders: dict
    #: valid pfns and their MFNs (for data frames)
    data_pfns: np.ndarray
    data_mfns: np.ndarray
    tree_pages: int = 0
    notes: list = field(default_factory=list)

    @property
    def max_pfn(self) -> int:
        return self.spec.max_pfn

    @property
    def truth(self) -> np.ndarray:
        """The table a walker must return for pfns 0..max_pfn-1."""
        return self.leaf_table[: self.spec.max_pfn]

    def page_list(self):
        """(mfn, words) of every non-leaf tree page."""
        L = self.layout
        fpp = L.per_page
        invalid = np.full(fpp, L.invalid, dtype=L.numpy_dtype)
        mid_missing = np.full(fpp, self.placeholders["leaf_missing"], dtype=L.numpy_dtype)
        yield self.placeholders["leaf_missing"], invalid
        yield self.placeholders["leaf_identity"], invalid
        yield self.placeholders["mid_missing"], mid_missing
        yield self.top_mfn, self.top
        yield from self.mids.items()

    def frame_count(self) -> int:
        """Frames the image needs (highest written MFN + 1)."""
        top = max(int(m) for m, _ in self.page_list())
        if len(self.leaf_mfns):
            top = max(top, int(self.leaf_mfns.max()))
        if self.spec.data and len(self.data_mfns):
            top = max(top, int(self.data_mfns.max()))
        return top + 1


def _mask(n: int, ranges) -> np.ndarray:
    m = np.zeros(n, dtype=bool)
    for a, b in ranges:
        m[a:b] = True
    return m


def build_tree(spec: GuestSpec) -> BuiltTree:
    L = layout_for(spec.word_size)
    fpp = L.per_page
    dtype = np.dtype(L.numpy_dtype)
    rng = Stream(spec.seed)
    rows = L.leaves_for(spec.extent)
    n = rows * fpp
    pfns = np.arange(n, dtype=np.uint64)

    populated = _mask(n, spec.ram) & ~_mask(n, spec.holes) & ~_mask(n, spec.ballooned)
    foreign = _mask(n, spec.foreign)
    identity = _mask(n, spec.identity) & ~foreign
    own = populated & ~identity & ~foreign

    # -- row shapes (do not depend on MFN values) -----------------------------
    any_entry = (own | identity | foreign).reshape(rows, fpp).any(axis=1)
    all_ident = identity.reshape(rows, fpp).all(axis=1)
    row_state = np.where(~any_entry, ROW_MISSING,
                         np.where(all_ident, ROW_IDENTITY, ROW_REAL)).astype(np.uint8)
    real_rows = np.flatnonzero(row_state == ROW_REAL)
    regions = -(-rows // fpp)
    region_used = np.zeros(fpp, dtype=bool)
    region_used[:regions] = np.pad(row_state != ROW_MISSING, (0, regions * fpp - rows)
                                   ).reshape(regions, fpp).any(axis=1)
    real_regions = np.flatnonzero(region_used)

    # -- tree page MFNs --------------------------------------------------------
    n_tree = 4 + len(real_regions) + len(real_rows)
    n_own = int(own.sum())
    tree_mfns, base, data_end = place_pages(spec, n_tree, n_own, rng,
                                            shuffle_tail=len(real_rows))
    leaf_missing, leaf_identity_page, mid_missing, top_mfn = (int(x) for x in tree_mfns[:4])
    mid_mfn_of_region = dict(zip(real_regions.tolist(),
                                 tree_mfns[4:4 + len(real_regions)].tolist()))
    leaf_mfns = tree_mfns[4 + len(real_regions):]
    if spec.identity_leaf == "missing":
        ident_target = leaf_missing
    else:
        ident_target = leaf_identity_page

    # -- entries ---------------------------------------------------------------
    entries = np.full(n, L.invalid, dtype=dtype)
    data_pfns = np.flatnonzero(own).astype(np.uint64)
    data_mfns = Numbering(spec.mfn_order, n_own, base, rng)(np.arange(n_own, dtype=np.uint64))
    entries[own] = data_mfns.astype(dtype)
    entries[identity] = (pfns[identity] | np.uint64(L.identity_bit)).astype(dtype)
    nf = int(foreign.sum())
    if nf:
        fmfns = foreign_mfns(nf, foreign_base(data_end, int(tree_mfns.max())), rng)
        check_fits(L, int(fmfns.max()), "foreign MFNs")
        entries[foreign] = (fmfns | np.uint64(L.foreign_bit)).astype(dtype)
    if n_own:
        check_fits(L, int(data_mfns.max()), "guest MFNs")

    leaf_table = entries.copy()
    ident_rows = np.flatnonzero(row_state == ROW_IDENTITY)
    leaf_table.reshape(rows, fpp)[ident_rows] = dtype.type(L.invalid)

    # -- pointer pages -----------------------------------------------------------
    row_leaf = np.full(regions * fpp, leaf_missing, dtype=np.uint64)
    row_leaf[ident_rows] = ident_target
    row_leaf[real_rows] = leaf_mfns
    top = np.full(fpp, mid_missing, dtype=dtype)
    mids = {}
    for t, mfn in mid_mfn_of_region.items():
        top[t] = mfn
        mids[mfn] = row_leaf[t * fpp:(t + 1) * fpp].astype(dtype)

    return BuiltTree(
        spec=spec, layout=L, entries=entries, leaf_table=leaf_table, top_mfn=top_mfn,
        top=top, mids=mids, leaf_rows=real_rows, leaf_mfns=leaf_mfns,
        placeholders={"mid_missing": mid_missing, "leaf_missing": leaf_missing,
                      "leaf_identity": leaf_identity_page},
        data_pfns=data_pfns, data_mfns=data_mfns, tree_pages=n_tree)
