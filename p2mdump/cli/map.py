"""``p2mdump map``: an SVG picture of the guest's pfn space and of where the
tree's pages sit in machine memory."""
from __future__ import annotations

import os

import click

from .common import EXIT_CODES_HELP, CLIError, Progress
from .treeopts import open_source, resolve_tree, tree_options

MAP_HELP = """\b
The picture has two strips.  The first is the guest's pfn space, binned to
the width of the picture (a 4 GiB and a 512 GiB guest alike), each bin a bar
of the share of valid / missing / identity / foreign pfns, with the
boundaries between kinds labelled in pfn and MB.  The second is machine
memory, with a row each for the top page, the mid pages, the leaf pages and
the shared placeholders.  Only SVG is written: PNG would need a rasteriser
(convert with e.g. `rsvg-convert map.svg -o map.png`).
"""


@click.command(name="map", epilog=MAP_HELP + "\n" + EXIT_CODES_HELP)
@click.argument("image", metavar="IMAGE")
@tree_options
@click.option("-o", "--output", "output", required=True, metavar="PATH",
              help="The picture to write (.svg; written atomically; '-' for stdout).")
@click.option("--title", default=None, help="Title of the picture [default: the image name].")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def map_(image, top_mfn, word_size, max_pfn, base, container, output, title, quiet,
         **list_opts):
    """Draw the p2m of IMAGE as an SVG picture."""
    ext = os.path.splitext(output)[1].lower()
    if output != "-" and ext != ".svg":
        if ext == ".png":
            raise CLIError("PNG output is not built in (it would need a rasteriser "
                           "dependency); write .svg and convert it, e.g. "
                           "`rsvg-convert map.svg -o map.png`", 2)
        raise CLIError(f"{output}: the picture must be a .svg file", 2)
    from ..mapsvg import render_map
    from ..treeinfo import read_tree_pages
    from ..autowalk import walk_resolved

    progress = Progress("walking leaves", enabled=not quiet)
    with open_source(image, base, container) as source:
        r = resolve_tree(source, image, top_mfn, word_size, max_pfn, **list_opts)
        try:
            res = walk_resolved(source, r, progress=progress)
        finally:
            progress.close()
        top = res.top_mfn
        tree = read_tree_pages(source, top, res.layout) if top is not None else None
        limit = source.frame_limit()
    leaf_ph = set(res.leaf_placeholders)
    svg = render_map(res.table, tree, frame_limit=limit,
                     title=title or (f"p2m of {os.path.basename(image)}, top MFN {top:#x}"
                                     if top is not None else
                                     f"p2m list of {os.path.basename(image)}, p2m_vaddr "
                                     f"{res.list_info['p2m_vaddr']:#x}"),
                     placeholders=(res.mid_placeholder, leaf_ph))
    if output == "-":
        click.echo(svg)
        return
    from ..atomic import atomic_output

    with atomic_output(output, "w") as fh:
        fh.write(svg)
        fh.write("\n")


#: the COMMANDS registry looks the command up by its name
map = map_  # noqa: A001
