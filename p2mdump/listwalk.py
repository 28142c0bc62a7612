"""Walk a guest's *linear* p2m list through its page tables and rebuild the table.

Since Linux 3.19 a PV guest keeps its p2m as one virtually mapped array of
guest words, pfn-indexed, at ``p2m_vaddr``; since Xen 4.7 the domain builder
tells a domU the tools understand that (SIF_VIRT_P2M_4TOOLS), so a modern
domU publishes ``arch.pfn_to_mfn_frame_list_list = ~0`` and only
``arch.p2m_cr3`` / ``arch.p2m_vaddr`` / ``arch.max_pfn``.  This module reads
that list the way Xen's own save and dump-core code does: the page tables
under ``p2m_cr3`` (machine frames in a PV guest) map the list's virtual
pages onto machine frames, and those frames hold the entries.

Sparse regions of the list are backed by shared frames (Linux
``xen_rebuild_p2m_list``): whole missing / identity list pages map the
all-INVALID frames ``p2m_missing`` / ``p2m_identity``, whole missing /
identity 1 GiB (64-bit) or 4 GiB (PAE) regions use the shared PTE pages
``p2m_missing_pte`` / ``p2m_identity_pte``.  Shared frames are read once and
broadcast; the other list pages are read straight into the table, runs of
consecutive MFNs with one ``preadv``, as the tree walk does.

The result is a :class:`~p2mdump.result.WalkResult` with
``representation == "list"``: the same table, outputs and findings as a
tree walk.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from . import findings as F
from .arrays import unique
from .errors import LayoutError, TreeError
from .layout import LEVEL_LEAF, PAGE_SHIFT, PAGE_SIZE, layout_for
from .paging import (MAX_LIST_PFNS, PTE_FRAME_MASK, PTE_PRESENT, fold_cr3, level_name,
                     list_end, mode_for, unfold_cr3, word_size_from_vaddr)
from .result import WalkResult
from .table import RunTable
from .tablerows import FillPlan, hold_rows, stream_rows

def memory_available() -> int | None:
    """MemAvailable of /proc/meminfo in bytes, None where unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def walk_list(source, p2m_cr3: int | None = None, p2m_vaddr: int | None = None, *,
              root_mfn: int | None = None, word_size: int | str | None = "auto",
              max_pfn: int | None = None, five_level: bool = False,
              generation: int | None = None, progress=None,
              check_table: bool = True, raw_fd: int | None = None,
              stream=None) -> WalkResult:
    """Walk the linear p2m list at ``p2m_vaddr`` through the page tables
    whose top table is named by ``p2m_cr3`` (the register value, folded on
    32-bit guests) or ``root_mfn``.

    ``max_pfn`` (shared_info ``arch.max_pfn``, a number of pfns) is required:
    the list's length is not written anywhere else.  ``word_size`` 'auto'
    takes 8 for a list above 4 GiB and 4 below.  ``generation`` (shared_info
    ``arch.p2m_generation``) is reported; an odd value is a finding.
    ``raw_fd``: an empty regular file to build the table in, as the
    ``--format raw`` output (see :mod:`p2mdump.tablerows`); the result's
    ``raw_written`` then says the output is complete.  ``stream``: the
    table is handed on a window at a time and not kept, as
    :func:`p2mdump.walker.walk` does (the memory check for the table is then
    not made: no table is held).
    """
    if stream is not None and raw_fd is not None:
        raise ValueError("a streamed walk writes no raw output")
    from .pagetable import PageTableWalker

    if p2m_vaddr is None:
        raise LayoutError("a list walk needs p2m_vaddr (shared_info arch.p2m_vaddr)")
    if p2m_cr3 is None and root_mfn is None:
        raise LayoutError("a list walk needs p2m_cr3 (shared_info arch.p2m_cr3) or the MFN "
                          "of the top page table")
    if max_pfn is None:
        raise LayoutError("a list walk needs max_pfn (shared_info arch.max_pfn): the list's "
                          "length is published nowhere else; give --max-pfn")
    ws_source = "given"
    if word_size in (None, "auto"):
        ws = word_size_from_vaddr(p2m_vaddr)
        ws_source = "detected"
    else:
        ws = int(word_size)
    L = layout_for(ws)
    try:
        mode = mode_for(ws, five_level)
    except ValueError as exc:
        raise LayoutError(str(exc)) from None
    if root_mfn is None:
        assert p2m_cr3 is not None      # one of the two, checked above
        if p2m_cr3 < 0:
            raise LayoutError(f"p2m_cr3 must not be negative (got {p2m_cr3})")
        if ws == 4 and p2m_cr3 >> 32:
            raise LayoutError(f"p2m_cr3 {p2m_cr3:#x} has bits 32-63 set: not a 32-bit guest's "
                              "cr3 (Xen's save code refuses it too)")
        root_mfn = unfold_cr3(p2m_cr3, ws)
    elif p2m_cr3 is None:
        p2m_cr3 = fold_cr3(root_mfn, ws)
    if max_pfn < 0:
        raise LayoutError(f"max_pfn must not be negative (got {max_pfn})")
    limit = MAX_LIST_PFNS[ws]
    if max_pfn > limit:
        raise LayoutError(f"max_pfn {max_pfn:#x} is beyond what a {ws * 8}-bit guest's list can "
                          f"hold here ({limit:#x} pfns)")
    fpp = L.per_page
    n_pages = L.leaves_for(max_pfn)
    end = list_end(mode, p2m_vaddr, max_pfn, n_pages)

    walker = PageTableWalker(source, root_mfn, mode)
    findings: list = []

    def add(*args, **kw):
        findings.append(F.Finding(*args, **kw))

    hole_lo, hole_hi = mode.hypervisor_hole()
    if n_pages and p2m_vaddr <= hole_hi and end >= hole_lo:
        add(F.LIST_RANGE, F.WARNING,
            f"the list {p2m_vaddr:#x}-{end:#x} overlaps the range Xen keeps for itself in a "
            f"{ws * 8}-bit PV guest ({hole_lo:#x}-{hole_hi:#x}); Xen's tools refuse such a list",
            vaddr_first=max(p2m_vaddr, hole_lo), vaddr_last=min(end, hole_hi))
    if generation is not None and generation & 1:
        add(F.LIST_GENERATION_ODD, F.WARNING,
            f"arch.p2m_generation is odd ({generation}): the dump caught the guest in the middle "
            "of changing its list mapping; entries may be inconsistent")

    rmap = walker.map_range(p2m_vaddr, n_pages)
    findings.extend(rmap.findings)
    mapped = np.asarray(rmap.mapped, dtype=bool)
    mfns = np.asarray(rmap.mfns, dtype=np.uint64)
    if n_pages and not mapped.any():
        why = next((f.message for f in rmap.findings if f.is_warning), "")
        raise TreeError(f"the page tables at root MFN {root_mfn:#x} (p2m_cr3 {p2m_cr3:#x}) map no "
                        f"page of the list at p2m_vaddr {p2m_vaddr:#x}"
                        + (f" ({why})" if why else "") + ": not this guest's list")
    # a list longer than what the page tables map: the table ends where the
    # mapping ends (this also bounds the table by what the image holds)
    if n_pages and not mapped[-1]:
        have = np.flatnonzero(mapped)
        last = int(have[-1]) + 1 if len(have) else 0
        if last < n_pages:
            add(F.LIST_SHORT, F.WARNING,
                f"max_pfn {max_pfn:#x} needs {n_pages} list pages but the page tables map only "
                f"{last} from p2m_vaddr {p2m_vaddr:#x}; the table ends at pfn {last * fpp:#x}",
                level=LEVEL_LEAF, count=n_pages - last, pfn_first=last * fpp,
                pfn_last=max_pfn - 1, vaddr_first=p2m_vaddr + last * PAGE_SIZE, vaddr_last=end)
            n_pages = last
            max_pfn = min(max_pfn, last * fpp)
            mapped, mfns = mapped[:n_pages], mfns[:n_pages]
    table_bytes = n_pages * PAGE_SIZE
    avail = memory_available()
    if stream is None and avail is not None and table_bytes > avail:
        raise LayoutError(f"the table of {max_pfn:#x} pfns needs {table_bytes >> 20} MiB, more "
                          f"than the {avail >> 20} MiB of memory available")

    fill = _ListFill(source, L, findings)
    plan, shared = fill.plan(mfns, mapped, p2m_vaddr)

    def unreadable(row, mfn):
        fill.unreadable(mfn, np.array([row]), p2m_vaddr)

    table: RunTable
    raw_written = False
    if stream is not None:
        table, past, read = stream_rows(plan, n_pages, L, max_pfn, source, unreadable,
                                        progress, stream)
    else:
        # the list's table is always scanned (its counts, just below)
        table, past, read, raw_written = hold_rows(plan, n_pages, L, max_pfn, source,
                                                   unreadable, progress, raw_fd, True)
    fill.frames_read += read
    _check_tail(past, max_pfn, L, add)
    shared_ptes = _shared_pte_findings(walker, rmap, shared, source, add, findings, L)
    if max_pfn and table.counts().get("missing") == max_pfn:
        add(F.EMPTY_TREE, F.WARNING, "no pfn in the list maps to anything", level=LEVEL_LEAF)
    info: dict[str, Any] = {
        "p2m_cr3": p2m_cr3,
        "root_mfn": root_mfn,
        "p2m_vaddr": p2m_vaddr,
        "p2m_generation": generation,
        "paging": mode.name,
        "levels": mode.levels,
        "list_pages": n_pages,
        "page_table_pages": walker.pages_read,
        "large_pages": int(rmap.large_pages),
        "list_placeholders": sorted(m for m, placeholder in shared.items() if placeholder),
        "shared_pte_pages": shared_ptes,
    }
    result = WalkResult(
        table=table, layout=L, top_mfn=None, findings=findings,
        max_pfn_source="given", word_size_source=ws_source,
        pages_read=walker.pages_read + fill.frames_read,
        mid_placeholder=None, leaf_placeholders=info["list_placeholders"],
        source=source.describe(), representation="list", list_info=info,
        raw_written=raw_written)
    if check_table:
        result.check_table()
    return result


