"""The linear p2m list from the command line: every container, damaged lists (findings or a
clear error, never exit 70), Xen's dump-core bug, --summary-json, verify walking tree and list
together, map drawing the list's pages.

Page tables are read and damaged here with index math of this file's own (4-level x86-64).
"""
import json
import os
import shutil
import struct
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from click.testing import CliRunner

from p2mdump.cli import main
from p2mdump.layout import PAGE_SIZE, layout_for
from p2mdump.paging import PTE_FRAME_MASK, PTE_PRESENT, level_span

NS = "{http://www.w3.org/2000/svg}"
PMD_PFNS_64 = level_span(2) // 8          # pfns whose entries fill one 2 MiB PMD of list


def run(*args):
    r = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    assert r.exit_code != 70, r.output
    assert "Traceback" not in r.output
    return r


def generate(path, *args):
    truth = f"{path}.truth"
    r = run("generate", path, "--truth", truth, "-q", *args)
    assert r.exit_code == 0, r.output
    with open(f"{path}.json", encoding="utf-8") as fh:
        side = json.load(fh)
    return side, np.fromfile(truth, dtype=f"<u{side['word_size']}")


def walk(img, tmp_path, *args, ws=8):
    """(result, table read from --format raw, summary JSON)."""
    out, summ = tmp_path / "w.raw", tmp_path / "w.json"
    for p in (out, summ):
        if p.exists():
            p.unlink()
    r = run("walk", img, "--format", "raw", "-o", out, "--summary-json", summ, "-q", *args)
    if r.exit_code not in (0, 1):
        return r, None, None
    return r, np.fromfile(out, dtype=f"<u{ws}"), json.loads(summ.read_text())


def kinds(summary, severity=None):
    return {f["kind"] for f in summary["findings"]
            if severity is None or f["severity"] == severity}


def options(side):
    return ["--p2m-cr3", hex(side["p2m_cr3"]), "--p2m-vaddr", hex(side["p2m_vaddr"]),
            "--max-pfn", hex(side["max_pfn"])]


# -- every container --------------------------------------------------------------------------

GUEST = ["--max-pfn", "0x3000", "--identity", "0xa0-0xff", "--balloon", "0x1000-0x13ff",
         "--foreign", "0x2000-0x2003", "--mfn-order", "shuffled"]


@pytest.mark.parametrize("ws", [8, 4])
@pytest.mark.parametrize("rep", ["list", "both"])
def test_raw_with_sidecar_and_with_options(tmp_path, ws, rep):
    img = tmp_path / "g.img"
    side, truth = generate(img, "--representation", rep, "--word-size", ws, *GUEST)
    r, table, s = walk(img, tmp_path, ws=ws)
    assert r.exit_code == 0 and table.tobytes() == truth.tobytes()
    assert s["representation"] == "list" and s["warnings"] == 0
    assert s["counts"] == side["truth_counts"]
    os.unlink(f"{img}.json")          # no sidecar: the options name the list
    r, table, s = walk(img, tmp_path, *options(side), ws=ws)
    assert r.exit_code == 0 and table.tobytes() == truth.tobytes()
    assert s["word_size_source"] == "detected" and s["list"]["root_mfn"] == side["root_mfn"]
    r, table, s = walk(img, tmp_path, ws=ws)
    assert r.exit_code == 2 and "--top-mfn is required" in r.stderr


