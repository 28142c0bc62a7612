import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from p2mdump import findings as F
from p2mdump.errors import ImageError, LayoutError, TreeError
from p2mdump.layout import PAGE_SIZE, layout_for
from p2mdump.sources import RawImage
from p2mdump.walker import walk
from p2mdump.writer import GuestSpec, e820_example


def poke(path, mfn, slot, value, ws):
    """Overwrite word ``slot`` of frame ``mfn``."""
    with open(path, "r+b") as fh:
        fh.seek(mfn * PAGE_SIZE + slot * ws)
        fh.write(int(value).to_bytes(ws, "little"))


def by_kind(result, kind):
    return [f for f in result.findings if f.kind == kind]


@pytest.fixture(params=[8, 4])
def ws(request):
    return request.param


def basic_spec(ws, **kw):
    L = layout_for(ws)
    n = L.per_page
    spec = dict(word_size=ws, max_pfn=n * 40, ram=[(0, n * 40)], identity=[(n * 3 + 5, n * 6)],
                ballooned=[(n * 10, n * 12)], foreign=[(n * 20 + 1, n * 20 + 9)],
                mfn_order="chunked", seed=11)
    spec.update(kw)
    return GuestSpec(**spec)


def test_round_trip_every_kind(tmp_image, ws):
    path, tree = tmp_image(basic_spec(ws))
    with RawImage(path) as src:
        r = walk(src, tree.top_mfn, word_size=ws, max_pfn=tree.max_pfn)
    assert r.table.raw.tobytes() == tree.truth.tobytes()
    counts = r.table.counts()
    assert all(counts[k] > 0 for k in ("valid", "missing", "identity", "foreign"))
    assert counts["foreign"] == 8
    assert not r.warnings()
    # placeholders found and reported as info
    assert r.mid_placeholder == tree.placeholders["mid_missing"]
    assert tree.placeholders["leaf_missing"] in r.leaf_placeholders
    assert all(f.severity == F.INFO for f in r.findings)
    # each distinct page read once: top + mids + placeholders + real leaves (+ detection)
    assert r.pages_read <= tree.tree_pages + 2


def test_auto_max_pfn_and_word_size(tmp_image, ws):
    path, tree = tmp_image(basic_spec(ws))
    with RawImage(path) as src:
        r = walk(src, tree.top_mfn)
    assert r.word_size == ws and r.word_size_source == "detected"
    last = int(np.flatnonzero(tree.truth != layout_for(ws).invalid)[-1])
    assert r.max_pfn == last + 1 and r.max_pfn_source == "last-non-missing"
    assert r.table.raw.tobytes() == tree.truth[: last + 1].tobytes()


def test_e820_example_semantics(tmp_image, ws):
    path, tree = tmp_image(e820_example(ws))
    with RawImage(path) as src:
        r = walk(src, tree.top_mfn, max_pfn=0xC0000)
    L = layout_for(ws)
    t = r.table
    assert t.lookup(0x3FFFF)["kind"] == "valid"
    assert t.lookup(0x40000)["kind"] == "missing"
    # the partly-identity leaf holds pfn | IDENTITY_FRAME_BIT from 0x40500
    assert t.lookup(0x404FF)["kind"] == "missing"
    assert t.lookup(0x40500) == {"pfn": 0x40500, "raw": 0x40500 | L.identity_bit,
                                 "kind": "identity", "mfn": 0x40500}
    assert t.lookup(0x7D0FF)["kind"] == "identity"
    assert t.lookup(0x7D100)["kind"] == "missing"
    # whole-identity leaves point at p2m_identity, which holds only INVALID
    assert t.lookup(0x60000)["kind"] == "missing"
    assert r.max_pfn == 0xC0000


def test_unreadable_mid_page(tmp_image, ws):
    path, tree = tmp_image(basic_spec(ws))
    poke(path, tree.top_mfn, 0, 0x7FFFFF, ws)  # top slot 0 -> past the end
    with RawImage(path) as src:
        r = walk(src, tree.top_mfn, word_size=ws, max_pfn=tree.max_pfn)
    [f] = by_kind(r, F.UNREADABLE)
    assert (f.level, f.slot, f.mfn, f.severity) == ("mid", 0, 0x7FFFFF, F.WARNING)
    assert f.pfn_first == 0
    assert np.all(r.table.raw == layout_for(ws).invalid)  # whole region lost


