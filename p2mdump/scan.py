"""Find p2m trees and linear p2m lists in an image without being told where they are.

Lists are found by their guest's shared_info page (:mod:`p2mdump.listscan`),
scored in bulk during the same sequential pass; trees by their pages, in
three stages, each bounded by the size of the image:

1. **One sequential pass** over the frames the image holds, gathered into
   large blocks (:mod:`p2mdump.imagepass`: holes of a sparse raw file are
   never read).  For each word size, every page is classified in bulk with
   numpy:

   * *leafish* — every word is INVALID, a plausible MFN, or a flagged entry
     (no zero word): what a leaf page looks like (a bit per frame);
   * *pointer page* — (nearly) every word names another frame of the image:
     what top and mid pages look like.  For these a few sample slots, the
     trailing repeat count and the last word are kept (a few dozen bytes a
     page, so even an image made only of plausible pages stays bounded).

   A cheap prefilter on 8 words a page drops most pages (zeros, text, random
   data, ordinary memory) before the full per-word tests.

2. **Structure.**  A mid page's sampled slots name leafish pages; a top page's
   sampled slots name pointer pages that look like mids.  This gives each
   pointer page a "top-likeness"; the best ones become candidates.

3. **Trial walk.**  Each candidate (at most ``max_trials`` per word size) is
   walked lightly: its top and mid pages are read, a sample of its leaves is
   decoded with their pfns known (identity entries must be
   ``pfn | IDENTITY_FRAME_BIT``, valid MFNs distinct within a leaf, no zero
   words), and the placeholders are checked (a mid placeholder whose every
   slot names one all-INVALID leaf).  Confirmed candidates are then walked
   in full (:func:`p2mdump.walker.walk`) for their max_pfn and counts.
   The tree a list guest's shared_info names (FLL: a ``both`` guest) is
   given a trial too, and the two are linked.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from .errors import P2MDumpError
from .imagepass import Progress, blocks, data_extents
from .layout import PAGE_SIZE, WORD_SIZES, layout_for

#: sampled pointer slots kept per pointer page
N_SAMPLES = 8
#: a page is a pointer page when at most per_page // BAD_DIV words are not pointers
BAD_DIV = 64
#: largest plausible MFN of a 64-bit guest (52-bit machine addresses)
MFN_MAX_64 = (1 << 40) - 1
#: candidates given a trial walk, per word size
MAX_TRIALS = 24
#: leaves decoded per trial walk
TRIAL_LEAVES = 48
#: confirmed candidates walked in full (the rest are dropped)
MAX_RESULTS = 8
#: leaf pages named by several slots that a tree may have (its placeholders)
MAX_SHARED_LEAVES = 8
#: a candidate must reach this top-likeness to get a trial walk
MIN_TOPLIKE = 0.6
#: a trial confirms a candidate when its sampled leaves decode this well
MIN_QUALITY = 0.8


@dataclass
class ScanCandidate:
    top_mfn: int
    word_size: int
    max_pfn: int
    score: float
    pfns_mapped: int
    counts: dict = field(default_factory=dict)
    mid_placeholder: int | None = None
    leaf_placeholders: list = field(default_factory=list)
    #: what the trial walk saw (fractions in 0..1)
    evidence: dict = field(default_factory=dict)
    warnings: int = 0
    #: a list guest's shared_info page that names this tree as its FLL
    #: (a ``both`` guest), when the scan found one
    shared_info_mfn: int | None = None
    representation: str = "tree"

    def walk_args(self) -> list[str]:
        """The options of ``p2mdump walk`` that name this tree."""
        return ["--top-mfn", f"{self.top_mfn:#x}", "--word-size", str(self.word_size)]

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class ScanStats:
    bytes_scanned: int = 0
    pages_scanned: int = 0
    pointer_pages: dict = field(default_factory=dict)
    candidates: dict = field(default_factory=dict)
    trials: int = 0
    #: pages whose arch_shared_info words passed the bulk test, by word size
    shared_info_pages: dict = field(default_factory=dict)
    list_trials: int = 0


# -- stage 1: the sequential pass ------------------------------------------------

class _Bitmap:
    """One bit per frame the pass reads (packed, big-endian bit order).

    Frames are numbered by their position in ``extents`` (sorted (first MFN,
    count) runs of frames with data in the file), so the bitmap is sized by
    what the image holds, never by an address read from it: a PT_LOAD or a
    .xen_p2m gmfn near the top of the machine address space costs nothing."""

    def __init__(self, extents):
        ext = np.asarray(extents, dtype=np.int64).reshape(-1, 2)
        self.starts = ext[:, 0]
        counts = ext[:, 1]
        self.ends = self.starts + counts
        self.base = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64) \
            if len(counts) else np.zeros(0, dtype=np.int64)
        total = int(counts.sum()) if len(counts) else 0
        self.bits = np.zeros((total + 7) // 8 + 1, dtype=np.uint8)

    def _ordinals(self, mfns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(whether each MFN lies in an extent, its position in the bitmap)."""
        m = np.asarray(mfns).astype(np.uint64)
        ok = m < np.uint64(1 << 62)
        m = np.where(ok, m, 0).astype(np.int64)
        i = np.searchsorted(self.starts, m, side="right") - 1
        ic = np.maximum(i, 0)
        if len(self.starts):
            ok &= (i >= 0) & (m < self.ends[ic])
            pos = np.where(ok, m - self.starts[ic] + self.base[ic], 0)
        else:
            ok &= False
            pos = np.zeros(len(m), dtype=np.int64)
        return ok, pos

    def set(self, mfns: np.ndarray) -> None:
        if len(mfns):
            ok, m = self._ordinals(mfns)
            m = m[ok]
            np.bitwise_or.at(self.bits, m >> 3, (0x80 >> (m & 7)).astype(np.uint8))

    def test(self, mfns: np.ndarray) -> np.ndarray:
        ok, m = self._ordinals(mfns)
        return ok & ((self.bits[m >> 3] & (0x80 >> (m & 7)).astype(np.uint8)) != 0)