@pytest.mark.parametrize("ws", [8, 4])
@pytest.mark.parametrize("rep", ["list", "both"])
def test_xc_core_from_shared_info(tmp_path, ws, rep):
    core = tmp_path / "g.core"
    side, truth = generate(core, "--container", "xc-core", "--representation", rep,
                           "--word-size", ws, *GUEST)
    os.unlink(f"{core}.json")         # shared_info alone names the list
    r, table, s = walk(core, tmp_path, ws=ws)
    assert r.exit_code == 0 and table.tobytes() == truth.tobytes()
    assert s["representation"] == "list" and s["container"] == "xc-core"
    # the .xen_p2m cross-check is clean: no dump-* finding, no warning at all
    assert not {k for k in kinds(s) if k.startswith("dump-")}
    assert s["warnings"] == 0
    assert s["list"]["p2m_cr3"] == side["p2m_cr3"]
    r = run("walk", core, "-q", "--format", "ranges", "--representation", "tree")
    if rep == "list":            # FLL = ~0: no tree
        assert r.exit_code == 4
    else:
        r, table, s = walk(core, tmp_path, "--representation", "tree", ws=ws)
        assert r.exit_code == 0 and table.tobytes() == truth.tobytes()
        assert s["representation"] == "tree" and s["top_mfn"] == side["top_mfn"]
        assert not {k for k in kinds(s) if k.startswith("dump-")}


@pytest.mark.parametrize("ws", [8, 4])
def test_elf_core_with_options(tmp_path, ws):
    elf = tmp_path / "g.elf"
    side, truth = generate(elf, "--container", "elf", "--representation", "list",
                           "--word-size", ws, *GUEST)
    r, table, s = walk(elf, tmp_path, *options(side), ws=ws)
    assert r.exit_code == 0 and table.tobytes() == truth.tobytes()
    assert s["container"] == "elf" and s["warnings"] == 0


def test_tree_of_a_both_guest_is_the_same_table(tmp_path):
    img = tmp_path / "b.img"
    side, truth = generate(img, "--representation", "both", *GUEST)
    r, table, s = walk(img, tmp_path, "--representation", "tree")
    assert r.exit_code == 0 and table.tobytes() == truth.tobytes()
    assert s["representation"] == "tree" and s["top_mfn"] == side["top_mfn"]
    assert "list" not in s
    # --top-mfn with the list's options: the list is walked, and says so
    r = run("walk", img, "--top-mfn", side["top_mfn"], *options(side), "--format", "raw",
            "-o", tmp_path / "x.raw")
    assert r.exit_code == 0 and "--top-mfn" in r.stderr and "not used" in r.stderr
    assert (tmp_path / "x.raw").read_bytes() == truth.tobytes()


def test_summary_json_names_the_list(tmp_path):
    img = tmp_path / "g.img"
    side, truth = generate(img, "--representation", "list", "--p2m-generation", "6",
                           "--p2m-vaddr", "0xffffc90000123000", *GUEST)
    r, table, s = walk(img, tmp_path)
    assert s["representation"] == "list" and s["top_mfn"] is None
    lst = s["list"]
    assert (lst["p2m_cr3"], lst["p2m_vaddr"], lst["root_mfn"], lst["paging"]) == (
        side["p2m_cr3"], 0xFFFFC90000123000, side["root_mfn"], "x86-64")
    assert lst["p2m_generation"] == 6 and lst["levels"] == 4
    assert lst["list_pages"] == 0x3000 // 512
    assert lst["page_table_pages"] >= 4
    ph = side["list_placeholders"]
    assert set(lst["list_placeholders"]) <= {ph["p2m_missing"], ph["p2m_identity"]}
    assert lst["list_placeholders"]          # the balloon: two whole missing list pages
    info = [f for f in s["findings"] if f["kind"] == "shared-page"]
    assert info and all(f["severity"] == "info" for f in info)
    r = run("walk", img, "--format", "ranges")
    assert "p2m_vaddr    0xffffc90000123000" in r.stderr and "representation list" in r.stderr


# -- damaged lists ----------------------------------------------------------------------------

def index(va, level):
    return (va >> (12 + 9 * (level - 1))) & 511


def entry_path(data, root, va):
    """[(level, table MFN, index, entry)] from the root to the PTE of ``va``."""
    out, table = [], root
    for level in (4, 3, 2, 1):
        i = index(va, level)
        e = struct.unpack_from("<Q", data, table * PAGE_SIZE + i * 8)[0]
        out.append((level, table, i, e))
        table = (e & PTE_FRAME_MASK) >> 12
    return out


def put(data, table, i, value):
    struct.pack_into("<Q", data, table * PAGE_SIZE + i * 8, value)


