"""A table that is never held: the run scan fed in pieces, the walk that
hands its table on window by window, and verify that checks a tree that way.

Each gives exactly what the in-memory table gives, on random damaged tables
and trees, with the windows cut small so that runs, identity spans and
damage straddle them."""
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2mdump import listwalk
from p2mdump import table as T
from p2mdump import tablerows
from p2mdump.autowalk import resolve, walk_resolved
from p2mdump import walker as W
from p2mdump.errors import P2MDumpError
from p2mdump.layout import LAYOUT32, LAYOUT64, layout_for
from p2mdump.sidecar import read_sidecar
from p2mdump.sources import open_image
from p2mdump.sources.raw import RawImage
from p2mdump.table import P2MTable, RunScanner, StreamedTable
from p2mdump.verify import verify
from p2mdump.writer import GuestSpec, generate
from p2mdump.writer.listcontainers import generate_list_container
from p2mdump.writer.listguest import PAGE_PRIVATE
from test_verify_runs import damaged_table

LAYOUTS = pytest.mark.parametrize("layout", [LAYOUT64, LAYOUT32], ids=["64", "32"])


def fed_in_pieces(raw, layout, rng, most=700):
    scanner = RunScanner(layout)
    p = 0
    while p < len(raw):
        k = int(rng.integers(1, most))
        seg, codes = scanner.feed(raw[p:p + k])
        piece = raw[p:p + k]
        # the segments cover the piece, each of one kind
        assert seg[0] == 0 and np.all(np.diff(seg) > 0)
        ends = np.append(seg[1:], len(piece))
        for s, e, c in zip(seg.tolist(), ends.tolist(), codes.tolist()):
            assert np.all(T.classify(piece[s:e], layout) == c)
        p += k
    return StreamedTable(scanner)


def assert_same_runs(a, b):
    assert a.counts() == b.counts()
    assert len(a) == len(b)
    for x, y in zip(a.run_arrays(), b.run_arrays()):
        assert np.array_equal(x, y)
    assert a.duplicate_mfns() == b.duplicate_mfns()


@LAYOUTS
@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(0, 6000), most=st.integers(2, 900))
def test_pieces_give_the_runs_of_the_whole(layout, seed, n, most):
    raw = damaged_table(layout, seed, n)
    rng = np.random.default_rng(seed)
    assert_same_runs(fed_in_pieces(raw, layout, rng, most), P2MTable(raw, layout))


@LAYOUTS
def test_kind_changes_at_a_piece_boundary(layout, monkeypatch):
    """Runs whose raw words step by one across a kind boundary (a carry into
    a flag bit, INVALID-1 -> INVALID -> 0) are split the same way whether the
    boundary falls inside a piece, inside a block, or between pieces."""
    monkeypatch.setattr(T, "BLOCK", 5)
    mask = layout.word_mask
    edges = [layout.identity_bit, layout.foreign_bit, layout.flag_mask, layout.invalid]
    raw = np.concatenate([(np.arange(e - 6, e + 6, dtype=np.uint64) & np.uint64(mask))
                          for e in edges] + [np.full(4, layout.invalid, np.uint64)])
    raw = raw.astype(layout.numpy_dtype)
    whole = P2MTable(raw, layout)
    for cut in range(1, len(raw)):
        scanner = RunScanner(layout)
        scanner.feed(raw[:cut])
        scanner.feed(raw[cut:])
        assert_same_runs(StreamedTable(scanner), whole)


def test_empty_stream():
    t = StreamedTable(RunScanner(LAYOUT64))
    assert len(t) == 0 and t.counts() == P2MTable(np.zeros(0, np.uint64), LAYOUT64).counts()
    assert t.duplicate_mfns() == (0, [])


# -- trees --------------------------------------------------------------------

