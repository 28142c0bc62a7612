"""Construct schemas of an ``xl save`` file and the migration streams inside it.

An ``xl save`` file (and every ``xl migrate`` stream) is three nested formats:

1. the **xl header** (``tools/xl/xl.h`` struct save_file_header, written in the
   saving host's byte order, little-endian on x86) and its optional data, the
   JSON domain configuration;
2. the **libxl stream** v2 (``libxl_sr_stream_format.h``,
   ``docs/specs/libxl-migration-stream.pandoc``): a big-endian header, then
   little-endian records; its LIBXC_CONTEXT record (length 0) is followed at
   once by
3. the **libxc stream** v2/v3 (``xg_sr_stream_format.h``,
   ``docs/specs/libxc-migration-stream.pandoc``): a big-endian image header, a
   domain header, then little-endian records up to END; after it the libxl
   stream goes on (its END record closes the file).

Every record of both streams is ``{u32 type, u32 length}`` followed by the body,
padded with zero bytes to a multiple of 8.  Bit 31 of a libxc record type marks an
optional record (a reader that does not know it skips it).

The constants and layouts below are the only place p2mdump states them; the
reader (:mod:`p2mdump.sources.xl_save`) and the writer both import them.
"""
from __future__ import annotations

import struct
from functools import lru_cache

from construct import (Array, Bytes, Const, FormatField, Int8ul, Int16ub, Int16ul, Int32ub,
                       Int32ul, Int64ub, Int64ul, Padding, Struct)

from ..layout import PAGE_SIZE
from .xl_save_ids import (LIBXC_IDENT, LIBXC_MARKER, LIBXL_IDENT,  # noqa: F401 (re-exported)
                          XL_BYTEORDER_MARKER, XL_BYTEORDER_SWAPPED, XL_MAGIC)

# -- xl header (tools/xl/xl.h) -----------------------------------------------------------
XL_MANDATORY_FLAG_JSON = 1 << 0       # the optional data holds the JSON domain config
XL_MANDATORY_FLAG_STREAMV2 = 1 << 1   # a libxl v2 stream follows (else a legacy libxc stream)
XL_MANDATORY_FLAGS_KNOWN = XL_MANDATORY_FLAG_JSON | XL_MANDATORY_FLAG_STREAMV2

XlHeader = Struct(
    "magic" / Const(XL_MAGIC),
    "byteorder" / Int32ul,
    "mandatory_flags" / Int32ul,
    "optional_flags" / Int32ul,
    "optional_data_len" / Int32ul,
)
XL_HEADER_SIZE = XlHeader.sizeof()   # 48

#: the start of the optional data when XL_MANDATORY_FLAG_JSON is set: the length of
#: the JSON text (NUL included), the text follows
XlConfigLength = Struct("config_len" / Int32ul)

# -- libxl stream (libxl_sr_stream_format.h) -------------------------------------------
LIBXL_VERSION = 2
LIBXL_OPT_BIG_ENDIAN = 1 << 0
LIBXL_OPT_LEGACY = 1 << 1            # converted from a legacy stream by convert-legacy-stream
LIBXL_OPTIONS_KNOWN = LIBXL_OPT_BIG_ENDIAN | LIBXL_OPT_LEGACY

LibxlHeader = Struct(
    "ident" / Int64ub,
    "version" / Int32ub,
    "options" / Int32ub,
)
LIBXL_HEADER_SIZE = LibxlHeader.sizeof()   # 16

LIBXL_REC_END = 0
LIBXL_REC_LIBXC_CONTEXT = 1
LIBXL_REC_EMULATOR_XENSTORE_DATA = 2
LIBXL_REC_EMULATOR_CONTEXT = 3
LIBXL_REC_CHECKPOINT_END = 4
LIBXL_REC_CHECKPOINT_STATE = 5
LIBXL_RECORD_NAMES = {
    LIBXL_REC_END: "END",
    LIBXL_REC_LIBXC_CONTEXT: "LIBXC_CONTEXT",
    LIBXL_REC_EMULATOR_XENSTORE_DATA: "EMULATOR_XENSTORE_DATA",
    LIBXL_REC_EMULATOR_CONTEXT: "EMULATOR_CONTEXT",
    LIBXL_REC_CHECKPOINT_END: "CHECKPOINT_END",
    LIBXL_REC_CHECKPOINT_STATE: "CHECKPOINT_STATE",
}

