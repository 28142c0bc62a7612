"""Scattered pages read in bulk (pageread.read_pages): the io_uring and the
``preadv`` fallback read the same bytes and say the same of every page.

The io_uring records are decoded and filled with numpy dtypes, which must
agree with their Construct schemas.  Where the ring cannot be set up, or a
batch fails, or the ring cannot read a page, the pages are read by
``preadv``; each of those paths is forced here and must give what the
fallback alone gives.
"""
from __future__ import annotations

import errno
import os

import numpy as np
import pytest

import p2mdump.pageread as P
from p2mdump.layout import PAGE_SIZE
from p2mdump.schemas import io_uring as U

N_PAGES = 64


@pytest.fixture
def fresh_ring(monkeypatch):
    """A ring set up anew by the test (with the test's RING_ENTRIES), dropped after it."""
    monkeypatch.setattr(P, "_ring", None)
    monkeypatch.setattr(P, "_ring_failed", False)
    monkeypatch.setattr(P, "USE_RING", True)
    yield
    if P._ring is not None:
        P._ring.close()


def ring_or_skip():
    ring = P._get_ring()
    if ring is None:
        pytest.skip("no io_uring here (the fallback is tested on its own)")
    return ring


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    """N_PAGES pages of random bytes and half a page more."""
    path = tmp_path_factory.mktemp("pageread") / "img"
    data = np.random.default_rng(2).integers(0, 256, N_PAGES * PAGE_SIZE + PAGE_SIZE // 2,
                                             dtype=np.uint8)
    data.tofile(path)
    return str(path), data


def requests(rng, n):
    """File offsets of every kind (whole pages, unaligned, the half page at
    the end, past the end) and distinct destination slots."""
    offsets = rng.integers(0, N_PAGES, n) * PAGE_SIZE
    kind = rng.integers(0, 8, n)
    offsets[kind == 0] += rng.integers(1, PAGE_SIZE, int((kind == 0).sum()))
    offsets[kind == 1] = N_PAGES * PAGE_SIZE                        # half a page
    offsets[kind == 2] = (N_PAGES + 1 + rng.integers(0, 9, int((kind == 2).sum()))) * PAGE_SIZE
    slots = rng.permutation(2 * n)[:n]
    return offsets.astype(np.int64), slots.astype(np.int64)


def read(fd, offsets, slots, n_slots):
    dest = np.zeros((n_slots, PAGE_SIZE), dtype=np.uint8)
    ok = P.read_pages(fd, offsets, dest, slots)
    return ok, dest


def expected(data, offsets, slots, n_slots):
    dest = np.zeros((n_slots, PAGE_SIZE), dtype=np.uint8)
    ok = np.zeros(len(offsets), dtype=bool)
    for i, (off, s) in enumerate(zip(offsets.tolist(), slots.tolist())):
        piece = data[off:off + PAGE_SIZE]
        dest[s, :len(piece)] = piece
        ok[i] = len(piece) == PAGE_SIZE
    return ok, dest


def test_numpy_records_match_the_schemas():
    rng = np.random.default_rng(0)
    assert (U.Params.sizeof(), U.Sqe.sizeof(), U.Cqe.sizeof()) == (120, 64, 16)
    fields = dict(opcode=255, flags=7, ioprio=3, fd=-5, off=1 << 63, addr=(1 << 64) - 1,
                  len=1 << 31, rw_flags=9, user_data=1 << 40)
    sqes = [fields] + [{k: int(rng.integers(0, 128)) for k in fields} for _ in range(9)]
    raw = b"".join(U.Sqe.build(s) for s in sqes)
    arr = np.frombuffer(raw, dtype=U.SQE_DTYPE)
    for i, s in enumerate(sqes):
        for name in U.SQE_DTYPE.names:
            assert int(arr[name][i]) == s[name]
    # filled with numpy, parsed by the schema
    filled = np.zeros(3, dtype=U.SQE_DTYPE)
    filled["off"] = [1, 2, 1 << 62]
    filled["fd"] = -1
    filled["user_data"] = [7, 8, 9]
    for i, rec in enumerate(U.Sqe[3].parse(filled.tobytes())):
        assert (rec.off, rec.fd, rec.user_data, rec.len) == (int(filled["off"][i]), -1, 7 + i, 0)
    cqes = [dict(user_data=int(rng.integers(0, 1 << 62)), res=int(rng.integers(-4096, 1 << 20)),
                 flags=int(rng.integers(0, 1 << 32))) for _ in range(10)]
    arr = np.frombuffer(b"".join(U.Cqe.build(c) for c in cqes), dtype=U.CQE_DTYPE)
    for i, c in enumerate(cqes):
        for name in U.CQE_DTYPE.names:
            assert int(arr[name][i]) == c[name]


