"""Construct schemas of the three kinds of p2m tree page.

One page is 4096 bytes of little-endian words of the guest's width:

* top page (``p2m_top_mfn``, published as ``pfn_to_mfn_frame_list_list``):
  ``per_page`` MFNs of mid pages;
* mid page (``p2m_mid_mfn``): ``per_page`` MFNs of leaf pages;
* leaf page: ``per_page`` raw p2m entries (MFN, INVALID, IDENTITY_FRAME,
  FOREIGN_FRAME).

The schemas are built from a :class:`~p2mdump.layout.Layout`, so the word size
and the number of slots come from one place.
"""
from __future__ import annotations

from functools import lru_cache

from construct import Array, Int32ul, Int64ul, Struct

from ..layout import Layout, layout_for


def word(layout: Layout):
    """The Construct type of one guest word (Int32ul / Int64ul)."""
    return Int64ul if layout.word_size == 8 else Int32ul


def _page(layout: Layout, field: str):
    return Struct(field / Array(layout.per_page, word(layout)))


@lru_cache(maxsize=None)
def top_page(word_size: int):
    """p2m_top_mfn: MFNs of the mid pages, one per 1 GiB (64-bit) / 4 GiB (32-bit)."""
    return _page(layout_for(word_size), "mid_mfns")


@lru_cache(maxsize=None)
def mid_page(word_size: int):
    """p2m_mid_mfn: MFNs of the leaf pages, one per 2 MiB / 4 MiB of pfns."""
    return _page(layout_for(word_size), "leaf_mfns")


@lru_cache(maxsize=None)
def leaf_page(word_size: int):
    """A leaf: the raw pfn -> mfn entries of ``per_page`` consecutive pfns."""
    return _page(layout_for(word_size), "entries")