class _WordState:
    """What the pass learns at one word size."""

    def __init__(self, ws: int, limit: int, extents: np.ndarray):
        self.L = layout_for(ws)
        self.ws = ws
        fpp = self.L.per_page
        self.dtype = np.dtype(self.L.numpy_dtype)
        self.limit = min(limit, self.L.word_mask)
        self.leafish = _Bitmap(extents)
        self.samples_at = np.unique(np.concatenate(
            [[0, 1], np.linspace(2, fpp - 1, N_SAMPLES - 2).astype(np.int64)]))
        self.pre_at = np.linspace(0, fpp - 1, 8).astype(np.int64)
        self.ptr_at = np.linspace(1, fpp - 2, 32).astype(np.int64)
        self.sdtype = np.uint32 if limit < (1 << 32) - 1 else np.uint64
        self.p_mfn: list[np.ndarray] = []
        self.p_samples: list[np.ndarray] = []
        self.p_tail: list[np.ndarray] = []
        t = self.dtype.type
        self.inv = t(self.L.invalid)
        self.one = t(1)
        self.lim1 = t(max(self.limit - 1, 0))
        self.flags = t(self.L.flag_mask)
        self.mfn_max = t(min(MFN_MAX_64, self.L.identity_bit - 1))
        self.bad_max = fpp // BAD_DIV

    def _wordok(self, w: np.ndarray) -> np.ndarray:
        """Words a leaf may hold: INVALID, or a non-zero plausible frame with at
        most one of the two flag bits (IDENTITY and FOREIGN never come together)."""
        if self.ws == 4:
            # [1, 0xC0000000) or INVALID: MFNs stay below the flag bits anyway
            return ((w - self.one) < self.dtype.type(0xBFFFFFFF)) | (w == self.inv)
        rest = w & ~self.flags
        both = (w & self.flags) == self.flags
        return ((rest <= self.mfn_max) & (w != 0) & ~both) | (w == self.inv)

    def feed(self, block: np.ndarray, mfns: np.ndarray) -> None:
        """Classify every page of ``block`` (whole frames; ``mfns``: the MFN of
        each, ascending)."""
        fpp = self.L.per_page
        w = block.view(self.dtype).reshape(-1, fpp)
        rows = np.flatnonzero(self._wordok(w[:, self.pre_at]).all(axis=1))
        if not len(rows):
            return
        # leafish: every word plausible; test a first slice, then the rest
        c = fpp // 8
        r1 = rows[self._wordok(w[rows, :c]).all(axis=1)]
        if len(r1):
            leaf = self._wordok(w[r1, c:]).all(axis=1)
            self.leafish.set(mfns[r1[leaf]])
        # pointer pages: a sample first, then every word
        samp = w[rows[:, None], self.ptr_at[None, :]]
        okp = ((samp - self.one) < self.lim1).sum(axis=1) >= len(self.ptr_at) - 1
        rp = rows[okp]
        if not len(rp):
            return
        wp = w[rp]
        ptr = ((wp - self.one) < self.lim1).sum(axis=1) >= fpp - self.bad_max
        if not ptr.any():
            return
        wp = wp[ptr]
        samples = wp[:, self.samples_at]
        # non-pointer samples can never match a frame: map them to the limit
        samples = np.where((samples - self.one) < self.lim1, samples,
                           self.dtype.type(min(self.limit, self.L.word_mask)))
        noteq = wp != wp[:, -1:]
        last_neq = fpp - 1 - np.argmax(noteq[:, ::-1], axis=1)
        tail = np.where(noteq.any(axis=1), fpp - 1 - last_neq, fpp)
        self.p_mfn.append(mfns[rp[ptr]])
        self.p_samples.append(samples.astype(self.sdtype))
        self.p_tail.append(tail.astype(np.int32))

    # -- stage 2 ------------------------------------------------------------------
    def candidates(self, limit: int) -> list[tuple[int, float, int]]:
        """[(top mfn, top-likeness, tail repeat)] best first, at most ``limit``."""
        if not self.p_mfn:
            return []
        pm = np.concatenate(self.p_mfn)
        S = np.concatenate(self.p_samples).astype(np.uint64)
        tail = np.concatenate(self.p_tail)
        self.p_mfn, self.p_samples, self.p_tail = [pm], [S], [tail]
        midlike = self.leafish.test(S.reshape(-1)).reshape(S.shape).mean(axis=1)
        pos = np.searchsorted(pm, S.astype(np.int64))
        pos_c = np.minimum(pos, len(pm) - 1)
        isp = pm[pos_c] == S.astype(np.int64)
        toplike = np.where(isp, midlike[pos_c], 0.0).mean(axis=1)
        keep = np.flatnonzero(toplike >= MIN_TOPLIKE)
        if not len(keep):
            return []
        order = np.lexsort((-tail[keep], -toplike[keep]))[:limit]
        sel = keep[order]
        return [(int(pm[i]), float(toplike[i]), int(tail[i])) for i in sel]

    @property
    def pointer_pages(self) -> int:
        return int(sum(len(a) for a in self.p_mfn))


