"""``p2mdump walk``: rebuild the pfn -> mfn table from a memory image."""
from __future__ import annotations

import contextlib

import click

from .common import (EXIT_CODES_HELP, CLIError, Progress, flush_notes, note, output_stream,
                     write_json_file, ws_value)
from .treeopts import tree_options

FORMAT_HELP = """\b
Output formats (--format):
  ranges  one line per run of consecutive pfns of one kind whose mfns step
          by one: 0x00000-0x3ffff -> 0x100000-0x13ffff valid (default)
  table   one aligned row per pfn: pfn, raw entry, kind, mfn
  csv     the same with a header line: pfn,raw,kind,mfn (hex numbers)
  jsonl   one JSON object per pfn: {"pfn", "raw", "kind", "mfn"} (mfn null
          when missing)
  raw     the raw entries, little-endian words of the guest's width, pfn 0
          to max_pfn-1 and nothing else (byte-identical to the leaf slots)
  npy     the same array as a NumPy .npy file

\b
Kinds: valid (a machine frame), missing (INVALID_P2M_ENTRY, all ones),
identity (IDENTITY_FRAME_BIT set: 1:1 non-RAM), foreign (FOREIGN_FRAME_BIT
set: another domain's frame).  INVALID is tested before the flag bits; the
mfn is decoded like the kernel's pfn_to_mfn (both flag bits cleared).
"""


def summary_lines(result, limit: int = 20):
    s = result.summary()
    yield f"p2mdump: {s['source']}"
    yield f"  representation {s['representation']}"
    yield f"  word size    {s['word_size']} ({s['word_size_source']})"
    if s["top_mfn"] is not None:
        yield f"  top mfn      {s['top_mfn']:#x}"
    lst = s.get("list")
    if lst:
        yield f"  p2m_cr3      {lst['p2m_cr3']:#x} (root table MFN {lst['root_mfn']:#x}, " \
              f"{lst['paging']})"
        yield f"  p2m_vaddr    {lst['p2m_vaddr']:#x} ({lst['list_pages']} list pages)"
        if lst["p2m_generation"] is not None:
            yield f"  generation   {lst['p2m_generation']}"
        yield f"  table pages  {lst['page_table_pages']}"
        if lst["shared_pte_pages"]:
            yield "  shared PTE pages  " + ", ".join(f"{m:#x}" for m in lst["shared_pte_pages"])
    yield f"  max_pfn      {s['max_pfn']:#x} ({s['max_pfn']}, {s['max_pfn_source']})"
    for kind, n in s["counts"].items():
        yield f"  {kind:<12} {n}"
    yield f"  pages read   {s['pages_read']}"
    if s["mid_placeholder"] is not None:
        yield f"  mid placeholder   {s['mid_placeholder']:#x}"
    if s["leaf_placeholders"]:
        yield "  leaf placeholders " + ", ".join(f"{m:#x}" for m in s["leaf_placeholders"])
    info = sum(1 for f in result.findings if not f.is_warning)
    yield f"  findings     {s['warnings']} warning(s), {info} info"
    ordered = sorted(result.findings, key=lambda f: not f.is_warning)
    for f in ordered[:limit]:
        yield f"  {f}"
    if len(ordered) > limit:
        yield f"  ... and {len(ordered) - limit} more (see --summary-json)"


@click.command(epilog=FORMAT_HELP + "\n" + EXIT_CODES_HELP)
@click.argument("image", metavar="IMAGE")
@tree_options
@click.option("--format", "fmt", type=click.Choice(
    ["ranges", "table", "csv", "jsonl", "raw", "npy"]), default="ranges", show_default=True,
    help="Output format (see below).")
@click.option("-o", "--output", "output", default=None, metavar="PATH",
              help="Write the output here (atomically) instead of stdout.")
@click.option("--summary-json", default=None, metavar="PATH",
              help="Also write the summary and all findings as JSON ('-' for stdout).")
