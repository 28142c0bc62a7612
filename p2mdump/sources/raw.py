"""A raw machine-memory image: frame ``m`` lives at ``base + m * 4096``.

Frames are read with ``preadv`` straight into the caller's buffer: a sparse
image of hundreds of GiB is never mapped or read whole, and the pages read do
not count toward the process's memory.
"""
from __future__ import annotations

import errno
import os

from ..errors import ImageError
from ..layout import PAGE_SIZE
from .base import FrameSource, open_fd


class RawImage(FrameSource):
    container = "raw"

    def __init__(self, path, *, base: int = 0):
        self.path = os.fspath(path)
        if base < 0:
            raise ImageError(f"--base must not be negative (got {base})")
        self.base = base
        fd, size = open_fd(self.path)
        self.fd = fd
        self.size = size
        if size == 0:
            os.close(fd)
            self.fd = -1
            raise ImageError(f"{self.path}: empty file")
        if self.size < base + PAGE_SIZE:
            os.close(fd)
            self.fd = -1
            raise ImageError(
                f"{self.path}: {self.size} bytes hold no whole 4096-byte frame"
                + (f" after --base {base:#x}" if base else ""))
        #: number of whole frames in the image
        self.frames = (self.size - base) // PAGE_SIZE

    def frame_limit(self) -> int:
        return self.frames

    def has_frame(self, mfn: int) -> bool:
        return 0 <= mfn < self.frames

    def frames_present(self, mfns):
        return mfns < self.frames  # works on numpy arrays without importing numpy

    def file_extent(self, mfn: int, count: int):
        if mfn < 0 or mfn >= self.frames or count <= 0:
            return None
        return self.fd, self.base + mfn * PAGE_SIZE, min(count, self.frames - mfn)

    def frame_offsets(self, mfns):
        """(fd, int64 file offsets of frames ``mfns``, -1 where not in the image)."""
        import numpy as np

        m = np.asarray(mfns, dtype=np.uint64)
        here = m < np.uint64(self.frames)
        offsets = np.full(len(m), -1, dtype=np.int64)
        offsets[here] = self.base + m[here].astype(np.int64) * PAGE_SIZE
        return self.fd, offsets

    def read_frames_into(self, mfn: int, buf) -> int:
        want = len(buf) // PAGE_SIZE
        if mfn < 0 or mfn >= self.frames or want == 0:
            return 0
        want = min(want, self.frames - mfn)
        view = memoryview(buf)[: want * PAGE_SIZE]
        offset = self.base + mfn * PAGE_SIZE
        done = 0
        total = want * PAGE_SIZE
        while done < total:
            try:
                n = os.preadv(self.fd, [view[done:]], offset + done)
            except OSError as exc:
                if exc.errno == errno.EINTR:
                    continue
                break  # an I/O error is an unreadable frame, not a crash
            if n <= 0:
                break
            done += n
        return done // PAGE_SIZE

    def describe(self) -> str:
        extra = f", base {self.base:#x}" if self.base else ""
        return f"raw image {self.path} ({self.frames} frames{extra})"

    def close(self) -> None:
        if getattr(self, "fd", -1) >= 0:
            os.close(self.fd)
            self.fd = -1

    def __del__(self):
        self.close()