@pytest.mark.parametrize("use_ring", [True, False])
@pytest.mark.parametrize("seed", range(4))
def test_pages_read_are_the_file_bytes(image, fresh_ring, monkeypatch, use_ring, seed):
    path, data = image
    monkeypatch.setattr(P, "USE_RING", use_ring)
    monkeypatch.setattr(P, "RING_ENTRIES", 8)       # several batches, the ring wraps
    rng = np.random.default_rng(seed)
    offsets, slots = requests(rng, int(rng.integers(1, 100)))
    fd = os.open(path, os.O_RDONLY)
    try:
        if use_ring:
            ring_or_skip()
        got = read(fd, offsets, slots, 2 * len(offsets))
        if use_ring:
            assert P._ring is not None and not P._ring_failed
        else:
            assert P._ring is None
    finally:
        os.close(fd)
    want = expected(data, offsets, slots, 2 * len(offsets))
    assert np.array_equal(got[0], want[0])
    # a page not read whole may hold what was read of it: compare those read
    assert np.array_equal(got[1][slots[want[0]]], want[1][slots[want[0]]])


def test_ring_reads_without_preadv(image, fresh_ring, monkeypatch):
    """Pages that read whole take no preadv at all when the ring works."""
    path, data = image
    ring_or_skip()
    calls = []
    real = os.preadv
    monkeypatch.setattr(os, "preadv", lambda *a: calls.append(a) or real(*a))
    offsets = np.arange(N_PAGES, dtype=np.int64)[::-1] * PAGE_SIZE
    fd = os.open(path, os.O_RDONLY)
    try:
        ok, dest = read(fd, offsets, np.arange(N_PAGES), N_PAGES)
    finally:
        os.close(fd)
    assert ok.all() and not calls
    assert np.array_equal(dest[::-1].reshape(-1), data[:N_PAGES * PAGE_SIZE])


def test_no_ring_falls_back(image, fresh_ring, monkeypatch):
    """io_uring_setup failing (an old kernel, io_uring disabled): preadv reads every page."""
    path, data = image

    def no_ring(entries):
        raise OSError(errno.ENOSYS, "no io_uring")

    monkeypatch.setattr(P, "_Ring", no_ring)
    calls = []
    real = os.preadv
    monkeypatch.setattr(os, "preadv", lambda *a: calls.append(a) or real(*a))
    offsets, slots = requests(np.random.default_rng(9), 50)
    fd = os.open(path, os.O_RDONLY)
    try:
        got = read(fd, offsets, slots, 100)
    finally:
        os.close(fd)
    assert P._ring_failed and len(calls) == 50
    want = expected(data, offsets, slots, 100)
    assert np.array_equal(got[0], want[0])
    assert np.array_equal(got[1][slots[want[0]]], want[1][slots[want[0]]])


@pytest.mark.parametrize("where", [("darwin", "arm64"), ("linux", "mips64")])
def test_no_ring_where_the_call_numbers_are_unknown(image, fresh_ring, monkeypatch, where):
    """Another OS, or a Linux machine whose table numbers the calls otherwise:
    no system call is made, preadv reads the pages."""
    path, data = image
    monkeypatch.setattr(P.sys, "platform", where[0])
    monkeypatch.setattr(P.platform, "machine", lambda: where[1])
    fd = os.open(path, os.O_RDONLY)
    try:
        ok, dest = read(fd, np.array([PAGE_SIZE]), np.array([0]), 1)
    finally:
        os.close(fd)
    assert ok.all() and P._ring is None and P._ring_failed
    assert np.array_equal(dest[0], data[PAGE_SIZE:2 * PAGE_SIZE])


def test_ring_failing_mid_way_falls_back(image, fresh_ring, monkeypatch):
    """io_uring_enter failing on the second batch: the ring is dropped and
    the pages it did not read are read by preadv."""
    path, data = image
    monkeypatch.setattr(P, "RING_ENTRIES", 8)
    ring = ring_or_skip()
    real_call = ring._call
    enters = []

    def call(*args):
        if args[0] == U.SYS_IO_URING_ENTER:
            enters.append(args)
            if len(enters) == 2:
                raise OSError(errno.EBUSY, "busy")
        return real_call(*args)

    monkeypatch.setattr(ring, "_call", call)
    offsets = np.arange(40, dtype=np.int64) * PAGE_SIZE
    fd = os.open(path, os.O_RDONLY)
    try:
        ok, dest = read(fd, offsets, np.arange(40), 40)
        assert P._ring is None and P._ring_failed and P._get_ring() is None
    finally:
        os.close(fd)
    assert ok.all() and len(enters) == 2
    assert np.array_equal(dest.reshape(-1), data[:40 * PAGE_SIZE])


