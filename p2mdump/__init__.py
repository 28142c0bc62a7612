"""p2mdump: memory-image forensics of Xen PV guests' p2m (pfn -> mfn) trees.

The public API, imported lazily so that ``import p2mdump`` stays cheap::

    from p2mdump import open_image, walk, walk_list, walk_image, Layout
    with open_image("dump.bin") as img:
        result = walk(img, top_mfn=0x1234)                  # the tree
        result = walk_list(img, 0x5000, 0xFFFFC90000000000,  # the linear list
                           max_pfn=0x100000)
        result, where = walk_image(img)                     # whatever the image names
    result.table.lookup(0x100)
"""
from __future__ import annotations

__version__ = "0.1.0"

_EXPORTS = {
    "Layout": ("layout", "Layout"),
    "layout_for": ("layout", "layout_for"),
    "P2MDumpError": ("errors", "P2MDumpError"),
    "ImageError": ("errors", "ImageError"),
    "ContainerError": ("errors", "ContainerError"),
    "TreeError": ("errors", "TreeError"),
    "LayoutError": ("errors", "LayoutError"),
    "SpecError": ("errors", "SpecError"),
    "OutputError": ("errors", "OutputError"),
    "open_image": ("sources", "open_image"),
    "RawImage": ("sources.raw", "RawImage"),
    "walk": ("walker", "walk"),
    "walk_list": ("listwalk", "walk_list"),
    "walk_image": ("autowalk", "walk_image"),
    "PageTableWalker": ("pagetable", "PageTableWalker"),
    "walker_for_cr3": ("pagetable", "walker_for_cr3"),
    "PagingMode": ("paging", "PagingMode"),
    "compare_tables": ("compare", "compare_tables"),
    "build_list": ("writer.listguest", "build_list"),
    "merge_raw_images": ("writer.hostimage", "merge_raw_images"),
    "WalkResult": ("walker", "WalkResult"),
    "detect_word_size": ("walker", "detect_word_size"),
    "Finding": ("findings", "Finding"),
    "P2MTable": ("table", "P2MTable"),
    "GuestSpec": ("writer.spec", "GuestSpec"),
    "e820_example": ("writer.spec", "e820_example"),
    "build_tree": ("writer.tree", "build_tree"),
    "generate": ("writer.image", "generate"),
    "scan": ("scan", "scan"),
    "ScanCandidate": ("scan", "ScanCandidate"),
    "lookup_pfn": ("lookup", "lookup_pfn"),
    "PathLookup": ("lookup", "PathLookup"),
    "TableLookup": ("lookup", "TableLookup"),
    "verify": ("verify", "verify"),
    "VerifyReport": ("verify", "VerifyReport"),
    "diff": ("diff", "diff"),
    "DiffResult": ("diff", "DiffResult"),
    "load_table": ("diff", "load_table"),
    "render_map": ("mapsvg", "render_map"),
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name):
    try:
        module, attr = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module 'p2mdump' has no attribute {name!r}") from None
    import importlib

    value = getattr(importlib.import_module(f".{module}", __name__), attr)
    globals()[name] = value
    return value


def __dir__():
    return __all__
