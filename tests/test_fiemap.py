"""The FIEMAP extent map scan reads agrees with SEEK_DATA / SEEK_HOLE.

``scan`` finds the data of a sparse raw image from the FIEMAP ioctl (one call
per thousands of extents) and falls back to SEEK_DATA when the ioctl fails;
both must give the same extents, and the numpy decoding of the extent
records must agree with their Construct schema.
"""
from __future__ import annotations

import fcntl
import os

import numpy as np
import pytest

from p2mdump import imagepass as S
from p2mdump.layout import PAGE_SIZE
from p2mdump.schemas import fiemap as FM
from p2mdump.sources.raw import RawImage


def _sparse(path, frames, data_frames):
    with open(path, "wb") as fh:
        fh.truncate(frames * PAGE_SIZE)
        for f in data_frames:
            fh.seek(f * PAGE_SIZE)
            fh.write(bytes([f % 251 + 1]) * PAGE_SIZE)
        fh.flush()
        os.fsync(fh.fileno())


def test_numpy_records_match_the_schema():
    rng = np.random.default_rng(0)
    raw = b"".join(FM.FiemapExtent.build(dict(
        fe_logical=int(rng.integers(0, 1 << 62)), fe_physical=int(rng.integers(0, 1 << 62)),
        fe_length=int(rng.integers(0, 1 << 40)), fe_flags=int(rng.integers(0, 1 << 32))))
        for _ in range(20))
    arr = np.frombuffer(raw, dtype=FM.EXTENT_DTYPE)
    for i, rec in enumerate(FM.FiemapExtent[20].parse(raw)):
        for name in FM.EXTENT_DTYPE.names:
            assert int(arr[name][i]) == rec[name]


def test_request_header_size_is_the_ioctl_size():
    assert FM.Fiemap.sizeof() == 32 and FM.FiemapExtent.sizeof() == 56
    assert (FM.FS_IOC_FIEMAP >> 16) & 0x3FFF == FM.Fiemap.sizeof()


@pytest.mark.parametrize("base", [0, 3 * PAGE_SIZE + 512])
def test_fiemap_extents_equal_seek_data_extents(tmp_path, base, monkeypatch):
    rng = np.random.default_rng(1)
    monkeypatch.setattr(FM, "EXTENTS_PER_CALL", 64)   # several calls for the map
    frames = 4096
    data = sorted(set(rng.integers(0, frames, 1500).tolist())
                  | {0, 1, 2, frames - 1})
    img = tmp_path / "img"
    _sparse(img, frames, data)
    with RawImage(img, base=base) as src:
        end = base + src.frames * PAGE_SIZE
        fiemap = S._fiemap_bounds(src.fd, base, end)
        if fiemap is None:
            pytest.skip("this file system does not answer FIEMAP")
        # FIEMAP splits data where its blocks are not contiguous on the device,
        # SEEK_HOLE does not: the frame extents, once touching ones are merged, agree
        assert len(fiemap) >= len(S._seek_bounds(src.fd, base, end))
        got = S.raw_extents(src)
        assert len(fiemap) > FM.EXTENTS_PER_CALL   # several ioctl calls were needed

        def no_ioctl(*a, **k):
            raise OSError(25, "Inappropriate ioctl for device")
        monkeypatch.setattr(fcntl, "ioctl", no_ioctl)
        assert S._fiemap_bounds(src.fd, base, end) is None
        assert np.array_equal(S.raw_extents(src), got)   # SEEK_DATA: the same extents
        n_frames = src.frames
    covered = {f for a, n in got for f in range(a, a + n)}
    starts = {(f * PAGE_SIZE - base) // PAGE_SIZE for f in data if f * PAGE_SIZE >= base}
    assert {f for f in starts if f < n_frames} <= covered



def test_unwritten_extents_are_asked_about_with_seek_data(tmp_path, monkeypatch):
    """Allocated but unwritten extents (fallocate; a freshly written file
    while it is written back) read as zeros except where the page cache
    holds data: FIEMAP's map is refined there with SEEK_DATA, not thrown
    away, and gives the extents SEEK_DATA alone gives."""
    img = tmp_path / "img"
    frames = 2048
    with open(img, "wb") as fh:
        fh.truncate(frames * PAGE_SIZE)
        try:
            os.posix_fallocate(fh.fileno(), 100 * PAGE_SIZE, 1000 * PAGE_SIZE)
        except OSError:
            pytest.skip("this file system does not allocate ahead")
        for f in (5, 150, 151, 600, 1099, 1500):     # data, some inside the allocation
            fh.seek(f * PAGE_SIZE)
            fh.write(bytes([f % 251 + 1]) * PAGE_SIZE)
        fh.flush()                                    # no fsync: dirty pages, unwritten extents
        with RawImage(img) as src:
            end = src.frames * PAGE_SIZE
            _sparse(tmp_path / "plain", 64, [3, 9])      # written back: no unwritten extent
            with RawImage(tmp_path / "plain") as p:
                plain = S._fiemap_bounds(p.fd, 0, 64 * PAGE_SIZE)
            fiemap = S._fiemap_bounds(src.fd, 0, end)
            if plain is None and fiemap is None:
                pytest.skip("this file system does not answer FIEMAP")
            assert fiemap is not None
            got = S.raw_extents(src)

            def no_ioctl(*a, **k):
                raise OSError(25, "Inappropriate ioctl for device")
            monkeypatch.setattr(fcntl, "ioctl", no_ioctl)
            assert np.array_equal(S.raw_extents(src), got)
    covered = {f for a, n in got.tolist() for f in range(a, a + n)}
    assert {5, 150, 151, 600, 1099, 1500} <= covered
    assert len(covered) < 500                         # the allocation's zeros are no data
