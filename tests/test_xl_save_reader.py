"""The xl save reader: index, last copy wins, pages by pfn, and bad input."""
import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import savestream as B
from p2mdump import findings as F
from p2mdump.errors import ContainerError, ImageError
from p2mdump.layout import PAGE_SIZE
from p2mdump.schemas import xl_save as S
from p2mdump.sources.detect import XL_SAVE, sniff_bytes
from p2mdump.sources.xl_save import open_save
from p2mdump.sources.xl_save.pageindex import decode_words

VERIFIER = os.environ.get("P2MDUMP_XEN_VERIFIER", "/tmp/xenv/x/usr/lib/xen-4.17")


def write(tmp_path, data: bytes, name="dom.save") -> str:
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


def kinds(stream):
    return [f.kind for f in stream.findings]


@pytest.mark.parametrize("ws", [8, 4])
@pytest.mark.parametrize("entry", ["xl", "libxl", "libxc"])
def test_index_of_a_whole_stream(tmp_path, ws, entry):
    npages = 2500
    path = write(tmp_path, B.guest_file(ws, entry=entry, npages=npages))
    assert sniff_bytes(open(path, "rb").read(64)) == XL_SAVE
    with open_save(path) as s:
        assert (s.entry, s.complete, s.findings) == (entry, True, [])
        assert (s.guest_width, s.pt_levels) == (ws, 4 if ws == 8 else 3)
        assert (s.libxc_version, s.domain_type, s.xen_version) == (3, S.DHDR_TYPE_X86_PV, (4, 17))
        assert s.libxl_version == (None if entry == "libxc" else 2)
        assert (s.config or {}).get("c_info", {}).get("name") == \
            ("guest-a" if entry == "xl" else None)
        assert np.array_equal(s.data_pfns, np.arange(npages, dtype=np.uint64))
        assert np.all(np.diff(s.data_offsets.astype(np.int64)) >= PAGE_SIZE)
        fpp = PAGE_SIZE // ws
        frames = s.p2m_frames
        assert (frames.start_pfn, frames.end_pfn) == (0, npages - 1)
        assert frames.pfns.tolist() == list(range(npages - len(frames.pfns), npages))
        assert len(frames.pfns) == (npages - 1) // fpp + 1
        assert s.record_counts["libxc/PAGE_DATA"] == 3
        assert s.page_counts["NOTAB"] == npages - 2 and s.page_counts["L1TAB"] == 1
        top = "L4TAB|PINNED" if ws == 8 else "L3TAB|PINNED"
        assert s.page_counts[top] == 1
        assert [(v["vcpu_id"], v["cr3_pfn"]) for v in s.vcpus] == [(0, 1)]
        info = s.info()
        assert info["shared_info"]["max_pfn"] == npages
        assert info["shared_info"]["pfn_to_mfn_frame_list_list"] == 0x1234
        for pfn in (0, 1, 1023, 1024, npages - 1):
            assert s.read_pfn(pfn) == B.stamp(pfn)
        assert s.read_pfn(npages) is None


def test_last_copy_wins_and_no_data_types(tmp_path):
    resend = [5, 6, 7, 2000]
    nodata = [(10, S.PFINFO_XTAB), (11, S.PFINFO_BROKEN), (3000, S.PFINFO_XALLOC)]
    path = write(tmp_path, B.guest_file(8, npages=2100, resend=resend, nodata=nodata))
    with open_save(path) as s:
        assert s.resent == len(resend) + 2           # 10 and 11 had pages before
        for pfn in resend:
            assert s.read_pfn(pfn) == B.stamp(pfn, 1)
        assert s.read_pfn(4) == B.stamp(4)
        assert s.read_pfn(10) is None and s.read_pfn(11) is None
        assert {k: v.tolist() for k, v in s.nodata.items()} == \
            {"XTAB": [10], "BROKEN": [11], "XALLOC": [3000]}
        assert len(s.data_pfns) == 2100 - 2
        assert s.page_counts["XTAB"] == s.page_counts["BROKEN"] == s.page_counts["XALLOC"] == 1


