"""scan finds list guests by their shared_info page, in a host image holding several guests."""
import json
import shlex
import struct
import time
import tracemalloc

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given, settings, strategies as st

from p2mdump.cli import main
from p2mdump.layout import PAGE_SIZE, layout_for
from p2mdump.listscan import (MAX_HITS, MAX_LIST_TRIALS, SharedInfoFilter, arch_words,
                              plausible_arch, root_evidence, trial_list)
from p2mdump.listwalk import walk_list
from p2mdump.paging import PTE_PRESENT, fold_cr3, mode_for
from p2mdump.scan import ScanStats, scan
from p2mdump.schemas.xen_core import ARCH_FIELDS, ARCH_SHARED_INFO_OFFSET, shared_info_page
from p2mdump.sources import open_image
from p2mdump.sources.raw import RawImage
from p2mdump.writer import GuestSpec, build_list, generate
from p2mdump.writer.containers import generate_container
from p2mdump.writer.hostimage import merge_raw_images

#: the guests of the host image: name -> spec (mfn_offset set when built)
GUESTS = {
    # a modern 64-bit domU: list only (FLL ~0), 1:1 hole, balloon, foreign pfns
    "list64": dict(word_size=8, representation="list", max_pfn=0x9000,
                   identity=[(0xA0, 0x100)], ballooned=[(0x4000, 0x4800)],
                   foreign=[(0x6000, 0x6010)], mfn_order="chunked", p2m_generation=4, seed=1),
    # a 32-bit PAE domU with stamped data frames (noise around it)
    "list32": dict(word_size=4, representation="list", max_pfn=0x5000,
                   identity=[(0xA0, 0x100)], mfn_order="shuffled", data=True, seed=2),
    # an old guest: the tree only
    "tree32": dict(word_size=4, max_pfn=0x3000, identity=[(0xA0, 0x100)], seed=3),
    # a guest booted without SIF_VIRT_P2M_4TOOLS: list and tree, scattered pages
    "both64": dict(word_size=8, representation="both", max_pfn=0x4000,
                   ballooned=[(0x1000, 0x1400)], placement="scattered", scatter_span=0x2000,
                   seed=4),
}
GAP = 0x100


def _side(path):
    with open(str(path) + ".json") as fh:
        return json.load(fh)


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    """(host image path, {name: (sidecar, truth path)}): the guests at disjoint MFNs."""
    d = tmp_path_factory.mktemp("host")
    offset = 0x10
    guests, paths = {}, []
    for name, fields in GUESTS.items():
        img, truth = d / f"{name}.img", d / f"{name}.truth"
        generate(GuestSpec(mfn_offset=offset, **fields), img, truth=truth)
        side = _side(img)
        guests[name] = (side, truth)
        paths.append(img)
        offset = side["frames"] + GAP
    merged = d / "host.img"
    info = merge_raw_images(merged, paths)
    assert info["frames"] == max(s["frames"] for s, _ in guests.values())
    return str(merged), guests


@pytest.fixture(scope="module")
def found(host):
    path, _ = host
    stats = ScanStats()
    with RawImage(path) as src:
        cands = scan(src, stats=stats)
    return cands, stats


def _lists(cands):
    return {c.shared_info_mfn: c for c in cands if c.representation == "list"}


def _trees(cands):
    return {c.top_mfn: c for c in cands if c.representation == "tree"}


# -- every guest, with the sidecar's parameters ------------------------------------------