REGIONS = ["--max-pfn", "0xc0000", "--ram", "0-0xfff,0x40000-0x40fff,0x80000-0x80fff"]


@pytest.fixture(scope="module")
def three_regions(tmp_path_factory):
    """A 64-bit list of three 1 GiB regions (one PMD each), a little RAM in each."""
    folder = tmp_path_factory.mktemp("three")
    img = folder / "g.img"
    side, truth = generate(img, "--representation", "list", *REGIONS)
    return img, side, truth


def damaged(three_regions, tmp_path, edit):
    img, side, truth = three_regions
    data = bytearray(img.read_bytes())
    edit(data, side)
    bad = tmp_path / "bad.img"
    bad.write_bytes(bytes(data))
    shutil.copy(f"{img}.json", f"{bad}.json")
    return bad, side, truth


def pmd_of(data, side, region):
    return entry_path(data, side["root_mfn"], side["p2m_vaddr"] + region * level_span(2))[2]


def pte_of(data, side, page):
    return entry_path(data, side["root_mfn"], side["p2m_vaddr"] + page * PAGE_SIZE)[3]


def clear_present(data, side, which):
    _, table, i, e = which(data, side)
    put(data, table, i, e & ~PTE_PRESENT)


def renamed(frame):
    def edit(data, side, which):
        _, table, i, e = which(data, side)
        put(data, table, i, (e & ~PTE_FRAME_MASK) | (frame(data, side) << 12))
    return edit


DAMAGE = {
    # kind expected, how to damage, pfns that read INVALID (the rest is the truth)
    "pmd-not-present": ("pt-not-present", "pt-l2",
                        lambda d, s: clear_present(d, s, lambda d, s: pmd_of(d, s, 1)),
                        (0x40000, 0x80000)),
    "pte-not-present": ("pt-not-present", "pt-l1",
                        lambda d, s: clear_present(d, s, lambda d, s: pte_of(d, s, 1)),
                        (512, 1024)),
    "table-outside": ("pt-unreadable", "pt-l2",
                      lambda d, s: renamed(lambda d, s: 0xFFFFFF)(d, s,
                                                                  lambda d, s: pmd_of(d, s, 1)),
                      (0x40000, 0x80000)),
    "list-page-outside": ("unreadable-frame", "leaf",
                          lambda d, s: renamed(lambda d, s: 0xFFFFFF)(
                              d, s, lambda d, s: pte_of(d, s, 2)),
                          (1024, 1536)),
    # the PMD of region 1 names the level-2 table itself: a table that maps itself
    "self-map": ("pt-loop", None,
                 lambda d, s: renamed(lambda d, s: pmd_of(d, s, 1)[1])(
                     d, s, lambda d, s: pmd_of(d, s, 1)),
                 None),
}


@pytest.mark.parametrize("name", list(DAMAGE))
def test_damaged_list(three_regions, tmp_path, name):
    kind, level, edit, invalid = DAMAGE[name]
    bad, side, truth = damaged(three_regions, tmp_path, edit)
    r, table, s = walk(bad, tmp_path)
    assert r.exit_code == 0, r.output
    warn = [f for f in s["findings"] if f["severity"] == "warning" and f["kind"] == kind]
    assert warn, (name, kinds(s))
    if level is not None:
        assert warn[0]["level"] == level
    assert len(table) == len(truth)
    L = layout_for(8)
    if invalid is not None:
        a, b = invalid
        assert np.all(table[a:b] == L.invalid)
        assert np.array_equal(table[:a], truth[:a]) and np.array_equal(table[b:], truth[b:])
        assert warn[0]["pfn_first"] == a or warn[0]["vaddr_first"] == side["p2m_vaddr"] + \
            a // 512 * PAGE_SIZE
    else:      # the loop: the other regions are still read right
        assert np.array_equal(table[:0x40000], truth[:0x40000])
        assert np.array_equal(table[0x80000:], truth[0x80000:])
    r = run("walk", bad, "--strict", "-q", "-o", os.devnull)
    assert r.exit_code == 1


