"""Cross-check a walked p2m tree against an ``xl dump-core``'s .xen_p2m pairs.

Xen writes one {pfn, gmfn} pair for every guest pfn whose p2m entry is a
real machine frame (INVALID, FOREIGN and IDENTITY entries are skipped, see
reference section 6.6), reading the very tree this tool walks.  So in an
intact dump the valid pfns of the tree and the pairs agree one for one.
Three kinds of disagreement are reported, each with a count and the first
examples:

* ``dump-lacks-pfn``: the tree maps a pfn that no pair names (the page was
  not dumped: tot_pages reached, mapping failed, or the pair was removed);
* ``dump-gmfn-mismatch``: a pair names a pfn the tree maps to another MFN
  (the p2m changed while the unpaused guest was dumped, or tampering);
* ``dump-unknown-page``: a pair names a pfn the tree does not map to a frame
  (missing, identity, foreign, or past max_pfn).

The pairs are never held whole: a dump as Xen writes it is checked by its
stretches of pairs against the table's runs (:func:`pieces_agree`, a few
operations a stretch); any other is streamed in chunks against the table
with a map of the pfns seen (:func:`crosscheck_chunks`).
"""
from __future__ import annotations

import numpy as np

from . import findings as F
from .arrays import unique
from .layout import KIND_VALID, PAGE_SIZE
from .paging import level_span, mode_for
from .table import FOREIGN, IDENTITY, MISSING, VALID, P2MTable, classify, decode

EXAMPLES = 5


def pfn_runs(pfns) -> tuple[np.ndarray, np.ndarray]:
    """(first pfns, last pfns) of the runs of consecutive pfns in sorted ``pfns``."""
    p = np.asarray(pfns).astype(np.int64)
    if not len(p):
        return p, p
    cut = np.flatnonzero(np.diff(p) != 1) + 1
    return p[np.concatenate([[0], cut])], p[np.concatenate([cut - 1, [len(p) - 1]])]


def format_runs(runs, n_runs: int, limit: int = EXAMPLES) -> str:
    """'0x10-0x1f, 0x40 and 3 more range(s)': the first ``limit`` of ``runs``
    ((first, last) pairs) of the ``n_runs`` there are."""
    parts = [f"{lo:#x}" if lo == hi else f"{lo:#x}-{hi:#x}" for lo, hi in list(runs)[:limit]]
    more = n_runs - limit
    return ", ".join(parts) + (f" and {more} more range(s)" if more > 0 else "")


def pfn_ranges(pfns, limit: int = EXAMPLES) -> str:
    """'0x10-0x1f, 0x40' for the first ``limit`` runs of sorted pfns."""
    firsts, lasts = pfn_runs(pfns)
    return format_runs(zip(firsts[:limit].tolist(), lasts[:limit].tolist()), len(firsts), limit)


