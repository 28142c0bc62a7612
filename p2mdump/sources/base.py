"""The interface every container exposes to the walker."""
from __future__ import annotations

from ..layout import PAGE_SIZE


class FrameSource:
    """Machine frames by MFN, 4096 bytes each.

    Subclasses implement :meth:`read_frames_into`; everything else derives
    from it.  A frame that is not in the image is not an exception: it is
    reported by reading fewer frames than asked for.
    """

    page_size = PAGE_SIZE
    #: short name of the container ("raw", "xc-core", "elf", ...)
    container = "?"
    path = None

    def read_frames_into(self, mfn: int, buf) -> int:
        """Read frames ``mfn, mfn+1, ...`` into the writable buffer ``buf``
        (a multiple of 4096 bytes).  Returns the number of whole frames read;
        it stops at the first frame that is not (fully) in the image."""
        raise NotImplementedError

    def read_frame(self, mfn: int) -> bytes | None:
        """One frame, or None when it is not (fully) in the image."""
        buf = bytearray(PAGE_SIZE)
        if self.read_frames_into(mfn, memoryview(buf)) == 1:
            return bytes(buf)
        return None

    def frame_limit(self) -> int | None:
        """An upper bound on the MFNs this image can hold (for heuristics)."""
        return None

    def has_frame(self, mfn: int) -> bool:
        raise NotImplementedError

    def describe(self) -> str:
        return f"{self.container} image {self.path}"

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
