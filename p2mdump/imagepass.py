"""What scan's sequential pass reads, and how: the frames an image holds, in blocks.

:func:`data_extents` lists the frames with data in the file, as (first MFN,
count) rows: a sparse raw image's extent map (the FIEMAP ioctl, a call per
thousands of extents, else ``SEEK_DATA`` / ``SEEK_HOLE``), a container's own
runs otherwise.  Holes and frames above the machine address limit are never
read.

:func:`blocks` reads those frames into one buffer of :data:`BLOCK_PAGES`
frames and yields it whenever it is full, with the MFN of every page, so the
bulk tests run once per block however the frames are spread.  The pieces of
each block (extents cut at block boundaries) are planned with numpy; a
scattered page (a piece of one frame whose file offset the container names)
is read first, those of a block together by :func:`~p2mdump.pageread.read_pages`
(an io_uring batch, else one ``preadv`` each issued from C: the reader the
walk uses for scattered leaves), since a sparse image of scattered tree
pages has one extent per page.  Longer pieces
take one ``preadv`` each, and a piece that does not read whole is read
again frame by frame by the container, skipping what the image lacks.

Memory: the extent map and its plan (tens of bytes an extent) and one block.
"""
from __future__ import annotations

import errno
import os
from typing import Callable

import numpy as np

from .layout import PAGE_SIZE
from .paging import MACHINE_ADDRESS_LIMIT
from .pageread import read_pages

#: frames read per block of the sequential pass (8 MiB)
BLOCK_PAGES = 2048
#: frames below the machine address limit: all a pointer can name
MACHINE_FRAMES = MACHINE_ADDRESS_LIMIT // PAGE_SIZE

Progress = Callable[[int, int], None]


def _pairs(bounds) -> np.ndarray:
    return np.asarray(bounds, dtype=np.int64).reshape(-1, 2)


def _fiemap_bounds(fd: int, start: int, end: int) -> np.ndarray | None:
    """(data offset, hole offset) rows of the file's extents between ``start``
    and ``end`` from the FIEMAP ioctl; None when the file system does not
    answer it.  An unwritten extent (allocated; while a freshly written file
    is written back, its data may still be only in the page cache) is asked
    about with SEEK_DATA, as the whole file is when FIEMAP fails."""
    import fcntl

    from .schemas import fiemap as FM

    head = FM.Fiemap.sizeof()
    buf = bytearray(head + FM.EXTENTS_PER_CALL * FM.EXTENT_DTYPE.itemsize)
    parts: list[np.ndarray] = []
    pos = start
    while pos < end:
        buf[:head] = FM.Fiemap.build(dict(fm_start=pos, fm_length=end - pos, fm_flags=0,
                                          fm_mapped_extents=0,
                                          fm_extent_count=FM.EXTENTS_PER_CALL))
        try:
            fcntl.ioctl(fd, FM.FS_IOC_FIEMAP, buf, True)
        except OSError:
            return None
        n = FM.Fiemap.parse(bytes(buf[:head])).fm_mapped_extents
        if n == 0 or n > FM.EXTENTS_PER_CALL:
            break
        ext = np.frombuffer(buf, dtype=FM.EXTENT_DTYPE, count=n, offset=head)
        flags = ext["fe_flags"]
        lo = ext["fe_logical"].astype(np.int64)
        hi = lo + ext["fe_length"].astype(np.int64)
        if np.any(hi[:-1] > lo[1:]) or hi[-1] <= pos:
            return None     # not ascending, or no progress: let SEEK_DATA decide
        pair = np.stack([np.maximum(lo, start), np.minimum(hi, end)], axis=1)
        keep = pair[:, 0] < pair[:, 1]
        unwritten = (flags & FM.FIEMAP_EXTENT_UNWRITTEN) != 0
        if not np.any(unwritten & keep):
            parts.append(pair[keep])
        else:
            for (a, b), unw in zip(pair[keep].tolist(), unwritten[keep].tolist()):
                sub = _seek_bounds(fd, a, b) if unw else _pairs([a, b])
                if sub is None:
                    return None
                parts.append(sub)
        if flags[-1] & FM.FIEMAP_EXTENT_LAST:
            break
        pos = int(hi[-1])
    return np.concatenate(parts) if parts else _pairs([])


