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
from dataclasses import dataclass

import numpy as np

from .errors import ImageError, LayoutError
from .layout import KINDS, layout_for
from .table import MISSING, P2MTable, decode

CLASSES = ("mapping", "kind", "added", "removed")
#: pfns compared per chunk (the temporaries of a chunk stay a few MiB)
DIFF_CHUNK = 1 << 20


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


class DiffResult:
    """The ranges of a diff, held as arrays (one element per range):
    ``first``, ``last`` (pfns), ``change`` (index into :data:`CLASSES`),
    ``a_kind`` / ``b_kind`` (kind codes), ``a_mfn`` / ``b_mfn`` (first mfn
    of each side, 0 where that side is missing)."""

    def __init__(self, a_len: int, b_len: int, arrays: dict, counts: dict):
        self.a_len = a_len
        self.b_len = b_len
        self.arrays = arrays
        #: pfns per class
        self.counts = counts
        self._changes: list[Change] | None = None

    @property
    def same(self) -> bool:
        return not len(self.arrays["first"])

    def __len__(self) -> int:
        return len(self.arrays["first"])

    def _columns(self):
        """The ranges as Python lists: (change, first, last, a kind, a mfn, b kind, b mfn)
        with kind names and None for a missing side's mfn."""
        ar = self.arrays
        a_kind, b_kind = ar["a_kind"].tolist(), ar["b_kind"].tolist()
        a_mfn = [None if k == MISSING else m for k, m in zip(a_kind, ar["a_mfn"].tolist())]
        b_mfn = [None if k == MISSING else m for k, m in zip(b_kind, ar["b_mfn"].tolist())]
        return ([CLASSES[c] for c in ar["change"].tolist()], ar["first"].tolist(),
                ar["last"].tolist(), [KINDS[k] for k in a_kind], a_mfn,
                [KINDS[k] for k in b_kind], b_mfn)

    @property
    def changes(self) -> list:
        """The ranges as :class:`Change` objects (built on first use)."""
        if self._changes is None:
            self._changes = [Change(*row) for row in zip(*self._columns())]
        return self._changes

    def lines(self, batch: int = 1 << 14):
        """The text of the ranges (what ``str(Change)`` gives, one a line),
        a string per batch of ``batch`` ranges."""
        cols = self._columns()
        for i in range(0, len(self), batch):
            out = []
            for change, first, last, ak, am, bk, bm in zip(*(c[i:i + batch] for c in cols)):
                n = last - first
                rng = f"{first:#x}-{last:#x}" if n else f"{first:#x}"
                sa = ak if am is None else (f"{ak} {am:#x}-{am + n:#x}" if n else f"{ak} {am:#x}")
                sb = bk if bm is None else (f"{bk} {bm:#x}-{bm + n:#x}" if n else f"{bk} {bm:#x}")
                out.append(f"{rng} {change}: {sa} -> {sb}\n")
            yield "".join(out)

    def to_dict(self) -> dict:
        return {"a_max_pfn": self.a_len, "b_max_pfn": self.b_len, "same": self.same,
                "counts": dict(self.counts), "changes": [c.to_dict() for c in self.changes]}


def _pieces(table: P2MTable, start: int, stop: int):
    """Pieces of pfns [start, stop) of ``table`` over which its kind stays
    and its mfn steps by one (its runs, cut at the chunk; past the table's
    end one missing piece): (first pfns int64, kind codes, first mfns
    uint64, 0 where missing)."""
    end = min(stop, len(table))
    starts = [np.zeros(0, dtype=np.int64)]
    codes = [np.zeros(0, dtype=np.uint8)]
    mfns = [np.zeros(0, dtype=np.uint64)]
    if end > start:
        run_starts, _, run_codes, first = P2MTable(table.raw[start:end], table.layout).run_arrays()
        starts.append(run_starts + start)
        codes.append(run_codes)
        mfns.append(decode(first, table.layout).astype(np.uint64))
    if end < stop:
        starts.append(np.array([max(end, start)], dtype=np.int64))
        codes.append(np.array([MISSING], dtype=np.uint8))
        mfns.append(np.zeros(1, dtype=np.uint64))
    all_codes, all_mfns = np.concatenate(codes), np.concatenate(mfns)
    all_mfns[all_codes == MISSING] = 0
    return np.concatenate(starts), all_codes, all_mfns


def _same_chunk(a: P2MTable, b: P2MTable, start: int, stop: int) -> bool:
    """Both tables hold pfns [start, stop) with the same words."""
    return (a.layout == b.layout and stop <= len(a) and stop <= len(b)
            and np.array_equal(a.raw[start:stop], b.raw[start:stop]))


