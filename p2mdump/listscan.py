"""Find guests that publish a linear p2m list, by their shared_info page.

A PV guest's shared_info page is a machine frame like any other, so a host's
memory image holds it, and it can be recognised without knowing where it
is.  At the guest-width offset of ``struct arch_shared_info`` (3088 on
64-bit guests, 2316 on 32-bit; reference section 4.2) a guest that
publishes its list (Linux 3.19+ on Xen 4.6+, reference section 3.3) holds:

* ``max_pfn``: more than 0, at most what a list can hold;
* ``pfn_to_mfn_frame_list_list``: ~0 (the tools understand the list,
  SIF_VIRT_P2M_4TOOLS), the MFN of the tree Linux builds over the list (a
  guest booted without the flag, dom0), or 0 (not set up);
* ``p2m_cr3``: the folded cr3 of its top page table, a frame of the image;
* ``p2m_vaddr``: page aligned, where a kernel maps it (64-bit: the upper
  half, above the range Xen keeps; 32-bit: below Xen's range at
  0xF5800000), with room for the whole list;
* ``p2m_generation``: small, even (odd: caught mid-update; still a
  candidate, with a note).

Three steps, each bounded whatever the image holds:

1. **Bulk** (:class:`SharedInfoFilter`, fed block by block by the scan's one
   sequential pass): the six words at that offset of every page of a block
   are tested with numpy at once.  Pages that pass are kept, at most
   :data:`MAX_HITS` a word size.
2. **Top table** (:func:`root_evidence`): the frame p2m_cr3 names must read
   as the guest's top page table: its present entries name frames of the
   image (PAE: only the 4 entries of its first 32 bytes count, and no
   reserved bit may be set), and the entry covering p2m_vaddr is present.
   At most :data:`MAX_ROOT_CHECKS` distinct candidates a word size are read.
3. **Trial walk** (:func:`trial_list`): at most :data:`TRIAL_PAGES` of the
   list's pages, spread over it (the first included), are translated through
   the page tables and decoded with their pfns known, as the tree scan
   decodes leaves; frames that back several sampled pages must be
   all-INVALID placeholders.  Confirmed candidates whose table is at most
   ``full_walk_bytes`` are then walked in full
   (:func:`p2mdump.listwalk.walk_list`) for their counts; larger ones keep
   the sampled evidence, and the walk command does the rest.

No count read from a page sizes anything before it is checked: max_pfn is
bounded by the list limits in the bulk test, and only the bounded sample
and the size-capped full walk depend on it.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from typing import Any

import numpy as np

from .errors import P2MDumpError
from .layout import PAGE_SHIFT, PAGE_SIZE, layout_for
from .listwalk import MAX_LIST_PFNS, walk_list
from .paging import HYPERVISOR_HOLE, PDPTE_RESERVED, mode_for, unfold_cr3
from .pagetable import PTE_DTYPE, PageTableWalker, pte_frames, pte_present
from .scan import MIN_QUALITY, PageCache, has_frames, sample_quality
from .schemas.xen_core import ARCH_FIELDS, ARCH_SHARED_INFO_OFFSET

#: shared_info-like pages kept by the bulk pass, per word size
MAX_HITS = 4096
#: distinct candidates whose top table is read, per word size
MAX_ROOT_CHECKS = 256
#: candidates given a trial walk, per word size
MAX_LIST_TRIALS = 24
#: list pages translated and decoded per trial walk
TRIAL_PAGES = 48
#: a generation at or above this is not "small" (it grows by 2 per change
#: of the list's mapping)
MAX_GENERATION = 1 << 31
#: largest table (bytes) a confirmed candidate is walked in full for (2^25
#: pfns of a 64-bit guest: 128 GiB of guest memory)
FULL_WALK_BYTES = 256 << 20
#: a trial confirms a list when this share of the sampled pages is mapped
#: (and the sampled entries decode as well as a tree's leaves must,
#: :data:`p2mdump.scan.MIN_QUALITY`)
MIN_MAPPED = 0.75
#: ... and the top table's present entries name frames of the image this often
MIN_ROOT = 0.9

_PAGE_MASK = np.uint64(PAGE_SIZE - 1)


@dataclass
class ListCandidate:
    """A guest found by its shared_info page, and what its list looked like."""

    #: MFN of the shared_info page (None: named by the container's own shared_info)
    shared_info_mfn: int | None
    word_size: int
    p2m_cr3: int
    root_mfn: int
    p2m_vaddr: int
    p2m_generation: int
    #: shared_info arch.max_pfn: the number of pfns, what the walk needs
    max_pfn: int
    #: shared_info arch.pfn_to_mfn_frame_list_list as published
    frame_list_list: int
    paging: str
    score: float = 0.0
    #: pfns that map something (None when the list was too large to walk in full)
    pfns_mapped: int | None = None
    counts: dict = field(default_factory=dict)
    list_placeholders: list = field(default_factory=list)
    shared_pte_pages: list = field(default_factory=list)
    #: what the trial walk saw (fractions in 0..1, pages sampled, entries seen)
    evidence: dict = field(default_factory=dict)
    warnings: int = 0
    notes: list = field(default_factory=list)
    #: the tree over the list (FLL when it names a frame: a ``both`` guest)
    tree_top_mfn: int | None = None
    #: whether the scan confirmed that tree too
    tree_found: bool = False
    #: other frames holding the same shared_info fields
    copies: list = field(default_factory=list)
    representation: str = "list"

    def walk_args(self) -> list[str]:
        """The options of ``p2mdump walk`` that name this list."""
        return ["--p2m-cr3", f"{self.p2m_cr3:#x}", "--p2m-vaddr", f"{self.p2m_vaddr:#x}",
                "--max-pfn", f"{self.max_pfn:#x}", "--word-size", str(self.word_size)]

    def to_dict(self) -> dict:
        return asdict(self)


# -- step 1: the bulk test ------------------------------------------------------------

def arch_words(pages: np.ndarray, word_size: int) -> np.ndarray:
    """The six ``arch_shared_info`` words (:data:`ARCH_FIELDS` order) of every
    page of ``pages`` (uint8, whole pages), as a (pages, 6) view in the guest's
    word type.  Agrees with :func:`p2mdump.schemas.xen_core.shared_info_page`
    (a test checks it)."""
    L = layout_for(word_size)
    words = pages.view(L.numpy_dtype).reshape(-1, L.per_page)
    first = ARCH_SHARED_INFO_OFFSET[word_size] // word_size
    return words[:, first:first + len(ARCH_FIELDS)]


def plausible_arch(fields: np.ndarray, word_size: int, limit: int) -> np.ndarray:
    """Per row of ``fields`` ((k, 6) arch words as uint64): whether it reads
    like a list guest's arch_shared_info in an image of ``limit`` frames."""
    L = layout_for(word_size)
    u = np.uint64
    max_pfn, fll, _nmi, cr3, vaddr, gen = (fields[:, i] for i in range(len(ARCH_FIELDS)))
    lim1 = u(max(limit - 1, 0))
    in_image = (lambda m: (m - u(1)) < lim1)      # 1 <= m < limit (wraps for 0)
    ok = (max_pfn - u(1)) < u(MAX_LIST_PFNS[word_size])
    ok &= (fll == u(L.word_mask)) | (fll == u(0)) | in_image(fll)
    if word_size == 8:
        ok &= ((cr3 & _PAGE_MASK) == 0) & in_image(cr3 >> u(PAGE_SHIFT))
    else:
        ok &= (cr3 >> u(32)) == 0       # Xen's save code refuses wider values too
        # unfold_cr3's shifts and masks work on uint64 arrays as on ints
        ok &= in_image(unfold_cr3(cr3 & u(L.word_mask), 4))  # type: ignore[arg-type]
    ok &= (vaddr & _PAGE_MASK) == 0
    span = (max_pfn + u(L.per_page - 1)) // u(L.per_page) << u(PAGE_SHIFT)
    if word_size == 8:
        # the upper half above Xen's range, and the list ends before 2^64
        ok &= (vaddr > u(HYPERVISOR_HOLE[8][1])) & ((span - u(1)) <= ~vaddr)
    else:
        ok &= (vaddr > 0) & (vaddr + span <= u(HYPERVISOR_HOLE[4][0]))
    ok &= gen < u(MAX_GENERATION)
    return ok


