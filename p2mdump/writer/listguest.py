"""Shape a guest's p2m as a Linux linear p2m list, with the page tables that map it.

Linux 3.19+ (``arch/x86/xen/p2m.c``, ``xen_vmalloc_p2m_tree`` and
``xen_rebuild_p2m_list``; reference section 3) keeps the p2m as a virtual
array of guest words at ``p2m_vaddr``, ``list_pfns`` (xen_p2m_size) long,
a whole number of mid regions (2^18 pfns on 64-bit, 2^20 on PAE).  The
rebuild walks the pfns in chunks: a whole mid region at a region boundary,
one list page otherwise.  A pfn's type is MISSING (entry INVALID), IDENTITY
(IDENTITY bit set, or past the initial array) or PFN.  A chunk of one
non-PFN type is not given memory of its own:

* a whole mid region: its PMD(s) point at the shared PTE page
  ``p2m_missing_pte`` / ``p2m_identity_pte`` (``_KERNPG_TABLE``), whose 512
  entries all map ``p2m_missing`` / ``p2m_identity`` read-only;
* a whole list page: its PTE maps ``p2m_missing`` / ``p2m_identity``
  (``PAGE_KERNEL_RO``);

every other list page is a private page holding the entries
(``PAGE_KERNEL``).  ``p2m_missing`` and ``p2m_identity`` hold only
INVALID_P2M_ENTRY, so memory reads INVALID for every pfn they back.

The initial array (start_info ``mfn_list``) is taken to cover every pfn
the spec gives a frame: ALIGN(max(max_pfn, end of the last RAM or foreign
pfn), P2M_PER_PAGE).  Pfns past it count as IDENTITY at rebuild time, so
the tail of the list maps p2m_identity.

``both`` adds the 3-level MFN tree Linux builds over the list
(``xen_build_mfn_list_list``) when the toolstack did not set
SIF_VIRT_P2M_4TOOLS: a mid slot names the MFN of the list page its PTE
maps (the tree's leaves *are* the list pages), a region mapped through a
shared PTE page gets ``p2m_mid_missing_mfn`` in its top slot.

Big guests: nothing pfn-sized is ever held.  The guest is described by
:class:`~.segments.Segments`; per list page there is one byte of type and
one MFN; the list's words, the truth and the dumped pages are produced
chunk by chunk (:meth:`ListGuest.words`, :meth:`ListGuest.memory_chunks`).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from ..errors import SpecError
from ..layout import PAGE_SHIFT, PAGE_SIZE, Layout, layout_for
from ..paging import PAGE_KERNEL, PAGE_KERNEL_RO, PTES_PER_PAGE, PagingMode, fold_cr3, mode_for
from . import listlayout
from .containers import shared_info
from .image import runs
from .mfns import Numbering, check_fits, foreign_base, foreign_mfns, place_pages
from .pagetables import PMD_SHIFT, PageTables
from .prng import Stream
from .segments import FOREIGN, IDENTITY, MISSING, OWN, Segments, guest_entries
from .spec import GuestSpec

#: list page kinds (and region kinds): a private page, or one of the shared frames
PAGE_PRIVATE, PAGE_MISSING, PAGE_IDENTITY = 0, 1, 2
#: rebuild types as bits, OR-ed over a page or a region
_T_MISSING, _T_IDENTITY, _T_PFN = 1, 2, 4

#: pfns per chunk when the list is produced piecewise (2 MiB of 8-byte words)
CHUNK_PFNS = 1 << 18
#: own pfns a ``shuffled`` numbering may permute (its index is held: 2 bytes an own pfn)
SHUFFLE_LIMIT = 1 << 27
#: foreign pfns a list guest may have (their MFNs are held)
FOREIGN_LIMIT = 1 << 24

#: names of the four shared frames, in placement order
SHARED_FRAMES = ("p2m_missing", "p2m_identity", "p2m_missing_pte", "p2m_identity_pte")

#: the other kernel mappings: pages just before and after the list (same
#: page tables) and a separate region (the kernel image)
NEIGHBOUR_PAGES = 4
KERNEL_PAGES = 16
KERNEL_VADDR = {8: 0xFFFFFFFF81000000, 4: 0xC0100000}


@dataclass
class ListGuest:
    """A list guest shaped as Linux shapes it and placed in machine frames.

    Holds one byte and one MFN per list page and the page-table pages; the
    list's words are computed on demand (:meth:`words`, :meth:`memory_chunks`).
    """

    spec: GuestSpec
    layout: Layout
    mode: PagingMode
    segments: Segments
    #: where the list starts and how many pfns it holds (xen_p2m_size)
    vaddr: int
    list_pfns: int
    #: the initial array: pfns at or past it were IDENTITY at rebuild time
    init_pfns: int
    #: per list page: PAGE_PRIVATE / PAGE_MISSING / PAGE_IDENTITY
    page_kind: np.ndarray
    #: per list page: the MFN its PTE maps
    page_mfn: np.ndarray
    #: per mid region: PAGE_MISSING / PAGE_IDENTITY when rebuilt as a whole, else 0
    region_kind: np.ndarray
    #: per PMD of the list range (first: the one holding vaddr): the MFN of the
    #: level-1 page its entry names (private, or a shared PTE page)
    pmd_table: np.ndarray
    #: MFNs of the shared frames (:data:`SHARED_FRAMES`)
    placeholders: dict
    root_mfn: int
    #: MFN -> 512 uint64 entries of every private page-table page
    tables: dict
    #: other mappings: {"name", "vaddr", "pages", "mfns"}
    windows: list
    #: MFNs of the own pfns by rank, and of the foreign pfns by rank
    numbering: Numbering
    foreign: np.ndarray
    #: MFNs of every structure page (shared frames, tables, tree, other
    #: frames, private list pages), in placement order
    meta_mfns: np.ndarray
    #: the machine frame of the guest's shared_info page (a Xen page, not a
    #: guest page: in a host image, never mapped by a pfn)
    shared_info_mfn: int
    #: ``both``: the MFN tree over the list (None for ``list``)
    top_mfn: int | None = None
    top: np.ndarray | None = None
    mids: dict = field(default_factory=dict)
    mid_missing: int | None = None
    #: pfns remapped to other MFNs (sorted pfns, their MFNs): see
    #: :meth:`with_pages_as_guest_pages`
    override_pfns: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint64))
    override_mfns: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint64))
    notes: list = field(default_factory=list)
    _meta_sorted: np.ndarray | None = field(default=None, repr=False)

    # -- what the guest publishes ---------------------------------------------
    @property
    def max_pfn(self) -> int:
        return self.spec.max_pfn

    @property
    def representation(self) -> str:
        return self.spec.representation

    @property
    def p2m_cr3(self) -> int:
        """shared_info arch.p2m_cr3: the root table's MFN, folded as in cr3."""
        return fold_cr3(self.root_mfn, self.layout.word_size)

    @property
    def fll(self) -> int:
        """shared_info arch.pfn_to_mfn_frame_list_list: ~0 for a list-only
        guest (SIF_VIRT_P2M_4TOOLS), the top MFN of the tree with ``both``."""
        return self.layout.word_mask if self.top_mfn is None else self.top_mfn

    def shared_info_page(self) -> bytes:
        """The 4096 bytes of the shared_info frame: ``arch`` as the guest
        publishes it (reference section 3.3), everything else zero."""
        return shared_info(self.layout.word_size, max_pfn=self.max_pfn,
                           pfn_to_mfn_frame_list_list=self.fll, p2m_cr3=self.p2m_cr3,
                           p2m_vaddr=self.vaddr, p2m_generation=self.spec.p2m_generation)

    def host_frames(self):
        """(MFN, 4096 bytes or words) of the frames a host image holds besides
        the private list pages and data: every structure page and shared_info."""
        yield self.shared_info_mfn, np.frombuffer(self.shared_info_page(), dtype=np.uint8)
        yield from self.small_pages()

    @property
    def private_pages(self) -> np.ndarray:
        """Indices of the private list pages, ascending."""
        return np.flatnonzero(self.page_kind == PAGE_PRIVATE)

    @property
    def list_placeholders(self) -> dict:
        return {name: int(self.placeholders[name]) for name in SHARED_FRAMES}

    @property
    def tree_placeholders(self) -> dict:
        """``both``: the tree's placeholders, named as a tree guest's sidecar names them."""
        return {"mid_missing": self.mid_missing, "leaf_missing": self.placeholders["p2m_missing"],
                "leaf_identity": self.placeholders["p2m_identity"]}

    # -- words --------------------------------------------------------------------
    def entries(self, a: int, b: int) -> np.ndarray:
        """What the guest's p2m says for pfns [a, b) (identity entries kept)."""
        return guest_entries(self, a, b)

    def words(self, a: int, b: int) -> np.ndarray:
        """What memory holds at list slots [a, b): INVALID where a shared frame backs them."""
        out = self.entries(a, b)
        fpp = self.layout.per_page
        p0, p1 = a // fpp, -(-b // fpp)
        shared = np.repeat(self.page_kind[p0:p1] != PAGE_PRIVATE, fpp)[a - p0 * fpp:b - p0 * fpp]
        out[shared] = self.layout.invalid
        return out

    def memory_chunks(self, end: int, size: int = CHUNK_PFNS):
        """(a, b, words) for pfns [0, end) in chunks [a, b); words is None
        where the whole chunk reads INVALID."""
        fpp = self.layout.per_page
        for a in range(0, end, size):
            b = min(a + size, end)
            if (self.page_kind[a // fpp:-(-b // fpp)] == PAGE_PRIVATE).any():
                yield a, b, self.words(a, b)
            else:
                yield a, b, None

    def list_page_runs(self, pages: np.ndarray, batch: int = 512):
        """(page indices, their words as (k, per_page)) for runs of consecutive pages."""
        fpp = self.layout.per_page
        for s, e in runs(pages):
            for c in range(s, e, batch):
                d = min(c + batch, e)
                first = int(pages[c])
                yield pages[c:d], self.entries(first * fpp, (first + d - c) * fpp).reshape(-1, fpp)

    def own_frames(self, limit: int, batch: int = 1 << 16):
        """(pfns, MFNs) of the guest's own pfns below ``limit``, ascending, in batches."""
        for first, rank, count in self.segments.own_runs(limit):
            for c in range(0, count, batch):
                n = min(batch, count - c)
                pfns = np.arange(first + c, first + c + n, dtype=np.uint64)
                mfns = self.numbering.run(rank + c, n)
                if len(self.override_pfns):
                    lo, hi = np.searchsorted(self.override_pfns, [first + c, first + c + n])
                    mfns[(self.override_pfns[lo:hi] - pfns[0]).astype(np.int64)] = \
                        self.override_mfns[lo:hi]
                yield pfns, mfns

    # -- structure pages --------------------------------------------------------
    def small_pages(self):
        """(MFN, words) of every structure page but the private list pages:
        shared frames, page tables, tree pages, other mapped frames."""
        L = self.layout
        fpp = L.per_page
        ph = self.placeholders
        invalid = np.full(fpp, L.invalid, dtype=L.numpy_dtype)
        yield ph["p2m_missing"], invalid
        yield ph["p2m_identity"], invalid
        for name, target in (("p2m_missing_pte", "p2m_missing"),
                             ("p2m_identity_pte", "p2m_identity")):
            yield ph[name], np.full(PTES_PER_PAGE, (ph[target] << PAGE_SHIFT) | PAGE_KERNEL_RO,
                                    dtype=np.uint64)
        yield from self.tables.items()
        if self.top_mfn is not None:
            yield self.mid_missing, np.full(fpp, ph["p2m_missing"], dtype=L.numpy_dtype)
            yield self.top_mfn, self.top
            yield from self.mids.items()
        for w in self.windows:
            for i, mfn in enumerate(w["mfns"]):
                yield mfn, other_frame_words(L, w["vaddr"] + i * PAGE_SIZE)

    def is_meta(self, mfns: np.ndarray) -> np.ndarray:
        """Which of ``mfns`` are structure pages."""
        if self._meta_sorted is None:
            self._meta_sorted = np.sort(self.meta_mfns)
        srt = self._meta_sorted
        j = np.minimum(np.searchsorted(srt, mfns), len(srt) - 1)
        return srt[j] == mfns

    def page_words(self, mfns: np.ndarray) -> dict:
        """MFN -> words of those of ``mfns`` that are structure pages."""
        mfns = np.asarray(mfns, dtype=np.uint64)
        hit = mfns[self.is_meta(mfns)]
        out: dict[int, np.ndarray] = {}
        if not len(hit):
            return out
        want = set(hit.tolist())
        for mfn, words in self.small_pages():
            if int(mfn) in want:
                out[int(mfn)] = words
        priv = self.private_pages
        for pages, words in self.list_page_runs(priv[np.isin(self.page_mfn[priv], hit)]):
            out.update(zip(self.page_mfn[pages].tolist(), words))
        return out

    def frame_count(self) -> int:
        """Frames a raw image of the guest needs (highest written MFN + 1)."""
        top = max(int(self.meta_mfns.max()), self.shared_info_mfn)
        if self.spec.data and self.segments.n_own:
            if not len(self.override_pfns):
                top = max(top, self.numbering.end - 1)
            else:
                for _, mfns in self.own_frames(self.list_pfns):
                    top = max(top, int(mfns.max()))
        return top + 1

    @property
    def counts(self) -> dict:
        """How many structure pages of each sort the guest has."""
        return {"meta_pages": len(self.meta_mfns), "table_pages": len(self.tables),
                "list_pages": int(np.count_nonzero(self.page_kind == PAGE_PRIVATE)),
                "tree_pages": 0 if self.top_mfn is None else 2 + len(self.mids)}

    # -- xc-core: structure pages as guest pages ----------------------------------
    def with_pages_as_guest_pages(self, limit: int | None = None) -> tuple["ListGuest", np.ndarray]:
        """A copy whose highest own pfns below ``limit`` (default max_pfn) map
        the structure pages, as a real guest's list and page tables are
        guest pages.  Returns (new guest, the remapped pfns, ascending)."""
        limit = self.max_pfn if limit is None else limit
        mfns = np.sort(self.meta_mfns)
        chosen = self.segments.last_own(limit, len(mfns))
        if len(chosen) < len(mfns):
            raise SpecError(f"an xc-core dump needs at least {len(mfns)} own pfns below "
                            f"{limit:#x} to hold the {len(mfns)} structure pages as guest "
                            f"pages; the spec has {len(chosen)}")
        new = replace(self, override_pfns=chosen, override_mfns=mfns,
                      notes=list(self.notes) + [
                          f"pfns {int(chosen[0]):#x}-{int(chosen[-1]):#x} hold the "
                          f"{len(mfns)} list, page-table and shared pages"])
        return new, chosen


def other_frame_words(layout: Layout, vaddr: int) -> np.ndarray:
    """Content of an other-mapping frame: words that look like MFNs (so a walker
    that takes it for a list page reads plausible, wrong numbers)."""
    base = (vaddr >> PAGE_SHIFT) & 0xFFFFF
    return (np.arange(layout.per_page, dtype=np.uint64) + np.uint64(base << 8)).astype(
        layout.numpy_dtype)


# -- building --------------------------------------------------------------------------

def _page_types(seg: Segments, init_pfns: int, n_pages: int, fpp: int) -> np.ndarray:
    """Per list page: the OR of the rebuild type bits of its pfns."""
    flags = np.zeros(n_pages, dtype=np.uint8)
    bit = {MISSING: _T_MISSING, IDENTITY: _T_IDENTITY, OWN: _T_PFN, FOREIGN: _T_PFN}
    for s, e, cls in zip(seg.starts.tolist(), seg.ends.tolist(), seg.classes.tolist()):
        if s < init_pfns:
            m = min(e, init_pfns)
            flags[s // fpp:-(-m // fpp)] |= bit[cls]
        if e > init_pfns:
            m = max(s, init_pfns)
            flags[m // fpp:-(-e // fpp)] |= _T_IDENTITY
    return flags


def _rebuild(seg: Segments, max_pfn: int, n_pages: int, n_regions: int, fpp: int):
    """xen_rebuild_p2m_list's decisions: (initial array size, kind per list
    page, kind per mid region rebuilt as a whole or 0)."""
    init_pfns = -(-max(max_pfn, seg.last_end(OWN, FOREIGN)) // fpp) * fpp
    flags = _page_types(seg, init_pfns, n_pages, fpp)
    regions = np.bitwise_or.reduce(flags.reshape(n_regions, n_pages // n_regions), axis=1)
    return init_pfns, _kind(flags), _kind(regions)


def _pmd_kinds(region_kind: np.ndarray, vaddr: int, n_pages: int, pages_per_region: int):
    """Per PMD of the list range: the shared PTE page's kind, or 0 for a private table.

    A PMD points at a shared PTE page when it lies inside the list and all
    its pages belong to regions rebuilt whole, of one kind (with the list
    starting a PMD, exactly the PMDs of such regions)."""
    off = (vaddr >> PAGE_SHIFT) % PTES_PER_PAGE
    n_pmds = -(-(off + n_pages) // PTES_PER_PAGE)
    per_page = np.zeros(n_pmds * PTES_PER_PAGE, dtype=np.uint8)
    per_page[off:off + n_pages] = np.repeat(region_kind, pages_per_region)
    per_pmd = per_page.reshape(n_pmds, PTES_PER_PAGE)
    return np.where(per_pmd.min(axis=1) == per_pmd.max(axis=1), per_pmd[:, 0], 0)


def _kind(flags: np.ndarray) -> np.ndarray:
    """PAGE_MISSING / PAGE_IDENTITY where one non-PFN type alone, else PAGE_PRIVATE."""
    return np.where((flags == _T_MISSING) | (flags == _T_IDENTITY), flags, 0).astype(np.uint8)


def _windows(spec: GuestSpec, vaddr: int, nbytes: int) -> list:
    """The other mappings that fit: each a valid range clear of the list and of each other."""
    if not spec.other_mappings:
        return []
    ws = spec.word_size
    end = vaddr + nbytes
    wanted = [("before", vaddr - NEIGHBOUR_PAGES * PAGE_SIZE, NEIGHBOUR_PAGES),
              ("after", end, NEIGHBOUR_PAGES),
              ("kernel", KERNEL_VADDR[ws], KERNEL_PAGES)]
    out: list[dict[str, Any]] = []
    for name, start, pages in wanted:
        size = pages * PAGE_SIZE
        taken = [(vaddr, end)] + [(w["vaddr"], w["vaddr"] + w["pages"] * PAGE_SIZE)
                                  for w in out]
        if listlayout.vaddr_problem(ws, start, size) is None and all(
                start + size <= lo or start >= hi for lo, hi in taken):
            out.append({"name": name, "vaddr": start, "pages": pages})
    return out


def build_list(spec: GuestSpec) -> ListGuest:
    """Shape ``spec`` (representation ``list`` or ``both``) as Linux does and place it."""
    if spec.representation not in ("list", "both"):
        raise SpecError(f"build_list needs a list or both guest, not {spec.representation!r}")
    L = layout_for(spec.word_size)
    mode = mode_for(spec.word_size)
    fpp = L.per_page
    rng = Stream(spec.seed)
    list_pfns = spec.list_pfns
    vaddr = spec.list_vaddr
    region = listlayout.region_pfns(spec.word_size)
    n_pages, n_regions = list_pfns // fpp, list_pfns // region
    seg = Segments(spec, list_pfns)

    init_pfns, page_kind, region_kind = _rebuild(seg, spec.max_pfn, n_pages, n_regions, fpp)
    pmd_kind = _pmd_kinds(region_kind, vaddr, n_pages, region // fpp)
    pmd0 = vaddr >> PMD_SHIFT

    pt = PageTables(mode)
    for j, kind in enumerate(pmd_kind.tolist()):
        if kind == PAGE_MISSING:
            pt.add_shared(pmd0 + j, "p2m_missing_pte")
        elif kind == PAGE_IDENTITY:
            pt.add_shared(pmd0 + j, "p2m_identity_pte")
        else:
            pt.add_l1(pmd0 + j)
    windows = _windows(spec, vaddr, list_pfns * spec.word_size)
    for w in windows:
        for p in range(w["pages"]):
            pt.add_l1((w["vaddr"] + p * PAGE_SIZE) >> PMD_SHIFT)

    # -- placement ----------------------------------------------------------------
    table_keys = pt.table_keys()
    both = spec.representation == "both"
    # both: p2m_mid_missing_mfn, p2m_top_mfn and a mid page per region not rebuilt whole
    tree_regions = np.flatnonzero(region_kind == 0) if both else np.zeros(0, np.int64)
    n_tree = 2 + len(tree_regions) if both else 0
    n_other = sum(w["pages"] for w in windows)
    private = np.flatnonzero(page_kind == PAGE_PRIVATE)
    n_meta = len(SHARED_FRAMES) + len(table_keys) + n_tree + n_other + len(private)
    n_own = seg.n_own
    if spec.mfn_order == "shuffled" and n_own > SHUFFLE_LIMIT:
        raise SpecError(f"mfn_order 'shuffled' permutes every own pfn in memory; at most "
                        f"{SHUFFLE_LIMIT:#x} are allowed (the spec has {n_own:#x}): use "
                        "'chunked'")
    if seg.n_foreign > FOREIGN_LIMIT:
        raise SpecError(f"at most {FOREIGN_LIMIT:#x} foreign pfns are allowed "
                        f"(the spec has {seg.n_foreign:#x})")
    # one more frame, first: the shared_info page
    placed, base, data_end = place_pages(spec, n_meta + 1, n_own, rng,
                                         shuffle_tail=len(private))
    shared_info_mfn, meta = int(placed[0]), placed[1:]
    it = iter(meta.tolist())
    placeholders = {name: next(it) for name in SHARED_FRAMES}
    mfn_of = {key: next(it) for key in table_keys}
    mid_missing = top_mfn = None
    mid_of_region = {}
    if both:
        mid_missing, top_mfn = next(it), next(it)
        mid_of_region = {int(t): next(it) for t in tree_regions}
    for w in windows:
        w["mfns"] = [next(it) for _ in range(w["pages"])]
    page_mfn = np.zeros(n_pages, dtype=np.uint64)
    page_mfn[page_kind == PAGE_MISSING] = placeholders["p2m_missing"]
    page_mfn[page_kind == PAGE_IDENTITY] = placeholders["p2m_identity"]
    page_mfn[private] = meta[len(meta) - len(private):]

    numbering = Numbering(spec.mfn_order, n_own, base, rng)
    if n_own:
        check_fits(L, data_end - 1, "guest MFNs")
    foreign = np.zeros(0, dtype=np.uint64)
    if seg.n_foreign:
        foreign = foreign_mfns(seg.n_foreign, foreign_base(data_end, int(placed.max())), rng)
        check_fits(L, int(foreign.max()), "foreign MFNs")

    # -- page tables ----------------------------------------------------------------
    list_end = vaddr + n_pages * PAGE_SIZE

    def l1_entries(pmd: int) -> np.ndarray:
        out = np.zeros(PTES_PER_PAGE, dtype=np.uint64)
        lo = pmd << PMD_SHIFT
        a, b = max(lo, vaddr), min(lo + (1 << PMD_SHIFT), list_end)
        if a < b:
            pages = np.arange((a - vaddr) >> PAGE_SHIFT, (b - vaddr) >> PAGE_SHIFT)
            prot = np.where(page_kind[pages] == PAGE_PRIVATE, np.uint64(PAGE_KERNEL),
                            np.uint64(PAGE_KERNEL_RO))
            first = (a - lo) >> PAGE_SHIFT
            out[first:first + len(pages)] = (page_mfn[pages] << np.uint64(PAGE_SHIFT)) | prot
        for w in windows:
            for i, mfn in enumerate(w["mfns"]):
                v = w["vaddr"] + i * PAGE_SIZE
                if v >> PMD_SHIFT == pmd:
                    out[mode.index(v, 1)] = (mfn << PAGE_SHIFT) | PAGE_KERNEL
        return out

    tables = pt.build(mfn_of, placeholders, l1_entries)
    pmd_table = np.array([
        placeholders["p2m_missing_pte"] if k == PAGE_MISSING else
        placeholders["p2m_identity_pte"] if k == PAGE_IDENTITY else mfn_of[(1, pmd0 + j)]
        for j, k in enumerate(pmd_kind.tolist())], dtype=np.uint64)

    # -- both: the MFN tree over the list ----------------------------------------------
    top = None
    mids = {}
    if both:
        dtype = np.dtype(L.numpy_dtype)
        top = np.full(fpp, mid_missing, dtype=dtype)
        for t, mfn in mid_of_region.items():
            top[t] = mfn
            mids[mfn] = page_mfn[t * fpp:(t + 1) * fpp].astype(dtype)

    return ListGuest(
        spec=spec, layout=L, mode=mode, segments=seg, vaddr=vaddr, list_pfns=list_pfns,
        init_pfns=init_pfns, page_kind=page_kind, page_mfn=page_mfn, region_kind=region_kind,
        pmd_table=pmd_table, placeholders=placeholders, root_mfn=mfn_of[table_keys[0]],
        tables=tables, windows=windows, numbering=numbering, foreign=foreign, meta_mfns=meta,
        shared_info_mfn=shared_info_mfn,
        top_mfn=top_mfn, top=top, mids=mids, mid_missing=mid_missing)