def test_unreadable_leaf_and_zero_pointers(tmp_image, ws):
    L = layout_for(ws)
    path, tree = tmp_image(basic_spec(ws))
    mid = int(tree.top[0])
    poke(path, mid, 1, 0x7FFFFF, ws)   # leaf slot 1: past the end
    poke(path, mid, 2, 0, ws)          # leaf slot 2: MFN 0
    with RawImage(path) as src:
        r = walk(src, tree.top_mfn, word_size=ws, max_pfn=tree.max_pfn)
    [u] = by_kind(r, F.UNREADABLE)
    assert (u.level, u.slot, u.mfn, u.parent_mfn) == ("leaf", 1, 0x7FFFFF, mid)
    assert (u.pfn_first, u.pfn_last) == (L.per_page, 2 * L.per_page - 1)
    [z] = by_kind(r, F.MFN_ZERO)
    assert (z.level, z.slot, z.mfn) == ("leaf", 2, 0)
    n = L.per_page
    truth = tree.truth.copy()
    truth[n:3 * n] = L.invalid
    assert r.table.raw.tobytes() == truth.tobytes()  # the rest is intact


def test_zero_top_slot(tmp_image, ws):
    path, tree = tmp_image(basic_spec(ws))
    poke(path, tree.top_mfn, 3, 0, ws)
    with RawImage(path) as src:
        r = walk(src, tree.top_mfn, word_size=ws, max_pfn=tree.max_pfn)
    [z] = by_kind(r, F.MFN_ZERO)
    assert (z.level, z.slot, z.mfn) == ("mid", 3, 0)


def test_truncated_image(tmp_image, ws):
    path, tree = tmp_image(basic_spec(ws, shuffle_leaves=False))
    last_leaf = int(tree.leaf_mfns.max())
    os.truncate(path, last_leaf * PAGE_SIZE + 100)  # last leaf cut short
    with RawImage(path) as src:
        r = walk(src, tree.top_mfn, word_size=ws, max_pfn=tree.max_pfn)
    bad = by_kind(r, F.UNREADABLE)
    assert [f.mfn for f in bad] == [last_leaf]
    row = int(tree.leaf_rows[np.flatnonzero(tree.leaf_mfns == last_leaf)[0]])
    L = layout_for(ws)
    truth = tree.truth.copy()
    truth[row * L.per_page:(row + 1) * L.per_page] = L.invalid
    assert r.table.raw.tobytes() == truth[: r.max_pfn].tobytes()


def test_shared_real_leaf_and_duplicates(tmp_image, ws):
    path, tree = tmp_image(basic_spec(ws))
    mid = int(tree.top[0])
    leaf0 = int(tree.leaf_mfns[0])
    poke(path, mid, 1, leaf0, ws)  # two mid slots name the same real leaf
    with RawImage(path) as src:
        r = walk(src, tree.top_mfn, word_size=ws, max_pfn=tree.max_pfn)
    shared = [f for f in by_kind(r, F.SHARED_PAGE) if f.mfn == leaf0]
    assert shared and shared[0].severity == F.WARNING and shared[0].count == 2
    [d] = by_kind(r, F.DUPLICATE_MFN)
    n = layout_for(ws).per_page
    assert d.count == n
    pfns = sorted(d.examples[0]["pfns"])
    assert d.examples[0]["pfns"] == [0, n] or pfns[1] - pfns[0] == n


def test_single_duplicate_entry(tmp_image, ws):
    path, tree = tmp_image(basic_spec(ws, mfn_order="linear"))
    leaf0 = int(tree.leaf_mfns[0])
    poke(path, leaf0, 7, int(tree.truth[3]), ws)  # pfn 7 -> the mfn of pfn 3
    with RawImage(path) as src:
        r = walk(src, tree.top_mfn, word_size=ws, max_pfn=tree.max_pfn)
    [d] = by_kind(r, F.DUPLICATE_MFN)
    assert d.count == 1
    assert d.examples == [{"mfn": int(tree.truth[3]), "pfns": [3, 7]}]


def test_bad_mid_placeholder(tmp_image, ws):
    path, tree = tmp_image(basic_spec(ws))
    midp = tree.placeholders["mid_missing"]
    poke(path, midp, 5, int(tree.leaf_mfns[0]), ws)
    with RawImage(path) as src:
        r = walk(src, tree.top_mfn, word_size=ws, max_pfn=tree.max_pfn)
    bad = [f for f in by_kind(r, F.SHARED_PAGE) if f.mfn == midp]
    assert bad and bad[0].severity == F.WARNING and bad[0].level == "mid"
    # the mapping it adds lies past max_pfn
    assert by_kind(r, F.PAST_MAX_PFN)


