"""Where a walk puts the table's rows: in memory, or straight into a raw output file.

A walk fills the table one 4096-byte row (one leaf or list page) at a time:
rows of INVALID, rows copied from a shared page read once, and runs of rows
whose frames are consecutive in the image.  :class:`MemoryRows` does that in
an anonymous mapping, as every output format needs.  :class:`FileRows` does
it in the (temporary) file of a ``--format raw`` output: runs of frames are
copied by the kernel from the image into the output (``copy_file_range``, no
trip through this process's memory), while short runs (leaves scattered over
the image) are read into a staging buffer of consecutive rows that is written
with one ``pwrite`` (a ``copy_file_range`` of one page costs twice a ``pread``
of it); the finished file is mapped
read-only as the table, so the summary and the findings read the very bytes
written.  Both give the same table; a test checks them against each other.
"""
from __future__ import annotations

import errno
import mmap
import os

import numpy as np

from .arrays import step_runs, true_runs
from .layout import PAGE_SIZE, Layout
from .table import empty_words

#: bytes written per call when a row pattern repeats (256 pages)
BLOCK_PAGES = 256
#: runs of fewer frames are read into the staging buffer, longer ones copied
#: by the kernel
COPY_MIN_PAGES = 16
#: rows the staging buffer holds (4 MiB)
STAGE_PAGES = 1024
#: single pages handed to ``sink.pages`` at a time
PAGES_BATCH = 1 << 16
#: pages back to back in the image read by one ``preadv`` (Linux's IOV_MAX)
GATHER_PAGES = 1024


def row_runs(rows: np.ndarray):
    """(first row, count) of every run of consecutive row numbers."""
    return [(int(rows[a]), b - a) for a, b in step_runs(rows)]


