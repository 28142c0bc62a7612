"""The shared array helpers (p2mdump.arrays) against plain loops, and the
stream spool that uses them."""
import os
import threading

import numpy as np
from hypothesis import given, settings, strategies as st

from p2mdump.arrays import grouped, nonzero_pages, step_runs, true_runs
from p2mdump.sources.spool import spool


@given(st.lists(st.integers(0, 40), max_size=60), st.lists(st.integers(0, 40), max_size=60))
@settings(max_examples=200, deadline=None)
def test_step_runs(a, b):
    n = min(len(a), len(b))
    x, y = np.array(a[:n]), np.array(b[:n])
    want, start = [], 0
    for i in range(1, n + 1):
        if i == n or x[i] != x[i - 1] + 1 or y[i] != y[i - 1] + 1:
            want.append((start, i))
            start = i
    assert step_runs(x, y) == want


@given(st.lists(st.tuples(st.integers(0, 9), st.integers(1, 5), st.integers(0, 99),
                          st.integers(0, 99)), max_size=60))
@settings(max_examples=200, deadline=None)
def test_grouped(items):
    values, weights, firsts, lasts = (np.array([it[k] for it in items], dtype=np.int64)
                                      for k in range(4))
    uniq, total, first, last = grouped(values.astype(np.uint64), weights, firsts, lasts)
    want = sorted(set(values.tolist()))
    assert uniq.tolist() == want
    for u, t, f, la in zip(want, total.tolist(), first.tolist(), last.tolist()):
        at = [it for it in items if it[0] == u]
        assert (t, f, la) == (sum(it[1] for it in at), min(it[2] for it in at),
                              max(it[3] for it in at))


@given(st.lists(st.booleans(), max_size=80), st.data())
@settings(max_examples=200, deadline=None)
def test_true_runs(mask, data):
    m = np.array(mask, dtype=bool)
    a = data.draw(st.integers(0, len(m)))
    b = data.draw(st.integers(a, len(m)))
    got = [i for c, d in true_runs(m, a, b) for i in range(c, d)]
    assert got == [i for i in range(a, b) if m[i]]
    assert all(d > c for c, d in true_runs(m, a, b))


def test_nonzero_pages_and_the_spool_keep_every_byte(tmp_path):
    rng = np.random.default_rng(3)
    pages = rng.integers(0, 256, (700, 4096), dtype=np.uint8)
    pages[rng.random(700) < 0.6] = 0
    pages[5, 4095] = 1                        # one byte at a page's end
    assert nonzero_pages(pages.reshape(-1), 700).tolist() == pages.any(axis=1).tolist()
    data = pages.tobytes() + b"tail"           # > one spool chunk, a partial last page
    fifo = str(tmp_path / "s.fifo")
    os.mkfifo(fifo)

    def write():
        with open(fifo, "wb") as fh:
            fh.write(data)

    t = threading.Thread(target=write)
    t.start()
    sp = spool(fifo)
    t.join()
    try:
        with open(sp.path, "rb") as fh:
            assert fh.read() == data
        assert os.fstat(sp.file.fileno()).st_blocks * 512 < len(data)   # holes stayed holes
    finally:
        sp.close()
