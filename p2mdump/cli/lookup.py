"""``p2mdump lookup``: pfn -> mfn, mfn -> pfns, guest <-> machine addresses,
guest virtual -> machine -> guest physical addresses.

A single ``--pfn`` / ``--paddr`` lookup reads only the pages on its path (of
the tree, or of a linear list: the page tables to the list page and that
page) and imports neither numpy nor construct; ``--mfn`` / ``--maddr`` and
``--from-file`` walk the whole table once, and answer as it goes by without
keeping it (a tree's or a list's: :class:`~p2mdump.lookup.QueryScan`).
``--vaddr`` translates through the guest's page tables (only the path) and,
when the address is mapped and a p2m is known, walks the p2m once for the
pfns of the machine frame.
"""
from __future__ import annotations

import json
import sys

import click

from . import options as opts
from .common import EXIT_CODES_HELP, option
from .running import CLIError
from .treeopts import open_source, resolve_tree, tree_options

QUERY_HELP = """\b
Queries (exactly one of):
  --pfn P      guest pfn -> machine frame (kind: valid, missing, identity,
               foreign); reads only the pages on its path: the top, mid and
               leaf page of a tree; of a linear list the page tables down to
               the one list page holding the entry, and that page
  --paddr A    guest physical address -> machine address (same path)
  --mfn M      machine frame -> the pfns mapping it (the inverse, m2p);
               walks the whole table
  --maddr A    machine address -> guest physical address(es)
  --vaddr V --cr3 C
               guest virtual address -> machine address through the guest's
               own page tables (C: its cr3 register value, folded on 32-bit
               guests as Xen keeps it), then -> guest physical address(es)
               through the p2m the options or the image name (walked once);
               with no p2m known the pfn is reported unknown
  --from-file F  many queries, one a line: "pfn N", "mfn N", "paddr A",
               "maddr A" or a bare pfn; '#' starts a comment; '-' is stdin.
               The whole table is walked once.

\b
--vaddr: the word size is --word-size, else the container's or the p2m's,
else 8 when V > 0xFFFFFFFF and 4 below (give --word-size 8 for a 64-bit
guest's user addresses); --five-level for LA57 guests.  An address that is
not mapped is an answer, not an error: "not mapped" and the entry that
stops it, exit 0.  A cr3 or address that cannot be the guest's (bits 32-63
set in a 32-bit guest's cr3, cr3 0, a non-canonical address) and a cr3
whose top table is not in the image are errors (exit 4).  A p2m the image
names but that cannot be walked leaves the pfn unknown; one given with
--top-mfn / --p2m-cr3 is an error.

\b
JSON (--json): a --pfn/--paddr query gives {"pfn", "kind", "mfn" (null when
missing), "raw", "path": [{"level", "mfn", "slot"}...], "problem",
"pages_read"}, plus "paddr", "maddr" for --paddr; on a linear list the path
is the page-table steps {"level": "pt-l4".."pt-l1", "mfn": table MFN,
"slot", "entry"} and then {"level": "list", "mfn": list page, "slot": word
index}, and a pfn at or past max_pfn is missing with a "problem".  --mfn
gives {"mfn", "pfns": [...], "foreign_pfns": [...]}, plus "maddr", "paddrs"
for --maddr; --from-file gives a list of those, each with "query".  --vaddr
gives {"vaddr", "cr3", "root_mfn", "paging", "maddr" and "mfn" (null when
not mapped), "page_size", "frame_in_image", "path": [{"level", "mfn",
"slot", "entry"}...], "problem", "pfns", "foreign_pfns", "paddrs" (null
when unknown), "p2m" ("tree", "list" or null), "pfn_problem"}.
"""


@click.command(epilog=QUERY_HELP + "\n" + EXIT_CODES_HELP)
@click.argument("image", metavar="IMAGE")
@tree_options
@option(opts.LOOKUP_PFN, help="Guest pfn to translate.")
@option(opts.LOOKUP_MFN, help="Machine frame to translate back.")
@option(opts.LOOKUP_PADDR, help="Guest physical address.")
@option(opts.LOOKUP_MADDR, help="Machine address.")
@option(opts.LOOKUP_VADDR, help="Guest virtual address to translate (with --cr3).")
@option(opts.LOOKUP_CR3,
        help="The guest's cr3 register value for --vaddr: the page tables to "
             "translate through (folded on 32-bit guests).")
