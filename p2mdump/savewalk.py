"""The p2m a saved PV guest had at the moment of its save, from an ``xl save`` stream.

Xen's saver (``tools/libs/guest/xg_sr_save_x86_pv.c``) finds the guest's p2m
pages by walking its tree or its linear list, names them by *pfn* in the
X86_PV_P2M_FRAMES record (``start_pfn``, ``end_pfn`` -- the last pfn,
inclusive -- and one u64 pfn per p2m page) and then sends them like any other
page, unchanged: they still hold the source host's machine frame numbers.
Concatenated in record order, those pages hold ``p2m[start_pfn .. end_pfn]``
in the guest's word width (X86_PV_INFO).  This module rebuilds that table and
checks it against the stream itself: a pfn whose page the stream carries
should map to a machine frame, and a pfn mapping to a frame should have its
page in the stream.

The table runs to shared_info ``arch.max_pfn`` (the stream's SHARED_INFO
record) when the saved p2m ends at most one PMD's worth of list before it:
Xen's list walk loses the last PMD of a list that does not start at index 0
of its PMD page, and its pfns are then never sent.  The unsaved pfns are
missing in the table and a warning counts them.  A longer gap is not
extended (a number read from the file never sizes the table beyond what the
record's frames hold): the warning names the claim instead.
"""
from __future__ import annotations

import numpy as np

from . import findings as F
from .arrays import unique
from .autowalk import SAVED as REPRESENTATION
from .crosscheck import last_pmd, pfn_ranges
from .errors import LayoutError, TreeError
from .layout import LEVEL_LIST, PAGE_SIZE, layout_for
from .listwalk import memory_available
from .paging import PTES_PER_PAGE
from .result import WalkResult
from .table import FOREIGN, IDENTITY, MISSING, VALID, P2MTable, classify, empty_words
from .walker import TABLE_FLOOR

#: frames read per batch (4 MiB of scratch)
BATCH_FRAMES = 1024
#: table entries checked against the stream's pages at a time
CHECK_CHUNK = 1 << 20


def saved_arch(stream) -> dict | None:
    """shared_info ``arch`` fields of the stream's SHARED_INFO record at the
    guest's width, or None without that record or width."""
    ws = stream.guest_width
    if stream.shared_info is None or len(stream.shared_info) != PAGE_SIZE or ws not in (4, 8):
        return None
    from .schemas.xen_core import shared_info_page

    return dict(shared_info_page(ws).parse(stream.shared_info).arch)


def claimed_max_pfn(stream) -> int | None:
    """The SHARED_INFO record's ``arch.max_pfn``; None without it or when it is 0."""
    arch = saved_arch(stream)
    return int(arch["max_pfn"]) if arch and arch.get("max_pfn") else None


