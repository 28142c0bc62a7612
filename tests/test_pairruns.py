"""The run index of .xen_p2m (sources/pairruns.py and XcCoreSource's use of it)
against a brute-force dict: any pair order, repeated values, padding."""
import os
import shutil

import numpy as np
from hypothesis import given, settings, strategies as st

from conftest import FIXTURES
from p2mdump.crosscheck import crosscheck, crosscheck_chunks
from p2mdump.layout import PAGE_SIZE, Layout
from p2mdump.schemas import xen_core as X
from p2mdump.sources import open_image
from p2mdump.sources.elf import ElfFile
from p2mdump.sources import pairruns
from p2mdump.sources.pairruns import (PieceFinder, merge_continuing, merge_pieces,
                                       resolve)
from p2mdump.table import P2MTable


def brute(values, pages):
    """{value: first page}, the repeat count and the (value, page, next page)
    triples of repeated values in value order."""
    first: dict = {}
    where: dict = {}
    for v, p in zip(values, pages):
        first.setdefault(v, p)
        where.setdefault(v, []).append(p)
    triples = [(v, a, b) for v in sorted(where) for a, b in zip(where[v], where[v][1:])]
    return first, len(values) - len(first), triples


def interleaved(pfns, gmfns) -> np.ndarray:
    pairs = np.empty(2 * len(pfns), dtype=np.uint64)
    pairs[0::2], pairs[1::2] = pfns, gmfns
    return pairs


def fed(pfns, gmfns, pages, cuts):
    """merge_pieces() of the pieces of the pairs fed in chunks cut at ``cuts``,
    as XcCoreSource builds them."""
    f = PieceFinder()
    p = np.array(pages, dtype=np.int64)
    edges = [0] + sorted(c % (len(p) + 1) for c in cuts) + [len(p)]
    parts = [f.pieces(interleaved(pfns[a:e], gmfns[a:e]), p[a:e]) for a, e in zip(edges, edges[1:])]
    return merge_pieces(*(np.concatenate([q[i] for q in parts]) for i in range(4)))


def built(values, pages, cuts):
    """resolve() of the runs of ``values`` fed in chunks cut at ``cuts`` (as
    the gmfn column, next to pfns that always step by one)."""
    v = np.array(values, dtype=np.uint64)
    _, gs, pp, pn = fed(np.arange(len(v), dtype=np.uint64), v, pages, cuts)
    return resolve(*merge_continuing(gs, pp, pn))


def check(values, pages, cuts=()):
    ix = built(values, pages, cuts)
    first, repeats, triples = brute(values, pages)
    assert ix.repeats == repeats
    assert ix.examples == triples[:5]
    # disjoint runs sorted by value
    ends = ix.starts + ix.lengths.astype(np.uint64)
    assert (ix.starts[1:] >= ends[:-1]).all()
    assert int(ix.lengths.sum()) == len(first)
    probe = sorted(set(values) | {v + 1 for v in values} | {max(v - 1, 0) for v in values})
    got_pages, held = ix.locate(np.array(probe, dtype=np.uint64))
    for v, page, h in zip(probe, got_pages.tolist(), held.tolist()):
        assert h == (v in first)
        assert ix.find(v)[0] == first.get(v, -1)
        if h:
            assert page == first[v]
            page_, avail = ix.find(v)
            # the pages that follow in the run hold the next values
            for k in range(min(avail, 3)):
                assert first.get(v + k) == page_ + k
    assert ix.end() == (max(first) + 1 if first else 0)


def test_runs_of_a_dump_in_xen_order():
    # pfn-ascending, gmfns in stretches of 4, a gap, then padding pages
    pfns = list(range(0, 10)) + list(range(20, 30))
    gmfns = [1000 + 4 * (i // 4) * 3 + i % 4 for i in range(20)]
    pages = list(range(20))
    ix = built(gmfns, pages, [7, 13])
    assert ix.repeats == 0 and len(ix) == 5
    check(gmfns, pages, [7, 13])
    check(pfns, pages, [3])


def test_repeated_values_first_page_wins():
    values = [5, 6, 7, 8, 6, 7, 100, 7, 8, 9]
    pages = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]
    ix = built(values, pages, [])
    assert ix.repeats == 4
    assert ix.examples == [(6, 1, 4), (7, 2, 5), (7, 5, 7), (8, 3, 8)]
    check(values, pages, [2, 5])


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 40), st.integers(1, 6), st.integers(1, 3)),
                min_size=0, max_size=25),
       st.lists(st.integers(0, 200), max_size=4), st.randoms(use_true_random=False))
