"""``p2mdump extract``: the guest's pseudo-physical memory, in pfn order."""
from __future__ import annotations

import click

from .common import EXIT_CODES_HELP, NUMBER
from .options import ws_value
from .outputs import Progress, with_outputs, write_json_file
from .running import flush_notes, note
from .treeopts import tree_options


def _vaddr_base(ctx, param, value):
    """--vaddr-base: what can be checked before the image is read."""
    from ..extract import vaddr_base_problem

    problem = None if value is None else vaddr_base_problem(value)
    if problem:
        raise click.BadParameter(f"{value:#x}: {problem}", ctx, param)
    return value


@click.command(epilog=EXIT_CODES_HELP)
@click.argument("image", metavar="IMAGE")
@click.option("-o", "--output", required=True, metavar="GUEST",
              help="The output file (written atomically).")
@click.option("--format", "fmt", type=click.Choice(["raw", "elf"]), default="raw",
              show_default=True,
              help="raw: page of pfn P at offset P*4096, holes sparse; elf: an ELF64 core "
                   "as kdump writes them: a PT_NOTE first (a P2MDUMP note naming the "
                   "source), then one PT_LOAD per run of consecutive pfns (p_paddr = "
                   "pfn*4096, p_vaddr = --vaddr-base + p_paddr).")
@click.option("--vaddr-base", type=NUMBER, default=None, callback=_vaddr_base, metavar="ADDR",
              help="ELF only: p_vaddr of each PT_LOAD is ADDR + p_paddr, the guest kernel's "
                   "direct map, so that gdb and drgn read kernel virtual addresses. Default "
                   "for a 64-bit guest 0xffff888000000000 (x86-64 Linux 4.20 and later, "
                   "4-level paging, no memory KASLR; Linux 2.6.27-4.19 used "
                   "0xffff880000000000; with CONFIG_RANDOMIZE_MEMORY give the boot's "
                   "page_offset_base); for a 32-bit guest 0, as i386 Linux maps only its "
                   "low memory at 0xC0000000. 0: every p_vaddr 0. Must be page-aligned, "
                   "canonical, and keep every page in the guest's address space.")
@tree_options
@click.option("--summary-json", default=None, metavar="PATH",
              help="Also write the report (counts, findings) as JSON ('-' for stdout).")
@click.option("-q", "--quiet", is_flag=True, help="No summary on stderr.")
def extract(image, output, fmt, vaddr_base, top_mfn, word_size, max_pfn, base, container,
            summary_json, quiet, **list_opts):
    """Write the memory of the guest whose p2m is in IMAGE to GUEST, in pfn order,
    so that tools knowing nothing about Xen (Volatility, crash, a hex editor)
    can read it: byte pfn*4096 of a raw GUEST holds the guest page of pfn.

    pfn -> mfn comes from walking the guest's p2m tree or linear list
    (--top-mfn, --p2m-cr3/--p2m-vaddr, or the shared_info of an xl dump-core
    file); for an xl dump-core file whose guest publishes neither a usable
    tree nor a usable list, the dump's own .xen_p2m pairs are used instead.
    Missing, identity and foreign pfns, and valid pfns whose frame is not in
    IMAGE, are not copied; the summary lists them.
    """
    if vaddr_base is not None and fmt != "elf":
        raise click.BadParameter("applies to --format elf only", param_hint="--vaddr-base")

    with_outputs(image, {"-o": output, "--summary-json": summary_json},
                 lambda: _extract(image, output, fmt, vaddr_base, top_mfn, word_size, max_pfn,
                                  base, container, summary_json, quiet, list_opts))


def _extract(image, output, fmt, vaddr_base, top_mfn, word_size, max_pfn, base, container,
             summary_json, quiet, list_opts):
    """The extract command's work; its outputs are committed together by the caller."""
    from ..errors import TreeError
    from ..extract import Plan, extract as do_extract
    from ..sources import open_image

    progress = Progress("copying pages", enabled=not quiet)
    walk_summary = None
    with open_image(image, base=base, container=container) as source:
        plan = None
        from ..autowalk import walk_image
        from ..sidecar import read_sidecar

        side = read_sidecar(image) if top_mfn is None else None
        try:
            result, resolved = walk_image(source, top_mfn, ws_value(word_size), max_pfn,
                                          sidecar=side, **list_opts)
        except TreeError as exc:
            if (top_mfn is not None or list_opts.get("p2m_cr3") is not None
                    or not hasattr(source, "pairs") or source.is_hvm):
                raise
            if not quiet:
                note(f"{exc}; using the dump's .xen_p2m pairs instead")
            pf, gm = source.pairs()
            plan = Plan.from_pairs(pf, gm, max_pfn if max_pfn is not None
                                   else source.max_pfn_hint or 0, source.word_size,
                                   max_pfn_claimed=max_pfn is None)
        else:
            if not quiet:
                for line in resolved.notes():
                    note(line)
            if getattr(source, "saved_p2m", False):
                from ..savewalk import extract_plan

                plan = extract_plan(result.table, source.stream)
            else:
                plan = Plan.from_table(result.table, result.representation)
            walk_summary = result.summary()
            warnings = result.warnings()
            if warnings and not quiet:
                note(f"the walk has {len(warnings)} warning(s):"
                     + "".join(f"\n  {f}" for f in warnings[:10]))
        try:
            report = do_extract(source, plan, output, fmt, progress=progress,
                                vaddr_base=vaddr_base)
        finally:
            progress.close()
    flush_notes()
    if not quiet:
        for line in report.lines():
            click.echo(line, err=True)
    if summary_json:
        data = report.to_dict()
        data["image"] = image
        data["walk"] = walk_summary
        write_json_file(summary_json, data)