def test_finds_every_guest(host, found):
    _, guests = host
    cands, stats = found
    lists, trees = _lists(cands), _trees(cands)
    assert len(lists) == 3 and len(trees) == 2
    for name, (side, _) in guests.items():
        if side.get("representation", "tree") == "tree":
            continue
        c = lists[side["shared_info_mfn"]]
        for key in ("p2m_cr3", "root_mfn", "p2m_vaddr", "p2m_generation", "max_pfn",
                    "word_size", "paging"):
            assert getattr(c, key) == side[key], (name, key)
        L = layout_for(side["word_size"])
        assert c.frame_list_list == (L.word_mask if side["top_mfn"] is None else side["top_mfn"])
        assert c.score > 90 and c.evidence["full_walk"]
        assert c.counts == side["truth_counts"]
        shared = side["list_placeholders"]
        assert set(c.list_placeholders) <= {shared["p2m_missing"], shared["p2m_identity"]}
        assert c.warnings == 0 and not c.copies
    assert trees.keys() == {guests["tree32"][0]["top_mfn"], guests["both64"][0]["top_mfn"]}
    assert trees[guests["tree32"][0]["top_mfn"]].word_size == 4
    # the both guest: its tree and its list, linked both ways
    both = guests["both64"][0]
    assert trees[both["top_mfn"]].shared_info_mfn == both["shared_info_mfn"]
    assert trees[guests["tree32"][0]["top_mfn"]].shared_info_mfn is None
    c = lists[both["shared_info_mfn"]]
    assert c.tree_top_mfn == both["top_mfn"] and c.tree_found
    assert any("names a tree" in n for n in c.notes)
    list64 = lists[guests["list64"][0]["shared_info_mfn"]]
    assert list64.tree_top_mfn is None
    # its ballooned pages map p2m_missing
    assert list64.list_placeholders == [guests["list64"][0]["list_placeholders"]["p2m_missing"]]
    # ranked: scores never rise
    assert [c.score for c in cands] == sorted((c.score for c in cands), reverse=True)
    assert stats.shared_info_pages == {8: 2, 4: 1}
    assert stats.list_trials == 3


def test_walking_each_candidate_gives_the_truth(host, found):
    path, guests = host
    lists = _lists(found[0])
    with RawImage(path) as src:
        for name, (side, truth) in guests.items():
            if side.get("representation", "tree") == "tree":
                continue
            c = lists[side["shared_info_mfn"]]
            res = walk_list(src, c.p2m_cr3, c.p2m_vaddr, word_size=c.word_size,
                            max_pfn=c.max_pfn, generation=c.p2m_generation)
            assert res.table.raw.tobytes() == truth.read_bytes(), name
            assert not res.warnings()


def test_only_the_representation_asked_for(host):
    path, guests = host
    with RawImage(path) as src:
        lists = scan(src, representations=("list",))
        trees = scan(src, representations=("tree",), word_sizes=(4,))
        only32 = scan(src, representations=("list",), word_sizes=(4,))
    assert {c.representation for c in lists} == {"list"} and len(lists) == 3
    assert [c.top_mfn for c in trees] == [guests["tree32"][0]["top_mfn"]]
    assert [c.shared_info_mfn for c in only32] == [guests["list32"][0]["shared_info_mfn"]]
    with pytest.raises(ValueError):
        scan(RawImage(path), representations=("graph",))


# -- the command line ----------------------------------------------------------------

def test_cli_text_and_walk_command(host, tmp_path):
    path, guests = host
    r = CliRunner().invoke(main, ["scan", path, "-q"])
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    walks = [ln.split("walk: ", 1)[1] for ln in lines if "walk: " in ln]
    assert len(walks) == 3
    assert "3 list(s) found" in r.stderr and "2 tree(s)" in r.stderr
    for name, (side, truth) in guests.items():
        if side.get("representation", "tree") == "tree":
            continue
        row = next(ln for ln in lines if ln.split() and ln.split()[0] ==
                   f"{side['shared_info_mfn']:#x}")
        assert f"{side['p2m_cr3']:#x}" in row and f"{side['p2m_vaddr']:#x}" in row
        cmd = next(w for w in walks if f"--p2m-cr3 {side['p2m_cr3']:#x}" in w)
        assert cmd == (f"p2mdump walk {path} --p2m-cr3 {side['p2m_cr3']:#x} --p2m-vaddr "
                       f"{side['p2m_vaddr']:#x} --max-pfn {side['max_pfn']:#x} "
                       f"--word-size {side['word_size']}")
        out = tmp_path / f"{name}.raw"
        argv = shlex.split(cmd)[1:] + ["--format", "raw", "-o", str(out), "-q"]
        w = CliRunner().invoke(main, argv)
        assert w.exit_code == 0, w.output
        assert out.read_bytes() == truth.read_bytes(), name


