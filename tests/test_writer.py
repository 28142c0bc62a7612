"""The writer shapes the tree as Linux does (arch/x86/xen/p2m.c)."""
import json

import numpy as np
import pytest

from p2mdump.errors import SpecError
from p2mdump.layout import PAGE_SIZE, layout_for
from p2mdump.writer import GuestSpec, build_tree, e820_example, generate
from p2mdump.writer.mfns import Numbering
from p2mdump.writer.prng import Stream


@pytest.mark.parametrize("ws", [8, 4])
def test_e820_tree_shape(ws):
    L = layout_for(ws)
    n = L.per_page
    tree = build_tree(e820_example(ws))
    ph = tree.placeholders
    # missing regions name the shared mid placeholder, which names p2m_missing
    regions_used = {L.top_index(p) for p in (0, 0x40500, 0x7D0FF)}
    for t in range(n):
        if t not in regions_used:
            assert tree.top[t] == ph["mid_missing"]
    # whole-identity leaves name p2m_identity; partly-identity ones are real
    mid1 = tree.mids[int(tree.top[L.top_index(0x60000)])]
    assert mid1[L.mid_index(0x60000)] == ph["leaf_identity"]
    part = mid1[L.mid_index(0x40500)]
    assert part not in ph.values()
    row = 0x40500 // n
    leaf = tree.leaf_table[row * n:(row + 1) * n]
    i = 0x40500 % n
    assert leaf[i] == 0x40500 | L.identity_bit
    assert np.all(leaf[:i] == L.invalid)
    # missing leaves inside a real mid page name p2m_missing
    assert mid1[L.mid_index(0x40000)] == ph["leaf_missing"]
    # past the end of RAM the entries are INVALID
    assert np.all(tree.truth[0x7D100:] == L.invalid)
    assert tree.max_pfn == 0xC0000


def test_identity_leaf_missing_variant():
    L = layout_for(8)
    tree = build_tree(e820_example(8, identity_leaf="missing"))
    mid1 = tree.mids[int(tree.top[1])]
    assert mid1[L.mid_index(0x60000)] == tree.placeholders["leaf_missing"]


def test_sidecar_and_truth(tmp_path):
    spec = GuestSpec(word_size=4, max_pfn=3000, identity=[(100, 200)], foreign=[(50, 52)])
    out = tmp_path / "g.img"
    tree = generate(spec, out, truth=tmp_path / "g.truth")
    side = json.loads((tmp_path / "g.img.json").read_text())
    assert side["word_size"] == 4 and side["page_size"] == PAGE_SIZE
    assert side["top_mfn"] == tree.top_mfn and side["max_pfn"] == 3000
    assert set(side["placeholders"]) == {"mid_missing", "leaf_missing", "leaf_identity"}
    assert GuestSpec.from_dict(side["spec"]) == spec
    truth = (tmp_path / "g.truth").read_bytes()
    assert len(truth) == 3000 * 4 and truth == tree.truth.tobytes()
    assert out.stat().st_size == tree.frame_count() * PAGE_SIZE


def test_no_frame_zero_and_no_overlap():
    tree = build_tree(GuestSpec(word_size=8, max_pfn=5000, mfn_order="shuffled", seed=5))
    pages = [m for m, _ in tree.page_list()] + tree.leaf_mfns.tolist()
    assert 0 not in pages and len(set(pages)) == len(pages)
    assert not set(pages) & set(tree.data_mfns.tolist())
    assert len(set(tree.data_mfns.tolist())) == len(tree.data_mfns)


def test_deterministic():
    a = build_tree(GuestSpec(word_size=8, max_pfn=9000, mfn_order="shuffled",
                             placement="scattered", shuffle_leaves=True, seed=9))
    b = build_tree(GuestSpec(word_size=8, max_pfn=9000, mfn_order="shuffled",
                             placement="scattered", shuffle_leaves=True, seed=9))
    assert a.truth.tobytes() == b.truth.tobytes() and a.top_mfn == b.top_mfn


@pytest.mark.parametrize("order", ["linear", "chunked", "shuffled"])
def test_numbering_runs_are_the_numbering_of_their_ranks(order):
    count = 3 * (1 << 16) + 5
    numbering = Numbering(order, count, 0x1234, Stream(4))
    whole = numbering(np.arange(count, dtype=np.uint64))
    assert len(np.unique(whole)) == count and int(whole.min()) == 0x1234
    if order == "shuffled":
        assert np.array_equal(whole, Stream(4).permutation(count) + 0x1234)
    for first, n in [(0, 1), (7, 70000), (count - 9, 9), (65530, 12), (5, 0)]:
        assert np.array_equal(numbering.run(first, n), whole[first:first + n])
    assert numbering.top() == int(whole.max())


@pytest.mark.parametrize("bad", [
    dict(word_size=6), dict(max_pfn=-1), dict(max_pfn=2 ** 27 + 1),
    dict(ram=[(10, 5)]), dict(mfn_order="random"), dict(placement="x"),
    dict(identity=[(0, 2 ** 28)]),
])
def test_bad_specs(bad):
    with pytest.raises(SpecError):
        GuestSpec(**bad)


def test_unknown_spec_field():
    with pytest.raises(SpecError, match="unknown"):
        GuestSpec.from_dict({"word_size": 8, "colour": "red"})
