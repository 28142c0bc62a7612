"""The saved-p2m recovery (p2mdump.savewalk) on small in-memory streams.

The stream object here only has the attributes the recovery reads (those of
p2mdump.sources.xl_save.SaveStream); the round trip through real files and
the generator is in test_xlsave_roundtrip.py.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest

from p2mdump import findings as F
from p2mdump.errors import TreeError
from p2mdump.layout import PAGE_SIZE, layout_for
from p2mdump.paging import fold_cr3
from p2mdump.savewalk import REPRESENTATION, walk_saved_p2m
from p2mdump.schemas.xen_core import ARCH_SHARED_INFO_OFFSET, arch_shared_info


@dataclass
class P2mFrames:
    start_pfn: int
    end_pfn: int
    pfns: np.ndarray
    record_index: int = 3
    offset: int = 0x100


@dataclass
class FakeStream:
    guest_width: int | None
    p2m_frames: P2mFrames | None
    pages: dict = field(default_factory=dict)       # pfn -> 4096 bytes
    data_pfns: np.ndarray = None
    shared_info: bytes | None = None
    nodata: dict = field(default_factory=dict)
    complete: bool = True
    path: str = "fake.save"

    def has_pfns(self, pfns):
        return np.isin(np.asarray(pfns, dtype=np.uint64), self.data_pfns)

    def read_pfns_into(self, pfns, buf):
        mv = memoryview(buf).cast("B")
        got = np.zeros(len(pfns), dtype=bool)
        for i, p in enumerate(np.asarray(pfns).tolist()):
            page = self.pages.get(p)
            if page is not None:
                mv[i * PAGE_SIZE:(i + 1) * PAGE_SIZE] = page
                got[i] = True
        return got


def shared_info(ws: int, **arch) -> bytes:
    page = bytearray(PAGE_SIZE)
    fields = {"max_pfn": 0, "pfn_to_mfn_frame_list_list": 0, "nmi_reason": 0, "p2m_cr3": 0,
              "p2m_vaddr": 0, "p2m_generation": 0}
    if ws == 4:
        fields["wc_sec_hi"] = 0
    fields.update(arch)
    blob = arch_shared_info(ws).build(fields)
    off = ARCH_SHARED_INFO_OFFSET[ws]
    page[off:off + len(blob)] = blob
    return bytes(page)


def make_guest(ws: int, n: int, *, seed: int = 1, frame_base: int = 0x9000):
    """A truth table of ``n`` entries (all kinds) stored in p2m frames at pfns
    frame_base, frame_base+1, ...; every valid pfn has a page in the stream,
    and the frames' own pfns (when below n) are valid."""
    L = layout_for(ws)
    rng = np.random.default_rng(seed)
    dtype = np.dtype(L.numpy_dtype)
    truth = (rng.permutation(n) + 0x100000).astype(dtype)
    kind = rng.integers(0, 10, n)
    truth[kind == 0] = L.invalid
    truth[kind == 1] = (np.arange(n)[kind == 1] | L.identity_bit).astype(dtype)
    truth[kind == 2] = truth[kind == 2] | dtype.type(L.foreign_bit)
    nf = L.leaves_for(n)
    frame_pfns = np.arange(frame_base, frame_base + nf, dtype=np.uint64)
    inside = frame_pfns[frame_pfns < n].astype(np.int64)
    truth[inside] = 0x500000 + np.arange(len(inside))
    fpp = L.per_page
    padded = np.full(nf * fpp, L.invalid, dtype=dtype)
    padded[:n] = truth
    pages = {int(p): padded[i * fpp:(i + 1) * fpp].tobytes() for i, p in enumerate(frame_pfns)}
    valid = np.flatnonzero(layout_kinds(truth, L) == "valid").astype(np.uint64)
    stream = FakeStream(ws, P2mFrames(0, n - 1, frame_pfns), pages=pages, data_pfns=valid)
    return stream, truth


def layout_kinds(truth, L):
    return np.array([L.kind_of(int(x)) for x in truth])


@pytest.mark.parametrize("ws", [8, 4])
def test_recovers_the_saved_table(ws):
    stream, truth = make_guest(ws, 3000 if ws == 8 else 5000, frame_base=40)
    stream.shared_info = shared_info(ws, max_pfn=len(truth))
    r = walk_saved_p2m(stream)
    assert r.representation == REPRESENTATION
    assert r.max_pfn == len(truth) and r.max_pfn_source == "container"
    assert np.array_equal(r.table.raw, truth)
    assert r.warnings() == []
    assert r.summary()["save"]["p2m_frames"] == len(stream.p2m_frames.pfns)


def test_without_shared_info_the_table_ends_at_end_pfn():
    stream, truth = make_guest(8, 1500)
    r = walk_saved_p2m(stream)
    assert r.max_pfn == 1500 and r.max_pfn_source == "saved"
    assert np.array_equal(r.table.raw, truth)


