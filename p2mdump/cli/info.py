"""``p2mdump info``: what a container says about itself, from its headers only."""
from __future__ import annotations

import json

import click

from ..sources.detect import CONTAINERS
from .common import EXIT_CODES_HELP, NUMBER

#: PT_LOAD rows printed in text mode (--json lists all)
MAX_ROWS = 40


def _hex(v):
    return "-" if v is None else f"{v:#x}"


def save_lines(info: dict):
    """The text form of an ``xl save`` file's info (see sources.xl_save.summary)."""
    yield f"image          {info['path']}"
    yield f"container      xl-save ({info['entry']} entry), file size {info['file_size']}"
    xl = info["xl_header"]
    if xl:
        yield (f"xl header      mandatory flags {xl['mandatory_flags']:#x}, optional data "
               f"{xl['optional_data_len']} bytes, config "
               f"{'JSON' if xl['json_config'] else 'xl syntax'}")
    cfg = info["config"]
    if cfg:
        mem = [f"{label} {cfg[k]} KiB" for label, k in (("max memory", "max_memkb"),
                                                       ("target", "target_memkb"))
               if cfg[k] is not None]
        yield (f"domain         {cfg['name'] or '-'} (type {cfg['type'] or '-'}, uuid "
               f"{cfg['uuid'] or '-'}, vcpus {_dash(cfg['max_vcpus'])}"
               + "".join(f", {m}" for m in mem) + ")")
    legacy = " (converted from a legacy stream)" if info["libxl_legacy"] else ""
    yield (f"streams        libxl v{_dash(info['libxl_version'])}{legacy}, libxc "
           f"v{_dash(info['libxc_version'])}, Xen {info['xen_version'] or 'unknown'}, "
           f"{info['domain_type'] or 'no domain header'}"
           + ("" if info["complete"] else " -- INCOMPLETE (see findings)"))
    ws = info["word_size"]
    yield (f"guest          {ws * 8}-bit, {info['pt_levels']} page-table levels" if ws else
           "guest          width unknown (no usable X86_PV_INFO)")
    yield "records        " + ", ".join(f"{k} {v}" for k, v in info["record_counts"].items())
    yield ("pages          " + ", ".join(f"{k} {v}" for k, v in info["page_counts"].items())
           + f"; {info['pages_with_data']} with data, {info['resent']} resent copies replaced")
    p2m = info["p2m_frames"]
    if p2m:
        yield (f"p2m frames     pfns {p2m['start_pfn']:#x}-{p2m['end_pfn']:#x} in {p2m['count']} "
               f"frame(s) (record #{p2m['record_index']} at offset {p2m['offset']:#x})")
    for v in info["vcpus"][:MAX_ROWS]:
        cr3 = f", cr3 pfn {v['cr3_pfn']:#x}" if "cr3_pfn" in v else ""
        yield f"vcpu {v['vcpu_id']:<9} {v['record']} ({v['length']} B){cr3}"
    if len(info["vcpus"]) > MAX_ROWS:
        yield f"               ... and {len(info['vcpus']) - MAX_ROWS} more (see --json)"
    si = info.get("shared_info")
    if si:
        yield "shared_info    " + ", ".join(f"{k} {v:#x}" for k, v in si.items())
        yield ("  note: saved as the guest had it: the frame-list-list and p2m_cr3 (a folded "
               "cr3 value) name source-host MFNs")
    for f in info["findings"]:
        yield f"  {f['severity']}: {f['kind']}: {f['message']}"


def _dash(v):
    return "-" if v is None else v


