"""Small array helpers for the walks' hot paths.

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