@click.option("--strict", is_flag=True, help="Exit 1 when the walk has warnings.")
@click.option("-q", "--quiet", is_flag=True, help="No summary on stderr.")
def walk(image, top_mfn, word_size, max_pfn, base, container, fmt, output, summary_json, strict,
         quiet, **list_opts):
    """Walk the p2m of IMAGE (tree or linear list) and print the pfn -> mfn table.

    IMAGE is a raw machine-memory image (machine frame M at file offset
    BASE + M*4096; a sparse file is fine: only the tree's pages are read), an
    `xl dump-core` file (frames by MFN through .xen_p2m; top MFN, max_pfn and
    word size read from the file, and the tree cross-checked against
    .xen_p2m) or an ELF core whose PT_LOAD addresses are machine addresses.
    The tree is found at --top-mfn; the linear list (every modern PV domU
    publishes only the list) through --p2m-cr3, --p2m-vaddr and --max-pfn,
    walking the guest's own page tables.  An xl dump-core file names either
    in its shared_info; when it names a list, the list is walked, as Xen's
    tools do (--representation overrides).
    Each distinct page is read once; damage below the top page
    (frames outside the image, MFN 0 pointers, shared pages that are not
    placeholders, duplicate machine frames, entries past max_pfn) is reported
    as findings and the rest of the table is still produced.  A summary goes
    to stderr.
    """
    from ..atomic import check_outputs, output_transaction
    from ..sidecar import sidecar_path

    check_outputs({"-o": output, "--summary-json": summary_json},
                  inputs=(image, sidecar_path(image)))
    with output_transaction():
        _walk(image, top_mfn, word_size, max_pfn, base, container, fmt, output, summary_json,
              strict, quiet, list_opts)


def _walk(image, top_mfn, word_size, max_pfn, base, container, fmt, output, summary_json,
          strict, quiet, list_opts):
    """The walk command's work; its outputs are committed together by the caller."""
    from ..sources import open_image
    from ..output import BINARY_FORMATS, write_table

    progress = Progress("walking leaves", enabled=not quiet)
    # --format raw into a file: the walk (tree or list) builds the table in the
    # output (frames copied by the kernel, see p2mdump.tablerows)
    direct = fmt == "raw" and output not in (None, "-")
    with contextlib.ExitStack() as outputs:
        out_fh = outputs.enter_context(output_stream(output, True)) if direct else None
        raw_fd = None
        if out_fh is not None:
            out_fh.flush()
            raw_fd = out_fh.fileno()
        with open_image(image, base=base, container=container) as source:
            from ..autowalk import walk_image
            from ..sidecar import read_sidecar

            side = read_sidecar(image) if top_mfn is None else None
            try:
                result, resolved = walk_image(source, top_mfn, ws_value(word_size), max_pfn,
                                              progress=progress, sidecar=side,
                                              check_table=False, raw_fd=raw_fd, **list_opts)
            finally:
                progress.close()
            if not quiet:
                for line in resolved.notes():
                    note(line)
        if result.word_size_source == "detected" and not quiet:
            how = ("from p2m_vaddr" if result.representation == "list"
                   else "from the top and mid pages")
            note(f"word size {result.word_size} detected {how}")
        if out_fh is not None:
            if not result.raw_written:
                write_table(result.table, out_fh, fmt)
        else:
            with output_stream(output, fmt in BINARY_FORMATS) as fh:
                write_table(result.table, fh, fmt)
    # after the output: the table is still warm in the cache for the checks
    # (checking while a thread writes it out was measured slower: bench/);
    # their findings show only in the summary, --summary-json and --strict
    if not quiet or summary_json or strict:
        result.check_table()
    if summary_json:
        data = result.summary()
        data["image"] = image
        data["container"] = source.container
        data["top_mfn_source"] = resolved.top_mfn_source
        data["representation"] = result.representation
        data["format"] = fmt
        write_json_file(summary_json, data)
    flush_notes()
    if not quiet:
        for line in summary_lines(result):
            click.echo(line, err=True)
    if strict and result.warnings():
        raise CLIError(f"{len(result.warnings())} warning(s) (--strict)", 1)
