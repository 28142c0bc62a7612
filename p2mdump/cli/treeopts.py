"""Options shared by the commands that read one tree (lookup, verify, map, diff).

Light on purpose (click and the standard library only): ``lookup`` imports it.

Where the tree is: ``--top-mfn`` when given; otherwise a hint of the
container (``top_mfn_hint`` of the frame source, e.g. shared_info of a dump
core); otherwise the sidecar ``IMAGE.json`` written by ``p2mdump generate``;
otherwise an error that points at ``p2mdump scan``.
"""
from __future__ import annotations

from . import options as opts
from .common import option, word_size_option

LIST_OPTION_NAMES = ("representation", "p2m_cr3", "p2m_vaddr", "five_level")


def tree_options(f):
    """--top-mfn, --word-size, --max-pfn, --base, --container, and the linear
    list's --representation, --p2m-cr3, --p2m-vaddr, --five-level."""
    f = option(opts.FIVE_LEVEL,
               help="The guest uses 5-level paging (LA57; 64-bit guests only).")(f)
    f = option(opts.P2M_VADDR,
               help="Virtual address of the linear p2m list (shared_info "
                    "arch.p2m_vaddr).  Default: the container's or sidecar's.")(f)
    f = option(opts.P2M_CR3,
               help="cr3 of the page tables mapping the linear p2m list, as the "
                    "register value (shared_info arch.p2m_cr3; folded on 32-bit "
                    "guests).  With --p2m-vaddr and --max-pfn it names a list.")(f)
    f = option(opts.REPRESENTATION, show_default=True,
               help="Which form of the p2m to walk: the three-level tree (top MFN), "
                    "the linear list (p2m_cr3/p2m_vaddr), or auto: the list when one "
                    "is named (as Xen's tools prefer it), else the tree.")(f)
    f = option(opts.CONTAINER, show_default=True,
               help="Image container: auto (detected from the first bytes), raw (frame M "
                    "at BASE + M*4096), xc-core (xl dump-core), elf (PT_LOAD core) or "
                    "xl-save (xl save file).")(f)
    f = option(opts.BASE, show_default=True,
               help="File offset of machine frame 0 in a raw image.")(f)
    f = option(opts.MAX_PFN,
               help="Number of pfns of the guest (shared_info arch.max_pfn).  Default: "
                    "the container's hint, else up to the last pfn not missing.")(f)
    f = word_size_option(f)
    f = option(opts.TOP_MFN,
               help="MFN of the top page (arch.pfn_to_mfn_frame_list_list).  Default: "
                    "the container's hint or the generator's sidecar IMAGE.json; "
                    "`p2mdump scan IMAGE` finds candidates.")(f)
    return f


def open_source(image: str, base: int, container: str = "auto"):
    """Open IMAGE as a frame source.

    A file that does not start like a known container is opened as a raw
    image directly (no container detection imports), which keeps single
    lookups cheap; anything else (stdin and FIFOs too: they are spooled) goes
    through :func:`p2mdump.sources.open_image`.
    """
    from ..sources.spool import is_stream

    if not is_stream(image) and (container == "raw" or (
            container == "auto" and not _looks_like_container(image))):
        from ..sources.raw import RawImage

        return RawImage(image, base=base)
    from ..sources import open_image

    return open_image(image, base=base, container=container)


def _looks_like_container(image: str) -> bool:
    from ..sources.base import read_head
    from ..sources.detect import RAW, sniff_bytes

    return sniff_bytes(read_head(image, 64)) != RAW  # b"": RawImage says what is wrong


def resolve_tree(source, image: str, top_mfn, word_size: str, max_pfn, **list_opts):
    """A :class:`p2mdump.autowalk.Resolved`: which representation (tree or
    list) to walk and where it is -- the given options, else the container's
    hints, else the generator's sidecar."""
    from ..autowalk import resolve
    from ..sidecar import read_sidecar

    ws = "auto" if word_size == "auto" else int(word_size)
    side = read_sidecar(image) if top_mfn is None and list_opts.get("p2m_cr3") is None else None
    return resolve(source, top_mfn, ws, max_pfn, side, **list_opts)


def resolve_walks(source, image: str, top_mfn, word_size: str, max_pfn, **list_opts) -> list:
    """Every representation to walk (:func:`p2mdump.autowalk.resolve_all`):
    [list, tree] when the guest publishes both and no --representation is
    forced, else the one :func:`resolve_tree` picks."""
    from ..autowalk import resolve_all
    from ..sidecar import read_sidecar

    ws = "auto" if word_size == "auto" else int(word_size)
    side = read_sidecar(image) if top_mfn is None and list_opts.get("p2m_cr3") is None else None
    return resolve_all(source, top_mfn, ws, max_pfn, side, **list_opts)
