"""``p2mdump verify``: can this tree be trusted?  Exit 0 only when nothing is wrong."""
from __future__ import annotations

import json

import click

from .common import EXIT_CODES_HELP, Progress
from .treeopts import open_source, resolve_tree, tree_options

VERIFY_HELP = """\b
Checks: every finding of the walk (pointers to MFN 0 or to frames outside
the image, a mid or leaf page reachable from two slots outside the
placeholders, placeholder pages whose content is not what a placeholder
holds, pages used at two levels, duplicate machine frames, non-missing
entries past --max-pfn), plus identity entries that are not their own pfn,
entries with both flag bits, foreign entries (listed, info) and foreign
entries naming the guest's own frames, and leaf pages that decode as mostly
garbage.

\b
Exit: 0 nothing is wrong (info findings only), 1 something is (warnings),
2 and up: errors (see below).  --json prints {"ok", "warnings", "top_mfn",
"word_size", "max_pfn", "counts", ..., "findings": [{"kind", "severity",
"level", "slot", "mfn", "parent_mfn", "count", "pfn_first", "pfn_last",
"message", "examples"}]}.
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
        r = resolve_tree(source, image, top_mfn, word_size, max_pfn, **list_opts)
        where = r.list_source if r.representation == "list" else r.top_mfn_source
        try:
            report = do_verify(source, r, progress=progress)
        finally:
            progress.close()
    if as_json:
        data = report.to_dict()
        data["image"] = image
        data["top_mfn_source"] = where
        click.echo(json.dumps(data, indent=2, sort_keys=True))
    else:
        w = report.walk
        warn = report.warnings()
        info = len(report.findings) - len(warn)
        if not quiet:
            if w.representation == "list":
                at = (f"list at p2m_vaddr {w.list_info['p2m_vaddr']:#x} (p2m_cr3 "
                      f"{w.list_info['p2m_cr3']:#x}, {where})")
            else:
                at = f"tree at top MFN {w.top_mfn:#x} ({where})"
            click.echo(f"{at}, {w.word_size}-byte words, "
                       f"max_pfn {w.max_pfn:#x} ({w.max_pfn_source})")
            for f in report.findings:
                click.echo(f"  {f}")
        verdict = "OK" if report.ok else "PROBLEMS"
        click.echo(f"{verdict}: {len(warn)} warning(s), {info} info")
    if not report.ok:
        raise click.exceptions.Exit(1)