# -- stage 3: trial walks ----------------------------------------------------------

class PageCache:
    """Frames read by the trial walks, kept (up to ``max_pages``) so that a
    page several candidates share is read once; None for MFN 0 and frames
    the image does not hold."""

    def __init__(self, source, max_pages: int = 1 << 16):
        self.source = source
        self.pages: dict[int, bytes | None] = {}
        self.max_pages = max_pages

    def get(self, mfn: int) -> bytes | None:
        if mfn in self.pages:
            return self.pages[mfn]
        data = self.source.read_frame(mfn) if mfn > 0 and self.source.has_frame(mfn) else None
        if len(self.pages) < self.max_pages:
            self.pages[mfn] = data
        return data


def leaf_quality(words: np.ndarray, first_pfn: int, L) -> tuple[float, int]:
    """(fraction of entries that decode sanely, entries that are not INVALID)."""
    w = words.astype(np.uint64)
    inv = w == np.uint64(L.invalid)
    ib, fb = np.uint64(L.identity_bit), np.uint64(L.foreign_bit)
    rest = w & ~np.uint64(L.flag_mask)
    mfn_max = np.uint64(min(MFN_MAX_64, L.identity_bit - 1))
    pfns = np.arange(first_pfn, first_pfn + len(w), dtype=np.uint64)
    ident = ~inv & ((w & ib) != 0) & (rest == pfns)
    foreign = ~inv & ((w & np.uint64(L.flag_mask)) == fb) & (rest > 0) & (rest <= mfn_max)
    valid = ((w & np.uint64(L.flag_mask)) == 0) & (w > 0) & (w <= mfn_max)
    good = int(inv.sum() + ident.sum() + foreign.sum())
    if valid.any():
        good += len(np.unique(w[valid]))
    return good / len(w), int((~inv).sum())


