"""Write a built tree as a raw machine-memory image, plus sidecar and truth
(:func:`.containers.generate` writes all three)."""
from __future__ import annotations

import json
import os

import numpy as np

from ..arrays import step_runs as runs
from ..atomic import atomic_output, pwrite_all
from ..errors import SpecError
from ..layout import KINDS, PAGE_SIZE
from ..sidecar import SIDECAR_FORMAT
from ..schemas.stamp import STAMP_HEADER_SIZE, STAMP_MAGIC
from ..table import classify
from .tree import TreeShape

#: refuse to stamp more data frames than this (a 4 GiB guest)
MAX_DATA_FRAMES = 1 << 20
#: pages per write (2 MiB)
BATCH = 512


def stamped_frames(pfns: np.ndarray, mfns: np.ndarray) -> np.ndarray:
    """uint8 array (k, 4096) of data frames stamped with their pfn and mfn."""
    k = len(pfns)
    frames = np.zeros((k, PAGE_SIZE), dtype=np.uint8)
    frames[:, :8] = np.frombuffer(STAMP_MAGIC, dtype=np.uint8)
    frames[:, 8:16] = pfns.astype("<u8").view(np.uint8).reshape(k, 8)
    frames[:, 16:24] = mfns.astype("<u8").view(np.uint8).reshape(k, 8)
    # a recognisable fill: the low byte of the pfn
    frames[:, STAMP_HEADER_SIZE:] = (pfns & np.uint64(0xFF)).astype(np.uint8)[:, None]
    return frames


def write_frames(fd: int, tree: TreeShape, base: int = 0) -> int:
    """Write every page of ``tree`` into ``fd`` (frame m at base + m*4096);
    returns the file size.  Leaf pages are produced a batch at a time."""
    L = tree.layout
    size = base + tree.frame_count() * PAGE_SIZE
    os.ftruncate(fd, size)
    for mfn, words in tree.page_list():
        pwrite_all(fd, np.ascontiguousarray(words, dtype=L.numpy_dtype), base + mfn * PAGE_SIZE)
    order = np.argsort(tree.leaf_mfns, kind="stable")
    rows, mfns = tree.leaf_rows[order], tree.leaf_mfns[order]
    for a, b in runs(mfns, rows):
        for c in range(a, b, BATCH):
            d = min(c + BATCH, b)
            pwrite_all(fd, tree.leaf_pages(rows[c:d]), base + int(mfns[c]) * PAGE_SIZE)
    if tree.spec.data and tree.data_count:
        check_data_frames(tree.data_count)
        for pfns, mfns in tree.data_pairs(4096):
            write_stamped(fd, pfns, mfns, base)
    return size


def check_data_frames(count: int) -> None:
    if count > MAX_DATA_FRAMES:
        raise SpecError(f"--data would write {count} frames; "
                        f"at most {MAX_DATA_FRAMES} are allowed")


def write_runs(fd, frames, mfns: np.ndarray, base: int = 0) -> None:
    """Write frame i of ``frames`` at machine frame ``mfns[i]``, one write per
    run of consecutive MFNs."""
    for a, b in runs(mfns):
        pwrite_all(fd, frames[a:b], base + int(mfns[a]) * PAGE_SIZE)


def write_stamped(fd, pfns: np.ndarray, mfns: np.ndarray, base: int = 0) -> None:
    """Write the stamped data frames of (pfn, mfn) pairs at their MFNs."""
    write_runs(fd, stamped_frames(pfns, mfns), mfns, base)


def write_raw_image(tree: TreeShape, path, base: int = 0) -> int:
    with atomic_output(path, "wb") as fh:
        fh.flush()
        return write_frames(fh.fileno(), tree, base)


def sidecar_fields(spec, *, container: str, base: int, frames: int, top_mfn,
                   truth_counts: dict) -> dict:
    """The fields every sidecar has, tree or list guest."""
    return {
        "format": SIDECAR_FORMAT,
        "container": container,
        "word_size": spec.word_size,
        "page_size": PAGE_SIZE,
        "top_mfn": top_mfn,
        "max_pfn": spec.max_pfn,
        "base": base,
        "frames": frames,
        "truth_counts": truth_counts,
        "spec": spec.to_dict(),
    }


def chunk_counts(chunks, layout) -> dict:
    """Entries of each kind in a table given as (first pfn, words) chunks (as
    ``P2MTable.counts`` gives them)."""
    counts = np.zeros(len(KINDS), dtype=np.int64)
    for _, words in chunks:
        counts += np.bincount(classify(words, layout), minlength=len(KINDS))
    return {k: int(counts[i]) for i, k in enumerate(KINDS)}


def sidecar(tree: TreeShape, container: str = "raw", base: int = 0,
            extra: dict | None = None) -> dict:
    out = sidecar_fields(tree.spec, container=container, base=base, frames=tree.frame_count(),
                         top_mfn=tree.top_mfn,
                         truth_counts=chunk_counts(tree.truth_chunks(), tree.layout))
    out["placeholders"] = dict(tree.placeholders)
    out["tree_pages"] = tree.tree_pages
    if extra:
        out.update(extra)
    return out


def write_json(path, data: dict) -> None:
    with atomic_output(path, "w") as fh:
        json.dump(data, fh, indent=2, sort_keys=True)
        fh.write("\n")


def write_truth(tree: TreeShape, path) -> None:
    """The truth (the leaf slots of pfns 0..max_pfn-1), written chunk by chunk."""
    with atomic_output(path, "wb") as fh:
        for _, words in tree.truth_chunks():
            # (numpy's stubs give ndarray the buffer protocol from Python 3.12 only)
            fh.write(memoryview(np.ascontiguousarray(words)).cast("B"))  # type: ignore[arg-type]

