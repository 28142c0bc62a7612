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

Two forms of a built tree answer the writers (:mod:`.image`,
:mod:`.containers`, :mod:`.saveguest`) through the same methods
(:class:`TreeShape`): :class:`TreeGuest` holds one byte and a few words per
leaf row and produces the table chunk by chunk from the spec's
:class:`~.segments.Segments`, so a 2^27-pfn guest is written without holding
its table (every container, the xl save file included: remapped and
exchanged pfns are overrides); :class:`BuiltTree` (:func:`build_tree`) holds
the whole table as arrays, for callers that index or change it (tests).  Both
come from the same shaping and placement (:func:`build_tree_guest`), byte for
byte.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field, replace

import numpy as np

from ..errors import SpecError
from ..layout import Layout, layout_for
from .mfns import Numbering, check_fits, foreign_base, foreign_mfns, place_pages
from .prng import Stream
from .segments import FOREIGN, IDENTITY, OWN, Segments, guest_entries
from .spec import GuestSpec

#: leaf row states
ROW_MISSING, ROW_IDENTITY, ROW_REAL = 0, 1, 2
#: pfns per piece when a table is produced or scanned piecewise
CHUNK_PFNS = 1 << 18


class TreeShape(ABC):
    """What the writers ask of a built tree, held (:class:`BuiltTree`) or not
    (:class:`TreeGuest`).

    Both have ``spec``, ``layout``, ``top_mfn``, ``top``, ``mids`` (mid MFN ->
    words), ``placeholders``, ``leaf_rows`` / ``leaf_mfns`` (the real leaf rows
    and their MFNs) and ``tree_pages``, and produce: the leaf-slot words of a
    pfn range (:meth:`words_in`), the pages of some leaf rows
    (:meth:`leaf_pages`), the guest's own frames (:meth:`own_frames`) and its
    data frames (:meth:`data_pairs`)."""

    spec: GuestSpec
    layout: Layout
    top_mfn: int
    top: np.ndarray
    mids: dict[int, np.ndarray]
    placeholders: dict[str, int]
    leaf_rows: np.ndarray
    leaf_mfns: np.ndarray
    tree_pages: int
    notes: list[str]

    @abstractmethod
    def words_in(self, a: int, b: int) -> np.ndarray:
        """What the leaf slots of pfns [a, b) hold."""

    @abstractmethod
    def leaf_pages(self, rows: np.ndarray) -> np.ndarray:
        """(k, per_page) words of leaf ``rows``."""

    @abstractmethod
    def own_frames(self, limit: int, batch: int = CHUNK_PFNS
                   ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(pfns, MFNs) of the guest's own frames below ``limit``, ascending, in batches."""

    @property
    @abstractmethod
    def data_count(self) -> int:
        """How many data frames the guest has."""

    @abstractmethod
    def data_top(self) -> int:
        """The highest MFN of a data frame."""

    @abstractmethod
    def data_pairs(self, batch: int = CHUNK_PFNS) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(pfns, MFNs) of the data frames, in batches."""

    @property
    def max_pfn(self) -> int:
        return self.spec.max_pfn

    def page_list(self) -> Iterator[tuple[int, np.ndarray]]:
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

    def tree_page_mfns(self) -> np.ndarray:
        """MFNs of every tree page, sorted."""
        return np.union1d(np.array([m for m, _ in self.page_list()], dtype=np.uint64),
                          self.leaf_mfns.astype(np.uint64))

    def frame_count(self) -> int:
        """Frames the image needs (highest written MFN + 1)."""
        top = max(int(m) for m, _ in self.page_list())
        if len(self.leaf_mfns):
            top = max(top, int(self.leaf_mfns.max()))
        if self.spec.data and self.data_count:
            top = max(top, self.data_top())
        return top + 1

    def truth_chunks(self, size: int = CHUNK_PFNS) -> Iterator[tuple[int, np.ndarray]]:
        """(first pfn, words) of the truth (the leaf slots of pfns 0..max_pfn-1), in chunks."""
        for a in range(0, self.max_pfn, size):
            yield a, self.words_in(a, min(a + size, self.max_pfn))

    def own_frames_count(self, limit: int) -> int:
        """Pfns below ``limit`` whose entry is a machine frame of the guest."""
        return sum(len(p) for p, _ in self.own_frames(limit, CHUNK_PFNS))


@dataclass
class BuiltTree(TreeShape):
    """A built tree whose tables are held as arrays (see :func:`build_tree`)."""

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
    def truth(self) -> np.ndarray:
        """The table a walker must return for pfns 0..max_pfn-1."""
        return self.leaf_table[: self.spec.max_pfn]

    def words_in(self, a: int, b: int) -> np.ndarray:
        return self.leaf_table[a:b]

    def leaf_pages(self, rows: np.ndarray) -> np.ndarray:
        return self.leaf_table.reshape(-1, self.layout.per_page)[np.asarray(rows, np.int64)]

    def own_frames(self, limit: int, batch: int = CHUNK_PFNS):
        """(pfns, MFNs) of the pfns below ``limit`` whose entry is a plain machine
        frame (not INVALID, no FOREIGN / IDENTITY bit), ascending, in batches."""
        L = self.layout
        dt = self.entries.dtype.type
        for a in range(0, min(limit, len(self.entries)), batch):
            e = self.entries[a:min(a + batch, limit)]
            own = (e != dt(L.invalid)) & ((e & dt(L.flag_mask)) == 0)
            pfns = np.flatnonzero(own).astype(np.uint64) + np.uint64(a)
            if len(pfns):
                yield pfns, e[own].astype(np.uint64)

    @property
    def data_count(self) -> int:
        return len(self.data_pfns)

    def data_top(self) -> int:
        return int(self.data_mfns.max())

    def data_pairs(self, batch: int = CHUNK_PFNS):
        """(pfns, MFNs) of the data frames, in batches."""
        for a in range(0, len(self.data_pfns), batch):
            yield self.data_pfns[a:a + batch], self.data_mfns[a:a + batch]


@dataclass
class TreeGuest(TreeShape):
    """A built tree whose table is produced on demand (see :func:`build_tree_guest`).

    Per leaf row it holds a state byte; per real row / region a MFN; the
    guest's pfns are :class:`~.segments.Segments`, numbered by ``numbering``
    (own pfns) and ``foreign`` (foreign pfns, by rank)."""

    spec: GuestSpec
    layout: Layout
    segments: Segments
    #: per leaf row: ROW_MISSING / ROW_IDENTITY / ROW_REAL
    row_state: np.ndarray
    top_mfn: int
    top: np.ndarray
    mids: dict
    leaf_rows: np.ndarray
    leaf_mfns: np.ndarray
    placeholders: dict
    numbering: Numbering
    foreign: np.ndarray
    tree_pages: int = 0
    #: pfns remapped to other MFNs (sorted pfns, their MFNs): see
    #: :meth:`with_pages_as_guest_pages` and :meth:`with_exchanged`
    override_pfns: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint64))
    override_mfns: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint64))
    #: per override: the pfn still holds a data frame (one another own pfn had) rather
    #: than a structure page
    exchanged: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    notes: list = field(default_factory=list)

    # -- words ---------------------------------------------------------------------
    def entries_in(self, a: int, b: int) -> np.ndarray:
        """What the guest's p2m says for pfns [a, b) (identity entries kept)."""
        return guest_entries(self, a, b)

    def words_in(self, a: int, b: int) -> np.ndarray:
        """What the leaf slots of pfns [a, b) hold: whole-identity rows read INVALID."""
        out = self.entries_in(a, b)
        fpp = self.layout.per_page
        r0, r1 = a // fpp, -(-b // fpp)
        ident = self.row_state[r0:r1] == ROW_IDENTITY
        if ident.any():
            out[np.repeat(ident, fpp)[a - r0 * fpp:b - r0 * fpp]] = self.layout.invalid
        return out

    def leaf_pages(self, rows: np.ndarray) -> np.ndarray:
        """(k, per_page) words of leaf ``rows``, one piece per run of consecutive rows."""
        fpp = self.layout.per_page
        rows = np.asarray(rows, dtype=np.int64)
        brk = np.flatnonzero(np.diff(rows) != 1) + 1
        starts = [0] + brk.tolist()
        ends = brk.tolist() + [len(rows)]
        parts = [self.words_in(int(rows[s]) * fpp, (int(rows[s]) + e - s) * fpp).reshape(-1, fpp)
                 for s, e in zip(starts, ends)]
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    @property
    def truth(self) -> np.ndarray:
        """The table a walker must return for pfns 0..max_pfn-1 (held whole:
        for small guests; writers use :meth:`truth_chunks`)."""
        return self.words_in(0, self.max_pfn)

    # -- frames ------------------------------------------------------------------------
    def _own_runs(self, limit: int, batch: int):
        """(pfns, their own MFNs as numbered) below ``limit``, ascending, in batches."""
        for first, rank, count in self.segments.own_runs(limit):
            for c in range(0, count, batch):
                n = min(batch, count - c)
                yield (np.arange(first + c, first + c + n, dtype=np.uint64),
                       self.numbering.run(rank + c, n))

    def _overridden(self, pfns: np.ndarray):
        """(positions in ``pfns``, index range in the overrides) of remapped pfns."""
        lo, hi = np.searchsorted(self.override_pfns, [pfns[0], pfns[-1] + np.uint64(1)])
        return (self.override_pfns[lo:hi] - pfns[0]).astype(np.int64), lo, hi

    def own_frames(self, limit: int, batch: int = CHUNK_PFNS):
        """(pfns, MFNs) of the guest's own pfns below ``limit`` (remapped ones
        with their new MFN), ascending, in batches."""
        for pfns, mfns in self._own_runs(limit, batch):
            if len(self.override_pfns):
                pos, lo, hi = self._overridden(pfns)
                mfns[pos] = self.override_mfns[lo:hi]
            yield pfns, mfns

    def own_frames_count(self, limit: int) -> int:
        return self.segments.own_count(limit)

    @property
    def data_count(self) -> int:
        return self.segments.n_own - self._structure_overrides

    @property
    def _structure_overrides(self) -> int:
        return len(self.override_pfns) - int(np.count_nonzero(self.exchanged))

    def data_top(self) -> int:
        if not self._structure_overrides:
            return self.numbering.top()     # exchanges keep the set of data frames
        return max(int(m.max()) for _, m in self.data_pairs() if len(m))

    def data_pairs(self, batch: int = CHUNK_PFNS):
        """(pfns, MFNs) of the data frames (own pfns not remapped to a structure
        page; exchanged ones with their new frame), in batches."""
        for pfns, mfns in self._own_runs(self.segments.end, batch):
            if len(self.override_pfns):
                pos, lo, hi = self._overridden(pfns)
                data = self.exchanged[lo:hi]
                mfns[pos[data]] = self.override_mfns[lo:hi][data]
                if not data.all():
                    keep = np.ones(len(pfns), dtype=bool)
                    keep[pos[~data]] = False
                    pfns, mfns = pfns[keep], mfns[keep]
            yield pfns, mfns

    # -- xc-core and xl save: tree pages as guest pages ----------------------------------
    def with_pages_as_guest_pages(self, extra_mfns=()) -> tuple["TreeGuest", np.ndarray]:
        """A copy whose last own pfns below max_pfn map the tree pages' MFNs (and
        ``extra_mfns``, other frames that must be guest pages), as
        :func:`.containers.tree_pages_as_guest_pages` does for a :class:`BuiltTree`.
        Returns (new guest, those pfns, in MFN order)."""
        mfns = np.union1d(self.tree_page_mfns(), np.asarray(extra_mfns, dtype=np.uint64))
        chosen = self.segments.last_own(self.max_pfn, len(mfns))
        if len(chosen) < len(mfns):
            raise SpecError(f"an xc-core dump needs at least {len(mfns)} valid pfns below "
                            f"max_pfn to hold the {len(mfns)} tree pages as guest pages; the "
                            f"spec has {self.segments.own_count(self.max_pfn)}")
        new = replace(self, override_pfns=chosen, override_mfns=mfns,
                      exchanged=np.zeros(len(chosen), dtype=bool), notes=list(self.notes) + [
                          f"pfns {int(chosen[0]):#x}-{int(chosen[-1]):#x} hold the "
                          f"{len(mfns)} tree pages"])
        return new, chosen

    def with_exchanged(self, pfns: np.ndarray, mfns: np.ndarray) -> "TreeGuest":
        """A copy whose own pfns ``pfns`` hold the data frames ``mfns`` (frames the
        guest exchanged between its own pfns; a later exchange of a pfn wins)."""
        allp = np.concatenate([self.override_pfns, np.asarray(pfns, dtype=np.uint64)])
        allm = np.concatenate([self.override_mfns, np.asarray(mfns, dtype=np.uint64)])
        alle = np.concatenate([self.exchanged, np.ones(len(pfns), dtype=bool)])
        # keep the last occurrence of every pfn, in pfn order
        last = len(allp) - 1 - np.unique(allp[::-1], return_index=True)[1]
        return replace(self, override_pfns=allp[last], override_mfns=allm[last],
                       exchanged=alle[last])


def _row_counts(seg: Segments, rows: int, fpp: int, classes) -> np.ndarray:
    """Per leaf row: how many of its pfns are of one of ``classes``."""
    lengths = seg.ends - seg.starts
    sel = np.isin(seg.classes, classes)
    before = np.concatenate([[0], np.cumsum(np.where(sel, lengths, 0))])
    x = np.arange(rows + 1, dtype=np.int64) * fpp
    i = np.searchsorted(seg.starts, x, side="right") - 1
    cum = before[i] + np.where(sel[i], x - seg.starts[i], 0)
    return np.diff(cum)


def build_tree_guest(spec: GuestSpec) -> TreeGuest:
    """Shape ``spec`` as Linux does and place its pages, without its table."""
    L = layout_for(spec.word_size)
    fpp = L.per_page
    dtype = np.dtype(L.numpy_dtype)
    rng = Stream(spec.seed)
    rows = L.leaves_for(spec.extent)
    n = rows * fpp
    seg = Segments(spec, n)

    # -- row shapes (do not depend on MFN values) -----------------------------
    any_entry = _row_counts(seg, rows, fpp, [OWN, IDENTITY, FOREIGN]) > 0
    all_ident = _row_counts(seg, rows, fpp, [IDENTITY]) == fpp
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
    n_own = seg.n_own
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

    # -- numbering (draws in the order: placement, numbering, foreign) ------------
    numbering = Numbering(spec.mfn_order, n_own, base, rng)
    foreign = np.zeros(0, dtype=np.uint64)
    if seg.n_foreign:
        foreign = foreign_mfns(seg.n_foreign, foreign_base(data_end, int(tree_mfns.max())), rng)
        check_fits(L, int(foreign.max()), "foreign MFNs")
    if n_own:
        check_fits(L, numbering.top(), "guest MFNs")

    # -- pointer pages -----------------------------------------------------------
    ident_rows = np.flatnonzero(row_state == ROW_IDENTITY)
    row_leaf = np.full(regions * fpp, leaf_missing, dtype=np.uint64)
    row_leaf[ident_rows] = ident_target
    row_leaf[real_rows] = leaf_mfns
    top = np.full(fpp, mid_missing, dtype=dtype)
    mids = {}
    for t, mfn in mid_mfn_of_region.items():
        top[t] = mfn
        mids[mfn] = row_leaf[t * fpp:(t + 1) * fpp].astype(dtype)

    return TreeGuest(
        spec=spec, layout=L, segments=seg, row_state=row_state, top_mfn=top_mfn, top=top,
        mids=mids, leaf_rows=real_rows, leaf_mfns=leaf_mfns,
        placeholders={"mid_missing": mid_missing, "leaf_missing": leaf_missing,
                      "leaf_identity": leaf_identity_page},
        numbering=numbering, foreign=foreign, tree_pages=n_tree)


def build_tree(spec: GuestSpec) -> BuiltTree:
    """Shape and place ``spec`` (:func:`build_tree_guest`) and hold its whole table."""
    g = build_tree_guest(spec)
    n = len(g.row_state) * g.layout.per_page
    entries = g.entries_in(0, n)
    leaf_table = g.words_in(0, n)
    own = [np.arange(first, first + count, dtype=np.uint64)
           for first, _, count in g.segments.own_runs(n)]
    data_pfns = np.concatenate(own) if own else np.zeros(0, dtype=np.uint64)
    data_mfns = g.numbering.run(0, g.segments.n_own)
    return BuiltTree(
        spec=spec, layout=g.layout, entries=entries, leaf_table=leaf_table, top_mfn=g.top_mfn,
        top=g.top, mids=g.mids, leaf_rows=g.leaf_rows, leaf_mfns=g.leaf_mfns,
        placeholders=g.placeholders, data_pfns=data_pfns, data_mfns=data_mfns,
        tree_pages=g.tree_pages)