def last_pmd(layout, p2m_vaddr: int, pages: int) -> tuple[int, int]:
    """(level-2 index of ``p2m_vaddr``, first pfn whose entry lies in the list's
    last PMD) for a list of ``pages`` pages: what Xen's list walk (dump-core,
    save) loses when that index is not 0."""
    pmd_index = mode_for(layout.word_size).index(p2m_vaddr, 2)
    last_page = p2m_vaddr + (pages - 1) * PAGE_SIZE
    pmd_start = last_page & ~(level_span(2) - 1)
    return pmd_index, max(0, (pmd_start - p2m_vaddr) // PAGE_SIZE) * layout.per_page


def last_pmd_bug_hint(lacking, table: P2MTable, list_info: dict | None) -> str:
    """Name Xen's dump-core bug when the lacking pfns are those of the last
    PMD of a list that does not start at index 0 of its PMD page.

    Xen's dump-core (4.16 and later, and the save code) walks the list's
    page tables itself; when ``p2m_vaddr`` is not at level-2 index 0 it
    loses the pfns whose list entries lie in the list's last PMD (2 MiB of
    list): the dump lacks their pages and pairs and is padded instead.
    """
    if not list_info or not len(lacking):
        return ""
    vaddr = list_info.get("p2m_vaddr")
    pages = list_info.get("list_pages") or 0
    if vaddr is None or not pages:
        return ""
    pmd_index, first_pfn = last_pmd(table.layout, vaddr, pages)
    if pmd_index == 0 or int(lacking[0]) < first_pfn:
        return ""
    return (f"; these pfns are all in the list's last PMD (pfns from {first_pfn:#x}) and "
            f"p2m_vaddr {vaddr:#x} is not at index 0 of its PMD page (index {pmd_index}): "
            "the likely cause is a known bug of Xen's dump-core (4.16 and later), which drops "
            "the last PMD of such a list; the list in the dump is whole")


class RunTally:
    """The runs of ascending distinct pfns fed a chunk at a time: how many
    pfns and runs, the first and last pfn, the first ``limit`` runs and
    pfns (what :func:`pfn_ranges` and the findings' examples need), without
    keeping the pfns."""

    def __init__(self, limit: int = EXAMPLES):
        self.limit = limit
        self.count = 0
        self.n_runs = 0
        self.first: int | None = None
        self.last: int | None = None
        self.runs: list = []
        self.head: list = []

    def add(self, pfns: np.ndarray) -> None:
        """Feed the next pfns: ascending, distinct, above all fed before."""
        if not len(pfns):
            return
        firsts, lasts = pfn_runs(pfns)
        skip = 0
        if self.last is not None and int(firsts[0]) == self.last + 1:
            skip = 1       # the first run goes on from the last one fed
            if self.runs and self.runs[-1][1] == self.last:
                self.runs[-1] = (self.runs[-1][0], int(lasts[0]))
        self.n_runs += len(firsts) - skip
        room = self.limit - len(self.runs)
        if room > 0:
            self.runs += zip(firsts[skip:skip + room].tolist(), lasts[skip:skip + room].tolist())
        if len(self.head) < self.limit:
            self.head += pfns[:self.limit - len(self.head)].tolist()
        self.count += len(pfns)
        if self.first is None:
            self.first = int(pfns[0])
        self.last = int(pfns[-1])

    def ranges(self) -> str:
        return format_runs(self.runs, self.n_runs, self.limit)


def _agreeing_stretch(raw: np.ndarray, pfns: np.ndarray, gmfns: np.ndarray, flags):
    """The slice of the table that a chunk of pairs names when it is the
    common case, checked at memory speed: the pfns are one ascending stretch
    of the table and each pair's gmfn is its pfn's entry, a valid one (no
    flag bit; INVALID has them all).  None otherwise."""
    m = len(pfns)
    if not m:
        return slice(0, 0)
    a = int(pfns[0])
    if a + m > len(raw) or int(pfns[-1]) != a + m - 1:
        return None
    if int(np.bitwise_or.reduce(gmfns)) & int(flags):
        return None
    if not (np.array_equal(raw[a:a + m], gmfns)
            and np.array_equal(pfns, np.arange(a, a + m, dtype=np.uint64))):
        return None
    return slice(a, a + m)


def pieces_agree(table: P2MTable, pfns, gmfns, lengths) -> bool:
    """True when stretches of pairs (pfn..pfn+len-1 -> gmfn..gmfn+len-1,
    distinct pfns) name every valid pfn of the table with its own mfn, and
    nothing else: then the cross-check has nothing to report.  Checked
    against the table's runs (a handful of operations a stretch)."""
    starts, ends, codes, first = table.run_arrays()
    if not len(pfns) or not len(starts):
        return not len(pfns) and table.counts()[KIND_VALID] == 0
    if int(pfns.max()) >= len(table):
        return False
    t = np.searchsorted(starts, pfns.astype(np.int64), side="right") - 1
    off = pfns.astype(np.int64) - starts[t]
    ok = ((codes[t] == VALID) & (off + lengths <= ends[t] - starts[t])
          & (first[t].astype(np.uint64) + off.astype(np.uint64) == gmfns))
    return bool(ok.all()) and int(lengths.sum()) == table.counts()[KIND_VALID]


def crosscheck_source(table: P2MTable, source, list_info: dict | None = None) -> list:
    """:func:`crosscheck_chunks` of an xl dump-core source's pairs, skipped
    when its stretches of pairs agree with the table (:func:`pieces_agree`)."""
    pieces = source.pair_pieces()
    if pieces is not None and pieces_agree(table, *pieces):
        return []
    return crosscheck_chunks(table, source.used_pair_chunks(), list_info)


def crosscheck(table: P2MTable, pair_pfns, pair_gmfns, list_info: dict | None = None) -> list:
    """Findings comparing ``table`` with the (pfn, gmfn) pairs of .xen_p2m
    (padding already removed): :func:`crosscheck_chunks` of one chunk."""
    return crosscheck_chunks(table, [(pair_pfns, pair_gmfns)], list_info)


def crosscheck_chunks(table: P2MTable, chunks, list_info: dict | None = None) -> list:
    """Findings comparing ``table`` with the (pfn, gmfn) pairs of .xen_p2m,
    fed as ``chunks`` of (pfns, gmfns) arrays in file order (padding already
    removed).  Duplicate pfns in the pairs are compared each (the container
    reports the duplication itself).  ``list_info`` (a list walk's
    parameters) lets the report name a known Xen bug.

    Each chunk is checked against the table's entries of its pfns; a map of
    the pfns seen (a byte a pfn) then finds the pfns the tree maps that no
    pair names, a table chunk at a time: no temporary is table-sized."""
    n = len(table)
    lay = table.layout
    raw = table.raw
    flags = np.uint64(lay.flag_mask)
    seen = np.zeros(n, dtype=bool)
    unknown_n = past_n = 0
    by_kind = dict.fromkeys((MISSING, IDENTITY, FOREIGN), 0)
    unknown_ex: list = []
    past_pfns: list = []
    bad_n = 0
    bad_ex: list = []
    seen_valid = 0      # distinct valid pfns named by a pair
    for pp, pg in chunks:
        pp = np.asarray(pp, dtype=np.uint64)
        pg = np.asarray(pg, dtype=np.uint64)
        stretch = _agreeing_stretch(raw, pp, pg, flags)
        if stretch is not None:
            seen_valid += (stretch.stop - stretch.start) - int(np.count_nonzero(seen[stretch]))
            seen[stretch] = True
            continue
        inside = pp < np.uint64(n)
        all_inside = bool(inside.all())
        idx = (pp if all_inside else pp[inside]).astype(np.intp)
        words = raw[idx]
        kinds = classify(words, lay)
        valid = kinds == VALID
        fresh = unique(idx[valid])
        seen_valid += len(fresh) - int(np.count_nonzero(seen[fresh]))
        seen[idx] = True
        known = valid if all_inside else np.zeros(len(pp), dtype=bool)
        if not all_inside:
            known[inside] = valid
        unknown = np.flatnonzero(~known)
        if len(unknown):
            unknown_n += len(unknown)
            if not all_inside:
                past_n += int(np.count_nonzero(~inside))
                past_pfns.append(unique(pp[~inside]))
            for code in by_kind:
                by_kind[code] += int(np.count_nonzero(kinds == code))
            unknown_ex += [{"pfn": int(pp[i]), "gmfn": int(pg[i])}
                           for i in unknown[:EXAMPLES - len(unknown_ex)].tolist()]
        # pairs whose gmfn differs from the tree
        tree_mfn = decode(words[valid], lay).astype(np.uint64)
        kk = np.flatnonzero(known)
        differ = np.flatnonzero(tree_mfn != pg[kk])
        if len(differ):
            bad_n += len(differ)
            bad_ex += [{"pfn": int(pp[kk[i]]), "gmfn": int(pg[kk[i]]),
                        "tree_mfn": int(tree_mfn[i])}
                       for i in differ[:EXAMPLES - len(bad_ex)].tolist()]
    # pfns the tree maps that no pair names, and the unknown pfns in order
    lacking = RunTally()
    unknown_pfns = RunTally()
    lacking_mfns: list = []
    no_flag = raw.dtype.type(0)
    # every valid pfn named and no unknown page: nothing left to look for
    whole = unknown_n or seen_valid != table.counts()[KIND_VALID]
    for start, chunk in table.chunks() if whole else ():
        valid = (chunk & raw.dtype.type(lay.flag_mask)) == no_flag  # INVALID has every flag
        here = seen[start:start + len(chunk)]
        miss = np.flatnonzero(valid > here)
        if len(miss):
            if len(lacking.head) < EXAMPLES:
                lacking_mfns += decode(chunk[miss[:EXAMPLES]], lay).tolist()
            lacking.add(miss + start)
        if unknown_n:
            unknown_pfns.add(np.flatnonzero(here > valid) + start)
    if past_pfns:
        unknown_pfns.add(unique(np.concatenate(past_pfns)))

    out: list = []
    if unknown_n:
        why = [f"{past_n} at or past max_pfn {n:#x}"] if past_n else []
        why += [f"{c} {name}" for name, c in (("missing", by_kind[MISSING]),
                                              ("identity", by_kind[IDENTITY]),
                                              ("foreign", by_kind[FOREIGN])) if c]
        out.append(F.Finding(
            F.DUMP_UNKNOWN_PAGE, F.WARNING,
            f"{unknown_n} .xen_p2m page(s) name pfns the tree does not map to a frame "
            f"({', '.join(why)}): pfns {unknown_pfns.ranges()}",
            count=unknown_n, pfn_first=unknown_pfns.first, pfn_last=unknown_pfns.last,
            examples=unknown_ex))
    if bad_n:
        listing = ", ".join(f"pfn {e['pfn']:#x}: dump {e['gmfn']:#x}, tree {e['tree_mfn']:#x}"
                            for e in bad_ex)
        out.append(F.Finding(
            F.DUMP_GMFN_MISMATCH, F.WARNING,
            f"{bad_n} .xen_p2m pair(s) give a gmfn other than the tree's mfn ({listing})",
            count=bad_n, pfn_first=bad_ex[0]["pfn"], mfn=bad_ex[0]["gmfn"], examples=bad_ex))
    if lacking.count:
        ex = [{"pfn": p, "tree_mfn": m} for p, m in zip(lacking.head, lacking_mfns)]
        out.append(F.Finding(
            F.DUMP_LACKS_PFN, F.WARNING,
            f"{lacking.count} pfn(s) the {'list' if list_info else 'tree'} maps to a frame "
            f"have no .xen_p2m pair: pfns {lacking.ranges()}"
            + last_pmd_bug_hint(lacking.head, table, list_info),
            count=lacking.count, pfn_first=lacking.first, pfn_last=lacking.last,
            examples=ex))
    return out
