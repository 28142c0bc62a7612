"""The pages of an ``xl save`` stream as a frame source, keyed by pfn.

Unlike every other container, a save stream does not hold machine frames:
Xen's saver sends each page under its guest pfn (PAGE_DATA records) and
rewrites the guest's page tables to pfns.  So this source's frame numbers are
*pfns*, and the one p2m it offers is the one the saver recorded
(:mod:`p2mdump.savewalk`); a tree or list walk over it would read pfns where
machine frame numbers are expected, and :mod:`p2mdump.autowalk` refuses it.
"""
from __future__ import annotations

import numpy as np

from ..layout import PAGE_SIZE
from .base import FrameSource


class SaveImage(FrameSource):
    """Pages of a saved guest by pfn (the last copy of each, as a restore uses)."""

    container = "xl-save"
    #: the frames are guest pfns, the p2m is the stream's saved one
    saved_p2m = True

    def __init__(self, stream):
        self.stream = stream
        self.path = stream.path
        self.word_size_hint = stream.guest_width
        from ..savewalk import claimed_max_pfn

        self.max_pfn_hint = claimed_max_pfn(stream)

    def read_frames_into(self, mfn: int, buf) -> int:
        count = len(buf) // PAGE_SIZE
        if mfn < 0 or not count:
            return 0
        pfns = np.arange(mfn, mfn + count, dtype=np.uint64)
        got = np.asarray(self.stream.read_pfns_into(pfns, buf), dtype=bool)
        bad = np.flatnonzero(~got)
        return int(bad[0]) if len(bad) else count

    def has_frame(self, mfn: int) -> bool:
        return bool(self.frames_present(np.array([mfn], dtype=np.uint64))[0])

    def frames_present(self, mfns):
        return self.stream.has_pfns(mfns)

    def frame_limit(self) -> int | None:
        pfns = self.stream.data_pfns
        return int(pfns[-1]) + 1 if len(pfns) else 0

    def frames_held(self) -> int | None:
        return len(self.stream.data_pfns)

    def container_findings(self) -> list:
        return list(self.stream.findings)

    def info(self) -> dict:
        """The stream's headers and index (see SaveStream.info) for ``p2mdump info``."""
        return self.stream.info()

    def describe(self) -> str:
        return f"xl save stream {self.path}"

    def close(self) -> None:
        self.stream.close()
