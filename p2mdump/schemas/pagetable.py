"""Construct schemas of an x86 page-table entry and a page-table page.

Every entry is a little-endian 64-bit word on x86-64 and on 32-bit PAE
guests alike, 512 to a 4096-byte page (:mod:`p2mdump.paging` holds the
facts).  The entry is a ``BitStruct`` read from bit 63 down; ``ByteSwapped``
turns the little-endian word into the most-significant-byte-first order a
``BitStruct`` reads.

The bit widths below are derived from the :mod:`p2mdump.paging` constants
(the frame field from ``PTE_FRAME_MASK``, the flags from their ``PTE_*``
bits), so the schema and the numpy fast path of :mod:`p2mdump.pagetable`
cannot drift apart; a test checks that both decode random words alike.
"""
from __future__ import annotations

from construct import Array, BitsInteger, BitStruct, ByteSwapped, Flag, Int64ul, Struct

from ..paging import (PTE_ACCESSED, PTE_DIRTY, PTE_FRAME_MASK, PTE_GLOBAL, PTE_NX, PTE_PCD,
                      PTE_PRESENT, PTE_PSE, PTE_PWT, PTE_RW, PTE_USER, PTES_PER_PAGE)


def _bit(mask: int) -> int:
    """Position of the (lowest) bit set in ``mask``."""
    mask &= -mask
    return mask.bit_length() - 1


#: lowest and one-past-highest bit of the frame field (12, 52)
FRAME_LOW = _bit(PTE_FRAME_MASK)
FRAME_HIGH = PTE_FRAME_MASK.bit_length()
#: the single-bit flags below the frame field, from bit 8 down to bit 0
_LOW_FLAGS = (("global", PTE_GLOBAL), ("pse", PTE_PSE), ("dirty", PTE_DIRTY),
              ("accessed", PTE_ACCESSED), ("pcd", PTE_PCD), ("pwt", PTE_PWT),
              ("user", PTE_USER), ("rw", PTE_RW), ("present", PTE_PRESENT))

#: one page-table entry (PTE / PMD / PUD / P4D / PGD alike); at levels 2 and
#: 3 a set ``pse`` makes it a large page, whose bit 12 (the low bit of
#: ``frame``) is then the PAT bit, not address
PageTableEntry = ByteSwapped(BitStruct(
    "nx" / Flag,                                               # bit 63
    "avail_hi" / BitsInteger(_bit(PTE_NX) - FRAME_HIGH),       # bits 52-62
    "frame" / BitsInteger(FRAME_HIGH - FRAME_LOW),             # bits 12-51
    "avail" / BitsInteger(FRAME_LOW - _bit(PTE_GLOBAL) - 1),   # bits 9-11
    *[name / Flag for name, _ in _LOW_FLAGS],                  # bits 8-0
))

#: one page-table page: 512 raw entries
PageTablePage = Struct("entries" / Array(PTES_PER_PAGE, Int64ul))
