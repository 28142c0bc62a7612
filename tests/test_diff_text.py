"""The text lines of ``p2mdump diff`` against their per-range definition.

:meth:`p2mdump.diff.DiffResult.lines` renders a batch of ranges at once with
numpy (a byte matrix, NULs dropped); the text must be the same, byte for
byte, as the f-string each range is defined by (kept here as the reference:
it is what ``lines`` was before it went bulk).
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2mdump.diff import CLASSES, DiffResult, diff
from p2mdump.layout import KINDS, layout_for
from p2mdump.table import MISSING, P2MTable

U64 = (1 << 64) - 1
I64 = (1 << 63) - 1


def reference_lines(res: DiffResult, batch: int):
    """One f-string per range, a string per batch of ``batch`` ranges."""
    ar = res.arrays
    a_kind, b_kind = ar["a_kind"].tolist(), ar["b_kind"].tolist()
    a_mfn = [None if k == MISSING else m for k, m in zip(a_kind, ar["a_mfn"].tolist())]
    b_mfn = [None if k == MISSING else m for k, m in zip(b_kind, ar["b_mfn"].tolist())]
    cols = ([CLASSES[c] for c in ar["change"].tolist()], ar["first"].tolist(),
            ar["last"].tolist(), [KINDS[k] for k in a_kind], a_mfn,
            [KINDS[k] for k in b_kind], b_mfn)
    for i in range(0, len(res), batch):
        out = []
        for change, first, last, ak, am, bk, bm in zip(*(c[i:i + batch] for c in cols)):
            n = last - first
            rng = f"{first:#x}-{last:#x}" if n else f"{first:#x}"
            sa = ak if am is None else (f"{ak} {am:#x}-{am + n:#x}" if n else f"{ak} {am:#x}")
            sb = bk if bm is None else (f"{bk} {bm:#x}-{bm + n:#x}" if n else f"{bk} {bm:#x}")
            out.append(f"{rng} {change}: {sa} -> {sb}\n")
        yield "".join(out)


def result(rows) -> DiffResult:
    """A DiffResult of ``rows`` (change, first, last, a kind, a mfn, b kind, b mfn)."""
    cols = list(zip(*rows)) if rows else [()] * 7
    dtypes = (np.uint8, np.int64, np.int64, np.uint8, np.uint64, np.uint8, np.uint64)
    keys = ("change", "first", "last", "a_kind", "a_mfn", "b_kind", "b_mfn")
    arrays = {k: np.array(c, dtype=t) for k, c, t in zip(keys, cols, dtypes)}
    return DiffResult(0, 0, arrays, dict.fromkeys(CLASSES, 0))


def check(res: DiffResult, batch: int) -> None:
    got = list(res.lines(batch))
    assert got == list(reference_lines(res, batch))
    assert "".join(got) == "".join(f"{c}\n" for c in res.changes)


#: numbers of every length: zero, one, 32-bit sized, 64-bit sized
edge = st.sampled_from([0, 1, 0xf, 0x10, 0xffff, 0x10000, (1 << 32) - 1, 1 << 32,
                        (1 << 62) - 1, I64, 1 << 63, U64 - 1, U64])
pfn_edge = st.sampled_from([0, 1, 0xf, 0x10, 0xffff, 0x10000, (1 << 32) - 1, 1 << 32, I64])


@st.composite
def ranges(draw):
    first = draw(st.one_of(pfn_edge, st.integers(0, I64)))
    span = draw(st.one_of(st.just(0), st.sampled_from([1, 0xf, 0xffff]), st.integers(0, I64)))
    span = min(span, I64 - first)
    mfns = st.one_of(edge, st.integers(0, (1 << 32) - 1), st.integers(0, U64),
                     st.integers(U64 - span, U64))       # the end at or past 2^64 - 1
    kinds = st.integers(0, len(KINDS) - 1)
    return (draw(st.integers(0, len(CLASSES) - 1)), first, first + span,
            draw(kinds), draw(mfns), draw(kinds), draw(mfns))


@settings(max_examples=300, deadline=None)
@given(st.lists(ranges(), max_size=40), st.integers(1, 9))
def test_lines_match_the_per_range_definition(rows, batch):
    check(result(rows), batch)


def test_every_class_and_kind_pair_single_and_multi_pfn():
    rows = [(c, first, first + span, ak, am, bk, bm)
            for c in range(len(CLASSES)) for ak in range(len(KINDS)) for bk in range(len(KINDS))
            for first, span in ((0, 0), (0, 1), (0xabc, 0), (I64 - 5, 5))
            for am, bm in ((0, U64), (U64 - span, 1 << 32), (0x1234, 0))]
    for batch in (1, 7, 1 << 14):
        check(result(rows), batch)


def test_known_lines():
    """What a line reads (each side's end is its mfn plus the range's length - 1)."""
    V, M, ID, F = (KINDS.index(k) for k in ("valid", "missing", "identity", "foreign"))
    res = result([(CLASSES.index("added"), 0, 0, M, 0, V, 0),
                  (CLASSES.index("mapping"), 0x10, 0x1f, V, 0x100, V, 0x200),
                  (CLASSES.index("kind"), 0x20, 0x21, ID, 0x20, F, U64 - 1),
                  (CLASSES.index("removed"), I64, I64, F, 0xffffffff, M, 5)])
    assert "".join(res.lines(3)) == (
        "0x0 added: missing -> valid 0x0\n"
        "0x10-0x1f mapping: valid 0x100-0x10f -> valid 0x200-0x20f\n"
        "0x20-0x21 kind: identity 0x20-0x21 -> foreign 0xfffffffffffffffe-0xffffffffffffffff\n"
        "0x7fffffffffffffff removed: foreign 0xffffffff -> missing\n")


def test_mfn_end_past_two_to_the_64():
    """The end of a side is printed in full, as Python's int gives it."""
    res = result([(0, 0, 1, 0, U64, 0, U64 - 1), (0, 0, I64, 0, U64, 0, 1 << 63)])
    assert list(res.lines()) == [
        "0x0-0x1 mapping: valid 0xffffffffffffffff-0x10000000000000000 -> "
        "valid 0xfffffffffffffffe-0xffffffffffffffff\n"
        "0x0-0x7fffffffffffffff mapping: valid 0xffffffffffffffff-0x17ffffffffffffffe -> "
        "valid 0x8000000000000000-0xffffffffffffffff\n"]


def test_no_ranges_no_text():
    assert list(result([]).lines()) == []


@pytest.mark.parametrize("ws", [4, 8])
def test_lines_of_a_real_diff_across_batches(ws):
    """Ranges of a diff of two random tables, many batches of the default size."""
    rng = np.random.default_rng(ws)
    L = layout_for(ws)
    n = 1 << 16
    raw = rng.integers(0, 1 << 12, n, dtype=np.uint64)
    raw[rng.random(n) < 0.1] = L.invalid
    raw[rng.random(n) < 0.1] |= np.uint64(L.identity_bit)
    raw[rng.random(n) < 0.1] |= np.uint64(L.foreign_bit)
    other = raw.copy()
    other[::3] = np.arange(0, n, 3, dtype=np.uint64) % (1 << 12)
    res = diff(P2MTable(raw.astype(L.numpy_dtype), L),
               P2MTable(other[: n - 100].astype(L.numpy_dtype), L))
    assert len(res) > 1 << 14
    check(res, 1 << 14)
    check(res, 1000)
