"""Single lookups through the p2m: pfn -> mfn and guest -> machine address.

A single lookup reads exactly the pages on its path with
:meth:`FrameSource.read_frame` and decodes the one word it needs with
:func:`int.from_bytes`: the top, mid and leaf page of the tree
(:class:`PathLookup`), or the page-table path to the one list page holding
the entry and that page for a linear list (:class:`ListPathLookup`).  This
module must stay free of heavy imports (no numpy, no construct):
``p2mdump lookup IMAGE --top-mfn N --pfn P`` is a whole process that has to
start about as fast as the interpreter itself.

Lookups that need the whole table (mfn -> pfns, many queries at once) live
in :class:`TableLookup`, which works on a walked table and imports numpy
lazily.
"""
from __future__ import annotations

import struct

from . import wordsize
from .errors import LayoutError, TreeError
from .layout import (KIND_FOREIGN, KIND_IDENTITY, KIND_MISSING, KIND_VALID, LEVEL_LEAF,
                     LEVEL_LIST, LEVEL_MID, LEVEL_TOP, PAGE_SHIFT, PAGE_SIZE, Layout,
                     layout_for)
from .paging import MAX_LIST_PFNS, list_end, word_size_from_vaddr
from .ptlookup import FramePages, PathTranslator, check_vaddr, root_for_cr3

TYPE_CHECKING = False  # typing is not imported at run time (see above)
if TYPE_CHECKING:
    from typing import Any

OFFSET_MASK = PAGE_SIZE - 1
QUERY_KINDS = ("pfn", "mfn", "paddr", "maddr")
#: batches of at most this many mfns are answered by equality scans
FEW_MFNS = 8
#: entries compared per block of an equality scan (256 KiB of 64-bit words)
SCAN_BLOCK = 1 << 15


def top_pointer_score(page: bytes, source, word_size: int) -> float:
    """Fraction of the words of ``page`` (read as ``word_size``-byte words)
    that name a frame in the image other than MFN 0."""
    n = PAGE_SIZE // word_size
    words = struct.unpack(f"<{n}{'Q' if word_size == 8 else 'I'}", page)
    good = 0
    seen: dict[int, bool] = {}
    for w in words:
        ok = seen.get(w)
        if ok is None:
            ok = seen[w] = w != 0 and source.has_frame(w)
        good += ok
    return good / n


def check_pfn(layout: Layout, pfn: int) -> None:
    """LayoutError unless ``pfn`` lies inside the tree."""
    if pfn < 0:
        raise LayoutError(f"pfn must not be negative (got {pfn})")
    if pfn >= layout.capacity:
        raise LayoutError(f"pfn {pfn:#x} is outside a {layout.word_size}-byte-word tree "
                          f"(capacity {layout.capacity:#x} pfns)")


def with_address(out: dict, paddr: int) -> dict:
    """Add paddr, offset and the machine address to a pfn lookup result."""
    out["paddr"] = paddr
    out["offset"] = paddr & OFFSET_MASK
    out["maddr"] = None if out["mfn"] is None else (out["mfn"] << PAGE_SHIFT) | out["offset"]
    return out


class _PfnPathLookup:
    """What the two single-lookup readers share: the word size, the one
    word of a page, and paddr lookups on top of :meth:`pfn`."""

    layout: Layout

    @property
    def word_size(self) -> int:
        return self.layout.word_size

    def _word(self, page: bytes, slot: int) -> int:
        ws = self.layout.word_size
        return int.from_bytes(page[slot * ws:(slot + 1) * ws], "little")

    def _fill_entry(self, out: dict, page: bytes, slot: int) -> dict:
        """Decode entry ``slot`` of p2m page ``page`` into a pfn result."""
        raw = self._word(page, slot)
        out["raw"] = raw
        out["kind"] = self.layout.kind_of(raw)
        out["mfn"] = self.layout.decode(raw)
        return out

    def pfn(self, pfn: int) -> dict:
        """pfn -> {pfn, kind, mfn, raw, path, problem, past_max_pfn, ...} (each reader's own)."""
        raise NotImplementedError

    def paddr(self, paddr: int) -> dict:
        """Guest physical address -> machine address (None when missing)."""
        if paddr < 0:
            raise LayoutError(f"address must not be negative (got {paddr:#x})")
        return with_address(self.pfn(paddr >> PAGE_SHIFT), paddr)