def test_cli_json(host):
    path, guests = host
    r = CliRunner().invoke(main, ["scan", path, "--json", "-q"])
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert [d["score"] for d in data] == sorted((d["score"] for d in data), reverse=True)
    lists = [d for d in data if d["representation"] == "list"]
    trees = [d for d in data if d["representation"] == "tree"]
    assert len(lists) == 3 and len(trees) == 2
    for d in lists:
        for key in ("shared_info_mfn", "p2m_cr3", "root_mfn", "p2m_vaddr", "p2m_generation",
                    "max_pfn", "word_size", "score", "counts", "evidence", "walk_command"):
            assert key in d
        assert d["walk_command"].startswith(f"p2mdump walk {path} --p2m-cr3 {d['p2m_cr3']:#x}")
    for d in trees:
        assert d["walk_command"] == (f"p2mdump walk {path} --top-mfn {d['top_mfn']:#x} "
                                     f"--word-size {d['word_size']}")
    r = CliRunner().invoke(main, ["scan", path, "--json", "-q", "--representation", "list",
                                  "--word-size", "8"])
    assert {d["shared_info_mfn"] for d in json.loads(r.stdout)} == {
        guests["list64"][0]["shared_info_mfn"], guests["both64"][0]["shared_info_mfn"]}


def test_cli_base_in_walk_command(tmp_path):
    spec = GuestSpec(word_size=8, representation="list", max_pfn=0x2000, seed=9)
    img = tmp_path / "g.img"
    generate(spec, img, base=0x3000, truth=tmp_path / "g.truth")
    r = CliRunner().invoke(main, ["scan", str(img), "--base", "0x3000", "--json", "-q"])
    d = json.loads(r.stdout)[0]
    assert d["shared_info_mfn"] == _side(img)["shared_info_mfn"]
    assert d["walk_command"].endswith("--base 0x3000")
    w = CliRunner().invoke(main, shlex.split(d["walk_command"])[1:] + [
        "--format", "raw", "-o", str(tmp_path / "o.raw"), "-q"])
    assert w.exit_code == 0, w.output
    assert (tmp_path / "o.raw").read_bytes() == (tmp_path / "g.truth").read_bytes()


# -- none where there is none ------------------------------------------------------------

def _write(path, data: bytes):
    path.write_bytes(data)
    return str(path)


@pytest.mark.parametrize("kind", ["random", "zeros"])
def test_no_list_in_random_data_or_zeros(tmp_path, kind):
    rng = np.random.default_rng(11)
    data = (rng.integers(0, 256, 16 << 20, dtype=np.uint8).tobytes() if kind == "random"
            else bytes(16 << 20))
    path = _write(tmp_path / "x.img", data)
    stats = ScanStats()
    with RawImage(path) as src:
        assert scan(src, stats=stats) == []
    assert stats.shared_info_pages == {8: 0, 4: 0} and stats.list_trials == 0
    r = CliRunner().invoke(main, ["scan", path, "--representation", "list", "-q"])
    assert r.exit_code == 1
    assert "no linear p2m list found" in r.stderr and "no p2m tree" not in r.stderr


def _patch_arch(path, mfn, ws, **fields):
    """Rewrite arch_shared_info fields of the shared_info page at ``mfn``."""
    schema = shared_info_page(ws)
    with open(path, "r+b") as fh:
        fh.seek(mfn * PAGE_SIZE)
        page = schema.parse(fh.read(PAGE_SIZE))
        arch = {k: v for k, v in page.arch.items() if not k.startswith("_")}
        arch.update(fields)
        fh.seek(mfn * PAGE_SIZE)
        fh.write(schema.build(dict(arch=arch)))


