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
from collections import deque
from dataclasses import dataclass

import numpy as np

from .errors import ImageError, LayoutError
from .layout import KINDS, Layout, layout_for
from .rowtext import ByteMatrix, hex_text, name_table
from .table import MISSING, P2MTable, classify, decode

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
        a string per batch of ``batch`` ranges, rendered in bulk
        (:func:`_line_text`)."""
        for lo in range(0, len(self), batch):
            yield _line_text(self.arrays, lo, min(lo + batch, len(self))).decode("ascii")

    def to_dict(self) -> dict:
        return {"a_max_pfn": self.a_len, "b_max_pfn": self.b_len, "same": self.same,
                "counts": dict(self.counts), "changes": [c.to_dict() for c in self.changes]}


def _ascii(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("ascii"), dtype=np.uint8)


_DASH_0X, _SP_0X = _ascii("-0x"), _ascii(" 0x")
_CLASS_WIDTH, _KIND_WIDTH = max(map(len, CLASSES)), max(map(len, KINDS))
_CLASS_NAMES = name_table(_CLASS_WIDTH, False, CLASSES)
_KIND_NAMES = name_table(_KIND_WIDTH, False)


def _line_text(ar: dict, lo: int, hi: int) -> bytes:
    """The lines of ranges ``lo``..``hi`` - 1 (at least one) of the arrays
    ``ar`` of a :class:`DiffResult`, built like ``walk``'s row formats
    (:mod:`p2mdump.rowtext`): a byte matrix with every field at a fixed
    column, numbers rendered by numpy with NULs for leading zeros, and the
    parts a line leaves out (the ``-0xLAST`` of a single pfn, the ``-0xEND``
    of its mfns, the mfns of a missing side, the padding of shorter names)
    left NUL, so that one ``bytes.translate`` pass leaves the lines' text.
    A line reads ``0xFIRST[-0xLAST] CLASS: KIND[ 0xMFN[-0xEND]] -> KIND[
    0xMFN[-0xEND]]``; the number fields are as wide as the largest number
    of the batch needs."""
    n = hi - lo
    first, last = ar["first"][lo:hi], ar["last"][lo:hi]
    span = (last - first).astype(np.uint64)
    single = span == 0
    sides = []
    for side in "ab":
        kinds, mfn = ar[side + "_kind"][lo:hi], ar[side + "_mfn"][lo:hi]
        end = mfn + span
        sides.append((kinds, mfn, end, max(_digits(mfn), _digits(end))))
    pw = _digits(last)
    # "0x" FIRST, "-0x" LAST, " " CLASS ": ", A's kind, A's mfns, " -> ",
    # B's kind, B's mfns, "\n" (a side's mfns: see _put_mfns)
    m = ByteMatrix([b"0x", pw, 3 + pw, b" ", _CLASS_WIDTH, b": ", _KIND_WIDTH,
                    7 + 2 * sides[0][3], b" -> ", _KIND_WIDTH, 7 + 2 * sides[1][3], b"\n"], n)
    m.put(1, n, _hex(first, pw))
    tail = m.rows(2, n)
    tail[:, :3] = _DASH_0X
    tail[:, 3:] = _hex(last, pw)
    tail[single] = 0
    m.put(4, n, _CLASS_NAMES[ar["change"][lo:hi]])
    for field, (kinds, mfn, end, width) in zip((6, 9), sides):
        m.put(field, n, _KIND_NAMES[kinds])
        _put_mfns(m.rows(field + 1, n), mfn, end, width, single, kinds == MISSING)
    return m.text(n)


def _digits(values: np.ndarray) -> int:
    """Hex digits of the largest of ``values`` (not negative)."""
    return max(1, -(-int(values.max()).bit_length() // 4))


def _hex(values: np.ndarray, width: int) -> np.ndarray:
    """:func:`~p2mdump.rowtext.hex_text` of ``values``, which need at most
    ``width`` digits, in ``width`` columns."""
    return hex_text(values, 4 if width <= 8 else 8)[:, -width:]


def _put_mfns(out: np.ndarray, mfn: np.ndarray, end: np.ndarray, width: int,
              single: np.ndarray, missing: np.ndarray) -> None:
    """A side's `` 0xMFN-0xEND`` into ``out`` (n, 7 + 2 * ``width``, one
    more digit for the carry of an END of 2^64 or more): ``end`` is MFN +
    the range's length - 1 in uint64, printed in full where that wrapped;
    the ``-0xEND`` NUL where ``single``, all NUL where ``missing``."""
    carry = end < mfn
    out[:, :3] = _SP_0X
    out[:, 3:3 + width] = _hex(mfn, width)
    out[:, 3 + width:6 + width] = _DASH_0X
    out[:, 6 + width] = carry * np.uint8(ord("1"))
    out[:, 7 + width:] = _hex(end, width)
    if carry.any():
        # 2^64 + end, its 16 low digits in full after the "1" (a carry
        # needs an mfn past 2^63, so width is 16)
        out[carry, 7 + width:] = hex_text(end[carry], 8, strip=False)
    out[single, 3 + width:] = 0
    out[missing] = 0


def _pieces(words: np.ndarray, layout, start: int, stop: int, cuts=None):
    """Pieces of pfns [start, stop) of a table whose words for pfns start..
    are ``words`` (fewer than stop - start where the table ends) over which
    its kind stays and its mfn steps by one (its runs, cut at the chunk;
    past the table's end one missing piece): (first pfns int64, kind codes,
    first mfns uint64, 0 where missing).  ``cuts``: where such pieces start
    in ``words``, when known (a streamed walk's segments, which may cut a
    run in two: the ranges join the pieces again), else the runs are found."""
    end = start + len(words)
    starts = [np.zeros(0, dtype=np.int64)]
    codes = [np.zeros(0, dtype=np.uint8)]
    mfns = [np.zeros(0, dtype=np.uint64)]
    if end > start:
        if cuts is None:
            run_starts, _, run_codes, first = P2MTable(words, layout).run_arrays()
        else:
            run_starts = cuts
            first = words[cuts]
            run_codes = classify(first, layout)
        starts.append(run_starts + start)
        codes.append(run_codes)
        mfns.append(decode(first, layout).astype(np.uint64))
    if end < stop:
        starts.append(np.array([end], dtype=np.int64))
        codes.append(np.array([MISSING], dtype=np.uint8))
        mfns.append(np.zeros(1, dtype=np.uint64))
    all_codes, all_mfns = np.concatenate(codes), np.concatenate(mfns)
    all_mfns[all_codes == MISSING] = 0
    return np.concatenate(starts), all_codes, all_mfns


def _changed_pieces(wa, la, wb, lb, start: int, stop: int, cuts_a=None, cuts_b=None):
    """The pieces of [start, stop) over which both sides (words ``wa`` of
    layout ``la``, ``wb`` of ``lb``, see :func:`_pieces`) are each one run
    and the pfns differ: dict of arrays first, end, change (class code),
    a_kind, b_kind, a_mfn, b_mfn."""
    sa, ka, ma = _pieces(wa, la, start, stop, cuts_a)
    sb, kb, mb = _pieces(wb, lb, start, stop, cuts_b)
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


class Differ:
    """The ranges of a diff, built chunk by chunk of pfns in order
    (:meth:`add`), from tables held whole (:func:`diff`) or from two walks
    streaming side by side (:func:`diff_streams`).

    A chunk whose words are the same on both sides is skipped; otherwise
    both sides are cut into their runs (kind constant, mfn stepping by one),
    the cuts of both are merged into pieces over which the class of every
    pfn is the same, and neighbouring changed pieces that continue each
    other (same class and kinds, both mfns stepping on) are joined into
    ranges, across chunks too.  The work goes by runs, not pfns."""

    def __init__(self, layout_a, layout_b):
        self.la, self.lb = layout_a, layout_b
        self.counts = np.zeros(len(CLASSES), dtype=np.int64)
        self.done: dict[str, list[np.ndarray]] = {k: [] for k in _KEYS}
        # the last range found, which the next chunk may continue
        self.open_range: dict[str, int] | None = None

    def add(self, start: int, stop: int, wa: np.ndarray, wb: np.ndarray, cuts_a=None,
            cuts_b=None) -> None:
        """Pfns [start, stop): A's words for pfns start.. are ``wa``, B's
        ``wb`` (each shorter than the chunk where its table ends); ``cuts_a``
        / ``cuts_b``: where pieces of one kind and stepping mfns start in
        them, when known (see :func:`_pieces`)."""
        n = stop - start
        if self.la == self.lb and len(wa) == len(wb) == n and np.array_equal(wa, wb):
            return
        p = _changed_pieces(wa, self.la, wb, self.lb, start, stop, cuts_a, cuts_b)
        k = len(p["first"])
        if not k:
            return
        size = p["end"] - p["first"]
        self.counts += np.bincount(p["change"], weights=size,
                                   minlength=len(CLASSES)).astype(np.int64)
        am, bm = p["a_kind"] == MISSING, p["b_kind"] == MISSING
        step = size.astype(np.uint64)
        join = np.zeros(k, dtype=bool)
        join[1:] = ((p["first"][1:] == p["end"][:-1]) & (p["change"][1:] == p["change"][:-1])
                    & (p["a_kind"][1:] == p["a_kind"][:-1])
                    & (p["b_kind"][1:] == p["b_kind"][:-1])
                    & (am[1:] | (p["a_mfn"][1:] == p["a_mfn"][:-1] + step[:-1]))
                    & (bm[1:] | (p["b_mfn"][1:] == p["b_mfn"][:-1] + step[:-1])))
        open_range = self.open_range
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
            return
        if open_range is not None:
            _close(open_range, self.done)
        for key in _KEYS:
            if key != "last":
                self.done[key].append(p[key][heads[:-1]])
        self.done["last"].append(p["end"][tails[:-1]] - 1)
        h, t = int(heads[-1]), int(tails[-1])
        self.open_range = {key: int(p[key][h]) for key in _KEYS if key != "last"}
        self.open_range.update(end=int(p["end"][t]), a_next=int(p["a_mfn"][t] + step[t]),
                               b_next=int(p["b_mfn"][t] + step[t]))

    def result(self, a_len: int, b_len: int) -> DiffResult:
        """The diff of tables of ``a_len`` and ``b_len`` pfns, every chunk added."""
        if self.open_range is not None:
            _close(self.open_range, self.done)
            self.open_range = None
        dtypes = {"first": np.int64, "last": np.int64, "change": np.uint8, "a_kind": np.uint8,
                  "b_kind": np.uint8, "a_mfn": np.uint64, "b_mfn": np.uint64}
        arrays = {k: np.concatenate(v).astype(dtypes[k]) if v else np.zeros(0, dtypes[k])
                  for k, v in self.done.items()}
        return DiffResult(a_len, b_len, arrays,
                          {c: int(self.counts[i]) for i, c in enumerate(CLASSES)})


def diff(a: P2MTable, b: P2MTable, *, chunk: int = DIFF_CHUNK) -> DiffResult:
    """Compare table ``a`` with table ``b`` (see :class:`Differ`)."""
    d = Differ(a.layout, b.layout)
    for start in range(0, max(len(a), len(b)), chunk):
        stop = start + chunk
        d.add(start, min(stop, max(len(a), len(b))), a.raw[start:min(stop, len(a))],
              b.raw[start:min(stop, len(b))])
    return d.result(len(a), len(b))


class _Cancelled(Exception):
    """Ends the thread of walk A when the comparison stops early."""


class _Side:
    """The words of one side's walk received so far and not yet compared,
    with where its pieces of one kind and stepping mfns start (the walk's
    segments, :meth:`p2mdump.table.RunScanner.feed`)."""

    def __init__(self):
        self.parts: deque = deque()        # (words, segment starts, 0 first)
        #: one past the last pfn received (the table's length once ended)
        self.hi = 0
        self.ended = False
        self.layout: Layout | None = None

    def push(self, start: int, words: np.ndarray, segments: np.ndarray) -> None:
        assert start == self.hi, "windows arrive in pfn order"
        self.layout = layout_for(words.dtype.itemsize)
        self.parts.append((words, segments))
        self.hi += len(words)

    def take(self, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
        """(words, piece starts in them) of pfns lo.. up to ``hi`` or to the
        end of what was received (asked in order, from where the last call
        stopped)."""
        need = max(0, min(hi, self.hi) - lo)
        words, cuts = [], []
        at = 0
        while need:
            w, seg = self.parts[0]
            k = min(len(w), need)
            words.append(w[:k])
            cuts.append(seg[seg < k] + at)
            need -= k
            at += k
            if k == len(w):
                self.parts.popleft()
            else:
                rest = seg[seg > k] - k
                self.parts[0] = (w[k:], np.concatenate([[0], rest]).astype(np.int64))
        if not words:
            assert self.layout is not None     # known from a window or the walk's result
            return np.zeros(0, dtype=self.layout.numpy_dtype), np.zeros(0, dtype=np.int64)
        if len(words) == 1:
            return words[0], cuts[0]
        return np.concatenate(words), np.concatenate(cuts)


def diff_streams(walk_a, walk_b, *, chunk: int = DIFF_CHUNK, ahead: int = 4):
    """Compare the tables of two walks as they stream side by side, holding
    neither: ``walk_a(stream)`` runs in a thread, ``walk_b(stream)`` in the
    caller's, each returning its :class:`~p2mdump.result.WalkResult` (see
    ``stream=`` of :func:`p2mdump.walker.walk`); walk A runs at most
    ``ahead`` windows ahead of the comparison.  Returns (DiffResult, result
    A, result B): the same ranges as :func:`diff` of the two tables.  An
    error of walk A is raised rather than one of walk B, as when A is
    walked first."""
    import queue
    import threading

    q: queue.Queue = queue.Queue(maxsize=ahead)
    stop = threading.Event()
    lost: list = []          # A's error when it could not be handed over

    def put(item) -> None:
        while True:
            if stop.is_set():
                raise _Cancelled
            try:
                q.put(item, timeout=0.05)
                return
            except queue.Full:
                continue

    def run_a() -> None:
        try:
            res = walk_a(lambda words, start, seg, _codes: put(
                ("window", start, words.copy(), seg)))
            put(("end", res))
        except _Cancelled:
            pass
        except BaseException as exc:      # handed to the caller's thread, raised there
            try:
                put(("error", exc))
            except _Cancelled:
                lost.append(exc)

    A, B = _Side(), _Side()
    got: dict = {}
    state: dict = {"pos": 0, "differ": None}

    def pull_a(until: int) -> None:
        while not A.ended and A.hi < until:
            kind, *rest = q.get()
            if kind == "window":
                A.push(*rest)
            elif kind == "end":
                got["a"] = rest[0]
                A.ended = True
                A.layout = rest[0].layout
            else:
                raise rest[0]

    def compare() -> None:
        while True:
            pos = state["pos"]
            end = pos + chunk
            if not B.ended and B.hi < end:
                return
            pull_a(end)
            if A.ended and B.ended:
                end = min(end, max(A.hi, B.hi))
                if pos >= end:
                    return
            if state["differ"] is None:
                state["differ"] = Differ(A.layout, B.layout)
            (wa, ca), (wb, cb) = A.take(pos, end), B.take(pos, end)
            state["differ"].add(pos, end, wa, wb, ca, cb)
            state["pos"] = end

    def on_b(words, start, seg, _codes) -> None:
        B.push(start, words.copy(), seg)
        compare()

    thread = threading.Thread(target=run_a, name="p2mdump-diff-a", daemon=True)
    thread.start()
    try:
        res_b = walk_b(on_b)
        B.ended = True
        B.layout = res_b.layout
        pull_a(1 << 62)
        compare()
    except BaseException as exc:
        stop.set()
        thread.join()
        first = lost[0] if lost else None
        while first is None and not q.empty():
            kind, *rest = q.get_nowait()
            if kind == "error":
                first = rest[0]
        if first is not None and first is not exc:
            raise first from None
        raise
    thread.join()
    differ = state["differ"] or Differ(A.layout, B.layout)
    return differ.result(A.hi, B.hi), got["a"], res_b


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
