"""p2mdump extract: guest memory in pfn order, from every container."""
import json
import os

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import FIXTURES, load_fixture
from p2mdump.cli import main
from p2mdump.extract import Plan, extract
from p2mdump.layout import PAGE_SIZE, layout_for
from p2mdump.schemas import elf as E
from p2mdump.sources import open_image
from p2mdump.sources.elf import ElfCoreSource
from p2mdump.walker import walk
from p2mdump.writer import GuestSpec, build_tree
from p2mdump.writer.containers import tree_pages_as_guest_pages, write_xc_core

STAMP = b"P2MDATA\x00"


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def container_fixture(name):
    suffix = "core" if name.startswith("core") else "elf"
    path = os.path.join(FIXTURES, f"{name}.{suffix}")
    side = json.load(open(path + ".json"))
    truth = np.fromfile(os.path.join(FIXTURES, f"{name}.truth"), dtype=f"<u{side['word_size']}")
    return path, side, truth


def check_guest(data: bytes, truth: np.ndarray, ws: int, tree_pfns=()):
    """Every valid pfn holds its stamped frame; everything else reads as zeros."""
    lay = layout_for(ws)
    assert len(data) == len(truth) * PAGE_SIZE
    pages = np.frombuffer(data, dtype=np.uint8).reshape(-1, PAGE_SIZE)
    copied = 0
    for pfn, e in enumerate(truth.tolist()):
        page = pages[pfn]
        if lay.kind_of(e) != "valid":
            assert not page.any(), f"pfn {pfn:#x} ({lay.kind_of(e)}) was copied"
        elif pfn in tree_pfns:
            assert page.tobytes()[:8] != STAMP   # a tree page
            copied += 1
        else:
            raw = page.tobytes()
            assert raw[:8] == STAMP
            assert int.from_bytes(raw[8:16], "little") == pfn
            assert int.from_bytes(raw[16:24], "little") == e
            copied += 1
    return copied


@pytest.mark.parametrize("name", ["data64", "data32"])
def test_extract_raw_image(name, tmp_path):
    img, side, truth = load_fixture(name)
    out = tmp_path / "guest.raw"
    r = run("extract", img, "-o", out, "--top-mfn", side["top_mfn"], "--max-pfn", side["max_pfn"])
    assert r.exit_code == 0, r.output
    n = check_guest(out.read_bytes(), truth, side["word_size"])
    assert f"extracted {n} pages" in r.stderr
    counts = side["truth_counts"]
    for kind in ("missing", "identity", "foreign"):
        if counts[kind]:
            assert f"not copied, {kind}: {counts[kind]} pfns" in r.stderr


@pytest.mark.parametrize("name", ["core64", "core32", "vmcore64", "vmcore32"])
def test_extract_containers(name, tmp_path):
    path, side, truth = container_fixture(name)
    out = tmp_path / "guest.raw"
    extra = [] if side["container"] == "xc-core" else ["--top-mfn", side["top_mfn"],
                                                        "--max-pfn", side["max_pfn"]]
    r = run("extract", path, "-o", out, *extra)
    assert r.exit_code == 0, r.output
    tree_pfns = range(*side["tree_pfns"]) if "tree_pfns" in side else ()
    check_guest(out.read_bytes(), truth, side["word_size"], set(tree_pfns))


def test_raw_output_is_sparse(tmp_path):
    img, side, truth = load_fixture("e820-64")   # 3 GiB of pfns, 1 GiB of RAM
    out = tmp_path / "g.raw"
    r = run("extract", img, "-o", out, "--top-mfn", side["top_mfn"], "--max-pfn",
            side["max_pfn"], "-q")
    assert r.exit_code == 0 and r.stderr == ""
    st = os.stat(out)
    assert st.st_size == side["max_pfn"] * PAGE_SIZE
    # the image holds no RAM frames (no --data): every valid pfn is "not in image"
    assert st.st_blocks * 512 < 1 << 20


@pytest.mark.parametrize("fmt", ["raw", "elf"])
def test_zero_pages_of_a_sparse_dump_stay_holes(tmp_path, fmt):
    """An xl dump-core whose guest pages are holes: the output allocates no
    more than the input (plus its headers), and reads back byte for byte."""
    core = tmp_path / "g.core"
    r = run("generate", core, "--container", "xc-core", "--max-pfn", "0x8000", "-q")
    assert r.exit_code == 0, r.output
    out = tmp_path / f"g.{fmt}"
    r = run("extract", core, "-o", out, "--format", fmt, "-q")
    assert r.exit_code == 0, r.output
    alloc_in = os.stat(core).st_blocks * 512
    alloc_out = os.stat(out).st_blocks * 512
    assert alloc_out <= alloc_in + (64 << 10), (alloc_in, alloc_out)
    if fmt != "raw":
        return
    # every page reads back as the dump's frame of its pfn, holes included
    data = out.read_bytes()
    with open_image(core) as source:
        res = walk(source, source.top_mfn_hint, max_pfn=source.max_pfn_hint)
        plan = Plan.from_table(res.table)
        nonzero = 0
        for pfn, mfn in zip(plan.pfns.tolist(), plan.mfns.tolist()):
            frame = source.read_frame(mfn)
            assert data[pfn * PAGE_SIZE:(pfn + 1) * PAGE_SIZE] == frame, pfn
            nonzero += any(frame)
    assert nonzero      # the p2m pages themselves are data


