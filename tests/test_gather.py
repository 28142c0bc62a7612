"""Leaves scattered over the image, gathered in batches (tablerows.gather_pages),
give what reading them one run at a time through the source gives.

The reference is the same ``read_runs`` on a source that names no file
offsets (every run then goes through ``read_frames_into``, the path each
scattered leaf took before the gather): the same table, the same frames
read, the same unreadable frames reported in the same (row) order, in both
sinks (MemoryRows, FileRows), on random scatterings of raw, xl dump-core and
ELF images with frames missing, cut short or failing to read.
"""
from __future__ import annotations

import errno
import os
from unittest import mock

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import p2mdump.pageread as P
import p2mdump.tablerows as T
from p2mdump.layout import PAGE_SIZE, layout_for
from p2mdump.sources import open_image
from p2mdump.sources.raw import RawImage
from p2mdump.tablerows import FileRows, MemoryRows, read_runs

from conftest import FIXTURES

L = layout_for(8)
N_FRAMES = 240


@pytest.fixture(autouse=True, params=["io_uring", "preadv"])
def page_reader(request, monkeypatch):
    """Every test with scattered pages read by the io_uring (where the
    kernel has one) and by the ``preadv`` fallback (forced)."""
    monkeypatch.setattr(P, "USE_RING", request.param == "io_uring")
    return request.param


class OneRunAtATime:
    """``source`` without ``frame_offsets``: read_runs reads every run
    through ``read_frames_into``."""

    def __init__(self, source):
        self.source = source

    def read_frames_into(self, mfn, buf):
        return self.source.read_frames_into(mfn, buf)

    def file_extent(self, mfn, count):
        return self.source.file_extent(mfn, count)


def fill(kind, source, n_rows, rows, mfns, tmp_dir):
    """(table, unreadable reports, frames read, progress calls) of read_runs
    into a new ``kind`` sink whose other rows are INVALID."""
    seen, calls = [], []
    others = np.setdiff1d(np.arange(n_rows), rows)
    if kind == "memory":
        sink = MemoryRows(n_rows, L)
        sink.invalid(others)
        got = read_runs(sink, source, rows, mfns, lambda r, m: seen.append((r, m)),
                        lambda d, t: calls.append((d, t)))
        return np.array(sink.finish(n_rows * L.per_page)[0]), seen, got, calls
    path = os.path.join(tmp_dir, f"out-{os.getpid()}-{len(os.listdir(tmp_dir))}")
    with open(path, "w+b") as fh:
        sink = FileRows(fh.fileno(), n_rows, L)
        sink.invalid(others)
        got = read_runs(sink, source, rows, mfns, lambda r, m: seen.append((r, m)),
                        lambda d, t: calls.append((d, t)))
        table = np.array(sink.finish(n_rows * L.per_page)[0])
    os.unlink(path)
    return table, seen, got, calls


def scattering(rng, frames: np.ndarray, absent: np.ndarray, n_rows: int):
    """(rows, mfns): rows in random order of the table named by leaves of
    every kind: lone frames, frames a page or a few apart, runs of
    consecutive frames, frames the image lacks, one frame named twice."""
    mfns = np.full(n_rows, -1, dtype=np.int64)
    pos = 0
    while pos < n_rows:
        kind = rng.integers(0, 6)
        k = int(rng.integers(1, 9))
        take = min(k, n_rows - pos)
        if kind == 0:                       # consecutive frames
            m0 = rng.choice(frames)
            mfns[pos:pos + take] = m0 + np.arange(take)
        elif kind == 1:                     # near each other, small gaps
            m0 = rng.choice(frames)
            mfns[pos:pos + take] = m0 + np.cumsum(rng.integers(1, 5, take))
        elif kind == 2:                     # not in the image
            mfns[pos:pos + take] = rng.choice(absent, take)
        elif kind == 3:                     # a gap in the rows
            pass
        else:                               # lone frames anywhere
            mfns[pos:pos + take] = rng.choice(frames, take)
        pos += take
    if rng.integers(0, 2):
        named = np.flatnonzero(mfns >= 0)
        if len(named) > 1:
            mfns[named[-1]] = mfns[named[0]]
    # shuffle the order of whole leaves over the rows, keep some runs
    rows = np.flatnonzero(mfns >= 0)
    return rows, mfns[rows].astype(np.uint64)


