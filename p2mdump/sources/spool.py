"""Images that arrive as a stream: standard input (``-``), a FIFO, a pipe.

Every reader here needs frames by offset, so a stream is read once, from the
one handle that also serves to tell its container, into an unnamed temporary
file (``$TMPDIR``; all-zero pages are left as holes), which is then opened
like any image: ``xl save ... /dev/stdout | p2mdump walk -`` works, and a
FIFO is opened exactly once.  The copy is bounded by the disk, not by memory,
and disappears with the process.
"""
from __future__ import annotations

import os
import stat
import sys

from ..errors import ImageError
from ..layout import PAGE_SIZE

#: bytes read from the stream at a time
CHUNK = 1 << 20
#: what names standard input on the command line
STDIN = "-"


def is_stream(path) -> bool:
    """``path`` is standard input or a file that can only be read in order
    (FIFO, socket, character device): it must be spooled first."""
    path = os.fspath(path)
    if path == STDIN:
        return True
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False          # the opener says what is wrong
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or stat.S_ISCHR(mode)


class Spooled:
    """A stream copied into an unnamed temporary file; ``path`` opens it."""

    def __init__(self, name: str, fileobj):
        self.name = name          # what the user gave ("-" shows as "<stdin>")
        self.file = fileobj
        self.path = f"/proc/self/fd/{fileobj.fileno()}"

    def close(self) -> None:
        self.file.close()


def spool(path) -> Spooled:
    """Copy the stream ``path`` (or stdin for ``-``) to a temporary file."""
    path = os.fspath(path)
    name = "<stdin>" if path == STDIN else path
    try:
        src = sys.stdin.buffer.fileno() if path == STDIN else os.open(path, os.O_RDONLY)
    except OSError as exc:
        raise ImageError(f"{name}: cannot open: {exc.strerror}") from None
    import tempfile

    out = tempfile.TemporaryFile(prefix="p2mdump-spool-")
    try:
        _copy(src, out.fileno(), name)
    except BaseException:
        out.close()
        raise
    finally:
        if path != STDIN:
            os.close(src)
    if not os.path.exists(f"/proc/self/fd/{out.fileno()}"):
        out.close()
        raise ImageError(f"{name}: a stream needs /proc/self/fd to be read here; save it to a "
                         "file first")
    return Spooled(name, out)


def _copy(src: int, dst: int, name: str) -> None:
    """Copy ``src`` to its end into ``dst``, all-zero pages as holes."""
    import numpy as np

    from ..arrays import nonzero_pages, true_runs
    from ..atomic import pwrite_all

    buf = np.empty(CHUNK, dtype=np.uint8)
    mem = memoryview(buf)  # type: ignore[arg-type]  # numpy stubs: buffer from 3.12 only
    pos = 0
    try:
        while True:
            got = 0         # fill the buffer: a pipe returns what it has
            while got < CHUNK:
                n = os.readv(src, [mem[got:]])
                if not n:
                    break
                got += n
            pages = got // PAGE_SIZE
            for a, b in true_runs(nonzero_pages(buf, pages), 0, pages):
                pwrite_all(dst, mem[a * PAGE_SIZE:b * PAGE_SIZE], pos + a * PAGE_SIZE)
            if got % PAGE_SIZE:      # the end of the stream: a partial page
                pwrite_all(dst, mem[pages * PAGE_SIZE:got], pos + pages * PAGE_SIZE)
            pos += got
            if got < CHUNK:
                break
        os.ftruncate(dst, pos)
    except OSError as exc:
        raise ImageError(f"{name}: cannot copy the stream to a temporary file "
                         f"({exc.strerror}); save it to a file first") from None
