"""The page index of a save file: pfn -> file offset of its last copy.

The indexer hands over PAGE_DATA records' pfn words, in stream order, with
the offset of each record's first page; :meth:`PageIndexBuilder.resolve`
keeps the last copy of every pfn (a live migration resends pages; a last
copy without data -- XTAB, BROKEN, XALLOC -- replaces an earlier page too).

Memory is one entry per pfn word (u64 pfn, u64 offset, u8 type: 17 bytes),
never proportional to the page data.  Entries with data go into columns
reserved for as many pages as the file can hold (its size / 4096: address
space only, memory is taken as entries are written); entries without data
into columns that grow.  A stream whose pfns arrive strictly ascending (what
``xl save`` writes: one pass, no resends) is its own index, with no sort and
no copy; otherwise only the entries from the first out-of-order batch on
(the resends of a live migration) are sorted, and merged into the ascending
part before them.
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
#: first capacity of the columns of entries without data (they grow by half)
NODATA_START = 1 << 12


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


class _Columns:
    """Parallel numpy columns filled in order: reserved capacity, grown in place
    (``ndarray.resize`` reallocates without a copy of the touched part), trimmed
    at the end."""

    def __init__(self, capacity: int, dtypes: tuple):
        self.n = 0
        self.cols = [np.empty(max(1, capacity), dtype=d) for d in dtypes]

    def append(self, *values) -> None:
        k = len(values[0])
        need = self.n + k
        if need > len(self.cols[0]):
            cap = max(need, len(self.cols[0]) * 3 // 2)
            for c in self.cols:
                c.resize(cap, refcheck=False)
        for c, v in zip(self.cols, values):
            c[self.n:need] = v
        self.n = need

    def trimmed(self) -> list:
        """The columns cut to their entries (the reserved rest is given back)."""
        for c in self.cols:
            c.resize(max(1, self.n), refcheck=False)
        return [c[:self.n] for c in self.cols]


class PageIndexBuilder:
    """Collects PAGE_DATA entries in stream order.

    ``max_pages`` bounds the entries with data (the file's size / 4096: each
    such entry's page is in the file)."""

    def __init__(self, max_pages: int):
        # entries with data: pfn, file offset, type
        self._data = _Columns(max_pages, (np.uint64, np.uint64, np.uint8))
        # entries without data: pfn, type, entries with data before it
        self._nodata = _Columns(NODATA_START, (np.uint64, np.uint8, np.int64))
        self._last = -1             # last pfn of the ascending prefix
        self._prefix: tuple | None = None   # (data, nodata) entries in it once it ends

    def add_batch(self, pfns: np.ndarray, types: np.ndarray, offsets: np.ndarray,
                  all_data: bool = False) -> None:
        """Entries in stream order: ``offsets`` is the file offset of the page of
        each entry whose type has data (ignored for the others); ``all_data``
        says every type has data."""
        if not len(pfns):
            return
        if self._prefix is None and not (
                int(pfns[0]) > self._last and bool(np.all(pfns[1:] > pfns[:-1]))):
            self._prefix = (self._data.n, self._nodata.n)
        if self._prefix is None:
            self._last = int(pfns[-1])
        if all_data or (data := HAS_DATA[types]).all():
            self._data.append(pfns, offsets, types)
            return
        before = np.cumsum(data, dtype=np.int64) - data + self._data.n
        nod = ~data
        self._nodata.append(pfns[nod], types[nod], before[nod])
        self._data.append(pfns[data], offsets[data], types[data])

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
        sel = np.ones(len(pfns), dtype=bool) if keep is None else keep.copy()
        if pages_in_file is not None:
            sel &= ~data | (rank < pages_in_file)
        self.add_batch(pfns[sel], types[sel], offsets[sel])

    def resolve(self) -> PageIndex:
        dpfns, doffs, dtypes = self._data.trimmed()
        npfns, ntypes, npos = self._nodata.trimmed()
        total = len(dpfns) + len(npfns)
        del self._data, self._nodata   # the builder is used up
        if self._prefix is not None:
            dpfns, doffs, dtypes, npfns, ntypes = _last_copies(
                dpfns, doffs, dtypes, npfns, ntypes, npos, *self._prefix)
        counts = _type_counts(dtypes) + _type_counts(ntypes)
        page_counts = {name: int(counts[t]) for t, name in S.PFINFO_NAMES.items()}
        nodata = {name: npfns[ntypes == t] for t, name in NO_DATA_NAMES.items()}
        return PageIndex(data_pfns=dpfns, data_offsets=doffs, data_types=dtypes,
                         nodata=nodata, page_counts=page_counts,
                         resent=int(total - len(dpfns) - len(npfns)))


def _type_counts(types: np.ndarray, chunk: int = 1 << 20) -> np.ndarray:
    """Entries of each page type 0-15 (in chunks: ``bincount`` widens its input
    to machine words)."""
    out = np.zeros(16, dtype=np.int64)
    for a in range(0, len(types), chunk):
        out += np.bincount(types[a:a + chunk], minlength=16)
    return out


def _last_copies(dpfns, doffs, dtypes, npfns, ntypes, npos, dp: int, np_: int):
    """Last copies when the entries stop ascending after the first ``dp`` data
    and ``np_`` no-data entries: the rest (the tail) is ordered by pfn and
    stream position, its last copies replace those of the prefix.  Returns
    (data pfns, offsets, types, no-data pfns, types), sorted by pfn."""
    nd, nn = len(dpfns), len(npfns)
    # stream positions of the tail entries: a no-data entry with ``npos`` d comes
    # after data entries 0..d-1 and before data entry d
    di = np.arange(dp, nd, dtype=np.int64)
    dseq = di + np.searchsorted(npos, di, side="right")
    nseq = np.arange(np_, nn, dtype=np.int64) + npos[np_:]
    tp = np.concatenate([dpfns[dp:], npfns[np_:]])
    order = np.lexsort((np.concatenate([dseq, nseq]), tp))
    del dseq, nseq
    sp = tp[order]
    last = np.ones(len(sp), dtype=bool)
    last[:-1] = sp[1:] != sp[:-1]
    src = order[last]                       # index into the tail (data part first)
    winners = sp[last]
    del order, sp, last, tp
    wdata = src < nd - dp
    wd = src[wdata] + dp                    # winning data entries
    wn = src[~wdata] - (nd - dp) + np_      # winning no-data entries
    del src, wdata

    def survivors(pfns):
        """Prefix entries no tail copy replaces."""
        if not len(winners):
            return np.ones(len(pfns), dtype=bool)
        pos = np.minimum(np.searchsorted(winners, pfns), len(winners) - 1)
        return winners[pos] != pfns

    keep_d = survivors(dpfns[:dp])
    keep_n = survivors(npfns[:np_])
    return (*_merge(keep_d, wd, (dpfns, doffs, dtypes)),
            *_merge(keep_n, wn, (npfns, ntypes)))


def _merge(keep, win_idx, columns) -> list:
    """``columns`` (the pfn column first) with their kept prefix entries
    (ascending; ``keep`` is as long as the prefix) and their winning tail
    entries (``win_idx``, ascending by pfn) interleaved by pfn."""
    p = len(keep)
    pfns = columns[0]
    win_pfns = pfns[win_idx]
    slot = np.searchsorted(pfns[:p][keep], win_pfns) + np.arange(len(win_idx), dtype=np.int64)
    rest = np.ones(int(np.count_nonzero(keep)) + len(win_idx), dtype=bool)
    rest[slot] = False
    out = []
    for col in columns:
        merged = np.empty(len(rest), dtype=col.dtype)
        merged[rest] = col[:p][keep]
        merged[slot] = col[win_idx]
        out.append(merged)
    return out