def test_entries_past_max_pfn(tmp_image, ws):
    path, tree = tmp_image(basic_spec(ws))
    with RawImage(path) as src:
        r = walk(src, tree.top_mfn, word_size=ws, max_pfn=100)
    [p] = by_kind(r, F.PAST_MAX_PFN)
    assert p.pfn_first == 100 and p.severity == F.WARNING
    expect = int(np.count_nonzero(tree.truth[100:] != layout_for(ws).invalid))
    assert p.count == expect
    assert r.table.raw.tobytes() == tree.truth[:100].tobytes()


def slot_by_slot(path, top_mfn, ws, max_pfn):
    """What the findings about leaf slots must say, from the tree expanded
    slot by slot over its whole capacity: {(kind, mfn): (count, first pfn,
    last pfn)} for zero, unreadable and shared leaf pointers, and (count,
    first pfn) of the entries at or past max_pfn."""
    L = layout_for(ws)
    fpp = L.per_page
    words = np.fromfile(path, dtype=L.numpy_dtype)
    frames = len(words) // fpp

    def page(mfn):
        return words[mfn * fpp:(mfn + 1) * fpp].astype(np.uint64)

    flat = np.zeros(fpp * fpp, dtype=np.uint64)
    usable = np.zeros(fpp * fpp, dtype=bool)
    for t, mid in enumerate(page(top_mfn).tolist()):
        if mid != 0 and mid < frames:
            flat[t * fpp:(t + 1) * fpp] = page(mid)
            usable[t * fpp:(t + 1) * fpp] = True
    slots = np.flatnonzero(usable)
    named = flat[slots]
    mfns, firsts, counts = np.unique(named, return_index=True, return_counts=True)
    lasts = len(named) - 1 - np.unique(named[::-1], return_index=True)[1]
    want = {}
    past, first = 0, None
    for mfn, a, b, n in zip(mfns.tolist(), firsts.tolist(), lasts.tolist(), counts.tolist()):
        kind = (F.MFN_ZERO if mfn == 0 else F.UNREADABLE if mfn >= frames
                else F.SHARED_PAGE if n > 1 else None)
        if kind:
            want[kind, mfn] = (n, int(slots[a]) * fpp, (int(slots[b]) + 1) * fpp - 1)
        if mfn == 0 or mfn >= frames:
            continue
        pfns = (slots[named == mfn][:, None] * fpp
                + np.flatnonzero(page(mfn) != L.invalid)).reshape(-1)
        pfns = pfns[pfns >= max_pfn]
        if len(pfns):
            past += len(pfns)
            first = int(pfns.min()) if first is None else min(first, int(pfns.min()))
    return want, (past, first)