def sample_quality(leaves, L) -> tuple[float, int, float]:
    """(quality, entries, distinct) of a sample of leaf pages, ``leaves``
    giving (page bytes or None, first pfn) each: the mean
    :func:`leaf_quality` (an unreadable page counts 0) times the share of
    distinct MFNs among the valid entries (a guest's own frames are
    distinct across pages too), the entries that are not INVALID, and that
    share."""
    q, entries, valid = [], 0, []
    for data, first_pfn in leaves:
        if data is None:
            q.append(0.0)
            continue
        w = np.frombuffer(data, dtype=L.numpy_dtype)
        quality, n = leaf_quality(w, first_pfn, L)
        q.append(quality)
        entries += n
        valid.append(w[(w.astype(np.uint64) & np.uint64(L.flag_mask)) == 0])
    allv = np.concatenate(valid) if valid else np.zeros(0)
    distinct = float(len(np.unique(allv)) / len(allv)) if len(allv) else 1.0
    return (float(np.mean(q)) * distinct if q else 0.0), entries, distinct


def has_frames(source, mfns: np.ndarray) -> np.ndarray:
    """Per element: a frame of the image other than MFN 0."""
    from .sources.raw import RawImage

    u, inv = np.unique(mfns, return_inverse=True)
    if isinstance(source, RawImage):
        ok = (u > 0) & (u < np.uint64(source.frames))
    else:
        ok = np.array([m > 0 and source.has_frame(m) for m in u.tolist()], dtype=bool)
    return ok[inv.reshape(-1)]