def test_pages_the_ring_cannot_read_are_read_again(image, fresh_ring, tmp_path):
    """A file descriptor open for writing only: every read fails (EBADF),
    in the ring and again by preadv, and no page is said to be read."""
    ring_or_skip()
    fd = os.open(tmp_path / "w", os.O_WRONLY | os.O_CREAT)
    try:
        os.write(fd, b"x" * 2 * PAGE_SIZE)
        ok, _ = read(fd, np.array([0, PAGE_SIZE]), np.array([1, 0]), 2)
    finally:
        os.close(fd)
    assert not ok.any() and P._ring is not None


def test_buffer_must_be_writable_contiguous_and_hold_the_slots(image):
    path, _ = image
    fd = os.open(path, os.O_RDONLY)
    try:
        with pytest.raises(ValueError):
            P.read_pages(fd, np.array([0]), np.zeros((2, PAGE_SIZE), np.uint8)[:, ::2],
                         np.array([0]))
        for slots in ([1], [-1], [0, 0]):      # the kernel must never write past the buffer
            with pytest.raises(ValueError):
                P.read_pages(fd, np.array([0]), np.zeros(PAGE_SIZE + 100, np.uint8),
                             np.array(slots))
        frozen = np.zeros(PAGE_SIZE, np.uint8)
        frozen.flags.writeable = False
        with pytest.raises(ValueError):
            P.read_pages(fd, np.array([0]), frozen, np.array([0]))
    finally:
        os.close(fd)


def test_a_batch_cut_short_is_answered_before_it_unwinds(image, fresh_ring, monkeypatch):
    """An exception (Ctrl-C) raised while a batch is in the kernel's hands
    waits for every request the kernel took, so no page lands in a buffer
    after the caller got the exception; the ring is dropped, and the next
    reads take preadv."""
    path, data = image
    ring_or_skip()
    ring = P._get_ring()
    real = ring._call
    calls = []

    def submit_then_interrupt(*args):
        calls.append(args)
        if len(calls) == 1:         # submit everything, wait for nothing, then Ctrl-C
            real(args[0], args[1], args[2], 0, 0, 0, 0)
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(ring, "_call", submit_then_interrupt)
    offsets = np.arange(N_PAGES, dtype=np.int64) * PAGE_SIZE
    dest = np.zeros((N_PAGES, PAGE_SIZE), dtype=np.uint8)
    fd = os.open(path, os.O_RDONLY)
    try:
        with pytest.raises(KeyboardInterrupt):
            P.read_pages(fd, offsets, dest, np.arange(N_PAGES))
        # every request taken was answered before the exception got here
        words = ring._words
        assert words[ring._cq_tail] == words[ring._sq_head]
        assert np.array_equal(dest.reshape(-1), data[:N_PAGES * PAGE_SIZE])
        assert P._ring is None and ring.fd == -1
        again = np.zeros_like(dest)
        assert P.read_pages(fd, offsets, again, np.arange(N_PAGES)).all()
        assert np.array_equal(again, dest)
    finally:
        os.close(fd)


def test_threads_share_the_ring_safely(image, fresh_ring):
    """Threads reading at once get each its own pages: one uses the ring, the
    others, finding it busy, read by preadv (no batch mixes two callers)."""
    import threading

    path, data = image
    fd = os.open(path, os.O_RDONLY)
    results = {}

    def work(t):
        rng = np.random.default_rng(t)
        for _ in range(20):
            pages = rng.permutation(N_PAGES)
            ok, dest = read(fd, pages * PAGE_SIZE, np.arange(N_PAGES), N_PAGES)
            want = data[:N_PAGES * PAGE_SIZE].reshape(N_PAGES, PAGE_SIZE)[pages]
            if not (ok.all() and np.array_equal(dest, want)):
                results[t] = False
                return
        results[t] = True

    try:
        threads = [threading.Thread(target=work, args=(t,)) for t in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        os.close(fd)
    assert results == {t: True for t in range(6)}