#: body start of both EMULATOR_* records
EmulatorHeader = Struct(
    "emulator_id" / Int32ul,     # 0 unknown, 1 qemu-traditional, 2 qemu-upstream
    "index" / Int32ul,
)

# -- records (both streams) --------------------------------------------------------------
RecordHeader = Struct(
    "type" / Int32ul,
    "length" / Int32ul,
)
RECORD_HEADER_SIZE = RecordHeader.sizeof()   # 8
RECORD_ALIGN = 8


def flat_struct(schema) -> struct.Struct:
    """A :class:`struct.Struct` decoding the same bytes as ``schema``, a Construct Struct
    of plain integer fields only: for per-record hot loops, where a Construct parse
    (several microseconds) would dominate.  Derived from the schema, never restated;
    tests check that both decode alike."""
    fmts = []
    for sub in schema.subcons:
        field = getattr(sub, "subcon", sub)
        if not isinstance(field, FormatField):
            raise TypeError(f"{sub!r} is not a plain integer field")
        fmts.append(field.fmtstr)
    orders = {f[0] for f in fmts}
    if len(orders) != 1:
        raise TypeError("mixed byte orders")
    return struct.Struct(orders.pop() + "".join(f[1:] for f in fmts))


def padded_length(length: int) -> int:
    """Bytes a record body of ``length`` bytes occupies in the stream (padded to 8)."""
    return (length + RECORD_ALIGN - 1) & ~(RECORD_ALIGN - 1)


# -- libxc image and domain headers -------------------------------------------------------
LIBXC_VERSIONS = (2, 3)              # 3 since Xen 4.14 (STATIC_DATA_END, policies)
LIBXC_OPT_BIG_ENDIAN = 1 << 0
LIBXC_OPTIONS_KNOWN = LIBXC_OPT_BIG_ENDIAN
#: the page_shift every x86 stream's domain header carries
LIBXC_PAGE_SHIFT = 12

LibxcImageHeader = Struct(
    "marker" / Int64ub,
    "ident" / Int32ub,
    "version" / Int32ub,
    "options" / Int16ub,
    "reserved1" / Int16ub,
    "reserved2" / Int32ub,
)
LIBXC_IMAGE_HEADER_SIZE = LibxcImageHeader.sizeof()   # 24

DHDR_TYPE_X86_PV = 1
DHDR_TYPE_X86_HVM = 2
DOMAIN_TYPE_NAMES = {DHDR_TYPE_X86_PV: "x86 PV", DHDR_TYPE_X86_HVM: "x86 HVM"}

LibxcDomainHeader = Struct(
    "type" / Int32ul,
    "page_shift" / Int16ul,
    "reserved" / Int16ul,
    "xen_major" / Int32ul,        # 0 in a stream converted from the legacy format
    "xen_minor" / Int32ul,
)
LIBXC_DOMAIN_HEADER_SIZE = LibxcDomainHeader.sizeof()   # 16

# -- libxc record types ------------------------------------------------------------------
REC_END = 0x00
REC_PAGE_DATA = 0x01
REC_X86_PV_INFO = 0x02
REC_X86_PV_P2M_FRAMES = 0x03
REC_X86_PV_VCPU_BASIC = 0x04
REC_X86_PV_VCPU_EXTENDED = 0x05
REC_X86_PV_VCPU_XSAVE = 0x06
REC_SHARED_INFO = 0x07
REC_X86_TSC_INFO = 0x08
REC_HVM_CONTEXT = 0x09
REC_HVM_PARAMS = 0x0A
REC_TOOLSTACK = 0x0B
REC_X86_PV_VCPU_MSRS = 0x0C
REC_VERIFY = 0x0D
REC_CHECKPOINT = 0x0E
REC_CHECKPOINT_DIRTY_PFN_LIST = 0x0F
REC_STATIC_DATA_END = 0x10
REC_X86_CPUID_POLICY = 0x11
REC_X86_MSR_POLICY = 0x12
REC_TYPE_OPTIONAL = 1 << 31

