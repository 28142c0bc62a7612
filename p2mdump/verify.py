"""verify(): every finding of the walk plus the consistency checks an analyst
cares about.

The walk already reports pointers to MFN 0 or to frames outside the image,
shared pages that are not placeholders (a mid or leaf page reachable from two
slots, a placeholder whose content is not all INVALID / not all one leaf
placeholder), pages used at two levels, duplicate machine frames and
non-missing entries past a given max_pfn; as ``walk`` does, the container's
own findings and, for an ``xl dump-core`` file, the cross-check against
.xen_p2m are added.  On top of that verify checks, in bulk over the table:

* ``identity-mismatch`` — identity entries whose value is not their own pfn;
* ``bad-flags`` — entries with both the IDENTITY and FOREIGN bit (but not
  INVALID), which no kernel writes;
* ``foreign-entries`` (info) — grant-mapped frames of other domains, listed
  as ranges: normal in a backend or dom0, so not a problem by themselves;
* ``foreign-own-mfn`` — a foreign entry naming a frame the guest also maps as
  its own;
* ``garbage-leaf`` — leaf pages whose entries mostly do not decode as a p2m
  entry (MFN 0, MFNs past 2^40, both flag bits, identity mismatch);
* ``max-pfn-unknown`` (info) — no max_pfn was given, so entries past it
  cannot be checked.

A guest that publishes both the tree and the linear list has both walked
(``also``): each walk's findings and checks (those of the second walk that
the first already reported are left out), and the two tables compared
(:mod:`p2mdump.compare`: ``tree-list-mismatch``, ``tree-list-extent``); a
second walk that cannot be done at all is a ``walk-failed`` warning.

A report is ``ok`` when no finding is a warning.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import findings as F
from .crosscheck import pfn_runs
from .errors import P2MDumpError
from .layout import LEVEL_LEAF, LEVEL_TOP
from .table import FOREIGN, IDENTITY, MISSING, VALID, classify
from .treeinfo import read_tree_pages
from .walker import WalkResult, walk

IDENTITY_MISMATCH = "identity-mismatch"
BAD_FLAGS = "bad-flags"
FOREIGN_ENTRIES = "foreign-entries"
FOREIGN_OWN_MFN = "foreign-own-mfn"
GARBAGE_LEAF = "garbage-leaf"
MAX_PFN_UNKNOWN = "max-pfn-unknown"
WALK_FAILED = "walk-failed"
#: a leaf is garbage when more than this fraction of its entries is
GARBAGE_FRACTION = 0.5
MFN_MAX_64 = (1 << 40) - 1
EXAMPLES = 5


@dataclass
class VerifyReport:
    walk: WalkResult
    findings: list = field(default_factory=list)
    #: the walk of the other representation, when both were walked
    other: WalkResult | None = None
    #: per finding: the walk it comes from ("tree" or "list"), "both" for the
    #: comparison of the two tables
    origins: list = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(f.is_warning for f in self.findings)

    def warnings(self) -> list:
        return [f for f in self.findings if f.is_warning]

    def walks(self) -> list:
        """The walks done: the preferred representation first."""
        return [self.walk] + ([self.other] if self.other is not None else [])

    def origin(self, i: int) -> str:
        return self.origins[i] if i < len(self.origins) else self.walk.representation

    def to_dict(self) -> dict:
        s = self.walk.summary()
        s.pop("findings", None)
        s["ok"] = self.ok
        s["warnings"] = len(self.warnings())
        s["compared"] = self.other is not None
        s["walks"] = {}
        for w in self.walks():
            one = w.summary()
            one.pop("findings", None)
            one["warnings"] = sum(1 for i, f in enumerate(self.findings)
                                  if f.is_warning and self.origin(i) == w.representation)
            s["walks"][w.representation] = one
        s["findings"] = [dict(f.to_dict(), walk=self.origin(i))
                         for i, f in enumerate(self.findings)]
        return s


def verify(source, top_mfn, *, word_size="auto", max_pfn: int | None = None,
           progress=None, also=None) -> VerifyReport:
    """Walk the tree at ``top_mfn`` -- or what a :class:`p2mdump.autowalk.Resolved`
    names, tree or list -- and check it; see the module doc.  ``also``: a
    second Resolved (the other representation of the same guest, see
    :func:`p2mdump.autowalk.resolve_all`), walked, checked and compared."""
    from .autowalk import Resolved, add_container_findings, walk_resolved

    if isinstance(top_mfn, Resolved):
        max_pfn = top_mfn.max_pfn
        res = walk_resolved(source, top_mfn, progress=progress)
        add_container_findings(source, res)
        if max_pfn is None and res.max_pfn_source in ("container", "saved"):
            max_pfn = res.max_pfn     # an xl save stream's arch.max_pfn or end_pfn
    else:
        res = walk(source, top_mfn, word_size=word_size, max_pfn=max_pfn, progress=progress)
    out = _checks(source, res, max_pfn)
    origins = [res.representation] * len(out)
    other = None
    if also is not None:
        more, other = _other_walk(source, also, res, progress)
        seen = {_same(f) for f in out}
        more = [(o, f) for o, f in more if _same(f) not in seen]
        out += [f for _, f in more]
        origins += [o for o, _ in more]
    order = {F.WARNING: 0, F.INFO: 1}
    ranked = sorted(zip(out, origins), key=lambda p: order.get(p[0].severity, 2))
    return VerifyReport(walk=res, findings=[f for f, _ in ranked], other=other,
                        origins=[o for _, o in ranked])


def _checks(source, res: WalkResult, max_pfn) -> list:
    """The walk's findings and every check of the table."""
    out = list(res.findings)
    out += _table_checks(res)
    out += _garbage_leaves(source, res)
    if max_pfn is None:
        out.append(F.Finding(MAX_PFN_UNKNOWN, F.INFO,
                             f"no max_pfn given: the table ends at the last pfn not missing "
                             f"({res.max_pfn:#x}); entries past the guest's max_pfn cannot be "
                             "checked (give --max-pfn, shared_info arch.max_pfn)",
                             level=LEVEL_TOP, mfn=res.top_mfn))
    return out


