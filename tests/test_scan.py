"""scan: find the tree in every fixture without hints, none where there is none."""
import glob
import json
import os
import shutil
import sys
import time

import numpy as np
import pytest
from click.testing import CliRunner

from p2mdump.cli import main
from p2mdump.scan import MAX_TRIALS, ScanStats, scan, trial_walk
from p2mdump.sources import open_image
from p2mdump.sources.raw import RawImage
from p2mdump.writer import GuestSpec, generate

FIXTURES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fixtures")
#: every fixture image but the xl save files (their frames are pfns: scan refuses
#: them, see test_xl_save_cli.py)
IMAGES = sorted(p for p in glob.glob(os.path.join(FIXTURES, "*"))
                if os.path.exists(p + ".json") and not p.endswith((".json", ".save")))


def _side(path):
    with open(path + ".json") as fh:
        return json.load(fh)


def _last_non_missing(path, side):
    truth = np.fromfile(os.path.splitext(path)[0] + ".truth", dtype=f"<u{side['word_size']}")
    nz = np.flatnonzero(truth != truth.dtype.type((1 << (8 * side["word_size"])) - 1))
    return int(nz[-1]) + 1


@pytest.mark.parametrize("path", IMAGES, ids=os.path.basename)
def test_finds_every_fixture(path):
    side = _side(path)
    with open_image(path, base=side.get("base", 0)) as src:
        found = scan(src)
    lists = [c for c in found if c.representation == "list"]
    trees = [c for c in found if c.representation == "tree"]
    if side.get("representation") in ("list", "both"):
        # the guest's list is found by its shared_info, with the sidecar's parameters
        assert lists, "no list found"
        assert (lists[0].p2m_cr3, lists[0].p2m_vaddr, lists[0].word_size,
                lists[0].max_pfn) == (side["p2m_cr3"], side["p2m_vaddr"], side["word_size"],
                                      side["max_pfn"])
    else:
        assert not lists, lists[0]
    if side["top_mfn"] is None:     # a linear list only: there is no tree to find
        assert not trees, trees[0]
        return
    assert trees, "no tree found"
    best = trees[0]
    assert (best.top_mfn, best.word_size) == (side["top_mfn"], side["word_size"])
    assert best.max_pfn == _last_non_missing(path, side)
    assert best.score > 90
    assert best.pfns_mapped == sum(v for k, v in side["truth_counts"].items() if k != "missing") \
        or best.pfns_mapped > 0  # placeholders make whole-identity leaves read as missing


def test_both_word_sizes_and_placeholders():
    for name, ws in (("guest64.img", 8), ("guest32.img", 4)):
        side = _side(os.path.join(FIXTURES, name))
        with RawImage(os.path.join(FIXTURES, name)) as src:
            best = scan(src)[0]
        assert best.word_size == ws
        assert best.mid_placeholder == side["placeholders"]["mid_missing"]
        assert side["placeholders"]["leaf_missing"] in best.leaf_placeholders
        # only the right word size: the other one is not reported
        assert all(c.word_size == ws for c in scan(RawImage(os.path.join(FIXTURES, name))))


def test_cli_json_interface():
    r = CliRunner().invoke(main, ["scan", os.path.join(FIXTURES, "e820-64.img"), "--json"])
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert isinstance(data, list) and data
    for key in ("top_mfn", "word_size", "max_pfn", "score", "pfns_mapped",
                "mid_placeholder", "leaf_placeholders"):
        assert key in data[0]
    assert data[0]["top_mfn"] == 4 and data[0]["word_size"] == 8
    assert [d["score"] for d in data] == sorted((d["score"] for d in data), reverse=True)


def test_cli_text():
    r = CliRunner().invoke(main, ["scan", os.path.join(FIXTURES, "scattered64.img")])
    assert r.exit_code == 0
    line = r.stdout.splitlines()[1].split()
    assert int(line[0], 16) == _side(os.path.join(FIXTURES, "scattered64.img"))["top_mfn"]


def _write(path, data: bytes):
    with open(path, "wb") as fh:
        fh.write(data)
    return str(path)


@pytest.mark.parametrize("kind", ["random", "zeros", "elf", "text", "pointer-soup"])
def test_none_where_there_is_none(tmp_path, kind):
    rng = np.random.default_rng(7)
    if kind == "random":
        path = _write(tmp_path / "r.img", rng.integers(0, 256, 8 << 20, dtype=np.uint8).tobytes())
    elif kind == "zeros":
        path = _write(tmp_path / "z.img", bytes(8 << 20))
    elif kind == "elf":
        path = str(tmp_path / "python.elf")
        shutil.copyfile(os.path.realpath(sys.executable), path)
    elif kind == "text":
        path = _write(tmp_path / "t.img", (open(__file__, "rb").read() * 400)[: 4 << 20])
    else:
        # every page a plausible pointer page: words name frames of the image
        frames = 4096
        words = rng.integers(1, frames, frames * 512, dtype=np.uint64)
        path = _write(tmp_path / "p.img", words.astype("<u8").tobytes())
    r = CliRunner().invoke(main, ["scan", path, "--json", "--container", "raw"])
    assert r.exit_code == 1, r.output
    assert json.loads(r.stdout) == []
    assert "no p2m tree found" in r.stderr


