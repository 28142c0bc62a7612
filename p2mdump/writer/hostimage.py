"""Put several generated guests in one raw host image.

A host's memory holds many guests, each in machine frames of its own.
Generate each guest with its own ``mfn_offset`` (so that their frames do not
meet), then merge the raw images: every frame that holds something in an
input is copied to the same frame of the output.  Frames that are zero in
every input stay holes of the (sparse) output.  Two inputs with data in one
frame are an error, not a silent overwrite.
"""
from __future__ import annotations

import errno
import os

import numpy as np

from ..atomic import atomic_output, pwrite_all
from ..errors import SpecError
from ..layout import PAGE_SIZE
from .image import runs

#: frames read per step (8 MiB)
STEP_FRAMES = 2048


def _data_extents(fd: int, size: int):
    """(offset, length) of the parts of a file that may hold data (holes of a
    sparse file skipped where the file system tells)."""
    pos = 0
    while pos < size:
        try:
            data = os.lseek(fd, pos, os.SEEK_DATA)
            hole = min(os.lseek(fd, data, os.SEEK_HOLE), size)
        except OSError as exc:
            if exc.errno == errno.ENXIO:      # no data past pos
                return
            yield pos, size - pos             # the file system cannot tell: read it all
            return
        yield data, hole - data
        pos = hole


def _nonzero_frames(fd: int, size: int):
    """(first frame, frames as a (k, 4096) uint8 array, which rows are non-zero)."""
    buf = np.empty(STEP_FRAMES * PAGE_SIZE, dtype=np.uint8)
    for off, length in _data_extents(fd, size):
        first = off // PAGE_SIZE
        end = -(-(off + length) // PAGE_SIZE)
        for f in range(first, end, STEP_FRAMES):
            n = min(STEP_FRAMES, end - f)
            # (numpy's stubs give ndarray the buffer protocol from Python 3.12 only)
            got = os.preadv(fd, [memoryview(buf)[:n * PAGE_SIZE]], f * PAGE_SIZE)  # type: ignore[arg-type]
            k = got // PAGE_SIZE
            frames = buf[:k * PAGE_SIZE].reshape(k, PAGE_SIZE)
            yield f, frames, frames.any(axis=1)


def merge_raw_images(out, images) -> dict:
    """Write the raw image ``out`` holding every non-zero frame of the raw
    ``images`` (machine frame M at offset M*4096 in each, no --base).
    Returns {"frames": frames of the output, "written": {image: frames copied}}.
    Raises SpecError when two images hold data in the same frame."""
    taken: list[np.ndarray] = []
    written = {}
    size = 0
    with atomic_output(out, "wb") as fh:
        fd_out = fh.fileno()
        for path in images:
            path = os.fspath(path)
            fd = os.open(path, os.O_RDONLY)
            try:
                in_size = os.fstat(fd).st_size
                mine = []
                for f, frames, nz in _nonzero_frames(fd, in_size):
                    rows = np.flatnonzero(nz)
                    if not len(rows):
                        continue
                    mfns = rows.astype(np.int64) + f
                    for t in taken:
                        hit = mfns[t[np.minimum(np.searchsorted(t, mfns), len(t) - 1)] == mfns] \
                            if len(t) else mfns[:0]
                        if len(hit):
                            raise SpecError(f"{path}: machine frame {int(hit[0]):#x} already "
                                            "holds another guest's data (give the guests "
                                            "disjoint mfn_offset values)")
                    for a, b in runs(rows):
                        r = int(rows[a])
                        pwrite_all(fd_out, frames[r:r + (b - a)], (f + r) * PAGE_SIZE)
                    mine.append(mfns)
                size = max(size, in_size)
            finally:
                os.close(fd)
            mine_all = np.concatenate(mine) if mine else np.zeros(0, np.int64)
            taken.append(mine_all)
            written[path] = int(len(mine_all))
        size = -(-size // PAGE_SIZE) * PAGE_SIZE
        os.ftruncate(fd_out, size)
    return {"frames": size // PAGE_SIZE, "written": written}