def damaged_guest(tmp_path, seed: int, word_size: int):
    """A generated guest with random damage in its tree pages; (path, tree)."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 6)) * 0x1000 + int(rng.integers(0, 0x400))
    spec = GuestSpec(word_size=word_size, max_pfn=n, ram=[(0, n)],
                     identity=[(0xA0, 0x100), (0x1000, 0x1000 + int(rng.integers(1, 0x900)))],
                     foreign=[(n - 0x30, n - 0x20)], ballooned=[(0x500, 0x800)],
                     shuffle_leaves=bool(seed % 2), seed=seed)
    img = tmp_path / f"g{seed}.img"
    tree = generate(spec, img)
    L = tree.layout
    data = bytearray(img.read_bytes())
    pages = ([int(m) for m in tree.leaf_mfns] + list(tree.mids) + [tree.top_mfn]
             + list(tree.placeholders.values()))
    frames = len(data) // 4096
    for _ in range(int(rng.integers(0, 8))):
        mfn = pages[int(rng.integers(len(pages)))]
        slot = int(rng.integers(L.per_page))
        pfn = int(rng.integers(n))
        noise = int(rng.integers(0, L.word_mask, dtype=np.uint64))
        value = [0, L.invalid, frames + 5, L.flag_mask | pfn, L.identity_bit | (pfn + 1),
                 L.identity_bit | pfn, L.foreign_bit | int(tree.truth[0x10]),
                 pages[int(rng.integers(len(pages)))], noise][int(rng.integers(9))]
        if rng.random() < 0.1:      # a page of noise
            data[mfn * 4096:(mfn + 1) * 4096] = rng.integers(0, 256, 4096, np.uint8).tobytes()
        else:
            off = mfn * 4096 + slot * word_size
            data[off:off + word_size] = (value & L.word_mask).to_bytes(word_size, "little")
    if rng.random() < 0.2:
        del data[len(data) - int(rng.integers(1, 3)) * 4096 - 100:]
    img.write_bytes(bytes(data))
    return str(img), tree


@pytest.mark.parametrize("word_size", [8, 4])
@pytest.mark.parametrize("rows", [1, 3, 2048])
@pytest.mark.parametrize("seed", range(12))
def test_streamed_walk_and_verify_agree(tmp_path, monkeypatch, word_size, rows, seed):
    """The windows a streamed walk hands on make up the walked table; its
    findings, counts and runs are the in-memory walk's; verify reports the
    same whether it keeps the table or not."""
    monkeypatch.setattr(tablerows, "STREAM_ROWS", rows)
    path, tree = damaged_guest(tmp_path, seed, word_size)
    max_pfn = [None, tree.spec.max_pfn][seed % 2]
    with RawImage(path) as src:
        try:
            whole = W.walk(src, tree.top_mfn, word_size=word_size, max_pfn=max_pfn)
        except P2MDumpError as exc:     # the top page is gone: so it is for both
            with pytest.raises(type(exc), match=re.escape(str(exc))):
                verify(src, tree.top_mfn, word_size=word_size, max_pfn=max_pfn)
            return
        seen = []

        def take(words, start, seg, codes):
            assert start == sum(len(w) for w in seen)
            seen.append(words.copy())

        streamed = W.walk(src, tree.top_mfn, word_size=word_size, max_pfn=max_pfn, stream=take)
        table = np.concatenate(seen) if seen else whole.table.raw[:0]
        assert np.array_equal(table, whole.table.raw)
        assert [f.to_dict() for f in streamed.findings] == [f.to_dict() for f in whole.findings]
        assert streamed.pages_read == whole.pages_read
        assert_same_runs(streamed.table, whole.table)
        kept = verify(src, tree.top_mfn, word_size=word_size, max_pfn=max_pfn, keep_table=True)
        lean = verify(src, tree.top_mfn, word_size=word_size, max_pfn=max_pfn)
    assert isinstance(kept.walk.table, P2MTable)
    assert isinstance(lean.walk.table, StreamedTable)
    assert lean.to_dict() == kept.to_dict()


def test_stream_and_raw_output_exclude_each_other(tmp_path):
    spec = GuestSpec(word_size=8, max_pfn=0x1000)
    tree = generate(spec, tmp_path / "g.img")
    with RawImage(str(tmp_path / "g.img")) as src, open(tmp_path / "o", "w+b") as out:
        with pytest.raises(ValueError):
            W.walk(src, tree.top_mfn, raw_fd=out.fileno(), stream=lambda *a: None)


def test_streamed_progress_counts_the_whole_walk(tmp_path, monkeypatch):
    """Window by window, progress runs once from 0 to every row read, about
    every 1%, never backwards."""
    monkeypatch.setattr(tablerows, "STREAM_ROWS", 3)
    spec = GuestSpec(word_size=8, max_pfn=0x40000, shuffle_leaves=True, seed=3)
    tree = generate(spec, tmp_path / "g.img")
    seen = []
    with RawImage(str(tmp_path / "g.img")) as src:
        W.walk(src, tree.top_mfn, max_pfn=0x40000, progress=lambda d, t: seen.append((d, t)),
               stream=lambda *a: None)
    rows = 0x40000 // 512
    assert seen[-1] == (rows, rows)
    assert all(t == rows for _, t in seen)
    done = [d for d, _ in seen]
    assert done == sorted(done) and len(done) <= 101


# -- lists --------------------------------------------------------------------

def damaged_list_guest(tmp_path, seed: int, word_size: int):
    """A generated list guest with random damage in its list pages and page
    tables; (path, guest)."""
    rng = np.random.default_rng(seed)
    L = layout_for(word_size)
    n = int(rng.integers(2, 9)) * 0x1000 + int(rng.integers(0, 0x400))
    spec = GuestSpec(word_size=word_size, representation="list", max_pfn=n, ram=[(0, n)],
                     identity=[(0x1000, 0x1000 + 2 * L.per_page + int(rng.integers(0, 9)))],
                     foreign=[(n - 0x30, n - 0x20)], ballooned=[(0x300, 0x900)], seed=seed)
    img = tmp_path / f"l{seed}.img"
    guest = generate_list_container(spec, img)
    data = bytearray(img.read_bytes())
    private = np.flatnonzero(guest.page_kind == PAGE_PRIVATE)
    lists = [int(m) for m in guest.page_mfn[private]]
    tables = [int(m) for m in guest.tables if m != guest.root_mfn]
    shared = list(guest.placeholders.values())
    frames = len(data) // 4096
    for _ in range(int(rng.integers(0, 8))):
        where = [lists, tables, tables, shared][int(rng.integers(4))]
        mfn = where[int(rng.integers(len(where)))]
        pfn = int(rng.integers(n))
        if where is tables:          # the entry mapping a list page: gone, or another frame
            page = int(private[rng.integers(len(private))])
            va = guest.vaddr + page * 4096
            mfn = int(guest.pmd_table[(va >> 21) - (guest.vaddr >> 21)])
            if mfn not in guest.tables:
                continue
            off = mfn * 4096 + ((va >> 12) & 511) * 8
            value = [0, (frames + 9) << 12 | 1, lists[0] << 12 | 1][int(rng.integers(3))]
            data[off:off + 8] = value.to_bytes(8, "little")
            continue
        value = [0, L.flag_mask | pfn, L.identity_bit | (pfn + 1), L.identity_bit | pfn,
                 int(rng.integers(0, L.word_mask, dtype=np.uint64))][int(rng.integers(5))]
        off = mfn * 4096 + int(rng.integers(L.per_page)) * word_size
        data[off:off + word_size] = (value & L.word_mask).to_bytes(word_size, "little")
    img.write_bytes(bytes(data))
    return str(img)


@pytest.mark.parametrize("word_size", [8, 4])
@pytest.mark.parametrize("rows", [1, 3, 2048])
@pytest.mark.parametrize("seed", range(8))
def test_streamed_list_walk_and_verify_agree(tmp_path, monkeypatch, word_size, rows, seed):
    monkeypatch.setattr(tablerows, "STREAM_ROWS", rows)
    path = damaged_list_guest(tmp_path, seed, word_size)
    with open_image(path) as src:
        r = resolve(src, sidecar=read_sidecar(path))
        assert r.representation == "list"
        try:
            whole = walk_resolved(src, r)
        except P2MDumpError as exc:
            with pytest.raises(type(exc), match=re.escape(str(exc))):
                verify(src, r)
            return
        seen = []
        streamed = walk_resolved(src, r, stream=lambda words, *_: seen.append(words.copy()))
        table = np.concatenate(seen) if seen else whole.table.raw[:0]
        assert np.array_equal(table, whole.table.raw)
        assert [f.to_dict() for f in streamed.findings] == [f.to_dict() for f in whole.findings]
        assert streamed.list_info == whole.list_info
        assert streamed.pages_read == whole.pages_read
        assert_same_runs(streamed.table, whole.table)
        kept = verify(src, r, keep_table=True)
        lean = verify(src, r)
    assert isinstance(lean.walk.table, StreamedTable)
    assert lean.to_dict() == kept.to_dict()


def test_a_streamed_list_needs_no_memory_for_its_table(tmp_path, monkeypatch):
    """The list walk refuses a table larger than the memory available; verify
    and map, which keep no table, go ahead."""
    spec = GuestSpec(word_size=8, representation="list", max_pfn=0x40000, seed=1)
    img = str(tmp_path / "l.img")
    generate_list_container(spec, img)
    monkeypatch.setattr(listwalk, "memory_available", lambda: 1 << 20)
    with open_image(img) as src:
        r = resolve(src, sidecar=read_sidecar(img))
        with pytest.raises(P2MDumpError, match="memory available"):
            walk_resolved(src, r)
        assert verify(src, r).ok
