"""Bounded reads at file offsets for the one-pass indexer of a save file.

The indexer reads record headers and PAGE_DATA pfn arrays and skips page
data by offset.  A small window (16 KiB: a PAGE_DATA record's header and
its 1024 pfn words) is read at a time, so a run of short records costs one
system call per window, not one per record; a read larger
than the window (a long pfn array, a P2M_FRAMES record) is read on its own,
and its size was checked against the file before the call.
"""
from __future__ import annotations

import os

from ...errors import ImageError

WINDOW = 1 << 14


class Window:
    """Reads of ``fd`` (``size`` bytes) at any offset, served from a bounded buffer."""

    def __init__(self, fd: int, size: int, path: str, window: int = WINDOW):
        self.fd = fd
        self.size = size
        self.path = path
        self.window = window
        self._start = 0
        self._buf = b""

    def _pread(self, n: int, offset: int) -> bytes:
        n = max(0, min(n, self.size - offset))
        parts = []
        while n > 0:
            try:
                chunk = os.pread(self.fd, n, offset)
            except OSError as exc:
                raise ImageError(f"{self.path}: cannot read at offset {offset:#x}: "
                                 f"{exc.strerror}") from None
            if not chunk:
                break
            parts.append(chunk)
            n -= len(chunk)
            offset += len(chunk)
        return b"".join(parts)

    def read(self, offset: int, n: int) -> bytes:
        """Up to ``n`` bytes at ``offset`` (fewer only at the end of the file)."""
        rel = offset - self._start
        if 0 <= rel and rel + n <= len(self._buf):
            return self._buf[rel:rel + n]
        if n > self.window:
            return self._pread(n, offset)
        self._buf = self._pread(self.window, offset)
        self._start = offset
        return self._buf[:n]