class SharedInfoFilter:
    """What the sequential pass learns about shared_info pages at one word size."""

    def __init__(self, word_size: int, limit: int):
        self.ws = word_size
        self.limit = limit
        self.max_pfn_cap = np.dtype(layout_for(word_size).numpy_dtype).type(
            MAX_LIST_PFNS[word_size])
        self.hits: list[np.ndarray] = []
        self.kept = 0
        self.dropped = 0

    def feed(self, block: np.ndarray, mfns: np.ndarray) -> None:
        """Test every page of ``block`` (whole frames; ``mfns``: the MFN of each)."""
        a = arch_words(block, self.ws)
        mp = a[:, 0]
        # the cheap first cut: max_pfn in [1, cap] (0 wraps to the top)
        rows = np.flatnonzero((mp - mp.dtype.type(1)) < self.max_pfn_cap)
        if not len(rows):
            return
        fields = a[rows].astype(np.uint64)
        ok = plausible_arch(fields, self.ws, self.limit)
        if not ok.any():
            return
        rows, fields = rows[ok], fields[ok]
        room = MAX_HITS - self.kept
        if len(rows) > room:
            self.dropped += len(rows) - room
            rows, fields = rows[:room], fields[:room]
        if len(rows):
            self.hits.append(np.column_stack([mfns[rows].astype(np.uint64), fields]))
            self.kept += len(rows)

    def candidates(self) -> list[dict]:
        """Distinct shared_info contents seen, in image order:
        {"shared_info_mfn", "copies", and the arch fields}."""
        if not self.hits:
            return []
        h = np.concatenate(self.hits)
        # one candidate per distinct (max_pfn, fll, cr3, vaddr, generation)
        key = h[:, [1, 2, 4, 5, 6]]
        _, first, inverse, counts = np.unique(key, axis=0, return_index=True,
                                              return_inverse=True, return_counts=True)
        # rows grouped by candidate, each group in image order
        grouped = np.argsort(inverse.reshape(-1), kind="stable")
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        out = []
        for g in np.argsort(first, kind="stable").tolist():
            rows = grouped[starts[g]:starts[g] + counts[g]]
            r = h[rows[0]]
            d: dict[str, Any] = {name: int(r[1 + i]) for i, name in enumerate(ARCH_FIELDS)}
            d["shared_info_mfn"] = int(r[0])
            d["copies"] = [int(m) for m in h[rows[1:], 0]]
            out.append(d)
        return out