def walk_saved_p2m(stream, *, word_size="auto", max_pfn: int | None = None,
                   progress=None, check_table: bool = True) -> WalkResult:
    """Rebuild the saved p2m of ``stream`` (a :class:`~p2mdump.sources.xl_save.SaveStream`).

    ``word_size`` overrides X86_PV_INFO's guest width, ``max_pfn`` the
    SHARED_INFO record's ``arch.max_pfn``.  Raises :class:`TreeError` when the
    stream names no p2m (no X86_PV_P2M_FRAMES record, no usable width)."""
    where = stream.path
    ws_source = "container"
    if word_size not in (None, "auto"):
        ws, ws_source = int(word_size), "given"
    elif stream.guest_width in (4, 8):
        ws = stream.guest_width
    else:
        raise TreeError(f"{where}: no X86_PV_INFO record gives the guest's word size; give "
                        "--word-size 4 or 8")
    L = layout_for(ws)
    fpp = L.per_page
    frames = stream.p2m_frames
    if frames is None:
        raise TreeError(f"{where}: the stream has no X86_PV_P2M_FRAMES record: it names no "
                        "saved p2m" + ("" if stream.complete else
                                       " (the stream is truncated before it)"))
    findings: list = []

    def add(*args, **kw):
        findings.append(F.Finding(*args, **kw))

    if ws_source == "given" and stream.guest_width not in (None, ws):
        add(F.SAVE_P2M_RECORD, F.WARNING,
            f"--word-size {ws} overrides X86_PV_INFO's guest width {stream.guest_width}")
    pfns = np.asarray(frames.pfns, dtype=np.uint64)
    start, end = int(frames.start_pfn), int(frames.end_pfn)
    first_frame = start // fpp
    where_rec = f"X86_PV_P2M_FRAMES (record {frames.record_index}, offset {frames.offset:#x})"
    if start > end:
        raise TreeError(f"{where}: {where_rec} has start_pfn {start:#x} past end_pfn {end:#x}")
    expected = end // fpp + 1 - first_frame
    if start:
        add(F.SAVE_P2M_RECORD, F.WARNING,
            f"{where_rec} starts at pfn {start:#x}, not 0 as Xen's saver writes it; pfns "
            f"before {first_frame * fpp:#x} are missing in the table", level=LEVEL_LIST)
    if len(pfns) != expected:
        add(F.SAVE_P2M_RECORD, F.WARNING,
            f"{where_rec} names {len(pfns)} frames where pfns {start:#x}-{end:#x} take "
            f"{expected} at {ws} bytes an entry; "
            + ("the missing frames' pfns are missing in the table" if len(pfns) < expected
               else "the frames past them are ignored"), level=LEVEL_LIST,
            count=abs(len(pfns) - expected))
        pfns = pfns[:expected]
    # the saved entries: bounded by the frames the record really names, and the
    # table by what they can fill (the walker's rule): a start_pfn far from 0
    # never sizes it
    saved = min(end + 1, (first_frame + len(pfns)) * fpp)
    budget = max(len(pfns) * fpp, TABLE_FLOOR)
    if saved > budget:
        add(F.TABLE_BUDGET, F.WARNING,
            f"{where_rec} places its {len(pfns)} frame(s) up to pfn {saved - 1:#x}, more "
            f"than they can fill from pfn 0; the table stops at {budget:#x} (give --max-pfn "
            "to widen it)", level=LEVEL_LIST, count=saved - budget, pfn_first=budget,
            pfn_last=saved - 1)
        saved = budget

    arch = saved_arch(stream)
    claimed = None
    mp_source = "given"
    if max_pfn is None:
        claimed = claimed_max_pfn(stream)
        max_pfn, mp_source = (claimed, "container") if claimed else (saved, "saved")
        if arch and not claimed:
            add(F.SAVE_P2M_RECORD, F.INFO,
                f"shared_info arch.max_pfn is 0; the table ends where {where_rec} ends "
                f"({saved:#x} pfns)", level=LEVEL_LIST)
    elif max_pfn < 0:
        raise LayoutError(f"max_pfn must not be negative (got {max_pfn})")
    n = max_pfn
    if mp_source == "container" and max_pfn > saved:
        n = _claimed_length(saved, max_pfn, L, arch, add)
    elif mp_source == "container" and max_pfn < saved:
        add(F.SAVE_P2M_RECORD, F.INFO,
            f"shared_info arch.max_pfn {max_pfn:#x} is less than the {saved:#x} pfns "
            f"{where_rec} saved; the table ends at arch.max_pfn", level=LEVEL_LIST)
    table_bytes = n * L.word_size
    avail = memory_available()
    if avail is not None and table_bytes > avail:
        raise LayoutError(f"the table of {n:#x} pfns needs {table_bytes >> 20} MiB, more than "
                          f"the {avail >> 20} MiB of memory available")

    # entries the record saved past a shorter arch.max_pfn are read to be reported
    read_n = max(n, saved) if mp_source == "container" else n
    words, pages_read = _read_frames(stream, pfns, first_frame, read_n, L, add, progress)
    if read_n > n:
        _report_past(words[n:read_n], n, L, add)
        words = words[:n]
    table = P2MTable(words, L)
    findings.extend(crosscheck_stream(table, stream, saved, first_frame * fpp))
    if n and table.counts().get("missing") == n:
        add(F.EMPTY_TREE, F.WARNING, "no pfn of the saved p2m maps to anything",
            level=LEVEL_LIST)
    info = {
        "record_index": frames.record_index,
        "record_offset": frames.offset,
        "start_pfn": start,
        "end_pfn": end,
        "p2m_frames": int(len(frames.pfns)),
        "distinct_frames": pages_read,
        "saved_pfns": saved,
        "max_pfn_claimed": claimed,
    }
    result = WalkResult(
        table=table, layout=L, top_mfn=None, findings=findings,
        max_pfn_source=mp_source, word_size_source=ws_source, pages_read=pages_read,
        source=f"xl save stream {where}", representation=REPRESENTATION, save_info=info)
    if check_table:
        result.check_table()
    return result


