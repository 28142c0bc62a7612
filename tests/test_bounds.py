"""Hostile input: no count or size read from an image may size an allocation
or a loop before it is checked against what the file holds."""
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import load_fixture
from p2mdump import findings as F
from p2mdump.cli import main
from p2mdump.errors import EXIT_INTERNAL, EXIT_MEMORY
from p2mdump.layout import PAGE_SIZE, layout_for
from p2mdump.sources.raw import RawImage
from p2mdump.walker import TABLE_FLOOR, walk

WORDS = PAGE_SIZE // 8


def run(*args, **kw):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False, **kw)


def self_naming_image(path, frames=3, top=1, word_size=8):
    """A raw image whose top page names itself in every slot (so it is also
    every mid and every leaf page)."""
    per = PAGE_SIZE // word_size
    w = np.zeros(frames * per, dtype=f"<u{word_size}")
    w[top * per:(top + 1) * per] = top
    w.tofile(path)
    return str(path)


def sparse_image(path):
    """4 frames: top (1) names mid (2) in its last slot, the mid names leaf
    (3) in its last slot, and the leaf maps every pfn: the last pfn of a
    64-bit tree's capacity, from a 16 KiB file."""
    w = np.zeros(4 * WORDS, dtype="<u8")
    w[1 * WORDS:2 * WORDS] = layout_for(8).invalid
    w[2 * WORDS:3 * WORDS] = 0
    w[2 * WORDS - 1] = 2
    w[3 * WORDS - 1] = 3
    w[3 * WORDS:] = np.arange(WORDS) + 0x100
    w.tofile(path)
    return str(path)


# -- the tree walk: how long the table is -------------------------------------

def test_self_naming_top_page_makes_an_empty_table(tmp_path):
    img = self_naming_image(tmp_path / "self.img")
    with RawImage(img) as src:
        res = walk(src, 1, word_size=8)
    assert len(res.table) == 0
    kinds = {f.kind for f in res.findings}
    assert {F.SHARED_PAGE, F.CROSS_LEVEL, F.EMPTY_TREE} <= kinds


@pytest.mark.parametrize("cmd", [
    ["walk", "{img}", "--top-mfn", "1", "-o", "{out}"],
    ["verify", "{img}", "--top-mfn", "1"],
    ["map", "{img}", "--top-mfn", "1", "-o", "{out}.svg"],
    ["lookup", "{img}", "--top-mfn", "1", "--mfn", "1"],
    ["extract", "{img}", "--top-mfn", "1", "-o", "{out}"],
    ["diff", "{img}", "{img}", "--top-mfn", "1"],
])
def test_self_naming_top_page_every_command(tmp_path, cmd):
    img = self_naming_image(tmp_path / "self.img")
    out = tmp_path / "out"
    r = run(*[a.format(img=img, out=out) for a in cmd])
    assert r.exit_code in (0, 1), r.output
    assert "internal error" not in r.output and "memory" not in r.output


def test_sparse_claim_is_cut_to_the_frames_the_image_holds(tmp_path):
    img = sparse_image(tmp_path / "sparse.img")
    L = layout_for(8)
    with RawImage(img) as src:
        res = walk(src, 1, word_size=8)
        cut = [f for f in res.findings if f.kind == F.TABLE_BUDGET]
        assert len(res.table) == TABLE_FLOOR
        assert len(cut) == 1 and cut[0].pfn_last == L.capacity - 1
        assert hex(L.capacity) in cut[0].message
        # a claimed max_pfn (container / sidecar) is cut the same way ...
        res = walk(src, 1, word_size=8, max_pfn=L.capacity, max_pfn_claimed=True)
        assert len(res.table) == TABLE_FLOOR
        assert any(f.kind == F.TABLE_BUDGET for f in res.findings)
        # ... a user's --max-pfn is not
        res = walk(src, 1, word_size=8, max_pfn=L.capacity - 1)
        assert len(res.table) == L.capacity - 1
        assert not any(f.kind == F.TABLE_BUDGET for f in res.findings)
        assert int(res.table.raw[-1]) == 0x100 + WORDS - 2


def test_damaged_placeholder_does_not_stretch_the_table(tmp_path):
    src_img, side, truth = load_fixture("guest64")
    img = tmp_path / "guest.img"  # no sidecar: max_pfn is found by the walk
    shutil.copyfile(src_img, img)
    missing = side["placeholders"]["leaf_missing"]
    with open(img, "r+b") as fh:
        fh.seek(missing * PAGE_SIZE + 8 * 7)
        fh.write((0x1234).to_bytes(8, "little"))
    with RawImage(img) as src:
        res = walk(src, side["top_mfn"], word_size=8)
    L = layout_for(8)
    # the table ends at a leaf of its own, not at the tree's capacity
    assert len(res.table) <= L.leaves_for(side["max_pfn"]) * L.per_page
    assert len(res.table) < 1 << 20
    shared = [f for f in res.findings if f.kind == F.SHARED_PAGE and f.mfn == missing]
    assert shared and shared[0].severity == F.WARNING
    n = min(len(res.table), len(truth))
    own = np.asarray(res.table.raw[:n]) == truth[:n]
    assert own.sum() >= n - L.per_page * shared[0].count


# -- MemoryError --------------------------------------------------------------

def test_memory_error_is_a_clear_line_with_its_own_exit_code(tmp_path, monkeypatch):
    img = self_naming_image(tmp_path / "self.img")

    def boom(*a, **kw):
        raise MemoryError("Unable to allocate 64.0 GiB for an array")

    monkeypatch.setattr("p2mdump.walker.walk", boom)
    r = CliRunner().invoke(main, ["walk", img, "--top-mfn", "1"])
    assert r.exit_code == EXIT_MEMORY != EXIT_INTERNAL
    assert "error: not enough memory for walk" in r.output
    assert "Traceback" not in r.output
    assert f"{EXIT_MEMORY}   not enough memory" in run("--help").output


