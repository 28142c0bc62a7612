"""x86 paging constants: the one place that knows page-table geometry.

A Linux PV guest that publishes a *linear* p2m list (Linux 3.19 and later,
``arch/x86/xen/p2m.c``) keeps its pfn -> mfn array in a virtually mapped
kernel area and tells the toolstack where it is through shared_info
(``arch.p2m_cr3``, ``arch.p2m_vaddr``).  Reading that list means walking the
guest's own page tables.  In a PV guest those tables hold *machine* frame
numbers, so the walk runs straight on machine memory.

Facts (Intel SDM vol. 3 ch. 4; Xen ``xen/include/public/arch-x86/xen-x86_32.h``
and ``xen-x86_64.h`` for the cr3 folding and the hypervisor holes; Xen
``tools/libs/guest/xg_sr_save_x86_pv.c`` ``map_p2m_list`` for the way Xen's
own tools walk the list):

* every page-table entry the walker reads is a little-endian 64-bit word (a
  32-bit PV guest is always PAE), 512 entries to a 4096-byte table page;
* entry bits: 0 present, 1 writable, 2 user, 3 PWT, 4 PCD, 5 accessed,
  6 dirty, 7 PSE (a large page at levels 2 and 3), 8 global, 63 NX; the
  frame is bits 12-51 (mask ``0x000FFFFFFFFFF000``);
* level L (1 = the PTE level) indexes virtual-address bits ``12 + 9(L-1)``
  upwards: 12, 21, 30, 39, 48;
* x86-64: 4 levels, 48-bit canonical addresses (5 levels, 57 bits with LA57);
  PAE: 3 levels over 32-bit addresses, the top (L3) table has 4 used entries;
* a PV guest's cr3 value holds the top table's MFN *folded*: on 64-bit
  ``cr3 = mfn << 12``; on 32-bit ``cr3 = (mfn << 12) | (mfn >> 20)`` in 32 bits;
* Xen keeps parts of every PV guest's address space for itself; Xen's save
  code refuses a list that overlaps them: 0xFFFF800000000000-0xFFFF87FFFFFFFFFF
  on 64-bit guests, 0xF5800000-0xFFFFFFFF on 32-bit guests.

Light on purpose (no numpy, no construct): single lookups import it.
"""
from __future__ import annotations

from .errors import TreeError
from .layout import PAGE_SHIFT, PAGE_SIZE

#: a page-table entry is always 8 bytes (x86-64 and PAE)
PTE_SIZE = 8
#: entries in one page-table page
PTES_PER_PAGE = PAGE_SIZE // PTE_SIZE          # 512
#: virtual-address bits resolved by one level
BITS_PER_LEVEL = 9

# -- entry bits -------------------------------------------------------------------
PTE_PRESENT = 1 << 0
PTE_RW = 1 << 1
PTE_USER = 1 << 2
PTE_PWT = 1 << 3
PTE_PCD = 1 << 4
PTE_ACCESSED = 1 << 5
PTE_DIRTY = 1 << 6
#: page size bit: at level 2 a 2 MiB page, at level 3 a 1 GiB page
PTE_PSE = 1 << 7
PTE_GLOBAL = 1 << 8
PTE_NX = 1 << 63
#: physical (here: machine) address bits 12-51 of an entry
PTE_FRAME_MASK = 0x000FFFFFFFFFF000
#: machine addresses lie below 2^52 (the widest MAXPHYADDR): the end of what
#: PTE_FRAME_MASK can name
MACHINE_ADDRESS_LIMIT = PTE_FRAME_MASK + PAGE_SIZE
#: in a large-page entry bit 12 is PAT, so the frame of a 2 MiB / 1 GiB page
#: is the address aligned to the page size
PTE_PAT_LARGE = 1 << 12

#: bits a PAE PDPTE (an entry of the 4-entry top table) must leave clear:
#: 1-2, 5-8 and 52-63 (Intel SDM vol. 3, "Format of a PAE
#: Page-Directory-Pointer-Table Entry"; 52 is the widest MAXPHYADDR)
PDPTE_RESERVED = 0x1E6 | (0xFFF << 52)