def _report_past(tail: np.ndarray, max_pfn: int, L, add) -> None:
    """Saved entries at or past arch.max_pfn that are not missing (they are not in
    the table, as for a tree or list walk)."""
    nz = np.flatnonzero(tail != tail.dtype.type(L.invalid))
    if len(nz):
        add(F.PAST_MAX_PFN, F.WARNING,
            f"{len(nz)} saved entries at or past shared_info arch.max_pfn {max_pfn:#x} are not "
            f"missing (first: pfn {max_pfn + int(nz[0]):#x}); they are not in the table",
            level=LEVEL_LIST, count=len(nz), pfn_first=max_pfn + int(nz[0]),
            pfn_last=max_pfn + int(nz[-1]))


def _claimed_length(saved: int, max_pfn: int, L, arch, add) -> int:
    """The table's length when shared_info claims more pfns than were saved."""
    lost = max_pfn - saved
    pmd_pfns = PTES_PER_PAGE * L.per_page      # the pfns one PMD of a list holds
    hint = _last_pmd_hint(saved, max_pfn, L, arch)
    if lost <= pmd_pfns:
        add(F.SAVE_P2M_SHORT, F.WARNING,
            f"the saved p2m ends at pfn {saved - 1:#x} but shared_info arch.max_pfn is "
            f"{max_pfn:#x}: {lost} pfn(s) {saved:#x}-{max_pfn - 1:#x} were never saved and are "
            "missing in the table" + hint, level=LEVEL_LIST, count=lost,
            pfn_first=saved, pfn_last=max_pfn - 1)
        return max_pfn
    add(F.SAVE_P2M_SHORT, F.WARNING,
        f"shared_info arch.max_pfn {max_pfn:#x} claims {lost} pfns more than the saved p2m "
        f"holds (it ends at pfn {saved - 1:#x}); more than one PMD of list ({pmd_pfns:#x} pfns), "
        "so not a known saver bug: the table ends where the saved p2m ends (give --max-pfn "
        "to widen it)", level=LEVEL_LIST, count=lost, pfn_first=saved, pfn_last=max_pfn - 1)
    return saved


def _last_pmd_hint(saved: int, max_pfn: int, L, arch) -> str:
    """Name Xen's saver bug when the unsaved pfns are those of the last PMD of
    a list whose p2m_vaddr is not at index 0 of its PMD page."""
    if not arch or not arch.get("p2m_cr3"):
        return ""
    vaddr = int(arch.get("p2m_vaddr") or 0)
    pmd_index, first_pfn = last_pmd(L, vaddr, L.leaves_for(max_pfn))
    if pmd_index == 0 or saved != first_pfn:
        return ""
    return (f"; they are the pfns of the list's last PMD and p2m_vaddr {vaddr:#x} is not at "
            f"index 0 of its PMD page (index {pmd_index}): the likely cause is a known bug of "
            "Xen's saver, whose list walk drops the last PMD of such a list and never sends "
            "those pfns")