class PathLookup(_PfnPathLookup):
    """Look pfns up in the tree at ``top_mfn`` of ``source``, page by page.

    Only the top page is read up front (to settle the word size when it is
    "auto"); each lookup then reads its mid and leaf page.  Pages are cached
    by MFN, so :attr:`pages_read` counts distinct frames read.
    """

    def __init__(self, source, top_mfn: int, *, word_size="auto", max_pfn: int | None = None):
        if top_mfn < 0:
            raise TreeError(f"top MFN must not be negative (got {top_mfn})")
        self.source = source
        self.top_mfn = top_mfn
        self.max_pfn = max_pfn
        self._pages = FramePages(source)
        top = self._pages.page(top_mfn)
        if top is None:
            limit = source.frame_limit()
            where = f" (the image holds {limit:#x} frames)" if limit is not None else ""
            raise TreeError(f"top MFN {top_mfn:#x} is not in the image{where}")
        if word_size in (None, "auto"):
            scores = {ws: top_pointer_score(top, source, ws) for ws in (8, 4)}
            ws = wordsize.choose(scores, top_mfn)
            self.word_size_source = "detected"
        else:
            ws = int(word_size)
            layout_for(ws)
            wordsize.check_given(ws, lambda w: top_pointer_score(top, source, w), top_mfn)
            self.word_size_source = "given"
        self.layout: Layout = layout_for(ws)
        if max_pfn is not None and max_pfn > self.layout.capacity:
            raise LayoutError(f"--max-pfn {max_pfn:#x} is larger than a {ws}-byte-word tree can "
                              f"hold ({self.layout.capacity:#x} pfns)")
        self._top: bytes = top

    @property
    def pages_read(self) -> int:
        return self._pages.pages_read

    def pfn(self, pfn: int) -> dict:
        """pfn -> {pfn, kind, mfn, raw, path, problem, past_max_pfn}.

        ``mfn`` is decoded like the kernel's pfn_to_mfn (flag bits cleared),
        None when the entry is missing.  A pointer on the path that is MFN 0
        or names a frame outside the image makes the pfn missing, and
        ``problem`` says why.
        """
        L = self.layout
        check_pfn(L, pfn)
        t, m, i = L.split(pfn)
        out: dict[str, Any] = {
            "pfn": pfn, "kind": KIND_MISSING, "mfn": None, "raw": None,
            "top_mfn": self.top_mfn, "word_size": L.word_size,
            "path": [{"level": LEVEL_TOP, "mfn": self.top_mfn, "slot": t}],
            "problem": None,
            "past_max_pfn": self.max_pfn is not None and pfn >= self.max_pfn}
        mid_mfn = self._word(self._top, t)
        out["path"].append({"level": LEVEL_MID, "mfn": mid_mfn, "slot": m})
        mid = self._checked(mid_mfn, LEVEL_MID, t, out)
        if mid is None:
            return out
        leaf_mfn = self._word(mid, m)
        out["path"].append({"level": LEVEL_LEAF, "mfn": leaf_mfn, "slot": i})
        leaf = self._checked(leaf_mfn, LEVEL_LEAF, m, out)
        if leaf is None:
            return out
        return self._fill_entry(out, leaf, i)

    def _checked(self, mfn: int, level: str, slot: int, out: dict) -> bytes | None:
        parent = "top" if level == LEVEL_MID else "mid"
        if mfn == 0:
            out["problem"] = f"{parent} slot {slot} holds MFN 0 instead of a {level} page"
            return None
        page = self._pages.page(mfn)
        if page is None:
            out["problem"] = (f"{level} page MFN {mfn:#x} ({parent} slot {slot}) is not in "
                              "the image")
        return page


#: how a list lookup's problem starts for a pfn at or past max_pfn
PAST_LIST_END = "past the end of the list"