def test_list_in_the_hypervisor_hole(three_regions, tmp_path):
    """The root's entry for the list copied to slot 256 (0xFFFF800000000000, Xen's
    own range): the same list is read there, with a list-range warning."""
    vaddr = 0xFFFF800000000000 | (three_regions[1]["p2m_vaddr"] & ((1 << 39) - 1))

    def edit(data, side):
        level, root, i, e = entry_path(data, side["root_mfn"], side["p2m_vaddr"])[0]
        put(data, root, index(vaddr, 4), e)

    bad, side, truth = damaged(three_regions, tmp_path, edit)
    r, table, s = walk(bad, tmp_path, "--p2m-cr3", side["p2m_cr3"], "--p2m-vaddr", vaddr,
                       "--max-pfn", side["max_pfn"])
    assert r.exit_code == 0 and table.tobytes() == truth.tobytes()
    [f] = [f for f in s["findings"] if f["kind"] == "list-range"]
    assert f["severity"] == "warning" and "refuse" in f["message"]
    assert f["vaddr_first"] == vaddr


def test_max_pfn_beyond_the_list(three_regions, tmp_path):
    """max_pfn past what the page tables map: list-short, the table ends where the
    mapping ends (the 'after' pages mapped behind the list are read as list pages)."""
    img, side, truth = three_regions
    after = [p for v, p in side["other_mappings"] if v == side["p2m_vaddr"] + 0xC0000 * 8]
    mapped_past = after[0] if after else 0
    r, table, s = walk(img, tmp_path, "--p2m-cr3", side["p2m_cr3"], "--p2m-vaddr",
                       side["p2m_vaddr"], "--max-pfn", 0xC0000 + 16 * 512)
    assert r.exit_code == 0
    [f] = [f for f in s["findings"] if f["kind"] == "list-short"]
    end = 0xC0000 + mapped_past * 512
    assert f["severity"] == "warning" and f["pfn_first"] == end
    assert len(table) == s["max_pfn"] == end
    assert np.array_equal(table[:0xC0000], truth)


@pytest.mark.parametrize("container", ["raw", "xc-core"])
def test_odd_generation(tmp_path, container):
    img = tmp_path / "g.img"
    side, truth = generate(img, "--container", container, "--representation", "list",
                           "--p2m-generation", "3", "--allow-odd-generation", *GUEST)
    r, table, s = walk(img, tmp_path)
    assert r.exit_code == 0 and table.tobytes() == truth.tobytes()
    [f] = [f for f in s["findings"] if f["kind"] == "p2m-generation-odd"]
    assert f["severity"] == "warning" and s["list"]["p2m_generation"] == 3
    assert run("walk", img, "--strict", "-q", "-o", os.devnull).exit_code == 1


@pytest.mark.parametrize("case, text", [
    ("garbage-root", "map no page"),
    ("list-page-root", "map no page"),
    ("root-outside", "not in the image"),
    ("root-zero", "must be positive"),
    ("cr3-high-bits-32", "bits 32-63"),
    ("non-canonical", "not canonical"),
    ("wraps-64", "wraps"),
    ("wraps-32", "wraps"),
    ("no-max-pfn", "--max-pfn"),
])
def test_bad_list_parameters(three_regions, tmp_path, case, text):
    img, side, _ = three_regions
    data = bytearray(img.read_bytes())
    garbage = len(data) // PAGE_SIZE
    data += np.random.default_rng(5).bytes(PAGE_SIZE)       # one frame of random words
    bad = tmp_path / "g.img"
    bad.write_bytes(bytes(data))
    cr3, vaddr, max_pfn, extra = side["p2m_cr3"], side["p2m_vaddr"], side["max_pfn"], []
    if case == "garbage-root":
        cr3 = garbage << 12
    elif case == "list-page-root":
        cr3 = (pte_of(data, side, 0)[3] & PTE_FRAME_MASK)
    elif case == "root-outside":
        cr3 = 0xFFFFFF << 12
    elif case == "root-zero":
        cr3 = 0
    elif case == "cr3-high-bits-32":
        cr3, extra = (1 << 32) | 0x5000, ["--word-size", "4"]
        vaddr = 0xC0000000
    elif case == "non-canonical":
        vaddr = 0x0000900000000000
    elif case == "wraps-64":
        vaddr = 0xFFFFFFFFFFFFF000
    elif case == "wraps-32":
        vaddr, extra = 0xFFFFF000, ["--word-size", "4"]
    args = ["--p2m-cr3", cr3, "--p2m-vaddr", vaddr, *extra]
    if case != "no-max-pfn":
        args += ["--max-pfn", max_pfn]
    out = tmp_path / "o.raw"
    r = run("walk", bad, *args, "--format", "raw", "-o", out)
    assert r.exit_code == (2 if case == "no-max-pfn" else 4), r.output
    assert text in r.stderr and r.stderr.startswith("error:")
    assert not out.exists()


