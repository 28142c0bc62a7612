"""The headers of a save file: the xl header and its domain config, the
libxl stream header, the libxc image and domain headers.

A header p2mdump cannot use is a :class:`~p2mdump.errors.ContainerError`
naming its offset (a big-endian or legacy stream, an HVM domain, an unknown
version); odd but usable fields become findings.
"""
from __future__ import annotations

import json

from ... import findings as F
from ...errors import ContainerError
from ...schemas import xl_save as S

#: domain config keys reported by ``info`` (libxl_domain_config as JSON)
CONFIG_FACTS = (("name", ("c_info", "name")), ("type", ("c_info", "type")),
                ("uuid", ("c_info", "uuid")), ("max_vcpus", ("b_info", "max_vcpus")),
                ("max_memkb", ("b_info", "max_memkb")),
                ("target_memkb", ("b_info", "target_memkb")))


def parse_xl_header(win, path: str, notes) -> tuple[dict, str | None, int]:
    """(xl header facts, the domain config text or None, offset of the libxl stream)."""
    raw = win.read(0, S.XL_HEADER_SIZE)
    if len(raw) < S.XL_HEADER_SIZE:
        raise ContainerError(f"{path}: the xl header is cut short: {len(raw)} of "
                             f"{S.XL_HEADER_SIZE} bytes")
    hdr = S.XlHeader.parse(raw)
    if hdr.byteorder == S.XL_BYTEORDER_SWAPPED:
        raise ContainerError(f"{path}: xl header at offset 0: a big-endian save file: "
                             "not supported")
    if hdr.byteorder != S.XL_BYTEORDER_MARKER:
        raise ContainerError(f"{path}: xl header at offset 0: byte order marker "
                             f"{hdr.byteorder:#010x} is neither {S.XL_BYTEORDER_MARKER:#010x} "
                             "nor its byte swap")
    if not hdr.mandatory_flags & S.XL_MANDATORY_FLAG_STREAMV2:
        raise ContainerError(f"{path}: a legacy (Xen <= 4.5) save stream (xl header at offset 0 "
                             "without the STREAMv2 flag): not supported; convert it with Xen's "
                             "`convert-legacy-stream --format xl` (tools/python/scripts)")
    unknown = hdr.mandatory_flags & ~S.XL_MANDATORY_FLAGS_KNOWN
    if unknown:
        raise ContainerError(f"{path}: xl header at offset 0: unknown mandatory flags "
                             f"{unknown:#x} (xl itself refuses such a file)")
    start = S.XL_HEADER_SIZE + hdr.optional_data_len
    if start > win.size:
        raise ContainerError(f"{path}: the xl header's optional data ({hdr.optional_data_len} "
                             f"bytes at offset {S.XL_HEADER_SIZE:#x}) runs past the end of the "
                             f"file ({win.size} bytes)")
    facts = {"byteorder": "little", "mandatory_flags": hdr.mandatory_flags,
             "optional_flags": hdr.optional_flags,
             "optional_data_len": hdr.optional_data_len,
             "json_config": bool(hdr.mandatory_flags & S.XL_MANDATORY_FLAG_JSON)}
    return facts, _config_text(win, hdr.optional_data_len, notes), start


def _config_text(win, optlen: int, notes) -> str | None:
    """The domain config in the optional data: u32 length, then the text (NUL included)."""
    size = S.XlConfigLength.sizeof()
    if optlen < size:
        return None
    clen = S.XlConfigLength.parse(win.read(S.XL_HEADER_SIZE, size)).config_len
    if clen > optlen - size:
        notes.add(F.SAVE_CONFIG, f"xl header at offset 0: config length {clen} exceeds the "
                  f"{optlen - size} bytes of optional data left; config not read")
        return None
    raw = win.read(S.XL_HEADER_SIZE + size, clen)
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace")


def parse_config(text: str | None, is_json: bool, notes) -> dict | None:
    """The JSON domain config as a dict; None (and a finding) when it is not JSON."""
    if text is None:
        return None
    where = f"xl header optional data at offset {S.XL_HEADER_SIZE + 4:#x}"
    if not is_json:
        notes.add(F.SAVE_CONFIG, f"{where}: the domain config is in xl's config file syntax "
                  "(no JSON flag); not decoded", severity=F.INFO)
        return None
    try:
        config = json.loads(text)
    except (ValueError, RecursionError) as exc:
        notes.add(F.SAVE_CONFIG, f"{where}: the domain config is not JSON "
                  f"({type(exc).__name__}: {str(exc)[:80]})")
        return None
    if not isinstance(config, dict):
        notes.add(F.SAVE_CONFIG, f"{where}: the domain config is JSON but not an object")
        return None
    return config