def _changed_pieces(a: P2MTable, b: P2MTable, start: int, stop: int):
    """The pieces of [start, stop) over which both sides are each one run
    and the pfns differ: dict of arrays first, end, change (class code),
    a_kind, b_kind, a_mfn, b_mfn."""
    sa, ka, ma = _pieces(a, start, stop)
    sb, kb, mb = _pieces(b, start, stop)
    first = np.union1d(sa, sb)
    ia = np.searchsorted(sa, first, side="right") - 1
    ib = np.searchsorted(sb, first, side="right") - 1
    ka, kb = ka[ia], kb[ib]
    ma = ma[ia] + (first - sa[ia]).astype(np.uint64)
    mb = mb[ib] + (first - sb[ib]).astype(np.uint64)
    am, bm = ka == MISSING, kb == MISSING
    ma[am] = 0
    mb[bm] = 0
    cls = np.zeros(len(first), dtype=np.uint8)
    both = ~am & ~bm
    cls[both & (ka == kb) & (ma != mb)] = 1 + CLASSES.index("mapping")
    cls[both & (ka != kb)] = 1 + CLASSES.index("kind")
    cls[am & ~bm] = 1 + CLASSES.index("added")
    cls[~am & bm] = 1 + CLASSES.index("removed")
    end = np.append(first[1:], stop)
    keep = np.flatnonzero(cls)
    return {"first": first[keep], "end": end[keep], "change": cls[keep] - 1,
            "a_kind": ka[keep], "b_kind": kb[keep], "a_mfn": ma[keep], "b_mfn": mb[keep]}


_KEYS = ("first", "last", "change", "a_kind", "b_kind", "a_mfn", "b_mfn")


def diff(a: P2MTable, b: P2MTable, *, chunk: int = DIFF_CHUNK) -> DiffResult:
    """Compare table ``a`` with table ``b``.

    Chunk by chunk: a chunk whose words are the same on both sides is
    skipped; otherwise both sides are cut into their runs (kind constant,
    mfn stepping by one), the cuts of both are merged into pieces over
    which the class of every pfn is the same, and neighbouring changed
    pieces that continue each other (same class and kinds, both mfns
    stepping on) are joined into ranges.  The work goes by runs, not pfns."""
    n = max(len(a), len(b))
    counts = np.zeros(len(CLASSES), dtype=np.int64)
    done: dict[str, list[np.ndarray]] = {k: [] for k in _KEYS}
    # the last range found, which the next chunk may continue
    open_range: dict[str, int] | None = None
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        if _same_chunk(a, b, start, stop):
            continue
        p = _changed_pieces(a, b, start, stop)
        k = len(p["first"])
        if not k:
            continue
        size = p["end"] - p["first"]
        counts += np.bincount(p["change"], weights=size, minlength=len(CLASSES)).astype(np.int64)
        am, bm = p["a_kind"] == MISSING, p["b_kind"] == MISSING
        step = size.astype(np.uint64)
        join = np.zeros(k, dtype=bool)
        join[1:] = ((p["first"][1:] == p["end"][:-1]) & (p["change"][1:] == p["change"][:-1])
                    & (p["a_kind"][1:] == p["a_kind"][:-1])
                    & (p["b_kind"][1:] == p["b_kind"][:-1])
                    & (am[1:] | (p["a_mfn"][1:] == p["a_mfn"][:-1] + step[:-1]))
                    & (bm[1:] | (p["b_mfn"][1:] == p["b_mfn"][:-1] + step[:-1])))
        if open_range is not None:
            o = open_range
            join[0] = (o["end"] == int(p["first"][0]) and o["change"] == int(p["change"][0])
                       and o["a_kind"] == int(p["a_kind"][0])
                       and o["b_kind"] == int(p["b_kind"][0])
                       and (bool(am[0]) or o["a_next"] == int(p["a_mfn"][0]))
                       and (bool(bm[0]) or o["b_next"] == int(p["b_mfn"][0])))
        heads = np.flatnonzero(~join)
        tails = np.append(heads[1:], k) - 1
        if join[0]:
            assert open_range is not None   # join[0] is only set to continue it
            j = int(heads[0]) - 1 if len(heads) else k - 1
            open_range.update(end=int(p["end"][j]),
                              a_next=int(p["a_mfn"][j] + step[j]),
                              b_next=int(p["b_mfn"][j] + step[j]))
        if not len(heads):
            continue
        if open_range is not None:
            _close(open_range, done)
        for key in _KEYS:
            if key != "last":
                done[key].append(p[key][heads[:-1]])
        done["last"].append(p["end"][tails[:-1]] - 1)
        h, t = int(heads[-1]), int(tails[-1])
        open_range = {key: int(p[key][h]) for key in _KEYS if key != "last"}
        open_range.update(end=int(p["end"][t]), a_next=int(p["a_mfn"][t] + step[t]),
                          b_next=int(p["b_mfn"][t] + step[t]))
    if open_range is not None:
        _close(open_range, done)
    dtypes = {"first": np.int64, "last": np.int64, "change": np.uint8, "a_kind": np.uint8,
              "b_kind": np.uint8, "a_mfn": np.uint64, "b_mfn": np.uint64}
    arrays = {k: np.concatenate(v).astype(dtypes[k]) if v else np.zeros(0, dtypes[k])
              for k, v in done.items()}
    return DiffResult(len(a), len(b), arrays,
                      {c: int(counts[i]) for i, c in enumerate(CLASSES)})


def _close(o: dict, done: dict) -> None:
    """Add the open range ``o`` to the finished ones."""
    for key in _KEYS:
        value = o["end"] - 1 if key == "last" else o[key]
        done[key].append(np.array([value], dtype=np.uint64 if key.endswith("mfn")
                                  else np.int64))


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
