"""A small test-local builder of save streams, from p2mdump.schemas.xl_save.

Enough to lay out the records Xen's saver writes for a PV guest (the
reader's tests build their own streams; the real generator lives in the
writer and is not imported here).  Pages are stamped with their pfn and a
round number so a read-back can tell which copy it got.
"""
from __future__ import annotations

import json
import struct

from p2mdump.layout import PAGE_SIZE
from p2mdump.paging import fold_cr3
from p2mdump.schemas import xl_save as S
from p2mdump.schemas.xen_core import ARCH_SHARED_INFO_OFFSET, arch_shared_info


def stamp(pfn: int, rnd: int = 0) -> bytes:
    """The 4096 bytes of page ``pfn`` in round ``rnd``."""
    return struct.pack("<QQ", pfn, rnd) * (PAGE_SIZE // 16)


def rec(rtype: int, body: bytes = b"", length: int | None = None,
        pad: bytes | None = None) -> bytes:
    """One record: header, body, zero padding (``length``/``pad`` to damage it)."""
    n = len(body) if length is None else length
    fill = S.padded_length(len(body)) - len(body)
    return (S.RecordHeader.build({"type": rtype, "length": n}) + body
            + (b"\0" * fill if pad is None else pad))


def page_data(entries, count: int | None = None, reserved: int = 0) -> bytes:
    """A PAGE_DATA body: ``entries`` are (pfn, type, page bytes) or (pfn, type, None)."""
    words = [S.pfn_word(pfn, t) for pfn, t, _ in entries]
    body = S.page_data_pfns(len(words)).build(
        {"count": len(words) if count is None else count, "reserved": reserved, "pfns": words})
    return body + b"".join(page for _, t, page in entries if S.has_page_data(t))


def pv_info(ws: int, levels: int | None = None) -> bytes:
    return S.X86PvInfo.build({"guest_width": ws, "pt_levels": levels or (4 if ws == 8 else 3),
                              "reserved": bytes(6)})


def p2m_frames(end_pfn: int, pfns) -> bytes:
    return S.x86_pv_p2m_frames(len(pfns)).build(
        {"start_pfn": 0, "end_pfn": end_pfn, "p2m_pfns": list(pfns)})


def vcpu_basic(vcpu_id: int, ws: int, cr3_pfn: int) -> bytes:
    ctx = bytearray(S.VCPU_CONTEXT_SIZE[ws])
    off = S.VCPU_CR3_OFFSET[ws]
    ctx[off:off + ws] = fold_cr3(cr3_pfn, ws).to_bytes(ws, "little")
    return S.VcpuHeader.build({"vcpu_id": vcpu_id, "reserved": 0}) + bytes(ctx)


def shared_info(ws: int, **arch) -> bytes:
    page = bytearray(PAGE_SIZE)
    schema = arch_shared_info(ws)
    fields = {name: arch.get(name, 0) for name in
              ("max_pfn", "pfn_to_mfn_frame_list_list", "nmi_reason", "p2m_cr3",
               "p2m_vaddr", "p2m_generation")}
    if ws == 4:
        fields["wc_sec_hi"] = 0
    raw = schema.build(fields)
    off = ARCH_SHARED_INFO_OFFSET[ws]
    page[off:off + len(raw)] = raw
    return bytes(page)


def tsc() -> bytes:
    return S.X86TscInfo.build({"mode": 0, "khz": 2_000_000, "nsec": 12345, "incarnation": 1,
                               "reserved": 0})


def libxc(records: list, version: int = 3, dtype: int = S.DHDR_TYPE_X86_PV,
          xen=(4, 17), options: int = 0) -> bytes:
    """A libxc stream: image header, domain header, ``records`` (already built)."""
    ihdr = S.LibxcImageHeader.build({"marker": S.LIBXC_MARKER, "ident": S.LIBXC_IDENT,
                                     "version": version, "options": options,
                                     "reserved1": 0, "reserved2": 0})
    dhdr = S.LibxcDomainHeader.build({"type": dtype, "page_shift": 12, "reserved": 0,
                                      "xen_major": xen[0], "xen_minor": xen[1]})
    return ihdr + dhdr + b"".join(records)


def libxl(libxc_stream: bytes, options: int = 0, version: int = S.LIBXL_VERSION,
          after: list = ()) -> bytes:
    """A libxl stream around ``libxc_stream`` (which ends with its own END)."""
    hdr = S.LibxlHeader.build({"ident": S.LIBXL_IDENT, "version": version, "options": options})
    return (hdr + rec(S.LIBXL_REC_LIBXC_CONTEXT) + libxc_stream + b"".join(after)
            + rec(S.LIBXL_REC_END))


def xl(libxl_stream: bytes, config=None, flags: int | None = None,
       byteorder: int = S.XL_BYTEORDER_MARKER) -> bytes:
    """The xl format: header, optional data (u32 length + config text + NUL), stream."""
    if flags is None:
        flags = S.XL_MANDATORY_FLAG_STREAMV2 | (S.XL_MANDATORY_FLAG_JSON if config else 0)
    text = b""
    if config is not None:
        text = (config if isinstance(config, str) else json.dumps(config)).encode() + b"\0"
    opt = S.XlConfigLength.build({"config_len": len(text)}) + text
    hdr = S.XlHeader.build({"byteorder": byteorder, "mandatory_flags": flags,
                            "optional_flags": 0, "optional_data_len": len(opt)})
    return hdr + opt + libxl_stream


CONFIG = {"c_info": {"type": "pv", "name": "guest-a",
                     "uuid": "0b6e8e34-3b6c-4f5e-9c43-000000000001"},
          "b_info": {"max_vcpus": 2, "max_memkb": 262144, "target_memkb": 196608}}


def guest_records(ws: int = 8, npages: int = 3000, batch: int = 1024, resend=(),
                  nodata=(), version: int = 3) -> list:
    """The records of a PV guest with pfns 0..npages-1, as Xen's saver orders them.

    ``resend``: pfns sent again (round 1) after the first pass; ``nodata``:
    (pfn, type) pairs sent last without data.  The p2m frames are pfns
    npages-k .. npages-1 (k = frames needed at width ``ws``); pfn 1 is an L4/L3
    page table (pinned), cr3 of vCPU 0 names it."""
    fpp = PAGE_SIZE // ws
    nframes = (npages - 1) // fpp + 1
    frames = list(range(npages - nframes, npages))
    top = S.PFINFO_LPINTAB | (S.PFINFO_L4TAB if ws == 8 else S.PFINFO_L3TAB)
    types = {1: top, 2: S.PFINFO_L1TAB}
    out = [rec(S.REC_X86_PV_INFO, pv_info(ws))]
    if version >= 3:
        out.append(rec(S.REC_STATIC_DATA_END))
    out.append(rec(S.REC_X86_PV_P2M_FRAMES, p2m_frames(npages - 1, frames)))
    pfns = list(range(npages))
    for i in range(0, npages, batch):
        out.append(rec(S.REC_PAGE_DATA, page_data(
            [(p, types.get(p, 0), stamp(p)) for p in pfns[i:i + batch]])))
    resend = list(resend)
    for i in range(0, len(resend), batch):
        out.append(rec(S.REC_PAGE_DATA, page_data(
            [(p, types.get(p, 0), stamp(p, 1)) for p in resend[i:i + batch]])))
    if nodata:
        out.append(rec(S.REC_PAGE_DATA, page_data([(p, t, None) for p, t in nodata])))
    out.append(rec(S.REC_X86_TSC_INFO, tsc()))
    out.append(rec(S.REC_SHARED_INFO, shared_info(ws, max_pfn=npages,
                                                  pfn_to_mfn_frame_list_list=0x1234)))
    out.append(rec(S.REC_X86_PV_VCPU_BASIC, vcpu_basic(0, ws, 1)))
    out.append(rec(S.REC_END))
    return out


def guest_file(ws: int = 8, entry: str = "xl", config=CONFIG, **kw) -> bytes:
    """A whole save file of :func:`guest_records` in the given entry form."""
    stream = libxc(guest_records(ws, **kw), version=kw.get("version", 3))
    if entry == "libxc":
        return stream
    stream = libxl(stream)
    return stream if entry == "libxl" else xl(stream, config)
