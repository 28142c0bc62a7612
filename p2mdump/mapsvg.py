"""A picture of a guest's p2m as SVG, written by hand (no plotting library).

Strip 1: the guest's pfn space, binned (one bin per pixel column, whatever
the guest size), each bin a stacked bar of the share of each kind (valid /
missing / identity / foreign).  The boundaries between kinds are ticked and
the longest-lived ones labelled with their pfn and their guest physical
address in MB; an axis in MB/GB runs below.

Strip 2: machine memory (MFN 0 to the end of the image, or the highest page
drawn), with a row each for the top page, the mid pages, the leaf pages and
the shared placeholders: where the tree's own pages sit.  For a linear list
the rows are the top page table (p2m_cr3), the page tables below it on the
list's path, the list's own pages and the shared frames (p2m_missing /
p2m_identity and the shared PTE pages).  A guest with both gets both strips.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from xml.sax.saxutils import escape

import numpy as np

from .layout import KINDS, PAGE_SIZE
from .table import CHUNK

COLOURS = {"valid": "#3f9c5a", "missing": "#d4d4d4", "identity": "#4a78c8",
           "foreign": "#e07b39"}
TREE_COLOURS = {"top": "#c0392b", "mid": "#8e44ad", "leaf": "#2c7fb8",
                "placeholder": "#7f7f7f"}
#: the list's rows take the colours of the tree rows of the same role
LIST_COLOURS = {"root": TREE_COLOURS["top"], "table": TREE_COLOURS["mid"],
                "page": TREE_COLOURS["leaf"], "placeholder": TREE_COLOURS["placeholder"]}
WIDTH = 1200
LEFT = 110
PLOT_W = 1040
STRIP_H = 56
MAX_LABELS = 24
LABEL_GAP = 92
MAX_BOUNDARIES = 1 << 22

#: characters XML 1.0 does not allow in a document (its production Char):
#: control characters other than tab, newline and carriage return, lone
#: surrogates (undecodable bytes of a file name), U+FFFE and U+FFFF
_NOT_XML_CHAR = re.compile("[^\t\n\r\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def xml_text(s: str) -> str:
    """``s`` as XML character data: undecodable bytes of a file name (held
    as surrogates, see PEP 383) and characters XML 1.0 forbids become
    U+FFFD, and ``&``, ``<``, ``>``, quotes are escaped."""
    try:
        s = s.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    except UnicodeEncodeError:
        pass  # lone surrogates not from a file name: replaced below
    return escape(_NOT_XML_CHAR.sub("\ufffd", s), {'"': "&quot;"})


def _fmt_bytes(n: float) -> str:
    for unit, size in (("TB", 1 << 40), ("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if n >= size:
            v = n / size
            return f"{v:.0f} {unit}" if v == int(v) else f"{v:.1f} {unit}"
    return f"{int(n)} B"


def _mb(pfn: int) -> str:
    mb = pfn * PAGE_SIZE / (1 << 20)
    return f"{mb:.0f} MB" if mb == int(mb) else f"{mb:.1f} MB"


def _nice_step(span: float, target: int = 8) -> float:
    raw = span / target
    mag = 2 ** math.floor(math.log2(raw)) if raw > 0 else 1
    for m in (1, 2, 4, 8):
        if mag * m >= raw:
            return mag * m
    return mag * 8


def kind_bins(table, nbins: int):
    """(bin size in pfns, counts array (nbins, 4)) of the table's kinds.

    Counted on the table's runs (:meth:`~p2mdump.table.P2MTable.run_arrays`,
    each of one kind), not entry by entry: every run is cut at the bin edges
    it crosses and each piece is added to its bin."""
    n = len(table)
    size = max(1, -(-n // nbins))
    nb = max(1, -(-n // size))
    starts, _, codes, _ = table.run_arrays()
    cuts = np.union1d(starts, np.arange(0, n, size, dtype=np.int64))
    pieces = np.diff(np.append(cuts, n))
    run = np.searchsorted(starts, cuts, side="right") - 1
    key = (cuts // size) * 4 + codes[run].astype(np.int64)
    # (float weights: exact, as no bin holds 2^53 pfns)
    counts = np.bincount(key, weights=pieces, minlength=nb * 4)[:nb * 4]
    return size, np.rint(counts).astype(np.int64).reshape(nb, 4)


def kind_boundaries(table):
    """(pfns where the kind changes, code before, code after), capped: the
    boundaries up to the end of the :data:`~p2mdump.table.CHUNK` of pfns in
    which more than :data:`MAX_BOUNDARIES` were found (not counting those on
    the first pfn of a chunk).  Taken from the table's runs, each of one kind."""
    starts, _, codes, _ = table.run_arrays()
    change = np.flatnonzero(codes[1:] != codes[:-1]) + 1
    pos = starts[change].astype(np.int64)
    inner = pos[pos % CHUNK != 0]
    if len(inner) > MAX_BOUNDARIES:
        keep = pos < (inner[MAX_BOUNDARIES] // CHUNK + 1) * CHUNK
        pos, change = pos[keep], change[keep]
    return pos, codes[change - 1], codes[change]


class _Svg:
    def __init__(self):
        self.parts: list[str] = []

    def add(self, s: str):
        self.parts.append(s)

    def rect(self, x, y, w, h, fill, title=None, cls=None):
        c = f' class="{cls}"' if cls else ""
        t = f"<title>{xml_text(title)}</title>" if title else ""
        if t:
            self.add(f'<rect x="{x:.2f}" y="{y:.2f}" width="{w:.2f}" height="{h:.2f}" '
                     f'fill="{fill}"{c}>{t}</rect>')
        else:
            self.add(f'<rect x="{x:.2f}" y="{y:.2f}" width="{w:.2f}" height="{h:.2f}" '
                     f'fill="{fill}"{c}/>')

    def line(self, x1, y1, x2, y2, stroke="#333", width=1, cls=None):
        c = f' class="{cls}"' if cls else ""
        self.add(f'<line x1="{x1:.2f}" y1="{y1:.2f}" x2="{x2:.2f}" y2="{y2:.2f}" '
                 f'stroke="{stroke}" stroke-width="{width}"{c}/>')

    def text(self, x, y, s, size=11, anchor="start", cls=None, weight=None, fill="#222"):
        c = f' class="{cls}"' if cls else ""
        w = f' font-weight="{weight}"' if weight else ""
        self.add(f'<text x="{x:.2f}" y="{y:.2f}" font-size="{size}" text-anchor="{anchor}" '
                 f'fill="{fill}"{w}{c}>{xml_text(s)}</text>')


def render_map(table, tree=None, *, list_pages=None, frame_limit: int | None = None,
               title: str = "", placeholders=None) -> str:
    """The SVG text of the map of ``table``, and of where the p2m's own pages
    are in machine memory: ``tree``'s (a :class:`p2mdump.treeinfo.TreePages`;
    ``placeholders`` = (mid placeholder, leaf placeholders) overrides what it
    guesses) and ``list_pages``' (a :class:`p2mdump.listinfo.ListPages`)."""
    n = len(table)
    svg = _Svg()
    y = 30
    svg.text(LEFT, y, title or "p2m map", size=15, weight="bold", cls="title")
    y += 18
    ws = table.layout.word_size
    svg.text(LEFT, y, f"{ws}-byte words, max_pfn {n:#x} ({n} pfns, "
             f"{_fmt_bytes(n * PAGE_SIZE)} of guest physical memory)", size=11)
    y += 26
    svg.text(LEFT, y, "guest pfn space (coloured by kind)", size=12, weight="bold")
    y += 8
    strip1_y = y
    if n == 0:
        svg.rect(LEFT, y, PLOT_W, STRIP_H, "#ffffff", cls="empty")
        svg.text(LEFT + PLOT_W / 2, y + STRIP_H / 2, "empty table", anchor="middle")
        y += STRIP_H + 20
        bin_size = 1
    else:
        bin_size, counts = kind_bins(table, PLOT_W)
        y = _draw_kind_strip(svg, counts, bin_size, n, y)
        y = _draw_boundaries(svg, table, n, strip1_y, y)
        y = _draw_axis(svg, n, y)
        y = _draw_legend(svg, table, y)
    svg.add(f'<desc id="binning">pfns per bin: {bin_size}</desc>')
    if list_pages is not None:
        y = _draw_memory_strip(svg, _list_strip(list_pages), frame_limit, y + 10)
    if tree is not None:
        y = _draw_memory_strip(svg, _tree_strip(tree, placeholders), frame_limit, y + 10)
    height = y + 20
    head = (f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
            f'viewBox="0 0 {WIDTH} {height}" font-family="DejaVu Sans, Arial, sans-serif">'
            f'<rect x="0" y="0" width="{WIDTH}" height="{height}" fill="#ffffff"/>')
    return "\n".join(['<?xml version="1.0" encoding="UTF-8"?>', head] + svg.parts + ["</svg>"])


def _draw_kind_strip(svg, counts, bin_size, n, y):
    nb = len(counts)
    px = PLOT_W / nb
    totals = counts.sum(axis=1).astype(float)
    totals[totals == 0] = 1
    # quantise shares to pixel rows and merge equal neighbouring bins
    q = np.round(counts / totals[:, None] * STRIP_H).astype(np.int64)
    fix = STRIP_H - q.sum(axis=1)
    q[np.arange(nb), np.argmax(counts, axis=1)] += fix
    svg.add('<g class="kind-strip">')
    brk = np.ones(nb, dtype=bool)
    brk[1:] = np.any(q[1:] != q[:-1], axis=1)
    starts = np.flatnonzero(brk)
    ends = np.append(starts[1:], nb)
    for a, b in zip(starts.tolist(), ends.tolist()):
        yy = y
        x = LEFT + a * px
        w = (b - a) * px
        p0, p1 = a * bin_size, min(n, b * bin_size) - 1
        sums = counts[a:b].sum(axis=0)
        for k in range(4):
            h = int(q[a, k])
            if h <= 0:
                continue
            svg.rect(x, yy, w, h, COLOURS[KINDS[k]], cls=f"bin kind-{KINDS[k]}",
                     title=f"pfns {p0:#x}-{p1:#x}: {KINDS[k]} {int(sums[k])}")
            yy += h
    svg.add("</g>")
    svg.rect(LEFT, y, PLOT_W, STRIP_H, "none")
    svg.add(f'<rect x="{LEFT}" y="{y}" width="{PLOT_W}" height="{STRIP_H}" fill="none" '
            'stroke="#444" stroke-width="1"/>')
    return y + STRIP_H


def _draw_boundaries(svg, table, n, strip_y, y):
    pos, before, after = kind_boundaries(table)
    if not len(pos):
        return y + 4
    seg_before = np.diff(np.concatenate([[0], pos]))
    seg_after = np.diff(np.concatenate([pos, [n]]))
    weight = np.minimum(seg_before, seg_after)
    order = np.argsort(-weight, kind="stable")
    rows: list[list[float]] = [[], [], []]
    chosen = []
    for i in order[:4096].tolist():
        x = LEFT + pos[i] / n * PLOT_W
        for r, placed in enumerate(rows):
            if all(abs(x - p) >= LABEL_GAP for p in placed):
                placed.append(x)
                chosen.append((i, x, r))
                break
        if len(chosen) >= MAX_LABELS:
            break
    svg.add('<g class="boundaries">')
    for i, x, r in sorted(chosen, key=lambda c: c[1]):
        p = int(pos[i])
        ly = y + 14 + r * 26
        svg.line(x, strip_y, x, ly - 10, stroke="#222", width=0.8)
        svg.add(f'<g class="boundary" data-pfn="{p}" data-from="{KINDS[before[i]]}" '
                f'data-to="{KINDS[after[i]]}">')
        svg.text(x, ly, f"{p:#x}", size=10, anchor="middle", cls="label-pfn")
        svg.text(x, ly + 11, _mb(p), size=9, anchor="middle", cls="label-mb", fill="#555")
        svg.add("</g>")
    svg.add("</g>")
    used = max((r for _, _, r in chosen), default=0) + 1
    return y + 10 + used * 26


def _draw_axis(svg, n, y):
    total = n * PAGE_SIZE
    step = _nice_step(total)
    svg.line(LEFT, y, LEFT + PLOT_W, y, stroke="#888")
    v = 0.0
    svg.add('<g class="axis">')
    while v <= total + 1e-9:
        x = LEFT + v / total * PLOT_W
        svg.line(x, y, x, y + 5, stroke="#888")
        svg.text(x, y + 16, _fmt_bytes(v) if v else "0", size=9, anchor="middle", fill="#666")
        v += step
    svg.add("</g>")
    svg.text(LEFT - 24, y + 16, "paddr", size=9, anchor="end", fill="#666")
    return y + 26


def _draw_legend(svg, table, y):
    counts = table.counts()
    x = LEFT
    svg.add('<g class="legend">')
    for k in KINDS:
        c = counts.get(k, 0)
        svg.rect(x, y, 12, 12, COLOURS[k], cls=f"legend-{k}")
        svg.text(x + 16, y + 10, f"{k}: {c} pfns ({_fmt_bytes(c * PAGE_SIZE)})", size=11)
        x += 255
    svg.add("</g>")
    return y + 26


@dataclass
class _Strip:
    """What a machine-memory strip shows."""

    #: "tree" or "list": the prefix of the CSS classes
    kind: str
    heading: str
    detail: str
    #: (row name, MFNs, colour, legend text)
    rows: list
    #: (MFN, label) of the pages named on the strip
    labels: list


def _tree_strip(tree, placeholders=None) -> _Strip:
    levels = tree.levels()
    mid_ph, leaf_ph = tree.placeholders() if placeholders is None else placeholders
    ph = set(leaf_ph) | ({mid_ph} if mid_ph is not None else set())

    ph_mfns = np.array(sorted(ph), dtype=np.uint64)

    def own(mfns):
        mfns = np.asarray(mfns, dtype=np.uint64)
        return mfns[~np.isin(mfns, ph_mfns)]

    rows = [("top", levels["top"], TREE_COLOURS["top"], "top page"),
            ("mid", own(levels["mid"]), TREE_COLOURS["mid"], "mid pages"),
            ("leaf", own(levels["leaf"]), TREE_COLOURS["leaf"], "leaf pages"),
            ("placeholder", ph_mfns, TREE_COLOURS["placeholder"], "placeholder pages")]
    return _Strip("tree", "tree pages in machine memory",
                  f"{len(levels['mid'])} mid, {len(levels['leaf'])} leaf pages", rows,
                  [(int(tree.top_mfn), "top")] + [(m, "placeholder") for m in sorted(ph)])


def _list_strip(pages) -> _Strip:
    tables = pages.table_mfns()
    shared = np.union1d(pages.placeholders, pages.shared_ptes).astype(np.uint64)
    rows = [("root", np.array([pages.root_mfn], dtype=np.uint64), LIST_COLOURS["root"],
             "top page table"),
            ("table", tables, LIST_COLOURS["table"], "page tables"),
            ("page", pages.list_mfns, LIST_COLOURS["page"], "list pages"),
            ("placeholder", shared, LIST_COLOURS["placeholder"], "shared frames")]
    labels = ([(int(pages.root_mfn), "root")]
              + [(int(m), "placeholder") for m in pages.placeholders.tolist()]
              + [(int(m), "PTE placeholder") for m in pages.shared_ptes.tolist()])
    return _Strip("list", "list and page-table pages in machine memory",
                  f"{len(tables)} page tables, {len(pages.list_mfns)} list pages, "
                  f"{len(shared)} shared frames", rows, labels)


def _draw_memory_strip(svg, strip: _Strip, frame_limit, y):
    rows = strip.rows
    all_mfns = np.concatenate([m for _, m, _, _ in rows])
    top_end = int(all_mfns.max()) + 1 if len(all_mfns) else 1
    span = max(frame_limit or 0, top_end)
    svg.text(LEFT, y, strip.heading, size=12, weight="bold")
    svg.text(LEFT + 8 * len(strip.heading) + 6, y,
             f"(MFN 0 to {span - 1:#x}, {_fmt_bytes(span * PAGE_SIZE)}; {strip.detail})",
             size=10, fill="#555")
    y += 8
    row_h = 14
    n_rows = len(rows)
    svg.add(f'<g class="{strip.kind}-strip">')
    svg.add(f'<rect x="{LEFT}" y="{y}" width="{PLOT_W}" height="{row_h * n_rows}" '
            'fill="#fafafa" stroke="#444" stroke-width="1"/>')
    for r, (name, mfns, colour, legend) in enumerate(rows):
        ry = y + r * row_h
        svg.text(LEFT - 8, ry + 11, name, size=10, anchor="end", cls=f"{strip.kind}-row-label")
        if not len(mfns):
            continue
        bins = np.unique((mfns.astype(np.float64) / span * PLOT_W).astype(np.int64))
        brk = np.ones(len(bins), dtype=bool)
        brk[1:] = np.diff(bins) != 1
        st = np.flatnonzero(brk)
        en = np.append(st[1:], len(bins))
        for a, b in zip(st.tolist(), en.tolist()):
            x0, x1 = int(bins[a]), int(bins[b - 1]) + 1
            lo = int(x0 * span / PLOT_W)
            hi = int(x1 * span / PLOT_W)
            svg.rect(LEFT + x0, ry + 2, max(x1 - x0, PLOT_W / span, 1.5), row_h - 4, colour,
                     cls=f"{strip.kind}-{name}", title=f"{legend} in MFNs {lo:#x}-{hi:#x}")
    svg.add("</g>")
    y += row_h * n_rows
    # labels: the top page and the placeholders, in up to two rows
    placed: list[list[float]] = [[], []]
    for m, what in strip.labels:
        x = LEFT + m / span * PLOT_W
        row = next((r for r, xs in enumerate(placed)
                    if all(abs(x - p) >= LABEL_GAP for p in xs)), None)
        if row is None:
            continue
        placed[row].append(x)
        ly = y + 14 + row * 12
        svg.line(x, y, x, ly - 10, stroke="#222", width=0.8)
        svg.text(x, ly, f"{what} {m:#x}", size=9, anchor="middle", cls=f"{strip.kind}-label")
    y += 22 + (12 if placed[1] else 0)
    total = span * PAGE_SIZE
    step = _nice_step(total)
    svg.line(LEFT, y, LEFT + PLOT_W, y, stroke="#888")
    v = 0.0
    while v <= total + 1e-9:
        x = LEFT + v / total * PLOT_W
        svg.line(x, y, x, y + 5, stroke="#888")
        svg.text(x, y + 16, f"{int(v // PAGE_SIZE):#x}", size=9, anchor="middle", fill="#666")
        v += step
    svg.text(LEFT - 24, y + 16, "mfn", size=9, anchor="end", fill="#666")
    y += 28
    x = LEFT
    for _name, _, colour, legend in rows:
        svg.rect(x, y, 12, 12, colour)
        svg.text(x + 16, y + 10, legend, size=11)
        x += 160
    return y + 24
