"""Geometry of a Xen PV p2m tree, derived from the guest's word size.

This is the one place that knows the constants of the three-level p2m tree
(Linux ``arch/x86/xen/p2m.c`` / ``asm/xen/page.h``): entries per page, the
marker values, the index math and the capacity.  Everything else (Construct
schemas, the numpy fast path, the walker, the writer, the CLI) asks a
:class:`Layout` instead of repeating a number.

This module is deliberately free of heavy imports (no numpy, no construct) so
that a single lookup can start fast.
"""
from __future__ import annotations

PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT  # 4096, x86
WORD_SIZES = (4, 8)

KIND_VALID = "valid"
KIND_MISSING = "missing"
KIND_IDENTITY = "identity"
KIND_FOREIGN = "foreign"
#: Kind names in code order (the uint8 codes of :mod:`p2mdump.table`).
KINDS = (KIND_VALID, KIND_MISSING, KIND_IDENTITY, KIND_FOREIGN)

LEVEL_TOP = "top"
LEVEL_MID = "mid"
LEVEL_LEAF = "leaf"
#: a page of a linear p2m list (3.19+), as a lookup path names it
LEVEL_LIST = "list"


class Layout:
    """The p2m tree layout of a guest with ``word_size``-byte words (4 or 8).

    All words are little-endian unsigned integers of the guest's
    ``unsigned long`` width; pages are 4096 bytes.  (A plain class rather
    than a dataclass: importing dataclasses costs a single lookup ~10 ms.)
    """

    __slots__ = ("word_size",)
    #: bytes in one word of the guest (4 or 8); read-only, set once by __init__
    word_size: int

    def __init__(self, word_size: int) -> None:
        if word_size not in WORD_SIZES:
            raise ValueError(f"word size must be 4 or 8, not {word_size!r}")
        object.__setattr__(self, "word_size", word_size)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Layout is immutable")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Layout) and other.word_size == self.word_size

    def __hash__(self) -> int:
        return hash(("Layout", self.word_size))

    def __repr__(self) -> str:
        return f"Layout(word_size={self.word_size})"

    # -- sizes -------------------------------------------------------------
    @property
    def bits(self) -> int:
        return self.word_size * 8

    @property
    def per_page(self) -> int:
        """P2M_PER_PAGE == P2M_MID_PER_PAGE == P2M_TOP_PER_PAGE (512 / 1024)."""
        return PAGE_SIZE // self.word_size

    @property
    def pfns_per_mid(self) -> int:
        """pfns covered by one mid page / one top slot (2^18 / 2^20)."""
        return self.per_page * self.per_page

    @property
    def capacity(self) -> int:
        """MAX_P2M_PFN: pfns the tree can describe (2^27 / 2^30)."""
        return self.per_page ** 3

    @property
    def leaf_slots(self) -> int:
        """Leaf pages in a full tree (top slots x mid slots)."""
        return self.per_page * self.per_page

    # -- marker values (asm/xen/page.h) -------------------------------------
    @property
    def word_mask(self) -> int:
        return (1 << self.bits) - 1

    @property
    def invalid(self) -> int:
        """INVALID_P2M_ENTRY: all ones of the word."""
        return self.word_mask

    @property
    def foreign_bit(self) -> int:
        """FOREIGN_FRAME_BIT: the top bit of the word."""
        return 1 << (self.bits - 1)

    @property
    def identity_bit(self) -> int:
        """IDENTITY_FRAME_BIT: the second-top bit of the word."""
        return 1 << (self.bits - 2)

    @property
    def flag_mask(self) -> int:
        return self.foreign_bit | self.identity_bit

    # -- encodings -----------------------------------------------------------
    @property
    def struct_code(self) -> str:
        """:mod:`struct` code of one word ('<I' / '<Q')."""
        return "<Q" if self.word_size == 8 else "<I"

    @property
    def numpy_dtype(self) -> str:
        """numpy dtype string of one word ('<u4' / '<u8')."""
        return f"<u{self.word_size}"

    # -- index math (p2m_top_index / p2m_mid_index / p2m_index) -------------
    def top_index(self, pfn: int) -> int:
        return pfn // self.pfns_per_mid

    def mid_index(self, pfn: int) -> int:
        return (pfn // self.per_page) % self.per_page

    def leaf_index(self, pfn: int) -> int:
        return pfn % self.per_page

    def split(self, pfn: int) -> tuple[int, int, int]:
        """(top, mid, leaf) slot indices of ``pfn``."""
        if not 0 <= pfn < self.capacity:
            raise ValueError(f"pfn {pfn:#x} is outside the tree (capacity {self.capacity:#x})")
        return self.top_index(pfn), self.mid_index(pfn), self.leaf_index(pfn)

    def first_pfn(self, top: int, mid: int = 0, idx: int = 0) -> int:
        return (top * self.per_page + mid) * self.per_page + idx

    def leaves_for(self, max_pfn: int) -> int:
        """Leaf pages needed to hold pfns 0..max_pfn-1."""
        return -(-max_pfn // self.per_page)

    # -- entry decoding (the kernel's pfn_to_mfn) ----------------------------
    def kind_of(self, entry: int) -> str:
        """Classify one raw leaf entry; INVALID is tested before the flag bits."""
        if entry == self.invalid:
            return KIND_MISSING
        if entry & self.identity_bit:
            return KIND_IDENTITY
        if entry & self.foreign_bit:
            return KIND_FOREIGN
        return KIND_VALID

    def decode(self, entry: int) -> int | None:
        """pfn_to_mfn(): the mfn with both flag bits cleared, None if missing."""
        if entry == self.invalid:
            return None
        return entry & ~self.flag_mask & self.word_mask

    def identity_entry(self, pfn: int) -> int:
        """IDENTITY_FRAME(pfn)."""
        return pfn | self.identity_bit

    def foreign_entry(self, mfn: int) -> int:
        """FOREIGN_FRAME(mfn)."""
        return mfn | self.foreign_bit


LAYOUT32 = Layout(4)
LAYOUT64 = Layout(8)


def layout_for(word_size: int) -> Layout:
    if word_size == 8:
        return LAYOUT64
    if word_size == 4:
        return LAYOUT32
    return Layout(word_size)  # raises a clear ValueError
