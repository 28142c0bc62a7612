"""Pages read from scattered file offsets into slots of a buffer, in bulk.

A sparse image whose tree pages are scattered has one extent per page, and
``scan`` reads each of them twice (its pass, then the walk of the tree it
found): hundreds of thousands of single-page reads.  :func:`read_pages`
hands them to the kernel in batches of thousands through an io_uring (Linux
5.6+; one ``io_uring_enter`` per batch, its requests filled and its answers
read with numpy, no Python code per page), and falls back to one ``preadv``
per page, issued from C by ``map``, where the ring cannot be set up
(another OS, an old kernel, io_uring disabled or filtered).  A page the ring
did not read whole is read again by ``preadv``, so short reads and I/O
errors are found and told as that path tells them.
"""
from __future__ import annotations

import errno
import os
import platform
import sys
import threading
from itertools import repeat

import numpy as np

from .layout import PAGE_SIZE

#: read requests per io_uring_enter (the ring's size)
RING_ENTRIES = 4096
#: use the io_uring when it can be set up (tests turn it off to exercise the fallback)
USE_RING = True

_ring: _Ring | None = None
_ring_failed = False
#: the process that set the ring up (a forked child sets up its own)
_ring_pid = 0
#: held while a thread uses the ring (its requests and answers are one batch's)
_busy = threading.Lock()


def read_pages(fd: int, offsets: np.ndarray, dest: np.ndarray, slots: np.ndarray) -> np.ndarray:
    """The page at file offset ``offsets[i]`` of ``fd`` read into page
    ``slots[i]`` of ``dest`` (a writable, C-contiguous array, viewed as
    bytes) for every i: whether each was read whole."""
    offsets = np.asarray(offsets, dtype=np.int64)
    slots = np.asarray(slots, dtype=np.int64)
    if not (dest.flags.c_contiguous and dest.flags.writeable):
        raise ValueError("read_pages needs a writable C-contiguous buffer")
    mem = dest.reshape(-1).view(np.uint8)
    if not len(offsets):
        return np.zeros(0, dtype=bool)
    if len(slots) != len(offsets) or slots.min() < 0 or \
            int(slots.max()) >= len(mem) // PAGE_SIZE:
        raise ValueError("read_pages: a slot outside the buffer")
    # one ring a process, one batch at a time: a thread that finds it busy
    # reads by preadv rather than wait
    if not _busy.acquire(blocking=False):
        return _preadv_pages(fd, offsets, mem, slots)
    try:
        ring = _get_ring()
        if ring is None:
            return _preadv_pages(fd, offsets, mem, slots)
        ok = ring.read(fd, offsets, mem.ctypes.data + slots * PAGE_SIZE)
    finally:
        _busy.release()
    if not ok.all():
        redo = np.flatnonzero(~ok)
        ok[redo] = _preadv_pages(fd, offsets[redo], mem, slots[redo])
    return ok


def _preadv_pages(fd: int, offsets: np.ndarray, mem: np.ndarray, slots: np.ndarray) -> np.ndarray:
    """One ``preadv`` per page, issued from C by ``map``."""
    # (numpy's stubs give ndarray the buffer protocol from Python 3.12 only)
    view = memoryview(mem)  # type: ignore[arg-type]
    iovs = [[view[a:a + PAGE_SIZE]] for a in (slots * PAGE_SIZE).tolist()]
    offs = offsets.tolist()
    try:
        got = list(map(os.preadv, repeat(fd, len(iovs)), iovs, offs))
    except OSError:   # an I/O error: page by page, to know which
        got = [preadv_size(fd, iov, off) for iov, off in zip(iovs, offs)]
    return np.array(got, dtype=np.int64) == PAGE_SIZE


def preadv_size(fd: int, iov: list, offset: int) -> int:
    """``os.preadv``, or -1 for an I/O error."""
    try:
        return os.preadv(fd, iov, offset)
    except OSError:
        return -1


def _get_ring() -> _Ring | None:
    """This process's ring, set up on first use; None when there is none."""
    global _ring, _ring_failed, _ring_pid
    if not USE_RING or _ring_failed:
        return None
    if _ring is None or _ring_pid != os.getpid():
        _ring_pid = os.getpid()
        try:
            _ring = _Ring(RING_ENTRIES)
        except (OSError, ValueError, AttributeError, ImportError):
            _ring, _ring_failed = None, True
    return _ring


def _drop_ring(ring: _Ring | None = None) -> None:
    """Stop using ``ring`` (the process's ring by default): it failed, or a
    batch was cut short, which leaves its state unknown."""
    global _ring, _ring_failed
    ring = ring or _ring
    if ring is _ring:
        _ring_failed = True
        _ring = None
    if ring is not None:
        ring.close()


