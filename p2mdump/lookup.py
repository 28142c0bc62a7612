"""Single lookups through the p2m tree: pfn -> mfn and guest -> machine address.

A single lookup reads exactly the pages on its path (top, mid, leaf) with
:meth:`FrameSource.read_frame` and decodes the one word it needs with
:func:`int.from_bytes`.  This module must stay free of heavy imports (no
numpy, no construct): ``p2mdump lookup IMAGE --top-mfn N --pfn P`` is a
whole process that has to start about as fast as the interpreter itself.

Lookups that need the whole table (mfn -> pfns, many queries at once) live
in :class:`TableLookup`, which walks the tree once and imports numpy lazily.
"""
from __future__ import annotations

import struct

from . import wordsize
from .errors import LayoutError, TreeError
from .layout import (KIND_FOREIGN, KIND_IDENTITY, KIND_MISSING, KIND_VALID, LEVEL_LEAF,
                     LEVEL_MID, LEVEL_TOP, PAGE_SHIFT, PAGE_SIZE, Layout, layout_for)

OFFSET_MASK = PAGE_SIZE - 1
QUERY_KINDS = ("pfn", "mfn", "paddr", "maddr")


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


class PathLookup:
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
        self._pages: dict[int, bytes | None] = {}
        self.pages_read = 0
        top = self._page(top_mfn)
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

    @property
    def word_size(self) -> int:
        return self.layout.word_size

    def _page(self, mfn: int) -> bytes | None:
        try:
            return self._pages[mfn]
        except KeyError:
            pass
        data = None
        if mfn > 0 and self.source.has_frame(mfn) or mfn == self.top_mfn:
            data = self.source.read_frame(mfn)
            self.pages_read += 1
        self._pages[mfn] = data
        return data

    def _word(self, page: bytes, slot: int) -> int:
        ws = self.layout.word_size
        return int.from_bytes(page[slot * ws:(slot + 1) * ws], "little")

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
        out = {"pfn": pfn, "kind": KIND_MISSING, "mfn": None, "raw": None,
               "top_mfn": self.top_mfn, "word_size": L.word_size,
               "path": [{"level": LEVEL_TOP, "mfn": self.top_mfn, "slot": t}],
               "problem": None,
               "past_max_pfn": self.max_pfn is not None and pfn >= self.max_pfn}
        mid_mfn = self._word(self._page(self.top_mfn), t)
        out["path"].append({"level": LEVEL_MID, "mfn": mid_mfn, "slot": m})
        mid = self._checked(mid_mfn, LEVEL_MID, t, out)
        if mid is None:
            return out
        leaf_mfn = self._word(mid, m)
        out["path"].append({"level": LEVEL_LEAF, "mfn": leaf_mfn, "slot": i})
        leaf = self._checked(leaf_mfn, LEVEL_LEAF, m, out)
        if leaf is None:
            return out
        raw = self._word(leaf, i)
        out["raw"] = raw
        out["kind"] = L.kind_of(raw)
        out["mfn"] = L.decode(raw)
        return out

    def _checked(self, mfn: int, level: str, slot: int, out: dict) -> bytes | None:
        parent = "top" if level == LEVEL_MID else "mid"
        if mfn == 0:
            out["problem"] = f"{parent} slot {slot} holds MFN 0 instead of a {level} page"
            return None
        page = self._page(mfn)
        if page is None:
            out["problem"] = (f"{level} page MFN {mfn:#x} ({parent} slot {slot}) is not in "
                              "the image")
        return page

    def paddr(self, paddr: int) -> dict:
        """Guest physical address -> machine address (None when missing)."""
        if paddr < 0:
            raise LayoutError(f"address must not be negative (got {paddr:#x})")
        return with_address(self.pfn(paddr >> PAGE_SHIFT), paddr)


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