# -- Xen's dump-core bug ----------------------------------------------------------------------

@pytest.mark.parametrize("bug", [True, False])
def test_xen_dumpcore_bug_is_named(tmp_path, bug):
    max_pfn = 6 * PMD_PFNS_64
    core = tmp_path / "g.core"
    side, truth = generate(core, "--container", "xc-core", "--representation", "list",
                           "--p2m-vaddr", "0xffffc90000200000",     # level-2 index 1
                           "--max-pfn", hex(max_pfn),
                           "--ram", f"0-0xfff,{max_pfn - 0x3000:#x}-{max_pfn - 1:#x}",
                           *(["--xen-dumpcore-bug"] if bug else []))
    r, table, s = walk(core, tmp_path)
    assert r.exit_code == 0
    assert table.tobytes() == truth.tobytes()         # the list in the dump is whole
    lacks = [f for f in s["findings"] if f["kind"] == "dump-lacks-pfn"]
    # verify reports the cross-check as walk does
    code, rep = verify(core)
    assert code == (1 if bug else 0)
    assert [f["message"] for f in rep["findings"] if f["kind"] == "dump-lacks-pfn"] == \
        [f["message"] for f in lacks]
    if not bug:
        assert not lacks and s["warnings"] == 0
        return
    lo, hi = side["xen_dumpcore_bug"]["dropped"]
    assert (lo, hi) == (max_pfn - PMD_PFNS_64, max_pfn)
    valid = np.flatnonzero((truth[lo:hi] != layout_for(8).invalid)) + lo
    [f] = lacks
    assert f["count"] == len(valid) == 0x3000
    assert (f["pfn_first"], f["pfn_last"]) == (int(valid[0]), int(valid[-1]))
    assert f"pfns {max_pfn - 0x3000:#x}-{max_pfn - 1:#x}" in f["message"]
    assert "known bug of Xen's dump-core" in f["message"] and "last PMD" in f["message"]


# -- verify: tree and list together --------------------------------------------------------------

def verify(*args):
    r = run("verify", *args, "--json")
    return r.exit_code, json.loads(r.stdout)


@pytest.mark.parametrize("container", ["raw", "xc-core"])
def test_verify_both_healthy(tmp_path, container):
    img = tmp_path / "b.img"
    side, truth = generate(img, "--container", container, "--representation", "both", *GUEST)
    code, data = verify(img)
    assert code == 0 and data["ok"] and data["compared"]
    assert set(data["walks"]) == {"list", "tree"}
    assert data["walks"]["tree"]["top_mfn"] == side["top_mfn"]
    assert data["walks"]["list"]["list"]["root_mfn"] == side["root_mfn"]
    assert data["walks"]["tree"]["counts"] == data["walks"]["list"]["counts"] == \
        side["truth_counts"]
    [m] = [f for f in data["findings"] if f["kind"] == "tree-list-match"]
    assert m["walk"] == "both" and m["count"] == side["max_pfn"]
    assert {f["walk"] for f in data["findings"]} <= {"list", "tree", "both"}
    # one representation asked for: one walk
    code, data = verify(img, "--representation", "tree")
    assert code == 0 and not data["compared"] and set(data["walks"]) == {"tree"}


