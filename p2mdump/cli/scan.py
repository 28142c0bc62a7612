"""``p2mdump scan``: find candidate p2m trees and linear p2m lists in an image, no hint needed."""
from __future__ import annotations

import json
import shlex

import click

from .common import EXIT_CODES_HELP, NUMBER
from .outputs import Progress
from .running import CLIError

SCAN_HELP = """\b
How it works: one sequential pass reads the image in 8 MiB blocks (holes of
a sparse file are skipped) and scores every page at both word sizes in bulk.
Trees: pages whose words all name frames of the image (top / mid pages) and
pages whose words all look like p2m entries (leaves).  A page whose sampled
slots name mid-like pages, which name leaf-like pages, is a candidate; each
candidate gets a trial walk (leaves decoded with their pfns known,
placeholders checked) and the confirmed ones a full walk.
Linear lists (Linux 3.19+ domUs publish only the list): pages that read like
a guest's shared_info (arch_shared_info at offset 3088 / 2316: max_pfn,
frame-list-list ~0 or a frame, p2m_cr3 naming a frame that reads as a top
page table, a kernel p2m_vaddr, a small generation).  Each gets a trial
walk of a sample of its list pages through its page tables, and the
confirmed ones a full walk (lists up to 256 MiB of table).  A list guest
whose shared_info also names a tree (a `both` guest) is linked to it.

\b
JSON (--json): a list, best first, of trees {"representation": "tree",
"top_mfn", "word_size", "max_pfn" (last pfn not missing + 1), "score"
(0-100), "pfns_mapped", "counts", "mid_placeholder", "leaf_placeholders",
"evidence", "warnings", "shared_info_mfn" (of the list guest naming it, or
null), "walk_command"} and lists {"representation": "list",
"shared_info_mfn", "word_size", "p2m_cr3", "root_mfn", "p2m_vaddr",
"p2m_generation", "max_pfn" (arch.max_pfn), "frame_list_list", "paging",
"score", "pfns_mapped" and "counts" (null / {} when the list was too large
to walk in full), "list_placeholders", "shared_pte_pages", "evidence",
"warnings", "notes", "tree_top_mfn", "tree_found", "copies",
"walk_command"}; [] when nothing was found.  Exit code 1 when nothing was
found.
"""


def walk_command(image: str, args: list[str], base: int = 0, container: str = "auto") -> str:
    """The shell command that walks a candidate found in ``image``."""
    cmd = ["p2mdump", "walk", image] + args
    if base:
        cmd += ["--base", f"{base:#x}"]
    if container != "auto":
        cmd += ["--container", container]
    return " ".join(shlex.quote(c) for c in cmd)


def _tree_lines(trees):
    yield (f"{'top_mfn':>12} {'word':>4} {'max_pfn':>10} {'mapped':>10} "
           f"{'score':>6}  placeholders (mid; leaf)")
    for c in trees:
        ph = (f"{c.mid_placeholder:#x}" if c.mid_placeholder is not None else "-") + "; " + \
            (", ".join(f"{m:#x}" for m in c.leaf_placeholders) or "-")
        warn = f"  [{c.warnings} warning(s): run verify]" if c.warnings else ""
        link = (f"  [the tree of the list guest with shared_info at MFN {c.shared_info_mfn:#x}]"
                if c.shared_info_mfn is not None else "")
        yield (f"{c.top_mfn:>#12x} {c.word_size:>4} {c.max_pfn:>#10x} "
               f"{c.pfns_mapped:>10} {c.score:>6.1f}  {ph}{warn}{link}")


