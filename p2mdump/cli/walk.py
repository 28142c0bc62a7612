"""``p2mdump walk``: rebuild the pfn -> mfn table from a memory image."""
from __future__ import annotations

import click

from . import options as opts
from .common import EXIT_CODES_HELP, option
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


@click.command(epilog=FORMAT_HELP + "\n" + EXIT_CODES_HELP)
@click.argument("image", metavar="IMAGE")
@tree_options
@option(opts.WALK_FORMAT, show_default=True, help="Output format (see below).")
@option(opts.WALK_OUTPUT, metavar="PATH",
        help="Write the output here (atomically) instead of stdout.")
@option(opts.WALK_SUMMARY_JSON, metavar="PATH",
        help="Also write the summary and all findings as JSON ('-' for stdout).")
@option(opts.WALK_STRICT, help="Exit 1 when the walk has warnings.")
@option(opts.WALK_QUIET, help="No summary on stderr.")
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
    from .walkrun import walk as run

    run(image, top_mfn, word_size, max_pfn, base, container, fmt, output, summary_json, strict,
        quiet, **list_opts)