def test_shared_frames_are_read_once_and_broadcast():
    L = layout_for(8)
    inv = np.full(L.per_page, L.invalid, dtype=np.uint64).tobytes()
    one = np.arange(L.per_page, dtype=np.uint64).tobytes()
    stream = FakeStream(8, P2mFrames(0, 4 * L.per_page - 1, np.array([7, 9, 9, 9], np.uint64)),
                        pages={7: one, 9: inv}, data_pfns=np.array([7, 9], np.uint64))
    r = walk_saved_p2m(stream, check_table=False)
    assert r.pages_read == 2
    assert r.table.counts()["missing"] == 3 * L.per_page


def test_frame_without_page_data_is_a_finding_and_missing():
    stream, truth = make_guest(8, 2048)
    lost = int(stream.p2m_frames.pfns[1])
    del stream.pages[lost]
    r = walk_saved_p2m(stream)
    kinds = {f.kind: f for f in r.findings}
    f = kinds[F.SAVE_P2M_FRAME_NO_DATA]
    assert (f.pfn_first, f.pfn_last) == (512, 1023)
    assert r.table.counts()["missing"] >= 512
    assert np.array_equal(r.table.raw[:512], truth[:512])


def test_stream_pages_disagreeing_with_the_table_are_reported_as_ranges():
    stream, truth = make_guest(8, 2048)
    valid = np.flatnonzero(layout_kinds(truth, layout_for(8)) == "valid")
    missing = np.flatnonzero(layout_kinds(truth, layout_for(8)) == "missing")
    dropped = valid[:3].astype(np.uint64)
    extra = np.array([missing[0], 5000], dtype=np.uint64)
    data = np.setdiff1d(stream.data_pfns, dropped)
    stream.data_pfns = np.union1d(data, extra)
    r = walk_saved_p2m(stream)
    kinds = {f.kind: f for f in r.findings}
    assert kinds[F.SAVE_VALID_NO_DATA].count == 3
    assert kinds[F.SAVE_VALID_NO_DATA].pfn_first == int(dropped[0])
    f = kinds[F.SAVE_DATA_UNMAPPED]
    assert f.count == 2 and "1 missing" in f.message and "1 at or past" in f.message


def test_short_saved_list_in_its_last_pmd_names_the_saver_bug():
    # a list at PMD index 3 whose last PMD the saver dropped: the record ends
    # where that PMD begins, shared_info still says the whole max_pfn
    L = layout_for(8)
    vaddr = 0xFFFFC90000000000 + 3 * (1 << 21)
    max_pfn = 0x41234
    pages = L.leaves_for(max_pfn)
    last_pmd_page = ((vaddr + (pages - 1) * PAGE_SIZE) & ~((1 << 21) - 1)) - vaddr
    saved = last_pmd_page // PAGE_SIZE * L.per_page
    stream, truth = make_guest(8, saved, frame_base=0x200000)
    stream.shared_info = shared_info(8, max_pfn=max_pfn, p2m_cr3=fold_cr3(0x1234, 8),
                                     p2m_vaddr=vaddr)
    r = walk_saved_p2m(stream)
    assert r.max_pfn == max_pfn
    assert np.array_equal(r.table.raw[:saved], truth)
    assert r.table.counts()["missing"] >= max_pfn - saved
    f = next(f for f in r.findings if f.kind == F.SAVE_P2M_SHORT)
    assert f.count == max_pfn - saved and "known bug of Xen's saver" in f.message
    # the same gap without a list does not name the bug
    stream.shared_info = shared_info(8, max_pfn=max_pfn)
    f = next(f for f in walk_saved_p2m(stream).findings if f.kind == F.SAVE_P2M_SHORT)
    assert "saver" not in f.message


def test_a_huge_claimed_max_pfn_does_not_size_the_table():
    stream, truth = make_guest(8, 1024)
    stream.shared_info = shared_info(8, max_pfn=1 << 40)
    r = walk_saved_p2m(stream)
    assert r.max_pfn == 1024
    f = next(f for f in r.findings if f.kind == F.SAVE_P2M_SHORT)
    assert "not a known saver bug" in f.message


def test_frame_count_disagreeing_with_end_pfn():
    stream, truth = make_guest(8, 2048)
    stream.p2m_frames.pfns = stream.p2m_frames.pfns[:2]
    r = walk_saved_p2m(stream)
    assert r.max_pfn == 1024            # the entries the two frames hold
    assert any(f.kind == F.SAVE_P2M_RECORD and f.count == 2 for f in r.findings)


def test_no_frames_record_or_width_is_a_tree_error():
    stream, _ = make_guest(8, 512)
    with pytest.raises(TreeError, match="X86_PV_INFO"):
        walk_saved_p2m(FakeStream(None, stream.p2m_frames, stream.pages, stream.data_pfns))
    with pytest.raises(TreeError, match="X86_PV_P2M_FRAMES"):
        walk_saved_p2m(FakeStream(8, None, stream.pages, stream.data_pfns))


