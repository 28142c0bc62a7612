"""What ``p2mdump info`` says about a save file: one JSON-ready dict."""
from __future__ import annotations

from ...schemas import xl_save as S
from ...schemas.xen_core import ARCH_FIELDS, shared_info_page
from .headers import config_facts


def shared_info_arch(stream) -> dict | None:
    """The arch fields of the saved shared_info page, decoded at the guest width.

    The page is saved as the guest had it, so pfn_to_mfn_frame_list_list and
    p2m_cr3 name frames of the *source host* (p2m_cr3 as a folded cr3 value)."""
    ws = stream.guest_width
    if stream.shared_info is None or ws is None:
        return None
    arch = shared_info_page(ws).parse(stream.shared_info).arch
    return {name: arch[name] for name in ARCH_FIELDS}


def save_info(stream) -> dict:
    """Headers, records and the page index of ``stream`` (a SaveStream) as a dict."""
    si = shared_info_arch(stream)
    p2m = stream.p2m_frames
    return {
        "container": stream.container, "path": stream.path, "file_size": stream.size,
        "entry": stream.entry, "complete": stream.complete,
        "xl_header": stream.xl_header,
        "config": config_facts(stream.config) if stream.config_text is not None else None,
        "config_json": stream.config is not None,
        "libxl_version": stream.libxl_version, "libxl_legacy": stream.libxl_legacy,
        "libxc_version": stream.libxc_version,
        "xen_version": None if stream.xen_version is None else
        f"{stream.xen_version[0]}.{stream.xen_version[1]}",
        "domain_type": S.DOMAIN_TYPE_NAMES.get(stream.domain_type),
        "word_size": stream.guest_width, "pt_levels": stream.pt_levels,
        "record_counts": dict(sorted(stream.record_counts.items())),
        "page_counts": {k: v for k, v in stream.page_counts.items() if v},
        "pages_with_data": int(len(stream.data_pfns)),
        "resent": stream.resent,
        "vcpus": stream.vcpus,
        "tsc": stream.tsc,
        "shared_info": si,
        "max_pfn": None if si is None else si["max_pfn"],
        "top_mfn": None,
        "p2m_frames": None if p2m is None else {
            "start_pfn": p2m.start_pfn, "end_pfn": p2m.end_pfn, "count": int(len(p2m.pfns)),
            "record_index": p2m.record_index, "offset": p2m.offset},
        "findings": [f.to_dict() for f in stream.findings],
    }
