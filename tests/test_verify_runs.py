"""verify's table checks over runs agree with the per-entry checks they
replaced (kept here, as they were, as the reference) on random damaged tables."""
import importlib
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2mdump import findings as F
from p2mdump.crosscheck import pfn_runs
from p2mdump.layout import LAYOUT32, LAYOUT64, LEVEL_LEAF
from p2mdump.table import FOREIGN, IDENTITY, MISSING, VALID, P2MTable, classify
from p2mdump.verify import (BAD_FLAGS, EXAMPLES, FOREIGN_ENTRIES, FOREIGN_OWN_MFN,
                            GARBAGE_FRACTION, IDENTITY_MISMATCH, MFN_MAX_64)

# the module (the package's ``verify`` is the function)
V = importlib.import_module("p2mdump.verify")


def ref_ranges(pfns, limit=EXAMPLES):
    firsts, lasts = pfn_runs(pfns)
    return [[a, b] for a, b in zip(firsts[:limit].tolist(), lasts[:limit].tolist())]


# -- the reference: verify's checks entry by entry, as they were -------------
def ref_table_checks(res) -> list:
    table, L = res.table, res.layout
    out = []
    ib = L.identity_bit
    rest_mask = L.word_mask & ~L.flag_mask
    mism: list[int] = []
    mism_n = 0
    both: list[int] = []
    both_n = 0
    foreign_pfns = []
    foreign_mfns = []
    for start, chunk in table.chunks():
        c = chunk.astype(np.uint64)
        codes = classify(chunk, L)
        pfns = np.arange(start, start + len(c), dtype=np.uint64)
        flags = c & np.uint64(L.flag_mask)
        bad_both = (flags == np.uint64(L.flag_mask)) & (c != np.uint64(L.invalid))
        idm = (codes == IDENTITY) & ~bad_both & ((c & np.uint64(rest_mask)) != pfns)
        n = int(idm.sum())
        if n:
            mism_n += n
            if len(mism) < EXAMPLES:
                mism += (np.flatnonzero(idm)[:EXAMPLES] + start).tolist()
        n = int(bad_both.sum())
        if n:
            both_n += n
            if len(both) < EXAMPLES:
                both += (np.flatnonzero(bad_both)[:EXAMPLES] + start).tolist()
        fo = np.flatnonzero((codes == FOREIGN) & ~bad_both)
        if len(fo):
            foreign_pfns.append(fo + start)
            foreign_mfns.append(c[fo] & np.uint64(rest_mask))
    if mism_n:
        ex = [{"pfn": p, "raw": table.entry(p), "expected": p | ib} for p in mism[:EXAMPLES]]
        out.append(F.Finding(IDENTITY_MISMATCH, F.WARNING,
                             f"{mism_n} identity entries do not hold their own pfn "
                             f"(first: pfn {mism[0]:#x} holds {table.entry(mism[0]):#x}, "
                             f"expected {mism[0] | ib:#x})",
                             level=LEVEL_LEAF, count=mism_n, pfn_first=mism[0], examples=ex))
    if both_n:
        out.append(F.Finding(BAD_FLAGS, F.WARNING,
                             f"{both_n} entries carry both the IDENTITY and the FOREIGN bit "
                             f"(first: pfn {both[0]:#x} = {table.entry(both[0]):#x})",
                             level=LEVEL_LEAF, count=both_n, pfn_first=both[0],
                             examples=[{"pfn": p, "raw": table.entry(p)} for p in both]))
    if foreign_pfns:
        fp = np.concatenate(foreign_pfns)
        fm = np.concatenate(foreign_mfns)
        rng = ref_ranges(fp)
        out.append(F.Finding(FOREIGN_ENTRIES, F.INFO,
                             f"{len(fp)} foreign (grant-mapped) entries, first ranges: "
                             + ", ".join(f"{a:#x}-{b:#x}" for a, b in rng),
                             level=LEVEL_LEAF, count=len(fp), pfn_first=int(fp[0]),
                             pfn_last=int(fp[-1]),
                             examples=[{"pfns": r} for r in rng]))
        own = ref_in_valid_runs(table, fm)
        if own.any():
            i = np.flatnonzero(own)
            out.append(F.Finding(FOREIGN_OWN_MFN, F.WARNING,
                                 f"{len(i)} foreign entries name a machine frame the guest also "
                                 f"maps as its own (first: pfn {int(fp[i[0]]):#x} -> "
                                 f"mfn {int(fm[i[0]]):#x})",
                                 level=LEVEL_LEAF, count=len(i), pfn_first=int(fp[i[0]]),
                                 mfn=int(fm[i[0]]),
                                 examples=[{"pfn": int(fp[k]), "mfn": int(fm[k])}
                                           for k in i[:EXAMPLES].tolist()]))
    return out


