"""``p2mdump lookup``: pfn -> mfn, mfn -> pfns, guest <-> machine addresses.

A single ``--pfn`` / ``--paddr`` lookup reads only the three pages on its
path and imports neither numpy nor construct; ``--mfn`` / ``--maddr`` and
``--from-file`` walk the whole table once.
"""
from __future__ import annotations

import json
import sys

import click

from .common import EXIT_CODES_HELP, NUMBER, CLIError
from .treeopts import open_source, resolve_tree, tree_options

QUERY_HELP = """\b
Queries (exactly one of):
  --pfn P      guest pfn -> machine frame (kind: valid, missing, identity,
               foreign); reads only the top, mid and leaf page on the path
  --paddr A    guest physical address -> machine address (same path)
  --mfn M      machine frame -> the pfns mapping it (the inverse, m2p);
               walks the whole table
  --maddr A    machine address -> guest physical address(es)
  --from-file F  many queries, one a line: "pfn N", "mfn N", "paddr A",
               "maddr A" or a bare pfn; '#' starts a comment; '-' is stdin.
               The whole table is walked once.

\b
JSON (--json): a --pfn/--paddr query gives {"pfn", "kind", "mfn" (null when
missing), "raw", "path": [{"level", "mfn", "slot"}...], "problem"}, plus
"paddr", "maddr" for --paddr; --mfn gives {"mfn", "pfns": [...],
"foreign_pfns": [...]}, plus "maddr", "paddrs" for --maddr; --from-file gives
a list of those, each with "query".
"""


@click.command(epilog=QUERY_HELP + "\n" + EXIT_CODES_HELP)
@click.argument("image", metavar="IMAGE")
@tree_options
@click.option("--pfn", type=NUMBER, default=None, help="Guest pfn to translate.")
@click.option("--mfn", type=NUMBER, default=None, help="Machine frame to translate back.")
@click.option("--paddr", type=NUMBER, default=None, help="Guest physical address.")
@click.option("--maddr", type=NUMBER, default=None, help="Machine address.")
@click.option("--from-file", "from_file", default=None, metavar="FILE",
              help="Many queries, one a line ('-' for stdin).")
@click.option("--json", "as_json", is_flag=True, help="JSON output.")
def lookup(image, top_mfn, word_size, max_pfn, base, container, pfn, mfn, paddr, maddr,
           from_file, as_json, **list_opts):
    """Translate between guest (pfn, physical address) and machine (mfn,
    machine address) through the p2m tree of IMAGE."""
    given = [n for n, v in (("--pfn", pfn), ("--mfn", mfn), ("--paddr", paddr),
                            ("--maddr", maddr), ("--from-file", from_file)) if v is not None]
    if len(given) != 1:
        raise CLIError("give exactly one of --pfn, --mfn, --paddr, --maddr, --from-file"
                       + (f" (got {', '.join(given)})" if given else ""), 2)
    for name, v in (("--pfn", pfn), ("--mfn", mfn), ("--paddr", paddr), ("--maddr", maddr)):
        if v is not None and v < 0:
            raise CLIError(f"{name} must not be negative (got {v})", 2)
    queries = None
    if from_file is not None:
        queries = _read_queries(from_file)
    with open_source(image, base, container) as source:
        r = resolve_tree(source, image, top_mfn, word_size, max_pfn, **list_opts)
        top, ws, mp = r.top_mfn, r.word_size, r.max_pfn
        if r.representation == "tree" and (pfn is not None or paddr is not None):
            from ..lookup import PathLookup

            path = PathLookup(source, top, word_size=ws, max_pfn=mp)
            result = path.pfn(pfn) if pfn is not None else path.paddr(paddr)
            result["pages_read"] = path.pages_read
            results = [result]
        else:
            from ..autowalk import walk_resolved
            from ..lookup import TableLookup
            from ..walker import walk

            walked = walk_resolved(source, r) if r.representation == "list" else \
                walk(source, top, word_size=ws, max_pfn=None)
            tl = TableLookup(walked, max_pfn=mp)
            if queries is None and (pfn is not None or paddr is not None):
                queries = [("pfn", pfn)] if pfn is not None else [("paddr", paddr)]
                results = tl.many(queries)
                del results[0]["query"]
                queries = None
            elif queries is None:
                queries = [("mfn", mfn)] if mfn is not None else [("maddr", maddr)]
                results = tl.many(queries)
                del results[0]["query"]
            else:
                results = tl.many(queries)
    from ..lookup import format_result

    if as_json:
        data = results if queries is not None and from_file is not None else results[0]
        click.echo(json.dumps(data, indent=2, sort_keys=True))
    else:
        click.echo("\n".join(format_result(r) for r in results))


def _read_queries(path: str):
    from ..lookup import parse_query_file

    try:
        if path == "-":
            lines = sys.stdin.read().splitlines()
        else:
            with open(path, encoding="utf-8") as fh:
                lines = fh.read().splitlines()
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