def _same(f) -> tuple:
    """What makes two findings of the two walks the same finding."""
    return (f.kind, f.severity, f.count, f.pfn_first, f.pfn_last)


def _other_walk(source, also, first: WalkResult, progress):
    """([(origin, finding)], WalkResult or None) of the second representation."""
    from .autowalk import add_container_findings, walk_resolved
    from .compare import compare_tables

    try:
        other = walk_resolved(source, also, progress=progress)
        add_container_findings(source, other)
    except P2MDumpError as exc:
        return [(also.representation, F.Finding(
            WALK_FAILED, F.WARNING,
            f"the guest also publishes its p2m as a {also.representation}, but it cannot be "
            f"walked: {exc}", mfn=also.top_mfn))], None
    out = [(other.representation, f) for f in _checks(source, other, also.max_pfn)]
    tree, lst = (other, first) if other.representation == "tree" else (first, other)
    out += [("both", f) for f in compare_tables(tree.table, lst.table, ("tree", "list"),
                                                capacity_a=tree.layout.capacity)]
    return out, other


def _ranges(pfns: np.ndarray, limit: int = EXAMPLES) -> list:
    """First ``limit`` ranges [first, last] of consecutive pfns."""
    firsts, lasts = pfn_runs(pfns)
    return [[a, b] for a, b in zip(firsts[:limit].tolist(), lasts[:limit].tolist())]


def _table_checks(res: WalkResult) -> list:
    table, L = res.table, res.layout
    out = []
    ib = L.identity_bit
    rest_mask = L.word_mask & ~L.flag_mask
    mism: list[int] = []
    mism_n = 0
    both: list[int] = []
    both_n = 0
    foreign_pfns = []
    foreign_mfns = []
    for start, chunk in table.chunks():
        c = chunk.astype(np.uint64)
        codes = classify(chunk, L)
        pfns = np.arange(start, start + len(c), dtype=np.uint64)
        flags = c & np.uint64(L.flag_mask)
        bad_both = (flags == np.uint64(L.flag_mask)) & (c != np.uint64(L.invalid))
        idm = (codes == IDENTITY) & ~bad_both & ((c & np.uint64(rest_mask)) != pfns)
        n = int(idm.sum())
        if n:
            mism_n += n
            if len(mism) < EXAMPLES:
                mism += (np.flatnonzero(idm)[:EXAMPLES] + start).tolist()
        n = int(bad_both.sum())
        if n:
            both_n += n
            if len(both) < EXAMPLES:
                both += (np.flatnonzero(bad_both)[:EXAMPLES] + start).tolist()
        fo = np.flatnonzero((codes == FOREIGN) & ~bad_both)
        if len(fo):
            foreign_pfns.append(fo + start)
            foreign_mfns.append(c[fo] & np.uint64(rest_mask))
    if mism_n:
        ex = [{"pfn": p, "raw": table.entry(p), "expected": p | ib} for p in mism[:EXAMPLES]]
        out.append(F.Finding(IDENTITY_MISMATCH, F.WARNING,
                             f"{mism_n} identity entries do not hold their own pfn "
                             f"(first: pfn {mism[0]:#x} holds {table.entry(mism[0]):#x}, "
                             f"expected {mism[0] | ib:#x})",
                             level=LEVEL_LEAF, count=mism_n, pfn_first=mism[0], examples=ex))
    if both_n:
        out.append(F.Finding(BAD_FLAGS, F.WARNING,
                             f"{both_n} entries carry both the IDENTITY and the FOREIGN bit "
                             f"(first: pfn {both[0]:#x} = {table.entry(both[0]):#x})",
                             level=LEVEL_LEAF, count=both_n, pfn_first=both[0],
                             examples=[{"pfn": p, "raw": table.entry(p)} for p in both]))
    if foreign_pfns:
        fp = np.concatenate(foreign_pfns)
        fm = np.concatenate(foreign_mfns)
        rng = _ranges(fp)
        out.append(F.Finding(FOREIGN_ENTRIES, F.INFO,
                             f"{len(fp)} foreign (grant-mapped) entries, first ranges: "
                             + ", ".join(f"{a:#x}-{b:#x}" for a, b in rng),
                             level=LEVEL_LEAF, count=len(fp), pfn_first=int(fp[0]),
                             pfn_last=int(fp[-1]),
                             examples=[{"pfns": r} for r in rng]))
        own = _in_valid_runs(table, fm)
        if own.any():
            i = np.flatnonzero(own)
            out.append(F.Finding(FOREIGN_OWN_MFN, F.WARNING,
                                 f"{len(i)} foreign entries name a machine frame the guest also "
                                 f"maps as its own (first: pfn {int(fp[i[0]]):#x} -> "
                                 f"mfn {int(fm[i[0]]):#x})",
                                 level=LEVEL_LEAF, count=len(i), pfn_first=int(fp[i[0]]),
                                 mfn=int(fm[i[0]]),
                                 examples=[{"pfn": int(fp[k]), "mfn": int(fm[k])}
                                           for k in i[:EXAMPLES].tolist()]))
    return out


