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
    zero = bytes(PAGE_SIZE)
    pos = 0
    tail = b""
    try:
        while True:
            data = os.read(src, CHUNK)
            if not data:
                break
            data = tail + data
            whole = len(data) - len(data) % PAGE_SIZE
            for off in range(0, whole, PAGE_SIZE):
                page = data[off:off + PAGE_SIZE]
                if page != zero:
                    os.pwrite(dst, page, pos + off)
            pos += whole
            tail = data[whole:]
        if tail:
            os.pwrite(dst, tail, pos)
            pos += len(tail)
        os.ftruncate(dst, pos)
    except OSError as exc:
        raise ImageError(f"{name}: cannot copy the stream to a temporary file "
                         f"({exc.strerror}); save it to a file first") from None