def config_facts(config: dict | None) -> dict:
    """Domain name, type, uuid, vcpus and memory from a libxl JSON config."""
    out: dict = {}
    for key, (section, field) in CONFIG_FACTS:
        sec = (config or {}).get(section)
        value = sec.get(field) if isinstance(sec, dict) else None
        out[key] = value if isinstance(value, (str, int)) else None
    return out


def parse_libxl_header(win, offset: int, path: str, notes) -> dict:
    """The libxl stream header at ``offset``: its facts; errors for what we cannot read."""
    raw = win.read(offset, S.LIBXL_HEADER_SIZE)
    if len(raw) < S.LIBXL_HEADER_SIZE:
        raise ContainerError(f"{path}: the libxl stream header at offset {offset:#x} is cut "
                             f"short ({len(raw)} of {S.LIBXL_HEADER_SIZE} bytes)")
    hdr = S.LibxlHeader.parse(raw)
    if hdr.ident != S.LIBXL_IDENT:
        raise ContainerError(f"{path}: no libxl stream header at offset {offset:#x} (ident "
                             f"{hdr.ident:#018x}, expected {S.LIBXL_IDENT:#018x} 'LibxlFmt')")
    if hdr.version != S.LIBXL_VERSION:
        raise ContainerError(f"{path}: libxl stream header at offset {offset:#x}: version "
                             f"{hdr.version}, only {S.LIBXL_VERSION} is known")
    if hdr.options & S.LIBXL_OPT_BIG_ENDIAN:
        raise ContainerError(f"{path}: libxl stream header at offset {offset:#x}: a big-endian "
                             "stream: not supported")
    if hdr.options & ~S.LIBXL_OPTIONS_KNOWN:
        notes.add(F.SAVE_RESERVED, f"libxl stream header at offset {offset:#x}: reserved "
                  f"option bits {hdr.options & ~S.LIBXL_OPTIONS_KNOWN:#x} set")
    return {"version": hdr.version, "legacy": bool(hdr.options & S.LIBXL_OPT_LEGACY)}


def parse_libxc_headers(win, offset: int, path: str, notes) -> dict | None:
    """The libxc image and domain headers at ``offset``; None when the file ends inside."""
    size = S.LIBXC_IMAGE_HEADER_SIZE + S.LIBXC_DOMAIN_HEADER_SIZE
    raw = win.read(offset, size)
    if len(raw) < size:
        notes.add(F.SAVE_TRUNCATED, f"the libxc image/domain header at offset {offset:#x} is "
                  f"cut short ({len(raw)} of {size} bytes)")
        return None
    ihdr = S.LibxcImageHeader.parse(raw)
    where = f"{path}: libxc image header at offset {offset:#x}"
    if ihdr.marker != S.LIBXC_MARKER or ihdr.ident != S.LIBXC_IDENT:
        raise ContainerError(f"{where}: marker/ident {ihdr.marker:#x}/{ihdr.ident:#x}, "
                             f"expected {S.LIBXC_MARKER:#x}/{S.LIBXC_IDENT:#x} ('XENF')")
    if ihdr.version not in S.LIBXC_VERSIONS:
        raise ContainerError(f"{where}: version {ihdr.version}, only "
                             f"{'/'.join(map(str, S.LIBXC_VERSIONS))} are known")
    if ihdr.options & S.LIBXC_OPT_BIG_ENDIAN:
        raise ContainerError(f"{where}: a big-endian stream: not supported")
    if ihdr.options & ~S.LIBXC_OPTIONS_KNOWN or ihdr.reserved1 or ihdr.reserved2:
        notes.add(F.SAVE_RESERVED, f"libxc image header at offset {offset:#x}: reserved "
                  "options or fields not zero")
    doff = offset + S.LIBXC_IMAGE_HEADER_SIZE
    dhdr = S.LibxcDomainHeader.parse(raw[S.LIBXC_IMAGE_HEADER_SIZE:])
    where = f"{path}: libxc domain header at offset {doff:#x}"
    if dhdr.type == S.DHDR_TYPE_X86_HVM:
        raise ContainerError(f"{where}: an x86 HVM domain: HVM save files hold no PV p2m")
    if dhdr.type != S.DHDR_TYPE_X86_PV:
        raise ContainerError(f"{where}: unknown domain type {dhdr.type}")
    if dhdr.page_shift != S.LIBXC_PAGE_SHIFT:
        raise ContainerError(f"{where}: page_shift {dhdr.page_shift}, only "
                             f"{S.LIBXC_PAGE_SHIFT} is supported")
    if dhdr.reserved:
        notes.add(F.SAVE_RESERVED, f"libxc domain header at offset {doff:#x}: reserved field "
                  f"{dhdr.reserved:#x}")
    xen = None if dhdr.xen_major == 0 else (dhdr.xen_major, dhdr.xen_minor)
    return {"version": ihdr.version, "domain_type": dhdr.type, "xen_version": xen,
            "end": offset + size}