class ListPathLookup(_PfnPathLookup):
    """Look pfns up in a guest's linear p2m list (Linux 3.19+), page by page.

    The entry of pfn P is the guest word at virtual address ``p2m_vaddr +
    P * word_size``.  A lookup translates that one address through the page
    tables under ``p2m_cr3`` (the register value, folded on 32-bit guests)
    and reads the one list page it leads to: the tables on the path and that
    page, nothing else (:attr:`pages_read` counts distinct frames, the top
    table included, which the constructor reads to check it is there).

    ``word_size`` "auto" takes 8 for a list above 4 GiB and 4 below, as the
    list walk does.  ``max_pfn`` (shared_info ``arch.max_pfn``): a pfn at or
    past it has no entry (kind missing, ``problem`` says so, nothing is
    read), as in the table the list walk builds.  Without ``max_pfn`` any
    pfn whose entry has a canonical address is read.
    """

    def __init__(self, source, p2m_cr3: int, p2m_vaddr: int, *, word_size="auto",
                 max_pfn: int | None = None, five_level: bool = False):
        if word_size in (None, "auto"):
            ws = word_size_from_vaddr(p2m_vaddr)
            self.word_size_source = "detected"
        else:
            ws = int(word_size)
            self.word_size_source = "given"
        root, mode = root_for_cr3(p2m_cr3, ws, five_level, what="p2m_cr3")
        self.layout: Layout = layout_for(ws)
        self.p2m_cr3 = p2m_cr3
        self.p2m_vaddr = p2m_vaddr
        self.max_pfn = max_pfn
        if max_pfn is not None:
            if max_pfn < 0:
                raise LayoutError(f"max_pfn must not be negative (got {max_pfn})")
            if max_pfn > MAX_LIST_PFNS[ws]:
                raise LayoutError(f"max_pfn {max_pfn:#x} is beyond what a {ws * 8}-bit guest's "
                                  f"list can hold here ({MAX_LIST_PFNS[ws]:#x} pfns)")
            list_end(mode, p2m_vaddr, max_pfn, self.layout.leaves_for(max_pfn))
        if p2m_vaddr % PAGE_SIZE:
            raise LayoutError(f"p2m_vaddr {p2m_vaddr:#x} is not page-aligned")
        self.translator = PathTranslator(source, root, mode)

    @property
    def pages_read(self) -> int:
        return self.translator.pages_read

    def pfn(self, pfn: int) -> dict:
        """pfn -> {pfn, kind, mfn, raw, path, problem, past_max_pfn, entry_vaddr, ...}.

        ``path``: the page-table steps ({"level": "pt-l4".., "mfn": table
        MFN, "slot": entry index, "entry": the entry}) and then the list
        page ({"level": "list", "mfn", "slot": index of the word in it}).
        An unmapped entry address or a list page not in the image makes the
        pfn missing, and ``problem`` says why."""
        L = self.layout
        ws = L.word_size
        if pfn < 0:
            raise LayoutError(f"pfn must not be negative (got {pfn})")
        if pfn >= MAX_LIST_PFNS[ws]:
            raise LayoutError(f"pfn {pfn:#x} is outside any list of a {ws * 8}-bit guest "
                              f"(at most {MAX_LIST_PFNS[ws]:#x} pfns)")
        vaddr = self.p2m_vaddr + pfn * ws
        out: dict[str, Any] = {
            "pfn": pfn, "kind": KIND_MISSING, "mfn": None, "raw": None,
            "p2m_cr3": self.p2m_cr3, "p2m_vaddr": self.p2m_vaddr, "word_size": ws,
            "entry_vaddr": vaddr, "path": [], "problem": None,
            "past_max_pfn": self.max_pfn is not None and pfn >= self.max_pfn}
        if out["past_max_pfn"]:
            out["problem"] = f"{PAST_LIST_END} (max_pfn {self.max_pfn:#x})"
            return out
        tr = self.translator.translate(vaddr)
        out["path"] = [step.as_dict() for step in tr.path]
        frame = tr.mfn
        if frame is None:
            out["problem"] = f"the list entry at {vaddr:#x} is not mapped: {tr.problem}"
            return out
        slot = (vaddr & OFFSET_MASK) // ws
        out["path"].append({"level": LEVEL_LIST, "mfn": frame, "slot": slot})
        page = self.translator.page(frame)
        if page is None:
            first = pfn - slot
            out["problem"] = (f"list page MFN {frame:#x} (pfns {first:#x}-"
                              f"{first + L.per_page - 1:#x}) is not in the image")
            return out
        return self._fill_entry(out, page, slot)


