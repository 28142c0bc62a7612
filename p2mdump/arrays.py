"""Small array helpers shared by the walks, extract and the writer.

``numpy.unique`` of numpy 2.x imports ``numpy.ma`` on first use (about 20 ms,
a tenth of a whole small walk); the walks only need the sort-based answer,
so they use :func:`unique` instead.  A test checks it against numpy.unique.
"""
from __future__ import annotations

import numpy as np


def unique(values, return_inverse: bool = False, return_counts: bool = False):
    """Sorted distinct values of a 1-d array, like ``numpy.unique``; with
    ``return_inverse`` / ``return_counts`` a tuple as numpy gives it."""
    values = np.asarray(values).reshape(-1)
    if not return_inverse and not return_counts:
        s = np.sort(values, kind="stable")
        keep = np.ones(len(s), dtype=bool)
        keep[1:] = s[1:] != s[:-1]
        return s[keep]
    order = np.argsort(values, kind="stable")
    s = values[order]
    first = np.ones(len(s), dtype=bool)
    first[1:] = s[1:] != s[:-1]
    uniq = s[first]
    out = [uniq]
    if return_inverse:
        inverse = np.empty(len(values), dtype=np.intp)
        inverse[order] = np.cumsum(first) - 1
        out.append(inverse)
    if return_counts:
        starts = np.flatnonzero(first)
        out.append(np.diff(np.append(starts, len(s))).astype(np.intp))
    return tuple(out)


def grouped(values, weights, firsts, lasts):
    """Distinct values of a 1-d array (sorted) and, per value, the sum of
    ``weights``, the least of ``firsts`` and the greatest of ``lasts`` over
    the positions holding it (all four arrays of one length): how many slots
    name each page, the first and the last, when a page's slots are described
    in groups (e.g. one group per mid page, named by several top slots)."""
    values = np.asarray(values).reshape(-1)
    weights, firsts, lasts = (np.asarray(a, dtype=np.int64).reshape(-1)
                              for a in (weights, firsts, lasts))
    if not len(values):
        return values, weights, firsts, lasts
    order = np.argsort(values, kind="stable")
    s = values[order]
    first = np.ones(len(s), dtype=bool)
    first[1:] = s[1:] != s[:-1]
    starts = np.flatnonzero(first)
    return (s[starts], np.add.reduceat(weights[order], starts),
            np.minimum.reduceat(firsts[order], starts),
            np.maximum.reduceat(lasts[order], starts))


def step_runs(*arrays) -> list:
    """[(a, b)] index ranges over which every one of ``arrays`` (same length)
    steps by one: runs of consecutive frame or pfn numbers, one read or write each."""
    n = len(arrays[0])
    if not n:
        return []
    brk = np.zeros(n, dtype=bool)
    brk[0] = True
    for values in arrays:
        brk[1:] |= np.diff(np.asarray(values).astype(np.int64)) != 1
    starts = np.flatnonzero(brk).tolist()
    return list(zip(starts, starts[1:] + [n]))


def true_runs(mask: np.ndarray, a: int, b: int):
    """Sub-ranges (c, d) of [a, b) where ``mask`` holds."""
    part = np.asarray(mask[a:b], dtype=np.int8)
    edges = np.flatnonzero(np.diff(np.concatenate(([0], part, [0]))))
    for c, d in zip(edges[::2].tolist(), edges[1::2].tolist()):
        yield a + c, a + d


def nonzero_pages(buf: np.ndarray, count: int, page_size: int = 4096) -> np.ndarray:
    """Per page of the first ``count`` pages of the byte array ``buf``: holds a
    non-zero byte (all-zero pages can stay holes of a sparse output)."""
    pages = buf[:count * page_size].view(np.uint64).reshape(count, page_size // 8)
    # (numpy's stubs type ndarray.any(axis=1) as "a bool or an array")
    return pages.any(axis=1)  # type: ignore[return-value]
