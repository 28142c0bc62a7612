"""Build synthetic p2m trees and the images that hold them (the walk, backwards).

The writer uses the same :class:`~p2mdump.layout.Layout` as the walker but
never the walker itself.
"""
from .spec import GuestSpec, e820_example
from .tree import BuiltTree, build_tree
from .image import generate, write_raw_image

__all__ = ["GuestSpec", "e820_example", "BuiltTree", "build_tree", "generate",
           "write_raw_image"]
