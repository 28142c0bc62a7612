"""``walk`` writes every output of a tree or a list as it reads the table
(:class:`p2mdump.output.TableStream`): the same bytes as the table written
whole, for every format, on damaged trees and lists, with windows cut small
so that rows, runs and chunks straddle them."""
import io
import json

import numpy as np
import pytest
from click.testing import CliRunner

from p2mdump import listwalk, tablerows
from p2mdump.autowalk import resolve, walk_resolved
from p2mdump.cli import main
from p2mdump.errors import P2MDumpError
from p2mdump.output import FORMATS, TableStream, write_table
from p2mdump.sidecar import read_sidecar
from p2mdump.sources import open_image
from p2mdump.writer import GuestSpec
from p2mdump.writer.listcontainers import generate_list_container
from test_verify_stream import damaged_guest, damaged_list_guest


def whole_output(path, fmt, **walk):
    """The output of the table walked whole (in memory), or None when the
    walk fails."""
    with open_image(path) as src:
        r = resolve(src, sidecar=read_sidecar(path) if not walk else None, **walk)
        try:
            res = walk_resolved(src, r)
        except P2MDumpError:
            return None
    out = io.BytesIO()
    write_table(res.table, out, fmt)
    return out.getvalue()


def cli_output(path, fmt, tmp_path, *args):
    out = tmp_path / f"out.{fmt}"
    r = CliRunner().invoke(main, ["walk", path, "--format", fmt, "-o", str(out), "-q", *args])
    return r, (out.read_bytes() if out.exists() else None)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("rows", [3, 2048])
@pytest.mark.parametrize("seed", range(4))
def test_streamed_tree_output_is_the_whole_tables(tmp_path, monkeypatch, fmt, rows, seed):
    monkeypatch.setattr(tablerows, "STREAM_ROWS", rows)
    path, tree = damaged_guest(tmp_path, seed, [8, 4][seed % 2])
    want = whole_output(path, fmt, top_mfn=tree.top_mfn)
    r, got = cli_output(path, fmt, tmp_path, "--top-mfn", hex(tree.top_mfn))
    if want is None:
        assert r.exit_code >= 2 and got is None
        return
    assert r.exit_code == 0, r.output
    assert got == want


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("rows", [3, 2048])
@pytest.mark.parametrize("seed", range(3))
def test_streamed_list_output_is_the_whole_tables(tmp_path, monkeypatch, fmt, rows, seed):
    monkeypatch.setattr(tablerows, "STREAM_ROWS", rows)
    path = damaged_list_guest(tmp_path, seed, [8, 4][seed % 2])
    want = whole_output(path, fmt)
    r, got = cli_output(path, fmt, tmp_path)
    if want is None:
        assert r.exit_code >= 2 and got is None
        return
    assert r.exit_code == 0, r.output
    assert got == want


@pytest.mark.parametrize("fmt", ["table", "csv", "jsonl", "npy", "ranges"])
def test_an_empty_table_streams_its_header(tmp_path, fmt):
    """max_pfn 0: no window at all, and still the header (and npy's shape)."""
    from p2mdump.writer import generate

    tree = generate(GuestSpec(word_size=8, max_pfn=0x1000), tmp_path / "g.img")
    args = ["--top-mfn", hex(tree.top_mfn), "--max-pfn", "0"]
    r, got = cli_output(str(tmp_path / "g.img"), fmt, tmp_path, *args)
    assert r.exit_code == 0, r.output
    with open_image(str(tmp_path / "g.img")) as src:
        res = walk_resolved(src, resolve(src, tree.top_mfn, max_pfn=0))
    want = io.BytesIO()
    write_table(res.table, want, fmt)
    assert got == want.getvalue()
    if fmt == "npy":
        assert np.load(tmp_path / "out.npy").shape == (0,)