#: what Linux writes for kernel data (PAGE_KERNEL: present, rw, accessed,
#: dirty, NX; global left out) and read-only data (PAGE_KERNEL_RO), and for a
#: page-table page (_KERNPG_TABLE: present, rw, accessed, dirty)
PAGE_KERNEL = PTE_PRESENT | PTE_RW | PTE_ACCESSED | PTE_DIRTY | PTE_NX
PAGE_KERNEL_RO = PTE_PRESENT | PTE_ACCESSED | PTE_DIRTY | PTE_NX
KERNPG_TABLE = PTE_PRESENT | PTE_RW | PTE_ACCESSED | PTE_DIRTY

def level_name(level: int) -> str:
    """How findings and lookup paths name page-table ``level`` ("pt-l1" .. "pt-l5")."""
    return f"pt-l{level}"


def level_shift(level: int) -> int:
    """Lowest virtual-address bit indexed at ``level`` (1: 12, 2: 21, 3: 30, 4: 39, 5: 48)."""
    return PAGE_SHIFT + BITS_PER_LEVEL * (level - 1)


def level_span(level: int) -> int:
    """Bytes of virtual address one entry at ``level`` covers (4 KiB, 2 MiB, 1 GiB, ...)."""
    return 1 << level_shift(level)


def level_pages(level: int) -> int:
    """4 KiB pages one entry at ``level`` covers (1, 512, 512**2, ...)."""
    return 1 << (BITS_PER_LEVEL * (level - 1))


def pte_frame(entry: int) -> int:
    """The frame number an entry names (bits 12-51)."""
    return (entry & PTE_FRAME_MASK) >> PAGE_SHIFT


class PagingMode:
    """One x86 paging mode: how many levels and how wide a virtual address is."""

    __slots__ = ("name", "levels", "va_bits", "word_size", "top_entries")
    # read-only, set once by __init__
    name: str
    levels: int
    va_bits: int
    #: the guest's word size (8, or 4 for PAE)
    word_size: int
    #: used entries of the top table (512, or 4 for PAE)
    top_entries: int

    def __init__(self, name: str, levels: int, va_bits: int, word_size: int,
                 top_entries: int) -> None:
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "levels", levels)
        object.__setattr__(self, "va_bits", va_bits)
        object.__setattr__(self, "word_size", word_size)
        object.__setattr__(self, "top_entries", top_entries)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("PagingMode is immutable")

    def __repr__(self) -> str:
        return f"PagingMode({self.name!r})"

    @property
    def large_levels(self) -> tuple[int, ...]:
        """Levels at which PSE makes an entry a large page."""
        return (2, 3) if self.levels >= 4 else (2,)

    def index(self, vaddr: int, level: int) -> int:
        """Entry index of ``vaddr`` in its table at ``level``."""
        width = BITS_PER_LEVEL if level < self.levels else (
            self.va_bits - level_shift(level))
        return (vaddr >> level_shift(level)) & ((1 << width) - 1)

    @property
    def va_limit(self) -> int:
        """One past the highest virtual address (2^32 for PAE, 2^64 on 64-bit)."""
        return 1 << 32 if self.word_size == 4 else 1 << 64

    def canonical(self, vaddr: int) -> bool:
        """Whether ``vaddr`` is a canonical address of this mode."""
        if self.word_size == 4:
            return 0 <= vaddr <= 0xFFFFFFFF
        if not 0 <= vaddr < (1 << 64):
            return False
        top = vaddr >> (self.va_bits - 1)
        return top == 0 or top == (1 << (65 - self.va_bits)) - 1

    def hypervisor_hole(self) -> tuple[int, int]:
        """The range Xen keeps for itself in a PV guest (inclusive)."""
        return HYPERVISOR_HOLE[self.word_size]


X86_64 = PagingMode("x86-64", 4, 48, 8, PTES_PER_PAGE)
X86_64_LA57 = PagingMode("x86-64-5level", 5, 57, 8, PTES_PER_PAGE)
PAE = PagingMode("pae", 3, 32, 4, 4)
MODES = {m.name: m for m in (X86_64, X86_64_LA57, PAE)}