@pytest.mark.parametrize("ws", [8, 4])
@pytest.mark.parametrize("target", ["data", "random", "list-page", "placeholder", "pte-page"])
def test_no_list_when_p2m_cr3_names_garbage(tmp_path, ws, target):
    """A real shared_info page whose p2m_cr3 names a frame that is no top table
    (a shared PTE page reads as a 64-bit top table, but maps no list page)."""
    spec = GuestSpec(word_size=ws, representation="list", max_pfn=0x1000, data=True, seed=5)
    img = tmp_path / "g.img"
    guest = generate(spec, img)
    side = _side(img)
    with RawImage(img) as src:      # the unpatched image is found
        assert [c.shared_info_mfn for c in scan(src, representations=("list",))] == [
            side["shared_info_mfn"]]
    if target == "data":
        mfn = int(guest.numbering(np.array([7], dtype=np.uint64))[0])
    elif target == "list-page":
        mfn = int(guest.page_mfn[guest.private_pages[0]])
    elif target == "placeholder":
        mfn = guest.placeholders["p2m_missing"]
    elif target == "pte-page":
        mfn = guest.placeholders["p2m_missing_pte"]
    else:
        mfn = int(guest.numbering(np.array([9], dtype=np.uint64))[0])
        with open(img, "r+b") as fh:
            fh.seek(mfn * PAGE_SIZE)
            fh.write(np.random.default_rng(1).integers(0, 256, PAGE_SIZE, np.uint8).tobytes())
    _patch_arch(img, side["shared_info_mfn"], ws, p2m_cr3=fold_cr3(mfn, ws))
    with RawImage(img) as src:
        assert scan(src, representations=("list",)) == []


def test_no_list_when_p2m_vaddr_is_wrong(tmp_path):
    """The right page tables, a p2m_vaddr they do not map."""
    spec = GuestSpec(word_size=8, representation="list", max_pfn=0x1000, seed=6,
                     other_mappings=False)
    img = tmp_path / "g.img"
    generate(spec, img)
    side = _side(img)
    _patch_arch(img, side["shared_info_mfn"], 8, p2m_vaddr=side["p2m_vaddr"] + (1 << 30))
    with RawImage(img) as src:
        assert scan(src, representations=("list",)) == []


def test_odd_generation_is_reported(tmp_path):
    spec = GuestSpec(word_size=4, representation="list", max_pfn=0x2000, p2m_generation=7,
                     allow_odd_generation=True, seed=8)
    img = tmp_path / "g.img"
    generate(spec, img)
    with RawImage(img) as src:
        (c,) = scan(src)
    assert c.p2m_generation == 7
    assert any("odd" in n for n in c.notes)
    assert c.warnings >= 1          # the full walk's finding
    r = CliRunner().invoke(main, ["scan", str(img), "-q"])
    assert "note: p2m_generation 7 is odd" in r.stdout


# -- bounded work --------------------------------------------------------------------------

