"""Where a walk puts the table's rows: in memory, straight into a raw output
file, or through a window that is handed on and not kept.

A walk fills the table one 4096-byte row (one leaf or list page) at a time:
rows of INVALID, rows copied from a shared page read once, and runs of rows
whose frames are consecutive in the image; which row comes from where is
worked out first (:class:`FillPlan`), then the rows are filled
(:func:`fill_rows`) all at once or, for a streamed walk
(:func:`stream_rows`), a window of :data:`STREAM_ROWS` at a time, each
window handed to the caller in pfn order.  :class:`MemoryRows` fills rows
in an anonymous mapping (the whole table, or the window).  :class:`FileRows` does
it in the (temporary) file of a ``--format raw`` output: runs of frames are
copied by the kernel from the image into the output (``copy_file_range``, no
trip through this process's memory), while short runs are read into a
staging buffer of consecutive rows that is written with one ``pwrite`` (a
``copy_file_range`` of one page costs twice a ``pread`` of it); the finished
file is mapped read-only as the table, so the summary and the findings read
the very bytes written.  Both give the same table; a test checks them
against each other.

Leaves scattered over the image (runs of one frame, hundreds of thousands
in a large guest) are gathered in file order (:func:`gather_pages`): frames
that lie close together in the file are read by one ``preadv`` into their
rows, the others in batches by :func:`~p2mdump.pageread.read_pages` (an
io_uring, else a ``preadv`` each issued from C), so that no Python code
runs per leaf.
MemoryRows gathers them all at once, straight into the table (whose pages
are allocated up front: the random order of the rows would otherwise cost
a page fault at a time, in the kernel); FileRows a staging buffer of rows
at a time, each written with one ``pwrite`` per run of consecutive rows.
"""
from __future__ import annotations

import errno
import mmap
import os
import numpy as np

from .arrays import step_runs
from .layout import PAGE_SIZE, Layout
from .pageread import preadv_size, read_pages
from .table import P2MTable, RunScanner, ScanAhead, StreamedTable, empty_words
from .workers import usable_cpus

#: rows written per call when a row pattern repeats (1 MiB)
REPEAT_PAGES = 256
#: runs of fewer frames are read into the staging buffer, longer ones copied
#: by the kernel
COPY_MIN_PAGES = 16
#: rows the staging buffer holds (4 MiB)
STAGE_PAGES = 1024
#: lone pages handed to read_pages at a time
EACH_PAGES = 8192
#: buffers one preadv may name (Linux's UIO_MAXIOV)
IOV_MAX = 1024
#: frames lying between two scattered ones that are read (into a scratch
#: buffer) rather than cut their read in two: copying a page costs less than
#: a system call
GAP_PAGES = 2
#: a page of INVALID entries (all ones at either word size)
INVALID_PAGE = b"\xff" * PAGE_SIZE
#: rows per window of a streamed walk (8 MiB)
STREAM_ROWS = 2048
#: rows copied or read a call while a ScanAhead follows the fill (8 MiB):
#: it is told after each
SETTLE_PAGES = 2048


class FillPlan:
    """Where each row of a walk's table comes from: worked out (and the pages
    it needs read once) before any row is filled, so that the rows can be
    filled all at once or a window at a time (:func:`fill_rows`)."""

    __slots__ = ("mfns", "bad", "pages", "own")

    def __init__(self, mfns: np.ndarray, bad: np.ndarray, pages: list, own: np.ndarray):
        #: the frame of every row
        self.mfns = mfns
        #: rows of INVALID (no frame), ascending
        self.bad = bad
        #: (rows, words, or None when the page could not be read) of the pages
        #: read already (shared ones, ...)
        self.pages = pages
        #: rows read from a frame of their own, ascending
        self.own = own


