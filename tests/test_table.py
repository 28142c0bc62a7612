"""P2MTable's bulk runs, counts and duplicates against plain-Python references."""
import numpy as np
from hypothesis import given, settings, strategies as st

from p2mdump.layout import layout_for
from p2mdump.table import P2MTable


def naive_runs(values, L):
    runs = []
    for pfn, v in enumerate(values):
        kind = L.kind_of(v)
        mfn = L.decode(v)
        if runs:
            s, e, k, m = runs[-1]
            if k == kind and (kind == "missing" or L.decode(values[e - 1]) + 1 == mfn):
                runs[-1] = (s, e + 1, k, m)
                continue
        runs.append((pfn, pfn + 1, kind, mfn))
    return runs


def edge_words(L):
    low = L.identity_bit - 1
    return [0, 1, 2, low, L.identity_bit, L.identity_bit + 1, L.identity_bit | low,
            L.foreign_bit, L.foreign_bit + 1, L.foreign_bit | low, L.invalid - 1, L.invalid,
            L.flag_mask, 0x1000, 0x1001]


@st.composite
def tables(draw):
    ws = draw(st.sampled_from([4, 8]))
    L = layout_for(ws)
    pieces = []
    for _ in range(draw(st.integers(1, 12))):
        start = draw(st.sampled_from(edge_words(L)))
        length = draw(st.integers(1, 40))
        step = draw(st.sampled_from([0, 1, 1, 2]))
        pieces += [(start + i * step) & L.word_mask for i in range(length)]
    return ws, pieces


@settings(max_examples=200, deadline=None)
@given(t=tables())
def test_runs_and_counts_match_reference(t):
    ws, values = t
    L = layout_for(ws)
    table = P2MTable(np.array(values, dtype=L.numpy_dtype), L)
    got = [(r.start, r.end, r.kind, r.mfn) for r in table.runs()]
    assert got == naive_runs(values, L)
    counts = {k: 0 for k in ("valid", "missing", "identity", "foreign")}
    for v in values:
        counts[L.kind_of(v)] += 1
    assert table.counts() == counts


def test_runs_across_scan_blocks():
    from p2mdump import table as T

    L = layout_for(8)
    n = 3 * T.BLOCK + 17
    values = np.arange(100, 100 + n, dtype=np.uint64)
    values[T.BLOCK] = L.invalid            # a missing pfn exactly at a block edge
    values[2 * T.BLOCK - 1:2 * T.BLOCK + 3] = L.invalid
    t = P2MTable(values.astype("<u8"), L)
    assert [(r.start, r.end, r.kind) for r in t.runs()] == [
        (0, T.BLOCK, "valid"), (T.BLOCK, T.BLOCK + 1, "missing"),
        (T.BLOCK + 1, 2 * T.BLOCK - 1, "valid"), (2 * T.BLOCK - 1, 2 * T.BLOCK + 3, "missing"),
        (2 * T.BLOCK + 3, n, "valid")]


@settings(max_examples=150, deadline=None)
@given(t=tables(), block=st.integers(1, 9), chunk=st.integers(1, 60))
def test_runs_in_small_blocks_and_threaded_chunks_match_reference(t, block, chunk):
    """The scan cut into blocks of 1-9 entries and chunks of 1-60, the
    chunks on three threads (:meth:`P2MTable._scan`): the same runs."""
    from p2mdump import table as T, workers

    ws, values = t
    L = layout_for(ws)
    saved = T.BLOCK, T.SCAN_CHUNK, workers.usable_cpus
    T.BLOCK, T.SCAN_CHUNK, workers.usable_cpus = block, chunk, lambda: 3
    try:
        table = P2MTable(np.array(values, dtype=L.numpy_dtype), L)
        got = [(r.start, r.end, r.kind, r.mfn) for r in table.runs()]
    finally:
        T.BLOCK, T.SCAN_CHUNK, workers.usable_cpus = saved
    assert got == naive_runs(values, L)


@settings(max_examples=100, deadline=None)
@given(ws=st.sampled_from([4, 8]), mfns=st.lists(st.integers(0, 60), min_size=1, max_size=80),
       missing=st.lists(st.booleans(), min_size=80, max_size=80))
def test_duplicates_match_reference(ws, mfns, missing):
    L = layout_for(ws)
    values = [L.invalid if missing[i] else m for i, m in enumerate(mfns)]
    table = P2MTable(np.array(values, dtype=L.numpy_dtype), L)
    total, examples = table.duplicate_mfns(examples=1000)
    valid = [v for v in values if v != L.invalid]
    assert total == len(valid) - len(set(valid))
    for mfn, a, b in examples:
        assert a != b and values[a] == mfn and values[b] == mfn


def test_lookup_inverse_and_pfns_of():
    L = layout_for(4)
    vals = [5, 6, L.invalid, 5, L.identity_entry(4), L.foreign_entry(5)]
    t = P2MTable(np.array(vals, dtype="<u4"), L)
    assert t.inverse() == {5: [0, 3], 6: [1]}
    assert t.pfns_of(5) == [0, 3]
    assert t.lookup(2)["kind"] == "missing" and t.lookup(2)["mfn"] is None
    assert t.lookup(100)["kind"] == "missing"
    assert t.lookup(4) == {"pfn": 4, "raw": L.identity_entry(4), "kind": "identity", "mfn": 4}


def test_unique_helper_agrees_with_numpy():
    """p2mdump.arrays.unique (used to avoid numpy.unique's numpy.ma import)
    gives numpy.unique's answers."""
    from p2mdump.arrays import unique

    rng = np.random.default_rng(7)
    for n in (0, 1, 2, 17, 1000):
        for hi in (1, 3, 1 << 40):
            v = rng.integers(0, hi, size=n, dtype=np.uint64)
            assert np.array_equal(unique(v), np.unique(v))
            u, inv, cnt = unique(v, return_inverse=True, return_counts=True)
            nu, ninv, ncnt = np.unique(v, return_inverse=True, return_counts=True)
            assert np.array_equal(u, nu) and np.array_equal(inv, ninv.reshape(-1))
            assert np.array_equal(cnt, ncnt)
            u2, c2 = unique(v, return_counts=True)
            assert np.array_equal(u2, nu) and np.array_equal(c2, ncnt)
