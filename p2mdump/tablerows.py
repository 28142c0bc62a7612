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

from .arrays import step_runs
from .layout import PAGE_SIZE, Layout
from .table import empty_words

#: bytes written per call when a row pattern repeats (256 pages)
BLOCK_PAGES = 256
#: runs of fewer frames are read into the staging buffer, longer ones copied
#: by the kernel
COPY_MIN_PAGES = 16
#: rows the staging buffer holds (4 MiB)
STAGE_PAGES = 1024
#: a page of INVALID entries (all ones at either word size)
INVALID_PAGE = b"\xff" * PAGE_SIZE


def row_runs(rows: np.ndarray):
    """(first row, count) of every run of consecutive row numbers."""
    return [(int(rows[a]), b - a) for a, b in step_runs(rows)]


def read_runs(sink, source, rows: np.ndarray, mfns: np.ndarray, unreadable,
              progress=None) -> int:
    """Fill ``rows`` of ``sink`` from frames ``mfns`` (one per row): runs of
    consecutive rows whose frames are consecutive take one read (or copy)
    each.  A frame not in the image makes its row INVALID and is reported as
    ``unreadable(row, mfn)``, in row order.  Returns the number of frames read.

    A run of one frame (a leaf scattered over the image) whose file offset the
    source names (``frame_offsets``) is read by ``sink.page`` with one
    ``preadv`` and no further Python work: with hundreds of thousands of
    scattered leaves the per-run overhead is what counts."""
    if not len(rows):
        return 0
    brk = np.ones(len(rows), dtype=bool)
    brk[1:] = (np.diff(rows) != 1) | (np.diff(mfns.astype(np.int64)) != 1)
    starts = np.flatnonzero(brk)
    lengths = np.diff(np.append(starts, len(rows)))
    offsets_of = getattr(source, "frame_offsets", None)
    if offsets_of is not None:
        fd, offsets = offsets_of(mfns[starts])
        offsets = np.where(lengths == 1, offsets, -1).tolist()
    else:
        fd, offsets = -1, [-1] * len(starts)
    page = sink.page
    total = len(rows)
    done = read = 0
    step = max(1, total // 100)
    next_report = step
    for row, mfn, n, off in zip(rows[starts].tolist(), mfns[starts].tolist(),
                                lengths.tolist(), offsets):
        done += n
        if off >= 0 and page(fd, row, off):
            read += 1
        else:
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

    def page(self, fd: int, row: int, offset: int) -> bool:
        """Row ``row`` read from file ``offset`` of ``fd``; False if not whole."""
        return _pread_page(fd, self._mem[row * PAGE_SIZE:(row + 1) * PAGE_SIZE], offset)

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
        # an anonymous mapping: its pages are zero-filled only when first used
        self._stage = memoryview(mmap.mmap(-1, PAGE_SIZE * STAGE_PAGES))
        self._stage_row = 0    # output row of the buffer's first page
        self._staged = 0       # pages held
        if os.fstat(fd).st_size:
            # only a file that is not empty: ext4 (auto_da_alloc) flushes a file
            # truncated to size 0 when it is closed, several ms of a walk
            os.ftruncate(fd, 0)
        preallocate(fd, n_rows * PAGE_SIZE)

    def _pwrite_all(self, data, offset: int) -> None:
        view = memoryview(data).cast("B")
        while len(view):
            n = os.pwrite(self.fd, view, offset)
            view = view[n:]
            offset += n

    def _repeat(self, rows, page: bytes) -> None:
        """``page`` written at every row of ``rows``, up to BLOCK_PAGES rows a call."""
        runs = row_runs(np.asarray(rows))
        if not runs:
            return
        block = page * min(BLOCK_PAGES, max(count for _, count in runs))
        for row, count in runs:
            while count > 0:
                k = min(count, BLOCK_PAGES)
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

    def page(self, fd: int, row: int, offset: int) -> bool:
        """Row ``row`` read from file ``offset`` of ``fd`` into the staging
        buffer; False if not whole."""
        if row != self._stage_row + self._staged or self._staged == STAGE_PAGES:
            self._flush()
            self._stage_row = row
        at = self._staged * PAGE_SIZE
        if not _pread_page(fd, self._stage[at:at + PAGE_SIZE], offset):
            return False
        self._staged += 1
        return True

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
