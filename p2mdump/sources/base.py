"""The interface every container exposes to the walker."""
from __future__ import annotations

import os
import stat

from ..errors import ImageError
from ..layout import PAGE_SIZE


def _open_nonblocking(path: str) -> int:
    """Open ``path`` read-only without waiting: a FIFO with no writer must
    not hang the process (its O_NONBLOCK is irrelevant to files and disks)."""
    return os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))


def _seekable_size(fd: int, st) -> int | None:
    """The size of what ``fd`` reads: a regular file's length, a block
    device's capacity (its st_size is 0: seek to its end); None for what
    cannot be read by offset (FIFO, socket, terminal, character device)."""
    if stat.S_ISREG(st.st_mode):
        return st.st_size
    if stat.S_ISBLK(st.st_mode):
        return os.lseek(fd, 0, os.SEEK_END)
    return None


def open_fd(path) -> tuple[int, int]:
    """Open ``path`` read-only: (fd, size), or a clear ImageError.

    Only what frames can be read from by offset is accepted: a regular file
    or a block device (a raw disk, a loop device)."""
    path = os.fspath(path)
    try:
        fd = _open_nonblocking(path)
    except FileNotFoundError:
        raise ImageError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ImageError(f"{path}: is a directory, not an image file") from None
    except PermissionError:
        raise ImageError(f"{path}: permission denied") from None
    except OSError as exc:
        raise ImageError(f"{path}: cannot open: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise ImageError(f"{path}: is a directory, not an image file")
        size = _seekable_size(fd, st)
        if size is None:
            raise ImageError(f"{path}: not a seekable file (a pipe, FIFO or character "
                             "device): an image is read by frame offset; save it to a file")
        os.set_blocking(fd, True)
    except OSError as exc:
        os.close(fd)
        raise ImageError(f"{path}: cannot read: {exc.strerror}") from None
    except BaseException:
        os.close(fd)
        raise
    return fd, size


def read_head(path, n: int) -> bytes:
    """The first ``n`` bytes of ``path`` for container detection; b"" when it
    cannot be opened or is not a seekable file (:func:`open_fd` then says
    why).  Never blocks on a FIFO."""
    try:
        fd = _open_nonblocking(os.fspath(path))
    except (OSError, ValueError):
        return b""
    try:
        if _seekable_size(fd, os.fstat(fd)) is None:
            return b""
        return os.pread(fd, n, 0)
    except OSError:
        return b""
    finally:
        os.close(fd)


class FrameSource:
    """Machine frames by MFN, 4096 bytes each.

    Subclasses implement :meth:`read_frames_into`; everything else derives
    from it.  A frame that is not in the image is not an exception: it is
    reported by reading fewer frames than asked for.
    """

    page_size = PAGE_SIZE
    #: short name of the container ("raw", "xc-core", "elf", ...)
    container = "?"
    path: str | None = None

    # -- what the container itself says (filled by the containers that know) --
    #: MFN of the p2m top page (shared_info arch.pfn_to_mfn_frame_list_list)
    top_mfn_hint: int | None = None
    #: number of pfns of the table (shared_info arch.max_pfn)
    max_pfn_hint: int | None = None
    #: guest word size (4 / 8), e.g. from the e_machine of an xl dump-core
    word_size_hint: int | None = None
    #: why top_mfn_hint is None although the container should know it
    #: (frame-list-list 0 or ~0, no shared_info, HVM dump, ...)
    top_mfn_problem: str | None = None
    #: the guest is HVM: there is no PV p2m tree to walk
    is_hvm = False
    #: the linear p2m list (shared_info arch.p2m_cr3 as the register value,
    #: arch.p2m_vaddr, arch.p2m_generation), when the container publishes one
    p2m_cr3_hint: int | None = None
    p2m_vaddr_hint: int | None = None
    p2m_generation_hint: int | None = None

    def read_frames_into(self, mfn: int, buf) -> int:
        """Read frames ``mfn, mfn+1, ...`` into the writable buffer ``buf``
        (a multiple of 4096 bytes).  Returns the number of whole frames read;
        it stops at the first frame that is not (fully) in the image."""
        raise NotImplementedError

    def file_extent(self, mfn: int, count: int):
        """(fd, file offset, frames) when frames ``mfn, mfn+1, ...`` lie back to
        back in one file, so they can be copied without reading them (the
        ``--format raw`` fast path); None when the container cannot say."""
        return None

    def read_frame(self, mfn: int) -> bytes | None:
        """One frame, or None when it is not (fully) in the image."""
        buf = bytearray(PAGE_SIZE)
        if self.read_frames_into(mfn, memoryview(buf)) == 1:
            return bytes(buf)
        return None

    def frame_limit(self) -> int | None:
        """An upper bound on the MFNs this image can hold (for heuristics)."""
        return None

    def frames_held(self) -> int | None:
        """How many frames the image really holds (data in the file, not an
        address range): the budget a table built from its contents may not
        outgrow.  None when the container cannot say."""
        return self.frame_limit()

    def has_frame(self, mfn: int) -> bool:
        raise NotImplementedError

    def frames_present(self, mfns):
        """Vectorised :meth:`has_frame` over a numpy array of MFNs."""
        import numpy as np

        return np.fromiter((self.has_frame(int(m)) for m in mfns), dtype=bool, count=len(mfns))

    def container_findings(self) -> list:
        """Findings about the container itself (may read indexes; not headers-only)."""
        return []

    def info(self) -> dict:
        """Header facts for ``p2mdump info``: reads headers only."""
        return {"container": self.container, "path": self.path,
                "word_size": self.word_size_hint, "top_mfn": self.top_mfn_hint,
                "max_pfn": self.max_pfn_hint, "frame_limit": self.frame_limit(),
                "p2m_cr3": self.p2m_cr3_hint, "p2m_vaddr": self.p2m_vaddr_hint}

    def describe(self) -> str:
        return f"{self.container} image {self.path}"

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
