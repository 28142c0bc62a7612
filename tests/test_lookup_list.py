"""Single lookups in a linear p2m list, and guest virtual addresses (lookup --vaddr).

The list guests are built by hand (tests/ptimage.py): page tables and list
pages word by word in raw images, 64-bit 4-level and 32-bit PAE with a
folded cr3, with every odd case of a list page (shared missing frame,
non-present PTE and PMD, frame outside the image, frame 0, 2 MiB page,
shared PTE page, a short last page).
"""
import json
import os
import shutil
import struct
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given, settings, strategies as st

from conftest import lookup_click, lookup_fast, fixture_path, load_fixture
from p2mdump.cli import main
from p2mdump.errors import LayoutError, TreeError
from p2mdump.launcher import _parse_lookup
from p2mdump.listwalk import walk_list
from p2mdump.lookup import PAST_LIST_END, ListPathLookup, format_result
from p2mdump.paging import MAX_LIST_PFNS, PAE, X86_64
from p2mdump.schemas import xen_core as X
from p2mdump.sidecar import SIDECAR_FORMAT
from p2mdump.sources.elf import ElfFile
from p2mdump.sources.raw import RawImage
from p2mdump.writer import GuestSpec
from p2mdump.writer.containers import tree_pages, tree_pages_as_guest_pages, write_xc_core
from p2mdump.writer.tree import build_tree
from ptimage import (KIB4, MIB2, PAGES_PER_PMD, CountingImage, Memory, build_list_guest,
                     install, large, page)

# -- the guests -------------------------------------------------------------------------------

#: 64-bit: PMD 0 mixes every per-page kind, then a PMD that is not present, a
#: 2 MiB page, a shared PTE page, and a short last PMD of own pages
KINDS64 = (["own"] * 40 + ["missing"] * 60 + ["unmapped", "absent", "zero"] + ["own"] * 8
           + ["missing"] * (PAGES_PER_PMD - 111) + ["nopmd"] * PAGES_PER_PMD
           + ["large"] * PAGES_PER_PMD + ["shared-pte"] * PAGES_PER_PMD + ["own"] * 5)
#: PAE: the same kinds, a large PMD before the non-present one
KINDS32 = (["own"] * 20 + ["missing"] * 10 + ["unmapped", "absent", "zero"] + ["own"] * 7
           + ["missing"] * (PAGES_PER_PMD - 40) + ["large"] * PAGES_PER_PMD
           + ["nopmd"] * PAGES_PER_PMD + ["own"] * 4)
#: the top table of the PAE guest lies above 2^20: folding cr3 moves its bits
PAE_ROOT = 0x100005
#: in the 2 MiB page, the list page whose frame pfn 7 maps (see self_map)
LARGE_PAGE = 6


def self_map(kinds):
    """pfn -> list page: pfns that map list pages' own frames (for the inverse)."""
    return {5: 0, 6: 2, 8: 35, 7: kinds.index("large") + LARGE_PAGE}


def make_guest(kind, folder):
    if kind == "64":
        mem = Memory(2048)
        g = build_list_guest(mem, X86_64, 0xFFFFC90000000000, (len(KINDS64) - 1) * 512 + 100,
                             KINDS64, seed=64, self_map=self_map(KINDS64))
    else:
        mem = Memory(PAE_ROOT + 16)
        mem.frames[PAE_ROOT] = np.zeros(512, dtype="<u8")
        g = build_list_guest(mem, PAE, 0xD0000000, (len(KINDS32) - 1) * 1024 + 77, KINDS32,
                             root=PAE_ROOT, seed=32, self_map=self_map(KINDS32))
    path = os.path.join(folder, f"list{kind}.img")
    mem.image(path).close()
    return g, path, mem


@pytest.fixture(scope="module", params=["64", "32"], ids=["x86-64", "pae"])
def guest(request, tmp_path_factory):
    """(ListGuest, image path, the list walk's table)."""
    g, path, _ = make_guest(request.param, str(tmp_path_factory.mktemp("list")))
    with RawImage(path) as src:
        table = walk_list(src, g.cr3, g.p2m_vaddr, max_pfn=g.max_pfn).table
    return g, path, table


