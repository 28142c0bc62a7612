"""Wrap a list guest (:mod:`.listguest`) in an ``xl dump-core`` file or an ELF core.

``xc-core``: as :mod:`.containers` writes a tree guest, with the list's
pieces in shared_info (reference sections 3.3, 4.2): ``max_pfn``, FLL = ~0
for a list-only guest (SIF_VIRT_P2M_4TOOLS) or the tree's top MFN with
``both``, the folded ``p2m_cr3``, ``p2m_vaddr`` and ``p2m_generation``.
The list pages, page tables and shared frames are guest pages, held by the
highest own pfns (:meth:`~.listguest.ListGuest.with_pages_as_guest_pages`),
so the list can be walked inside the dump.  .xen_pages / .xen_p2m hold the
pfns whose list word is a plain MFN, ascending, as Xen writes them; both are
written batch by batch.

``xen_dumpcore_bug`` (off by default) emulates how Xen 4.16+ sizes the dump
of a list guest (``xg_core_x86.c``, ``xc_core_arch_map_p2m_list_rw``): at
the PMD level it keeps the entries up to the last one that differs from
its predecessor, meant to cut off trailing unpopulated PMDs, but it
compares that entry's index *relative to the first PMD* with the last
index *within the PMD table*; when the list does not start at PMD index 0
of its table the last PMD is therefore cut off too.  Its pfns are left out
of the dump (no page, no pair) and the dump is padded with zero pages and
{~0, ~0} pairs up to the same nr_pages.

``elf``: an ELF core with one PT_LOAD per run of machine frames holding
something, p_paddr being the machine address, as for a tree guest; like a
raw image it holds the guest's shared_info frame too.
"""
from __future__ import annotations

import numpy as np

from ..atomic import atomic_output, pwrite_all
from ..errors import SpecError
from ..layout import PAGE_SIZE
from ..paging import PTES_PER_PAGE, level_shift
from ..sidecar import sidecar_path
from .containers import (BATCH, DEFAULT_XEN_VERSION, DataStamps, XcCoreLayout, _frames_for,
                         check_container, pad_pairs, page_batches, write_elf_frames, write_pairs)
from .image import check_data_frames, write_json
from .listguest import ListGuest, build_list
from .listimage import list_sidecar, write_list_raw_image, write_list_truth
from .tree import CHUNK_PFNS