def test_a_list_larger_than_memory_is_walked_as_it_streams(tmp_path, monkeypatch):
    """The list walk refuses a table larger than the memory available; a
    streamed output holds no table, so the walk goes ahead."""
    img = str(tmp_path / "l.img")
    generate_list_container(GuestSpec(word_size=8, representation="list", max_pfn=0x40000,
                                      seed=1), img)
    monkeypatch.setattr(listwalk, "memory_available", lambda: 1 << 20)
    r, got = cli_output(img, "ranges", tmp_path)
    assert r.exit_code == 0, r.output
    monkeypatch.undo()
    assert got == whole_output(img, "ranges")


def test_table_stream_refuses_an_unknown_format():
    with pytest.raises(ValueError):
        TableStream(io.BytesIO(), "xml")


def test_stdout_gets_the_stream_too(tmp_path):
    path, tree = damaged_guest(tmp_path, 1, 8)
    r = CliRunner().invoke(main, ["walk", path, "--top-mfn", hex(tree.top_mfn), "-q",
                                  "--format", "csv"])
    assert r.exit_code == 0
    assert r.stdout_bytes == whole_output(path, "csv", top_mfn=tree.top_mfn)


# -- lookup --mfn ----------------------------------------------------------------

@pytest.mark.parametrize("rows", [3, 2048])
@pytest.mark.parametrize("seed", range(4))
def test_streamed_mfn_lookup_finds_what_the_table_holds(tmp_path, monkeypatch, rows, seed):
    """``lookup --mfn`` / ``--maddr`` find their pfns as the walk reads the
    table: the same answers as the table held whole, for valid and foreign
    entries, repeated frames and frames no pfn maps."""
    from p2mdump.lookup import QueryScan, TableLookup

    monkeypatch.setattr(tablerows, "STREAM_ROWS", rows)
    path, tree = damaged_guest(tmp_path, seed, [8, 4][seed % 2])
    with open_image(path) as src:
        r = resolve(src, tree.top_mfn)
        try:
            whole = walk_resolved(src, r)
        except P2MDumpError:
            return
        L = whole.layout
        raw = whole.table.raw
        rng = np.random.default_rng(seed)
        flagged = raw[(raw & L.foreign_bit) != 0]
        mfns = [int(m) for m in rng.choice(raw, 6)] + [int(m) & ~L.flag_mask for m in flagged[:3]]
        mfns += [0x7777777, L.invalid, 0]
        for many in (mfns[:3], mfns):        # the few-mfn and the sorted matcher
            scan = QueryScan([("mfn", m) for m in many])
            streamed = walk_resolved(src, r, stream=scan)
            got = TableLookup(streamed, scanned=scan).mfns(many)
            assert got == TableLookup(whole).mfns(many)
        m = mfns[0] & ~L.flag_mask
        res = CliRunner().invoke(main, ["lookup", path, "--top-mfn", hex(tree.top_mfn),
                                        "--mfn", hex(m), "--json"])
    assert res.exit_code == 0, res.output
    want = TableLookup(whole).mfn(m)
    assert json.loads(res.stdout)["pfns"] == want["pfns"]


# -- diff ---------------------------------------------------------------------------

def _walks(path_a, path_b, top_a, top_b):
    """(walk A, walk B) as diff_streams takes them, and the sources to close."""
    sa, sb = open_image(path_a), open_image(path_b)
    ra = resolve(sa, top_a, sidecar=None if top_a else read_sidecar(path_a))
    rb = resolve(sb, top_b, sidecar=None if top_b else read_sidecar(path_b))
    return ((lambda s: walk_resolved(sa, ra, check_table=False, stream=s)),
            (lambda s: walk_resolved(sb, rb, check_table=False, stream=s)), (sa, sb))