# -- step 2: the top table ------------------------------------------------------------

def _xen_slots(mode) -> slice:
    """Top-table entries that map the range Xen keeps for itself: in every
    64-bit PV guest's top table Xen fills them with its own tables, frames a
    guest-only dump does not hold.  (On PAE that range shares the kernel's
    last entry: nothing to leave out.)"""
    if mode.word_size == 4:
        return slice(0, 0)
    lo, hi = mode.hypervisor_hole()
    return slice(mode.index(lo, mode.levels), mode.index(hi, mode.levels) + 1)


def root_evidence(words: np.ndarray | None, mode, vaddr: int, source) -> tuple[bool, float]:
    """(plausible, share of present entries naming frames of the image) of the
    top page table ``words`` (512 ``<u8``) for a list at ``vaddr``.  Xen's own
    entries do not count; the entry covering ``vaddr`` must be present and
    name a frame of the image."""
    if words is None:
        return False, 0.0
    entries = words[:mode.top_entries]
    if mode.word_size == 4 and np.any(entries & np.uint64(PDPTE_RESERVED)):
        return False, 0.0
    present = pte_present(entries)
    present[_xen_slots(mode)] = False
    if not present.any():
        return False, 0.0
    frames = pte_frames(entries)
    in_img = has_frames(source, frames[present])
    share = float(in_img.mean())
    idx = mode.index(vaddr, mode.levels)
    covers = bool(present[idx]) and bool(has_frames(source, frames[idx:idx + 1])[0])
    return covers and share >= MIN_ROOT, share


# -- step 3: the trial walk -----------------------------------------------------------