def assert_same(source, rows, mfns, n_rows, tmp_dir):
    ref = fill("memory", OneRunAtATime(source), n_rows, rows, mfns, tmp_dir)
    for kind in ("memory", "file"):
        table, seen, got, calls = fill(kind, source, n_rows, rows, mfns, tmp_dir)
        assert np.array_equal(table, ref[0]), kind
        assert seen == ref[1], kind
        assert got == ref[2], kind
        assert calls[-1:] == ([(len(rows), len(rows))] if len(rows) else [])
        assert [d for d, _ in calls] == sorted(d for d, _ in calls)
    return ref


@pytest.fixture(scope="module")
def raw_image(tmp_path_factory):
    path = tmp_path_factory.mktemp("gather") / "img"
    np.random.default_rng(7).integers(0, 1 << 62, N_FRAMES * 512, dtype="<u8").tofile(path)
    return str(path)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2 ** 32 - 1), iov_max=st.sampled_from([3, 5, 1024]),
       gap=st.sampled_from([0, 2, 6]), batch=st.sampled_from([1, 7, 1024]))
def test_gather_raw_equals_one_run_at_a_time(raw_image, tmp_path_factory, seed, iov_max,
                                             gap, batch):
    rng = np.random.default_rng(seed)
    n_rows = int(rng.integers(1, 200))
    frames = np.arange(N_FRAMES - 8)
    absent = np.arange(N_FRAMES, N_FRAMES + 50)
    rows, mfns = scattering(rng, frames, absent, n_rows)
    tmp_dir = str(tmp_path_factory.getbasetemp())
    real = os.preadv

    def bounded(fd, bufs, offset):
        assert len(bufs) <= iov_max
        return real(fd, bufs, offset)

    with mock.patch.object(T, "IOV_MAX", iov_max), mock.patch.object(T, "GAP_PAGES", gap), \
            mock.patch.object(T, "EACH_PAGES", batch), mock.patch.object(T, "STAGE_PAGES", batch), \
            mock.patch.object(os, "preadv", bounded), RawImage(raw_image) as source:
        ref = assert_same(source, rows, mfns, n_rows, tmp_dir)
    # frames read are the frames of the image, INVALID elsewhere
    data = np.fromfile(raw_image, dtype="<u8").reshape(N_FRAMES, 512)
    table = ref[0].reshape(n_rows, 512)
    for r, m in zip(rows.tolist(), mfns.tolist()):
        want = data[m] if m < N_FRAMES else np.full(512, L.invalid, dtype=np.uint64)
        assert np.array_equal(table[r], want)
    assert ref[1] == [(r, m) for r, m in zip(rows.tolist(), mfns.tolist()) if m >= N_FRAMES]


def test_gather_is_used_and_reads_near_frames_together(raw_image, tmp_path):
    """Every other frame of a stretch, in shuffled rows: one preadv per stretch."""
    rows = np.arange(64)
    mfns = (np.random.default_rng(3).permutation(64) * 2 + 10).astype(np.uint64)
    calls = []
    real = os.preadv

    def counting(fd, bufs, offset):
        calls.append(len(bufs))
        return real(fd, bufs, offset)

    with RawImage(raw_image) as source, mock.patch.object(os, "preadv", counting):
        assert_same(source, rows, mfns, 64, str(tmp_path))
    # per sink: one preadv of 64 pages and 63 gaps; the reference: 64 preadv
    assert calls.count(127) == 2 and len(calls) == 64 + 2