def read_runs(sink, source, rows: np.ndarray, mfns: np.ndarray, unreadable,
              progress=None) -> int:
    """Fill ``rows`` of ``sink`` from frames ``mfns`` (one per row): runs of
    consecutive rows whose frames are consecutive take one read (or copy)
    each.  A frame not in the image makes its row INVALID and is reported as
    ``unreadable(row, mfn)``, in row order.  Returns the number of frames read.

    Runs of one frame (leaves scattered over the image) whose file offsets
    the source names (``frame_offsets``) go to ``sink.pages`` in batches,
    which reads each with one ``preadv`` and no further Python work: with
    hundreds of thousands of scattered leaves the per-run overhead is what
    counts.  A page that does not read whole takes the careful path below."""
    if not len(rows):
        return 0
    brk = np.ones(len(rows), dtype=bool)
    brk[1:] = (np.diff(rows) != 1) | (np.diff(mfns.astype(np.int64)) != 1)
    starts = np.flatnonzero(brk)
    lengths = np.diff(np.append(starts, len(rows)))
    offsets_of = getattr(source, "frame_offsets", None)
    if offsets_of is not None:
        fd, offsets = offsets_of(mfns[starts])
        offsets = np.where(lengths == 1, offsets, -1)
    else:
        fd, offsets = -1, np.full(len(starts), -1)
    rows_of_runs, mfns_of_runs = rows[starts], mfns[starts]
    total = len(rows)
    step = max(1, total // 100)
    read = 0

    def careful(row: int, mfn: int, n: int) -> int:
        """Rows row.. read by the sink from frames mfn.. of the source,
        frame by frame past any frame the image lacks; the frames read."""
        got_all = 0
        while n > 0:
            got = sink.frames(source, row, mfn, n)
            got_all += got
            row += got
            mfn += got
            n -= got
            if n > 0:  # the frame at `mfn` is not in the image
                sink.invalid([row])
                unreadable(row, mfn)
                row += 1
                mfn += 1
                n -= 1
        return got_all

    done = 0            # rows handled, for progress
    next_report = step
    i, n_runs = 0, len(starts)
    for a, b in [*true_runs(offsets >= 0, 0, n_runs), (n_runs, n_runs)]:
        for row, mfn, n in zip(rows_of_runs[i:a].tolist(), mfns_of_runs[i:a].tolist(),
                               lengths[i:a].tolist()):    # runs the sink reads from the source
            read += careful(row, mfn, n)
            done += n
            if progress is not None and done >= next_report:
                progress(done, total)
                next_report = done + step
        i = a
        while i < b:                          # single pages at known offsets, a batch at a time
            j = min(b, i + PAGES_BATCH)
            bad = sink.pages(fd, rows_of_runs[i:j], offsets[i:j])
            read += j - i - len(bad)
            for k in bad:                     # pages that did not read whole, in row order
                read += careful(int(rows_of_runs[i + k]), int(mfns_of_runs[i + k]), 1)
            done += j - i
            i = j
            if progress is not None and done >= next_report:
                progress(done, total)
                next_report = done + step
    if progress is not None:
        progress(total, total)
    return read


def _pread_page(fd: int, view, offset: int) -> bool:
    """One whole page read into ``view`` at file ``offset``."""
    try:
        return os.preadv(fd, [view], offset) == PAGE_SIZE
    except OSError:
        return False   # EINTR or an I/O error: the caller takes the careful path


class MemoryRows:
    """The table's rows in memory (``rows2d``: an existing (n, per_page) array
    to fill, or None for a new one)."""

    def __init__(self, n_rows: int, layout: Layout, rows2d: np.ndarray | None = None):
        self.L = layout
        self.n_rows = n_rows
        if rows2d is None:
            self.buf = empty_words(n_rows * layout.per_page, layout.numpy_dtype)
            self.rows2d = self.buf.reshape(n_rows, layout.per_page)
        else:
            self.rows2d = rows2d
            self.buf = rows2d.reshape(-1)
        # (numpy's stubs give ndarray the buffer protocol from Python 3.12 only)
        self._mem = memoryview(self.buf).cast("B")  # type: ignore[arg-type]

    def invalid(self, rows) -> None:
        self.rows2d[rows] = self.rows2d.dtype.type(self.L.invalid)

    def words(self, rows, words: np.ndarray) -> None:
        self.rows2d[rows] = words

    def pages(self, fd: int, rows: np.ndarray, offsets: np.ndarray) -> list[int]:
        """Rows ``rows[i]`` read from file ``offsets[i]`` of ``fd`` in file
        order: pages that lie back to back in the file (leaves whose rows are
        shuffled) with one ``preadv`` into their rows (up to GATHER_PAGES),
        the others one ``preadv`` each.  Returns the indices, ascending, of
        the pages not read whole."""
        order = np.argsort(offsets, kind="stable")
        offs = offsets[order]
        at = rows[order] * PAGE_SIZE
        first = np.ones(len(offs), dtype=bool)
        first[1:] = np.diff(offs) != PAGE_SIZE
        starts = np.flatnonzero(first)
        first |= (np.arange(len(offs)) - starts[np.cumsum(first) - 1]) % GATHER_PAGES == 0
        starts = np.flatnonzero(first)
        ends = np.append(starts[1:], len(offs))
        alone = ends - starts == 1
        one = starts[alone]
        bad = self._each(fd, at[one], offs[one], order[one])
        mem = self._mem
        for a, b in zip(starts[~alone].tolist(), ends[~alone].tolist()):
            try:
                if os.preadv(fd, [mem[x:x + PAGE_SIZE] for x in at[a:b].tolist()],
                             int(offs[a])) == (b - a) * PAGE_SIZE:
                    continue
            except OSError:
                pass    # EINTR or an I/O error: page by page, then the careful path
            bad += self._each(fd, at[a:b], offs[a:b], order[a:b])
        return sorted(bad)

    def _each(self, fd: int, at: np.ndarray, offsets: np.ndarray, index: np.ndarray) -> list:
        """Pages read into ``at`` (byte offsets of rows) from ``offsets`` one
        ``preadv`` each: the ``index`` of each not read whole."""
        mem, preadv = self._mem, os.preadv
        bad = []
        for x, offset, i in zip(at.tolist(), offsets.tolist(), index.tolist()):
            try:
                if preadv(fd, [mem[x:x + PAGE_SIZE]], offset) == PAGE_SIZE:
                    continue
            except OSError:
                pass    # EINTR or an I/O error: the caller takes the careful path
            bad.append(i)
        return bad

    def frames(self, source, row: int, mfn: int, n: int) -> int:
        """Rows row.. from frames mfn..; the number of whole frames read."""
        return source.read_frames_into(mfn, self._mem[row * PAGE_SIZE:(row + n) * PAGE_SIZE])

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
        self._invalid = b"\xff" * (PAGE_SIZE * BLOCK_PAGES)   # INVALID is all ones
        self._stage = memoryview(bytearray(PAGE_SIZE * STAGE_PAGES))
        self._stage_row = 0    # output row of the buffer's first page
        self._staged = 0       # pages held
        os.ftruncate(fd, 0)

    def _pwrite_all(self, data, offset: int) -> None:
        view = memoryview(data).cast("B")
        while len(view):
            n = os.pwrite(self.fd, view, offset)
            view = view[n:]
            offset += n

    def _repeat(self, rows, page: bytes) -> None:
        block = page * BLOCK_PAGES if len(page) == PAGE_SIZE else page
        for row, count in row_runs(np.asarray(rows)):
            while count > 0:
                k = min(count, BLOCK_PAGES)
                self._pwrite_all(memoryview(block)[:k * PAGE_SIZE], row * PAGE_SIZE)
                row += k
                count -= k

    def invalid(self, rows) -> None:
        self._repeat(rows, self._invalid)

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

    def pages(self, fd: int, rows: np.ndarray, offsets: np.ndarray) -> list[int]:
        """Rows ``rows[i]`` read from file ``offsets[i]`` of ``fd`` in turn into
        the staging buffer: the indices of the pages not read whole."""
        bad = []
        for i, (row, offset) in enumerate(zip(rows.tolist(), offsets.tolist())):
            if row != self._stage_row + self._staged or self._staged == STAGE_PAGES:
                self._flush()
                self._stage_row = row
            at = self._staged * PAGE_SIZE
            if _pread_page(fd, self._stage[at:at + PAGE_SIZE], offset):
                self._staged += 1
            else:
                bad.append(i)
        return bad

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
        done = 0
        while done < want:
            try:
                k = os.copy_file_range(src_fd, self.fd, want - done, offset + done,
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
        # MAP_POPULATE: the summary reads every page at once, so map them at once
        flags = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)
        mapping = mmap.mmap(self.fd, size, flags, mmap.PROT_READ)
        return np.frombuffer(mapping, dtype=self.L.numpy_dtype), past


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
