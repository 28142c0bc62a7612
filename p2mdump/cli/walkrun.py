"""What ``p2mdump walk`` does once its options are known (the click
command, :mod:`p2mdump.cli.walk`, and the console script's fast path both
run :func:`walk`).  Click-free: click is imported only to print.
"""
from __future__ import annotations

import contextlib

from .options import ws_value
from .outputs import Progress, output_stream, with_outputs, write_json_file
from .running import CLIError, echo_err, flush_notes, note


def walk(image, top_mfn, word_size, max_pfn, base, container, fmt, output, summary_json, strict,
         quiet, **list_opts):
    """Walk the p2m of IMAGE and write the table (see ``p2mdump walk --help``)."""
    with_outputs(image, {"-o": output, "--summary-json": summary_json},
                 lambda: _walk(image, top_mfn, word_size, max_pfn, base, container, fmt, output,
                               summary_json, strict, quiet, list_opts))


def _walk(image, top_mfn, word_size, max_pfn, base, container, fmt, output, summary_json,
          strict, quiet, list_opts):
    """The walk command's work; its outputs are committed together by the caller."""
    from ..sources import open_image
    from ..output import BINARY_FORMATS, TableStream, write_table

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
        stream = None
        with open_image(image, base=base, container=container) as source:
            from ..autowalk import (add_container_findings, can_stream, cross_checked, resolve,
                                    walk_resolved)
            from ..sidecar import read_sidecar

            side = read_sidecar(image) if top_mfn is None else None
            resolved = resolve(source, top_mfn, ws_value(word_size), max_pfn, side,
                               **list_opts)
            # every other output of a tree or a list is written as the walk
            # reads the table, which is then not kept (an xl dump-core's
            # cross-check against .xen_p2m needs it whole)
            if out_fh is None and can_stream(resolved, source):
                fh = outputs.enter_context(output_stream(output, fmt in BINARY_FORMATS))
                stream = TableStream(fh, fmt)
            try:
                # the table is scanned for the summary, the checks or the cross-check
                scanned = not quiet or bool(summary_json) or strict or cross_checked(source)
                result = walk_resolved(source, resolved, progress=progress, check_table=False,
                                       raw_fd=raw_fd, stream=stream, scan_ahead=scanned)
            finally:
                progress.close()
            add_container_findings(source, result)
            if not quiet:
                for line in resolved.notes():
                    note(line)
        if result.word_size_source == "detected" and not quiet:
            how = ("from p2m_vaddr" if result.representation == "list"
                   else "from the top and mid pages")
            note(f"word size {result.word_size} detected {how}")
        if stream is not None:
            stream.finish(result.table)
        elif out_fh is not None:
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
            echo_err(line)
    if strict and result.warnings():
        raise CLIError(f"{len(result.warnings())} warning(s) (--strict)", 1)


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
