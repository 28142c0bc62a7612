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
from .layout import LEVEL_LEAF, LEVEL_TOP, layout_for
from .record import Record
from .table import CHUNK, FOREIGN, IDENTITY, VALID, P2MTable
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
           progress=None, also=None, keep_table: bool = False) -> VerifyReport:
    """Walk the tree at ``top_mfn`` -- or what a :class:`p2mdump.autowalk.Resolved`
    names, tree or list -- and check it; see the module doc.  ``also``: a
    second Resolved (the other representation of the same guest, see
    :func:`p2mdump.autowalk.resolve_all`), walked, checked and compared.

    A single tree or list is checked as it is read and its table not kept
    (its ``report.walk.table`` is a :class:`~p2mdump.table.StreamedTable`:
    counts and runs, no entries), so verify needs memory for the runs, not
    for the table; ``keep_table``: keep it (a
    :class:`~p2mdump.table.P2MTable`), as a saved p2m, an ``xl dump-core``
    (cross-checked against its .xen_p2m) and the two representations of one
    guest (compared) always do."""
    from .autowalk import Resolved, add_container_findings, can_stream, cross_checked, \
        walk_resolved

    # one tree or list, no .xen_p2m to cross-check: the table need not be kept
    checks = None
    if not keep_table and also is None and (
            can_stream(top_mfn, source) if isinstance(top_mfn, Resolved)
            else not cross_checked(source)):
        checks = _StreamChecks()
    if isinstance(top_mfn, Resolved):
        max_pfn = top_mfn.max_pfn
        res = walk_resolved(source, top_mfn, progress=progress, stream=checks)
        add_container_findings(source, res)
        if max_pfn is None and res.max_pfn_source in ("container", "saved"):
            max_pfn = res.max_pfn     # an xl save stream's arch.max_pfn or end_pfn
    else:
        res = walk(source, top_mfn, word_size=word_size, max_pfn=max_pfn, progress=progress,
                   stream=checks)
    entries = None
    if checks is not None:
        entries = checks.entries or _IdentityEntries(res.layout)
    out = _checks(source, res, max_pfn, entries)
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


def _checks(source, res: WalkResult, max_pfn, entries=None) -> list:
    """The walk's findings and every check of the table (``entries``: see
    :func:`_scan_entries`)."""
    out = list(res.findings)
    scan = _scan_entries(res.table, res.layout, entries)
    out += _table_checks(res, scan)
    out += _garbage_leaves(source, res, scan)
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
    # two walks of one guest are compared entry by entry: neither is streamed
    assert isinstance(tree.table, P2MTable) and isinstance(lst.table, P2MTable)
    out += [("both", f) for f in compare_tables(tree.table, lst.table, ("tree", "list"),
                                                capacity_a=tree.layout.capacity)]
    return out, other


def _ranges(pfns: np.ndarray, limit: int = EXAMPLES) -> list:
    """First ``limit`` ranges [first, last] of consecutive pfns."""
    firsts, lasts = pfn_runs(pfns)
    return [[a, b] for a, b in zip(firsts[:limit].tolist(), lasts[:limit].tolist())]


