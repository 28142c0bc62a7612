"""``p2mdump diff A B``: which pfns changed mapping or kind, or were added/removed."""
from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING

import click

from .common import EXIT_CODES_HELP, NUMBER
from .running import CLIError

if TYPE_CHECKING:
    from ..table import P2MTable

DIFF_HELP = """\b
A and B are each an image (its tree at --top-mfn-a / --top-mfn-b, or
--top-mfn for both, or the container's hint / generator sidecar) or a saved
table: a .npy file, or raw words as written by `walk --format raw`
(.raw, .truth, .p2m, .tbl; needs --word-size unless the other side tells).
One image at two top MFNs: `p2mdump diff IMG IMG --top-mfn-a X --top-mfn-b Y`.

\b
Output: one line per range of pfns, "FIRST-LAST CLASS: A-side -> B-side",
CLASS being mapping (same kind, other mfn), kind, added (missing in A) or
removed (missing in B); --json gives {"same", "counts", "changes": [{"change",
"first", "last", "count", "a": {"kind", "mfn"}, "b": {...}}]}.
Exit 0 when the tables are the same, 1 when they differ (like diff(1)).
"""

RAW_SUFFIXES = (".raw", ".truth", ".p2m", ".tbl")


def _kind_of(path: str, fmt: str) -> str:
    if fmt != "auto":
        return fmt
    if path.endswith(".npy"):
        return "npy"
    if path.endswith(RAW_SUFFIXES):
        return "raw"
    return "image"


def _load(path, fmt, top_mfn, word_size, base, container) -> tuple[P2MTable, str]:
    """(P2MTable, description)"""
    from ..diff import load_table

    if fmt in ("npy", "raw"):
        ws = None if word_size == "auto" else int(word_size)
        return load_table(path, word_size=ws, fmt=fmt), path
    from ..autowalk import walk_resolved
    from .treeopts import open_source, resolve_tree

    with open_source(path, base, container) as source:
        r = resolve_tree(source, path, top_mfn, word_size, None)
        res = walk_resolved(source, r, check_table=False)
    return res.table, _describe(path, res)


def _describe(path: str, res) -> str:
    """Which p2m of ``path`` was walked, for the diff's header lines."""
    if res.representation == "list":
        return f"{path} @ list p2m_vaddr {res.list_info['p2m_vaddr']:#x}"
    if res.top_mfn is None:
        return f"{path} @ {res.representation}"
    return f"{path} @ top MFN {res.top_mfn:#x}"


def _diff_images(a, b, top_a, top_b, word_size, base, container):
    """(DiffResult, description of A, of B) of two images: trees and lists
    are compared as their two walks stream side by side (no table held);
    anything else is walked whole, A first."""
    from ..autowalk import can_stream, walk_resolved
    from ..diff import diff as do_diff, diff_streams
    from .treeopts import open_source, resolve_tree

    with open_source(a, base, container) as sa:
        ra = resolve_tree(sa, a, top_a, word_size, None)
        res_a = None if can_stream(ra) else walk_resolved(sa, ra, check_table=False)
        with open_source(b, base, container) as sb:
            rb = resolve_tree(sb, b, top_b, word_size, None)
            if res_a is None and can_stream(rb):
                result, res_a, res_b = diff_streams(
                    lambda s: walk_resolved(sa, ra, check_table=False, stream=s),
                    lambda s: walk_resolved(sb, rb, check_table=False, stream=s))
                return result, _describe(a, res_a), _describe(b, res_b)
            if res_a is None:
                res_a = walk_resolved(sa, ra, check_table=False)
            res_b = walk_resolved(sb, rb, check_table=False)
    return do_diff(res_a.table, res_b.table), _describe(a, res_a), _describe(b, res_b)


@click.command(epilog=DIFF_HELP + "\n" + EXIT_CODES_HELP)
@click.argument("a", metavar="A")
@click.argument("b", metavar="B")
@click.option("--top-mfn", type=NUMBER, default=None, help="Top MFN of both images.")
@click.option("--top-mfn-a", type=NUMBER, default=None, help="Top MFN in A.")
@click.option("--top-mfn-b", type=NUMBER, default=None, help="Top MFN in B.")
@click.option("--word-size", type=click.Choice(["auto", "4", "8"]), default="auto",
              show_default=True, help="Word size (needed for raw tables).")
@click.option("--format-a", type=click.Choice(["auto", "image", "npy", "raw"]), default="auto",
              show_default=True, help="What A is.")
@click.option("--format-b", type=click.Choice(["auto", "image", "npy", "raw"]), default="auto",
              show_default=True, help="What B is.")
@click.option("--base", type=NUMBER, default=0, show_default=True,
              help="File offset of machine frame 0 in raw images.")
@click.option("--container", type=click.Choice(["auto", "raw"]), default="auto",
              show_default=True, help="Image container.")
@click.option("--json", "as_json", is_flag=True, help="JSON output.")
def diff(a, b, top_mfn, top_mfn_a, top_mfn_b, word_size, format_a, format_b, base, container,
         as_json):
    """Compare the p2m tables of A and B as pfn ranges."""
    fa, fb = _kind_of(a, format_a), _kind_of(b, format_b)
    ta = top_mfn_a if top_mfn_a is not None else top_mfn
    tb = top_mfn_b if top_mfn_b is not None else top_mfn
    for name, t, f in (("--top-mfn-a", top_mfn_a, fa), ("--top-mfn-b", top_mfn_b, fb)):
        if t is not None and f != "image":
            raise CLIError(f"{name} is only for an image, not a saved {f} table", 2)
    if fa == fb == "image":
        result, da, db = _diff_images(a, b, ta, tb, word_size, base, container)
    else:
        result, da, db = _diff_tables(a, b, fa, fb, ta, tb, word_size, base, container)
    if as_json:
        data = result.to_dict()
        data["a"], data["b"] = da, db
        click.echo(json.dumps(data, indent=2, sort_keys=True))
    else:
        out = sys.stdout
        out.write(f"--- A: {da} ({result.a_len:#x} pfns)\n")
        out.write(f"+++ B: {db} ({result.b_len:#x} pfns)\n")
        for text in result.lines():
            out.write(text)
        if result.same:
            out.write("same: no pfn differs\n")
        else:
            out.write("differs: " + ", ".join(f"{n} pfn(s) {k}"
                                             for k, n in result.counts.items() if n) + "\n")
        out.flush()
    if not result.same:
        raise click.exceptions.Exit(1)


def _diff_tables(a, b, fa, fb, ta, tb, word_size, base, container):
    """(DiffResult, description of A, of B) when a side is a saved table."""
    from ..diff import diff as do_diff

    # a raw table takes its word size from the other side when not given
    first, second = ((b, fb, tb, "b"), (a, fa, ta, "a")) if fa == "raw" and word_size == "auto" \
        else ((a, fa, ta, "a"), (b, fb, tb, "b"))
    tables: dict[str, tuple[P2MTable, str]] = {}
    for path, fmt, top, key in (first, second):
        ws = word_size
        if fmt == "raw" and ws == "auto":
            if not tables:
                raise CLIError(f"{path}: a raw table needs --word-size 4 or 8", 2)
            ws = str(next(iter(tables.values()))[0].layout.word_size)
        tables[key] = _load(path, fmt, top, ws, base, container)
    (ta_tab, da), (tb_tab, db) = tables["a"], tables["b"]
    return do_diff(ta_tab, tb_tab), da, db
