"""The page index of a save file: pfn -> file offset of its last copy.

The indexer hands over each PAGE_DATA record's pfn words and the offset of
its first page; :meth:`PageIndexBuilder.resolve` keeps the last copy of every
pfn (a live migration resends pages; a last copy without data -- XTAB,
BROKEN, XALLOC -- replaces an earlier page too).  Memory is a few bytes per
pfn word, never proportional to the page data.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...layout import PAGE_SIZE
from ...schemas import xl_save as S

#: page type (0-15) -> the record carries 4096 bytes for it
HAS_DATA = np.array([S.has_page_data(t) for t in range(16)], dtype=bool)
#: page type (0-15) -> no saver writes it
INVALID_TYPE = np.array([t in S.PFINFO_INVALID for t in range(16)], dtype=bool)
NO_DATA_NAMES = {t: S.PFINFO_NAMES[t] for t in S.PFINFO_NO_DATA}


def decode_words(raw: bytes, count: int) -> np.ndarray:
    """The ``count`` little-endian u64 pfn words of a PAGE_DATA record (the
    ``pfns`` array of :func:`p2mdump.schemas.xl_save.page_data_pfns`)."""
    return np.frombuffer(raw, dtype="<u8", count=count).astype(np.uint64, copy=False)


def split_words(words: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(pfns, page types) of PAGE_DATA words."""
    return words & np.uint64(S.PAGE_DATA_PFN_MASK), \
        (words >> np.uint64(S.PAGE_DATA_TYPE_SHIFT)).astype(np.uint8)


@dataclass
class PageIndex:
    """Last copies of every pfn named by the stream's PAGE_DATA records."""
    data_pfns: np.ndarray      # sorted unique uint64 pfns whose last copy has data
    data_offsets: np.ndarray   # uint64 file offset of that copy's page
    data_types: np.ndarray     # uint8 page type of that copy
    nodata: dict               # "XTAB"/"BROKEN"/"XALLOC" -> sorted pfns
    page_counts: dict          # page type name -> last copies of that type
    resent: int                # copies replaced by a later one


class PageIndexBuilder:
    """Collects PAGE_DATA batches in stream order."""

    def __init__(self):
        self._pfns: list = []
        self._types: list = []
        self._offsets: list = []

    def add(self, pfns: np.ndarray, types: np.ndarray, first_page: int,
            keep: np.ndarray | None = None, pages_in_file: int | None = None) -> None:
        """One record: its pfns and types, the file offset of its first page.

        ``keep`` (bool) leaves entries out (invalid types; their pages still
        occupy their place); ``pages_in_file`` limits the data pages indexed (a
        record cut short by the end of the file): the pfns of the missing pages
        are left out, those without data kept."""
        data = HAS_DATA[types]
        rank = np.cumsum(data, dtype=np.int64) - 1
        offsets = np.uint64(first_page) + rank.astype(np.uint64) * np.uint64(PAGE_SIZE)
        offsets[~data] = 0
        sel = np.ones(len(pfns), dtype=bool) if keep is None else keep.copy()
        if pages_in_file is not None:
            sel &= ~data | (rank < pages_in_file)
        self._pfns.append(pfns[sel])
        self._types.append(types[sel])
        self._offsets.append(offsets[sel])

    def resolve(self) -> PageIndex:
        pfns = _cat(self._pfns, np.uint64)
        types = _cat(self._types, np.uint8)
        offsets = _cat(self._offsets, np.uint64)
        self._pfns = self._types = self._offsets = []
        order = np.argsort(pfns, kind="stable")
        spfns = pfns[order]
        last = np.ones(len(spfns), dtype=bool)
        last[:-1] = spfns[1:] != spfns[:-1]
        keep = order[last]
        upfns, utypes, uoffs = spfns[last], types[keep], offsets[keep]
        data = HAS_DATA[utypes]
        counts = np.bincount(utypes, minlength=16)
        page_counts = {name: int(counts[t]) for t, name in S.PFINFO_NAMES.items()}
        nodata = {name: upfns[utypes == t] for t, name in NO_DATA_NAMES.items()}
        return PageIndex(data_pfns=upfns[data], data_offsets=uoffs[data],
                         data_types=utypes[data], nodata=nodata, page_counts=page_counts,
                         resent=int(len(pfns) - len(upfns)))


def _cat(parts: list, dtype) -> np.ndarray:
    return np.concatenate(parts).astype(dtype, copy=False) if parts else np.zeros(0, dtype)