@option(opts.LOOKUP_FROM_FILE, metavar="FILE",
        help="Many queries, one a line ('-' for stdin).")
@option(opts.LOOKUP_JSON, help="JSON output.")
def lookup(image, top_mfn, word_size, max_pfn, base, container, pfn, mfn, paddr, maddr, vaddr,
           cr3, from_file, as_json, **list_opts):
    """Translate between guest (pfn, physical address) and machine (mfn,
    machine address) through the p2m (tree or linear list) of IMAGE, and guest
    virtual addresses through the guest's page tables."""
    given = [n for n, v in (("--pfn", pfn), ("--mfn", mfn), ("--paddr", paddr),
                            ("--maddr", maddr), ("--vaddr", vaddr), ("--from-file", from_file))
             if v is not None]
    if len(given) != 1:
        raise CLIError("give exactly one of --pfn, --mfn, --paddr, --maddr, --vaddr, "
                       "--from-file" + (f" (got {', '.join(given)})" if given else ""), 2)
    if (vaddr is None) != (cr3 is None):
        raise CLIError("--vaddr needs --cr3 (the guest's cr3 register value)" if cr3 is None
                       else "--cr3 goes with --vaddr", 2)
    queries = None
    if from_file is not None:
        queries = _read_queries(from_file)
    with open_source(image, base, container) as source:
        if vaddr is not None:
            results = [_vaddr_lookup(source, image, vaddr, cr3, top_mfn, word_size, max_pfn,
                                     list_opts)]
        elif pfn is not None or paddr is not None:
            r = resolve_tree(source, image, top_mfn, word_size, max_pfn, **list_opts)
            path = _path_lookup(source, r)
            result = path.pfn(pfn) if pfn is not None else path.paddr(paddr)
            result["pages_read"] = path.pages_read
            results = [result]
        else:
            from ..autowalk import can_stream
            from ..lookup import QueryScan, TableLookup

            r = resolve_tree(source, image, top_mfn, word_size, max_pfn, **list_opts)
            asked = queries if queries is not None else (
                [("mfn", mfn)] if mfn is not None else [("maddr", maddr)])
            # the answers are picked out as the walk reads the table, which
            # is not kept (a tree's or a list's)
            scan = QueryScan(asked) if can_stream(r) else None
            tl = TableLookup(_walk_table(source, r, scan), max_pfn=r.max_pfn, scanned=scan)
            results = tl.many(asked)
            if queries is None:
                del results[0]["query"]
    from ..lookup import format_result

    if as_json:
        data = results if from_file is not None else results[0]
        click.echo(json.dumps(data, indent=2, sort_keys=True))
    else:
        click.echo("\n".join(format_result(r) for r in results))


def _path_lookup(source, r):
    """The single-lookup reader of the resolved p2m: only the path is read."""
    from ..autowalk import SAVED
    from ..lookup import ListPathLookup, PathLookup

    if r.representation == SAVED:
        from ..savelookup import SavedPathLookup

        return SavedPathLookup(source.stream, word_size=r.word_size, max_pfn=r.max_pfn)
    if r.representation == "list":
        return ListPathLookup(source, r.p2m_cr3, r.p2m_vaddr, word_size=r.word_size,
                              max_pfn=r.max_pfn, five_level=r.five_level)
    return PathLookup(source, r.top_mfn, word_size=r.word_size, max_pfn=r.max_pfn)


def _walk_table(source, r, stream=None):
    """The whole table of the resolved p2m (for the inverse).  A tree is
    walked to --max-pfn when one is given, else to its last entry (past a
    max_pfn the container or sidecar claims), so no mapping is overlooked.
    The whole-table checks (duplicate frames) are skipped: a lookup does not
    report findings.  ``stream``: the table is handed to it and not kept
    (tree and list, :func:`p2mdump.walker.walk`)."""
    from ..autowalk import walk_resolved
    from ..walker import walk

    if r.representation != "tree":
        return walk_resolved(source, r, check_table=False, stream=stream)
    max_pfn = r.max_pfn if r.max_pfn_source == "given" else None
    return walk(source, r.top_mfn, word_size=r.word_size, max_pfn=max_pfn, check_table=False,
                stream=stream)


