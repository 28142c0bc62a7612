"""The map's kind bins and kind boundaries, taken from the table's runs, are
those of classifying every entry (the reference below, how the map counted
them before), and the picture is byte for byte the same."""
from __future__ import annotations

import json
import os
from unittest import mock

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import p2mdump.mapsvg as M
from p2mdump.autowalk import walk_image
from p2mdump.layout import layout_for
from p2mdump.sources import open_image
from p2mdump.table import CHUNK, P2MTable, classify

from conftest import FIXTURES


def bins_by_entry(table, nbins, chunk=CHUNK):
    n = len(table)
    size = max(1, -(-n // nbins))
    nb = max(1, -(-n // size))
    counts = np.zeros(nb * 4, dtype=np.int64)
    for start, part in table.chunks(chunk):
        codes = classify(part, table.layout).astype(np.int64)
        bins = (np.arange(start, start + len(part), dtype=np.int64) // size) * 4 + codes
        counts += np.bincount(bins, minlength=nb * 4)[:nb * 4]
    return size, counts.reshape(nb, 4)


def boundaries_by_entry(table, chunk=CHUNK, cap=M.MAX_BOUNDARIES):
    pos, before, after = [], [], []
    prev = None
    total = 0
    for start, part in table.chunks(chunk):
        codes = classify(part, table.layout)
        b = np.flatnonzero(codes[1:] != codes[:-1]) + 1
        if prev is not None and codes[0] != prev:
            pos.append(np.array([start]))
            before.append(np.array([prev], dtype=np.uint8))
            after.append(codes[:1])
        pos.append(b + start)
        before.append(codes[b - 1])
        after.append(codes[b])
        total += len(b)
        prev = codes[-1]
        if total > cap:
            break
    if not pos:
        return np.zeros(0, np.int64), np.zeros(0, np.uint8), np.zeros(0, np.uint8)
    return (np.concatenate(pos).astype(np.int64), np.concatenate(before),
            np.concatenate(after))


def random_table(rng, ws: int) -> P2MTable:
    """Entries of every kind in runs and alone, runs across a flag bit,
    up to INVALID and wrapping past it to 0."""
    L = layout_for(ws)
    dt = np.dtype(L.numpy_dtype)
    top = L.word_mask
    flag_edge = 1 << (L.bits - 2)
    parts = []
    for _ in range(int(rng.integers(1, 30))):
        k = int(rng.integers(1, 40))
        kind = rng.integers(0, 8)
        if kind == 0:
            parts.append(np.full(k, L.invalid, dtype=np.uint64))
        elif kind == 1:
            parts.append(np.uint64(rng.integers(0, 1 << 20)) + np.arange(k, dtype=np.uint64))
        elif kind == 2:
            parts.append((np.uint64(rng.integers(0, 1 << 20)) + np.arange(k, dtype=np.uint64))
                         | np.uint64(L.identity_bit | (L.foreign_bit if rng.integers(0, 2) else 0)))
        elif kind == 3:
            parts.append((np.uint64(rng.integers(0, 1 << 20)) + np.arange(k, dtype=np.uint64))
                         | np.uint64(L.foreign_bit))
        elif kind == 4:        # across the lower flag bit, and across the upper one
            edge = flag_edge * int(rng.integers(1, 3))
            parts.append(np.arange(edge - k // 2, edge - k // 2 + k, dtype=np.uint64))
        elif kind == 5:        # up to INVALID and past it (wraps to 0)
            parts.append((np.arange(k, dtype=np.uint64) + np.uint64(top - k // 2))
                         & np.uint64(top))
        else:
            parts.append(rng.integers(0, top, k, dtype=np.uint64, endpoint=True))
    raw = np.concatenate(parts).astype(dt)
    return P2MTable(raw, L)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2 ** 32 - 1), ws=st.sampled_from([4, 8]),
       nbins=st.sampled_from([1, 3, 7, 64, 1040]), chunk=st.sampled_from([5, 64, CHUNK]),
       cap=st.sampled_from([0, 3, 40, M.MAX_BOUNDARIES]))
def test_runs_give_the_entries_answer(seed, ws, nbins, chunk, cap):
    table = random_table(np.random.default_rng(seed), ws)
    size, counts = M.kind_bins(table, nbins)
    ref_size, ref_counts = bins_by_entry(table, nbins)
    assert size == ref_size
    assert counts.dtype == ref_counts.dtype and np.array_equal(counts, ref_counts)
    with mock.patch.object(M, "CHUNK", chunk), mock.patch.object(M, "MAX_BOUNDARIES", cap):
        got = M.kind_boundaries(table)
    want = boundaries_by_entry(table, chunk, cap)
    for g, w in zip(got, want):
        assert g.dtype == w.dtype and np.array_equal(g, w)


def test_empty_table():
    table = P2MTable(np.zeros(0, dtype="<u8"), layout_for(8))
    assert M.kind_bins(table, 10)[1].tolist() == bins_by_entry(table, 10)[1].tolist()
    assert all(len(a) == 0 for a in M.kind_boundaries(table))


@pytest.mark.parametrize("name", ["guest64.img", "e820-64.img", "scattered64.img",
                                  "list32.img", "core32.core", "both64.img"])
def test_same_picture(name):
    path = os.path.join(FIXTURES, name)
    with open(path + ".json") as fh:
        side = json.load(fh)
    with open_image(path) as source:
        result, _ = walk_image(source, None, sidecar=side)
    new = M.render_map(result.table, title=name)
    with mock.patch.object(M, "kind_bins", bins_by_entry), \
            mock.patch.object(M, "kind_boundaries", boundaries_by_entry):
        old = M.render_map(P2MTable(result.table.raw, result.layout), title=name)
    assert new == old