def vaddr_lookup(source, cr3: int, vaddr: int, word_size: int,
                 five_level: bool = False) -> dict:
    """Guest virtual address -> machine address through the guest's own page
    tables under ``cr3`` (the register value, folded on 32-bit guests).

    {"vaddr", "cr3", "root_mfn", "paging", "word_size", "maddr", "mfn",
    "page_size", "frame_in_image", "path": [{"level", "mfn", "slot",
    "entry"}...], "problem", "pages_read"} and the guest side, filled in by
    :func:`add_pfns`: "pfns", "foreign_pfns", "paddrs" (None until then),
    "p2m" (the representation used), "pfn_problem" (why the pfn is unknown).
    An address that is not mapped has ``maddr`` None and ``problem`` says
    why; a cr3 or address that cannot be the guest's is a LayoutError."""
    root, mode = root_for_cr3(cr3, word_size, five_level)
    check_vaddr(mode, vaddr)        # before anything is read
    translator = PathTranslator(source, root, mode)
    tr = translator.translate(vaddr)
    return {"vaddr": tr.vaddr, "cr3": cr3, "root_mfn": translator.root_mfn,
            "paging": translator.mode.name, "word_size": word_size, "maddr": tr.maddr,
            "mfn": tr.mfn, "page_size": tr.page_size, "frame_in_image": tr.frame_in_image,
            "path": [step.as_dict() for step in tr.path], "problem": tr.problem,
            "pages_read": translator.pages_read, "pfns": None, "foreign_pfns": None,
            "paddrs": None, "p2m": None, "pfn_problem": None}


def add_pfns(out: dict, table: "TableLookup", representation: str) -> dict:
    """Fill the guest side of a mapped :func:`vaddr_lookup` result from a
    walked table: the pfns mapping its machine frame and their addresses."""
    got = table.mfn(out["mfn"])
    offset = out["maddr"] & OFFSET_MASK
    out.update(pfns=got["pfns"], foreign_pfns=got["foreign_pfns"],
               paddrs=[(p << PAGE_SHIFT) | offset for p in got["pfns"]], p2m=representation)
    return out