def test_verify_both_given_as_options(tmp_path):
    img = tmp_path / "b.img"
    side, truth = generate(img, "--representation", "both", *GUEST)
    os.unlink(f"{img}.json")
    code, data = verify(img, "--top-mfn", side["top_mfn"], *options(side))
    assert code == 0 and data["compared"] and set(data["walks"]) == {"list", "tree"}
    r = run("verify", img, "--top-mfn", side["top_mfn"], *options(side))
    assert "[both] info: tree-list-match" in r.stdout
    assert r.stdout.splitlines()[0].startswith("list at p2m_vaddr")
    assert r.stdout.splitlines()[1].startswith("tree at top MFN")


def test_verify_finds_where_tree_and_list_differ(tmp_path):
    img = tmp_path / "b.img"
    side, truth = generate(img, "--representation", "both", "--max-pfn", "0x3000",
                           "--mfn-order", "shuffled")
    data = bytearray(img.read_bytes())
    top = side["top_mfn"]
    mid = struct.unpack_from("<Q", data, top * PAGE_SIZE)[0]
    leaf5 = struct.unpack_from("<Q", data, mid * PAGE_SIZE + 5 * 8)[0]
    # the tree's mid slot 3 names list page 5: pfns 0x600-0x7ff read other entries
    struct.pack_into("<Q", data, mid * PAGE_SIZE + 3 * 8, leaf5)
    # and one entry of list page 9 changes: the list (and the tree, whose leaf it
    # is) say so alike, so the two still agree there
    leaf9 = struct.unpack_from("<Q", data, mid * PAGE_SIZE + 9 * 8)[0]
    struct.pack_into("<Q", data, leaf9 * PAGE_SIZE + 7 * 8, 0x1234)
    # the list's PTE of page 12 names list page 13: pfns 0x1800-0x19ff differ
    _, table, i, e = pte_of(data, side, 12)
    e13 = pte_of(data, side, 13)[3]
    put(data, table, i, e13)
    bad = tmp_path / "bad.img"
    bad.write_bytes(bytes(data))
    shutil.copy(f"{img}.json", f"{bad}.json")
    code, rep = verify(bad)
    assert code == 1 and not rep["ok"]
    [m] = [f for f in rep["findings"] if f["kind"] == "tree-list-mismatch"]
    assert m["severity"] == "warning" and m["walk"] == "both"
    assert m["count"] == 2 * 512
    assert [e["pfns"] for e in m["examples"]] == [[0x600, 0x7FF], [0x1800, 0x19FF]]
    ex = m["examples"][0]
    assert ex["tree"] == int(truth[0xA00]) and ex["list"] == int(truth[0x600])
    assert "pfns 0x600-0x7ff, 0x1800-0x19ff" in m["message"]
    # the tree's shared leaf and the list's shared page are each walk's own finding
    walks = {f["walk"] for f in rep["findings"] if f["kind"] in ("shared-page", "duplicate-mfn")}
    assert {"tree", "list"} <= walks


def test_verify_tree_that_cannot_be_walked(tmp_path):
    """The list is fine, the tree's top page is gone: the list is checked, the
    tree is a walk-failed warning."""
    img = tmp_path / "b.img"
    side, truth = generate(img, "--representation", "both", *GUEST)
    data = bytearray(img.read_bytes())
    top = side["top_mfn"]
    data[top * PAGE_SIZE:(top + 1) * PAGE_SIZE] = np.random.default_rng(1).bytes(PAGE_SIZE)
    img.write_bytes(bytes(data))
    code, rep = verify(img)
    assert code == 1 and not rep["compared"]
    [failed] = [f for f in rep["findings"] if f["kind"] == "walk-failed"]
    assert failed["walk"] == "tree" and "not a p2m top page" in failed["message"]
    assert set(rep["walks"]) == {"list"} and rep["walks"]["list"]["warnings"] == 0
    assert rep["warnings"] == 1
    r = run("verify", img)
    assert "  [tree] warning: walk-failed" in r.stdout


# -- map ------------------------------------------------------------------------------------