def trial_walk(source, top_mfn: int, word_size: int, pages: PageCache | None = None) -> dict:
    """Light check of the tree at ``top_mfn``: reads its top and mid pages and
    a sample of its leaves.  Returns the evidence, with ``confirmed`` and
    ``score`` (0..100)."""
    L = layout_for(word_size)
    fpp = L.per_page
    pages = pages or PageCache(source)
    ev = {"top_ptr": 0.0, "mid_ptr": 0.0, "leaf_quality": 0.0, "placeholders": 0.0,
          "confirmed": False, "score": 0.0}
    top = pages.get(top_mfn) if top_mfn >= 0 else None
    if top is None:
        return ev
    T = np.frombuffer(top, dtype=L.numpy_dtype).astype(np.uint64)
    uniq, inv_idx, counts = np.unique(T, return_inverse=True, return_counts=True)
    mid_pages: dict[int, np.ndarray] = {}
    mid_ok = np.zeros(len(uniq), dtype=bool)
    mw: np.ndarray | None   # a mid page's words (None: the placeholder's is not held)
    for u, m in enumerate(uniq.tolist()):
        data = pages.get(m) if m != 0 and m != top_mfn else None
        if data is None:
            continue
        mw = np.frombuffer(data, dtype=L.numpy_dtype).astype(np.uint64)
        ptrs = int(np.count_nonzero(has_frames(source, mw)))
        if ptrs >= fpp - fpp // BAD_DIV:
            mid_pages[m] = mw
            mid_ok[u] = True
    ev["top_ptr"] = float(mid_ok[inv_idx].mean())
    if ev["top_ptr"] < 0.9:
        return ev
    # leaf slot table for the readable mids
    slots_t = np.flatnonzero(mid_ok[inv_idx])
    leaf = np.concatenate([mid_pages[int(T[t])] for t in slots_t])
    rows = (slots_t[:, None] * fpp + np.arange(fpp)[None, :]).reshape(-1)
    lu, l_inv, l_counts = np.unique(leaf, return_inverse=True, return_counts=True)
    in_img = has_frames(source, lu)
    ev["mid_ptr"] = float(in_img[l_inv].mean())
    if ev["mid_ptr"] < 0.9:
        return ev
    # placeholders: the most repeated mid and the repeated leaves
    ph_ok = []
    if counts.max() >= 2:
        mph = int(uniq[np.argmax(counts)])
        mw = mid_pages.get(mph)
        ph_ok.append(mw is not None and bool(np.all(mw == mw[0])))
    shared = lu[l_counts >= 2]
    ev["shared_leaves"] = int(len(shared))
    if len(shared) > MAX_SHARED_LEAVES:
        # a tree shares only its few placeholders (p2m_missing, p2m_identity)
        return ev
    shared_inv = set()
    for m in shared.tolist():
        data = pages.get(m)
        if data is None:
            continue
        lw = np.frombuffer(data, dtype=L.numpy_dtype)
        if np.all(lw == lw.dtype.type(L.invalid)):
            shared_inv.add(m)
    if len(shared):
        ph_ok.append(len(shared_inv) > 0)
    ev["placeholders"] = float(np.mean(ph_ok)) if ph_ok else 1.0
    # decode a sample of the real (single-slot) leaves
    real = np.flatnonzero(in_img[l_inv] & (l_counts[l_inv] == 1))
    if not len(real):
        return ev
    pick = np.unique(np.linspace(0, len(real) - 1, min(TRIAL_LEAVES, len(real))).astype(np.int64))
    ev["leaf_quality"], mapped, ev["distinct"] = sample_quality(
        ((pages.get(int(leaf[i])), int(rows[i]) * fpp) for i in real[pick].tolist()), L)
    ev["score"] = round(100 * (0.2 * ev["top_ptr"] + 0.2 * ev["mid_ptr"]
                               + 0.5 * ev["leaf_quality"] + 0.1 * ev["placeholders"]), 2)
    ev["confirmed"] = bool(mapped > 0 and ev["leaf_quality"] >= MIN_QUALITY)
    return ev


# -- the public function ----------------------------------------------------------

#: what scan looks for: p2m trees (by their pages) and linear lists (by shared_info)
REPRESENTATIONS = ("tree", "list")