def _vaddr_lookup(source, image, vaddr, cr3, top_mfn, word_size, max_pfn, list_opts) -> dict:
    """--vaddr: translate, then find the pfns through the p2m when one is known.

    A p2m the user names (--top-mfn, --p2m-cr3, --p2m-vaddr, --representation)
    must work; one only the image names is best effort: when it is missing or
    cannot be walked the pfn is unknown and ``pfn_problem`` says why."""
    from ..autowalk import TopMfnRequired
    from ..errors import P2MDumpError, TreeError
    from ..lookup import TableLookup, add_pfns, vaddr_lookup

    if getattr(source, "is_hvm", False):
        raise TreeError(f"{source.describe()}: HVM guest: its page tables hold guest frames, "
                        "not machine frames; --vaddr reads a PV guest's page tables")
    if getattr(source, "saved_p2m", False):
        raise TreeError(f"{source.describe()}: --vaddr is not supported on xl save streams: the "
                        "saver rewrote the guest's page tables to pfns, so they translate "
                        "guest virtual addresses to pfns, not machine frames")
    asked = (top_mfn is not None or list_opts["p2m_cr3"] is not None
             or list_opts["p2m_vaddr"] is not None or list_opts["representation"] != "auto")
    r, why = None, None
    try:
        r = resolve_tree(source, image, top_mfn, word_size, max_pfn, **list_opts)
    except TopMfnRequired:
        if asked:
            raise
        why = ("no p2m is known: give --top-mfn, or --p2m-cr3, --p2m-vaddr and --max-pfn "
               "of a linear list")
    except P2MDumpError as exc:
        if asked:
            raise
        why = str(exc)
    ws = int(word_size) if word_size != "auto" else _guest_word_size(source, r, vaddr)
    result = vaddr_lookup(source, cr3, vaddr, ws, list_opts["five_level"])
    if result["mfn"] is None:
        return result
    if r is None:
        result["pfn_problem"] = why
        return result
    try:
        walked = _walk_table(source, r)
    except P2MDumpError as exc:
        if asked:
            raise
        result["pfn_problem"] = f"the image's p2m cannot be walked: {exc}"
        return result
    return add_pfns(result, TableLookup(walked, max_pfn=r.max_pfn), r.representation)


def _guest_word_size(source, r, vaddr) -> int:
    """The word size for --vaddr's page-table walk when --word-size is auto:
    the container's or sidecar's, else the p2m's (guessed from a list's
    address, detected from a tree's top page), else from the address."""
    from ..errors import P2MDumpError
    from ..lookup import PathLookup
    from ..paging import word_size_from_vaddr

    hint = getattr(source, "word_size_hint", None)
    if hint in (4, 8):
        return hint
    if r is not None:
        if r.word_size in (4, 8):
            return r.word_size
        if r.representation == "list":
            return word_size_from_vaddr(r.p2m_vaddr)
        try:
            return PathLookup(source, r.top_mfn).word_size
        except P2MDumpError:
            pass  # the walk of that tree will say what is wrong with it
    return word_size_from_vaddr(vaddr)


#: largest --from-file accepted (about a million queries)
QUERY_FILE_LIMIT = 16 << 20


def _read_queries(path: str):
    from ..lookup import parse_query_file

    from ..boundedread import TooLarge, read_limited

    try:
        if path == "-":
            lines = read_limited(sys.stdin, QUERY_FILE_LIMIT, "standard input").splitlines()
        else:
            with open(path, encoding="utf-8") as fh:
                lines = read_limited(fh, QUERY_FILE_LIMIT, path).splitlines()
    except TooLarge as exc:
        raise CLIError(f"{exc} (split the queries into smaller files)", 2) from None
    except FileNotFoundError:
        raise CLIError(f"{path}: no such file", 2) from None
    except IsADirectoryError:
        raise CLIError(f"{path}: is a directory", 2) from None
    except UnicodeDecodeError:
        raise CLIError(f"{path}: not a text file of queries", 2) from None
    except OSError as exc:
        raise CLIError(f"{path}: cannot read: {exc.strerror}", 2) from None
    try:
        queries = parse_query_file(lines)
    except ValueError as exc:
        raise CLIError(f"{path}: {exc}", 2) from None
    if not queries:
        raise CLIError(f"{path}: no queries in the file", 2)
    return queries