def trial_list(source, word_size: int, p2m_cr3: int, p2m_vaddr: int, max_pfn: int,
               pages: PageCache | None = None) -> dict:
    """Light check of the list named by (p2m_cr3, p2m_vaddr, max_pfn): the top
    table, then a sample of list pages through the page tables.  Returns the
    evidence, with ``confirmed`` and ``score`` (0..100)."""
    L = layout_for(word_size)
    mode = mode_for(word_size)
    fpp = L.per_page
    ev: dict[str, Any] = {"root_ptr": 0.0, "mapped": 0.0, "leaf_quality": 0.0,
                          "placeholders": 0.0, "pages_sampled": 0, "entries": 0,
                          "confirmed": False, "score": 0.0}
    root = unfold_cr3(p2m_cr3, word_size)
    try:
        walker = PageTableWalker(source, root, mode)
    except P2MDumpError:
        return ev
    plausible, ev["root_ptr"] = root_evidence(walker.entries(root), mode, p2m_vaddr, source)
    if not plausible:
        return ev
    n_pages = L.leaves_for(max_pfn)
    sample = np.unique(np.linspace(0, n_pages - 1, min(TRIAL_PAGES, n_pages)).astype(np.int64))
    ev["pages_sampled"] = len(sample)
    mfn_of: dict[int, int] = {}
    for i in sample.tolist():
        try:
            t = walker.translate(p2m_vaddr + i * PAGE_SIZE)
        except P2MDumpError:       # not an address of this paging mode
            return ev
        if t.mfn is not None and t.frame_in_image and t.mfn > 0:
            mfn_of[i] = t.mfn
    ev["mapped"] = len(mfn_of) / len(sample)
    if ev["mapped"] < MIN_MAPPED:
        return ev
    pages = pages or PageCache(source)
    uses: dict[int, int] = {}
    for mfn in mfn_of.values():
        uses[mfn] = uses.get(mfn, 0) + 1
    # frames backing several sampled pages: p2m_missing / p2m_identity, all INVALID
    ph_ok = []
    for m in (m for m, n in uses.items() if n > 1):
        data = pages.get(m)
        w = None if data is None else np.frombuffer(data, dtype=L.numpy_dtype)
        ph_ok.append(w is not None and bool(np.all(w == w.dtype.type(L.invalid))))
    ev["placeholders"] = float(np.mean(ph_ok)) if ph_ok else 1.0
    ev["leaf_quality"], ev["entries"], ev["distinct"] = sample_quality(
        ((pages.get(mfn), i * fpp) for i, mfn in mfn_of.items() if uses[mfn] == 1), L)
    ev["score"] = round(100 * (0.15 * ev["root_ptr"] + 0.25 * ev["mapped"]
                               + 0.5 * ev["leaf_quality"] + 0.1 * ev["placeholders"]), 2)
    ev["confirmed"] = bool(ev["entries"] > 0 and ev["leaf_quality"] >= MIN_QUALITY)
    return ev


# -- the whole search -----------------------------------------------------------------

def _priority(c: dict, word_size: int) -> tuple:
    """Cheap order of the bulk hits before any frame is read: published FLL
    ~0 first (what a modern domU writes), then even generations."""
    L = layout_for(word_size)
    return (c["pfn_to_mfn_frame_list_list"] != L.word_mask, c["p2m_generation"] & 1,
            c["nmi_reason"] != 0)


def _notes(c: ListCandidate, layout) -> list[str]:
    notes = []
    if c.p2m_generation & 1:
        notes.append(f"p2m_generation {c.p2m_generation} is odd: the dump caught the guest "
                     "changing its list mapping; entries may be inconsistent")
    if c.frame_list_list == 0:
        notes.append("pfn_to_mfn_frame_list_list is 0: the guest had not set up its tree")
    elif c.frame_list_list != layout.word_mask:
        notes.append(f"pfn_to_mfn_frame_list_list names a tree too (top MFN "
                     f"{c.frame_list_list:#x}): a guest booted without SIF_VIRT_P2M_4TOOLS "
                     "or dom0")
    if c.copies:
        notes.append(f"{len(c.copies)} other frame(s) hold the same shared_info fields "
                     f"(first: MFN {c.copies[0]:#x})")
    return notes


def _walk_in_full(source, c: ListCandidate, full_walk_bytes: int) -> None:
    """Counts of a confirmed candidate from a full walk, when its table is small enough."""
    L = layout_for(c.word_size)
    table_bytes = L.leaves_for(c.max_pfn) * PAGE_SIZE
    c.evidence["full_walk"] = table_bytes <= full_walk_bytes
    if not c.evidence["full_walk"]:
        c.notes.append(f"a table of {c.max_pfn:#x} pfns ({table_bytes >> 20} MiB) is more than "
                       f"scan walks in full ({full_walk_bytes >> 20} MiB): counts left out, "
                       "run the walk command")
        return
    res = walk_list(source, c.p2m_cr3, c.p2m_vaddr, word_size=c.word_size,
                    max_pfn=c.max_pfn, generation=c.p2m_generation)
    c.counts = res.table.counts()
    c.pfns_mapped = c.counts["valid"] + c.counts["identity"] + c.counts["foreign"]
    c.warnings = len(res.warnings())
    info = res.list_info or {}      # a list walk always names its list
    c.list_placeholders = list(info.get("list_placeholders", []))
    c.shared_pte_pages = list(info.get("shared_pte_pages", []))


def _same_list(a: dict, b: dict) -> bool:
    return all(a[k] == b[k] for k in ("max_pfn", "p2m_cr3", "p2m_vaddr", "p2m_generation"))


