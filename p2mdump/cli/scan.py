"""``p2mdump scan``: find candidate p2m trees in an image, no top MFN needed."""
from __future__ import annotations

import json

import click

from .common import EXIT_CODES_HELP, NUMBER, Progress

SCAN_HELP = """\b
How it works: one sequential pass reads the image in 8 MiB blocks (holes of
a sparse file are skipped) and scores every page at both word sizes in bulk:
pages whose words all name frames of the image (top / mid pages) and pages
whose words all look like p2m entries (leaves).  A page whose sampled slots
name mid-like pages, which name leaf-like pages, is a candidate; each
candidate gets a trial walk (leaves decoded with their pfns known,
placeholders checked) and the confirmed ones a full walk.

\b
JSON (--json): a list, best first, of {"top_mfn", "word_size", "max_pfn"
(last pfn not missing + 1), "score" (0-100), "pfns_mapped", "counts",
"mid_placeholder", "leaf_placeholders", "evidence", "warnings"}; [] when
nothing was found.  Exit code 1 when nothing was found.
"""


@click.command(epilog=SCAN_HELP + "\n" + EXIT_CODES_HELP)
@click.argument("image", metavar="IMAGE")
@click.option("--word-size", type=click.Choice(["both", "4", "8"]), default="both",
              show_default=True, help="Word sizes to look for.")
@click.option("--base", type=NUMBER, default=0, show_default=True,
              help="File offset of machine frame 0 in a raw image.")
@click.option("--container", type=click.Choice(["auto", "raw"]), default="auto",
              show_default=True, help="Image container.")
@click.option("--max-results", type=click.IntRange(1, 64), default=8, show_default=True,
              help="Report at most this many trees.")
@click.option("--json", "as_json", is_flag=True, help="JSON output (a list, best first).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def scan(image, word_size, base, container, max_results, as_json, quiet):
    """Find p2m trees in IMAGE when no top MFN is known.

    Prints the candidates best first: top MFN, word size, max_pfn, pfns
    mapped, placeholder MFNs and score.  Use the top MFN with walk, lookup,
    verify or map.
    """
    from ..scan import ScanStats, scan as do_scan
    from .treeopts import open_source

    sizes = (8, 4) if word_size == "both" else (int(word_size),)
    stats = ScanStats()
    progress = Progress("scanning", enabled=not quiet)
    with open_source(image, base, container) as source:
        try:
            found = do_scan(source, word_sizes=sizes, progress=progress,
                            max_results=max_results, stats=stats)
        finally:
            progress.close()
    if as_json:
        click.echo(json.dumps([c.to_dict() for c in found], indent=2, sort_keys=True))
    else:
        mib = stats.bytes_scanned / (1 << 20)
        if found:
            click.echo(f"{'top_mfn':>12} {'word':>4} {'max_pfn':>10} {'mapped':>10} "
                       f"{'score':>6}  placeholders (mid; leaf)")
        for c in found:
            ph = (f"{c.mid_placeholder:#x}" if c.mid_placeholder is not None else "-") + "; " + \
                (", ".join(f"{m:#x}" for m in c.leaf_placeholders) or "-")
            warn = f"  [{c.warnings} warning(s): run verify]" if c.warnings else ""
            click.echo(f"{c.top_mfn:>#12x} {c.word_size:>4} {c.max_pfn:>#10x} "
                       f"{c.pfns_mapped:>10} {c.score:>6.1f}  {ph}{warn}")
        click.echo(f"p2mdump: scanned {mib:.1f} MiB, {stats.trials} candidate(s) tried, "
                   f"{len(found)} tree(s) found", err=True)
    if not found:
        click.echo(f"p2mdump: no p2m tree found in {image}", err=True)
        raise click.exceptions.Exit(1)