def _seek_bounds(fd: int, start: int, end: int) -> np.ndarray | None:
    """The same from SEEK_DATA / SEEK_HOLE (two ``lseek`` calls per extent);
    None when the file system cannot tell."""
    lseek, seek_data, seek_hole = os.lseek, os.SEEK_DATA, os.SEEK_HOLE
    bounds: list[int] = []     # a tight loop: a scattered image has one extent per tree page
    pos = start
    try:
        while pos < end:
            try:
                data = lseek(fd, pos, seek_data)
            except OSError as exc:
                if exc.errno == errno.ENXIO:
                    break
                raise
            if data >= end:
                break
            pos = min(lseek(fd, data, seek_hole), end)
            bounds += (data, pos)
    except (OSError, AttributeError):
        return None
    return _pairs(bounds)


def raw_extents(source) -> np.ndarray | None:
    """(first frame, frame count) rows of the data extents of a raw image,
    ascending, skipping holes of a sparse file (the FIEMAP extent map, else
    SEEK_DATA); None when the file system cannot tell."""
    fd, base, frames = source.fd, source.base, source.frames
    end = base + frames * PAGE_SIZE
    b = _fiemap_bounds(fd, base, end)
    if b is None:
        b = _seek_bounds(fd, base, end)
    if b is None:
        return None
    b = b - base
    f0 = b[:, 0] // PAGE_SIZE
    f1 = np.minimum(-(-b[:, 1] // PAGE_SIZE), frames)
    # extents that touch or overlap once widened to whole frames are one
    new = np.ones(len(f0), dtype=bool)
    new[1:] = f0[1:] > np.maximum.accumulate(f1)[:-1]
    heads = np.flatnonzero(new)
    if not len(heads):
        return _pairs([])
    last = np.maximum.reduceat(f1, heads)
    out = np.stack([f0[heads], last - f0[heads]], axis=1)
    return out[out[:, 1] > 0]


def data_extents(source) -> np.ndarray:
    """(first MFN, count) rows of the frames the pass reads, ascending (int64):
    those with data in the file (sparse holes and PT_LOAD zero fill skipped),
    below the machine frame limit (no pointer can name a frame above it)."""
    from .errors import ImageError
    from .sources.raw import RawImage

    if isinstance(source, RawImage):
        ext = raw_extents(source)
        if ext is None:
            ext = _pairs([0, source.frames])
        return _below_limit(ext.astype(np.uint64))
    runs = getattr(source, "frame_runs", None)
    if not callable(runs):
        raise ImageError(f"{source.describe()}: the container does not tell which frames "
                         "it holds, so it cannot be scanned")
    return _below_limit(np.asarray(runs(), dtype=np.uint64).reshape(-1, 2))


def _below_limit(ext: np.ndarray) -> np.ndarray:
    """``ext`` (uint64 rows: addresses read from a container may be anything)
    sorted, cut at :data:`MACHINE_FRAMES`, empty rows dropped, as int64."""
    ext = ext[np.lexsort((ext[:, 1], ext[:, 0]))]
    ext = ext[ext[:, 0] < np.uint64(MACHINE_FRAMES)]
    n = np.minimum(ext[:, 1], np.uint64(MACHINE_FRAMES) - ext[:, 0])
    out = np.stack([ext[:, 0], n], axis=1).astype(np.int64)
    return out[out[:, 1] > 0]


def _plan(extents: np.ndarray):
    """The pieces of the pass: (first MFN, frames) arrays of the extents cut
    where a block of BLOCK_PAGES frames ends, and the index of the first
    piece of every block (plus the number of pieces)."""
    first, count = extents[:, 0], extents[:, 1]
    at = np.cumsum(count) - count              # where each extent starts in the pass
    total = int(at[-1] + count[-1])
    ends = np.arange(BLOCK_PAGES, total, BLOCK_PAGES, dtype=np.int64)
    e = np.searchsorted(at, ends, side="right") - 1
    cut = at[e] < ends                         # a block ends inside extent e
    where = e[cut] + 1
    pos = np.insert(at, where, ends[cut])
    ext = np.insert(np.arange(len(at)), where, e[cut])
    mfn = first[ext] + (pos - at[ext])
    n = np.diff(np.append(pos, total))
    heads = np.searchsorted(pos, np.arange(0, total, BLOCK_PAGES, dtype=np.int64))
    return mfn, n, np.append(heads, len(pos)).tolist(), total


def _read_piece(source, mfn: int, view) -> int:
    """Whole frames from ``mfn`` read into ``view``: one ``preadv`` when the
    container says where they lie in its file, else its own reader."""
    ext = source.file_extent(mfn, len(view) // PAGE_SIZE)
    if ext is not None:
        fd, offset, avail = ext
        want = min(avail, len(view) // PAGE_SIZE) * PAGE_SIZE
        try:
            if want and os.preadv(fd, [view[:want]], offset) == want:
                return want // PAGE_SIZE
        except OSError:
            pass    # the container's reader retries and says what it could read
    return source.read_frames_into(mfn, view)


def _read_run(source, mfn: int, count: int, mem, fill: int) -> list[tuple[int, int]]:
    """Frames ``mfn..mfn+count-1`` read into ``mem`` from page ``fill`` on,
    skipping any the image lacks: the (first MFN, frames) runs read."""
    got_runs = []
    end = mfn + count
    while mfn < end:
        want = end - mfn
        got = _read_piece(source, mfn, mem[fill * PAGE_SIZE:(fill + want) * PAGE_SIZE])
        if got:
            got_runs.append((mfn, got))
            fill += got
        mfn += got if got == want else got + 1      # skip a frame not in the image
    return got_runs


def _page_mfns(first: np.ndarray, counts: np.ndarray, fill: int) -> np.ndarray:
    """The MFN of every page of a block of runs (``first``, ``counts``)."""
    at = np.cumsum(counts) - counts
    return np.repeat(first - at, counts) + np.arange(fill, dtype=np.int64)


def blocks(source, extents: np.ndarray, progress: Progress | None = None):
    """Yield (MFN of every page as int64, uint8 array of those whole frames),
    up to BLOCK_PAGES frames at a time in file order, for the frames of
    ``extents`` (:func:`data_extents`).  The buffer is reused: a block is
    valid until the next one is asked for."""
    if not len(extents):
        if progress is not None:
            progress(0, 0)
        return
    mfn, n, heads, frames = _plan(extents)
    total = frames * PAGE_SIZE
    offsets_of = getattr(source, "frame_offsets", None)
    buf = np.empty(BLOCK_PAGES * PAGE_SIZE, dtype=np.uint8)
    # (numpy's stubs give ndarray the buffer protocol from Python 3.12 only)
    mem = memoryview(buf)  # type: ignore[arg-type]
    for k in range(len(heads) - 1):
        lo, hi = heads[k], heads[k + 1]
        m, c = mfn[lo:hi], n[lo:hi]
        # where each piece lands when every read is whole
        slots = np.cumsum(c) - c
        got = np.zeros(len(m), dtype=bool)
        if offsets_of is not None:
            fd, off = offsets_of(m)
            single = np.flatnonzero((c == 1) & (off >= 0))  # runs: the container reads them
            if len(single):
                got[single] = read_pages(fd, off[single], buf, slots[single])
        m_l, c_l = m.tolist(), c.tolist()
        changed: list[tuple[int, list[tuple[int, int]]]] = []   # pieces not read whole
        if got.all():
            fill = len(m_l)
        else:
            fill = 0
            for i, (read, slot) in enumerate(zip(got.tolist(), slots.tolist())):
                if read:      # a page read whole: moved down past pieces that fell short
                    if slot != fill:
                        buf[fill * PAGE_SIZE:(fill + 1) * PAGE_SIZE] = \
                            buf[slot * PAGE_SIZE:(slot + 1) * PAGE_SIZE]
                    fill += 1
                    continue
                runs = _read_run(source, m_l[i], c_l[i], mem, fill)
                if runs != [(m_l[i], c_l[i])]:
                    changed.append((i, runs))
                fill += sum(g for _, g in runs)
        if fill:
            if changed:
                m, c = _replace_runs(m_l, c_l, changed)
            yield _page_mfns(m, c, fill), buf[:fill * PAGE_SIZE]
        if progress is not None and k + 2 < len(heads):
            progress((k + 1) * BLOCK_PAGES * PAGE_SIZE, total)
    if progress is not None:
        progress(total, total)


def _replace_runs(m_l: list, c_l: list, changed) -> tuple[np.ndarray, np.ndarray]:
    """The pieces of a block (``m_l``, ``c_l``) with each of ``changed``
    ((index, runs read)) replaced by the runs it read."""
    ms: list[int] = []
    cs: list[int] = []
    prev = 0
    for i, runs in changed:
        ms += m_l[prev:i]
        cs += c_l[prev:i]
        ms += [a for a, _ in runs]
        cs += [g for _, g in runs]
        prev = i + 1
    ms += m_l[prev:]
    cs += c_l[prev:]
    return np.array(ms, dtype=np.int64), np.array(cs, dtype=np.int64)
