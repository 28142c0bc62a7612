"""The Construct schemas are the source of truth; the numpy fast path must agree."""
import struct

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from p2mdump.layout import PAGE_SIZE, layout_for
from p2mdump.schemas import p2m
from p2mdump.schemas.stamp import StampedFrame
from p2mdump.table import classify, decode


@pytest.mark.parametrize("ws", [4, 8])
def test_schema_sizes(ws):
    L = layout_for(ws)
    for schema in (p2m.top_page(ws), p2m.mid_page(ws), p2m.leaf_page(ws)):
        assert schema.sizeof() == PAGE_SIZE
    assert len(p2m.leaf_page(ws).parse(bytes(PAGE_SIZE)).entries) == L.per_page


def _random_page(ws: int, seed: int) -> bytes:
    """A page mixing random words with every marker value."""
    L = layout_for(ws)
    rng = np.random.default_rng(seed)
    words = rng.integers(0, 2 ** (8 * ws), size=L.per_page,
                         dtype=np.uint64 if ws == 8 else np.uint32)
    pick = rng.integers(0, 5, size=L.per_page)
    small = rng.integers(0, 1 << 20, size=L.per_page).astype(words.dtype)
    words = np.where(pick == 0, words.dtype.type(L.invalid), words)
    words = np.where(pick == 1, small | words.dtype.type(L.identity_bit), words)
    words = np.where(pick == 2, small | words.dtype.type(L.foreign_bit), words)
    words = np.where(pick == 3, small, words)
    return words.astype(L.numpy_dtype).tobytes()


@settings(max_examples=40, deadline=None)
@given(ws=st.sampled_from([4, 8]), seed=st.integers(0, 2 ** 32))
def test_numpy_decode_agrees_with_construct_random_pages(ws, seed):
    from p2mdump.layout import KINDS

    L = layout_for(ws)
    data = _random_page(ws, seed)
    for schema, field in ((p2m.top_page(ws), "mid_mfns"), (p2m.mid_page(ws), "leaf_mfns"),
                          (p2m.leaf_page(ws), "entries")):
        assert list(schema.parse(data)[field]) == np.frombuffer(data, dtype=L.numpy_dtype).tolist()
    via_construct = list(p2m.leaf_page(ws).parse(data).entries)
    arr = np.frombuffer(data, dtype=L.numpy_dtype)
    # the bulk classification and decode agree with the per-entry rules
    assert [KINDS[c] for c in classify(arr, L).tolist()] == [L.kind_of(v) for v in via_construct]
    assert decode(arr, L).tolist() == [L.invalid if L.decode(v) is None else L.decode(v)
                                       for v in via_construct]


@pytest.mark.parametrize("ws", [4, 8])
def test_marker_pages_agree(ws):
    L = layout_for(ws)
    words = [L.invalid, L.identity_entry(7), L.foreign_entry(9), 0x1234, 0] * (L.per_page // 5)
    words += [L.invalid] * (L.per_page - len(words))
    built = p2m.leaf_page(ws).build({"entries": words})
    assert built == struct.pack(f"<{L.per_page}{L.struct_code[1]}", *words)
    assert np.frombuffer(built, dtype=L.numpy_dtype).tolist() == words


def test_truncated_page_is_an_error_for_construct():
    from construct import StreamError

    with pytest.raises(StreamError):
        p2m.leaf_page(8).parse(bytes(PAGE_SIZE - 8))


def test_stamp_schema_parses_writer_frames():
    from p2mdump.writer.image import stamped_frames

    frames = stamped_frames(np.array([5, 77], dtype=np.uint64),
                            np.array([0x100, 0x2], dtype=np.uint64))
    parsed = StampedFrame.parse(frames[1].tobytes())
    assert (parsed.pfn, parsed.mfn) == (77, 2)