def ref_in_valid_runs(table, mfns: np.ndarray) -> np.ndarray:
    """Per mfn: inside a run of the table's valid entries."""
    starts, ends, codes, first = table.run_arrays()
    sel = codes == VALID
    if not sel.any():
        return np.zeros(len(mfns), dtype=bool)
    m0 = first[sel].astype(np.uint64)
    m1 = m0 + (ends[sel] - starts[sel]).astype(np.uint64)
    order = np.argsort(m0, kind="stable")
    m0, m1 = m0[order], np.maximum.accumulate(m1[order])
    pos = np.searchsorted(m0, mfns, side="right") - 1
    ok = pos >= 0
    pos = np.maximum(pos, 0)
    return ok & (mfns < m1[pos])


def ref_garbage_rows(res) -> tuple:
    """Leaf pages of the table whose entries mostly do not decode."""
    table, L = res.table, res.layout
    fpp = L.per_page
    n_rows = len(table) // fpp
    if not n_rows:
        return [], []
    mfn_max = np.uint64(min(MFN_MAX_64, L.identity_bit - 1))
    rest_mask = np.uint64(L.word_mask & ~L.flag_mask)
    bad_rows = []
    bad_counts = []
    rows_per = max(1, (1 << 22) // fpp)
    for r0 in range(0, n_rows, rows_per):
        r1 = min(n_rows, r0 + rows_per)
        c = table.raw[r0 * fpp:r1 * fpp].astype(np.uint64)
        codes = classify(table.raw[r0 * fpp:r1 * fpp], L)
        pfns = np.arange(r0 * fpp, r1 * fpp, dtype=np.uint64)
        rest = c & rest_mask
        flags = c & np.uint64(L.flag_mask)
        inv = codes == MISSING
        garbage = ~inv & (
            ((flags == np.uint64(L.flag_mask)))
            | ((codes == VALID) & ((c == 0) | (c > mfn_max)))
            | ((codes == IDENTITY) & (rest != pfns))
            | ((codes == FOREIGN) & ((rest == 0) | (rest > mfn_max))))
        per_row = garbage.reshape(-1, fpp).sum(axis=1)
        hit = np.flatnonzero(per_row > GARBAGE_FRACTION * fpp)
        bad_rows += (hit + r0).tolist()
        bad_counts += per_row[hit].tolist()
    return bad_rows, bad_counts


# -- random damaged tables ----------------------------------------------------
def damaged_table(layout, seed: int, n: int) -> np.ndarray:
    """Runs of every kind, some of them wrong: identity runs off by a shift,
    valid and foreign runs crossing MFN 0 or the MFN limit, foreign mfns the
    guest also maps, both flag bits, words next to INVALID, random words."""
    rng = np.random.default_rng(seed)
    L = layout
    dt = np.dtype(L.numpy_dtype)
    out = np.empty(n, dtype=dt)
    limit = min(MFN_MAX_64, L.identity_bit - 1)
    p = 0
    while p < n:
        ln = int(min(n - p, rng.choice([1, 2, 3, 7, 64, 300, 600, 1500])))
        k = int(rng.integers(0, 11))
        pf = np.arange(p, p + ln, dtype=np.uint64)
        if k == 0:
            v = np.full(ln, L.invalid, dtype=np.uint64)
        elif k == 1:      # valid, anywhere / around 0 / across the limit
            m0 = int(rng.choice([rng.integers(0, 4 * n), 0, limit - ln // 2, limit + 3]))
            v = np.uint64(m0) + np.arange(ln, dtype=np.uint64)
        elif k in (2, 3):  # identity, right or shifted
            shift = 0 if k == 2 else int(rng.integers(-3, 4))
            v = np.arange(max(0, p + shift), max(0, p + shift) + ln,
                          dtype=np.uint64) | np.uint64(L.identity_bit)
        elif k == 4:      # foreign: own mfns, around 0, across the limit
            m0 = int(rng.choice([rng.integers(0, 4 * n), 0, limit - ln // 2]))
            v = (np.uint64(m0) + np.arange(ln, dtype=np.uint64)) | np.uint64(L.foreign_bit)
        elif k == 5:      # identity with the FOREIGN bit on some entries
            v = pf | np.uint64(L.identity_bit)
            v[rng.random(ln) < 0.4] |= np.uint64(L.foreign_bit)
        elif k == 6:      # shifted identity, some with both bits
            v = (pf + np.uint64(5)) | np.uint64(L.identity_bit)
            v[rng.random(ln) < 0.3] |= np.uint64(L.foreign_bit)
        elif k == 7:      # words next to INVALID and 0
            v = rng.choice(np.array([L.invalid - 1, L.invalid - 2, 0, 1, L.flag_mask,
                                     L.identity_bit, L.foreign_bit, L.invalid],
                                    dtype=np.uint64), ln)
        elif k == 8:      # random words
            v = rng.integers(0, L.word_mask, ln, dtype=np.uint64, endpoint=True)
        else:             # valid, mostly steps by one, a few holes
            v = np.uint64(rng.integers(1, 4 * n)) + np.arange(ln, dtype=np.uint64)
            v[rng.random(ln) < 0.05] = L.invalid
        out[p:p + ln] = v.astype(dt)
        p += ln
    return out


def result(raw, layout):
    return SimpleNamespace(table=P2MTable(raw, layout), layout=layout, representation="list",
                           top_mfn=None)


def new_checks(res):
    scan = V._scan_entries(res.table, res.layout)
    rows = [] if scan.per_row is None else scan.per_row
    bad = [i for i, c in enumerate(rows) if c > GARBAGE_FRACTION * res.layout.per_page]
    return (V._table_checks(res, scan), bad, [int(rows[i]) for i in bad],
            V._garbage_leaves(None, res, scan))


def assert_same(raw, layout):
    res = result(raw, layout)
    ref = ref_table_checks(result(raw.copy(), layout))
    ref_rows, ref_counts = ref_garbage_rows(result(raw.copy(), layout))
    got, rows, counts, garbage = new_checks(res)
    assert [f.to_dict() for f in got] == [f.to_dict() for f in ref]
    assert (rows, counts) == (ref_rows, ref_counts)
    assert len(garbage) == (1 if ref_rows else 0)
    if garbage:
        assert garbage[0].count == len(ref_rows)
        assert garbage[0].pfn_first == ref_rows[0] * layout.per_page


@pytest.mark.parametrize("layout", [LAYOUT64, LAYOUT32], ids=["64", "32"])
@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(0, 9000))
def test_runs_agree_with_entries(layout, seed, n):
    assert_same(damaged_table(layout, seed, n), layout)


@pytest.mark.parametrize("layout", [LAYOUT64, LAYOUT32], ids=["64", "32"])
def test_small_chunks_agree(layout, monkeypatch):
    """Identity spans cut into many chunks give the same counts and examples."""
    monkeypatch.setattr(V, "CHUNK", 97)
    for seed in range(20):
        assert_same(damaged_table(layout, seed, 6000), layout)


def test_finds_each_kind():
    """The random tables do exercise every check (the comparison is not
    between two empty lists)."""
    kinds = set()
    for seed in range(10):
        got, rows, _, _ = new_checks(result(damaged_table(LAYOUT64, seed, 9000), LAYOUT64))
        kinds |= {f.kind for f in got}
        if rows:
            kinds.add("garbage")
    assert kinds == {IDENTITY_MISMATCH, BAD_FLAGS, FOREIGN_ENTRIES, FOREIGN_OWN_MFN, "garbage"}