def test_read_pfns_into_matches_single_reads(tmp_path):
    path = write(tmp_path, B.guest_file(8, npages=3000, resend=range(100, 140)))
    rng = np.random.default_rng(7)
    pfns = np.concatenate([np.arange(90, 150), rng.integers(0, 3200, 200),
                           np.arange(2990, 3010)]).astype(np.uint64)
    with open_save(path) as s:
        buf = bytearray(len(pfns) * PAGE_SIZE)
        got = s.read_pfns_into(pfns, buf)
        for i, pfn in enumerate(pfns.tolist()):
            page = s.read_pfn(pfn)
            assert got[i] == (page is not None)
            if page is not None:
                assert buf[i * PAGE_SIZE:(i + 1) * PAGE_SIZE] == page
        assert not got[pfns >= 3000].any()
        assert s.has_pfns(pfns).tolist() == got.tolist()


@given(st.binary(min_size=24, max_size=24))
def test_flat_structs_agree_with_construct(raw):
    for schema in (S.RecordHeader, S.PageDataHeader, S.VcpuHeader, S.X86PvP2mFramesHeader,
                   S.LibxcImageHeader, S.LibxcDomainHeader):
        size = schema.sizeof()
        parsed = schema.parse(raw[:size])
        assert S.flat_struct(schema).unpack(raw[:size]) == \
            tuple(parsed[sc.name] for sc in schema.subcons)


@settings(max_examples=50)
@given(st.lists(st.integers(0, 2**64 - 1), min_size=1, max_size=40))
def test_pfn_words_agree_with_construct(words):
    body = S.page_data_pfns(len(words)).build({"count": len(words), "reserved": 0,
                                               "pfns": words})
    parsed = S.page_data_pfns(len(words)).parse(body)
    assert decode_words(body[S.PAGE_DATA_HEADER_SIZE:], len(words)).tolist() == \
        list(parsed.pfns)


# -- truncation ------------------------------------------------------------------------------

def _small_file():
    """A small xl file and the offsets where each of its records starts."""
    recs = B.guest_records(8, npages=40, batch=16, resend=[3])
    data = B.guest_file(8, npages=40, batch=16, resend=[3])
    stream_start = len(data) - sum(map(len, recs)) - S.RECORD_HEADER_SIZE   # libxl END
    starts, off = [], stream_start
    for r in recs:
        starts.append(off)
        off += len(r)
    return data, starts


DATA, STARTS = _small_file()
CUTS = sorted(c for c in set(STARTS + [s + 4 for s in STARTS] + [s + 20 for s in STARTS]
                             + [s + 3000 for s in STARTS] + [len(DATA) - 8, len(DATA) - 1])
              if c < len(DATA))


@pytest.mark.parametrize("cut", CUTS)
def test_truncated_streams_index_what_is_complete(tmp_path, cut):
    full = open_save(write(tmp_path, DATA, "full.save"))
    with open_save(write(tmp_path, DATA[:cut])) as s:
        assert not s.complete
        trunc = [f for f in s.findings if f.kind == F.SAVE_TRUNCATED]
        assert len(trunc) == 1 and "offset 0x" in trunc[0].message
        if cut in STARTS:
            assert f"ends at offset {cut:#x} (before record #" in trunc[0].message
        assert set(s.data_pfns.tolist()) <= set(full.data_pfns.tolist())
        for pfn in s.data_pfns.tolist():
            assert s.read_pfn(pfn) == full.read_pfn(pfn) or pfn == 3
            assert s.data_offsets[s.data_pfns.tolist().index(pfn)] + PAGE_SIZE <= cut
    full.close()


def test_truncated_page_data_keeps_its_complete_pages(tmp_path):
    first = STARTS[3]                        # the first PAGE_DATA record
    pages_at = first + 16 + 16 * 8
    with open_save(write(tmp_path, DATA[:pages_at + 5 * PAGE_SIZE + 100])) as s:
        assert s.data_pfns.tolist() == [0, 1, 2, 3, 4]
        assert "5 of its 16 pages indexed" in s.findings[0].message


@pytest.mark.parametrize("cut", [10, 47, 60, 230])
def test_truncated_headers_are_errors(tmp_path, cut):
    with pytest.raises(ContainerError, match="cut short|past the end|not a save file"):
        open_save(write(tmp_path, DATA[:cut]))


def test_truncated_libxc_header_is_a_finding(tmp_path):
    libxc_at = STARTS[0] - S.LIBXC_IMAGE_HEADER_SIZE - S.LIBXC_DOMAIN_HEADER_SIZE
    with open_save(write(tmp_path, DATA[:libxc_at + 20])) as s:
        assert not s.complete and kinds(s) == [F.SAVE_TRUNCATED]
        assert f"{libxc_at:#x}" in s.findings[0].message