def svg_of(path):
    root = ET.parse(path).getroot()
    assert root.tag == NS + "svg"
    return root


def by_class(root, prefix):
    return [e for e in root.iter() if (e.get("class") or "").startswith(prefix)]


def labels(root, cls):
    return [e.text for e in by_class(root, cls)]


@pytest.mark.parametrize("rep", ["list", "both"])
def test_map_of_a_list_guest(tmp_path, rep):
    img = tmp_path / "g.img"
    side, truth = generate(img, "--representation", rep, *GUEST)
    out = tmp_path / "m.svg"
    r = run("map", img, "-o", out, "-q")
    assert r.exit_code == 0, r.output
    root = svg_of(out)
    assert by_class(root, "list-strip")
    assert len(by_class(root, "list-root")) == 1
    assert by_class(root, "list-table") and by_class(root, "list-page")
    assert by_class(root, "list-placeholder")          # p2m_missing backs the balloon
    assert f"root {side['root_mfn']:#x}" in labels(root, "list-label")
    titles = [t.text for e in by_class(root, "list-page") for t in e.iter(NS + "title")]
    assert titles and all(t.startswith("list pages in MFNs") for t in titles)
    # the pfn strip is the table's
    valid = f"valid: {side['truth_counts']['valid']} pfns "
    assert any(e.text and e.text.startswith(valid) for e in root.iter(NS + "text"))
    assert bool(by_class(root, "tree-strip")) == (rep == "both")
    if rep == "both":
        assert f"top {side['top_mfn']:#x}" in labels(root, "tree-label")


def test_map_of_a_list_in_an_elf_core(tmp_path):
    elf = tmp_path / "g.elf"
    side, truth = generate(elf, "--container", "elf", "--representation", "list", "--word-size",
                           "4", *GUEST)
    out = tmp_path / "m.svg"
    r = run("map", elf, *options(side), "-o", out, "-q")
    assert r.exit_code == 0, r.output
    root = svg_of(out)
    assert by_class(root, "list-page") and not by_class(root, "tree-strip")
    assert any(t.text and "p2m list of g.elf" in t.text for t in root.iter(NS + "text"))


def test_verify_table_checks_on_a_list(tmp_path):
    """verify's checks of the table run on a list walk as on a tree walk."""
    img = tmp_path / "g.img"
    side, truth = generate(img, "--representation", "list", *GUEST)
    L = layout_for(8)
    data = bytearray(img.read_bytes())

    def set_word(pfn, value):
        frame = (pte_of(data, side, pfn // 512)[3] & PTE_FRAME_MASK) >> 12
        struct.pack_into("<Q", data, frame * PAGE_SIZE + pfn % 512 * 8, value)

    set_word(0xA5, 0xA6 | L.identity_bit)                          # identity-mismatch
    set_word(0x209, L.identity_bit | L.foreign_bit | 5)             # bad-flags
    set_word(0x2001, int(truth[0x10]) | L.foreign_bit)              # foreign-own-mfn
    set_word(0x300, int(truth[0x301]))                              # duplicate-mfn
    frame = (pte_of(data, side, 0x1800 // 512)[3] & PTE_FRAME_MASK) >> 12
    data[frame * PAGE_SIZE:(frame + 1) * PAGE_SIZE] = np.random.default_rng(3).bytes(PAGE_SIZE)
    img.write_bytes(bytes(data))
    code, rep = verify(img)
    assert code == 1 and rep["representation"] == "list"
    warn = {f["kind"]: f for f in rep["findings"] if f["severity"] == "warning"}
    assert {"identity-mismatch", "bad-flags", "foreign-own-mfn", "duplicate-mfn",
            "garbage-leaf"} <= set(warn)
    assert warn["identity-mismatch"]["pfn_first"] == 0xA5
    assert warn["bad-flags"]["pfn_first"] == 0x209
    assert warn["foreign-own-mfn"]["pfn_first"] == 0x2001
    g = warn["garbage-leaf"]
    assert (g["pfn_first"], g["pfn_last"]) == (0x1800, 0x19FF) and "list page" in g["message"]