def fill_rows(sink, plan: FillPlan, a: int, b: int, source, unreadable, progress=None) -> int:
    """Fill rows a..b-1 of the table (``sink``'s rows 0..b-a-1) as ``plan``
    says; a frame that cannot be read is reported as ``unreadable(row, mfn)``
    and its row made INVALID.  Returns the frames read (:func:`read_runs`)."""
    report = _Progress(progress, _within(plan.own, a, b).size)
    read = _fill_rows(sink, plan, a, b, source, unreadable, report)
    if getattr(sink, "ahead", None) is not None:
        sink.settle(b - a, last=True)
    if report.total:
        report.end()
    return read


def hold_rows(plan: FillPlan, n_rows: int, layout: Layout, max_pfn: int, source, unreadable,
              progress=None, raw_fd: int | None = None, scan_ahead: bool = False) -> tuple:
    """Rows 0..n_rows-1 filled as ``plan`` says (:func:`fill_rows`) and kept:
    in the file ``raw_fd`` when it can be (:func:`rows_for`), else in memory.
    ``scan_ahead``: the table will be scanned for its runs, so that is begun
    on another CPU as the rows are filled (:class:`~p2mdump.table.ScanAhead`;
    with one usable CPU it is left to the table).  Returns
    (:class:`~p2mdump.table.P2MTable` of max_pfn entries, the words of the
    last row past max_pfn, frames read, whether the table is in the file)."""
    sink = rows_for(raw_fd, n_rows, layout)
    ahead = None
    if scan_ahead and usable_cpus() > 1:
        ahead = sink.scan_ahead(min(max_pfn, n_rows * layout.per_page))
    try:
        read = fill_rows(sink, plan, 0, n_rows, source, unreadable, progress)
    finally:
        cuts = ahead.take() if ahead is not None else None
    words, past = sink.finish(max_pfn)
    return P2MTable(words, layout, cuts=cuts), past, read, isinstance(sink, FileRows)


def _within(rows: np.ndarray, a: int, b: int) -> np.ndarray:
    """The rows of ``rows`` (ascending) in a..b-1, counted from a."""
    return rows[np.searchsorted(rows, a):np.searchsorted(rows, b)] - a


def _fill_rows(sink, plan: FillPlan, a: int, b: int, source, unreadable, report) -> int:
    """:func:`fill_rows`, the rows read counted by ``report`` (a :class:`_Progress`)."""
    sink.invalid(_within(plan.bad, a, b))
    for rows, words in plan.pages:
        here = _within(rows, a, b)
        if not len(here):
            continue
        if words is None:
            sink.invalid(here)
        else:
            sink.words(here, words)
    own = _within(plan.own, a, b)
    if not len(own):
        return 0
    return _read_runs(sink, source, own, plan.mfns[own + a],
                      lambda row, mfn: unreadable(row + a, mfn), report)


def stream_rows(plan: FillPlan, n_rows: int, layout: Layout, max_pfn: int, source,
                unreadable, progress, stream) -> tuple:
    """Rows 0..n_rows-1 filled as ``plan`` says (:func:`fill_rows`) a window
    of :data:`STREAM_ROWS` at a time, each window's entries up to ``max_pfn``
    handed to ``stream(words, first pfn, segment starts, segment kinds)``
    (:meth:`~p2mdump.table.RunScanner.feed`) and not kept; first, when
    ``stream`` has a ``begin`` method, ``stream.begin(max_pfn, layout)``.
    Progress counts the rows read over the whole walk.  Returns
    (:class:`~p2mdump.table.StreamedTable`, the words of the last row past
    max_pfn, frames read)."""
    begin = getattr(stream, "begin", None)
    if begin is not None:
        begin(max_pfn, layout)
    fpp = layout.per_page
    step = STREAM_ROWS
    buf = empty_words(min(step, n_rows) * fpp, layout.numpy_dtype)
    scanner = RunScanner(layout)
    past = buf[:0]
    read = 0
    report = _Progress(progress, len(plan.own))
    for a in range(0, n_rows, step):
        b = min(a + step, n_rows)
        rows2d = buf[:(b - a) * fpp].reshape(b - a, fpp)
        read += _fill_rows(MemoryRows(b - a, layout, rows2d), plan, a, b, source, unreadable,
                           report)
        words = rows2d.reshape(-1)
        keep = min(max_pfn - a * fpp, len(words))
        piece = words[:keep]
        stream(piece, a * fpp, *scanner.feed(piece))
        past = words[keep:].copy()
    if report.total:
        report.end()
    return StreamedTable(scanner), past, read