# -- bad records -----------------------------------------------------------------------------

SHINFO = B.shared_info(8, max_pfn=16)
#: index of the first record ``build`` adds (after LIBXC_CONTEXT, PV_INFO, P2M_FRAMES, SHARED_INFO)
FIRST = 4


def build(tmp_path, records, **kw):
    """An xl file whose libxc stream holds PV_INFO, P2M_FRAMES, SHARED_INFO,
    ``records``, then END."""
    recs = [B.rec(S.REC_X86_PV_INFO, B.pv_info(8)),
            B.rec(S.REC_X86_PV_P2M_FRAMES, B.p2m_frames(15, [0])),
            B.rec(S.REC_SHARED_INFO, SHINFO), *records, B.rec(S.REC_END)]
    return open_save(write(tmp_path, B.xl(B.libxl(B.libxc(recs, **kw)), B.CONFIG)))


def pages(pfns, t=0):
    return [(p, t, B.stamp(p)) for p in pfns]


def test_page_data_length_disagreeing_with_count(tmp_path):
    body = B.page_data(pages([1, 2]))
    bad = B.rec(S.REC_PAGE_DATA, body[:-PAGE_SIZE])          # one page short
    s = build(tmp_path, [bad, B.rec(S.REC_PAGE_DATA, B.page_data(pages([9])))])
    assert s.complete and s.data_pfns.tolist() == [9]
    f = [f for f in s.findings if f.kind == F.SAVE_RECORD_LENGTH]
    assert len(f) == 1 and f"record #{FIRST}" in f[0].message and "at offset 0x" in f[0].message


@pytest.mark.parametrize("count", [0, 2**32 - 1])
def test_page_data_counts_that_cannot_be(tmp_path, count):
    body = B.page_data(pages([1]), count=count)
    s = build(tmp_path, [B.rec(S.REC_PAGE_DATA, body)])
    assert s.complete and len(s.data_pfns) == 0
    assert F.SAVE_PAGE_COUNT in kinds(s)


def test_page_data_over_1024_is_reported_and_indexed(tmp_path):
    entries = [(p, S.PFINFO_XTAB, None) for p in range(1025)]
    s = build(tmp_path, [B.rec(S.REC_PAGE_DATA, B.page_data(entries))])
    assert kinds(s) == [F.SAVE_PAGE_COUNT] and len(s.nodata["XTAB"]) == 1025


def test_reserved_bits_invalid_types_and_absurd_pfns(tmp_path):
    body = bytearray(B.page_data(pages([1, 2, 3]) + [(1 << 41, 0, B.stamp(9))]))
    word = S.PAGE_DATA_HEADER_SIZE
    body[word + 6] |= 0x10                                  # pfn[0]: reserved bit 52
    body[word + 8 + 7] = 0x50                               # pfn[1]: type 5
    s = build(tmp_path, [B.rec(S.REC_PAGE_DATA, bytes(body), ),
                         B.rec(S.REC_PAGE_DATA, B.page_data(pages([7]), reserved=3))])
    assert sorted(kinds(s)) == sorted([F.SAVE_RESERVED, F.SAVE_PAGE_TYPE, F.SAVE_ABSURD_PFN,
                                       F.SAVE_RESERVED])
    assert s.data_pfns.tolist() == [1, 3, 7, 1 << 41]
    assert s.read_pfn(3) == B.stamp(3) and s.read_pfn(1 << 41) == B.stamp(9)


def test_unknown_records(tmp_path):
    s = build(tmp_path, [B.rec(0x77, b"x" * 13), B.rec(S.REC_TYPE_OPTIONAL | 0x99, b"y" * 5),
                         B.rec(S.REC_PAGE_DATA, B.page_data(pages([4])))])
    assert s.complete and s.data_pfns.tolist() == [4]
    assert kinds(s) == [F.SAVE_UNKNOWN_RECORD]
    assert "0x77" in s.findings[0].message and f"record #{FIRST}" in s.findings[0].message
    assert s.record_counts["libxc/UNKNOWN(0x00000077)"] == 1
    assert sum(v for k, v in s.record_counts.items() if "optional" in k) == 1