def test_random_pairs_against_a_dict(stretches, cuts, rnd):
    """Stretches of consecutive values (some overlapping: repeats), in a
    shuffled order, on pages with gaps (padding) between some of them."""
    values, pages = [], []
    page = 0
    rnd.shuffle(stretches)
    for start, length, gap in stretches:
        values += range(start, start + length)
        pages += range(page, page + length)
        page += length + (gap - 1)
    check(values, pages, cuts)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 2 ** 64 - 2), max_size=30))
def test_any_values_against_a_dict(values):
    check(values, list(range(len(values))))


# -- an xl dump-core whose pairs are shuffled, repeated and padded ------------------------

def _rewrite_pairs(tmp_path, rnd):
    src = os.path.join(FIXTURES, "core64.core")
    path = str(tmp_path / "core64.core")
    shutil.copyfile(src, path)
    f = ElfFile(path)
    sec = f.section(X.SEC_P2M)
    f.close()
    with open(path, "r+b") as fh:
        fh.seek(sec.offset)
        pairs = np.frombuffer(fh.read(sec.size), dtype="<u8").reshape(-1, 2).copy()
        n = len(pairs)
        order = np.arange(n)
        rnd.shuffle(order)            # pairs move: the pages they name stay put
        pairs = pairs[order]
        pairs[3] = pairs[7]           # a repeated pair (pfn and gmfn)
        pairs[10, 1] = pairs[20, 1]   # a repeated gmfn
        pairs[15] = X.INVALID_PFN     # padding in the middle
        pairs[16, 0] = X.INVALID_PFN  # half padding
        fh.seek(sec.offset)
        fh.write(pairs.tobytes())
    return path, pairs


def test_xc_core_frames_by_mfn_against_a_dict(tmp_path):
    import random

    path, pairs = _rewrite_pairs(tmp_path, random.Random(7))
    inv = X.INVALID_PFN
    first: dict = {}
    for k, (p, g) in enumerate(pairs.tolist()):
        if p != inv and g != inv:
            first.setdefault(g, k)
    with open_image(path) as src:
        kinds = {f.kind for f in src.container_findings()}
        assert {"dump-unsorted", "dump-duplicate-pfn", "dump-duplicate-gmfn",
                "container"} <= kinds
        probe = sorted(first) + [max(first) + 1, min(first) - 1 if min(first) else 1 << 50]
        present = src.frames_present(np.array(probe, dtype=np.uint64))
        fd, offsets = src.frame_offsets(np.array(probe, dtype=np.uint64))
        for m, here, off in zip(probe, present.tolist(), offsets.tolist()):
            page = first.get(m, -1)
            assert src.page_of(m) == page and here == (page >= 0)
            assert off == (src.pages.offset + page * PAGE_SIZE if page >= 0 else -1)
            data = src.read_frame(m)
            if page >= 0:
                assert data == os.pread(fd, PAGE_SIZE, off)
            else:
                assert data is None
        held = sorted(first)
        runs = src.frame_runs()
        assert [m for a, c in runs for m in range(a, a + c)] == held
        assert src.frame_limit() == held[-1] + 1
        pfns, gmfns = src.pairs()
        use = (pairs[:, 0] != inv) & (pairs[:, 1] != inv)
        assert pfns.tolist() == pairs[use, 0].tolist()
        assert gmfns.tolist() == pairs[use, 1].tolist()


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 70), st.integers(0, 40)), max_size=60),
       st.integers(1, 7))
def test_crosscheck_in_chunks_equals_one_chunk(pairs, chunk):
    """The streamed cross-check does not depend on where the chunks are cut
    (here against a table with valid, missing, identity and foreign pfns)."""
    lay = Layout(8)
    raw = np.arange(100, 164, dtype=np.uint64)
    raw[5:9] = lay.invalid
    raw[20:22] |= np.uint64(lay.identity_bit)
    raw[30] |= np.uint64(lay.foreign_bit)
    table = P2MTable(raw, lay)
    pf = np.array([p for p, _ in pairs], dtype=np.uint64)
    gm = np.array([100 + p if g % 5 else g for p, g in pairs], dtype=np.uint64)
    whole = crosscheck(table, pf, gm)
    parts = [(pf[a:a + chunk], gm[a:a + chunk]) for a in range(0, len(pf), chunk)]
    assert [f.to_dict() for f in crosscheck_chunks(table, parts)] == \
        [f.to_dict() for f in whole]
    seen = set(pf.tolist())
    lacking = [p for p in range(64) if p not in seen and not 5 <= p < 9
               and p not in (20, 21, 30)]
    f = {x.kind: x for x in whole}
    assert (f["dump-lacks-pfn"].count if "dump-lacks-pfn" in f else 0) == len(lacking)
    bad = sum(1 for p, g in zip(pf.tolist(), gm.tolist())
              if p < 64 and int(raw[p]) >> 62 == 0 and int(raw[p]) != g)
    assert (f["dump-gmfn-mismatch"].count if "dump-gmfn-mismatch" in f else 0) == bad