# -- small text inputs read with a limit --------------------------------------

def test_sidecar_linked_to_dev_zero_is_not_read(tmp_path):
    """A device named IMAGE.json is not a sidecar: it is not read at all (no
    hang, no unbounded read) and the walk asks for --top-mfn."""
    img = self_naming_image(tmp_path / "self.img")
    os.symlink("/dev/zero", img + ".json")
    r = run("walk", img)
    assert r.exit_code == 2
    assert "--top-mfn" in r.output
    # with --top-mfn the sidecar is not read at all
    assert run("walk", img, "--top-mfn", "1").exit_code in (0, 1)


def test_oversized_sidecar_is_refused(tmp_path):
    """A regular IMAGE.json far larger than any sidecar is read no further
    than the limit and refused with a clear error."""
    img = self_naming_image(tmp_path / "self.img")
    with open(img + ".json", "wb") as fh:
        fh.truncate(64 << 20)        # 64 MiB, sparse
    r = run("walk", img)
    assert r.exit_code == 3
    assert "larger than 1 MiB" in r.output and "--top-mfn" in r.output


def test_query_file_dev_zero_is_refused(tmp_path):
    img = self_naming_image(tmp_path / "self.img")
    r = run("lookup", img, "--top-mfn", "1", "--from-file", "/dev/zero")
    assert r.exit_code == 2
    assert "/dev/zero is larger than 16 MiB" in r.output


# -- xl dump-core: sizes and counts from the container ------------------------

def core64():
    """(path, truth) of the committed 64-bit xl dump-core fixture."""
    from conftest import fixture_path

    truth = np.fromfile(fixture_path("core64.truth"), dtype="<u8")
    return fixture_path("core64.core"), truth


def _patch_section(path, name, sh_type=None, sh_size=None):
    from p2mdump.sources.elf import ElfFile

    ef = ElfFile(path)
    try:
        sec = ef.section(name)
        at = ef.ehdr.e_shoff + sec.index * ef.ehdr.e_shentsize
    finally:
        ef.close()
    with open(path, "r+b") as fh:
        if sh_type is not None:
            fh.seek(at + 4)
            fh.write(sh_type.to_bytes(4, "little"))
        if sh_size is not None:
            fh.seek(at + 32)
            fh.write(sh_size.to_bytes(8, "little"))


@pytest.mark.parametrize("name", [".xen_pages", ".xen_p2m", ".xen_shared_info",
                                  ".xen_prstatus"])
def test_nobits_section_of_2_44_bytes_is_refused(tmp_path, name):
    src, _ = core64()
    core = tmp_path / "c.core"
    shutil.copyfile(src, core)
    _patch_section(core, name, sh_type=8, sh_size=1 << 44)
    r = run("walk", core, "-o", tmp_path / "t.txt")
    assert r.exit_code == 3, r.output
    assert "runs past the end of the file" in r.output and name in r.output


def test_claimed_max_pfn_of_an_xl_dump_core_is_bounded(tmp_path):
    from p2mdump.autowalk import walk_image
    from p2mdump.sources import open_image

    src, truth = core64()
    with open_image(src) as source:
        source.max_pfn_hint = layout_for(8).capacity  # a corrupted arch.max_pfn
        res, _ = walk_image(source)
    assert len(res.table) == max(TABLE_FLOOR, source.nr_pages * WORDS)
    assert any(f.kind == F.TABLE_BUDGET and "max_pfn read from the image" in f.message
               for f in res.findings)
    assert np.array_equal(np.asarray(res.table.raw[:len(truth)]), truth)


def test_xen_p2m_fallback_plan_is_bounded():
    from p2mdump.extract import Plan

    pfns = np.array([0, 1, 1 << 36], dtype=np.uint64)
    gmfns = np.array([5, 6, 7], dtype=np.uint64)
    plan = Plan.from_pairs(pfns, gmfns, 1 << 40, 8, max_pfn_claimed=True)
    assert plan.max_pfn == TABLE_FLOOR
    assert plan.pfns.tolist() == [0, 1]
    assert plan.skipped["beyond-dump"].tolist() == [1 << 36]
    assert "cut to" in plan.source_note
    # a user's max_pfn is a request, not a claim
    plan = Plan.from_pairs(pfns[:2], gmfns[:2], TABLE_FLOOR + 5, 8)
    assert plan.max_pfn == TABLE_FLOOR + 5


# -- peak memory -------------------------------------------------------------

_PEAK = """
import resource, sys
import numpy, p2mdump.walker, p2mdump.cli
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
from p2mdump.sources.raw import RawImage
from p2mdump.walker import walk
with RawImage(sys.argv[1]) as src:
    walk(src, 1, word_size=int(sys.argv[2]))
print(base, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


@pytest.mark.parametrize("maker,ws", [
    (self_naming_image, 8), (lambda p: self_naming_image(p, word_size=4), 4),
    (sparse_image, 8)])
def test_peak_memory_of_a_crafted_tiny_image(tmp_path, maker, ws):
    """A tiny crafted image costs a few tens of MiB beyond the interpreter and
    numpy, at either word size (32-bit: a 4 GiB table at full capacity)."""
    img = maker(tmp_path / "x.img")
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(
        os.path.abspath(__file__))))
    out = subprocess.run([sys.executable, "-c", _PEAK, img, str(ws)], capture_output=True,
                         text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    base, peak = map(int, out.stdout.split())
    assert (peak - base) < 48 * 1024, (base, peak)  # ru_maxrss is in KiB on Linux