class _ListFill:
    """The list's frames: which fills each row of the table (the shared
    frames read once, :meth:`plan`), and the findings about them; the rows
    themselves are filled by :func:`p2mdump.tablerows.fill_rows`."""

    def __init__(self, source, layout, findings):
        self.source = source
        self.L = layout
        self.findings = findings
        self.frames_read = 0

    def plan(self, mfns, mapped, p2m_vaddr) -> tuple[FillPlan, dict]:
        """Where each row of the table comes from (the shared frames read
        once, and reported, here); and {shared frame MFN: is an all-INVALID
        placeholder}."""
        L = self.L
        inv = np.dtype(L.numpy_dtype).type(L.invalid)
        bad = np.flatnonzero(~mapped)
        rows = np.flatnonzero(mapped)
        shared: dict[int, bool] = {}
        pages: list = []
        if not len(rows):
            return FillPlan(mfns, bad, pages, rows), shared
        uniq, inverse, counts = unique(mfns[rows], return_inverse=True, return_counts=True)
        is_shared_row = counts[inverse] > 1
        for u in np.flatnonzero(counts > 1).tolist():
            mfn = int(uniq[u])
            where = rows[inverse == u]
            data = self.source.read_frame(mfn) if self.source.has_frame(mfn) else None
            if data is None:
                pages.append((where, None))
                self.unreadable(mfn, where, p2m_vaddr)
                continue
            self.frames_read += 1
            words = np.frombuffer(data, dtype=L.numpy_dtype)
            pages.append((where, words))
            placeholder = bool(np.all(words == inv))
            shared[mfn] = placeholder
            r0 = int(where[0])
            fpp = L.per_page
            common = dict(level=LEVEL_LEAF, mfn=mfn, count=len(where), pfn_first=r0 * fpp,
                          pfn_last=(int(where[-1]) + 1) * fpp - 1,
                          vaddr_first=p2m_vaddr + r0 * PAGE_SIZE,
                          vaddr_last=p2m_vaddr + (int(where[-1]) + 1) * PAGE_SIZE - 1)
            if placeholder:
                self.findings.append(F.Finding(
                    F.SHARED_PAGE, F.INFO,
                    f"list placeholder MFN {mfn:#x} (all INVALID: p2m_missing or p2m_identity) "
                    f"backs {len(where)} list pages", **common))
            else:
                valid = int(np.count_nonzero(words != inv))
                self.findings.append(F.Finding(
                    F.SHARED_PAGE, F.WARNING,
                    f"list frame MFN {mfn:#x} backs {len(where)} list pages but holds {valid} "
                    f"non-missing entries: the same mappings appear at {len(where)} places",
                    **common))
        return FillPlan(mfns, bad, pages, rows[~is_shared_row]), shared

    def unreadable(self, mfn, rows, p2m_vaddr):
        fpp = self.L.per_page
        r0, r1 = int(rows[0]), int(rows[-1])
        self.findings.append(F.Finding(
            F.UNREADABLE, F.WARNING,
            f"list page frame MFN {mfn:#x} (pfns {r0 * fpp:#x}-{(r1 + 1) * fpp - 1:#x}"
            + (f", {len(rows)} list pages" if len(rows) > 1 else "")
            + ") is not in the image; its pfns are treated as missing",
            level=LEVEL_LEAF, mfn=mfn, count=len(rows), pfn_first=r0 * fpp,
            pfn_last=(r1 + 1) * fpp - 1, vaddr_first=p2m_vaddr + r0 * PAGE_SIZE,
            vaddr_last=p2m_vaddr + (r1 + 1) * PAGE_SIZE - 1))