@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 70), st.integers(1, 5), st.integers(1, 3),
                          st.booleans()), max_size=20),
       st.randoms(use_true_random=False))
def test_pieces_rebuild_the_pairs_and_agree_only_when_the_check_is_clean(stretches, rnd):
    """The pieces expand back to the pairs; pieces_agree() is True exactly
    when the full cross-check finds nothing."""
    from p2mdump.crosscheck import pieces_agree

    lay = Layout(8)
    raw = np.arange(500, 564, dtype=np.uint64)
    raw[40:44] = lay.invalid
    rnd.shuffle(stretches)
    pfns, gmfns, pages = [], [], []
    page = 0
    for start, length, gap, wrong in stretches:
        for k in range(length):
            pfns.append(start + k)
            gmfns.append(500 + start + k + (7 if wrong and k == 0 else 0))
            pages.append(page + k)
        page += length + gap - 1
    ps, gs, _, ns = fed(np.array(pfns, dtype=np.uint64), np.array(gmfns, dtype=np.uint64),
                        pages, [rnd.randrange(len(pages) + 1) for _ in range(3)])
    assert [p + k for p, n in zip(ps.tolist(), ns.tolist()) for k in range(n)] == pfns
    assert [g + k for g, n in zip(gs.tolist(), ns.tolist()) for k in range(n)] == gmfns
    if len(set(pfns)) < len(pfns):
        return      # repeated pfns: the source keeps no pieces
    table = P2MTable(raw, lay)
    full = crosscheck(table, np.array(pfns, dtype=np.uint64), np.array(gmfns, dtype=np.uint64))
    assert pieces_agree(table, ps, gs, ns) == (full == [])


def test_a_clean_dump_is_checked_by_its_pieces(tmp_path):
    from p2mdump.crosscheck import crosscheck_source

    with open_image(os.path.join(FIXTURES, "core64.core")) as src:
        assert src.pair_pieces() is not None
        from p2mdump.walker import walk

        r = walk(src, src.top_mfn_hint, word_size=8, max_pfn=src.max_pfn_hint)
        assert crosscheck_source(r.table, src) == [] == crosscheck(r.table, *src.pairs())


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2 ** 64 - 2), st.integers(0, 2 ** 64 - 2),
                          st.integers(1, 9)), max_size=12),
       st.integers(1, 7))
def test_piece_starts_match_their_definition_across_blocks(stretches, block):
    """PieceFinder.starts(): the pairs whose pfn or gmfn is not the one before
    plus one, whatever the block size (blocks of 1-7 pairs here)."""
    pfns, gmfns = [], []
    for p, g, n in stretches:
        for k in range(n):        # values stay below 2^64 - 1 (padding is removed first)
            pfns.append(min(p + k, 2 ** 64 - 2))
            gmfns.append(min(g + k, 2 ** 64 - 2))
    want = [i for i in range(len(pfns))
            if i == 0 or pfns[i] != pfns[i - 1] + 1 or gmfns[i] != gmfns[i - 1] + 1]
    old = pairruns.PIECE_BLOCK
    pairruns.PIECE_BLOCK = block
    try:
        got = PieceFinder().starts(interleaved(pfns, gmfns)).tolist()
    finally:
        pairruns.PIECE_BLOCK = old
    assert got == (want or [0])


def test_pieces_break_where_the_pages_do():
    pairs = interleaved([10, 11, 12, 13], [50, 51, 52, 53])
    ps, gs, pp, pn = PieceFinder().pieces(pairs, np.array([0, 1, 3, 4], dtype=np.int64))
    assert (ps.tolist(), gs.tolist(), pp.tolist(), pn.tolist()) == ([10, 12], [50, 52],
                                                                    [0, 3], [2, 2])
    ps, gs, pp, pn = PieceFinder().pieces(pairs, None, first=7)
    assert (ps.tolist(), pp.tolist(), pn.tolist()) == ([10], [7], [4])
