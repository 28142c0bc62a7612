"""diff(): compare two p2m tables pfn by pfn, as ranges.

Each pfn of the union of both tables falls in one class:

* ``added``   — missing (or past the end) in A, not missing in B;
* ``removed`` — not missing in A, missing (or past the end) in B;
* ``kind``    — present in both with a different kind;
* ``mapping`` — same kind, different mfn.

Consecutive pfns of one class form a range; a range of ``mapping`` /
``kind`` / ``added`` / ``removed`` also breaks where either side's mfn stops
stepping by one, so each range reads "A: m..m+n-1 -> B: m'..m'+n-1".
Tables of different word sizes are compared by kind and decoded mfn.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from .errors import ImageError, LayoutError
from .layout import KINDS, layout_for
from .table import CHUNK, MISSING, P2MTable, classify, decode

CLASSES = ("mapping", "kind", "added", "removed")


@dataclass
class Change:
    change: str
    first: int
    last: int
    a_kind: str
    a_mfn: int | None
    b_kind: str
    b_mfn: int | None

    @property
    def count(self) -> int:
        return self.last - self.first + 1

    def to_dict(self) -> dict:
        return {"change": self.change, "first": self.first, "last": self.last,
                "count": self.count, "a": {"kind": self.a_kind, "mfn": self.a_mfn},
                "b": {"kind": self.b_kind, "mfn": self.b_mfn}}

    def __str__(self) -> str:
        def side(kind, mfn):
            if mfn is None:
                return kind
            end = mfn + self.count - 1
            return f"{kind} {mfn:#x}" + (f"-{end:#x}" if end != mfn else "")
        rng = f"{self.first:#x}" + (f"-{self.last:#x}" if self.last != self.first else "")
        return (f"{rng} {self.change}: {side(self.a_kind, self.a_mfn)} -> "
                f"{side(self.b_kind, self.b_mfn)}")


@dataclass
class DiffResult:
    a_len: int
    b_len: int
    changes: list = field(default_factory=list)
    #: pfns per class
    counts: dict = field(default_factory=dict)

    @property
    def same(self) -> bool:
        return not self.changes

    def to_dict(self) -> dict:
        return {"a_max_pfn": self.a_len, "b_max_pfn": self.b_len, "same": self.same,
                "counts": dict(self.counts), "changes": [c.to_dict() for c in self.changes]}


def _side(table: P2MTable, start: int, stop: int):
    """(kind codes, decoded mfns as uint64) for pfns [start, stop), missing past the end."""
    n = stop - start
    codes = np.full(n, MISSING, dtype=np.uint8)
    mfns = np.zeros(n, dtype=np.uint64)
    end = min(stop, len(table))
    if end > start:
        raw = table.raw[start:end]
        codes[:end - start] = classify(raw, table.layout)
        mfns[:end - start] = decode(raw, table.layout).astype(np.uint64)
    mfns[codes == MISSING] = 0
    return codes, mfns


def diff(a: P2MTable, b: P2MTable, *, chunk: int = CHUNK) -> DiffResult:
    """Compare table ``a`` with table ``b``."""
    n = max(len(a), len(b))
    counts = {c: 0 for c in CLASSES}
    changes: list[Change] = []
    cls_codes = {i + 1: c for i, c in enumerate(CLASSES)}
    prev = None  # (class, a_code, b_code, next a mfn, next b mfn, last pfn) of the open range
    one = np.uint64(1)
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        ka, ma = _side(a, start, stop)
        kb, mb = _side(b, start, stop)
        am, bm = ka == MISSING, kb == MISSING
        cls = np.zeros(len(ka), dtype=np.uint8)
        cls[~am & ~bm & (ka == kb) & (ma != mb)] = 1
        cls[~am & ~bm & (ka != kb)] = 2
        cls[am & ~bm] = 3
        cls[~am & bm] = 4
        idx = np.flatnonzero(cls)
        if not len(idx):
            continue
        for c in range(1, 5):
            counts[cls_codes[c]] += int(np.count_nonzero(cls[idx] == c))
        # range breaks inside the chunk
        brk = np.ones(len(idx), dtype=bool)
        if len(idx) > 1:
            i0, i1 = idx[:-1], idx[1:]
            brk[1:] = ((i1 != i0 + 1) | (cls[i1] != cls[i0]) | (ka[i1] != ka[i0])
                       | (kb[i1] != kb[i0])
                       | (~am[i1] & (ma[i1] != ma[i0] + one))
                       | (~bm[i1] & (mb[i1] != mb[i0] + one)))
        first = idx[0]
        if prev is not None:
            pc, pka, pkb, pma, pmb, plast = prev
            cont = (plast == start + first - 1 and pc == cls[first] and pka == ka[first]
                    and pkb == kb[first]
                    and (am[first] or int(ma[first]) == pma)
                    and (bm[first] or int(mb[first]) == pmb))
            brk[0] = not cont
        starts = np.flatnonzero(brk)
        ends = np.append(starts[1:], len(idx)) - 1
        for s, e in zip(starts.tolist(), ends.tolist()):
            i, j = int(idx[s]), int(idx[e])
            if s == 0 and not brk[0]:
                changes[-1].last = start + j
            else:
                changes.append(Change(
                    change=cls_codes[int(cls[i])], first=start + i, last=start + j,
                    a_kind=KINDS[ka[i]], a_mfn=None if am[i] else int(ma[i]),
                    b_kind=KINDS[kb[i]], b_mfn=None if bm[i] else int(mb[i])))
        j = int(idx[-1])
        prev = (int(cls[j]), int(ka[j]), int(kb[j]), int(ma[j]) + 1, int(mb[j]) + 1, start + j)
    return DiffResult(a_len=len(a), b_len=len(b), changes=changes, counts=counts)


def load_table(path, *, word_size: int | None = None, fmt: str = "auto") -> P2MTable:
    """A saved table: ``.npy`` (any <u4/<u8 1-d array) or raw words
    (``walk --format raw``; needs ``word_size``)."""
    path = os.fspath(path)
    if fmt == "auto":
        fmt = "npy" if path.endswith(".npy") else "raw"
    try:
        if fmt == "npy":
            try:
                arr = np.load(path, mmap_mode="r", allow_pickle=False)
            except (ValueError, TypeError, OverflowError) as exc:
                raise ImageError(f"{path}: not a NumPy .npy table: {exc}") from None
            if not isinstance(arr, np.ndarray):     # an .npz (zip) archive
                arr.close()
                raise ImageError(f"{path}: a zip archive (.npz), not a NumPy .npy table")
            if arr.ndim != 1 or arr.dtype.kind != "u" or arr.dtype.itemsize not in (4, 8):
                raise ImageError(f"{path}: a table must be a 1-d array of uint32 or uint64 "
                                 f"(got {arr.dtype} with shape {arr.shape})")
            ws = arr.dtype.itemsize
            if word_size is not None and word_size != ws:
                raise LayoutError(f"{path}: holds {ws}-byte words, not {word_size}")
            L = layout_for(ws)
            return P2MTable(np.ascontiguousarray(arr).astype(L.numpy_dtype, copy=False), L)
        if word_size is None:
            raise LayoutError(f"{path}: a raw table needs --word-size (4 or 8)")
        L = layout_for(word_size)
        size = os.path.getsize(path)
        if size % word_size:
            raise ImageError(f"{path}: {size} bytes is not a whole number of "
                             f"{word_size}-byte words")
        arr = np.fromfile(path, dtype=L.numpy_dtype) if size else np.zeros(0, L.numpy_dtype)
        return P2MTable(arr, L)
    except FileNotFoundError:
        raise ImageError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ImageError(f"{path}: is a directory") from None
    except PermissionError:
        raise ImageError(f"{path}: permission denied") from None
    except (EOFError, OSError) as exc:
        raise ImageError(f"{path}: cannot read the table: {exc}") from None
