"""Options shared by the commands that read one tree (lookup, verify, map, diff).

Light on purpose (click and the standard library only): ``lookup`` imports it.

Where the tree is: ``--top-mfn`` when given; otherwise a hint of the
container (``top_mfn_hint`` of the frame source, e.g. shared_info of a dump
core); otherwise the sidecar ``IMAGE.json`` written by ``p2mdump generate``;
otherwise an error that points at ``p2mdump scan``.
"""
from __future__ import annotations


import click

from .common import NUMBER, word_size_option



def tree_options(f):
    """--top-mfn, --word-size, --max-pfn, --base, --container."""
    f = click.option("--container", type=click.Choice(["auto", "raw", "xc-core", "elf"]),
                     default="auto", show_default=True,
                     help="Image container: auto (detected from the first bytes), raw (frame M "
                          "at BASE + M*4096), xc-core (xl dump-core) or elf (PT_LOAD core).")(f)
    f = click.option("--base", type=NUMBER, default=0, show_default=True,
                     help="File offset of machine frame 0 in a raw image.")(f)
    f = click.option("--max-pfn", type=NUMBER, default=None,
                     help="Number of pfns of the guest (shared_info arch.max_pfn).  Default: "
                          "the container's hint, else up to the last pfn not missing.")(f)
    f = word_size_option(f)
    f = click.option("--top-mfn", type=NUMBER, default=None,
                     help="MFN of the top page (arch.pfn_to_mfn_frame_list_list).  Default: "
                          "the container's hint or the generator's sidecar IMAGE.json; "
                          "`p2mdump scan IMAGE` finds candidates.")(f)
    return f


def open_source(image: str, base: int, container: str = "auto"):
    """Open IMAGE as a frame source.

    A file that does not start like a known container is opened as a raw
    image directly (no container detection imports), which keeps single
    lookups cheap; anything else goes through :func:`p2mdump.sources.open_image`.
    """
    if container == "raw" or (container == "auto" and not _looks_like_container(image)):
        from ..sources.raw import RawImage

        return RawImage(image, base=base)
    from ..sources import open_image

    return open_image(image, base=base, container=container)


def _looks_like_container(image: str) -> bool:
    try:
        with open(image, "rb") as fh:
            head = fh.read(8)
    except OSError:
        return False  # RawImage gives the precise error
    return head.startswith(b"\x7fELF")


def resolve_tree(source, image: str, top_mfn, word_size: str, max_pfn):
    """(top_mfn, word size ('auto'|4|8), max_pfn, where top_mfn came from):
    the given options, else the container's hints, else the generator's
    sidecar (:func:`p2mdump.autowalk.resolve` decides)."""
    from ..autowalk import resolve
    from ..sidecar import read_sidecar

    ws = "auto" if word_size == "auto" else int(word_size)
    side = read_sidecar(image) if top_mfn is None else None
    r = resolve(source, top_mfn, ws, max_pfn, side)
    return r.top_mfn, r.word_size, r.max_pfn, r.top_mfn_source