RECORD_NAMES = {
    REC_END: "END",
    REC_PAGE_DATA: "PAGE_DATA",
    REC_X86_PV_INFO: "X86_PV_INFO",
    REC_X86_PV_P2M_FRAMES: "X86_PV_P2M_FRAMES",
    REC_X86_PV_VCPU_BASIC: "X86_PV_VCPU_BASIC",
    REC_X86_PV_VCPU_EXTENDED: "X86_PV_VCPU_EXTENDED",
    REC_X86_PV_VCPU_XSAVE: "X86_PV_VCPU_XSAVE",
    REC_SHARED_INFO: "SHARED_INFO",
    REC_X86_TSC_INFO: "X86_TSC_INFO",
    REC_HVM_CONTEXT: "HVM_CONTEXT",
    REC_HVM_PARAMS: "HVM_PARAMS",
    REC_TOOLSTACK: "TOOLSTACK",
    REC_X86_PV_VCPU_MSRS: "X86_PV_VCPU_MSRS",
    REC_VERIFY: "VERIFY",
    REC_CHECKPOINT: "CHECKPOINT",
    REC_CHECKPOINT_DIRTY_PFN_LIST: "CHECKPOINT_DIRTY_PFN_LIST",
    REC_STATIC_DATA_END: "STATIC_DATA_END",
    REC_X86_CPUID_POLICY: "X86_CPUID_POLICY",
    REC_X86_MSR_POLICY: "X86_MSR_POLICY",
}
#: the vCPU records: {u32 vcpu_id, u32 reserved} then a context blob
VCPU_RECORDS = (REC_X86_PV_VCPU_BASIC, REC_X86_PV_VCPU_EXTENDED,
                REC_X86_PV_VCPU_XSAVE, REC_X86_PV_VCPU_MSRS)


def record_name(rtype: int) -> str:
    """A record type's name, ``OPTIONAL(0x...)`` / ``UNKNOWN(0x...)`` for others."""
    base = rtype & ~REC_TYPE_OPTIONAL
    if rtype & REC_TYPE_OPTIONAL:
        return f"{RECORD_NAMES.get(base, 'UNKNOWN')}(optional 0x{rtype:08x})"
    return RECORD_NAMES.get(rtype, f"UNKNOWN(0x{rtype:08x})")


# -- PAGE_DATA ---------------------------------------------------------------------------
#: at most this many pfns in one PAGE_DATA record (MAX_BATCH_SIZE of the saver)
PAGE_DATA_MAX_COUNT = 1024
PageDataHeader = Struct(
    "count" / Int32ul,
    "reserved" / Int32ul,
)
PAGE_DATA_HEADER_SIZE = PageDataHeader.sizeof()   # 8
PFN_WORD_SIZE = 8


@lru_cache(maxsize=64)
def page_data_pfns(count: int):
    """The PAGE_DATA header and its ``count`` pfn words (type in bits 63-60)."""
    return Struct("count" / Int32ul, "reserved" / Int32ul,
                  "pfns" / Array(count, Int64ul))


#: one pfn word: bits 51-0 the pfn, 59-52 reserved (zero), 63-60 the page type
PAGE_DATA_PFN_MASK = (1 << 52) - 1
PAGE_DATA_RESERVED_MASK = ((1 << 60) - 1) & ~PAGE_DATA_PFN_MASK
PAGE_DATA_TYPE_SHIFT = 60

#: the page types (XEN_DOMCTL_PFINFO_* >> 28), as found in bits 63-60
PFINFO_NOTAB = 0x0
PFINFO_L1TAB = 0x1
PFINFO_L2TAB = 0x2
PFINFO_L3TAB = 0x3
PFINFO_L4TAB = 0x4
PFINFO_LPINTAB = 0x8      # flag: a pinned page table (types 0x9-0xC)
PFINFO_BROKEN = 0xD
PFINFO_XALLOC = 0xE       # allocate only, no data
PFINFO_XTAB = 0xF         # invalid pfn, no data
#: types that carry no page data in the record
PFINFO_NO_DATA = (PFINFO_BROKEN, PFINFO_XALLOC, PFINFO_XTAB)
#: types no saver writes (5-8)
PFINFO_INVALID = (0x5, 0x6, 0x7, 0x8)
PFINFO_NAMES = {
    PFINFO_NOTAB: "NOTAB", PFINFO_L1TAB: "L1TAB", PFINFO_L2TAB: "L2TAB",
    PFINFO_L3TAB: "L3TAB", PFINFO_L4TAB: "L4TAB",
    PFINFO_LPINTAB | PFINFO_L1TAB: "L1TAB|PINNED", PFINFO_LPINTAB | PFINFO_L2TAB: "L2TAB|PINNED",
    PFINFO_LPINTAB | PFINFO_L3TAB: "L3TAB|PINNED", PFINFO_LPINTAB | PFINFO_L4TAB: "L4TAB|PINNED",
    PFINFO_BROKEN: "BROKEN", PFINFO_XALLOC: "XALLOC", PFINFO_XTAB: "XTAB",
}


