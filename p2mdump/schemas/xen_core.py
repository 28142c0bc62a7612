"""Construct schemas of the Xen pieces of an ``xl dump-core`` (xc_core ELF) file.

Sources: Xen ``tools/libs/guest/xg_core.h`` / ``xg_core.c`` (notes, p2m pairs,
section names), ``xen/include/public/elfnote.h`` (note types),
``xen/include/public/arch-x86/xen.h`` (arch_shared_info) and
``xen/include/public/version.h`` (the version strings).  Offsets and sizes are
the ones of the reference, section 4.2 and 6.
"""
from __future__ import annotations

from functools import lru_cache

from construct import Bytes, Int32ul, Int64ul, Padding, Struct

from ..layout import PAGE_SIZE

# -- section names (xg_core.h) -----------------------------------------------------
SEC_SHSTRTAB = ".shstrtab"
SEC_NOTE = ".note.Xen"
SEC_PRSTATUS = ".xen_prstatus"
SEC_SHARED_INFO = ".xen_shared_info"
SEC_PAGES = ".xen_pages"
SEC_P2M = ".xen_p2m"
SEC_PFN = ".xen_pfn"
#: section header order of a PV dump (index 0 is the null section)
PV_SECTION_ORDER = (SEC_SHSTRTAB, SEC_NOTE, SEC_PRSTATUS, SEC_SHARED_INFO, SEC_PAGES, SEC_P2M)

# -- notes (elfnote.h) --------------------------------------------------------------
NOTE_NAME = b"Xen\x00"
XEN_ELFNOTE_DUMPCORE_NONE = 0x2000000
XEN_ELFNOTE_DUMPCORE_HEADER = 0x2000001
XEN_ELFNOTE_DUMPCORE_XEN_VERSION = 0x2000002
XEN_ELFNOTE_DUMPCORE_FORMAT_VERSION = 0x2000003
NOTE_TYPE_NAMES = {
    XEN_ELFNOTE_DUMPCORE_NONE: "NONE",
    XEN_ELFNOTE_DUMPCORE_HEADER: "HEADER",
    XEN_ELFNOTE_DUMPCORE_XEN_VERSION: "XEN_VERSION",
    XEN_ELFNOTE_DUMPCORE_FORMAT_VERSION: "FORMAT_VERSION",
}

XC_CORE_MAGIC = 0xF00FEBED        # PV guest
XC_CORE_MAGIC_HVM = 0xF00FEBEE    # HVM guest
MAGIC_NAMES = {XC_CORE_MAGIC: "PV", XC_CORE_MAGIC_HVM: "HVM"}

#: XEN_DUMPCORE_FORMAT_VERSION(0, 1): the only version ever written
FORMAT_VERSION_CURRENT = (0 << 32) | 1
#: XC_CORE_INVALID_PFN / XC_CORE_INVALID_GMFN: the padding pair {~0, ~0}
INVALID_PFN = 0xFFFFFFFFFFFFFFFF
INVALID_GMFN = 0xFFFFFFFFFFFFFFFF

#: sizeof(vcpu_guest_context_any_t) on a 64-bit tools build, and of the
#: x86_32 context that occupies the start of each slot of a 32-bit guest
VCPU_CONTEXT_SIZE = 5168
VCPU_CONTEXT_SIZE_X86_32 = 2800
#: alignments of a 64-bit tools build (sh_addralign of the PROGBITS sections)
PROGBITS_ALIGN = 8

# -- note descriptors ------------------------------------------------------------------
HeaderDesc = Struct(
    "xch_magic" / Int64ul,
    "xch_nr_vcpus" / Int64ul,
    "xch_nr_pages" / Int64ul,
    "xch_page_size" / Int64ul,
)

CompileInfo = Struct(
    "compiler" / Bytes(64),
    "compile_by" / Bytes(16),
    "compile_domain" / Bytes(32),
    "compile_date" / Bytes(32),
)

#: the fields every layout of the xen_version descriptor shares (offsets 0-1263)
_VERSION_HEAD = (
    "major_version" / Int64ul,
    "minor_version" / Int64ul,
    "extra_version" / Bytes(16),
    "compile_info" / CompileInfo,
    "capabilities" / Bytes(1024),
    "changeset" / Bytes(64),
)

#: 64-bit guest: platform_parameters.virt_start (8 bytes) then pagesize at 1272
XenVersionDesc64 = Struct(
    *_VERSION_HEAD,
    "virt_start" / Int64ul,
    "pagesize" / Int64ul,
)

#: 32-bit guest dumped by 64-bit tools: pagesize moved 4 bytes down to 1268
#: (the i386 layout); 1264-1267 hold the low half of virt_start, 4 bytes left over
XenVersionDesc32 = Struct(
    *_VERSION_HEAD,
    "virt_start" / Int32ul,
    "pagesize" / Int64ul,
    Padding(4),
)

XEN_VERSION_DESC = {8: XenVersionDesc64, 4: XenVersionDesc32}
XEN_VERSION_DESC_SIZE = XenVersionDesc64.sizeof()   # 1280 (descsz, both widths)
PAGESIZE_OFFSET = {8: 1272, 4: 1268}

FormatVersionDesc = Struct("version" / Int64ul)

#: struct xen_dumpcore_p2m: one entry of .xen_p2m, describing page k of .xen_pages
XenDumpcoreP2m = Struct(
    "pfn" / Int64ul,
    "gmfn" / Int64ul,
)
P2M_PAIR_SIZE = XenDumpcoreP2m.sizeof()   # 16
PFN_ENTRY_SIZE = 8                         # .xen_pfn: one uint64 pfn per page

# -- shared_info ------------------------------------------------------------------------
#: byte offset of struct arch_shared_info inside the shared_info page, by guest width
ARCH_SHARED_INFO_OFFSET = {8: 3088, 4: 2316}
#: sizeof(struct shared_info) by guest width
SHARED_INFO_SIZE = {8: 3136, 4: 2344}
ARCH_FIELDS = ("max_pfn", "pfn_to_mfn_frame_list_list", "nmi_reason", "p2m_cr3",
               "p2m_vaddr", "p2m_generation")


@lru_cache(maxsize=None)
def arch_shared_info(word_size: int):
    """struct arch_shared_info of a guest with ``word_size``-byte longs."""
    word = Int64ul if word_size == 8 else Int32ul
    fields = [name / word for name in ARCH_FIELDS]
    if word_size == 4:
        fields.append("wc_sec_hi" / Int32ul)   # i386 only: no room in the generic struct
    return Struct(*fields)


@lru_cache(maxsize=None)
def shared_info_page(word_size: int):
    """The 4096-byte .xen_shared_info page, with only ``arch`` decoded."""
    off = ARCH_SHARED_INFO_OFFSET[word_size]
    arch = arch_shared_info(word_size)
    return Struct(
        Padding(off),
        "arch" / arch,
        Padding(PAGE_SIZE - off - arch.sizeof()),
    )


# cr3 folding lives with the other paging facts; re-exported for old callers
from ..paging import fold_cr3, unfold_cr3  # noqa: E402,F401