def test_extract_plan_copies_every_stream_page_by_pfn():
    from p2mdump.savewalk import extract_plan
    from p2mdump.sources.save_image import SaveImage

    stream, truth = make_guest(8, 2048, frame_base=3000)
    stream.close = lambda: None
    valid = stream.data_pfns
    stream.data_pfns = np.union1d(valid, np.array([2500], np.uint64))   # past the table
    r = walk_saved_p2m(stream)
    plan = extract_plan(r.table, stream)
    assert np.array_equal(plan.pfns, stream.data_pfns.astype(np.int64))
    assert plan.max_pfn == 2501
    kinds = layout_kinds(truth, layout_for(8))
    assert len(plan.skipped["missing"]) == int(np.count_nonzero(kinds == "missing"))
    assert len(plan.skipped["no page data"]) == 0
    with SaveImage(stream) as source:
        assert source.frames_present(np.array([2500, 2501], np.uint64)).tolist() == [True, False]
        assert source.frame_limit() == 2501 and source.frames_held() == len(stream.data_pfns)


# -- regressions found by the corruption corpus (tests/corpus.py) ------------------------

@pytest.mark.parametrize("ws", [8, 4])
def test_max_pfn_below_the_first_frame_reads_only_that_frame(ws):
    """arch.max_pfn shorter than one p2m frame (a 32-bit max_pfn of 1) used to
    read every frame into a one-frame scratch buffer (exit 70)."""
    stream, truth = make_guest(ws, 3000 if ws == 8 else 5000, frame_base=40)
    stream.shared_info = shared_info(ws, max_pfn=1)
    r = walk_saved_p2m(stream)
    assert len(r.table) == 1 and r.table.raw[0] == truth[0]
    assert any(f.kind == F.SAVE_P2M_RECORD and "less than" in f.message for f in r.findings)


def test_a_far_start_pfn_never_sizes_the_table():
    """start_pfn near 2^32 without a max_pfn made a table of 2^32 pfns."""
    from p2mdump.walker import TABLE_FLOOR

    stream, _ = make_guest(8, 1500)
    stream.p2m_frames.start_pfn = stream.p2m_frames.end_pfn = 0xFFFF_FFFF
    stream.shared_info = shared_info(8, max_pfn=0)
    r = walk_saved_p2m(stream)
    assert len(r.table) == TABLE_FLOOR
    kinds = {f.kind for f in r.findings}
    assert F.TABLE_BUDGET in kinds and F.SAVE_P2M_RECORD in kinds
    assert any("arch.max_pfn is 0" in f.message for f in r.findings)


def test_extract_plan_leaves_absurd_pfns_out():
    """A page of pfn 2^52-1 used to size extract's output (2^64 bytes: exit 70)."""
    from p2mdump.savewalk import extract_plan

    stream, truth = make_guest(8, 1500)
    far = np.array([1 << 40, (1 << 52) - 1], dtype=np.uint64)
    stream.data_pfns = np.concatenate([stream.data_pfns, far])
    r = walk_saved_p2m(stream)
    plan = extract_plan(r.table, stream)
    assert plan.max_pfn == 1500
    assert plan.skipped["beyond-stream"].tolist() == far.astype(np.int64).tolist()
    assert int(plan.pfns.max()) < 1500


def test_saved_entries_past_a_shorter_max_pfn_are_reported():
    stream, truth = make_guest(8, 2048)
    stream.shared_info = shared_info(8, max_pfn=1500)
    r = walk_saved_p2m(stream)
    assert r.max_pfn == 1500 and np.array_equal(r.table.raw, truth[:1500])
    past = [f for f in r.findings if f.kind == F.PAST_MAX_PFN]
    tail = truth[1500:] != np.uint64(layout_for(8).invalid)
    assert len(past) == 1 and past[0].count == int(np.count_nonzero(tail))
    assert past[0].pfn_first == 1500 + int(np.flatnonzero(tail)[0])
    # all-missing past max_pfn: nothing to report
    stream2, truth2 = make_guest(8, 2048, seed=5)
    words = np.frombuffer(b"".join(stream2.pages[int(p)] for p in stream2.p2m_frames.pfns),
                          dtype=np.uint64).copy()
    words[1500:] = layout_for(8).invalid
    for k, p in enumerate(stream2.p2m_frames.pfns.tolist()):
        stream2.pages[p] = words[k * 512:(k + 1) * 512].tobytes()
    stream2.data_pfns = stream2.data_pfns[stream2.data_pfns < 1500]
    stream2.shared_info = shared_info(8, max_pfn=1500)
    assert not [f for f in walk_saved_p2m(stream2).findings if f.kind == F.PAST_MAX_PFN]