def _read_frames(stream, pfns: np.ndarray, first_frame: int, n: int, L, add, progress):
    """The table of ``n`` entries: frame k of ``pfns`` fills entries
    (first_frame + k) * fpp ...; unread entries are missing.  Returns
    (words, distinct frames read)."""
    fpp = L.per_page
    dtype = np.dtype(L.numpy_dtype)
    inv = dtype.type(L.invalid)
    rows_total = L.leaves_for(n)
    words = empty_words(rows_total * fpp, dtype)
    rows = words.reshape(rows_total, fpp) if rows_total else words.reshape(0, fpp)
    rows[:first_frame] = inv
    usable = max(0, min(len(pfns), rows_total - first_frame))
    rows[first_frame + usable:] = inv
    scratch = np.empty((min(usable, BATCH_FRAMES), fpp), dtype=dtype)
    no_data: list = []
    distinct = set()
    for lo in range(0, usable, BATCH_FRAMES):
        chunk = pfns[lo:min(lo + BATCH_FRAMES, usable)]
        u, inverse = np.unique(chunk, return_inverse=True)
        view = scratch[:len(u)]
        # (numpy's stubs give ndarray the buffer protocol from Python 3.12 only)
        into = memoryview(view).cast("B")  # type: ignore[arg-type]
        got = np.asarray(stream.read_pfns_into(u, into), dtype=np.bool_)
        view[~got] = inv
        rows[first_frame + lo:first_frame + lo + len(chunk)] = view[inverse]
        lacking = u[~got]
        if len(lacking):
            no_data.append(lacking)
        distinct.update(u[got].tolist())
        if progress is not None:
            progress(lo + len(chunk), usable)
    if no_data:
        lack = unique(np.concatenate(no_data))
        slots = np.flatnonzero(np.isin(pfns[:usable], lack))
        firsts = (slots + first_frame) * fpp
        add(F.SAVE_P2M_FRAME_NO_DATA, F.WARNING,
            f"{len(lack)} p2m frame(s) named by X86_PV_P2M_FRAMES have no page data in the "
            f"stream (pfns {pfn_ranges(lack)}); the {len(slots) * fpp} entries they hold are "
            "missing in the table", level=LEVEL_LIST, count=len(slots) * fpp,
            pfn_first=int(firsts[0]), pfn_last=int(firsts[-1]) + fpp - 1,
            examples=[int(p) for p in lack[:5]])
    words = words[:n]
    return words, len(distinct)