def _container_candidate(source, word_size: int, limit: int) -> dict | None:
    """The list the container's own shared_info names (an xl dump-core file),
    when it passes the bulk test."""
    if getattr(source, "word_size_hint", None) != word_size:
        return None
    L = layout_for(word_size)
    fll = getattr(source, "top_mfn_hint", None)
    c = {"max_pfn": getattr(source, "max_pfn_hint", None),
         "pfn_to_mfn_frame_list_list": L.word_mask if fll is None else fll,
         "nmi_reason": 0, "p2m_cr3": getattr(source, "p2m_cr3_hint", None),
         "p2m_vaddr": getattr(source, "p2m_vaddr_hint", None),
         "p2m_generation": getattr(source, "p2m_generation_hint", None) or 0}
    values = [c[name] for name in ARCH_FIELDS]
    if not all(isinstance(v, int) and 0 <= v <= L.word_mask for v in values):
        return None
    if not plausible_arch(np.array([values], dtype=np.uint64), word_size, limit)[0]:
        return None
    c.update(shared_info_mfn=None, copies=[])
    return c


def find_lists(source, filters: list[SharedInfoFilter], *, max_trials: int = MAX_LIST_TRIALS,
               max_results: int = 8, full_walk_bytes: int = FULL_WALK_BYTES,
               stats=None) -> list[ListCandidate]:
    """The list guests whose shared_info pages the pass kept (and the one the
    container's own shared_info names), confirmed, best first."""
    confirmed = []
    for flt in filters:
        ws = flt.ws
        mode = mode_for(ws)
        if stats is not None:
            stats.shared_info_pages[ws] = flt.kept + flt.dropped
        cands = sorted(flt.candidates(), key=lambda c: _priority(c, ws))[:MAX_ROOT_CHECKS]
        hint = _container_candidate(source, ws, flt.limit)
        if hint is not None and not any(_same_list(hint, c) for c in cands):
            cands.insert(0, hint)
        pages = PageCache(source)
        ranked = []
        for c in cands:
            root = unfold_cr3(c["p2m_cr3"], ws)
            data = pages.get(root)
            words = None if data is None else np.frombuffer(data, dtype=PTE_DTYPE)
            plausible, share = root_evidence(words, mode, c["p2m_vaddr"], source)
            if plausible:      # the container's own shared_info first, then the best tops
                ranked.append((c["shared_info_mfn"] is not None, -share, _priority(c, ws), c))
        ranked.sort(key=lambda r: r[:3])
        for *_, c in ranked[:max_trials]:
            if stats is not None:
                stats.list_trials += 1
            ev = trial_list(source, ws, c["p2m_cr3"], c["p2m_vaddr"], c["max_pfn"], pages)
            if ev["confirmed"]:
                confirmed.append((ev, ws, c))
    confirmed.sort(key=lambda t: -t[0]["score"])
    found = []
    for ev, ws, c in confirmed[:max_results]:
        L = layout_for(ws)
        fll = c["pfn_to_mfn_frame_list_list"]
        cand = ListCandidate(
            shared_info_mfn=c["shared_info_mfn"], word_size=ws, p2m_cr3=c["p2m_cr3"],
            root_mfn=unfold_cr3(c["p2m_cr3"], ws), p2m_vaddr=c["p2m_vaddr"],
            p2m_generation=c["p2m_generation"], max_pfn=c["max_pfn"], frame_list_list=fll,
            paging=mode_for(ws).name, score=ev["score"],
            evidence={k: v for k, v in ev.items() if k not in ("confirmed", "score")},
            tree_top_mfn=None if fll in (0, L.word_mask) else fll, copies=c["copies"])
        cand.notes = _notes(cand, L)
        try:
            _walk_in_full(source, cand, full_walk_bytes)
        except P2MDumpError:
            continue
        if cand.pfns_mapped == 0:
            continue
        found.append(cand)
    found.sort(key=lambda c: (-c.score, -(c.pfns_mapped or 0), c.word_size == 4,
                              c.shared_info_mfn is not None, c.shared_info_mfn or 0))
    return found


def link_trees(trees: list, lists: list[ListCandidate]) -> None:
    """Mark the tree candidates a list guest's shared_info names as its FLL
    (a ``both`` guest), on both sides."""
    by_top = {(t.top_mfn, t.word_size): t for t in trees}
    for c in lists:
        t = by_top.get((c.tree_top_mfn, c.word_size))
        if t is not None:
            c.tree_found = True
            t.shared_info_mfn = c.shared_info_mfn