class TableLookup:
    """Lookups against a whole walked table (numpy; imported on first use).

    pfn queries index the table; mfn queries of a batch are answered in one
    pass over the table (each chunk matched against the sorted query mfns),
    so no full-size inverse is ever built.
    """

    def __init__(self, result, max_pfn: int | None = None):
        self.result = result
        self.table = result.table
        self.layout = result.layout
        self.top_mfn = result.top_mfn
        self.max_pfn = max_pfn

    def pfn(self, pfn: int) -> dict:
        L = self.layout
        check_pfn(L, pfn)
        got = self.table.lookup(pfn)
        return {"pfn": pfn, "kind": got["kind"], "mfn": got["mfn"],
                "raw": got["raw"] if pfn < len(self.table) else None,
                "top_mfn": self.top_mfn, "word_size": L.word_size,
                "past_max_pfn": self.max_pfn is not None and pfn >= self.max_pfn}

    def paddr(self, paddr: int) -> dict:
        return with_address(self.pfn(paddr >> PAGE_SHIFT), paddr)

    def mfns(self, mfns) -> dict:
        """{mfn: {"pfns": [...valid pfns], "foreign_pfns": [...]}} in one pass."""
        import numpy as np

        L = self.layout
        want = sorted({m for m in mfns if 0 <= m and not m & L.flag_mask and m <= L.word_mask})
        out = {m: {"pfns": [], "foreign_pfns": []} for m in mfns}
        if not want or not len(self.table):
            return out
        q = np.array(want, dtype=np.uint64)
        fbit = np.uint64(L.foreign_bit)
        flags = np.uint64(L.flag_mask)
        inv = np.uint64(L.invalid)
        for start, chunk in self.table.chunks():
            c = chunk.astype(np.uint64)
            flagged = (c & flags) != 0
            # valid entries: no flag bit (INVALID has both)
            for name, values, mask in (("pfns", c, ~flagged),
                                       ("foreign_pfns", c & ~fbit,
                                        flagged & ((c & flags) == fbit) & (c != inv))):
                pos = np.searchsorted(q, values)
                pos[pos >= len(q)] = 0
                hit = np.flatnonzero(mask & (q[pos] == values))
                for p, m in zip((hit + start).tolist(), values[hit].tolist()):
                    out[m][name].append(p)
        return out

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


def format_result(r: dict) -> str:
    """One human-readable line for a lookup result."""
    q = r.get("query")
    if "pfns" in r:
        pf = ", ".join(f"{p:#x}" for p in r["pfns"]) or "none"
        extra = ""
        if r.get("foreign_pfns"):
            extra = " (foreign-mapped at pfn " + ", ".join(
                f"{p:#x}" for p in r["foreign_pfns"]) + ")"
        if q == "maddr" or "maddr" in r:
            pa = ", ".join(f"{a:#x}" for a in r["paddrs"]) or "none"
            return f"maddr {r['maddr']:#x} -> paddr {pa} (mfn {r['mfn']:#x} -> pfn {pf}){extra}"
        return f"mfn {r['mfn']:#x} -> pfn {pf}{extra}"
    kind = r["kind"]
    note = ""
    if r.get("problem"):
        note += f" ({r['problem']})"
    if r.get("past_max_pfn"):
        note += " (past max_pfn)"
    if "paddr" in r:
        if r["maddr"] is None:
            return f"paddr {r['paddr']:#x} -> none (pfn {r['pfn']:#x} {kind}){note}"
        return (f"paddr {r['paddr']:#x} -> maddr {r['maddr']:#x} "
                f"(pfn {r['pfn']:#x} -> mfn {r['mfn']:#x} {kind}){note}")
    if r["mfn"] is None:
        return f"pfn {r['pfn']:#x} -> none ({kind}){note}"
    return f"pfn {r['pfn']:#x} -> mfn {r['mfn']:#x} ({kind}){note}"


__all__ = ["PathLookup", "TableLookup", "parse_query_file", "format_result",
           "KIND_VALID", "KIND_MISSING", "KIND_IDENTITY", "KIND_FOREIGN"]
