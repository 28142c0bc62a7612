"""Frame sources: turn an image file into 4096-byte machine frames by MFN.

Containers: ``raw`` (frame m at base + m*4096), ``xc-core`` (an ``xl
dump-core`` ELF file: frames by MFN through .xen_p2m) and ``elf`` (an ELF core
whose PT_LOAD physical addresses are machine addresses).  Only the raw reader
is imported eagerly; the ELF readers (and construct) load after detection.
"""
from .base import FrameSource
from .raw import RawImage

__all__ = ["FrameSource", "RawImage", "open_image", "CONTAINERS"]

CONTAINERS = ("auto", "raw", "xc-core", "elf")


def open_image(path, *, base: int = 0, container: str = "auto") -> FrameSource:
    """Open ``path`` as a frame source; ``container`` is 'auto' (detect from
    the first bytes), 'raw', 'xc-core' or 'elf'."""
    from .detect import open_container

    return open_container(path, base=base, container=container)