def test_image_cut_short_after_open(raw_image, tmp_path):
    """Frames the source still names but the file no longer holds (short
    reads in the middle of a gathered stretch): INVALID and reported, in
    row order, as when read one run at a time."""
    img = tmp_path / "img"
    img.write_bytes(open(raw_image, "rb").read())
    rng = np.random.default_rng(11)
    rows = np.arange(120)
    mfns = np.concatenate([rng.permutation(N_FRAMES)[:60],
                           N_FRAMES - 40 + np.arange(0, 60, 1) // 1 % 40])
    mfns = mfns[rng.permutation(120)].astype(np.uint64)
    with RawImage(img) as source:
        os.truncate(img, (N_FRAMES - 20) * PAGE_SIZE + 100)
        ref = assert_same(source, rows, mfns, 120, str(tmp_path))
    assert ref[1] and all(m >= N_FRAMES - 20 for _, m in ref[1])


def test_read_errors(raw_image, tmp_path):
    """preadv failing (EIO) for some frames: they are INVALID and reported,
    the frames around them read, as when read one run at a time."""
    bad = {17, 18, 90, 150}
    real = os.preadv

    def failing(fd, bufs, offset):
        size = sum(len(memoryview(b)) for b in bufs)
        if any(offset <= m * PAGE_SIZE < offset + size for m in bad):
            raise OSError(errno.EIO, "I/O error")
        return real(fd, bufs, offset)

    rng = np.random.default_rng(5)
    rows, mfns = scattering(rng, np.arange(N_FRAMES - 8), np.arange(N_FRAMES, N_FRAMES + 9),
                            180)
    mfns[:4] = [16, 17, 19, 150]
    with RawImage(raw_image) as source, mock.patch.object(os, "preadv", failing):
        ref = assert_same(source, rows, mfns, 180, str(tmp_path))
    assert {m for _, m in ref[1]} >= {17, 150}


@pytest.mark.parametrize("name", ["core64.core", "core32.core", "vmcore64.elf"])
def test_gather_containers(tmp_path, name):
    """xl dump-core and ELF images: frames in random order over the rows."""
    with open_image(os.path.join(FIXTURES, name)) as source:
        assert hasattr(source, "frame_offsets")
        limit = source.frame_limit()
        present = np.flatnonzero(source.frames_present(np.arange(limit + 8)))
        rng = np.random.default_rng(1)
        absent = rng.permutation(np.setdiff1d(np.arange(limit + 8), present))[:40]
        n_rows = 2 * len(present)
        mfns = np.full(n_rows, -1, dtype=np.int64)
        mfns[rng.permutation(n_rows)[:len(present)]] = rng.permutation(present)
        mfns[np.flatnonzero(mfns < 0)[:len(absent)]] = absent
        rows = np.flatnonzero(mfns >= 0)
        ref = assert_same(source, rows, mfns[rows].astype(np.uint64), n_rows, str(tmp_path))
        assert ref[2] == len(present) and len(ref[1]) == len(absent)


def test_elf_frame_offsets_agree_with_reads():
    """The ELF source names an offset only for frames wholly in a segment's
    file data, and the page there is the frame it reads."""
    with open_image(os.path.join(FIXTURES, "vmcore64.elf")) as source:
        mfns = np.arange(source.frame_limit() + 4, dtype=np.uint64)
        fd, offsets = source.frame_offsets(mfns)
        assert (offsets >= 0).any()
        for m, off in zip(mfns.tolist(), offsets.tolist()):
            if off >= 0:
                assert os.pread(fd, PAGE_SIZE, off) == source.read_frame(m)
        assert not (offsets[~source.frames_present(mfns)] >= 0).any()
        huge = np.array([1 << 63, (1 << 64) - 1], dtype=np.uint64)
        assert (source.frame_offsets(huge)[1] == -1).all()


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs /proc")
def test_memory_rows_table_is_allocated_up_front():
    """Every row of a MemoryRows table is written by the walk, so its pages
    are allocated with it (the gather writes rows in file order, not row
    order); a plain empty_words array is not."""
    from p2mdump.table import empty_words

    def resident() -> int:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    before = resident()
    rows = MemoryRows(4096, L)                 # 16 MiB
    assert resident() - before >= 15 << 20
    before = resident()
    words = empty_words(4096 * 512, np.uint64)
    assert resident() - before < 8 << 20
    del rows, words
