"""Write a file completely or not at all.

Output goes to a temporary file in the target's folder and is renamed into
place only when the writer finished without an exception, so an interrupted
or failed run never leaves a half-written output behind.
"""
from __future__ import annotations

import contextlib
import os
import tempfile

from .errors import OutputError


@contextlib.contextmanager
def atomic_output(path, mode: str = "wb"):
    """Yield a file object whose content replaces ``path`` on success."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise OutputError(f"{path}: is a directory")
    if os.path.exists(path) and not os.path.isfile(path):
        # a device or pipe (/dev/null, /dev/stdout, a fifo): written in place,
        # never replaced by a regular file
        yield from _write_in_place(path, mode)
        return
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".part",
                                   dir=folder)
    except FileNotFoundError:
        raise OutputError(f"{path}: folder {folder} does not exist") from None
    except OSError as exc:
        raise OutputError(f"{path}: cannot create a file in {folder}: {exc.strerror}") from None
    try:
        kwargs = {} if "b" in mode else {"encoding": "utf-8", "newline": "\n"}
        with os.fdopen(fd, mode, **kwargs) as fh:
            yield fh
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and not isinstance(exc, (BrokenPipeError,)):
            raise OutputError(f"{path}: write failed: {exc.strerror or exc}") from None
        raise


def _write_in_place(path: str, mode: str):
    kwargs = {} if "b" in mode else {"encoding": "utf-8", "newline": "\n"}
    try:
        fh = open(path, mode, **kwargs)
    except OSError as exc:
        raise OutputError(f"{path}: cannot open for writing: {exc.strerror}") from None
    try:
        with fh:
            yield fh
    except OSError as exc:
        if isinstance(exc, BrokenPipeError):
            raise
        raise OutputError(f"{path}: write failed: {exc.strerror or exc}") from None


def pwrite_all(fd: int, data, offset: int) -> None:
    """Write all of ``data`` (any buffer) at ``offset`` of ``fd``."""
    view = memoryview(data).cast("B")
    while len(view):
        n = os.pwrite(fd, view, offset)
        if n <= 0:
            raise OSError(5, "short write")
        view = view[n:]
        offset += n


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
