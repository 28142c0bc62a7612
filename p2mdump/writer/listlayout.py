"""Where a Linux PV guest keeps its linear p2m list: length, virtual address, checks.

Facts (Linux ``arch/x86/xen/p2m.c`` ``xen_vmalloc_p2m_tree``; reference
section 3.1; Xen ``xg_core_x86.c`` / ``xg_sr_save_x86_pv.c`` for the range
checks):

* the list is an array of guest words indexed by pfn; its vm area is
  ``PMD_SIZE * PMDS_PER_MID_PAGE`` aligned and sized, so its length
  (``xen_p2m_size``) is a whole number of mid regions: 2^18 pfns (one 2 MiB
  PMD of 8-byte words) on 64-bit, 2^20 pfns (two PMDs of 4-byte words) on
  32-bit PAE;
* it is the first early vm area, so on x86-64 it starts at the start of the
  vmalloc space, 0xFFFFC90000000000;
* Xen's tools refuse a list that is not canonical, wraps, or overlaps the
  hypervisor's part of the address space.

Pure integer arithmetic: the spec validates with it, the list builder lays
the list out with it.
"""
from __future__ import annotations

from ..layout import PAGE_SIZE, layout_for
from ..paging import HYPERVISOR_HOLE, mode_for

#: VMALLOC_START of x86-64 Linux (4-level paging): the default list address
VMALLOC_START_X86_64 = 0xFFFFC90000000000


def region_pfns(word_size: int) -> int:
    """pfns of one mid region, the unit of the list's length (2^18 / 2^20)."""
    return layout_for(word_size).pfns_per_mid


def list_pfns(extent: int, word_size: int) -> int:
    """xen_p2m_size: the list's length for a guest describing ``extent`` pfns."""
    region = region_pfns(word_size)
    return max(1, -(-extent // region)) * region


def default_vaddr(word_size: int, nbytes: int) -> int:
    """Where Linux would put a list of ``nbytes``: VMALLOC_START on x86-64; on
    PAE the highest region-aligned address that leaves one region of room
    below the hypervisor hole (the 32-bit vmalloc space ends just below it)."""
    if word_size == 8:
        return VMALLOC_START_X86_64
    align = region_pfns(4) * 4
    hole_start = HYPERVISOR_HOLE[4][0]
    return (hole_start - nbytes) // align * align - align


def vaddr_problem(word_size: int, vaddr: int, nbytes: int) -> str | None:
    """Why a list of ``nbytes`` cannot start at ``vaddr``, or None if it can."""
    mode = mode_for(word_size)
    end = vaddr + nbytes - 1
    where = f"p2m_vaddr {vaddr:#x}-{end:#x}"
    if vaddr < 0:
        return f"p2m_vaddr {vaddr:#x} is negative"
    if vaddr % PAGE_SIZE:
        return f"p2m_vaddr {vaddr:#x} is not page aligned"
    if end >= mode.va_limit:
        bits = mode.va_limit.bit_length() - 1
        return f"{where} wraps past the top of the {bits}-bit address space"
    if not (mode.canonical(vaddr) and mode.canonical(end)) or (
            word_size == 8 and (vaddr >> 63) != (end >> 63)):
        return f"{where} is not canonical"
    lo, hi = mode.hypervisor_hole()
    if vaddr <= hi and end >= lo:
        return f"{where} overlaps the hypervisor's range {lo:#x}-{hi:#x}"
    return None
