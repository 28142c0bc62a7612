"""Build synthetic p2m trees and lists and the images that hold them (the walk, backwards).

The writer uses the same :class:`~p2mdump.layout.Layout` and
:mod:`~p2mdump.paging` constants as the walker but never the walker itself.
A spec's ``representation`` picks the shape: the 3-level tree
(:func:`build_tree`) or the Linux linear list with its page tables, alone or
with the tree over it (:func:`build_list`).  Guests generated at disjoint
``mfn_offset`` values merge into one host image (:func:`merge_raw_images`).
"""
from .spec import GuestSpec, e820_example
from .tree import BuiltTree, build_tree
from .listguest import ListGuest, build_list
from .image import write_raw_image
from .containers import generate
from .hostimage import merge_raw_images

__all__ = ["GuestSpec", "e820_example", "BuiltTree", "build_tree", "ListGuest", "build_list",
           "generate", "write_raw_image", "merge_raw_images"]
