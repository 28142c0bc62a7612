"""Write a list guest (:mod:`.listguest`) as a raw machine-memory image, plus sidecar and truth
(:func:`.listcontainers.generate_list_container` writes all three).

The image holds what a host's memory holds of the guest: its structure
pages (list pages, page tables, shared frames, the tree with ``both``), its
data frames with ``data``, and its shared_info page (a Xen page at
``shared_info_mfn``, which names the list: ``p2mdump scan`` finds guests by it).

Everything is written piecewise: the image is a sparse file (ftruncate, then
only the frames that hold something), the list pages are produced a batch
at a time, and the truth (the expected ``walk --format raw`` output: the
words memory holds for pfns 0..max_pfn-1) is written chunk by chunk, so a
2^28-pfn guest never holds its 2 GiB table.
"""
from __future__ import annotations

import os

import numpy as np

from ..atomic import atomic_output, pwrite_all
from ..layout import KIND_MISSING, KINDS, PAGE_SIZE
from ..table import classify
from .image import check_data_frames, sidecar_fields, write_runs, write_stamped
from .listguest import CHUNK_PFNS, ListGuest


def write_list_frames(fd: int, guest: ListGuest, base: int = 0) -> int:
    """Write every frame of ``guest`` into ``fd`` (frame m at base + m*4096);
    returns the file size."""
    if guest.spec.data:
        check_data_frames(guest.segments.n_own)
    size = base + guest.frame_count() * PAGE_SIZE
    os.ftruncate(fd, size)
    for mfn, words in guest.host_frames():
        pwrite_all(fd, np.ascontiguousarray(words), base + int(mfn) * PAGE_SIZE)
    for pages, words in guest.list_page_runs(guest.private_pages):
        write_runs(fd, words, guest.page_mfn[pages], base)
    if guest.spec.data:
        for pfns, mfns in guest.own_frames(guest.list_pfns, batch=4096):
            write_stamped(fd, pfns, mfns, base)
    return size


def write_list_raw_image(guest: ListGuest, path, base: int = 0) -> int:
    with atomic_output(path, "wb") as fh:
        fh.flush()
        return write_list_frames(fh.fileno(), guest, base)


def truth_chunks(guest: ListGuest):
    """(first pfn, words) of the truth, pfns 0..max_pfn-1, in chunks."""
    L = guest.layout
    invalid = None
    for a, b, words in guest.memory_chunks(guest.max_pfn):
        if words is None:
            if invalid is None:
                invalid = np.full(CHUNK_PFNS, L.invalid, dtype=L.numpy_dtype)
            words = invalid[:b - a]
        yield a, words


def truth_counts(guest: ListGuest) -> dict:
    """Entries of each kind in the truth (as ``P2MTable.counts`` gives them)."""
    counts = np.zeros(len(KINDS), dtype=np.int64)
    for a, b, words in guest.memory_chunks(guest.max_pfn):
        if words is None:
            counts[KINDS.index(KIND_MISSING)] += b - a
        else:
            counts += np.bincount(classify(words, guest.layout), minlength=len(KINDS))
    return {k: int(counts[i]) for i, k in enumerate(KINDS)}


def write_list_truth(guest: ListGuest, path) -> None:
    with atomic_output(path, "wb") as fh:
        for _, words in truth_chunks(guest):
            # (numpy's stubs give ndarray the buffer protocol from Python 3.12 only)
            fh.write(memoryview(np.ascontiguousarray(words)).cast("B"))  # type: ignore[arg-type]


def list_sidecar(guest: ListGuest, container: str = "raw", base: int = 0,
                 extra: dict | None = None) -> dict:
    """The sidecar of a list / both guest: a tree sidecar's fields plus where the list is."""
    out = sidecar_fields(guest.spec, container=container, base=base,
                         frames=guest.frame_count(), top_mfn=guest.top_mfn,
                         truth_counts=truth_counts(guest))
    out.update({
        "representation": guest.representation,
        "paging": guest.mode.name,
        "root_mfn": guest.root_mfn,
        "shared_info_mfn": guest.shared_info_mfn,
        "p2m_cr3": guest.p2m_cr3,
        "p2m_vaddr": guest.vaddr,
        "p2m_generation": guest.spec.p2m_generation,
        "list_pfns": guest.list_pfns,
        "init_pfns": guest.init_pfns,
        "list_placeholders": guest.list_placeholders,
        "other_mappings": [[w["vaddr"], w["pages"]] for w in guest.windows],
    })
    out.update(guest.counts)
    if guest.top_mfn is not None:
        out["placeholders"] = guest.tree_placeholders
    if guest.notes:
        out["notes"] = list(guest.notes)
    if extra:
        out.update(extra)
    return out

