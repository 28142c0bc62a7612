"""The data frames the generator writes for valid pfns (``--data``).

Each stamped frame starts with a magic, the guest pfn and the machine frame
number it was written to, so a test (or an analyst) can tell at a glance that
a frame copied out of an image is the one the p2m promised.
"""
from __future__ import annotations

from construct import Bytes, Const, Int64ul, Struct

from ..layout import PAGE_SIZE

STAMP_MAGIC = b"P2MDATA\x00"
STAMP_HEADER_SIZE = 24

StampedFrame = Struct(
    "magic" / Const(STAMP_MAGIC),
    "pfn" / Int64ul,
    "mfn" / Int64ul,
    "fill" / Bytes(PAGE_SIZE - STAMP_HEADER_SIZE),
)