def test_non_zero_padding(tmp_path):
    s = build(tmp_path, [B.rec(S.REC_X86_PV_P2M_FRAMES, B.p2m_frames(0, [1]) + b"abc",
                               pad=b"\1" * 5)])
    assert F.SAVE_PADDING in kinds(s)


def test_fixed_size_record_of_the_wrong_size(tmp_path):
    s = build(tmp_path, [B.rec(S.REC_SHARED_INFO, bytes(100)),
                         B.rec(S.REC_X86_TSC_INFO, bytes(8))])
    assert kinds(s) == [F.SAVE_RECORD_LENGTH] * 2 and s.shared_info == SHINFO and s.tsc is None


def test_config_not_json(tmp_path):
    data = B.xl(B.libxl(B.libxc(B.guest_records(8, npages=10))), config="name = 'x'")
    with open_save(write(tmp_path, data)) as s:
        assert s.config is None and s.config_text == "name = 'x'"
        assert kinds(s) == [F.SAVE_CONFIG] and s.complete


@pytest.mark.parametrize("damage,match", [
    ("xl-byteorder", "big-endian"), ("xl-legacy", "convert-legacy-stream"),
    ("libxl-be", "big-endian"), ("libxc-be", "big-endian"), ("libxc-v4", "version 4"),
    ("hvm", "HVM save files hold no PV p2m"), ("libxl-v3", "version 3")])
def test_unusable_streams_are_errors(tmp_path, damage, match):
    recs = B.guest_records(8, npages=10)
    libxc = B.libxc(recs, options=S.LIBXC_OPT_BIG_ENDIAN if damage == "libxc-be" else 0,
                    version=4 if damage == "libxc-v4" else 3,
                    dtype=S.DHDR_TYPE_X86_HVM if damage == "hvm" else S.DHDR_TYPE_X86_PV)
    libxl = B.libxl(libxc, options=S.LIBXL_OPT_BIG_ENDIAN if damage == "libxl-be" else 0,
                    version=3 if damage == "libxl-v3" else 2)
    data = B.xl(libxl, B.CONFIG,
                flags=S.XL_MANDATORY_FLAG_JSON if damage == "xl-legacy" else None,
                byteorder=S.XL_BYTEORDER_SWAPPED if damage == "xl-byteorder" else
                S.XL_BYTEORDER_MARKER)
    with pytest.raises(ContainerError, match=match):
        open_save(write(tmp_path, data))


def test_huge_claims_allocate_nothing(tmp_path):
    """A P2M_FRAMES record claiming 4 GiB in a small file is a truncation, not an allocation."""
    hdr = S.RecordHeader.build({"type": S.REC_X86_PV_P2M_FRAMES, "length": 2**32 - 8})
    s = build(tmp_path, [hdr + bytes(64)])
    assert not s.complete and kinds(s) == [F.SAVE_TRUNCATED]


def test_not_a_save_file(tmp_path):
    with pytest.raises(ImageError):
        open_save(write(tmp_path, b"\0" * 8192))


@pytest.mark.skipif(not os.path.isdir(VERIFIER), reason="Xen's verify-stream-v2 not unpacked")
@pytest.mark.parametrize("ws,entry,kw", [(8, "xl", {}), (4, "xl", {"resend": [1, 2]}),
                                         (8, "libxl", {"nodata": [(5, S.PFINFO_XTAB)]}),
                                         (4, "libxc", {"version": 2})])
def test_builder_streams_pass_xens_verifier(tmp_path, ws, entry, kw):
    path = write(tmp_path, B.guest_file(ws, entry=entry, npages=1500, **kw))
    res = subprocess.run([sys.executable, os.path.join(VERIFIER, "bin", "verify-stream-v2"),
                          "-f", entry, "-i", path], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": os.path.join(VERIFIER, "lib", "python")})
    assert res.returncode == 0, res.stderr
    with open_save(path) as s:
        assert s.complete and s.findings == []


def test_detection_stays_free_of_construct_and_numpy():
    code = ("import sys, p2mdump.sources.detect as d, p2mdump.schemas.xl_save_ids as i; "
            "assert [d.sniff_bytes(h) for h in (i.XL_HEAD, i.LIBXL_HEAD, i.LIBXC_HEAD)] == "
            "['xl-save'] * 3; assert 'construct' not in sys.modules and 'numpy' not in sys.modules")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert res.returncode == 0, res.stderr