class _IdentityEntries:
    """The checks made entry by entry, fed the table's identity entries
    (:meth:`feed`, in pfn order) -- only those can carry both flag bits or
    fail to hold their own pfn.

    An identity run's decoded entries step by one, so an entry of it holds
    its own pfn exactly when the run's first does: the question is asked of
    each entry, which gives the run's answer without knowing the run.
    """

    def __init__(self, layout):
        self.L = layout
        #: entries with both flag bits; the first (pfn, raw)
        self.both_n = 0
        self.both: list = []
        #: of them, those in an identity run that does not hold its own pfns
        self.both_in_mis = 0
        #: the first identity entries (without the FOREIGN bit) not holding
        #: their own pfn, (pfn, raw)
        self.mism: list = []
        self._rows: list = []     # (leaf rows, garbage entries) of both-flag entries

    def feed(self, words: np.ndarray, start: int, s: np.ndarray, e: np.ndarray) -> None:
        """The entries [s[i], e[i]) of ``words`` (pfns start..) are all of the
        identity entries among them; the spans ascend.  Neighbouring spans are
        looked at together, :data:`CHUNK` entries at a time."""
        i = 0
        while i < len(s):
            lo = int(s[i])
            j = max(i, int(np.searchsorted(e, lo + CHUNK, side="right")) - 1)
            hi = int(e[j])
            i = j + 1
            for a in range(lo, hi, CHUNK):
                self._piece(words[a:min(hi, a + CHUNK)], start + a)

    def _piece(self, w: np.ndarray, p0: int) -> None:
        L = self.L
        t = w.dtype.type
        fm, rest = t(L.flag_mask), t(L.word_mask & ~L.flag_mask)
        m = w >= fm
        m &= w != t(L.invalid)
        pos = np.flatnonzero(m)
        if len(pos):
            vals = w[pos]
            pfns = pos + p0
            self.both_n += len(pos)
            if len(self.both) < EXAMPLES:
                k = EXAMPLES - len(self.both)
                self.both += list(zip(pfns[:k].tolist(), vals[:k].tolist()))
            in_mis = (vals & rest) != pfns.astype(w.dtype)
            self.both_in_mis += int(np.count_nonzero(in_mis))
            rows, n = np.unique(pfns[~in_mis] // L.per_page, return_counts=True)
            self._rows.append((rows, n))
        if len(self.mism) < EXAMPLES:
            own = np.arange(p0, p0 + len(w), dtype=w.dtype)
            hit = np.flatnonzero(((w & fm) == t(L.identity_bit)) & ((w & rest) != own))
            hit = hit[:EXAMPLES - len(self.mism)]
            self.mism += list(zip((hit + p0).tolist(), w[hit].tolist()))

    def points(self, n_rows: int) -> np.ndarray:
        """Garbage entries with both flag bits per whole leaf row."""
        if not self._rows:
            return np.zeros(n_rows, dtype=np.int64)
        rows = np.concatenate([r for r, _ in self._rows])
        n = np.concatenate([c for _, c in self._rows])
        keep = rows < n_rows
        return np.bincount(rows[keep], weights=n[keep], minlength=n_rows).astype(np.int64)


class _StreamChecks:
    """The entry checks of a streamed walk (:func:`p2mdump.walker.walk`'s
    ``stream``): the identity segments of each window fed as they go by."""

    def __init__(self):
        self.entries: _IdentityEntries | None = None

    def __call__(self, words, start, seg, codes) -> None:
        if self.entries is None:
            self.entries = _IdentityEntries(layout_for(words.dtype.itemsize))
        ident = np.flatnonzero(codes == IDENTITY)
        if len(ident):
            ends = np.append(seg[1:], len(words))
            self.entries.feed(words, start, seg[ident], ends[ident])


class _EntryScan(Record):
    """What the per-entry checks find, worked out on the table's runs.

    A run (see :meth:`P2MTable.run_arrays`) holds entries of one kind whose
    raw words step by one -- identity runs are joined by their decoded value,
    so entries with both flag bits may sit inside one -- which makes every
    check but one a question about the run's first entry: an identity run
    holds its own pfns iff its first decoded value is its first pfn; the
    mfns of a valid or foreign run past the limit are a tail of it.  Only
    entries carrying both flag bits (always inside identity runs) are found
    entry by entry (:class:`_IdentityEntries`).
    """

    __slots__ = ("mism_n", "mism", "both_n", "both", "foreign", "per_row")

    def __init__(self, mism_n, mism, both_n, both, foreign, per_row):
        #: identity entries (without the FOREIGN bit) not holding their own
        #: pfn; the first (pfn, raw)
        self.mism_n = mism_n
        self.mism = mism
        #: entries with both flag bits; the first (pfn, raw)
        self.both_n = both_n
        self.both = both
        #: (starts, ends, first decoded mfns) of the foreign runs
        self.foreign = foreign
        #: garbage entries per whole leaf page of the table
        self.per_row = per_row


def _scan_entries(table, L, entries: _IdentityEntries | None = None) -> _EntryScan:
    """``entries``: the identity entries' checks, fed already (a streamed
    walk); else they are fed here from ``table.raw``."""
    n = len(table)
    fpp = L.per_page
    starts, ends, codes, first = table.run_arrays()
    dt = first.dtype.type
    rest0 = (first & dt(L.word_mask & ~L.flag_mask)).astype(np.int64)
    ident = codes == IDENTITY
    mis = ident & (rest0 != starts)
    if entries is None:
        entries = _IdentityEntries(L)
        entries.feed(table.raw, 0, starts[ident], ends[ident])
    n_rows = n // fpp
    lens = ends - starts
    mism_n = int(lens[mis].sum()) - entries.both_in_mis
    fo = codes == FOREIGN
    # garbage: whole mismatched identity runs, MFN 0 and MFNs past the limit
    # of valid and foreign runs (a first entry, a tail), both-flag entries
    mfn_max = min(MFN_MAX_64, L.identity_bit - 1)
    vf = (codes == VALID) | fo
    s, e, r = starts[vf], ends[vf], rest0[vf]
    zero = r == 0
    tail = s + np.clip(mfn_max + 1 - r, 0, None)
    gs = np.concatenate([starts[mis], s[zero], tail])
    ge = np.concatenate([ends[mis], s[zero] + 1, e])
    keep = ge > gs
    gs, ge = gs[keep], ge[keep]
    order = np.argsort(gs, kind="stable")
    gs, ge = gs[order], ge[order]
    bounds = np.arange(n_rows + 1, dtype=np.int64) * fpp
    per_row = np.diff(_measure_below(gs, ge, bounds)) + entries.points(n_rows)
    return _EntryScan(mism_n, entries.mism if mism_n else [], entries.both_n, entries.both,
                      (starts[fo], ends[fo], rest0[fo]), per_row)


def _measure_below(gs: np.ndarray, ge: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Per x: how many integers of the disjoint intervals [gs, ge) (sorted)
    lie below it."""
    if not len(gs):
        return np.zeros(len(x), dtype=np.int64)
    cum = np.concatenate([[0], np.cumsum(ge - gs)])
    k = np.searchsorted(gs, x, side="right") - 1
    kk = np.maximum(k, 0)
    inside = np.clip(x - gs[kk], 0, ge[kk] - gs[kk])
    return np.where(k >= 0, cum[kk] + inside, 0)


def _table_checks(res: WalkResult, scan: _EntryScan) -> list:
    table, L = res.table, res.layout
    out = []
    ib = L.identity_bit
    mism, both = scan.mism, scan.both
    if scan.mism_n:
        (p0, r0) = mism[0]
        ex = [{"pfn": p, "raw": r, "expected": p | ib} for p, r in mism[:EXAMPLES]]
        out.append(F.Finding(IDENTITY_MISMATCH, F.WARNING,
                             f"{scan.mism_n} identity entries do not hold their own pfn "
                             f"(first: pfn {p0:#x} holds {r0:#x}, expected {p0 | ib:#x})",
                             level=LEVEL_LEAF, count=scan.mism_n, pfn_first=p0, examples=ex))
    if scan.both_n:
        (p0, r0) = both[0]
        out.append(F.Finding(BAD_FLAGS, F.WARNING,
                             f"{scan.both_n} entries carry both the IDENTITY and the FOREIGN bit "
                             f"(first: pfn {p0:#x} = {r0:#x})",
                             level=LEVEL_LEAF, count=scan.both_n, pfn_first=p0,
                             examples=[{"pfn": p, "raw": r} for p, r in both]))
    fs, fe, fm = scan.foreign
    if len(fs):
        n = int((fe - fs).sum())
        join = np.flatnonzero(fe[:-1] != fs[1:]) + 1
        rng = [[a, b] for a, b in zip(fs[np.concatenate([[0], join])][:EXAMPLES].tolist(),
                                      (fe[np.append(join - 1, len(fe) - 1)] - 1)[:EXAMPLES]
                                      .tolist())]
        out.append(F.Finding(FOREIGN_ENTRIES, F.INFO,
                             f"{n} foreign (grant-mapped) entries, first ranges: "
                             + ", ".join(f"{a:#x}-{b:#x}" for a, b in rng),
                             level=LEVEL_LEAF, count=n, pfn_first=int(fs[0]),
                             pfn_last=int(fe[-1]) - 1,
                             examples=[{"pfns": r} for r in rng]))
        own_n, own = _own_mfns(table, fs, fe, fm)
        if own_n:
            p0, m0 = own[0]
            out.append(F.Finding(FOREIGN_OWN_MFN, F.WARNING,
                                 f"{own_n} foreign entries name a machine frame the guest also "
                                 f"maps as its own (first: pfn {p0:#x} -> mfn {m0:#x})",
                                 level=LEVEL_LEAF, count=own_n, pfn_first=p0, mfn=m0,
                                 examples=[{"pfn": p, "mfn": m} for p, m in own]))
    return out


def _own_mfns(table, fs, fe, fm) -> tuple[int, list]:
    """(number of foreign entries whose mfn lies in a run of the table's
    valid entries, the first (pfn, mfn) of them) for foreign runs [fs, fe)
    whose mfns start at ``fm``."""
    starts, ends, codes, first = table.run_arrays()
    sel = codes == VALID
    if not sel.any():
        return 0, []
    m0 = first[sel].astype(np.int64)
    m1 = m0 + (ends[sel] - starts[sel])
    order = np.argsort(m0, kind="stable")
    m0, top = m0[order], np.maximum.accumulate(m1[order])
    new = np.ones(len(m0), dtype=bool)
    new[1:] = m0[1:] > top[:-1]
    first_i = np.flatnonzero(new)
    us, ue = m0[first_i], top[np.append(first_i[1:] - 1, len(m0) - 1)]
    f1 = fm + (fe - fs)
    overlap = _measure_below(us, ue, f1) - _measure_below(us, ue, fm)
    examples: list = []
    for r in np.flatnonzero(overlap)[:EXAMPLES].tolist():
        a, b, s = int(fm[r]), int(f1[r]), int(fs[r])
        k = max(0, int(np.searchsorted(us, a, side="right")) - 1)
        while k < len(us) and us[k] < b and len(examples) < EXAMPLES:
            for m in range(max(a, int(us[k])), min(b, int(ue[k]))):
                examples.append((s + m - a, m))
                if len(examples) >= EXAMPLES:
                    break
            k += 1
    return int(overlap.sum()), examples


def _garbage_leaves(source, res: WalkResult, scan: _EntryScan) -> list:
    """Leaf pages of the table whose entries mostly do not decode."""
    L = res.layout
    fpp = L.per_page
    per_row = scan.per_row
    if per_row is None or not len(per_row):
        return []
    bad = np.flatnonzero(per_row > GARBAGE_FRACTION * fpp)
    if not len(bad):
        return []
    bad_rows, bad_counts = bad.tolist(), per_row[bad].tolist()
    # which frame holds each leaf: tree leaves from the mid pages; a list's
    # pages are not named by tree pages (the finding names pfns and vaddrs)
    leaf_mfn = parent = None
    if res.representation == "tree":
        assert res.top_mfn is not None  # a tree's walk has one
        tp = read_tree_pages(source, res.top_mfn, L)
        leaf_mfn, parent = tp.leaf, tp.top
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
