"""Single pfn lookups in the p2m an ``xl save`` stream recorded.

The entry of pfn P lies in p2m frame ``P // per_page - start_pfn // per_page``
of the X86_PV_P2M_FRAMES record, at slot ``P % per_page``: a lookup reads
that one page from the stream (see :mod:`p2mdump.savewalk` for the format).
"""
from __future__ import annotations

from typing import Any

from .errors import LayoutError, TreeError
from .layout import KIND_MISSING, LEVEL_LIST, Layout, layout_for
from .lookup import _PfnPathLookup


class SavedPathLookup(_PfnPathLookup):
    """Look pfns up in the saved p2m of ``stream`` (a SaveStream), page by page.

    ``max_pfn``: given, else the SHARED_INFO record's ``arch.max_pfn``, else
    the record's ``end_pfn + 1``; a pfn at or past it is flagged
    ``past_max_pfn`` (it is still read when the record holds it)."""

    def __init__(self, stream, *, word_size="auto", max_pfn: int | None = None):
        from .savewalk import claimed_max_pfn

        frames = stream.p2m_frames
        if frames is None:
            raise TreeError(f"{stream.path}: the stream has no X86_PV_P2M_FRAMES record: it "
                            "names no saved p2m")
        if word_size in (None, "auto"):
            if stream.guest_width not in (4, 8):
                raise TreeError(f"{stream.path}: no X86_PV_INFO record gives the guest's word "
                                "size; give --word-size 4 or 8")
            ws = stream.guest_width
            self.word_size_source = "container"
        else:
            ws, self.word_size_source = int(word_size), "given"
        if int(frames.start_pfn) > int(frames.end_pfn):
            raise TreeError(f"{stream.path}: X86_PV_P2M_FRAMES (record {frames.record_index}, "
                            f"offset {frames.offset:#x}) has start_pfn {int(frames.start_pfn):#x} "
                            f"past end_pfn {int(frames.end_pfn):#x}")
        self.layout: Layout = layout_for(ws)
        self.stream = stream
        self.frames = frames
        if max_pfn is None:
            max_pfn = claimed_max_pfn(stream) or int(frames.end_pfn) + 1
        elif max_pfn < 0:
            raise LayoutError(f"max_pfn must not be negative (got {max_pfn})")
        self.max_pfn = max_pfn
        self._pages: dict = {}

    @property
    def pages_read(self) -> int:
        return len(self._pages)

    def pfn(self, pfn: int) -> dict:
        """pfn -> {pfn, kind, mfn, raw, path, problem, past_max_pfn}; ``path``
        names the p2m frame ({"level": "list", "index": its place in the
        record, "pfn": its pfn, "slot"})."""
        if pfn < 0:
            raise LayoutError(f"pfn must not be negative (got {pfn})")
        L = self.layout
        fr = self.frames
        out: dict[str, Any] = {
            "pfn": pfn, "kind": KIND_MISSING, "mfn": None, "raw": None,
            "word_size": L.word_size, "path": [], "problem": None,
            "past_max_pfn": pfn >= self.max_pfn}
        index = pfn // L.per_page - int(fr.start_pfn) // L.per_page
        if pfn < int(fr.start_pfn) or pfn > int(fr.end_pfn) or index >= len(fr.pfns):
            out["problem"] = (f"not in the saved p2m (X86_PV_P2M_FRAMES holds pfns "
                              f"{int(fr.start_pfn):#x}-{int(fr.end_pfn):#x})")
            return out
        slot = pfn % L.per_page
        frame = int(fr.pfns[index])
        out["path"].append({"level": LEVEL_LIST, "index": int(index), "pfn": frame,
                            "slot": slot})
        if frame not in self._pages:
            self._pages[frame] = self.stream.read_pfn(frame)
        page = self._pages[frame]
        if page is None:
            out["problem"] = f"p2m frame pfn {frame:#x} has no page data in the stream"
            return out
        return self._fill_entry(out, page, slot)