def test_the_hand_built_guests_walk_to_what_they_say(guest):
    g, path, table = guest
    assert np.array_equal(table.raw, g.expected)
    if g.mode is PAE:
        assert g.cr3 >> 12 != g.root and g.cr3 < 1 << 32     # folded
    counts = table.counts()
    assert all(counts.get(k) for k in ("valid", "missing", "identity", "foreign"))


# -- single lookups equal the walk ------------------------------------------------------------

def interesting_pfns(g):
    """The first and last pfn of every list page that is not a plain own page,
    and of every PMD."""
    fpp = g.layout.per_page
    out = {0, g.max_pfn - 1, g.max_pfn, g.max_pfn + 1}
    for i, kind in enumerate(g.kinds):
        if kind != "own" or i % PAGES_PER_PMD == 0:
            out |= {i * fpp, i * fpp + fpp - 1}
    return sorted(out)


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_single_lookup_equals_the_walk(guest, data):
    g, path, table = guest
    pfn = data.draw(st.one_of(st.integers(0, g.max_pfn + 5000),
                              st.sampled_from(interesting_pfns(g))))
    word_size = data.draw(st.sampled_from(["auto", g.word_size]))
    with RawImage(path) as src:
        lp = ListPathLookup(src, g.cr3, g.p2m_vaddr, word_size=word_size, max_pfn=g.max_pfn)
        got = lp.pfn(pfn)
    want = table.lookup(pfn)
    assert (got["kind"], got["mfn"]) == (want["kind"], want["mfn"])
    assert got["raw"] in (None, want["raw"])
    assert got["past_max_pfn"] == (pfn >= g.max_pfn)
    fpp = g.layout.per_page
    page_kind = g.kinds[pfn // fpp] if pfn < g.max_pfn else None
    # a pfn has its word read exactly when its list page holds one
    assert (got["raw"] is not None) == (page_kind in ("own", "large", "missing", "shared-pte"))
    assert (got["problem"] is None) == (got["raw"] is not None)
    if got["raw"] is not None:
        assert got["path"][-1] == {"level": "list", "mfn": got["path"][-1]["mfn"],
                                   "slot": pfn % fpp}
        if page_kind in ("own", "large"):
            assert got["path"][-1]["mfn"] == g.frames[pfn // fpp]
        else:
            assert got["path"][-1]["mfn"] == g.missing_frame


@pytest.mark.parametrize("which", ["own", "large"])
def test_pages_read_is_the_path(guest, which):
    g, path, table = guest
    fpp = g.layout.per_page
    first = g.pages_of(which)[3]
    pfn = first * fpp + 17
    src = CountingImage(path)
    lp = ListPathLookup(src, g.cr3, g.p2m_vaddr, max_pfn=g.max_pfn)
    r = lp.pfn(pfn)
    levels = g.levels if which == "own" else g.levels - 1     # a 2 MiB page has no PTE
    assert lp.pages_read == levels + 1 == len(src.reads)
    assert [s["level"] for s in r["path"]] == [f"pt-l{lv}" for lv in
                                                range(g.levels, g.levels - levels, -1)] + ["list"]
    assert {s["mfn"] for s in r["path"]} == set(src.reads)
    assert r["path"][0]["mfn"] == g.root and r["path"][-1]["mfn"] == g.frames[first]
    assert r["raw"] == int(g.expected[pfn]) and r["entry_vaddr"] == g.entry_vaddr(pfn)
    # each page-table entry names the next table, the last one the list page
    frames = [(s["entry"] >> 12) & ((1 << 40) - 1) for s in r["path"][:-1]]
    assert frames[:-1] == [s["mfn"] for s in r["path"][1:-1]]
    in_large = (g.entry_vaddr(pfn) >> 12) & 511 if which == "large" else 0
    assert frames[-1] + in_large == r["path"][-1]["mfn"]
    # a neighbour on the same list page is read from the cache
    assert lp.pfn(pfn + 1)["raw"] == int(g.expected[pfn + 1]) and lp.pages_read == levels + 1
    src.close()


def test_past_max_pfn_reads_nothing(guest):
    g, path, table = guest
    src = CountingImage(path)
    lp = ListPathLookup(src, g.cr3, g.p2m_vaddr, max_pfn=g.max_pfn)
    r = lp.pfn(g.max_pfn + 3)
    assert (r["kind"], r["mfn"], r["raw"], r["path"]) == ("missing", None, None, [])
    assert r["problem"].startswith(PAST_LIST_END) and f"{g.max_pfn:#x}" in r["problem"]
    assert r["past_max_pfn"] and set(src.reads) == {g.root} and lp.pages_read == 1
    text = format_result(r)
    assert text.startswith(f"pfn {g.max_pfn + 3:#x} -> none (missing) ({PAST_LIST_END}")
    assert "(past max_pfn)" not in text
    # without max_pfn the word past it is read (the short last page holds INVALID there)
    assert ListPathLookup(src, g.cr3, g.p2m_vaddr).pfn(g.max_pfn + 3)["raw"] == g.layout.invalid
    with pytest.raises(LayoutError, match="outside"):
        lp.pfn(MAX_LIST_PFNS[g.word_size])
    with pytest.raises(LayoutError, match="negative"):
        lp.pfn(-1)
    src.close()


@pytest.mark.parametrize("kind, level, words", [
    ("nopmd", 2, "not present"), ("unmapped", 1, "not present"), ("zero", 1, "frame 0"),
    ("absent", None, "is not in the image")])
def test_unmapped_list_pages_are_missing_with_the_reason(guest, kind, level, words):
    g, path, table = guest
    fpp = g.layout.per_page
    [first, *_] = g.pages_of(kind)
    pfn = first * fpp + 9
    with RawImage(path) as src:
        r = ListPathLookup(src, g.cr3, g.p2m_vaddr, max_pfn=g.max_pfn).pfn(pfn)
    assert (r["kind"], r["mfn"], r["raw"]) == ("missing", None, None)
    assert words in r["problem"]
    if level is not None:
        assert r["path"][-1]["level"] == f"pt-l{level}"
        assert f"level-{level} entry {r['path'][-1]['slot']} of table MFN " \
               f"{r['path'][-1]['mfn']:#x}" in r["problem"]
        assert f"{g.entry_vaddr(pfn):#x}" in r["problem"]
    else:       # the PTE names a frame outside the image: the list page step is there
        assert r["path"][-1]["level"] == "list" and f"{r['path'][-1]['mfn']:#x}" in r["problem"]
        assert f"pfns {first * fpp:#x}-{first * fpp + fpp - 1:#x}" in r["problem"]
    assert table.lookup(pfn)["kind"] == "missing"


def test_paddr(guest):
    g, path, table = guest
    fpp = g.layout.per_page
    with RawImage(path) as src:
        lp = ListPathLookup(src, g.cr3, g.p2m_vaddr, max_pfn=g.max_pfn)
        L = g.layout
        words = g.expected.astype(np.uint64)
        valid = np.flatnonzero((words & np.uint64(L.flag_mask)) == 0)
        valid = valid[valid >= g.pages_of("large")[0] * fpp][:5].tolist()
        assert len(valid) == 5
        for p in valid:
            r = lp.paddr((p << 12) | 0x123)
            assert r["maddr"] == (table.lookup(p)["mfn"] << 12) | 0x123
            assert (r["paddr"], r["offset"], r["pfn"]) == ((p << 12) | 0x123, 0x123, p)
        assert lp.paddr(g.max_pfn << 12)["maddr"] is None


def test_bad_list_parameters(guest):
    g, path, table = guest
    with RawImage(path) as src:
        with pytest.raises(TreeError, match="not in the image"):
            ListPathLookup(src, (1 << 30) << 12, g.p2m_vaddr, word_size=8)
        with pytest.raises(LayoutError, match="bits 32-63"):
            ListPathLookup(src, (1 << 32) | g.cr3, 0xD0000000, word_size=4)
        near_top = 0xFFFFFFFFFFE00000 if g.word_size == 8 else 0xFFE00000
        with pytest.raises(TreeError, match="does not fit"):
            ListPathLookup(src, g.cr3, near_top, max_pfn=0x100000, word_size=g.word_size)
        with pytest.raises(LayoutError, match="beyond"):
            ListPathLookup(src, g.cr3, g.p2m_vaddr, max_pfn=MAX_LIST_PFNS[g.word_size] + 1)
        with pytest.raises(LayoutError, match="page-aligned"):
            ListPathLookup(src, g.cr3, g.p2m_vaddr + 8, max_pfn=g.max_pfn)


# -- the CLI: single lookups do not walk the list ---------------------------------------------

def run(*args):
    return CliRunner().invoke(main, ["lookup"] + [str(a) for a in args])


def list_args(g):
    return ["--p2m-cr3", hex(g.cr3), "--p2m-vaddr", hex(g.p2m_vaddr), "--max-pfn", hex(g.max_pfn)]


@pytest.fixture
def no_walks(monkeypatch):
    """Any whole-table walk fails the test."""
    def boom(*a, **kw):
        raise AssertionError("a single lookup walked the whole table")
    for name in ("p2mdump.autowalk.walk_resolved", "p2mdump.listwalk.walk_list",
                 "p2mdump.walker.walk"):
        monkeypatch.setattr(name, boom)


def write_list_sidecar(path, g):
    with open(path + ".json", "w") as fh:
        json.dump({"format": SIDECAR_FORMAT, "container": "raw", "base": 0,
                   "representation": "list", "p2m_cr3": g.cr3, "p2m_vaddr": g.p2m_vaddr,
                   "max_pfn": g.max_pfn, "word_size": g.word_size}, fh)


def test_cli_list_pfn(guest, no_walks, tmp_path):
    g, path, table = guest
    fpp = g.layout.per_page
    pfn = g.pages_of("own")[-1] * fpp + 3
    want = table.lookup(pfn)
    r = run(path, *list_args(g), "--pfn", hex(pfn), "--json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert (d["pfn"], d["kind"], d["mfn"], d["raw"]) == (pfn, want["kind"], want["mfn"],
                                                         want["raw"])
    assert d["pages_read"] == g.levels + 1 and d["problem"] is None
    assert [s["level"] for s in d["path"]][-1] == "list"
    assert all(set(s) == {"level", "mfn", "slot", "entry"} for s in d["path"][:-1])
    text = run(path, *list_args(g), "--pfn", hex(pfn)).stdout.strip()
    assert text == format_result(d) and text.startswith(f"pfn {pfn:#x} -> ")
    r = run(path, *list_args(g), "--paddr", hex((pfn << 12) + 0x42), "--json")
    assert json.loads(r.stdout)["maddr"] == (None if want["mfn"] is None
                                             else (want["mfn"] << 12) + 0x42)
    # the same without options: the generator's sidecar names the list
    side = str(tmp_path / "side.img")
    os.symlink(path, side)
    write_list_sidecar(side, g)
    r = run(side, "--pfn", hex(pfn), "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout) == d
    r = run(path, *list_args(g), "--pfn", hex(g.max_pfn))
    assert r.exit_code == 0 and PAST_LIST_END in r.stdout


def test_cli_list_inverse_still_walks_once(guest):
    g, path, table = guest
    frame = g.frames[2]
    d = json.loads(run(path, *list_args(g), "--mfn", hex(frame), "--json").stdout)
    assert d["pfns"] == [6] == table.pfns_of(frame)
    d = json.loads(run(path, *list_args(g), "--maddr", hex((frame << 12) | 5), "--json").stdout)
    assert d["paddrs"] == [(6 << 12) | 5]


def test_cli_xc_core_naming_a_list(tmp_path, no_walks):
    """An xl dump-core whose shared_info names a list (p2m_cr3 / p2m_vaddr):
    the page tables and list pages are guest pages of the dump, and the list
    says what the tree says."""
    spec = GuestSpec(word_size=8, max_pfn=0x3000, ram=[(0, 0x3000)], identity=[(0xA0, 0x100)],
                     mfn_order="shuffled", seed=9)
    tree, _ = tree_pages_as_guest_pages(build_tree(spec))
    L = tree.layout
    entries = tree.entries[:tree.max_pfn]
    own = (entries != L.invalid) & ((entries & L.flag_mask) == 0)
    slot_of = {m: k for k, m in enumerate(entries[own].tolist())}   # .xen_pages order
    pool = [m for m in entries[own].tolist() if m not in tree_pages(tree)]
    mem = Memory(1 << 40, pool=pool)
    g = build_list_guest(mem, X86_64, 0xFFFFC90000000000, tree.max_pfn,
                         ["own"] * L.leaves_for(tree.max_pfn), content=tree.truth)
    core = tmp_path / "g.core"
    info = write_xc_core(tree, core, p2m_cr3=g.cr3, p2m_vaddr=g.p2m_vaddr)
    mem.patch(core, lambda m: info["pages_offset"] + slot_of[m] * KIB4)
    for pfn in (0, 0xA5, 0x1234, tree.max_pfn - 1):
        r = run(core, "--pfn", hex(pfn), "--json")
        assert r.exit_code == 0, r.output
        d = json.loads(r.stdout)
        assert (d["kind"], d["mfn"]) == (L.kind_of(int(tree.truth[pfn])),
                                         L.decode(int(tree.truth[pfn])))
        assert d["p2m_cr3"] == g.cr3 and d["pages_read"] == 5
        assert d["path"][-1] == {"level": "list", "mfn": g.frames[pfn // 512], "slot": pfn % 512}


@pytest.mark.parametrize("form", ["options", "sidecar"])
def test_single_list_lookup_imports_neither_numpy_nor_construct(guest, form, tmp_path):
    g, path, table = guest
    args = list_args(g)
    if form == "sidecar":           # no options: click and the sidecar decide
        path = str(tmp_path / "side.img")
        os.symlink(guest[1], path)
        write_list_sidecar(path, g)
        args = []
    out = subprocess.run([sys.executable, "-X", "importtime", "-m", "p2mdump", "lookup", path,
                          *args, "--pfn", "0x10"],
                         capture_output=True, text=True,
                         env=dict(os.environ, PYTHONDONTWRITEBYTECODE="1"))
    assert out.returncode == 0, out.stderr
    with RawImage(path) as src:
        want = ListPathLookup(src, g.cr3, g.p2m_vaddr, max_pfn=g.max_pfn).pfn(0x10)
    assert out.stdout.strip() == format_result(want)
    mods = {line.split("|")[-1].strip().split(".")[0] for line in out.stderr.splitlines()
            if line.startswith("import time:")}
    assert "numpy" not in mods and "construct" not in mods
    assert ("click" in mods) == (form == "sidecar")


# -- virtual addresses ------------------------------------------------------------------------

VADDR_KEYS = {"vaddr", "cr3", "root_mfn", "paging", "word_size", "maddr", "mfn", "page_size",
              "frame_in_image", "path", "problem", "pfns", "foreign_pfns", "paddrs", "p2m",
              "pfn_problem", "pages_read"}


def vaddr_json(*args):
    r = run(*args, "--json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert set(d) == VADDR_KEYS
    return d


@pytest.mark.parametrize("which", ["own", "large"])
def test_vaddr_to_machine_and_back(guest, which):
    """An address in a list page the guest maps at a pfn of its own (self_map):
    through the page tables to the list page's frame, through the p2m back
    to that pfn; a 4 KiB page and a 2 MiB page."""
    g, path, table = guest
    if which == "own":
        pfn, list_page, size = 5, 0, KIB4
    else:
        pfn, list_page, size = 7, g.kinds.index("large") + LARGE_PAGE, MIB2
    va = g.p2m_vaddr + list_page * KIB4 + 0x9A8
    frame = g.frames[list_page]
    d = vaddr_json(path, "--cr3", hex(g.cr3), "--vaddr", hex(va), *list_args(g))
    assert (d["maddr"], d["mfn"], d["page_size"]) == ((frame << 12) | 0x9A8, frame, size)
    assert d["root_mfn"] == g.root and d["paging"] == g.mode.name and d["cr3"] == g.cr3
    assert d["frame_in_image"] and d["problem"] is None and d["pfn_problem"] is None
    assert d["pfns"] == [pfn] and d["paddrs"] == [(pfn << 12) | 0x9A8] and d["p2m"] == "list"
    levels = g.levels if size == KIB4 else g.levels - 1
    assert [s["level"] for s in d["path"]] == [f"pt-l{lv}" for lv in
                                                range(g.levels, g.levels - levels, -1)]
    assert d["path"][0]["mfn"] == g.root and d["pages_read"] == levels
    text = run(path, "--cr3", hex(g.cr3), "--vaddr", hex(va), *list_args(g)).stdout.strip()
    size_text = "4 KiB" if size == KIB4 else "2 MiB"
    assert text == (f"vaddr {va:#x} -> maddr {(frame << 12) | 0x9A8:#x} -> paddr "
                    f"{(pfn << 12) | 0x9A8:#x} (mfn {frame:#x} -> pfn {pfn:#x}; {size_text} page)")


def test_vaddr_pfns_from_the_sidecar_and_unknown_without_a_p2m(guest, tmp_path):
    g, path, table = guest
    va = g.p2m_vaddr + 2 * KIB4 + 8
    frame = g.frames[2]
    # no p2m known: the machine address, and the pfn unknown (not an error)
    d = vaddr_json(path, "--cr3", hex(g.cr3), "--vaddr", hex(va))
    assert d["maddr"] == (frame << 12) | 8 and d["pfns"] is None and d["paddrs"] is None
    assert d["p2m"] is None and "no p2m is known" in d["pfn_problem"]
    text = run(path, "--cr3", hex(g.cr3), "--vaddr", hex(va)).stdout.strip()
    assert text.startswith(f"vaddr {va:#x} -> maddr {(frame << 12) | 8:#x} (mfn {frame:#x}; "
                           "pfn unknown: no p2m is known")
    # the sidecar names the list
    side = str(tmp_path / "side.img")
    os.symlink(path, side)
    write_list_sidecar(side, g)
    d = vaddr_json(side, "--cr3", hex(g.cr3), "--vaddr", hex(va))
    assert d["pfns"] == [6] and d["p2m"] == "list"


def test_vaddr_not_mapped_is_an_answer(guest):
    g, path, table = guest
    [nopmd, *_] = g.pages_of("nopmd")
    va = g.p2m_vaddr + nopmd * KIB4 + 5 * KIB4
    r = run(path, "--cr3", hex(g.cr3), "--vaddr", hex(va), *list_args(g))
    assert r.exit_code == 0, r.output
    assert r.stdout.startswith(f"vaddr {va:#x} -> not mapped (level-2 entry ")
    assert "is not present" in r.stdout
    d = vaddr_json(path, "--cr3", hex(g.cr3), "--vaddr", hex(va), *list_args(g))
    assert (d["maddr"], d["mfn"], d["page_size"], d["pfns"], d["p2m"]) == (None, None, 0, None,
                                                                           None)
    assert d["path"][-1]["level"] == "pt-l2" and "not present" in d["problem"]


def test_vaddr_through_a_tree_p2m(tmp_path):
    """Page tables added to a generated tree image: the inverse goes through the tree."""
    img, side, truth = load_fixture("guest64")
    copy = str(tmp_path / "g.img")
    shutil.copyfile(img, copy)
    shutil.copyfile(img + ".json", copy + ".json")
    nframes = os.path.getsize(img) // KIB4
    mem = Memory(nframes + 64, first_free=nframes)
    root = mem.alloc()
    va4k = 0xFFFF888000123000
    install(mem, X86_64, root, va4k, 1, page(int(truth[0x321])))
    m2 = int(truth[0x5321])
    va2m = 0xFFFF888040000000
    install(mem, X86_64, root, va2m, 2, large(m2 & ~511))
    mem.patch(copy)
    for va, pfn, size in ((va4k + 0x10, 0x321, KIB4), (va2m + (m2 & 511) * KIB4 + 4, 0x5321,
                                                       MIB2)):
        d = vaddr_json(copy, "--cr3", hex(root << 12), "--vaddr", hex(va))
        assert d["pfns"] == [pfn] and d["p2m"] == "tree" and d["page_size"] == size
        assert d["paddrs"] == [(pfn << 12) | (va & 0xFFF)]
        assert not d["frame_in_image"]       # the fixture holds no data frames
        assert "frame not in the image" in run(copy, "--cr3", hex(root << 12),
                                               "--vaddr", hex(va)).stdout


def test_vaddr_on_an_hvm_dump_is_refused(tmp_path):
    """An HVM guest's page tables hold guest frames: no machine translation."""
    path = str(tmp_path / "hvm.core")
    shutil.copyfile(fixture_path("core64.core"), path)
    elf = ElfFile(path)
    note, strtab = elf.section(".note.Xen"), elf.section(".shstrtab")
    elf.close()
    with open(path, "r+b") as fh:           # the header note's magic, .xen_p2m -> .xen_pfn
        fh.seek(note.offset + 32)
        fh.write(struct.pack("<Q", X.XC_CORE_MAGIC_HVM))
        fh.seek(strtab.offset)
        names = fh.read(strtab.size)
        fh.seek(strtab.offset)
        fh.write(names.replace(b".xen_p2m", b".xen_pfn"))
    r = run(path, "--cr3", "0x5000", "--vaddr", "0xffffc90000000000")
    assert r.exit_code == 4 and "HVM" in r.stderr and "--vaddr" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("args, code, text", [
    (["--cr3", "CR3", "--vaddr", "0x0000800000000000"], 4, "not a canonical x86-64 address"),
    (["--cr3", "CR3", "--vaddr", "0x1000", "--word-size", "4", "--five-level"], 4,
     "no 5-level"),
    (["--cr3", "CR3_HIGH", "--vaddr", "0xD0000000", "--word-size", "4"], 4, "bits 32-63"),
    (["--cr3", "0", "--vaddr", "VA"], 4, "cr3 is 0"),
    (["--cr3", "0x7000000000", "--vaddr", "VA", "--word-size", "8"], 4, "not in the image"),
    (["--vaddr", "VA"], 2, "--vaddr needs --cr3"),
    (["--cr3", "CR3", "--pfn", "1"], 2, "--cr3 goes with --vaddr"),
    (["--cr3", "CR3", "--vaddr=-5"], 2, "negative"),
    (["--cr3", "CR3", "--vaddr", "VA", "--pfn", "1"], 2, "exactly one"),
    (["--cr3", "CR3", "--vaddr", "VA", "--top-mfn", "0x7000000"], 4, "not in the image"),
])
def test_vaddr_bad_input(guest, args, code, text):
    g, path, table = guest
    subst = {"CR3": hex(g.cr3), "CR3_HIGH": hex((1 << 32) | g.cr3), "VA": hex(g.p2m_vaddr)}
    r = run(path, *[subst.get(a, a) for a in args])
    assert r.exit_code == code, r.output
    assert r.stderr.startswith("error: ") and text in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


# -- the launcher: list lookups on the fast path, --vaddr through click -------------------------

fast = lookup_fast
slow = lookup_click


@pytest.mark.parametrize("query", [
    ["--pfn", "0x1234", "--json"], ["--paddr", "0x1234567"], ["--pfn", "PAST"],
    ["--pfn", "NOPMD", "--json"], ["--pfn=5", "--word-size", "WS", "--json"],
    ["--pfn", "0x7fffffffff"], ["--pfn", "1", "--p2m-cr3", "0x7000000000", "--word-size", "8"],
])
def test_fast_path_answers_list_lookups_like_click(guest, query):
    g, path, table = guest
    subst = {"PAST": hex(g.max_pfn + 1), "WS": str(g.word_size),
             "NOPMD": hex(g.pages_of("nopmd")[0] * g.layout.per_page)}
    query = [subst.get(a, a) for a in query]
    args = list_args(g)
    if "--p2m-cr3" in query:        # a root outside the image instead of the guest's
        args = args[2:]
    args = [path, *args, *query]
    assert _parse_lookup(args) is not None  # really the fast path
    assert fast(args) == slow(args)


@pytest.mark.parametrize("extra", [
    ["--cr3", "0x5000", "--vaddr", "0xffffc90000000000"],
    ["--top-mfn", "4", "--vaddr", "0x1000"],
    ["--top-mfn", "4", "--pfn", "1", "--cr3", "0x5000"],
    ["--top-mfn", "4", "--pfn", "1", "--p2m-cr3", "0x5000"],        # both: click's error
    ["--p2m-cr3", "0x5000", "--p2m-vaddr", "0x1000", "--pfn", "1"],  # no --max-pfn
    ["--p2m-cr3", "0x5000", "--max-pfn", "9", "--pfn", "1"],         # no --p2m-vaddr
    ["--top-mfn", "4", "--pfn", "1", "--five-level"],
    ["--p2m-cr3", "0x5000", "--p2m-vaddr", "0x1000", "--max-pfn", "9", "--pfn", "1",
     "--representation", "list"],
])
def test_vaddr_and_other_forms_go_to_click(extra):
    assert _parse_lookup(["x.img", *extra]) is None


def test_launcher_answers_vaddr_like_click(guest):
    g, path, table = guest
    va = g.p2m_vaddr + 35 * KIB4 + 0x10
    args = [path, "--cr3", hex(g.cr3), "--vaddr", hex(va), *list_args(g), "--json"]
    got = fast(args)
    assert got == slow(args) and json.loads(got[1])["pfns"] == [8]