def _list_lines(lists, command):
    yield (f"{'shared_info':>12} {'word':>4} {'max_pfn':>10} {'mapped':>10} "
           f"{'score':>6}  p2m_cr3 (root MFN), p2m_vaddr, generation")
    for c in lists:
        where = f"{c.shared_info_mfn:#x}" if c.shared_info_mfn is not None else "container"
        mapped = "-" if c.pfns_mapped is None else str(c.pfns_mapped)
        warn = f"  [{c.warnings} warning(s): run verify]" if c.warnings else ""
        yield (f"{where:>12} {c.word_size:>4} {c.max_pfn:>#10x} {mapped:>10} {c.score:>6.1f}  "
               f"{c.p2m_cr3:#x} ({c.root_mfn:#x}), {c.p2m_vaddr:#x}, {c.p2m_generation}{warn}")
        for note in c.notes:
            yield f"{'':>12}   note: {note}"
        if c.tree_found:
            yield f"{'':>12}   its tree (top MFN {c.tree_top_mfn:#x}) is listed above"
        yield f"{'':>12}   walk: {command(c)}"


@click.command(epilog=SCAN_HELP + "\n" + EXIT_CODES_HELP)
@click.argument("image", metavar="IMAGE")
@click.option("--word-size", type=click.Choice(["both", "4", "8"]), default="both",
              show_default=True, help="Word sizes to look for.")
@click.option("--representation", type=click.Choice(["all", "tree", "list"]), default="all",
              show_default=True,
              help="What to look for: p2m trees (by their pages), linear p2m lists (by their "
                   "guest's shared_info page), or both.")
@click.option("--base", type=NUMBER, default=0, show_default=True,
              help="File offset of machine frame 0 in a raw image.")
@click.option("--container", type=click.Choice(["auto", "raw"]), default="auto",
              show_default=True, help="Image container.")
@click.option("--max-results", type=click.IntRange(1, 64), default=8, show_default=True,
              help="Report at most this many trees, and this many lists.")
@click.option("--json", "as_json", is_flag=True, help="JSON output (a list, best first).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def scan(image, word_size, representation, base, container, max_results, as_json, quiet):
    """Find p2m trees and linear p2m lists in IMAGE when nothing says where they are.

    Prints the candidates best first: trees (top MFN, word size, max_pfn,
    pfns mapped, placeholder MFNs, score), then lists (the MFN of the
    guest's shared_info page, word size, max_pfn, pfns mapped, score,
    p2m_cr3, p2m_vaddr, generation) each with the `p2mdump walk` command
    that walks it.  Use a tree's top MFN with walk, lookup, verify or map.
    """
    from ..scan import REPRESENTATIONS, ScanStats, scan as do_scan
    from .treeopts import open_source

    sizes = (8, 4) if word_size == "both" else (int(word_size),)
    reps = REPRESENTATIONS if representation == "all" else (representation,)
    stats = ScanStats()
    progress = Progress("scanning", enabled=not quiet)
    with open_source(image, base, container) as source:
        if getattr(source, "saved_p2m", False):
            raise CLIError(f"{image}: an xl save stream names its p2m itself (X86_PV_P2M_FRAMES) "
                           f"and holds guest pages by pfn, not machine frames: nothing to scan "
                           f"for; `p2mdump walk {image}` reads the saved p2m", 3)
        try:
            found = do_scan(source, word_sizes=sizes, progress=progress,
                            max_results=max_results, stats=stats, representations=reps)
        finally:
            progress.close()

    def command(c):
        return walk_command(image, c.walk_args(), base, container)

    trees = [c for c in found if c.representation == "tree"]
    lists = [c for c in found if c.representation == "list"]
    if as_json:
        click.echo(json.dumps([dict(c.to_dict(), walk_command=command(c)) for c in found],
                              indent=2, sort_keys=True))
    else:
        mib = stats.bytes_scanned / (1 << 20)
        if trees:
            for line in _tree_lines(trees):
                click.echo(line)
        if lists:
            if trees:
                click.echo("")
            for line in _list_lines(lists, command):
                click.echo(line)
        click.echo(f"p2mdump: scanned {mib:.1f} MiB, {stats.trials + stats.list_trials} "
                   f"candidate(s) tried, {len(trees)} tree(s) and {len(lists)} list(s) found",
                   err=True)
    if not found:
        what = {"tree": "no p2m tree found", "list": "no linear p2m list found"}
        click.echo(f"p2mdump: {' and '.join(what[r] for r in reps)} in {image}", err=True)
        raise click.exceptions.Exit(1)
