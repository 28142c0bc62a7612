"""The FIEMAP extent map scan reads agrees with SEEK_DATA / SEEK_HOLE.

``scan`` finds the data of a sparse raw image from the FIEMAP ioctl (one call
per thousands of extents) and falls back to SEEK_DATA when the ioctl fails;
both must give the same extents, and the numpy decoding of the extent
records must agree with their Construct schema.
"""
from __future__ import annotations

import fcntl
import importlib
import os

import numpy as np
import pytest

from p2mdump.layout import PAGE_SIZE
from p2mdump.schemas import fiemap as FM
from p2mdump.sources.raw import RawImage

S = importlib.import_module("p2mdump.scan")   # the package exports scan() by that name


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
        got = S._raw_extents(src)
        assert len(fiemap) // 2 > FM.EXTENTS_PER_CALL   # several ioctl calls were needed

        def no_ioctl(*a, **k):
            raise OSError(25, "Inappropriate ioctl for device")
        monkeypatch.setattr(fcntl, "ioctl", no_ioctl)
        assert S._fiemap_bounds(src.fd, base, end) is None
        assert S._raw_extents(src) == got      # the SEEK_DATA fallback: the same extents
        n_frames = src.frames
    covered = {f for a, n in got for f in range(a, a + n)}
    starts = {(f * PAGE_SIZE - base) // PAGE_SIZE for f in data if f * PAGE_SIZE >= base}
    assert {f for f in starts if f < n_frames} <= covered