def pfn_word(pfn: int, page_type: int = PFINFO_NOTAB) -> int:
    """The PAGE_DATA word of ``pfn`` with ``page_type`` in its top four bits."""
    return (page_type << PAGE_DATA_TYPE_SHIFT) | (pfn & PAGE_DATA_PFN_MASK)


def has_page_data(page_type: int) -> bool:
    """True when a pfn of this type is followed by 4096 bytes of page data."""
    return page_type not in PFINFO_NO_DATA


# -- other libxc records -------------------------------------------------------------------
X86PvInfo = Struct(
    "guest_width" / Int8ul,       # 4 or 8
    "pt_levels" / Int8ul,         # 3 or 4
    "reserved" / Bytes(6),
)

#: X86_PV_P2M_FRAMES: start_pfn 0, end_pfn the last pfn (inclusive), then one u64 pfn per
#: guest page holding the p2m (count = end_pfn / fpp + 1 - start_pfn / fpp)
X86PvP2mFramesHeader = Struct(
    "start_pfn" / Int32ul,
    "end_pfn" / Int32ul,
)
P2M_FRAMES_HEADER_SIZE = X86PvP2mFramesHeader.sizeof()   # 8


@lru_cache(maxsize=64)
def x86_pv_p2m_frames(count: int):
    """The whole X86_PV_P2M_FRAMES body with ``count`` p2m frame pfns."""
    return Struct("start_pfn" / Int32ul, "end_pfn" / Int32ul,
                  "p2m_pfns" / Array(count, Int64ul))


VcpuHeader = Struct(
    "vcpu_id" / Int32ul,
    "reserved" / Int32ul,
)
VCPU_HEADER_SIZE = VcpuHeader.sizeof()   # 8

#: sizeof(vcpu_guest_context) of each guest width, and the offset of ctrlreg[3] (cr3,
#: rewritten by the saver to a folded *pfn*, see paging.fold_cr3) inside it
VCPU_CONTEXT_SIZE = {8: 0x1430, 4: 0xAF0}
VCPU_CR3_OFFSET = {8: 0x1390, 4: 0xAA8}


@lru_cache(maxsize=None)
def vcpu_context_cr3(word_size: int):
    """The start of a vcpu_guest_context of ``word_size`` up to ctrlreg[3] (cr3)."""
    return Struct(Padding(VCPU_CR3_OFFSET[word_size]),
                  "cr3" / (Int64ul if word_size == 8 else Int32ul))

X86TscInfo = Struct(
    "mode" / Int32ul,
    "khz" / Int32ul,
    "nsec" / Int64ul,
    "incarnation" / Int32ul,
    "reserved" / Int32ul,
)

#: SHARED_INFO: the guest's whole shared_info page (decode its arch part with
#: schemas.xen_core.shared_info_page)
SHARED_INFO_RECORD_SIZE = PAGE_SIZE

#: records whose body has one fixed size (others: checked by their own rules)
RECORD_FIXED_SIZE = {
    REC_END: 0, REC_X86_PV_INFO: X86PvInfo.sizeof(), REC_SHARED_INFO: SHARED_INFO_RECORD_SIZE,
    REC_X86_TSC_INFO: X86TscInfo.sizeof(), REC_VERIFY: 0, REC_CHECKPOINT: 0,
    REC_STATIC_DATA_END: 0,
}
LIBXL_RECORD_FIXED_SIZE = {LIBXL_REC_END: 0, LIBXL_REC_LIBXC_CONTEXT: 0,
                           LIBXL_REC_CHECKPOINT_END: 0}

#: X86_CPUID_POLICY body: an array of xen_cpuid_leaf_t
CpuidLeaf = Struct(
    "leaf" / Int32ul, "subleaf" / Int32ul,
    "a" / Int32ul, "b" / Int32ul, "c" / Int32ul, "d" / Int32ul,
)
#: X86_MSR_POLICY body: an array of xen_msr_entry_t
MsrEntry = Struct(
    "idx" / Int32ul,
    "flags" / Int32ul,
    "val" / Int64ul,
)
#: the entry size a policy record's length is a multiple of
POLICY_ENTRY_SIZE = {REC_X86_CPUID_POLICY: CpuidLeaf.sizeof(),
                     REC_X86_MSR_POLICY: MsrEntry.sizeof()}
