"""``lookup --from-file`` answers its queries as the walk streams the table
(:class:`p2mdump.lookup.QueryScan`): the same answers as the table held
whole, on every shipped fixture, for random query mixes (pfns inside, at and
past the table's end, duplicates, present and absent mfns, addresses with
offsets), with windows cut small so that queries straddle them."""
import glob
import json
import os

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from p2mdump import autowalk, tablerows
from p2mdump.cli import main
from p2mdump.cli.lookup import _walk_table
from p2mdump.cli.treeopts import resolve_tree
from p2mdump.layout import PAGE_SHIFT
from p2mdump.lookup import PfnPick, QueryScan, TableLookup
from p2mdump.sources import open_image

FIXTURES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fixtures")
IMAGES = sorted(p[:-len(".json")] for p in glob.glob(os.path.join(FIXTURES, "*.json")))
STREAMED = [p for p in IMAGES if not p.endswith(".save")]


def top_mfn(path):
    """The tree's top MFN where the image does not name it (ELF cores), else None."""
    if not path.endswith(".elf"):
        return None
    with open(path + ".json") as fh:
        return json.load(fh)["top_mfn"]


def resolved(src, path):
    return resolve_tree(src, path, top_mfn(path), "auto", None, p2m_cr3=None)


def random_queries(table, layout, max_pfn, seed, n=300):
    """A mixed batch over a held ``table``: pfns and paddrs inside it, at its
    end and at max_pfn, far past both (up to the tree's capacity), repeated;
    mfns and maddrs of valid and foreign entries, and frames no pfn maps."""
    rng = np.random.default_rng(seed)
    size = len(table)
    raw = table.raw
    rows = [1, 3, 6]        # window edges when windows are 1 or 3 rows
    edges = [0, size - 1, size, size + 1, layout.capacity - 1, (size + layout.capacity) // 2]
    edges += [k * layout.per_page + d for k in rows for d in (-1, 0)]
    if max_pfn is not None:
        edges += [max_pfn - 1, max_pfn, max_pfn + 1]
    pfns = [p for p in edges if 0 <= p < layout.capacity]
    pfns += rng.integers(0, max(size, 1), n // 3).tolist()
    pfns += rng.integers(0, layout.capacity, 10).tolist()
    mfns = [0, 1, layout.word_mask, layout.invalid, int(raw.max()) + 1 if size else 5]
    if size:
        picked = rng.choice(raw, n // 6)
        mfns += [int(m) & ~layout.flag_mask for m in picked]
        foreign = raw[(raw & layout.foreign_bit) != 0]
        mfns += [int(m) & ~layout.flag_mask for m in foreign[:5]]
    queries = []
    for p in pfns:
        kind = ["pfn", "paddr"][int(rng.integers(2))]
        off = int(rng.integers(0, 1 << PAGE_SHIFT))
        queries.append((kind, p if kind == "pfn" else (p << PAGE_SHIFT) | off))
    for m in mfns:
        kind = ["mfn", "maddr"][int(rng.integers(2))]
        off = int(rng.integers(0, 1 << PAGE_SHIFT))
        queries.append((kind, m if kind == "mfn" else (m << PAGE_SHIFT) | off))
    queries += [queries[int(i)] for i in rng.integers(0, len(queries), 20)]   # repeats
    rng.shuffle(queries)
    return [(k, int(v)) for k, v in queries]


@pytest.mark.parametrize("rows", [1, 3, 2048])
@pytest.mark.parametrize("path", STREAMED, ids=os.path.basename)
def test_streamed_answers_are_the_held_tables(monkeypatch, path, rows):
    monkeypatch.setattr(tablerows, "STREAM_ROWS", rows)
    with open_image(path) as src:
        r = resolved(src, path)
        assert autowalk.can_stream(r)
        held = _walk_table(src, r)
        want_tl = TableLookup(held, max_pfn=r.max_pfn)
        for seed in range(2):
            queries = random_queries(held.table, held.layout, r.max_pfn, seed)
            scan = QueryScan(queries)
            streamed = _walk_table(src, r, scan)
            assert len(streamed.table) == len(held.table)
            got = TableLookup(streamed, max_pfn=r.max_pfn, scanned=scan).many(queries)
            assert got == want_tl.many(queries)
            assert [type(a["raw"]) for a in got if "raw" in a] == \
                [type(a["raw"]) for a in want_tl.many(queries) if "raw" in a]


def lookup_cli(path, qfile, *args):
    top = [] if top_mfn(path) is None else ["--top-mfn", hex(top_mfn(path))]
    r = CliRunner().invoke(main, ["lookup", path, "--from-file", str(qfile), *top, *args])
    return r.exit_code, r.stdout, r.stderr


@pytest.mark.parametrize("path", IMAGES, ids=os.path.basename)
def test_cli_output_is_the_held_paths(tmp_path, monkeypatch, path):
    """Text and JSON, byte for byte, with and without streaming; an xl save
    file's p2m is not streamed and answers as before."""
    monkeypatch.setattr(tablerows, "STREAM_ROWS", 3)
    with open_image(path) as src:
        r = resolved(src, path)
        held = _walk_table(src, r)
    qfile = tmp_path / "q.txt"
    queries = random_queries(held.table, held.layout, r.max_pfn, 7, n=120)
    qfile.write_text("# queries\n" + "".join(f"{k} {v:#x}\n" for k, v in queries) + "\n")
    fed = []
    real_feed = PfnPick.feed
    monkeypatch.setattr(PfnPick, "feed", lambda self, w, f: (fed.append(f), real_feed(self, w, f)))
    extra = [[], ["--max-pfn", hex(max(len(held.table) // 2, 1))]] if r.representation == "tree" \
        else [[]]
    for more in extra:
        for fmt in ([], ["--json"]):
            fed.clear()
            streamed = lookup_cli(path, qfile, *more, *fmt)
            assert streamed[0] == 0, streamed
            assert bool(fed) == autowalk.can_stream(r)
            with monkeypatch.context() as m:
                m.setattr(autowalk, "can_stream", lambda *a: False)
                fed.clear()
                assert lookup_cli(path, qfile, *more, *fmt) == streamed
                assert not fed


def test_cli_pfn_past_the_tree_is_the_same_error(tmp_path, monkeypatch):
    """A pfn the tree cannot hold stops the batch with the same error either way."""
    path = os.path.join(FIXTURES, "guest64.img")
    qfile = tmp_path / "q.txt"
    qfile.write_text(f"pfn 3\nmfn 5\npaddr {1 << 80:#x}\npfn {1 << 70:#x}\n")
    streamed = lookup_cli(path, qfile)
    assert streamed[0] == 4 and "outside" in streamed[2]
    monkeypatch.setattr(autowalk, "can_stream", lambda *a: False)
    assert lookup_cli(path, qfile) == streamed


def test_cli_single_mfn_still_streams(monkeypatch):
    path = os.path.join(FIXTURES, "list64.img")
    fed = []
    real_feed = PfnPick.feed
    monkeypatch.setattr(PfnPick, "feed", lambda self, w, f: (fed.append(f), real_feed(self, w, f)))
    for args in (["--mfn", "0x30"], ["--maddr", "0x30123"]):
        fed.clear()
        r = CliRunner().invoke(main, ["lookup", path, "--json", *args])
        assert r.exit_code == 0 and fed
        with monkeypatch.context() as m:
            m.setattr(autowalk, "can_stream", lambda *a: False)
            assert CliRunner().invoke(main, ["lookup", path, "--json", *args]).stdout == r.stdout


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_pfn_pick_matches_indexing(data):
    """Fed in pieces of any sizes, the pick holds exactly the asked entries;
    pfns past what was fed, and pfns not asked, are not there."""
    ws = data.draw(st.sampled_from([4, 8]))
    n = data.draw(st.integers(0, 300))
    table = np.array(data.draw(st.lists(st.integers(0, (1 << ws * 8) - 1), min_size=n,
                                        max_size=n)), dtype=f"<u{ws}")
    asked = data.draw(st.lists(st.one_of(st.integers(0, n + 5), st.integers(0, 1 << 70)),
                               max_size=40))
    cuts = sorted(data.draw(st.lists(st.integers(0, n), max_size=8)))
    pick = PfnPick(asked)
    for a, b in zip([0] + cuts, cuts + [n]):
        pick.feed(table[a:b], a)
    for p in set(asked) | {n, n + 1}:
        if p in asked and p < n:
            assert pick.entry(p) == int(table[p])
            assert type(pick.entry(p)) is int
        else:
            with pytest.raises(KeyError):
                pick.entry(p)


def test_pfn_pick_needs_consecutive_pieces():
    pick = PfnPick([1, 5])
    pick.feed(np.arange(4, dtype="<u8"), 0)
    with pytest.raises(ValueError, match="follow"):
        pick.feed(np.arange(4, dtype="<u8"), 5)


def test_pfn_pick_is_sized_by_the_queries_not_their_values():
    pick = PfnPick([1 << 62, (1 << 62) + 1, 1 << 100, 7, 7])
    assert len(pick.pfns) == 3 and pick.raw.nbytes == 3 * 8
    pick.feed(np.full(16, 9, dtype="<u8"), 0)
    assert pick.entry(7) == 9
