"""``p2mdump verify``: can this tree be trusted?  Exit 0 only when nothing is wrong."""
from __future__ import annotations

import json

import click

from .common import EXIT_CODES_HELP
from .outputs import Progress
from .treeopts import open_source, resolve_walks, tree_options

VERIFY_HELP = """\b
Checks: every finding of the walk (pointers to MFN 0 or to frames outside
the image, a mid or leaf page reachable from two slots outside the
placeholders, placeholder pages whose content is not what a placeholder
holds, pages used at two levels, duplicate machine frames, non-missing
entries past --max-pfn), plus identity entries that are not their own pfn,
entries with both flag bits, foreign entries (listed, info) and foreign
entries naming the guest's own frames, and leaf pages that decode as mostly
garbage.

A guest that publishes both the tree and the linear list (shared_info names
a top MFN and a p2m_cr3, a sidecar of a "both" guest, or --top-mfn given
with --p2m-cr3/--p2m-vaddr) has both walked and checked, and the two tables
compared: tree-list-mismatch names every pfn where they differ (as ranges),
tree-list-extent the pfns only one covers (the tree ends at 2^27 pfns on
64-bit).  --representation tree|list checks only that one.

\b
Exit: 0 nothing is wrong (info findings only), 1 something is (warnings),
2 and up: errors (see below).  --json prints {"ok", "warnings", "top_mfn",
"word_size", "max_pfn", "counts", ..., "findings": [{"kind", "severity",
"level", "slot", "mfn", "parent_mfn", "count", "pfn_first", "pfn_last",
"message", "examples", "walk"}], "walks": {"list": {...}, "tree":
{...}}, "compared"}.
"""


@click.command(epilog=VERIFY_HELP + "\n" + EXIT_CODES_HELP)
@click.argument("image", metavar="IMAGE")
@tree_options
@click.option("--json", "as_json", is_flag=True, help="JSON output.")
@click.option("-q", "--quiet", is_flag=True, help="Only the verdict line (text mode).")
def verify(image, top_mfn, word_size, max_pfn, base, container, as_json, quiet, **list_opts):
    """Check the p2m of IMAGE (tree or linear list) and report everything that looks wrong."""
    from ..verify import verify as do_verify

    progress = Progress("verifying", enabled=not quiet and not as_json)
    with open_source(image, base, container) as source:
        todo = resolve_walks(source, image, top_mfn, word_size, max_pfn, **list_opts)
        try:
            report = do_verify(source, todo[0], progress=progress,
                               also=todo[1] if len(todo) > 1 else None)
        finally:
            progress.close()
    where = {r.representation: r.list_source if r.representation == "list"
             else r.top_mfn_source for r in todo}
    if as_json:
        data = report.to_dict()
        data["image"] = image
        data["top_mfn_source"] = where[report.walk.representation]
        click.echo(json.dumps(data, indent=2, sort_keys=True))
    else:
        warn = report.warnings()
        info = len(report.findings) - len(warn)
        if not quiet:
            for w in report.walks():
                click.echo(_walk_line(w, where[w.representation]))
            both = len(todo) > 1
            for i, f in enumerate(report.findings):
                click.echo(f"  [{report.origin(i)}] {f}" if both else f"  {f}")
        verdict = "OK" if report.ok else "PROBLEMS"
        click.echo(f"{verdict}: {len(warn)} warning(s), {info} info")
    if not report.ok:
        raise click.exceptions.Exit(1)


def _walk_line(w, where: str) -> str:
    """What was walked, in one line."""
    if w.representation == "list":
        at = (f"list at p2m_vaddr {w.list_info['p2m_vaddr']:#x} (p2m_cr3 "
              f"{w.list_info['p2m_cr3']:#x}, {where})")
    elif w.save_info is not None:
        at = (f"saved p2m of X86_PV_P2M_FRAMES (record {w.save_info['record_index']}, "
              f"{w.save_info['p2m_frames']} frames)")
    else:
        at = f"tree at top MFN {w.top_mfn:#x} ({where})"
    return f"{at}, {w.word_size}-byte words, max_pfn {w.max_pfn:#x} ({w.max_pfn_source})"
