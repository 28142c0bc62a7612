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
"""
from __future__ import annotations

import numpy as np

from . import findings as F
from .arrays import unique
from .layout import PAGE_SIZE
from .paging import level_span, mode_for
from .table import VALID, P2MTable

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
    pmd_index = mode_for(table.layout.word_size).index(vaddr, 2)
    last_page = vaddr + (pages - 1) * PAGE_SIZE
    pmd_start = last_page & ~(level_span(2) - 1)
    first_pfn = max(0, (pmd_start - vaddr) // PAGE_SIZE) * table.layout.per_page
    if pmd_index == 0 or int(lacking[0]) < first_pfn:
        return ""
    return (f"; these pfns are all in the list's last PMD (pfns from {first_pfn:#x}) and "
            f"p2m_vaddr {vaddr:#x} is not at index 0 of its PMD page (index {pmd_index}): "
            "the likely cause is a known bug of Xen's dump-core (4.16 and later), which drops "
            "the last PMD of such a list; the list in the dump is whole")


def crosscheck(table: P2MTable, pair_pfns, pair_gmfns, list_info: dict | None = None) -> list:
    """Findings comparing ``table`` with the (pfn, gmfn) pairs of .xen_p2m
    (padding already removed).  Duplicate pfns in the pairs are compared
    each (the container reports the duplication itself).  ``list_info``
    (a list walk's parameters) lets the report name a known Xen bug."""
    out: list = []
    kinds = table.kinds()
    mfns = table.mfns().astype(np.uint64)
    n = len(table)
    pp = np.asarray(pair_pfns, dtype=np.uint64)
    pg = np.asarray(pair_gmfns, dtype=np.uint64)
    inside = pp < np.uint64(n)
    idx = pp[inside].astype(np.int64)
    known = np.zeros(len(pp), dtype=bool)
    known[inside] = kinds[idx] == VALID

    # pages the tree does not know
    unknown = np.flatnonzero(~known)
    if len(unknown):
        up = unique(pp[unknown])
        why = []
        past = int(np.count_nonzero(~inside))
        if past:
            why.append(f"{past} at or past max_pfn {n:#x}")
        inner = idx[kinds[idx] != VALID]
        for code, name in ((1, "missing"), (2, "identity"), (3, "foreign")):
            c = int(np.count_nonzero(kinds[inner] == code))
            if c:
                why.append(f"{c} {name}")
        ex = [{"pfn": int(pp[i]), "gmfn": int(pg[i])} for i in unknown[:EXAMPLES].tolist()]
        out.append(F.Finding(
            F.DUMP_UNKNOWN_PAGE, F.WARNING,
            f"{len(unknown)} .xen_p2m page(s) name pfns the tree does not map to a frame "
            f"({', '.join(why)}): pfns {pfn_ranges(up)}",
            count=len(unknown), pfn_first=int(up[0]), pfn_last=int(up[-1]), examples=ex))

    # pairs whose gmfn differs from the tree
    kk = np.flatnonzero(known)
    tree_mfn = mfns[pp[kk].astype(np.int64)]
    bad = kk[tree_mfn != pg[kk]]
    if len(bad):
        ex = [{"pfn": int(pp[i]), "gmfn": int(pg[i]), "tree_mfn": int(mfns[int(pp[i])])}
              for i in bad[:EXAMPLES].tolist()]
        listing = ", ".join(f"pfn {e['pfn']:#x}: dump {e['gmfn']:#x}, tree {e['tree_mfn']:#x}"
                            for e in ex)
        out.append(F.Finding(
            F.DUMP_GMFN_MISMATCH, F.WARNING,
            f"{len(bad)} .xen_p2m pair(s) give a gmfn other than the tree's mfn ({listing})",
            count=len(bad), pfn_first=ex[0]["pfn"], mfn=ex[0]["gmfn"], examples=ex))

    # pfns the tree maps that the section lacks
    valid = np.flatnonzero(kinds == VALID)
    have = np.zeros(n, dtype=bool)
    have[idx] = True
    lacking = valid[~have[valid]]
    if len(lacking):
        ex = [{"pfn": int(p), "tree_mfn": int(mfns[p])} for p in lacking[:EXAMPLES].tolist()]
        out.append(F.Finding(
            F.DUMP_LACKS_PFN, F.WARNING,
            f"{len(lacking)} pfn(s) the {'list' if list_info else 'tree'} maps to a frame have "
            f"no .xen_p2m pair: pfns {pfn_ranges(lacking)}"
            + last_pmd_bug_hint(lacking, table, list_info),
            count=len(lacking), pfn_first=int(lacking[0]), pfn_last=int(lacking[-1]),
            examples=ex))
    return out