def xen_dump_p2m_size(guest: ListGuest, bug: bool = True) -> int:
    """The p2m_size Xen 4.16+ ``xl dump-core`` (and Xen's saver, whose list
    walk has the same PMD-level trim) ends up with for ``guest``: pfns at or
    past it are not dumped / saved.  ``bug`` keeps Xen's index mix-up; without
    it the trim compares relative indices and only cuts trailing PMDs that
    repeat their predecessor."""
    L = guest.layout
    fpp = L.per_page
    size = guest.max_pfn
    end = guest.vaddr + ((size - 1) // fpp + 1) * PAGE_SIZE - 1
    mask = (1 << guest.mode.va_bits) - 1
    l2_shift, l3_shift = level_shift(2), level_shift(3)
    off = guest.vaddr & ((mask >> l3_shift) << l3_shift)
    idx_start = ((guest.vaddr - off) & mask) >> l2_shift
    idx_end = ((end - off) & mask) >> l2_shift
    saved_mfn = saved_idx = 0
    for idx in range(idx_start, idx_end + 1):
        mfn = int(guest.pmd_table[idx - idx_start])
        if mfn != saved_mfn:
            saved_mfn, saved_idx = mfn, idx - idx_start
    # the bug: a relative index against an absolute one
    if saved_idx == (idx_end if bug else idx_end - idx_start):
        saved_idx += 1
    return min(size, saved_idx * PTES_PER_PAGE * fpp)


def write_list_xc_core(guest: ListGuest, path, *, nr_vcpus: int = 1, padding: int = 0,
                       xen_dumpcore_bug: bool = False, version=DEFAULT_XEN_VERSION) -> dict:
    """Write ``guest`` (whose structure pages are guest pages, see
    :meth:`~.listguest.ListGuest.with_pages_as_guest_pages`) as an ``xl
    dump-core`` file.  Returns a description of the layout."""
    if len(guest.override_mfns) != len(guest.meta_mfns):
        raise SpecError("the list's pages are not guest pages; wrap the guest with "
                        "with_pages_as_guest_pages() first")
    ws = guest.layout.word_size
    limit = xen_dump_p2m_size(guest) if xen_dumpcore_bug else guest.max_pfn
    nr_pages = guest.segments.own_count(guest.max_pfn) + padding
    lay = XcCoreLayout(word_size=ws, nr_vcpus=nr_vcpus, nr_pages=nr_pages,
                       sinfo=guest.shared_info_page(),
                       version=version)
    written = 0
    with atomic_output(path, "wb") as fh:
        fd = fh.fileno()
        lay.write_skeleton(fd)
        for pfns, mfns in guest.own_frames(limit, batch=CHUNK_PFNS):
            # pages are written where they hold something: structure pages, data
            meta = np.flatnonzero(guest.is_meta(mfns))
            for a in page_batches(len(mfns), guest.spec.data, meta):
                b = min(a + BATCH, len(mfns))
                lo, hi = np.searchsorted(meta, [a, b])
                words = guest.page_words(mfns[a:b]) if lo < hi else {}
                frames = _frames_for(pfns[a:b], mfns[a:b], words, guest.spec.data)
                if frames is not None:
                    pwrite_all(fd, frames, lay.off_pages + (written + a) * PAGE_SIZE)
            write_pairs(fd, lay, written, pfns, mfns)
            written += len(pfns)
        pad_pairs(fd, lay, written, nr_pages)
    out = lay.describe()
    out["dumped_pages"] = written
    return out


def write_list_elf_core(guest: ListGuest, path) -> dict:
    """Write the frames of ``guest`` (as a raw image holds them, shared_info
    included) as an ELF core."""
    sinfo = np.frombuffer(guest.shared_info_page(), dtype=np.uint8)
    mfns = np.union1d(guest.meta_mfns, [guest.shared_info_mfn]).astype(np.uint64)
    stamps = None
    if guest.spec.data:
        check_data_frames(guest.segments.n_own)
        own = list(guest.own_frames(guest.list_pfns))
        if own:
            stamps = DataStamps(np.concatenate([p for p, _ in own]),
                                np.concatenate([m for _, m in own]))
            mfns = np.union1d(mfns, stamps.mfns)

    def frames_of(mm):
        words = guest.page_words(mm)
        if guest.shared_info_mfn in mm:
            words[guest.shared_info_mfn] = sinfo
        frames = _frames_for(np.zeros_like(mm), mm, words, False)
        if stamps is not None:
            frames = stamps.overlay(frames, mm, guest.is_meta(mm))
        return frames

    return write_elf_frames(path, mfns, frames_of)


def generate_list_container(spec, out, *, container: str = "raw", truth=None,
                            sidecar_file=None, base: int = 0, **options) -> ListGuest:
    """Build the list guest ``spec`` and write it as ``container`` (raw,
    xc-core or elf), with its sidecar and, when asked, the truth."""
    check_container(container, base)
    if options and container != "xc-core":
        raise SpecError(f"{', '.join(sorted(options))}: xc-core options only")
    guest = build_list(spec)
    extra = {}
    if container == "raw":
        write_list_raw_image(guest, out, base)
    elif container == "xc-core":
        bug = bool(options.get("xen_dumpcore_bug"))
        limit = xen_dump_p2m_size(guest) if bug else guest.max_pfn
        # keep the structure pages inside what Xen dumps when the spec allows
        below = limit if guest.segments.own_count(limit) >= len(guest.meta_mfns) else None
        guest, chosen = guest.with_pages_as_guest_pages(below)
        info = write_list_xc_core(guest, out, **options)
        extra = {"xc_core": info, "meta_pfns": [int(chosen[0]), int(chosen[-1]) + 1]}
        if bug:
            extra["xen_dumpcore_bug"] = {"p2m_size": limit,
                                         "dropped": [limit, guest.max_pfn],
                                         "dropped_pages": info["nr_pages"]
                                         - info["dumped_pages"] - options.get("padding", 0)}
    else:
        extra = {"elf": write_list_elf_core(guest, out)}
    write_json(sidecar_file or sidecar_path(out), list_sidecar(guest, container, base, extra))
    if truth is not None:
        write_list_truth(guest, truth)
    return guest