def _find_trees(source, states, *, max_trials: int, max_results: int, stats: ScanStats,
                hints=()) -> list[ScanCandidate]:
    """Stages 2 and 3 for trees: candidates from the pass (and ``hints``:
    (top MFN, word size) named elsewhere), trial walks, full walks."""
    from .walker import walk

    pages = PageCache(source)
    found: list[ScanCandidate] = []
    tried = set()
    trials: list[tuple[int, int, float]] = []
    hint = getattr(source, "top_mfn_hint", None)
    for st in states:
        stats.pointer_pages[st.ws] = st.pointer_pages
        cands = st.candidates(max_trials)
        stats.candidates[st.ws] = len(cands)
        if hint is not None:
            trials.append((int(hint), st.ws, 1.0))
        trials += [(int(top), ws, 1.0) for top, ws in hints if ws == st.ws]
        trials += [(m, st.ws, tl) for m, tl, _ in cands]
    confirmed = []
    for top, ws, toplike in trials:
        if (top, ws) in tried:
            continue
        tried.add((top, ws))
        stats.trials += 1
        ev = trial_walk(source, top, ws, pages)
        ev["top_likeness"] = round(toplike, 3)
        if ev["confirmed"]:
            confirmed.append((ev["score"], top, ws, ev))
    confirmed.sort(key=lambda c: (-c[0], c[2] == 4, c[1]))
    for score, top, ws, ev in confirmed[:max_results]:
        try:
            res = walk(source, top, word_size=ws)
        except P2MDumpError:
            continue
        counts = res.table.counts()
        mapped = counts["valid"] + counts["identity"] + counts["foreign"]
        if not mapped:
            continue
        found.append(ScanCandidate(
            top_mfn=top, word_size=ws, max_pfn=res.max_pfn, score=score, pfns_mapped=mapped,
            counts=counts, mid_placeholder=res.mid_placeholder,
            leaf_placeholders=list(res.leaf_placeholders),
            evidence={k: v for k, v in ev.items() if k not in ("confirmed", "score")},
            warnings=len(res.warnings())))
    found.sort(key=lambda c: (-c.score, -c.pfns_mapped, c.word_size == 4, c.top_mfn))
    return found


def scan(source, *, word_sizes=WORD_SIZES, progress: Progress | None = None,
         max_trials: int = MAX_TRIALS, max_results: int = MAX_RESULTS,
         stats: ScanStats | None = None, representations=REPRESENTATIONS,
         full_walk_bytes: int | None = None) -> list:
    """Candidate p2m trees and linear p2m lists in ``source``, best first (an
    empty list if none).

    Trees are :class:`ScanCandidate`, lists
    :class:`~p2mdump.listscan.ListCandidate`; both have ``representation``,
    ``word_size``, ``score``, ``walk_args()`` and ``to_dict()``.  At most
    ``max_results`` of each representation are returned.  A list's table is
    walked in full only up to ``full_walk_bytes`` (default
    :data:`p2mdump.listscan.FULL_WALK_BYTES`)."""
    from . import listscan

    stats = stats if stats is not None else ScanStats()
    for ws in word_sizes:
        layout_for(ws)
    unknown = set(representations) - set(REPRESENTATIONS)
    if unknown:
        raise ValueError(f"unknown representation(s): {', '.join(sorted(unknown))}")
    extents = data_extents(source)
    # an upper bound on the MFNs pointers may name (a number for the tests,
    # never a size: the bitmap is sized by the extents)
    limit = source.frame_limit()
    if limit is None:
        limit = int((extents[:, 0] + extents[:, 1]).max()) if len(extents) else 0
    states = ([_WordState(ws, int(limit), extents) for ws in word_sizes]
              if "tree" in representations else [])
    filters = ([listscan.SharedInfoFilter(ws, int(limit)) for ws in word_sizes]
               if "list" in representations else [])
    for mfns, block in blocks(source, extents, progress):
        stats.pages_scanned += len(mfns)
        for st in states:
            st.feed(block, mfns)
        for flt in filters:
            flt.feed(block, mfns)
    stats.bytes_scanned = stats.pages_scanned * PAGE_SIZE
    lists = listscan.find_lists(
        source, filters, max_results=max_results, stats=stats,
        full_walk_bytes=listscan.FULL_WALK_BYTES if full_walk_bytes is None
        else full_walk_bytes) if filters else []
    trees = _find_trees(source, states, max_trials=max_trials, max_results=max_results,
                        stats=stats, hints=[(c.tree_top_mfn, c.word_size) for c in lists
                                            if c.tree_top_mfn is not None]) if states else []
    listscan.link_trees(trees, lists)
    # equal scores: the list first, as Xen's tools prefer it
    return sorted(trees + lists, key=lambda c: (-c.score, c.representation != "list"))