class _Ring:
    """An io_uring used synchronously: a batch of reads submitted and waited for at once."""

    def __init__(self, entries: int):
        import ctypes
        import mmap

        from .schemas import io_uring as U

        self.U = U
        if not sys.platform.startswith("linux") or platform.machine() not in U.MACHINES:
            # elsewhere the system call numbers name other calls
            raise OSError(errno.ENOSYS, "no io_uring system calls known here")
        libc = ctypes.CDLL(None, use_errno=True)
        self._syscall = libc.syscall
        self._syscall.restype = ctypes.c_long
        self._errno = ctypes.get_errno
        params = ctypes.create_string_buffer(U.Params.sizeof())
        fd = self._call(U.SYS_IO_URING_SETUP, entries, ctypes.addressof(params))
        self.fd = fd
        self._maps: list = []
        try:
            p = U.Params.parse(params.raw)
            if not p.features & U.IORING_FEAT_SINGLE_MMAP:
                raise OSError(errno.ENOSYS, "io_uring without a single ring mapping")
            so, co = p.sq_off, p.cq_off
            size = max(so.array + p.sq_entries * 4,
                       co.cqes + p.cq_entries * U.CQE_DTYPE.itemsize)
            flags = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)
            prot = mmap.PROT_READ | mmap.PROT_WRITE
            rings = mmap.mmap(fd, size, flags, prot, offset=U.IORING_OFF_SQ_RING)
            sqes = mmap.mmap(fd, p.sq_entries * U.SQE_DTYPE.itemsize, flags, prot,
                             offset=U.IORING_OFF_SQES)
            self._maps = [rings, sqes]
            words = np.frombuffer(rings, dtype=np.uint32)
            self._words = words
            self._sq_head, self._sq_tail = so.head // 4, so.tail // 4
            self._sq_mask = int(words[so.ring_mask // 4])
            self._cq_head, self._cq_tail = co.head // 4, co.tail // 4
            self._cq_mask = int(words[co.ring_mask // 4])
            self.entries = p.sq_entries
            self._sq_array = words[so.array // 4:so.array // 4 + p.sq_entries]
            self._cqes = np.frombuffer(rings, dtype=U.CQE_DTYPE, count=p.cq_entries,
                                       offset=co.cqes)
            np.frombuffer(sqes, dtype=np.uint8)[:] = 0     # the fields a read leaves unset
            self._sqes = np.frombuffer(sqes, dtype=U.SQE_DTYPE)
            # request i is always a page read whose answer names i: only the
            # file, offset and address change from one batch to the next
            self._numbers = np.arange(p.sq_entries, dtype=np.uint32)
            self._sqes["opcode"] = U.IORING_OP_READ
            self._sqes["len"] = PAGE_SIZE
            self._sqes["user_data"] = self._numbers
        except BaseException:
            self.close()
            raise

    def _call(self, *args: int) -> int:
        import ctypes

        while True:
            r = self._syscall(*(ctypes.c_long(a) for a in args))
            if r >= 0:
                return r
            e = self._errno()
            if e != errno.EINTR:
                raise OSError(e, os.strerror(e))

    def close(self) -> None:
        for m in self._maps:
            try:
                m.close()
            except BufferError:     # a numpy view still names it: freed with it
                pass
        self._maps = []
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def read(self, fd: int, offsets: np.ndarray, addrs: np.ndarray) -> np.ndarray:
        """Page i read from ``offsets[i]`` into address ``addrs[i]``: whether
        each was read whole (False for the pages of a batch the ring failed)."""
        ok = np.zeros(len(offsets), dtype=bool)
        for a in range(0, len(offsets), self.entries):
            b = min(len(offsets), a + self.entries)
            try:
                ok[a:b] = self._batch(fd, offsets[a:b], addrs[a:b])
            except OSError:
                break       # the ring is dropped (_settle); the rest is read by preadv
        return ok

    def _batch(self, fd: int, offsets: np.ndarray, addrs: np.ndarray) -> np.ndarray:
        """One batch (at most ``entries`` pages): whether each was read whole."""
        U, w, k = self.U, self._words, len(offsets)
        sqe = self._sqes[:k]
        sqe["fd"] = fd
        sqe["off"] = offsets
        sqe["addr"] = addrs
        tail = int(w[self._sq_tail])
        numbers = self._numbers[:k]
        self._sq_array[(tail + numbers) & self._sq_mask] = numbers
        got = np.full(k, -1, dtype=np.int64)
        # where the kernel's counts stand before the batch (see _settle)
        sq0, cq0 = int(w[self._sq_head]), int(w[self._cq_tail])
        w[self._sq_tail] = (tail + k) & 0xFFFFFFFF
        submitted = done = 0
        try:
            while done < k:
                submitted += self._call(U.SYS_IO_URING_ENTER, self.fd, k - submitted, k - done,
                                        U.IORING_ENTER_GETEVENTS, 0, 0)
                head, ctail = int(w[self._cq_head]), int(w[self._cq_tail])
                n = (ctail - head) & 0xFFFFFFFF
                at = (head + np.arange(n)) & self._cq_mask
                which = self._cqes["user_data"][at].astype(np.int64)
                res = self._cqes["res"][at]
                w[self._cq_head] = ctail
                if n == 0 or (which >= k).any():
                    raise OSError(errno.EIO, "io_uring answered what it was not asked")
                got[which] = res
                done += n
        except BaseException:
            self._settle(sq0, cq0)
            raise
        return got == PAGE_SIZE

    def _settle(self, sq0: int, cq0: int) -> None:
        """Wait until every request the kernel took since its counts stood at
        ``sq0`` / ``cq0`` is answered: until then it may still write into
        the caller's buffers, which an exception unwinding the stack (Ctrl-C,
        SIGTERM, an error) could free.  Read from the ring's own counters,
        so it holds wherever the batch was cut short; a further signal
        meanwhile is raised once all is answered.  The ring is then dropped
        (its state is no longer one a batch can start from)."""
        w = self._words
        late: BaseException | None = None
        while True:
            try:
                taken = (int(w[self._sq_head]) - sq0) & 0xFFFFFFFF
                answered = (int(w[self._cq_tail]) - cq0) & 0xFFFFFFFF
                if answered >= taken:
                    break
                self._call(self.U.SYS_IO_URING_ENTER, self.fd, 0, taken - answered,
                           self.U.IORING_ENTER_GETEVENTS, 0, 0)
            except OSError:
                break       # the ring itself fails: nothing more to wait for from it
            except BaseException as exc:   # another signal: wait on, raise it after
                late = late or exc
        _drop_ring(self)
        if late is not None:
            raise late
