"""``p2mdump map``: an SVG picture of the guest's pfn space and of where the
p2m's own pages (tree, or list and page tables) sit in machine memory."""
from __future__ import annotations

import os

import click

from .common import EXIT_CODES_HELP
from .outputs import Progress
from .running import CLIError
from .treeopts import open_source, resolve_walks, tree_options

MAP_HELP = """\b
The picture has two strips.  The first is the guest's pfn space, binned to
the width of the picture (a 4 GiB and a 512 GiB guest alike), each bin a bar
of the share of valid / missing / identity / foreign pfns, with the
boundaries between kinds labelled in pfn and MB.  The second is machine
memory, with a row each for the top page, the mid pages, the leaf pages and
the shared placeholders; for a linear list, the top page table (p2m_cr3),
the page tables on the list's path, the list pages and the shared frames
(a guest that publishes both gets both strips).  Only SVG is written: PNG would need a rasteriser
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
    from ..atomic import check_outputs
    from ..mapsvg import render_map
    from ..sidecar import sidecar_path
    from ..treeinfo import read_tree_pages
    from ..autowalk import can_stream, walk_resolved

    check_outputs({"-o": output}, inputs=(image, sidecar_path(image)))

    progress = Progress("walking leaves", enabled=not quiet)
    with open_source(image, base, container) as source:
        todo = resolve_walks(source, image, top_mfn, word_size, max_pfn, **list_opts)
        try:
            # the map needs the table's runs only: a tree's or list's is not kept
            res = walk_resolved(source, todo[0], progress=progress,
                                stream=_ignore if can_stream(todo[0]) else None)
        finally:
            progress.close()
        # the tree's pages: those of the tree walked, or of the tree the guest
        # publishes beside its list (read from the top and mid pages only)
        top = res.top_mfn if res.top_mfn is not None else (
            todo[1].top_mfn if len(todo) > 1 else None)
        tree = read_tree_pages(source, top, res.layout) if top is not None else None
        pages = None
        if res.list_info is not None:
            from ..listinfo import read_list_pages

            pages = read_list_pages(source, res.list_info, res.layout)
        # a save stream's frames are pfns: no machine-memory strip
        limit = None if getattr(source, "saved_p2m", False) else source.frame_limit()
    placeholders = (res.mid_placeholder, set(res.leaf_placeholders)) \
        if res.representation == "tree" else None
    svg = render_map(res.table, tree, list_pages=pages, frame_limit=limit,
                     title=title or _title(os.path.basename(image), res, top),
                     placeholders=placeholders)
    if output == "-":
        click.echo(svg)
        return
    from ..atomic import atomic_output

    with atomic_output(output, "w") as fh:
        fh.write(svg)
        fh.write("\n")


#: the COMMANDS registry looks the command up by its name
map = map_  # noqa: A001


def _title(name: str, res, top) -> str:
    """The map's default title: which p2m of which image."""
    if res.list_info is not None:
        return f"p2m list of {name}, p2m_vaddr {res.list_info['p2m_vaddr']:#x}"
    if top is None:
        return f"saved p2m of {name} ({res.representation})"
    return f"p2m of {name}, top MFN {top:#x}"


def _ignore(*_window) -> None:
    """A streamed walk's windows, not needed beyond its runs."""