def parse_query_file(lines) -> list[tuple[str, int]]:
    """Queries, one a line: ``[pfn|mfn|paddr|maddr] NUMBER`` (a bare number
    is a pfn); blank lines and ``#`` comments are skipped.  Raises
    ValueError naming the line for anything else."""
    out = []
    for n, line in enumerate(lines, 1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        parts = text.replace("=", " ").replace(":", " ").split()
        if len(parts) == 1:
            kind, value = "pfn", parts[0]
        elif len(parts) == 2 and parts[0].lower() in QUERY_KINDS:
            kind, value = parts[0].lower(), parts[1]
        else:
            raise ValueError(f"line {n}: {line.strip()!r} is not 'pfn|mfn|paddr|maddr NUMBER'")
        try:
            num = int(value.replace("_", ""), 0)
        except ValueError:
            raise ValueError(f"line {n}: {value!r} is not a number (decimal or 0x-hex)") from None
        if num < 0:
            raise ValueError(f"line {n}: {value!r} is negative")
        out.append((kind, num))
    return out


class MfnScan:
    """The pfns whose entries name given machine frames, found in one pass
    over a table fed in pieces (:meth:`feed`, in pfn order): a table held in
    memory chunk by chunk, or a streamed walk's windows (it is a ``stream``:
    :func:`p2mdump.walker.walk`), so that no table need be held for it.

    A few mfns are compared with each exact entry they can be (mfn: valid;
    mfn | FOREIGN bit: foreign) block by block, so the block stays in the
    cache between the comparisons; more are matched against the sorted query
    mfns.  No full-size inverse is ever built."""

    def __init__(self, mfns):
        self.asked = list(mfns)
        self.found: dict[int, dict[str, list[int]]] = {
            m: {"pfns": [], "foreign_pfns": []} for m in self.asked}
        self.L: Layout | None = None

    def __call__(self, words, first_pfn: int, *_segments) -> None:
        self.feed(words, first_pfn)

    def feed(self, words, first_pfn: int) -> None:
        if self.L is None:
            self._start(layout_for(words.dtype.itemsize))
        if not self.want or not len(words):
            return
        if len(self.want) <= FEW_MFNS:
            self._equal(words, first_pfn)
        else:
            self._sorted(words, first_pfn)

    def _start(self, layout: Layout) -> None:
        import numpy as np

        self.L = L = layout
        self.want = sorted({m for m in self.asked
                            if 0 <= m and not m & L.flag_mask and m <= L.word_mask})
        t = np.dtype(L.numpy_dtype).type
        self.probes = [(m, name, t(m | bit)) for m in self.want
                       for name, bit in (("pfns", 0), ("foreign_pfns", L.foreign_bit))]
        self.q = np.array(self.want, dtype=np.uint64)

    def _equal(self, words, first_pfn: int) -> None:
        import numpy as np

        for a in range(0, len(words), SCAN_BLOCK):
            block = words[a:a + SCAN_BLOCK]
            for m, name, value in self.probes:
                hit = np.flatnonzero(block == value)
                if len(hit):
                    self.found[m][name].extend((hit + first_pfn + a).tolist())

    def _sorted(self, words, first_pfn: int) -> None:
        import numpy as np

        from .table import CHUNK

        L, q = self.L, self.q
        assert L is not None
        fbit = np.uint64(L.foreign_bit)
        flags = np.uint64(L.flag_mask)
        inv = np.uint64(L.invalid)
        for a in range(0, len(words), CHUNK):
            c = words[a:a + CHUNK].astype(np.uint64)
            start = first_pfn + a
            flagged = (c & flags) != 0
            # valid entries: no flag bit (INVALID has both)
            for name, values, mask in (("pfns", c, ~flagged),
                                       ("foreign_pfns", c & ~fbit,
                                        flagged & ((c & flags) == fbit) & (c != inv))):
                pos = np.searchsorted(q, values)
                pos[pos >= len(q)] = 0
                hit = np.flatnonzero(mask & (q[pos] == values))
                for p, m in zip((hit + start).tolist(), values[hit].tolist()):
                    self.found[m][name].append(p)

    def result(self, layout: Layout) -> dict:
        """{mfn: {"pfns": [...valid pfns], "foreign_pfns": [...]}} (``layout``:
        the table's, in case nothing was fed)."""
        if self.L is None:
            self._start(layout)
        return self.found


#: pfns at or past this are in no table (and do not fit a numpy int64)
PFN_LIMIT = 1 << 63


class PfnPick:
    """The raw entries of given pfns, picked out of a table fed in pieces
    (:meth:`feed`, consecutive and in pfn order, like :class:`MfnScan`) as
    it goes by, so that a streamed walk answers pfn queries without the
    table being held.

    The distinct pfns are sorted once; each piece takes the slice of them
    that falls in its pfn range (two binary searches) and copies those
    entries: no work per entry of the piece nor per pfn outside it.  Memory:
    one word per distinct pfn asked."""

    def __init__(self, pfns):
        import numpy as np

        from .arrays import unique

        # pfns past any table are never fed: keeping them out keeps the array int64
        self.pfns = unique(np.array([p for p in pfns if 0 <= p < PFN_LIMIT], dtype=np.int64))
        self.raw = np.zeros(len(self.pfns), dtype=np.uint64)
        #: the pfn after the last one fed
        self.end = 0

    def feed(self, words, first_pfn: int) -> None:
        import numpy as np

        if first_pfn != self.end:
            raise ValueError(f"pieces must follow each other: got pfn {first_pfn:#x}, "
                             f"expected {self.end:#x}")
        self.end = first_pfn + len(words)
        lo, hi = np.searchsorted(self.pfns, (first_pfn, self.end))
        if hi > lo:
            self.raw[lo:hi] = words[self.pfns[lo:hi] - first_pfn]

    def entry(self, pfn: int) -> int:
        """The raw entry of ``pfn`` (one that was asked and fed; else KeyError)."""
        import numpy as np

        i = int(np.searchsorted(self.pfns, pfn)) if 0 <= pfn < self.end else len(self.pfns)
        if i == len(self.pfns) or int(self.pfns[i]) != pfn:
            raise KeyError(pfn)
        return int(self.raw[i])


class QueryScan:
    """A batch of queries (``[(kind, number), ...]`` as
    :func:`parse_query_file` gives them) answered in one pass over a table
    fed in pieces: the entries of the pfn and paddr queries are picked out
    (:class:`PfnPick`), the pfns of the mfn and maddr queries found
    (:class:`MfnScan`).  A ``stream`` for :func:`p2mdump.walker.walk`; hand
    it to :class:`TableLookup` as ``scanned`` to answer the batch."""

    def __init__(self, queries):
        self.pick = PfnPick(n >> PAGE_SHIFT if k == "paddr" else n
                            for k, n in queries if k in ("pfn", "paddr"))
        self.mfns = MfnScan(n >> PAGE_SHIFT if k == "maddr" else n
                            for k, n in queries if k in ("mfn", "maddr"))

    def __call__(self, words, first_pfn: int, *_segments) -> None:
        self.feed(words, first_pfn)

    def feed(self, words, first_pfn: int) -> None:
        self.pick.feed(words, first_pfn)
        self.mfns.feed(words, first_pfn)


class TableLookup:
    """Lookups against a whole walked table (numpy; imported on first use).

    pfn queries index the table; mfn queries of a batch are answered in one
    pass over the table (:class:`MfnScan`).  ``scanned``: a QueryScan the
    walk was streamed through, which answers the queries it was made for
    instead (the table is then a StreamedTable, with no entries to index).
    """

    def __init__(self, result, max_pfn: int | None = None, scanned: QueryScan | None = None):
        self.result = result
        self.table = result.table
        self.layout = result.layout
        self.top_mfn = result.top_mfn
        self.max_pfn = max_pfn
        self.scanned = scanned

    def _entry(self, pfn: int) -> dict:
        """{raw, kind, mfn} of ``pfn`` as :meth:`P2MTable.lookup` gives them
        (missing past the table), from the table or the entries picked from
        its stream."""
        if self.scanned is None:
            return self.table.lookup(pfn)
        L = self.layout
        raw = self.scanned.pick.entry(pfn) if pfn < len(self.table) else L.invalid
        return {"raw": raw, "kind": L.kind_of(raw), "mfn": L.decode(raw)}

    def pfn(self, pfn: int) -> dict:
        L = self.layout
        check_pfn(L, pfn)
        got = self._entry(pfn)
        return {"pfn": pfn, "kind": got["kind"], "mfn": got["mfn"],
                "raw": got["raw"] if pfn < len(self.table) else None,
                "top_mfn": self.top_mfn, "word_size": L.word_size,
                "past_max_pfn": self.max_pfn is not None and pfn >= self.max_pfn}

    def paddr(self, paddr: int) -> dict:
        return with_address(self.pfn(paddr >> PAGE_SHIFT), paddr)

    def mfns(self, mfns) -> dict:
        """{mfn: {"pfns": [...valid pfns], "foreign_pfns": [...]}} in one pass."""
        if self.scanned is not None:
            found = self.scanned.mfns.result(self.layout)
            return {m: found[m] for m in mfns}
        scan = MfnScan(mfns)
        for start, chunk in self.table.chunks():
            scan.feed(chunk, start)
        return scan.result(self.layout)

    def mfn(self, mfn: int) -> dict:
        if mfn < 0:
            raise LayoutError(f"mfn must not be negative (got {mfn})")
        got = self.mfns([mfn])[mfn]
        return {"mfn": mfn, "pfns": got["pfns"], "foreign_pfns": got["foreign_pfns"],
                "top_mfn": self.top_mfn, "word_size": self.layout.word_size}

    def maddr(self, maddr: int) -> dict:
        if maddr < 0:
            raise LayoutError(f"address must not be negative (got {maddr:#x})")
        out = self.mfn(maddr >> PAGE_SHIFT)
        off = maddr & OFFSET_MASK
        out["maddr"] = maddr
        out["offset"] = off
        out["paddrs"] = [(p << PAGE_SHIFT) | off for p in out["pfns"]]
        return out

    def many(self, queries) -> list[dict]:
        """Answer [(kind, number), ...] in order; mfn/maddr ones in one pass."""
        need = [q[1] >> PAGE_SHIFT if q[0] == "maddr" else q[1]
                for q in queries if q[0] in ("mfn", "maddr")]
        hits = self.mfns(need) if need else {}
        out = []
        for kind, num in queries:
            if kind == "pfn":
                r = self.pfn(num)
            elif kind == "paddr":
                r = self.paddr(num)
            else:
                m = num >> PAGE_SHIFT if kind == "maddr" else num
                got = hits.get(m, {"pfns": [], "foreign_pfns": []})
                r = {"mfn": m, "pfns": got["pfns"], "foreign_pfns": got["foreign_pfns"],
                     "top_mfn": self.top_mfn, "word_size": self.layout.word_size}
                if kind == "maddr":
                    off = num & OFFSET_MASK
                    r.update(maddr=num, offset=off,
                             paddrs=[(p << PAGE_SHIFT) | off for p in got["pfns"]])
            r["query"] = kind
            out.append(r)
        return out


def _size_text(size: int) -> str:
    for shift, unit in ((30, "GiB"), (20, "MiB"), (10, "KiB")):
        if size >= 1 << shift:
            return f"{size >> shift} {unit}"
    return f"{size} bytes"


def _foreign_note(r: dict) -> str:
    if not r.get("foreign_pfns"):
        return ""
    return " (foreign-mapped at pfn " + ", ".join(f"{p:#x}" for p in r["foreign_pfns"]) + ")"


def _format_vaddr(r: dict) -> str:
    head = f"vaddr {r['vaddr']:#x}"
    if r["maddr"] is None:
        return f"{head} -> not mapped ({r['problem']})"
    notes = [f"{_size_text(r['page_size'])} page"]
    if not r["frame_in_image"]:
        notes.append("frame not in the image")
    if r["pfns"] is None:
        notes.insert(0, f"mfn {r['mfn']:#x}; pfn unknown: {r['pfn_problem']}")
        return f"{head} -> maddr {r['maddr']:#x} ({'; '.join(notes)})"
    pf = ", ".join(f"{p:#x}" for p in r["pfns"]) or "none"
    pa = ", ".join(f"{a:#x}" for a in r["paddrs"]) or "none"
    notes.insert(0, f"mfn {r['mfn']:#x} -> pfn {pf}")
    return f"{head} -> maddr {r['maddr']:#x} -> paddr {pa} ({'; '.join(notes)}){_foreign_note(r)}"


def format_result(r: dict) -> str:
    """One human-readable line for a lookup result."""
    if "vaddr" in r:
        return _format_vaddr(r)
    q = r.get("query")
    if "pfns" in r:
        pf = ", ".join(f"{p:#x}" for p in r["pfns"]) or "none"
        extra = _foreign_note(r)
        if q == "maddr" or "maddr" in r:
            pa = ", ".join(f"{a:#x}" for a in r["paddrs"]) or "none"
            return f"maddr {r['maddr']:#x} -> paddr {pa} (mfn {r['mfn']:#x} -> pfn {pf}){extra}"
        return f"mfn {r['mfn']:#x} -> pfn {pf}{extra}"
    kind = r["kind"]
    note = ""
    if r.get("problem"):
        note += f" ({r['problem']})"
    if r.get("past_max_pfn") and not (r.get("problem") or "").startswith(PAST_LIST_END):
        note += " (past max_pfn)"
    if "paddr" in r:
        if r["maddr"] is None:
            return f"paddr {r['paddr']:#x} -> none (pfn {r['pfn']:#x} {kind}){note}"
        return (f"paddr {r['paddr']:#x} -> maddr {r['maddr']:#x} "
                f"(pfn {r['pfn']:#x} -> mfn {r['mfn']:#x} {kind}){note}")
    if r["mfn"] is None:
        return f"pfn {r['pfn']:#x} -> none ({kind}){note}"
    return f"pfn {r['pfn']:#x} -> mfn {r['mfn']:#x} ({kind}){note}"


__all__ = ["PathLookup", "ListPathLookup", "TableLookup", "vaddr_lookup", "add_pfns",
           "parse_query_file", "format_result",
           "KIND_VALID", "KIND_MISSING", "KIND_IDENTITY", "KIND_FOREIGN"]
