"""``generate --container xl-save``: streams laid out as Xen's saver writes them.

Every variant is checked by Xen's own verifier (``verify-stream-v2 -f xl``
from Debian's xen-utils-4.17) when it is found (P2MDUMP_XEN_VERIFIER, or the
default folder below); with P2MDUMP_REQUIRE_XEN_VERIFIER=1 a missing verifier
fails the tests instead of skipping them.  The structural tests read the
stream back with a tiny parser built on the Construct schemas.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from p2mdump.cli import main
from p2mdump.layout import PAGE_SIZE, layout_for
from p2mdump.paging import PTE_FRAME_MASK, PTE_PRESENT, fold_cr3
from p2mdump.schemas import xen_core as X
from p2mdump.schemas import xl_save as S
from p2mdump.writer import GuestSpec
from p2mdump.writer.containers import generate_container
from p2mdump.writer.listcontainers import xen_dump_p2m_size
from p2mdump.writer.saveguest import build_save_guest
from p2mdump.writer.xlsave import xen_slots

DEFAULT_VERIFIER = "/tmp/xenv/x/usr/lib/xen-4.17"
#: a 64-bit list starting at PMD index 2 of its page table (Xen's saver bug applies)
UNALIGNED_VADDR = 0xFFFFC90000400000


# -- Xen's verifier ------------------------------------------------------------------------

def verifier_dir():
    folder = os.environ.get("P2MDUMP_XEN_VERIFIER") or DEFAULT_VERIFIER
    if os.path.isfile(os.path.join(folder, "bin", "verify-stream-v2")):
        return folder
    if os.environ.get("P2MDUMP_REQUIRE_XEN_VERIFIER") == "1":
        pytest.fail(f"Xen's verify-stream-v2 not found under {folder} "
                    "(P2MDUMP_REQUIRE_XEN_VERIFIER=1)")
    pytest.skip("Xen's verify-stream-v2 not found (set P2MDUMP_XEN_VERIFIER)")


def xen_verify(path):
    folder = verifier_dir()
    env = dict(os.environ, PYTHONPATH=os.path.join(folder, "lib", "python"))
    res = subprocess.run([sys.executable, os.path.join(folder, "bin", "verify-stream-v2"),
                          "-v", "-f", "xl", "-i", str(path)], capture_output=True, text=True,
                         env=env)
    return res.returncode, res.stdout + res.stderr


# -- a tiny reader built on the schemas ------------------------------------------------------

class Stream:
    """The records of an xl save file: libxl and libxc records in order, the JSON config,
    and every copy of every pfn (pfn -> list of (type, data offset or None))."""

    def __init__(self, path):
        self.path = path
        with open(path, "rb") as fh:
            self.fh = fh
            self.parse()

    def read(self, n):
        data = self.fh.read(n)
        assert len(data) == n, "truncated"
        return data

    def parse(self):
        hdr = S.XlHeader.parse(self.read(S.XL_HEADER_SIZE))
        self.xl = hdr
        opt = self.read(hdr.optional_data_len)
        n = S.XlConfigLength.parse(opt[:4]).config_len
        assert opt[4 + n - 1:4 + n] == b"\0"
        self.config = json.loads(opt[4:4 + n - 1])
        self.libxl_header = S.LibxlHeader.parse(self.read(S.LIBXL_HEADER_SIZE))
        self.libxl, self.libxc, self.bodies = [], [], {}
        self.copies, self.batches, self.page_types = {}, [], {}
        while True:
            rh = S.RecordHeader.parse(self.read(S.RECORD_HEADER_SIZE))
            self.libxl.append(rh.type)
            self.read(S.padded_length(rh.length))
            if rh.type == S.LIBXL_REC_LIBXC_CONTEXT:
                self.parse_libxc()
            if rh.type == S.LIBXL_REC_END:
                break
        assert self.fh.read(1) == b"", "bytes after the libxl END"

    def parse_libxc(self):
        self.image = S.LibxcImageHeader.parse(self.read(S.LIBXC_IMAGE_HEADER_SIZE))
        self.domain = S.LibxcDomainHeader.parse(self.read(S.LIBXC_DOMAIN_HEADER_SIZE))
        while True:
            rh = S.RecordHeader.parse(self.read(S.RECORD_HEADER_SIZE))
            self.libxc.append(rh.type)
            start = self.fh.tell()
            if rh.type == S.REC_PAGE_DATA:
                count = S.PageDataHeader.parse(self.read(S.PAGE_DATA_HEADER_SIZE)).count
                self.fh.seek(start)
                rec = S.page_data_pfns(count).parse(
                    self.read(S.PAGE_DATA_HEADER_SIZE + count * S.PFN_WORD_SIZE))
                off = self.fh.tell()
                pfns = []
                for w in rec.pfns:
                    pfn, t = w & S.PAGE_DATA_PFN_MASK, w >> S.PAGE_DATA_TYPE_SHIFT
                    pfns.append(pfn)
                    data = None
                    if S.has_page_data(t):
                        data, off = off, off + PAGE_SIZE
                    self.copies.setdefault(pfn, []).append((t, data))
                self.batches.append(pfns)
                assert off - start == rh.length
            else:
                self.bodies.setdefault(rh.type, []).append(self.read(rh.length))
            self.fh.seek(start + S.padded_length(rh.length))
            if rh.type == S.REC_END:
                break

    def page(self, pfn, copy=-1):
        t, off = self.copies[pfn][copy]
        if off is None:
            return None
        with open(self.path, "rb") as fh:
            fh.seek(off)
            return fh.read(PAGE_SIZE)

    def p2m_frames(self):
        body = self.bodies[S.REC_X86_PV_P2M_FRAMES][0]
        head = S.X86PvP2mFramesHeader.parse(body)
        count = (len(body) - S.P2M_FRAMES_HEADER_SIZE) // 8
        return head.end_pfn, list(S.x86_pv_p2m_frames(count).parse(body).p2m_pfns)


def build(tmp_path, name="g", container="xl-save", **kw):
    opts = {k: kw.pop(k) for k in ("resend", "xen_save_bug") if k in kw}
    spec = GuestSpec(**kw)
    out = tmp_path / f"{name}.save"
    truth = tmp_path / f"{name}.truth"
    generate_container(spec, out, container=container, truth=truth, **opts)
    side = json.loads((tmp_path / f"{name}.save.json").read_text())
    tw = np.fromfile(truth, dtype=f"<u{spec.word_size}")
    return spec, out, side, tw


def own(words, ws):
    L = layout_for(ws)
    dt = words.dtype.type
    return (words != dt(L.invalid)) & ((words & dt(L.flag_mask)) == 0)


SHAPES = dict(max_pfn=0x2400, holes=[(0x100, 0x300)], identity=[(0x800, 0xA00)],
              foreign=[(0x1000, 0x1010)])
VARIANTS = [dict(representation=r, word_size=ws) for r in ("tree", "list", "both")
            for ws in (8, 4)]
EXTRA = [dict(representation="list", word_size=8, resend=3, data=True),
         dict(representation="tree", word_size=4, resend=2),
         dict(representation="list", word_size=8, max_pfn=0x41234, p2m_vaddr=UNALIGNED_VADDR,
              xen_save_bug=True),
         dict(representation="both", word_size=4, resend=1, data=True)]


def ident(v):
    return "-".join(f"{k}={v[k]}" for k in sorted(v) if k != "p2m_vaddr")


@pytest.mark.parametrize("variant", VARIANTS + EXTRA, ids=ident)
def test_xen_verifier_accepts(tmp_path, variant):
    _, out, _, _ = build(tmp_path, **{**SHAPES, **variant})
    rc, log = xen_verify(out)
    assert rc == 0, log
    assert "Warning" not in log and "Error" not in log, log
    assert "Libxl Record: End" in log


@pytest.mark.parametrize("variant", VARIANTS + EXTRA[:2] + EXTRA[3:], ids=ident)
def test_stream_structure(tmp_path, variant):
    spec, out, side, truth = build(tmp_path, **{**SHAPES, **variant})
    ws = spec.word_size
    st = Stream(out)
    # headers and record order
    assert st.xl.mandatory_flags == S.XL_MANDATORY_FLAG_JSON | S.XL_MANDATORY_FLAG_STREAMV2
    assert st.config["c_info"]["type"] == "pv"
    assert st.config["b_info"]["max_memkb"] == spec.max_pfn * 4
    assert st.libxl == [S.LIBXL_REC_LIBXC_CONTEXT, S.LIBXL_REC_END]
    assert st.image.version == 3 and st.domain.type == S.DHDR_TYPE_X86_PV
    head = [S.REC_X86_PV_INFO, S.REC_X86_CPUID_POLICY, S.REC_X86_MSR_POLICY,
            S.REC_STATIC_DATA_END, S.REC_X86_PV_P2M_FRAMES]
    tail = [S.REC_X86_TSC_INFO, S.REC_SHARED_INFO, S.REC_X86_PV_VCPU_BASIC, S.REC_END]
    assert st.libxc[:5] == head and st.libxc[-4:] == tail
    assert set(st.libxc[5:-4]) == {S.REC_PAGE_DATA}
    info = S.X86PvInfo.parse(st.bodies[S.REC_X86_PV_INFO][0])
    assert (info.guest_width, info.pt_levels) == (ws, 4 if ws == 8 else 3)
    # the first pass: every pfn 0..end in order, batches of at most 1024
    end, frames = st.p2m_frames()
    assert end == side["xl_save"]["end_pfn"] == spec.max_pfn - 1
    sent = [p for batch in st.batches for p in batch]
    assert all(0 < len(b) <= S.PAGE_DATA_MAX_COUNT for b in st.batches)
    assert sent[:end + 1] == list(range(end + 1))
    # then the resend rounds, each in pfn order
    rounds = side["xl_save"]["resend_rounds"]
    assert len(rounds) == variant.get("resend", 0)
    assert len(sent) - (end + 1) == sum(r["resent_pfns"] for r in rounds)
    # the last copy of the p2m frames is the truth; p2m pages hold MFNs as they were
    fpp = PAGE_SIZE // ws
    assert len(frames) == end // fpp + 1
    p2m = np.concatenate([np.frombuffer(st.page(p), dtype=f"<u{ws}") for p in frames])
    assert np.array_equal(p2m[:end + 1], truth[:end + 1])
    # XTAB exactly for the pfns whose word is not a machine frame of the guest
    valid = own(truth, ws)
    for pfn in range(end + 1):
        t = st.copies[pfn][-1][0]
        assert (t == S.PFINFO_XTAB) == (not valid[pfn]), hex(pfn)
    # shared_info carries max_pfn; vCPU 0's cr3 names the pinned root table's pfn
    si = X.shared_info_page(ws).parse(st.bodies[S.REC_SHARED_INFO][0])
    assert si.arch.max_pfn == spec.max_pfn
    vcpu = st.bodies[S.REC_X86_PV_VCPU_BASIC][0]
    assert len(vcpu) == S.VCPU_HEADER_SIZE + S.VCPU_CONTEXT_SIZE[ws]
    off = S.VCPU_HEADER_SIZE + S.VCPU_CR3_OFFSET[ws]
    cr3 = int.from_bytes(vcpu[off:off + ws], "little")
    root_pfn = side["xl_save"]["cr3_pfn"]
    assert cr3 == fold_cr3(root_pfn, ws)
    levels = info.pt_levels
    assert st.copies[root_pfn][-1][0] == S.PFINFO_LPINTAB | levels
    # every page that changed in a resend round has its new contents in the last copy
    for rnd in side["xl_save"]["resend_rounds"]:
        for pfn in rnd["swapped_pfns"]:
            assert len(st.copies[pfn]) >= 2
            if spec.data:
                stamp = np.frombuffer(st.page(pfn), dtype="<u8")
                assert (int(stamp[1]), int(stamp[2])) == (pfn, int(truth[pfn]))


@pytest.mark.parametrize("rep,ws", [("tree", 8), ("list", 8), ("both", 4), ("list", 4)])
def test_page_tables_normalised(tmp_path, rep, ws):
    kw = {**SHAPES, "representation": rep, "word_size": ws}
    spec, out, side, truth = build(tmp_path, **kw)
    save = build_save_guest(GuestSpec(**kw))
    st = Stream(out)
    tables = 0
    for pfn, copies in st.copies.items():
        t = copies[-1][0]
        level = t & ~S.PFINFO_LPINTAB
        if not 1 <= level <= 4:
            continue
        tables += 1
        mfn = int(truth[pfn])
        orig = np.asarray(save.structure_words(np.array([mfn], np.uint64))[mfn], np.uint64)
        assert save.levels[mfn] == level
        sent = np.frombuffer(st.page(pfn), dtype="<u8")
        xen = xen_slots(save.mode, level)
        assert not sent[xen.start:xen.stop].any()
        for i in np.flatnonzero(orig).tolist():
            if i in xen:
                continue
            o, s = int(orig[i]), int(sent[i])
            assert o & ~PTE_FRAME_MASK == s & ~PTE_FRAME_MASK
            if o & PTE_PRESENT:
                # the pfn it names maps the frame the original named
                assert int(truth[(s & PTE_FRAME_MASK) >> 12]) == (o & PTE_FRAME_MASK) >> 12
    assert tables == len(save.levels)
    if ws == 8:
        assert list(xen_slots(save.mode, 4)) == list(range(256, 273))


def test_resend_final_state(tmp_path):
    kw = {**SHAPES, "representation": "list", "word_size": 8, "data": True}
    _, _, _, before = build(tmp_path, "a", **kw)
    _, out, side, after = build(tmp_path, "b", resend=2, **kw)
    swapped = sorted({p for r in side["xl_save"]["resend_rounds"] for p in r["swapped_pfns"]})
    assert swapped
    changed = np.flatnonzero(before != after).tolist()
    assert set(changed) <= set(swapped) and changed
    st = Stream(out)
    for pfn in changed:
        first = np.frombuffer(st.page(pfn, 0), dtype="<u8")
        last = np.frombuffer(st.page(pfn), dtype="<u8")
        assert int(first[2]) == int(before[pfn]) and int(last[2]) == int(after[pfn])


def test_xen_save_bug(tmp_path):
    kw = dict(representation="list", word_size=8, max_pfn=0x41234, p2m_vaddr=UNALIGNED_VADDR)
    spec, out, side, truth = build(tmp_path, "bug", xen_save_bug=True, **kw)
    end, frames = Stream(out).p2m_frames()
    assert end == 0x3FFFF == side["xen_save_bug"]["end_pfn"]
    assert end == xen_dump_p2m_size(build_save_guest(GuestSpec(**kw)).guest) - 1
    st = Stream(out)
    assert max(st.copies) == end
    assert own(truth, 8)[end + 1:].any()       # valid pfns the stream never holds
    _, ok, side_ok, _ = build(tmp_path, "ok", **kw)
    assert Stream(ok).p2m_frames()[0] == spec.max_pfn - 1 and "xen_save_bug" not in side_ok


def test_tree_trailing_missing_regions_trimmed(tmp_path):
    spec, out, side, truth = build(tmp_path, representation="tree", word_size=8,
                                   max_pfn=0xC0000, ram=[(0, 0x3000)])
    end, frames = Stream(out).p2m_frames()
    fpp = PAGE_SIZE // 8
    assert end == 2 * fpp * fpp - 1 < spec.max_pfn - 1      # Xen's map_p2m_tree trim
    assert not own(truth, 8)[end + 1:].any()


def sparse_supported(path):
    with open(path, "wb") as fh:
        fh.truncate(1 << 24)
    return os.stat(path).st_blocks * 512 < (1 << 20)


def test_sparse_and_small(tmp_path):
    if not sparse_supported(tmp_path / "probe"):
        pytest.skip("file system without holes")
    spec, out, side, _ = build(tmp_path, representation="list", word_size=8, max_pfn=0x20000)
    size = os.stat(out).st_size
    assert size == side["xl_save"]["size"] > 0x20000 * PAGE_SIZE
    assert os.stat(out).st_blocks * 512 < size // 32


def test_cli(tmp_path):
    out = tmp_path / "c.save"
    r = CliRunner().invoke(main, ["generate", str(out), "--container", "xl-save",
                                  "--representation", "both", "--max-pfn", "0x1000",
                                  "--resend", "1", "--truth", str(tmp_path / "t")])
    assert r.exit_code == 0, r.output
    assert "xl save" in r.stderr
    side = json.loads((tmp_path / "c.save.json").read_text())
    assert side["container"] == "xl-save" and side["representation"] == "both"
    for args in (["--resend", "1"], ["--container", "xl-save", "--xen-save-bug"],
                 ["--container", "elf", "--xen-save-bug", "--representation", "list"]):
        r = CliRunner().invoke(main, ["generate", str(tmp_path / "x"), *args])
        assert r.exit_code == 2, (args, r.output)
        assert not (tmp_path / "x").exists()
