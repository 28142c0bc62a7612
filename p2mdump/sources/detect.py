"""Tell the container of an image from its first bytes, not its name.

This module is light (no numpy, no construct): a raw image is recognised and
opened without importing either; the ELF readers are imported only once the
magic says ELF.
"""
from __future__ import annotations

import struct

from ..errors import ContainerError, ImageError
from ..schemas.xl_save_ids import sniff_entry
from .base import read_head

RAW = "raw"
XC_CORE = "xc-core"
ELF = "elf"
XL_SAVE = "xl-save"
AUTO = "auto"
CONTAINERS = (AUTO, RAW, XC_CORE, ELF, XL_SAVE)

ELF_MAGIC = b"\x7fELF"
#: pre-ELF xc_core (Xen <= 3.0.4): xch_magic, nr_vcpus, nr_pages, ctxt_offset = 24, ...
LEGACY_XC_MAGICS = (0xF00FEBED, 0xF00FEBEE)
LEGACY_XC_CTXT_OFFSET = 24
#: `xm save` image
XM_SAVE_SIGNATURE = b"LinuxGuestRecord"

#: what sniff() may answer besides the three containers
LEGACY_XC = "legacy-xc-core"
XM_SAVE = "xm-save"


def sniff_bytes(head: bytes) -> str:
    """The container the first bytes of a file announce."""
    if head[:4] == ELF_MAGIC:
        return ELF
    if head[:16] == XM_SAVE_SIGNATURE:
        return XM_SAVE
    if sniff_entry(head) is not None:
        return XL_SAVE
    if len(head) >= 24:
        magic, vcpus, _pages, ctxt = struct.unpack_from("<4I", head)
        if magic in LEGACY_XC_MAGICS and 0 < vcpus <= 4096 and ctxt == LEGACY_XC_CTXT_OFFSET:
            return LEGACY_XC
    return RAW


def sniff(path) -> str:
    """Read the first 64 bytes of ``path`` and name its container."""
    return sniff_bytes(read_head(path, 64))  # b"": the raw opener says what is wrong


def open_container(path, *, base: int = 0, container: str = AUTO):
    """A FrameSource for ``path``: detected (``auto``) or forced.

    A save file (``xl-save``) is keyed by pfn, not MFN: it opens as a
    :class:`~p2mdump.sources.save_image.SaveImage` over the stream's index,
    whose p2m is the one the saver recorded."""
    if container not in CONTAINERS:
        raise ImageError(f"unknown container {container!r} "
                         f"(use one of {', '.join(CONTAINERS)})")
    from .spool import is_stream

    if is_stream(path):
        return _open_spooled(path, base, container)
    kind = sniff(path) if container == AUTO else container
    if kind == XM_SAVE:
        raise ContainerError(f"{path}: an `xm save` image (LinuxGuestRecord): not supported; "
                             "its pages are keyed by pfn already")
    if kind == LEGACY_XC:
        raise ContainerError(f"{path}: a pre-ELF xc_core dump (Xen <= 3.0.4): not supported "
                             "(its page index holds MFNs only)")
    if kind == XL_SAVE:
        if base:
            raise ImageError(f"--base {base:#x} applies to raw images only, not to {kind}")
        from .save_image import SaveImage
        from .xl_save import open_save

        return SaveImage(open_save(path))
    if kind == RAW:
        from .raw import RawImage

        return RawImage(path, base=base)
    if base:
        raise ImageError(f"--base {base:#x} applies to raw images only, not to {kind}")
    from .elf import open_elf  # imports construct: only for ELF files

    return open_elf(path, want=None if container == AUTO else kind)


def _open_spooled(path, base: int, container: str):
    """Standard input or a FIFO: read once into a temporary file, opened from there
    (see :mod:`.spool`); messages and ``path`` name the stream as the user gave it."""
    from ..errors import P2MDumpError
    from .spool import spool

    sp = spool(path)
    try:
        source = open_container(sp.path, base=base, container=container)
    except P2MDumpError as exc:
        sp.close()
        exc.args = tuple(a.replace(sp.path, sp.name) if isinstance(a, str) else a
                         for a in exc.args)
        raise
    for obj in (source, getattr(source, "stream", None)):
        if obj is not None:
            obj.path = sp.name
    source.spool = sp           # the temporary file lives as long as the source
    return source