@pytest.mark.parametrize("rows,chunk", [(3, 1000), (2048, 1 << 20)])
@pytest.mark.parametrize("seed", range(4))
def test_diff_of_two_streams_is_the_diff_of_the_tables(tmp_path, monkeypatch, rows, chunk,
                                                        seed):
    """Two damaged guests (different sizes, word sizes, trees and lists)
    compared as their walks stream side by side: the ranges and counts of
    the diff of the two tables held whole."""
    from p2mdump.diff import diff, diff_streams

    monkeypatch.setattr(tablerows, "STREAM_ROWS", rows)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    pa, ta = damaged_guest(tmp_path / "a", seed, 8)
    if seed % 2:
        pb, tb = damaged_list_guest(tmp_path / "b", seed + 7, [8, 4][seed // 2 % 2]), None
    else:
        pb, tree_b = damaged_guest(tmp_path / "b", seed + 11, [8, 4][seed // 2 % 2])
        tb = tree_b.top_mfn
    walk_a, walk_b, sources = _walks(pa, pb, ta.top_mfn, tb)
    try:
        try:
            whole_a, whole_b = walk_a(None), walk_b(None)
        except P2MDumpError:
            return
        want = diff(whole_a.table, whole_b.table)
        got, res_a, res_b = diff_streams(walk_a, walk_b, chunk=chunk)
    finally:
        for s in sources:
            s.close()
    assert got.to_dict() == want.to_dict()
    assert list(got.lines()) == list(want.lines())
    assert (len(res_a.table), len(res_b.table)) == (len(whole_a.table), len(whole_b.table))


def test_diff_streams_raises_a_first(tmp_path):
    """A's error wins over B's, as when A is walked first; B's shows when A
    is sound; either way the thread of A ends."""
    import threading

    from p2mdump.diff import diff_streams
    from p2mdump.errors import ImageError, TreeError

    EACH = np.arange(8)        # every entry a piece of its own
    def fails(exc, after=0):
        def walk(stream):
            words = np.zeros(8, dtype="<u8")
            for i in range(after):
                stream(words, 8 * i, EACH, np.zeros(8, np.uint8))
            raise exc
        return walk

    def ok(stream):
        from types import SimpleNamespace

        from p2mdump.layout import LAYOUT64
        for i in range(50):
            stream(np.zeros(8, dtype="<u8"), 8 * i, EACH, np.zeros(8, np.uint8))
        return SimpleNamespace(layout=LAYOUT64, table=None)

    with pytest.raises(TreeError, match="A broke"):
        diff_streams(fails(TreeError("A broke"), 3), fails(ImageError("B broke"), 30), chunk=8)
    with pytest.raises(TreeError, match="A broke"):
        diff_streams(fails(TreeError("A broke")), ok, chunk=8)
    with pytest.raises(ImageError, match="B broke"):
        diff_streams(ok, fails(ImageError("B broke"), 2), chunk=8)
    assert not [t for t in threading.enumerate() if t.name == "p2mdump-diff-a"]


def test_cli_diff_of_two_images_streams(tmp_path):
    """`p2mdump diff A B` of two images prints what the tables' diff gives."""
    from p2mdump.diff import diff

    from p2mdump.writer import generate

    (tmp_path / "a").mkdir()
    pa, ta = damaged_guest(tmp_path / "a", 2, 8)
    pb = str(tmp_path / "b.img")
    tb = generate(GuestSpec(word_size=8, max_pfn=0x5000, identity=[(0xA0, 0x100)], seed=4), pb)
    r = CliRunner().invoke(main, ["diff", pa, pb, "--top-mfn-a", hex(ta.top_mfn),
                                  "--top-mfn-b", hex(tb.top_mfn), "--json"])
    walk_a, walk_b, sources = _walks(pa, pb, ta.top_mfn, tb.top_mfn)
    try:
        want = diff(walk_a(None).table, walk_b(None).table).to_dict()
    finally:
        for s in sources:
            s.close()
    assert r.exit_code == (0 if want["same"] else 1), r.output
    got = json.loads(r.stdout)
    assert {k: got[k] for k in want} == want
