"""A save file, indexed: :func:`open_save` and :class:`SaveStream`.

Pages of a save file are keyed by **pfn** (the guest's pseudo-physical frame),
not by MFN: :meth:`SaveStream.read_pfns_into` serves them from the index built
in one pass by :class:`~.indexer.Indexer`.
"""
from __future__ import annotations

import os

import numpy as np

from ...errors import ContainerError
from ...layout import PAGE_SIZE
from ...schemas import xl_save as S
from ...schemas.xl_save_ids import ENTRY_LIBXC, ENTRY_XL, sniff_entry
from ..base import open_fd
from . import headers as H
from .indexer import Indexer, P2mFrames
from .notes import Notes
from .window import Window

__all__ = ["SaveStream", "P2mFrames", "open_save"]

#: the container name of save files (detect.XL_SAVE)
CONTAINER = "xl-save"


def open_save(path) -> "SaveStream":
    """Open and index a save file (xl format, bare libxl or bare libxc stream)."""
    return SaveStream(path)


class SaveStream:
    """An ``xl save`` file (or a bare libxl / libxc migration stream), indexed."""

    container = CONTAINER

    def __init__(self, path):
        self.path = os.fspath(path)
        self.fd, self.size = open_fd(self.path)
        try:
            self._index()
        except BaseException:
            self.close()
            raise

    def _index(self) -> None:
        win = Window(self.fd, self.size, self.path)
        notes = Notes()
        entry = sniff_entry(win.read(0, len(S.XL_MAGIC)))
        if entry is None:
            raise ContainerError(f"{self.path}: not a save file: it starts with neither the xl "
                                 "magic, a libxl stream header nor a libxc image header")
        self.entry = entry
        self.xl_header = self.config_text = self.config = None
        start = 0
        if entry == ENTRY_XL:
            self.xl_header, self.config_text, start = H.parse_xl_header(win, self.path, notes)
            self.config = H.parse_config(self.config_text, self.xl_header["json_config"], notes)
        self.libxl_version = None
        self.libxl_legacy = False
        if entry != ENTRY_LIBXC:
            hdr = H.parse_libxl_header(win, start, self.path, notes)
            self.libxl_version, self.libxl_legacy = hdr["version"], hdr["legacy"]
            start += S.LIBXL_HEADER_SIZE
        ix = Indexer(win, self.path, notes)
        ix.run(entry, start)
        libxc = ix.libxc or {}
        self.libxc_version = libxc.get("version")
        self.domain_type = libxc.get("domain_type")
        self.xen_version = libxc.get("xen_version")
        self.guest_width, self.pt_levels = ix.guest_width, ix.pt_levels
        self.p2m_frames = ix.p2m_frames
        self.shared_info = ix.shared_info
        self.vcpus = ix.vcpus
        self.tsc = ix.tsc
        self.record_counts = dict(ix.record_counts)
        self.complete = ix.complete
        pages = ix.pages.resolve()
        self.data_pfns, self.data_offsets = pages.data_pfns, pages.data_offsets
        self.data_types, self.nodata = pages.data_types, pages.nodata
        self.page_counts, self.resent = pages.page_counts, pages.resent
        self.findings = notes.close()

    # -- pages by pfn ---------------------------------------------------------------
    def read_pfns_into(self, pfns, buf) -> np.ndarray:
        """Read the pages of ``pfns`` into ``buf`` (4096 bytes each, in order).

        Returns a bool mask of the pfns whose page was read; slots of the
        others are left as they were.  Pages that lie back to back in the
        file are read with one system call."""
        pfns = np.asarray(pfns, dtype=np.uint64)
        n = len(pfns)
        view = memoryview(buf).cast("B")
        if len(view) < n * PAGE_SIZE:
            raise ValueError(f"buffer of {len(view)} bytes is short of {n} pages")
        got = np.zeros(n, dtype=bool)
        if n == 0 or len(self.data_pfns) == 0:
            return got
        pos = np.searchsorted(self.data_pfns, pfns)
        pos[pos >= len(self.data_pfns)] = 0
        found = self.data_pfns[pos] == pfns
        offs = self.data_offsets[pos].astype(np.int64)
        follows = np.zeros(n, dtype=bool)
        follows[1:] = found[1:] & found[:-1] & (offs[1:] == offs[:-1] + PAGE_SIZE)
        breaks = np.flatnonzero(~follows)        # where a run of back-to-back pages starts
        starts = breaks[found[breaks]]
        nxt = np.searchsorted(breaks, starts, side="right")
        ends = np.where(nxt < len(breaks), breaks[np.minimum(nxt, len(breaks) - 1)], n)
        for s, e in zip(starts.tolist(), ends.tolist()):
            done = _pread_into(self.fd, view[s * PAGE_SIZE:e * PAGE_SIZE], int(offs[s]))
            got[s:s + done // PAGE_SIZE] = True
        return got

    def read_pfn(self, pfn: int) -> bytes | None:
        """The page of ``pfn`` (its last copy), or None when the stream has none."""
        buf = bytearray(PAGE_SIZE)
        if self.read_pfns_into(np.array([pfn], dtype=np.uint64), buf)[0]:
            return bytes(buf)
        return None

    def has_pfns(self, pfns) -> np.ndarray:
        """Vectorised: which of ``pfns`` have page data in the stream."""
        pfns = np.asarray(pfns, dtype=np.uint64)
        if len(self.data_pfns) == 0:
            return np.zeros(len(pfns), dtype=bool)
        pos = np.minimum(np.searchsorted(self.data_pfns, pfns), len(self.data_pfns) - 1)
        return self.data_pfns[pos] == pfns

    # -- life cycle -----------------------------------------------------------------
    def close(self) -> None:
        fd, self.fd = getattr(self, "fd", -1), -1   # -1: closed
        if fd >= 0:
            os.close(fd)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def describe(self) -> str:
        return f"{self.entry} save stream {self.path}"

    def info(self) -> dict:
        from .summary import save_info

        return save_info(self)


def _pread_into(fd: int, view, offset: int) -> int:
    """Fill ``view`` from ``offset``; the bytes read (short at the end of the file)."""
    done = 0
    while done < len(view):
        try:
            n = os.preadv(fd, [view[done:]], offset + done)
        except OSError:
            break
        if n <= 0:
            break
        done += n
    return done