def _in_valid_runs(table, mfns: np.ndarray) -> np.ndarray:
    """Per mfn: inside a run of the table's valid entries."""
    starts, ends, codes, first = table.run_arrays()
    sel = codes == VALID
    if not sel.any():
        return np.zeros(len(mfns), dtype=bool)
    m0 = first[sel].astype(np.uint64)
    m1 = m0 + (ends[sel] - starts[sel]).astype(np.uint64)
    order = np.argsort(m0, kind="stable")
    m0, m1 = m0[order], np.maximum.accumulate(m1[order])
    pos = np.searchsorted(m0, mfns, side="right") - 1
    ok = pos >= 0
    pos = np.maximum(pos, 0)
    return ok & (mfns < m1[pos])


def _garbage_leaves(source, res: WalkResult) -> list:
    """Leaf pages of the table whose entries mostly do not decode."""
    table, L = res.table, res.layout
    fpp = L.per_page
    n_rows = len(table) // fpp
    if not n_rows:
        return []
    # which frame holds each leaf: tree leaves from the mid pages; a list's
    # pages are not named by tree pages (the finding names pfns and vaddrs)
    leaf_mfn = parent = None
    if res.representation == "tree":
        assert res.top_mfn is not None  # a tree's walk has one
        tp = read_tree_pages(source, res.top_mfn, L)
        leaf_mfn, parent = tp.leaf, tp.top
    mfn_max = np.uint64(min(MFN_MAX_64, L.identity_bit - 1))
    rest_mask = np.uint64(L.word_mask & ~L.flag_mask)
    bad_rows = []
    bad_counts = []
    rows_per = max(1, (1 << 22) // fpp)
    for r0 in range(0, n_rows, rows_per):
        r1 = min(n_rows, r0 + rows_per)
        c = table.raw[r0 * fpp:r1 * fpp].astype(np.uint64)
        codes = classify(table.raw[r0 * fpp:r1 * fpp], L)
        pfns = np.arange(r0 * fpp, r1 * fpp, dtype=np.uint64)
        rest = c & rest_mask
        flags = c & np.uint64(L.flag_mask)
        inv = codes == MISSING
        garbage = ~inv & (
            ((flags == np.uint64(L.flag_mask)))
            | ((codes == VALID) & ((c == 0) | (c > mfn_max)))
            | ((codes == IDENTITY) & (rest != pfns))
            | ((codes == FOREIGN) & ((rest == 0) | (rest > mfn_max))))
        per_row = garbage.reshape(-1, fpp).sum(axis=1)
        hit = np.flatnonzero(per_row > GARBAGE_FRACTION * fpp)
        bad_rows += (hit + r0).tolist()
        bad_counts += per_row[hit].tolist()
    if not bad_rows:
        return []
    ex = []
    for row, n in list(zip(bad_rows, bad_counts))[:EXAMPLES]:
        ex.append({"leaf_slot": row,
                   "mfn": int(leaf_mfn[row]) if leaf_mfn is not None else None,
                   "garbage_entries": int(n),
                   "pfns": [row * fpp, (row + 1) * fpp - 1]})
    row0 = bad_rows[0]
    mfn0 = int(leaf_mfn[row0]) if leaf_mfn is not None else None
    where = f"MFN {mfn0:#x}, " if mfn0 is not None else ""
    what = "leaf" if res.representation == "tree" else "list"
    return [F.Finding(GARBAGE_LEAF, F.WARNING,
                      f"{len(bad_rows)} {what} page(s) decode as mostly garbage (first: {where}"
                      f"pfns {row0 * fpp:#x}-{(row0 + 1) * fpp - 1:#x}, "
                      f"{bad_counts[0]} of {fpp} entries are not p2m entries)",
                      level=LEVEL_LEAF, slot=row0 % fpp, mfn=mfn0,
                      parent_mfn=int(parent[row0 // fpp]) if parent is not None else None,
                      count=len(bad_rows),
                      pfn_first=row0 * fpp, pfn_last=(bad_rows[-1] + 1) * fpp - 1,
                      examples=ex)]
