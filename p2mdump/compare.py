"""Compare two walks of one guest's p2m: the three-level tree and the linear list.

A guest that publishes both (dom0, or a domU booted without
SIF_VIRT_P2M_4TOOLS) keeps them in step: the tree's leaves *are* the list's
pages (Linux ``xen_build_mfn_list_list``), so the two tables agree word for
word.  That includes the shared frames: a whole-identity list page maps
``p2m_identity`` and the tree's leaf slot names the same all-INVALID frame,
so both read INVALID there.  Any pfn where they differ means one of the two
was damaged, or changed while the guest ran (a dump taken unpaused).

Two kinds of finding, each with a count and the pfn ranges concerned (and
``tree-list-match``, info, when the pfns both cover all agree):

* ``tree-list-mismatch`` (warning) -- pfns both tables cover whose words
  differ; the examples give each range with the first pfn's two words;
* ``tree-list-extent`` -- pfns only one table covers.  The tree holds at
  most 2^27 pfns on 64-bit guests (512 GiB) and a list may go on: that is
  info.  Otherwise it is a warning when the extra pfns are not all missing.
"""
from __future__ import annotations

import numpy as np

from . import findings as F
from .crosscheck import format_runs, pfn_runs
from .table import MISSING, P2MTable, classify

TREE_LIST_MISMATCH = "tree-list-mismatch"
TREE_LIST_EXTENT = "tree-list-extent"
TREE_LIST_MATCH = "tree-list-match"

#: pfns compared at a time (bounds the temporary arrays)
CHUNK = 1 << 22
#: ranges kept as examples (the count covers them all)
RANGE_EXAMPLES = 64
#: ranges written in the message
RANGES_SHOWN = 5


class _Runs:
    """Runs of consecutive pfns fed in ascending chunks: the total count, the
    number of runs and the first :data:`RANGE_EXAMPLES` runs."""

    def __init__(self):
        self.count = 0
        self.n_runs = 0
        self.runs: list[list[int]] = []   # [first, last]
        self.last = -2

    def add(self, pfns: np.ndarray) -> None:
        """Add ascending ``pfns``, all past the ones added before."""
        if not len(pfns):
            return
        firsts, lasts = pfn_runs(pfns)
        self.count += len(pfns)
        if self.n_runs and int(firsts[0]) == self.last + 1:
            # the first run goes on from the last one of the previous chunk
            if len(self.runs) == self.n_runs:
                self.runs[-1][1] = int(lasts[0])
            firsts, lasts = firsts[1:], lasts[1:]
        self.n_runs += len(firsts)
        room = RANGE_EXAMPLES - len(self.runs)
        self.runs += [[lo, hi] for lo, hi in zip(firsts[:room].tolist(), lasts[:room].tolist())]
        self.last = int(pfns[-1])

    def text(self) -> str:
        return format_runs(self.runs, self.n_runs, RANGES_SHOWN)


def compare_tables(a: P2MTable, b: P2MTable, names: tuple = ("tree", "list"),
                   capacity_a: int | None = None) -> list:
    """Findings where tables ``a`` and ``b`` (named ``names``) disagree.

    ``capacity_a``: the most pfns ``a`` can hold (a tree: 2^27 on 64-bit);
    when ``a`` ends there and ``b`` goes on, the pfns past it are reported
    as info."""
    na, nb = names
    if a.layout.word_size != b.layout.word_size:
        return [F.Finding(TREE_LIST_MISMATCH, F.WARNING,
                          f"the {na} was read as {a.layout.word_size}-byte words and the {nb} "
                          f"as {b.layout.word_size}-byte words: the tables cannot be compared "
                          "(give --word-size)", count=max(len(a), len(b)))]
    out = []
    n = min(len(a), len(b))
    runs = _Runs()
    first = None
    for start in range(0, n, CHUNK):
        end = min(n, start + CHUNK)
        diff = np.flatnonzero(a.raw[start:end] != b.raw[start:end])
        if len(diff) and first is None:
            first = start + int(diff[0])
        runs.add(diff + start)
    if runs.count:
        assert first is not None        # set with the first differing pfn
        ex = [{"pfns": [lo, hi], na: a.entry(lo), nb: b.entry(lo)} for lo, hi in runs.runs]
        out.append(F.Finding(
            TREE_LIST_MISMATCH, F.WARNING,
            f"{runs.count} pfn(s) in {runs.n_runs} range(s) have other entries in the {na} "
            f"than in the {nb}: pfns {runs.text()} (first: pfn {first:#x}, {na} "
            f"{a.entry(first):#x}, {nb} {b.entry(first):#x})",
            level="leaf", count=runs.count, pfn_first=first, pfn_last=runs.last,
            examples=ex))
    elif n:
        out.append(F.Finding(TREE_LIST_MATCH, F.INFO,
                             f"the {na} and the {nb} agree on all {n} pfns both cover",
                             count=n, pfn_first=0, pfn_last=n - 1))
    if len(a) != len(b):
        out.append(_extent(a, b, names, capacity_a))
    return out


def _extent(a: P2MTable, b: P2MTable, names: tuple, capacity_a: int | None) -> F.Finding:
    """The finding about the pfns only the longer table covers."""
    (short, long_), (ns, nl) = ((a, b), names) if len(a) < len(b) else ((b, a), names[::-1])
    lo, hi = len(short), len(long_)
    runs = _Runs()
    for start in range(lo, hi, CHUNK):
        end = min(hi, start + CHUNK)
        codes = classify(long_.raw[start:end], long_.layout)
        runs.add(np.flatnonzero(codes != MISSING) + start)
    at_capacity = short is a and capacity_a is not None and lo == capacity_a
    why = (f"the most a {short.layout.word_size * 8}-bit {ns} holds" if at_capacity
           else f"where the {ns} ends")
    msg = (f"only the {nl} covers pfns {lo:#x}-{hi - 1:#x} ({hi - lo} pfns past pfn {lo:#x}, "
           f"{why}); ")
    if runs.count:
        msg += f"{runs.count} of them are not missing: pfns {runs.text()}"
    else:
        msg += "all of them are missing"
    severity = F.INFO if at_capacity or not runs.count else F.WARNING
    return F.Finding(TREE_LIST_EXTENT, severity, msg, level="leaf", count=hi - lo,
                     pfn_first=lo, pfn_last=hi - 1,
                     examples=[{"pfns": r, "in": nl} for r in runs.runs])
