"""compare_tables: every pfn where two tables differ, as ranges; the pfns only one covers;
resolve_all: which representations verify walks."""
import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from p2mdump import compare
from p2mdump.autowalk import resolve_all
from p2mdump.compare import (TREE_LIST_EXTENT, TREE_LIST_MATCH, TREE_LIST_MISMATCH,
                             compare_tables)
from p2mdump.layout import layout_for
from p2mdump.sources.raw import RawImage
from p2mdump.table import P2MTable
from p2mdump.writer import GuestSpec, generate


def table(raw, ws=8):
    return P2MTable(np.asarray(raw, dtype=f"<u{ws}"), layout_for(ws))


def runs_of(mask):
    """[first, last] of each run of True, written plainly."""
    out, start = [], None
    for i, v in enumerate(list(mask) + [False]):
        if v and start is None:
            start = i
        elif not v and start is not None:
            out.append([start, i - 1])
            start = None
    return out


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n=st.integers(1, 3000), seed=st.integers(0, 2 ** 32 - 1),
       density=st.sampled_from([0.0, 0.001, 0.05, 0.5, 1.0]),
       chunk=st.sampled_from([7, 64, 1 << 22]), ws=st.sampled_from([4, 8]))
def test_every_differing_pfn_is_counted_and_ranged(n, seed, density, chunk, ws, monkeypatch_chunk):
    monkeypatch_chunk(chunk)
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 1 << 20, n)
    b = a.copy()
    flip = rng.random(n) < density
    b[flip] += 1
    found = compare_tables(table(a, ws), table(b, ws))
    want = runs_of(flip)
    if not want:
        [f] = found
        assert f.kind == TREE_LIST_MATCH and f.severity == "info" and f.count == n
        return
    [f] = found
    assert f.kind == TREE_LIST_MISMATCH and f.severity == "warning"
    assert f.count == int(flip.sum())
    assert (f.pfn_first, f.pfn_last) == (want[0][0], want[-1][1])
    assert [e["pfns"] for e in f.examples] == want[:compare.RANGE_EXAMPLES]
    assert all(e["tree"] == a[e["pfns"][0]] and e["list"] == b[e["pfns"][0]]
               for e in f.examples)
    assert f"{len(want)} range(s)" in f.message
    if len(want) > compare.RANGES_SHOWN:
        assert f"and {len(want) - compare.RANGES_SHOWN} more range(s)" in f.message


@pytest.fixture
def monkeypatch_chunk(monkeypatch):
    def set_chunk(size):
        monkeypatch.setattr(compare, "CHUNK", size)
    return set_chunk


def test_only_one_side_covers():
    L = layout_for(8)
    inv = L.invalid
    base = np.arange(100, dtype=np.uint64) + np.uint64(7)
    longer = np.concatenate([base, np.array([inv] * 20 + [5, 6] + [inv] * 8, dtype=np.uint64)])
    # the tree ends where a tree must end: info, the extra entries named
    [m, e] = compare_tables(table(base), table(longer), capacity_a=100)
    assert m.kind == TREE_LIST_MATCH and m.count == 100
    assert (e.kind, e.severity, e.count, e.pfn_first, e.pfn_last) == (
        TREE_LIST_EXTENT, "info", 30, 100, 129)
    assert e.examples == [{"pfns": [120, 121], "in": "list"}]
    assert "only the list covers pfns 0x64-0x81" in e.message and "most a 64-bit tree" in e.message
    # the tree ends early: the list's extra valid entries are a warning
    [_, e] = compare_tables(table(base), table(longer))
    assert e.severity == "warning" and "2 of them are not missing" in e.message
    # the list ends early, with only missing entries past it: info
    shorter = base[:90]
    padded = np.concatenate([base[:90], np.full(10, inv, dtype=np.uint64)])
    [_, e] = compare_tables(table(padded), table(shorter))
    assert (e.severity, e.pfn_first, e.count) == ("info", 90, 10)
    assert "only the tree covers" in e.message and "all of them are missing" in e.message
    # ... and the tree's extra valid entries: a warning
    [_, e] = compare_tables(table(base), table(shorter))
    assert e.severity == "warning" and e.examples == [{"pfns": [90, 99], "in": "tree"}]


def test_other_word_sizes_are_not_compared():
    [f] = compare_tables(table([1, 2, 3], 4), table([1, 2, 3], 8))
    assert f.kind == TREE_LIST_MISMATCH and "4-byte" in f.message and "8-byte" in f.message


def test_a_whole_identity_page_agrees():
    """The tree's leaf for a whole-identity list page is p2m_identity: INVALID in
    both, so no difference."""
    L = layout_for(8)
    t = np.full(1024, L.invalid, dtype=np.uint64)
    t[:512] = np.arange(512) + 9
    [f] = compare_tables(table(t), table(t.copy()))
    assert f.kind == TREE_LIST_MATCH


# -- resolve_all -------------------------------------------------------------------------------

def test_resolve_all_walks_the_tree_to_its_capacity(tmp_path):
    """A sidecar naming a both guest whose list is longer than a tree holds: the
    tree is walked to 2^27 pfns, the list to max_pfn."""
    img = tmp_path / "b.img"
    generate(GuestSpec(representation="both", max_pfn=0x1000), img)
    side = json.loads((tmp_path / "b.img.json").read_text())
    side["max_pfn"] = (1 << 27) + 0x1000
    with RawImage(img) as src:
        lst, tree = resolve_all(src, sidecar=side)
        assert (lst.representation, lst.max_pfn) == ("list", (1 << 27) + 0x1000)
        assert (tree.representation, tree.max_pfn, tree.top_mfn) == (
            "tree", 1 << 27, side["top_mfn"])
        assert tree.top_mfn_source == "sidecar"
        assert any("the most a 64-bit tree holds" in n for n in tree.notes())
        # one representation asked for, or a list-only sidecar: one walk
        assert len(resolve_all(src, sidecar=side, representation="list")) == 1
        assert len(resolve_all(src, sidecar=dict(side, representation="list"))) == 1
        # --top-mfn with the list's options: both
        lst, tree = resolve_all(src, top_mfn=side["top_mfn"], p2m_cr3=side["p2m_cr3"],
                                p2m_vaddr=side["p2m_vaddr"], max_pfn=0x1000)
        assert (tree.top_mfn_source, lst.list_source) == ("given", "given")
        assert not any("not used" in n for n in lst.notes())