def test_extract_elf_format(tmp_path):
    path, side, truth = container_fixture("core64")
    out = tmp_path / "guest.elf"
    r = run("extract", path, "-o", out, "--format", "elf")
    assert r.exit_code == 0, r.output
    with ElfCoreSource(out) as g:            # a PT_LOAD core: "machine" address = pfn
        lay = layout_for(side["word_size"])
        valid = [p for p, e in enumerate(truth.tolist()) if lay.kind_of(e) == "valid"]
        runs = 1 + sum(1 for a, b in zip(valid, valid[1:]) if b != a + 1)
        assert len(g.loads) == runs and g.machine == E.EM_X86_64
        raw = tmp_path / "guest.raw"
        assert run("extract", path, "-o", raw, "-q").exit_code == 0
        flat = raw.read_bytes()
        for p in range(len(truth)):
            got = g.read_frame(p)
            if p in valid:
                assert got == flat[p * PAGE_SIZE:(p + 1) * PAGE_SIZE]
            else:
                assert got is None
    r = run("info", out, "--json")
    assert json.loads(r.stdout)["container"] == "elf"


def test_frames_not_in_image_are_listed(tmp_path):
    img, side, truth = load_fixture("data64")
    # cut the image: the frames past the end are not in it
    cut = tmp_path / "cut.img"
    data = open(img, "rb").read()
    keep = len(data) // 2
    cut.write_bytes(data[:keep])
    out = tmp_path / "g.raw"
    r = run("extract", cut, "-o", out, "--top-mfn", side["top_mfn"], "--max-pfn", side["max_pfn"])
    assert r.exit_code == 0
    lost = [p for p, e in enumerate(truth.tolist())
            if layout_for(8).kind_of(e) == "valid" and e >= keep // PAGE_SIZE]
    assert lost and f"not copied, not in image: {len(lost)} pfns" in r.stderr
    pages = out.read_bytes()
    for p in lost:
        assert not any(pages[p * PAGE_SIZE:(p + 1) * PAGE_SIZE])


def test_extract_falls_back_to_dump_pairs(tmp_path):
    """A guest publishing no tree (FLL ~0): the pages still come out, via .xen_p2m."""
    spec = GuestSpec(word_size=8, max_pfn=0x300, ram=[(0, 0x300)], identity=[(0xA0, 0xC0)],
                     data=True, mfn_order="shuffled", seed=4)
    tree, chosen = tree_pages_as_guest_pages(build_tree(spec))
    p = tmp_path / "g.core"
    write_xc_core(tree, p, fll=(1 << 64) - 1, p2m_cr3=0x5000, p2m_vaddr=0xFFFFC90000000000)
    out = tmp_path / "g.raw"
    r = run("extract", p, "-o", out)
    assert r.exit_code == 0, r.output
    assert "using the dump's .xen_p2m pairs" in r.stderr
    check_guest(out.read_bytes(), tree.truth, 8, set(chosen.tolist()))
    # the walk itself refuses, naming the linear list fields
    r = run("walk", p)
    assert r.exit_code == 4 and "p2m_cr3 0x5000" in r.stderr


def test_failures_leave_nothing(tmp_path):
    import shutil

    img, side, _ = load_fixture("data64")
    out = tmp_path / "g.raw"
    bare = tmp_path / "in" / "bare.img"                      # a raw image, no sidecar
    bare.parent.mkdir()
    shutil.copy(img, bare)
    r = run("extract", bare, "-o", out)                      # raw without --top-mfn
    assert r.exit_code == 2 and r.stderr.startswith("error:")
    shutil.rmtree(bare.parent)
    r = run("extract", img, "-o", out, "--top-mfn", 0x7FFFFF)  # no tree there
    assert r.exit_code == 4 and r.stderr.count("\n") == 1
    r = run("extract", img, "-o", tmp_path / "nodir" / "g.raw", "--top-mfn", side["top_mfn"])
    assert r.exit_code == 5 and "error:" in r.stderr
    assert os.listdir(tmp_path) == []


def test_extract_api_interrupted_leaves_nothing(tmp_path):
    img, side, _ = load_fixture("data64")
    with open_image(img) as src:
        res = walk(src, side["top_mfn"], max_pfn=side["max_pfn"])

        def boom(done, total):
            raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            extract(src, Plan.from_table(res.table), tmp_path / "g.raw", progress=boom)
    assert os.listdir(tmp_path) == []


def test_plan_from_pairs_first_wins():
    plan = Plan.from_pairs([5, 2, 5], [50, 20, 99], max_pfn=8, word_size=8)
    assert plan.pfns.tolist() == [2, 5] and plan.mfns.tolist() == [20, 50]
    assert plan.skipped["missing"].tolist() == [0, 1, 3, 4, 6, 7]