#: inclusive virtual ranges a PV guest's p2m list must not overlap (Xen's
#: save code checks them), by guest word size
HYPERVISOR_HOLE = {8: (0xFFFF800000000000, 0xFFFF87FFFFFFFFFF),
                   4: (0xF5800000, 0xFFFFFFFF)}


#: where a 64-bit Linux kernel maps all of (pseudo-)physical memory, virtual =
#: base + physical ("direct map", PAGE_OFFSET): ``__PAGE_OFFSET_BASE_L4`` of
#: ``arch/x86/include/asm/page_64_types.h`` with 4-level paging (a Xen PV
#: guest's) since Linux 4.20; 2.6.27 to 4.19 used 0xFFFF880000000000, and
#: a kernel that randomises its memory layout (CONFIG_RANDOMIZE_MEMORY)
#: moves it at every boot (``page_offset_base``)
LINUX_DIRECT_MAP_BASE = 0xFFFF888000000000

#: the most pfns a linear p2m list may have here: 2^32 pfns (16 TiB of guest
#: memory) on 64-bit guests; a 32-bit guest's list must fit in its 4 GiB
#: address space
MAX_LIST_PFNS = {8: 1 << 32, 4: 1 << 30}


def word_size_from_vaddr(vaddr: int) -> int:
    """The word size of a guest guessed from a kernel virtual address: a
    64-bit Linux kernel maps its data (the p2m list among it) in the upper
    half of the address space, a 32-bit (PAE) kernel below 4 GiB."""
    return 8 if vaddr > 0xFFFFFFFF else 4


def mode_for(word_size: int, five_level: bool = False) -> PagingMode:
    """The paging mode of a PV guest of ``word_size`` (8: x86-64, 4: PAE)."""
    if word_size == 8:
        return X86_64_LA57 if five_level else X86_64
    if word_size == 4:
        if five_level:
            raise ValueError("a 32-bit (PAE) guest has no 5-level paging")
        return PAE
    raise ValueError(f"word size must be 4 or 8, not {word_size!r}")


def list_end(mode: PagingMode, p2m_vaddr: int, max_pfn: int, n_pages: int) -> int:
    """The last byte address of a linear p2m list of ``n_pages`` pages (for
    ``max_pfn`` pfns) at ``p2m_vaddr``; TreeError unless the whole list lies
    in the canonical addresses of one half of ``mode``'s address space."""
    end = p2m_vaddr + n_pages * PAGE_SIZE - 1 if n_pages else p2m_vaddr
    if not mode.canonical(p2m_vaddr) or not mode.canonical(end) or end >= mode.va_limit:
        raise TreeError(f"the list at p2m_vaddr {p2m_vaddr:#x} with {max_pfn:#x} pfns "
                        f"({n_pages} pages, up to {end:#x}) does not fit in a "
                        f"{mode.name} address space (not canonical or wraps)")
    half = mode.va_bits - 1
    if mode.word_size == 8 and (p2m_vaddr >> half) != (end >> half):
        raise TreeError(f"the list {p2m_vaddr:#x}-{end:#x} crosses the non-canonical gap")
    return end


# -- cr3 (xen-x86_32.h / xen-x86_64.h) -----------------------------------------------

def fold_cr3(mfn: int, word_size: int) -> int:
    """The cr3 value a PV guest of ``word_size`` uses for top table ``mfn``."""
    if word_size == 8:
        return mfn << PAGE_SHIFT
    return ((mfn << PAGE_SHIFT) | (mfn >> 20)) & 0xFFFFFFFF


def unfold_cr3(cr3: int, word_size: int) -> int:
    """The MFN of the top table named by a cr3 value (the inverse of :func:`fold_cr3`).

    For a 32-bit guest the caller should reject values with bits 32-63 set
    (Xen's save code does); only the low 32 bits are used here."""
    if word_size == 8:
        return cr3 >> PAGE_SHIFT
    cr3 &= 0xFFFFFFFF
    return ((cr3 >> PAGE_SHIFT) | (cr3 << 20)) & 0xFFFFFFFF
