"""Frame sources: turn an image file into 4096-byte machine frames by MFN.

Containers: ``raw`` (frame m at base + m*4096), ``xc-core`` (an ``xl
dump-core`` ELF file: frames by MFN through .xen_p2m), ``elf`` (an ELF core
whose PT_LOAD physical addresses are machine addresses) and ``xl-save`` (an
``xl save`` file: pages by pfn, see :mod:`.xl_save`).  Only the raw reader
is imported eagerly; the ELF readers (and construct) load after detection.
"""
from .base import FrameSource
from .raw import RawImage

__all__ = ["FrameSource", "RawImage", "open_image", "CONTAINERS"]

CONTAINERS = ("auto", "raw", "xc-core", "elf", "xl-save")


def open_image(path, *, base: int = 0, container: str = "auto"):
    """Open ``path`` as a frame source; ``container`` is 'auto' (detect from
    the first bytes), 'raw', 'xc-core', 'elf' or 'xl-save' (a save file: its
    pages by pfn, see :class:`~p2mdump.sources.save_image.SaveImage`)."""
    from .detect import open_container

    return open_container(path, base=base, container=container)