def crosscheck_stream(table: P2MTable, stream, saved: int, first_pfn: int = 0) -> list:
    """The saved p2m against the pages the stream carries: each pfn with page
    data should map to a machine frame and each pfn mapping to a frame should
    have page data (last copies).  Differences are reported as pfn ranges."""
    out: list = []
    n = len(table)
    data = np.asarray(stream.data_pfns, dtype=np.uint64)   # sorted, unique
    inside = int(np.searchsorted(data, np.uint64(n)))
    past = int(len(data) - inside)
    # chunk by chunk of the table, against the data pfns that fall in it: memory
    # bounded by a chunk, not by the table or the index
    valid_no_data = []
    unmapped = []
    code_counts = np.zeros(256, dtype=np.int64)
    lo = 0
    for start, chunk in table.chunks(CHECK_CHUNK):
        hi = lo + int(np.searchsorted(data[lo:inside], np.uint64(start + len(chunk))))
        h = np.zeros(len(chunk), dtype=bool)
        h[(data[lo:hi] - np.uint64(start)).astype(np.intp)] = True
        lo = hi
        kinds = classify(chunk, table.layout)
        valid = kinds == VALID
        valid_no_data.append(np.flatnonzero(valid & ~h) + start)
        bad = np.flatnonzero(h & ~valid)
        unmapped.append(bad + start)
        code_counts += np.bincount(kinds[bad], minlength=256)
    lacking = np.concatenate(valid_no_data) if valid_no_data else np.zeros(0, np.int64)
    extra = np.concatenate(unmapped) if unmapped else np.zeros(0, np.int64)
    if len(lacking):
        xtab = stream.nodata.get("XTAB") if stream.nodata else None
        sent_xtab = int(np.count_nonzero(np.isin(lacking, xtab))) if xtab is not None else 0
        add_text = (f" ({sent_xtab} sent as XTAB)" if sent_xtab else "")
        out.append(F.Finding(
            F.SAVE_VALID_NO_DATA, F.WARNING,
            f"{len(lacking)} pfn(s) the saved p2m maps to a machine frame have no page in the "
            f"stream{add_text}: pfns {pfn_ranges(lacking)}", level=LEVEL_LIST, count=len(lacking),
            pfn_first=int(lacking[0]), pfn_last=int(lacking[-1])))
    if len(extra) or past:
        why = []
        for code, name in ((MISSING, "missing"), (IDENTITY, "identity"), (FOREIGN, "foreign")):
            c = int(code_counts[code])
            if c:
                why.append(f"{c} {name}")
        if past:
            why.append(f"{past} at or past the table's end {n:#x}")
        total = len(extra) + past
        pfns_all = np.concatenate([extra.astype(np.uint64), data[inside:]])
        out.append(F.Finding(
            F.SAVE_DATA_UNMAPPED, F.WARNING,
            f"{total} page(s) in the stream belong to pfns the saved p2m does not map to a "
            f"machine frame ({', '.join(why)}): pfns {pfn_ranges(pfns_all)}", level=LEVEL_LIST,
            count=total, pfn_first=int(pfns_all[0]), pfn_last=int(pfns_all[-1])))
    # the p2m frames' own pfns are ordinary guest pages: Xen's saver requires
    # each to be in the guest's pseudo-physical map
    frames = stream.p2m_frames
    if frames is not None and len(frames.pfns):
        fp = unique(np.asarray(frames.pfns, dtype=np.uint64))
        fin = fp[fp < np.uint64(n)].astype(np.int64)
        bad = fin[classify(table.raw[fin], table.layout) != VALID] if len(fin) else fin
        bad = np.concatenate([bad.astype(np.uint64), fp[fp >= np.uint64(n)]])
        if len(bad):
            out.append(F.Finding(
                F.SAVE_P2M_FRAME_UNMAPPED, F.WARNING,
                f"{len(bad)} p2m frame pfn(s) named by X86_PV_P2M_FRAMES are not mapped to a "
                f"machine frame by the saved p2m itself (pfns {pfn_ranges(bad)}); Xen's saver "
                "requires each to be", level=LEVEL_LIST, count=len(bad),
                pfn_first=int(bad[0]), examples=[int(p) for p in bad[:5]]))
    return out


def extract_plan(table: P2MTable, stream):
    """An :class:`~p2mdump.extract.Plan` copying every page the stream carries,
    by its pfn (the stream's own key: no p2m is needed to place a page), to be
    read from a :class:`~p2mdump.sources.save_image.SaveImage`.  The output
    spans the table and any page past it, up to what the stream's pages could
    fill as p2m pages (the rule of :meth:`~p2mdump.extract.Plan.from_pairs`):
    pages of pfns past that are not copied ("beyond-stream"), so an absurd pfn
    never sizes the output.  pfns without a page are listed as not copied, by
    their kind in the saved p2m ("no page data" for valid ones)."""
    from .extract import Plan

    data = np.asarray(stream.data_pfns, dtype=np.uint64)
    limit = max(len(table), len(data) * table.layout.per_page, TABLE_FLOOR)
    far = data >= np.uint64(limit)
    beyond = data[far].astype(np.int64)
    data = data[~far]
    n = max(len(table), int(data[-1]) + 1 if len(data) else 0)
    has = np.zeros(len(table), dtype=bool)
    has[data[data < np.uint64(len(table))].astype(np.int64)] = True
    kinds = table.kinds()
    skipped = {name: np.flatnonzero((kinds == code) & ~has)
               for code, name in ((MISSING, "missing"), (IDENTITY, "identity"),
                                  (FOREIGN, "foreign"), (VALID, "no page data"))}
    if len(beyond):
        skipped["beyond-stream"] = beyond
    pfns = data.astype(np.int64)
    return Plan(pfns, data, n, table.layout.word_size, skipped,
                "the stream's PAGE_DATA pages, by pfn", representation=REPRESENTATION)