def row_runs(rows: np.ndarray):
    """(first row, count) of every run of consecutive row numbers."""
    return [(int(rows[a]), b - a) for a, b in step_runs(rows)]


def read_runs(sink, source, rows: np.ndarray, mfns: np.ndarray, unreadable,
              progress=None) -> int:
    """Fill ``rows`` (ascending) of ``sink`` from frames ``mfns`` (one per
    row): runs of consecutive rows whose frames are consecutive take one read
    (or copy) each.  A frame not in the image makes its row INVALID and is
    reported as ``unreadable(row, mfn)``, in row order.  Returns the number of
    frames read.

    Runs of one frame (leaves scattered over the image) whose file offsets
    the source names (``frame_offsets``) are gathered first, by
    ``sink.gather`` (``sink.gather_rows`` at a time, all at once when None):
    see :func:`gather_pages`.  The other runs, and any frame the gather could
    not read whole, are then read one run at a time, in row order, which is
    where unreadable frames are found and reported."""
    if not len(rows):
        return 0
    report = _Progress(progress, len(rows))
    read = _read_runs(sink, source, rows, mfns, unreadable, report)
    report.end()
    return read


def _read_runs(sink, source, rows: np.ndarray, mfns: np.ndarray, unreadable, report) -> int:
    """:func:`read_runs` (``rows`` not empty), the rows read counted by
    ``report`` (a :class:`_Progress`)."""
    brk = np.ones(len(rows), dtype=bool)
    brk[1:] = (np.diff(rows) != 1) | (np.diff(mfns.astype(np.int64)) != 1)
    starts = np.flatnonzero(brk)
    lengths = np.diff(np.append(starts, len(rows)))
    first_rows, first_mfns = rows[starts], mfns[starts]
    lone = lengths == 1
    offsets_of = getattr(source, "frame_offsets", None)
    if offsets_of is not None and lone.any():
        fd, offsets = offsets_of(first_mfns)
        lone &= offsets >= 0
    else:
        lone[:] = False
    read = 0
    rest = np.flatnonzero(~lone)
    if lone.any():
        gathered = np.flatnonzero(lone)
        step = sink.gather_rows or len(gathered)
        failed = [rest]
        for c in range(0, len(gathered), step):
            part = gathered[c:c + step]
            ok = sink.gather(fd, first_rows[part], offsets[part], report)
            read += int(np.count_nonzero(ok))
            failed.append(part[~ok])
        rest = np.sort(np.concatenate(failed))
    settle = sink.settle if getattr(sink, "ahead", None) is not None else None
    for row, mfn, n, counted in zip(first_rows[rest].tolist(), first_mfns[rest].tolist(),
                                    lengths[rest].tolist(), lone[rest].tolist()):
        if settle is not None:
            settle(row)           # the rows before are filled: see hold_rows
        read += _read_run(sink, source, row, mfn, n, unreadable)
        if not counted:
            report(n)
    return read