def test_bounded_on_many_shared_info_like_pages(tmp_path):
    """16k pages that all pass the bulk test, with a plausible top table but
    no list behind it: hits capped, few trials, quick, nothing found."""
    frames = 16384
    img = np.zeros((frames, PAGE_SIZE // 8), dtype="<u8")
    # frame 1: a table whose every entry names frame 1 itself (present)
    img[1, :] = (1 << 12) | PTE_PRESENT
    off = ARCH_SHARED_INFO_OFFSET[8] // 8
    n = frames - 2
    img[2:, off] = np.arange(1, n + 1)                    # max_pfn: all different
    img[2:, off + 1] = (1 << 64) - 1                      # FLL ~0
    img[2:, off + 3] = 1 << 12                            # p2m_cr3: frame 1
    img[2:, off + 4] = 0xFFFFC90000000000                 # p2m_vaddr
    path = _write(tmp_path / "soup.img", img.tobytes())
    stats = ScanStats()
    t = time.perf_counter()
    with RawImage(path) as src:
        assert scan(src, stats=stats, representations=("list",)) == []
    assert time.perf_counter() - t < 20
    assert stats.shared_info_pages[8] == n
    assert stats.list_trials <= MAX_LIST_TRIALS


def test_hits_are_capped():
    flt = SharedInfoFilter(8, 1 << 20)
    page = np.zeros(PAGE_SIZE // 8, dtype="<u8")
    off = ARCH_SHARED_INFO_OFFSET[8] // 8
    page[off:off + 6] = [0x100, (1 << 64) - 1, 0, 5 << 12, 0xFFFFC90000000000, 0]
    block = np.tile(page, 2048).view(np.uint8)
    for k in range(3):
        flt.feed(block, np.arange(2048 * k, 2048 * (k + 1)))
    assert flt.kept == MAX_HITS and flt.dropped == 3 * 2048 - MAX_HITS
    (c,) = flt.candidates()            # one content, many copies
    assert c["shared_info_mfn"] == 0 and len(c["copies"]) == MAX_HITS - 1


def test_big_sparse_list_is_not_walked_in_full(tmp_path):
    """2^26 pfns (a 512 MiB table): confirmed from its sample, no table allocated."""
    n = 1 << 26
    spec = GuestSpec(word_size=8, representation="list", max_pfn=n,
                     ram=[(0, 0x8000), (n - 0x8000, n)], seed=2)
    img = tmp_path / "big.img"
    generate(spec, img)
    side = _side(img)
    tracemalloc.start()
    try:
        with RawImage(img) as src:
            (c,) = scan(src)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 << 20
    assert (c.shared_info_mfn, c.p2m_cr3, c.max_pfn) == (side["shared_info_mfn"],
                                                         side["p2m_cr3"], n)
    assert c.pfns_mapped is None and c.counts == {} and not c.evidence["full_walk"]
    assert any("more than scan walks in full" in note for note in c.notes)
    # a lower bound walks small lists only
    with RawImage(img) as src:
        (c,) = scan(src, full_walk_bytes=1 << 30)
    assert c.pfns_mapped == 0x10000


def test_trial_list_rejects_and_accepts(host):
    path, guests = host
    side = guests["list64"][0]
    args = (8, side["p2m_cr3"], side["p2m_vaddr"], side["max_pfn"])
    with RawImage(path) as src:
        assert trial_list(src, *args)["confirmed"]
        assert not trial_list(src, 4, *args[1:])["confirmed"]              # wrong width
        bad_root = fold_cr3(side["list_placeholders"]["p2m_missing"], 8)
        assert not trial_list(src, 8, bad_root, *args[2:])["confirmed"]
        beyond = trial_list(src, 8, fold_cr3(1 << 30, 8), *args[2:])   # not in the image
        assert beyond["root_ptr"] == 0 and not beyond["confirmed"]
        # the right top entry, a non-canonical address: no list, no exception
        odd = trial_list(src, 8, side["p2m_cr3"], side["p2m_vaddr"] & ((1 << 48) - 1),
                         side["max_pfn"])
        assert odd["root_ptr"] == 1.0 and not odd["confirmed"]


def test_top_table_with_xen_slots(host):
    """A 64-bit guest's top table as Xen leaves it: entries 256-271 name Xen's own
    tables, frames a guest-only dump does not hold; they do not count."""
    path, guests = host
    side = guests["list64"][0]
    with RawImage(path) as src:
        words = np.frombuffer(src.read_frame(side["root_mfn"]), dtype="<u8").copy()
        mode = mode_for(8)
        assert root_evidence(words, mode, side["p2m_vaddr"], src) == (True, 1.0)
        outside = src.frames + 0x1000
        words[256:272] = (np.arange(outside, outside + 16, dtype=np.uint64) << 12) | 0x63
        assert root_evidence(words, mode, side["p2m_vaddr"], src) == (True, 1.0)
        words[300:316] = words[256:272]            # elsewhere they do
        ok, share = root_evidence(words, mode, side["p2m_vaddr"], src)
        assert not ok and share < 0.5
        words[300:316] = 0
        idx = mode.index(side["p2m_vaddr"], 4)     # the list's entry not present
        words[idx] &= ~np.uint64(PTE_PRESENT)
        assert not root_evidence(words, mode, side["p2m_vaddr"], src)[0]


# -- containers ------------------------------------------------------------------------------

@pytest.mark.parametrize("container,suffix", [("xc-core", "core"), ("elf", "elf")])
@pytest.mark.parametrize("ws", [8, 4])
def test_containers(tmp_path, container, suffix, ws):
    """ELF core: by its shared_info frame; xl dump-core: named by its shared_info section."""
    spec = GuestSpec(word_size=ws, representation="list", max_pfn=0x3000,
                     identity=[(0xA0, 0x100)], data=True, p2m_generation=2, seed=3)
    path = tmp_path / f"g.{suffix}"
    generate_container(spec, path, container=container)
    side = _side(path)
    with open_image(path) as src:
        (c,) = [c for c in scan(src) if c.representation == "list"]
    assert (c.p2m_cr3, c.p2m_vaddr, c.max_pfn, c.p2m_generation) == (
        side["p2m_cr3"], side["p2m_vaddr"], side["max_pfn"], 2)
    assert c.shared_info_mfn == (None if container == "xc-core" else side["shared_info_mfn"])


# -- the bulk decoding agrees with the Construct schema ---------------------------------------

@settings(max_examples=60, deadline=None)
@given(ws=st.sampled_from([8, 4]), data=st.data())
def test_arch_words_agree_with_the_schema(ws, data):
    mask = layout_for(ws).word_mask
    values = {f: data.draw(st.integers(0, mask), label=f) for f in ARCH_FIELDS}
    fields = dict(values, **({"wc_sec_hi": 0} if ws == 4 else {}))
    page = shared_info_page(ws).build(dict(arch=fields))
    got = arch_words(np.frombuffer(page, dtype=np.uint8), ws)
    assert got.shape == (1, len(ARCH_FIELDS))
    assert [int(x) for x in got[0]] == [values[f] for f in ARCH_FIELDS]
    parsed = shared_info_page(ws).parse(page).arch
    assert [int(x) for x in got[0]] == [parsed[f] for f in ARCH_FIELDS]


@pytest.mark.parametrize("ws", [8, 4])
@pytest.mark.parametrize("rep", ["list", "both"])
def test_generated_shared_info_passes_the_bulk_test(ws, rep):
    guest = build_list(GuestSpec(word_size=ws, representation=rep, max_pfn=0x4000, seed=1))
    page = np.frombuffer(guest.shared_info_page(), dtype=np.uint8)
    fields = arch_words(page, ws).astype(np.uint64)
    limit = guest.frame_count()
    assert plausible_arch(fields, ws, limit)[0]
    # each field on its own can spoil it
    L = layout_for(ws)
    for i, bad in ((0, 0), (0, (1 << 32) + 1 if ws == 8 else (1 << 30) + 1),
                   (1, limit + 5), (3, fold_cr3(limit + 5, ws)), (3, 0),
                   (4, guest.vaddr + 8), (4, 0x00007F0000000000 if ws == 8 else 0xF6000000),
                   (5, 1 << 31)):
        f = fields.copy()
        f[0, i] = np.uint64(bad & L.word_mask)
        assert not plausible_arch(f, ws, limit)[0], (i, hex(bad))


def test_struct_offsets_are_the_references():
    """The two offsets the bulk test reads (reference section 4.2)."""
    assert ARCH_SHARED_INFO_OFFSET == {8: 3088, 4: 2316}
    page = shared_info_page(8).build(dict(arch={f: i + 1 for i, f in enumerate(ARCH_FIELDS)}))
    assert struct.unpack_from("<6Q", page, 3088) == (1, 2, 3, 4, 5, 6)