def test_bounded_on_plausible_pages(tmp_path):
    """16k pages that all look like pointer / leaf pages: few trials, quick."""
    rng = np.random.default_rng(3)
    frames = 16384
    path = _write(tmp_path / "soup.img",
                  rng.integers(1, frames, frames * 512, dtype=np.uint64).astype("<u8").tobytes())
    stats = ScanStats()
    t = time.perf_counter()
    with RawImage(path) as src:
        found = scan(src, stats=stats)
    assert time.perf_counter() - t < 30
    assert stats.pointer_pages[8] == frames
    assert stats.trials <= 2 * MAX_TRIALS
    assert found == []


def test_tree_in_noise_and_base(tmp_path):
    """A scattered tree with stamped data frames, behind a file header (--base)."""
    spec = GuestSpec(word_size=4, max_pfn=0x2000, ram=[(0, 0x2000)], identity=[(0x100, 0x180)],
                     placement="scattered", scatter_span=0x800, shuffle_leaves=True,
                     mfn_order="shuffled", data=True, seed=11)
    img = tmp_path / "noisy.img"
    tree = generate(spec, img, base=0x2000)
    with RawImage(img, base=0x2000) as src:
        found = scan(src)
    assert found[0].top_mfn == tree.top_mfn and found[0].word_size == 4
    r = CliRunner().invoke(main, ["scan", str(img), "--base", "0x2000", "--json"])
    assert json.loads(r.stdout)[0]["top_mfn"] == tree.top_mfn


def test_trial_walk_rejects_mid_page():
    with RawImage(os.path.join(FIXTURES, "guest64.img")) as src:
        assert trial_walk(src, 4, 8)["confirmed"]
        assert not trial_walk(src, 5, 8)["confirmed"]  # the first mid page
        assert not trial_walk(src, 4, 4)["confirmed"]  # wrong word size


def test_progress_reports_whole_image():
    calls = []
    with RawImage(os.path.join(FIXTURES, "e820-32.img")) as src:
        scan(src, progress=lambda d, t: calls.append((d, t)))
    assert calls and calls[-1][0] == calls[-1][1]
    # holes of a sparse file are skipped, never more than the file is read
    assert 0 < calls[-1][1] <= os.path.getsize(os.path.join(FIXTURES, "e820-32.img"))


def test_sparse_image_skips_holes(tmp_path):
    """A 4 GiB sparse image with the tree at both ends: found, holes not read."""
    spec = GuestSpec(word_size=8, max_pfn=0x4000, placement="scattered",
                     scatter_span=0x100000, seed=5)
    img = tmp_path / "sparse.img"
    tree = generate(spec, img)
    stats = ScanStats()
    with RawImage(img) as src:
        found = scan(src, stats=stats)
    assert found[0].top_mfn == tree.top_mfn
    assert stats.bytes_scanned < os.path.getsize(img) // 4


@pytest.mark.parametrize("args, code", [
    (["/nonexistent.img"], 3),
    ([FIXTURES], 3),
])
def test_bad_input(args, code, tmp_path):
    r = CliRunner().invoke(main, ["scan"] + args)
    assert r.exit_code == code
    assert r.stderr.startswith("error: ") and len(r.stderr.strip().splitlines()) == 1
    empty = tmp_path / "empty.img"
    empty.write_bytes(b"")
    r = CliRunner().invoke(main, ["scan", str(empty)])
    assert r.exit_code == 3 and r.stderr.startswith("error: ")
    assert "Traceback" not in r.output


def test_scattered_extents_are_gathered_into_blocks(tmp_path):
    """The sequential pass gathers the pages of small extents (a sparse
    image's scattered pages) into full blocks; every page arrives once, with
    its own MFN, in file order, and a block is fed once for all of them."""
    from p2mdump.imagepass import BLOCK_PAGES, blocks, data_extents

    path = tmp_path / "sparse.img"
    rng = np.random.default_rng(3)
    mfns = np.sort(rng.choice(np.arange(1, 1 << 20), 3 * BLOCK_PAGES + 5, replace=False))
    mfns[10:20] = np.arange(mfns[9] + 1, mfns[9] + 11)       # one longer extent too
    mfns = np.unique(mfns)
    with open(path, "wb") as fh:
        for m in mfns.tolist():
            fh.seek(m * 4096)
            fh.write(int(m).to_bytes(8, "little") * 512)
        fh.truncate((1 << 20) * 4096)
    with RawImage(path) as src:
        ext = data_extents(src)
        if len(ext) < len(mfns) // 2:
            pytest.skip("the file system does not report holes")
        seen, n_blocks = [], 0
        for got, block in blocks(src, ext):
            n_blocks += 1
            words = block.view("<u8").reshape(-1, 512)
            assert (words == got[:, None].astype(np.uint64)).all()
            seen.extend(got.tolist())
    assert seen == mfns.tolist()
    assert n_blocks == -(-len(mfns) // BLOCK_PAGES)