@pytest.mark.parametrize("ws", [8, 4])
@given(data=st.data())
@settings(max_examples=12, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_slot_counts_match_a_slot_by_slot_expansion(tmp_image, ws, data):
    """The walker counts the slots naming each leaf page per distinct mid
    page (a mid page named by several top slots counts for each of them);
    its findings must agree with the tree expanded slot by slot."""
    L = layout_for(ws)
    fpp = L.per_page
    path, tree = tmp_image(basic_spec(ws, seed=data.draw(st.integers(0, 3))))
    mids = [int(m) for m in tree.top[:3]]
    leaves = [int(m) for m in tree.leaf_mfns[:4]]
    frames = os.path.getsize(path) // PAGE_SIZE
    pointers = st.sampled_from(mids + leaves + [0, frames + 7, tree.top_mfn]
                               + [int(v) for v in tree.placeholders.values() if v])
    for _ in range(data.draw(st.integers(1, 6))):
        where = data.draw(st.sampled_from(["top", "mid", "placeholder"]))
        if where == "top":   # a mid page named by several top slots
            poke(path, tree.top_mfn, data.draw(st.integers(0, fpp - 1)),
                 data.draw(st.sampled_from(mids + [0])), ws)
        else:
            page = (data.draw(st.sampled_from(mids)) if where == "mid"
                    else tree.placeholders["mid_missing"])
            poke(path, page, data.draw(st.integers(0, fpp - 1)), data.draw(pointers), ws)
    max_pfn = data.draw(st.sampled_from([tree.max_pfn, 100, 3 * fpp, 2 * fpp * fpp + 5]))
    with RawImage(path) as src:
        r = walk(src, tree.top_mfn, word_size=ws, max_pfn=max_pfn)
    want, (past, first) = slot_by_slot(path, tree.top_mfn, ws, max_pfn)
    got = {(f.kind, f.mfn): (f.count, f.pfn_first, f.pfn_last) for f in r.findings
           if f.level == "leaf" and f.kind in (F.MFN_ZERO, F.UNREADABLE, F.SHARED_PAGE)}
    assert got == want
    found = [(f.count, f.pfn_first) for f in by_kind(r, F.PAST_MAX_PFN)]
    assert found == ([(past, first)] if past else [])


def test_cross_level_page(tmp_image, ws):
    path, tree = tmp_image(basic_spec(ws))
    mid = int(tree.top[0])
    poke(path, mid, 0, tree.top_mfn, ws)  # a leaf slot names the top page
    with RawImage(path) as src:
        r = walk(src, tree.top_mfn, word_size=ws, max_pfn=tree.max_pfn)
    assert [f.mfn for f in by_kind(r, F.CROSS_LEVEL)] == [tree.top_mfn]


def test_scattered_and_shuffled(tmp_image, ws):
    spec = basic_spec(ws, placement="scattered", scatter_span=4096, shuffle_leaves=True,
                      mfn_order="shuffled")
    path, tree = tmp_image(spec)
    with RawImage(path) as src:
        r = walk(src, tree.top_mfn, max_pfn=tree.max_pfn)
    assert r.table.raw.tobytes() == tree.truth.tobytes()


def test_base_offset(tmp_path, ws):
    from p2mdump.writer import build_tree
    from p2mdump.writer.image import write_raw_image

    tree = build_tree(basic_spec(ws))
    path = tmp_path / "based.img"
    write_raw_image(tree, path, base=12345)
    with RawImage(path, base=12345) as src:
        r = walk(src, tree.top_mfn, max_pfn=tree.max_pfn)
    assert r.table.raw.tobytes() == tree.truth.tobytes()


# -- errors -------------------------------------------------------------------

def test_top_mfn_past_end(tmp_image):
    path, tree = tmp_image(basic_spec(8))
    with RawImage(path) as src, pytest.raises(TreeError, match="not in the image"):
        walk(src, 10 ** 9)


def test_garbage_top_page(tmp_path):
    path = tmp_path / "random.img"
    path.write_bytes(np.random.default_rng(1).bytes(64 * PAGE_SIZE))
    with RawImage(path) as src, pytest.raises(TreeError, match="not a p2m top page"):
        walk(src, 3)
    with RawImage(path) as src, pytest.raises(TreeError):
        walk(src, 3, word_size=8)


def test_wrong_word_size(tmp_image, ws):
    path, tree = tmp_image(basic_spec(ws))
    with RawImage(path) as src, pytest.raises(LayoutError, match="does not fit"):
        walk(src, tree.top_mfn, word_size=12 - ws)


def test_max_pfn_beyond_capacity(tmp_image, ws):
    path, tree = tmp_image(basic_spec(ws))
    with RawImage(path) as src, pytest.raises(LayoutError, match="larger than"):
        walk(src, tree.top_mfn, word_size=ws, max_pfn=layout_for(ws).capacity + 1)


def test_image_errors(tmp_path):
    with pytest.raises(ImageError, match="no such file"):
        RawImage(tmp_path / "nope.img")
    with pytest.raises(ImageError, match="directory"):
        RawImage(tmp_path)
    (tmp_path / "empty.img").write_bytes(b"")
    with pytest.raises(ImageError, match="empty"):
        RawImage(tmp_path / "empty.img")
    (tmp_path / "short.img").write_bytes(b"x" * 100)
    with pytest.raises(ImageError, match="no whole"):
        RawImage(tmp_path / "short.img")


def test_empty_tree(tmp_image, ws):
    L = layout_for(ws)
    path, tree = tmp_image(GuestSpec(word_size=ws, max_pfn=L.per_page, ram=[]))
    with RawImage(path) as src:
        r = walk(src, tree.top_mfn, word_size=ws)
    assert r.max_pfn == 0
    assert by_kind(r, F.EMPTY_TREE)