def text_lines(info: dict):
    c = info["container"]
    if c == "xl-save":
        yield from save_lines(info)
        return
    yield f"image          {info['path']}"
    yield f"container      {c}"
    if "file_size" in info or "size" in info:
        yield f"file size      {info.get('file_size', info.get('size'))}"
    if "machine" in info:
        yield (f"ELF            ELF{info['elf_class']}, e_type {info['e_type']}, e_machine "
               f"{info['e_machine']} ({info['machine']})")
    ws = info.get("word_size")
    yield f"word size      {ws if ws else 'unknown (auto-detected by walk)'}"
    if c == "raw":
        yield f"frames         {info.get('frame_limit')} (base {_hex(info.get('base', 0))})"
    hdr = info.get("header")
    if hdr:
        yield (f"header note    magic {hdr['magic']:#x} ({hdr['guest']}), vcpus {hdr['nr_vcpus']}, "
               f"pages {hdr['nr_pages']}, page size {hdr['page_size']}")
    if "format_version" in info:
        fv = info["format_version"]
        yield ("format version " + ("-" if fv is None else
                                    f"{fv:#x} ({fv >> 32}.{fv & 0xFFFFFFFF})"))
    xv = info.get("xen_version")
    if xv:
        yield (f"xen version    {xv['major']}.{xv['minor']}{xv['extra']} (changeset "
               f"{xv['changeset'] or '-'}, pagesize {xv['pagesize']}, virt_start "
               f"{xv['virt_start']:#x})")
        yield f"  capabilities {xv['capabilities']}"
        yield f"  compiled     {xv['compile_date']} by {xv['compile_by']}@{xv['compile_domain']}"
    if info.get("notes"):
        yield "notes          " + ", ".join(
            f"{n['name']}/{n['type_name']} ({n['descsz']} B)" for n in info["notes"])
    if info.get("sections"):
        yield "sections       idx name               type      offset        size          entsize"
        for s in info["sections"]:
            yield (f"               {s['index']:<3} {s['name'] or '-':<18} {s['type']:<9} "
                   f"{s['offset']:#012x}  {s['size']:#012x}  {s['entsize']}")
    origin = info.get("p2mdump_origin")
    if origin is not None:
        if "problem" in origin:
            yield f"P2MDUMP note   {origin['problem']}"
        else:
            yield (f"P2MDUMP note   p2mdump {origin['p2mdump_version']} extract of "
                   f"{origin['image']} ({origin['container']}, p2m from "
                   f"{origin['representation']})")
            yield (f"               {origin['word_size'] * 8}-bit guest, max_pfn "
                   f"{origin['max_pfn']:#x}, {origin['pfn_count']} pages"
                   + (f" ({origin['unreadable']} unreadable, zero-filled)"
                      if origin["unreadable"] else "")
                   + (f", p_vaddr = {origin['vaddr_base']:#x} + p_paddr"
                      if origin["vaddr_base"] else ", p_vaddr 0"))
    loads = info.get("pt_load")
    if loads is not None:
        yield f"PT_LOAD        {len(loads)} segment(s), {info.get('frames', 0)} frames"
        # an extract output's PT_LOADs hold guest pages at pfn*4096
        space = "physical" if origin is not None else "machine"
        for seg in loads[:MAX_ROWS]:
            end = seg["paddr"] + seg["memsz"] - 1
            tail = (f", zeros from {seg['paddr'] + seg['filesz']:#x}"
                    if seg["memsz"] > seg["filesz"] else "")
            vaddr = f", vaddr {seg['vaddr']:#x}" if seg.get("vaddr") else ""
            yield (f"               #{seg['index']:<3} {space} {seg['paddr']:#014x}-{end:#014x} "
                   f"at file {seg['offset']:#x}{vaddr}{tail}")
        if len(loads) > MAX_ROWS:
            yield f"               ... and {len(loads) - MAX_ROWS} more (see --json)"
    si = info.get("shared_info")
    if si:
        yield "shared_info    " + ", ".join(f"{k} {v:#x}" for k, v in si.items())
    if c == "xc-core":
        yield f"top mfn        {_hex(info.get('top_mfn'))}"
        yield f"max_pfn        {_hex(info.get('max_pfn'))}"
        if info.get("top_mfn_problem"):
            yield f"  note: {info['top_mfn_problem']}"
    for f in info.get("header_findings", []):
        yield f"  {f}"


@click.command(epilog=EXIT_CODES_HELP)
@click.argument("image", metavar="IMAGE")
@click.option("--container", type=click.Choice(CONTAINERS),
              default="auto", show_default=True, help="Image container (auto: detect).")
@click.option("--base", type=NUMBER, default=0, show_default=True,
              help="File offset of machine frame 0 in a raw image.")
@click.option("--json", "as_json", is_flag=True,
              help="One JSON object: container, word_size, top_mfn, max_pfn (null where "
                   "unknown) and everything else found.")
def info(image, container, base, as_json):
    """Print what IMAGE's container says: container kind, word size / ELF machine,
    the Xen notes (magic PV/HVM, vcpus, pages, page size, format version, Xen
    version), sections, PT_LOAD ranges and the shared_info arch fields
    (max_pfn, frame-list-list, p2m_cr3, p2m_vaddr, p2m_generation).

    Reads headers only: instant even on a multi-GiB dump.
    """
    from ..sources import open_image

    with open_image(image, base=base, container=container) as source:
        data = source.info()
        if source.container == "raw":
            data.update({"size": source.size, "base": source.base})
    for key in ("container", "word_size", "top_mfn", "max_pfn"):
        data.setdefault(key, None)
    if as_json:
        click.echo(json.dumps(data, indent=2, sort_keys=True))
        return
    for line in text_lines(data):
        click.echo(line)