def _check_tail(tail, max_pfn, L, add):
    """Entries of the last list page past max_pfn should be missing."""
    nz = np.flatnonzero(tail != tail.dtype.type(L.invalid))
    if len(nz):
        add(F.PAST_MAX_PFN, F.WARNING,
            f"{len(nz)} entries of the last list page at or past max_pfn {max_pfn:#x} are not "
            f"missing (first: pfn {max_pfn + int(nz[0]):#x}); they are not in the table",
            level=LEVEL_LEAF, count=len(nz), pfn_first=max_pfn + int(nz[0]))


def _shared_pte_findings(walker, rmap, shared, source, add, findings, L) -> list:
    """Level-1 tables whose 512 entries all map one all-INVALID frame: Linux's
    p2m_missing_pte / p2m_identity_pte, which back whole missing / identity
    1 GiB (4 GiB on PAE) regions.  A level-1 table named by several PMDs that
    is not such a page is a warning (the same list pages at several places)."""
    refs = rmap.table_refs.get(1, {})
    tables = rmap.tables.get(1, [])
    out = []
    told = set()
    for mfn in sorted(int(m) for m in tables):
        n = int(refs.get(mfn, 1))
        words = walker.entries(mfn)
        if words is None:
            continue
        frames = unique((words & np.uint64(PTE_FRAME_MASK)) >> np.uint64(PAGE_SHIFT))
        present = bool(np.all(words & np.uint64(PTE_PRESENT)))
        target = int(frames[0]) if len(frames) == 1 else None
        if present and target is not None and shared.get(
                target, _is_placeholder(source, target, L)):
            out.append(mfn)
            # named by one PMD it may also be a table of the guest's own whose
            # 512 list pages are all missing (or all identity): same content
            what = ("p2m_missing_pte or p2m_identity_pte" if n > 1 else
                    "p2m_missing_pte or p2m_identity_pte, or a table of whole missing or "
                    "identity list pages")
            add(F.SHARED_PAGE, F.INFO,
                f"placeholder PTE page MFN {mfn:#x} ({what}: every entry maps placeholder "
                f"{target:#x}) is named by {n} PMD(s)", level="pt-l1", mfn=mfn, count=n)
        elif n > 1:
            add(F.SHARED_PAGE, F.WARNING,
                f"page table MFN {mfn:#x} is named by {n} PMDs but is not a placeholder PTE page "
                "(its entries do not all map one all-INVALID frame): the same list pages appear "
                "at several places", level="pt-l1", mfn=mfn, count=n)
        else:
            continue
        told.add(mfn)
    # the page-table walk's generic "table named by several PMDs" note says less
    # than the findings above about the same pages
    findings[:] = [f for f in findings if not (
        f.kind == F.PT_SHARED_TABLE and f.level == level_name(2) and f.mfn in told)]
    return out


def _is_placeholder(source, mfn, L) -> bool:
    data = source.read_frame(mfn) if source.has_frame(mfn) else None
    if data is None:
        return False
    words = np.frombuffer(data, dtype=L.numpy_dtype)
    return bool(np.all(words == words.dtype.type(L.invalid)))
