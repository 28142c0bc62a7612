"""The identifying bytes of an ``xl save`` file and of the streams inside it.

Construct-free on purpose: :mod:`p2mdump.sources.detect` recognises a save
file from its first bytes without importing construct.  The schemas in
:mod:`p2mdump.schemas.xl_save` re-export these names; this is the one place
they are stated.
"""
from __future__ import annotations

# -- xl header (tools/xl/xl.h, struct save_file_header) ------------------------------------
XL_MAGIC = b"Xen saved domain, xl format\n \x00 \r"
#: written as a native u32: reads as this value when the saver was little-endian
XL_BYTEORDER_MARKER = 0x01020304
#: the same marker written by a big-endian saver, read little-endian
XL_BYTEORDER_SWAPPED = 0x04030201

# -- libxl stream header (libxl_sr_stream_format.h), big-endian ---------------------------
LIBXL_IDENT = 0x4C6962786C466D74     # "LibxlFmt"

# -- libxc image header (xg_sr_stream_format.h), big-endian -------------------------------
LIBXC_MARKER = 0xFFFFFFFFFFFFFFFF
LIBXC_IDENT = 0x58454E46             # "XENF"

#: the first bytes of each entry point, as they appear in a file
XL_HEAD = XL_MAGIC
LIBXL_HEAD = LIBXL_IDENT.to_bytes(8, "big")
LIBXC_HEAD = LIBXC_MARKER.to_bytes(8, "big") + LIBXC_IDENT.to_bytes(4, "big")

#: entry point names (SaveStream.entry)
ENTRY_XL = "xl"
ENTRY_LIBXL = "libxl"
ENTRY_LIBXC = "libxc"


def sniff_entry(head: bytes) -> str | None:
    """Which stream a file starting with ``head`` holds: "xl", "libxl", "libxc" or None."""
    if head.startswith(XL_HEAD):
        return ENTRY_XL
    if head.startswith(LIBXL_HEAD):
        return ENTRY_LIBXL
    if head.startswith(LIBXC_HEAD):
        return ENTRY_LIBXC
    return None