class _Progress:
    """Calls ``progress(done, total)`` about every 1% of ``total`` rows, and at the end."""

    def __init__(self, progress, total: int):
        self.progress = progress
        self.total = total
        self.done = 0
        self.step = max(1, total // 100)
        self.next = self.step

    def __call__(self, n: int) -> None:
        self.done += n
        if self.progress is not None and self.done >= self.next:
            self.progress(self.done, self.total)
            self.next = self.done + self.step

    def end(self) -> None:
        if self.progress is not None:
            self.progress(self.total, self.total)


def _read_run(sink, source, row: int, mfn: int, n: int, unreadable) -> int:
    """Rows row.. of ``sink`` from frames mfn.. of ``source``; a frame not in
    the image makes its row INVALID and is reported.  The frames read."""
    read = 0
    while n > 0:
        got = sink.frames(source, row, mfn, n)
        read += got
        row += got
        mfn += got
        n -= got
        if n > 0:  # the frame at `mfn` is not in the image
            sink.invalid([row])
            unreadable(row, mfn)
            row += 1
            mfn += 1
            n -= 1
    return read


def gather_pages(fd: int, offsets: np.ndarray, dest: np.ndarray, slots: np.ndarray,
                 scratch, done) -> np.ndarray:
    """Read the page at file offset ``offsets[i]`` of ``fd`` into page
    ``slots[i]`` of ``dest`` (a writable C-contiguous array) for every i;
    returns whether each was read whole, and calls ``done(pages)`` as it goes.

    Pages are read in file order: those no more than :data:`GAP_PAGES` apart
    by one ``preadv`` into their slots (the pages between them into
    ``scratch``, ``GAP_PAGES`` pages long), the others by
    :func:`~p2mdump.pageread.read_pages` (an io_uring, else a ``preadv``
    each issued from C): no Python code runs per page.  A short read or an
    I/O error leaves the pages it did not fill marked as not read."""
    n = len(offsets)
    ok = np.zeros(n, dtype=bool)
    if not n:
        return ok
    order = np.argsort(offsets, kind="stable")
    ordered = offsets[order]
    step = np.diff(ordered)
    near = (step > 0) & (step <= (GAP_PAGES + 1) * PAGE_SIZE) & (step % PAGE_SIZE == 0)
    firsts = np.flatnonzero(np.concatenate(([True], ~near)))
    lasts = np.append(firsts[1:], n)
    alone = lasts - firsts == 1
    lone = order[firsts[alone]]
    for c in range(0, len(lone), EACH_PAGES):
        part = lone[c:c + EACH_PAGES]
        ok[part] = read_pages(fd, offsets[part], dest, slots[part])
        done(len(part))
    per = max(1, IOV_MAX // 2)     # pages per preadv, each with a gap before it
    # (numpy's stubs give ndarray the buffer protocol from Python 3.12 only)
    mem = memoryview(dest.reshape(-1).view(np.uint8))  # type: ignore[arg-type]
    for a, b in zip(firsts[~alone].tolist(), lasts[~alone].tolist()):
        for c in range(a, b, per):
            part = order[c:min(b, c + per)]
            views = [mem[s:s + PAGE_SIZE] for s in (slots[part] * PAGE_SIZE).tolist()]
            ok[part] = _read_near(fd, ordered[c:c + len(part)].tolist(), views, scratch)
            done(len(part))
    return ok


def _read_near(fd: int, offsets: list, views: list, scratch) -> np.ndarray:
    """Pages at ascending ``offsets``, no more than GAP_PAGES apart, into
    ``views`` with one ``preadv``: whether each page was read whole."""
    iov: list = []
    ends: list = []
    start = pos = offsets[0]
    for off, view in zip(offsets, views):
        if off > pos:
            iov.append(scratch[:off - pos])
        iov.append(view)
        pos = off + PAGE_SIZE
        ends.append(pos - start)
    return np.array(ends) <= preadv_size(fd, iov, start)


class MemoryRows:
    """The table's rows in memory (``rows2d``: an existing (n, per_page) array
    to fill, or None for a new one)."""

    def __init__(self, n_rows: int, layout: Layout, rows2d: np.ndarray | None = None):
        self.L = layout
        self.n_rows = n_rows
        if rows2d is None:
            # every row is written by the walk: its pages are allocated at once
            self.buf = empty_words(n_rows * layout.per_page, layout.numpy_dtype,
                                   populate=True)
            self.rows2d = self.buf.reshape(n_rows, layout.per_page)
        else:
            self.rows2d = rows2d
            self.buf = rows2d.reshape(-1)
        # (numpy's stubs give ndarray the buffer protocol from Python 3.12 only)
        self._mem = memoryview(self.buf).cast("B")  # type: ignore[arg-type]
        #: every scattered frame is gathered at once (in file order)
        self.gather_rows = None
        self._scratch = memoryview(bytearray(GAP_PAGES * PAGE_SIZE))
        #: the ScanAhead told which rows are filled (see hold_rows), if any
        self.ahead: ScanAhead | None = None

    def scan_ahead(self, n: int) -> ScanAhead:
        """A :class:`~p2mdump.table.ScanAhead` of the first ``n`` entries,
        told as the rows are filled."""
        self.ahead = ScanAhead(self.buf, self.L, n)
        return self.ahead

    def settle(self, row: int, last: bool = False) -> None:
        """Rows 0..row-1 hold their final words."""
        if self.ahead is not None:
            self.ahead.settled(row * self.L.per_page)

    def invalid(self, rows) -> None:
        self.rows2d[rows] = self.rows2d.dtype.type(self.L.invalid)

    def words(self, rows, words: np.ndarray) -> None:
        self.rows2d[rows] = words

    def gather(self, fd: int, rows: np.ndarray, offsets: np.ndarray, done) -> np.ndarray:
        """Rows ``rows`` read from file ``offsets`` of ``fd`` (:func:`gather_pages`):
        whether each was read whole."""
        return gather_pages(fd, offsets, self.buf, np.asarray(rows, dtype=np.int64),
                            self._scratch, done)

    def frames(self, source, row: int, mfn: int, n: int) -> int:
        """Rows row.. from frames mfn..; the number of whole frames read
        (read :data:`SETTLE_PAGES` at a time when a ScanAhead follows)."""
        step = SETTLE_PAGES if self.ahead is not None else n
        done = 0
        while done < n:
            k = min(step, n - done)
            at = (row + done) * PAGE_SIZE
            got = source.read_frames_into(mfn + done, self._mem[at:at + k * PAGE_SIZE])
            done += got
            if got < k:
                break
            self.settle(row + done)
        return done

    def finish(self, max_pfn: int):
        """(table words 0..max_pfn-1, the words of the last row past max_pfn)."""
        return self.buf[:max_pfn], self.buf[max_pfn:]


class FileRows:
    """The table's rows written into ``fd`` (a regular file, empty, at offset 0)."""

    def __init__(self, fd: int, n_rows: int, layout: Layout):
        self.fd = fd
        self.L = layout
        self.n_rows = n_rows
        self._copy_ok = hasattr(os, "copy_file_range")
        # an anonymous mapping: its pages are zero-filled only when first used
        self._stage_array = np.frombuffer(mmap.mmap(-1, PAGE_SIZE * STAGE_PAGES),
                                          dtype=np.uint8)
        # (numpy's stubs give ndarray the buffer protocol from Python 3.12 only)
        self._stage = memoryview(self._stage_array)  # type: ignore[arg-type]
        self.gather_rows = STAGE_PAGES
        self._scratch = memoryview(bytearray(GAP_PAGES * PAGE_SIZE))
        self._stage_row = 0    # output row of the buffer's first page
        self._staged = 0       # pages held
        if os.fstat(fd).st_size:
            # not an empty file's: on ext4, a truncation to 0 makes the close
            # write back the whole file (auto_da_alloc), ~0.5 s per GiB
            os.ftruncate(fd, 0)
        preallocate(fd, n_rows * PAGE_SIZE)
        #: the ScanAhead told which rows are written (see hold_rows), if any
        self.ahead: ScanAhead | None = None
        #: the file's first entries mapped for it, kept as the table (finish)
        self._mapped: np.ndarray | None = None

    def scan_ahead(self, n: int) -> ScanAhead | None:
        """A :class:`~p2mdump.table.ScanAhead` of the file's first ``n``
        entries (read through a mapping), told as the rows are written; None
        when the file was not given its full size up front (a mapping past
        the end of a file cannot be read) or cannot be mapped."""
        nbytes = n * self.L.word_size
        if nbytes == 0 or os.fstat(self.fd).st_size < nbytes:
            return None
        try:
            mapping = mmap.mmap(self.fd, nbytes, mmap.MAP_SHARED, mmap.PROT_READ)
        except (OSError, ValueError):
            return None           # the table is then scanned after the walk, as always
        self._mapped = np.frombuffer(mapping, dtype=self.L.numpy_dtype)
        self.ahead = ScanAhead(self._mapped, self.L, n)
        return self.ahead

    def settle(self, row: int, last: bool = False) -> None:
        """Rows 0..row-1 are filled (``last``: all are); the staged rows
        are written first when the last row is."""
        if self.ahead is None:
            return
        if last:
            self._flush()
        elif self._staged:
            row = min(row, self._stage_row)   # staged rows are not in the file yet
        self.ahead.settled(row * self.L.per_page)

    def _pwrite_all(self, data, offset: int) -> None:
        view = memoryview(data).cast("B")
        while len(view):
            n = os.pwrite(self.fd, view, offset)
            view = view[n:]
            offset += n

    def _repeat(self, rows, page: bytes) -> None:
        """``page`` written at every row of ``rows``, up to REPEAT_PAGES rows a call."""
        runs = row_runs(np.asarray(rows))
        if not runs:
            return
        block = page * min(REPEAT_PAGES, max(count for _, count in runs))
        for row, count in runs:
            while count > 0:
                k = min(count, REPEAT_PAGES)
                self._pwrite_all(memoryview(block)[:k * PAGE_SIZE], row * PAGE_SIZE)
                row += k
                count -= k

    def invalid(self, rows) -> None:
        self._repeat(rows, INVALID_PAGE)

    def words(self, rows, words: np.ndarray) -> None:
        self._repeat(rows, np.ascontiguousarray(words).tobytes())

    def _flush(self) -> None:
        """Write the staged rows."""
        if self._staged:
            self._pwrite_all(self._stage[:self._staged * PAGE_SIZE],
                             self._stage_row * PAGE_SIZE)
            self._staged = 0

    def _staged_frames(self, source, row: int, mfn: int, n: int) -> int:
        """Rows row.. read into the staging buffer (flushed when full or when
        the rows do not follow its last one); the number of whole frames read."""
        done = 0
        while done < n:
            if row + done != self._stage_row + self._staged or self._staged == STAGE_PAGES:
                self._flush()
                self._stage_row = row + done
            k = min(n - done, STAGE_PAGES - self._staged)
            at = self._staged * PAGE_SIZE
            got = source.read_frames_into(mfn + done, self._stage[at:at + k * PAGE_SIZE])
            self._staged += got
            done += got
            if got < k:
                break
        return done

    def gather(self, fd: int, rows: np.ndarray, offsets: np.ndarray, done) -> np.ndarray:
        """Rows ``rows`` (at most :data:`STAGE_PAGES`) read from file
        ``offsets`` of ``fd`` into the staging buffer (:func:`gather_pages`)
        and written, each run of consecutive rows with one ``pwrite``; whether
        each was read whole (the rows that were not are left to be written
        again)."""
        self._flush()
        ok = gather_pages(fd, offsets, self._stage_array, np.arange(len(rows)),
                          self._scratch, done)
        slots = np.flatnonzero(ok)
        read = rows[slots]
        for a, b in step_runs(read, slots):
            at = int(slots[a]) * PAGE_SIZE
            self._pwrite_all(self._stage[at:at + (b - a) * PAGE_SIZE], int(read[a]) * PAGE_SIZE)
        return ok

    def frames(self, source, row: int, mfn: int, n: int) -> int:
        if n < COPY_MIN_PAGES:
            return self._staged_frames(source, row, mfn, n)
        extent = source.file_extent(mfn, n) if self._copy_ok else None
        if extent is None:
            buf = bytearray(n * PAGE_SIZE)
            got = source.read_frames_into(mfn, memoryview(buf))
            self._pwrite_all(memoryview(buf)[:got * PAGE_SIZE], row * PAGE_SIZE)
            return got
        src_fd, offset, avail = extent
        want = min(n, avail) * PAGE_SIZE
        step = SETTLE_PAGES * PAGE_SIZE if self.ahead is not None else want
        done = 0
        while done < want:
            try:
                k = os.copy_file_range(src_fd, self.fd, min(step, want - done), offset + done,
                                       row * PAGE_SIZE + done)
            except OSError as exc:
                if exc.errno == errno.EINTR:
                    continue
                if exc.errno in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP) \
                        and done == 0:
                    self._copy_ok = False
                    return self.frames(source, row, mfn, n)
                break
            if k <= 0:
                break
            done += k
            if self.ahead is not None:
                self.settle(row + done // PAGE_SIZE)
        return done // PAGE_SIZE

    def finish(self, max_pfn: int):
        """Cut the file to max_pfn words and map it: (table, the words past max_pfn)."""
        self._flush()
        ws = self.L.word_size
        full = self.n_rows * PAGE_SIZE
        size = max_pfn * ws
        tail = b""
        if full > size:
            tail = os.pread(self.fd, full - size, size)
            os.ftruncate(self.fd, size)
        past = np.frombuffer(tail, dtype=self.L.numpy_dtype)
        if size == 0:
            return np.zeros(0, dtype=self.L.numpy_dtype), past
        if self._mapped is not None and len(self._mapped) == max_pfn:
            # the scan ahead's mapping is the table: its pages are not faulted
            # in (nor counted) twice
            return self._mapped, past
        # no MAP_POPULATE: the summary faults the pages in as fast as it would
        # map them all at once (measured), and a quiet walk reads none of them
        mapping = mmap.mmap(self.fd, size, mmap.MAP_SHARED, mmap.PROT_READ)
        return np.frombuffer(mapping, dtype=self.L.numpy_dtype), past


def preallocate(fd: int, nbytes: int) -> None:
    """Give the file ``fd`` its first ``nbytes`` (its blocks allocated, its
    size at least ``nbytes``) when the file system allocates space on request
    (Linux ``fallocate``); else leave it as it is.

    The copied pages then land in blocks that exist: on ext4 a 64 MiB table
    takes ~15 ms to copy instead of ~19 (no delayed-allocation reservation per
    page); on tmpfs, which zero-fills what it allocates, it costs ~3 ms more
    (measured).  libc's ``fallocate`` is called (through ctypes, which numpy
    has loaded already), not ``os.posix_fallocate``: on a file system without
    the call, glibc's posix_fallocate writes a byte into every block instead."""
    if nbytes <= 0:
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        call = getattr(libc, "fallocate64", None) or libc.fallocate
        call.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
        call(fd, 0, 0, nbytes)   # -1 (EOPNOTSUPP, ...): nothing allocated, nothing lost
    except (ImportError, OSError, AttributeError):
        pass


def rows_for(fd: int | None, n_rows: int, layout: Layout):
    """FileRows when ``fd`` is a regular file open for reading and writing
    (it is mapped back as the table), else MemoryRows."""
    if fd is not None:
        import fcntl
        import stat

        try:
            if (stat.S_ISREG(os.fstat(fd).st_mode)
                    and fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE == os.O_RDWR):
                return FileRows(fd, n_rows, layout)
        except OSError:
            pass
    return MemoryRows(n_rows, layout)
