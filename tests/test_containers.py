"""Containers: xl dump-core and ELF cores — detection, frames, hints, cross-check, bad input."""
import json
import os
import shutil
import struct

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given, settings, strategies as st

from conftest import FIXTURES
from p2mdump import findings as F
from p2mdump.cli import main
from p2mdump.errors import ContainerError, ImageError, TreeError
from p2mdump.layout import PAGE_SIZE
from p2mdump.schemas import elf as E
from p2mdump.schemas import xen_core as X
from p2mdump.sources import open_image
from p2mdump.sources.detect import sniff_bytes
from p2mdump.sources.elf import ElfCoreSource, ElfFile
from p2mdump.sources.raw import RawImage
from p2mdump.sources.xc_core import XcCoreSource
from p2mdump.walker import walk
from p2mdump.writer import GuestSpec, build_tree
from p2mdump.writer.containers import (generate_container, tree_pages_as_guest_pages,
                                       write_elf_segments, write_xc_core)

CORES = {"core64": 8, "core32": 4}
VMCORES = {"vmcore64": 8, "vmcore32": 4}


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def fixture(name):
    suffix = "core" if name.startswith("core") else "elf"
    path = os.path.join(FIXTURES, f"{name}.{suffix}")
    with open(path + ".json") as fh:
        side = json.load(fh)
    truth = np.fromfile(os.path.join(FIXTURES, f"{name}.truth"), dtype=f"<u{side['word_size']}")
    return path, side, truth


def one_line_error(r, code):
    assert r.exit_code == code, r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert "Traceback" not in r.output
    return lines[0]


def no_leftovers(folder, keep):
    left = sorted(os.listdir(folder))
    assert left == sorted(keep), left


def section(path, name):
    f = ElfFile(path)
    try:
        return f.section(name)
    finally:
        f.close()


def shdr_field_offset(path, name, field):
    """File offset of one field of the section header of ``name``."""
    sec = section(path, name)
    layout = {"sh_offset": 24, "sh_size": 32}
    return 64 + sec.index * 64 + layout[field]


def poke(path, offset, fmt, value):
    with open(path, "r+b") as fh:
        fh.seek(offset)
        fh.write(struct.pack(fmt, value))


def copy(tmp_path, name):
    src, side, truth = fixture(name)
    dst = tmp_path / os.path.basename(src)
    shutil.copyfile(src, dst)
    return str(dst), side, truth


# -- fixtures and layout ----------------------------------------------------------------

@pytest.mark.parametrize("name", list(CORES) + list(VMCORES))
def test_container_fixtures_are_small_and_detected(name):
    path, side, _ = fixture(name)
    assert os.path.getsize(path) < 4 * 1024 * 1024
    with open_image(path) as src:
        assert src.container == side["container"]


@pytest.mark.parametrize("name,ws", CORES.items())
def test_xc_core_layout_is_xens(name, ws):
    """Section order, sizes and data offsets of reference section 6.1/6.2/6.7."""
    path, side, _ = fixture(name)
    with open(path, "rb") as fh:
        head = fh.read(64)
    h = E.Elf64_Ehdr.parse(head)
    assert h.e_ident.ei_class == E.ELFCLASS64 and h.e_ident.ei_abiversion == 1
    assert (h.e_type, h.e_machine, h.e_phnum, h.e_shoff, h.e_shnum, h.e_shstrndx) == \
        (E.ET_CORE, 62 if ws == 8 else 3, 0, 64, 7, 1)
    f = ElfFile(path)
    names = [s.name for s in f.sections]
    f.close()
    assert names == ["", ".shstrtab", ".note.Xen", ".xen_prstatus", ".xen_shared_info",
                     ".xen_pages", ".xen_p2m"]
    nvcpu = 2 if name == "core32" else 1
    note = section(path, ".note.Xen")
    prs = section(path, ".xen_prstatus")
    si = section(path, ".xen_shared_info")
    pages = section(path, ".xen_pages")
    p2m = section(path, ".xen_p2m")
    strtab = section(path, ".shstrtab")
    assert (note.offset, note.size) == (512, 1384)
    assert (prs.offset, prs.size, prs.entsize) == (1896, nvcpu * 5168, 5168)
    assert (si.offset, si.size) == (1896 + 5168 * nvcpu, 4096)
    assert pages.offset == {1: 12288, 2: 16384}[nvcpu] and pages.addralign == 4096
    assert p2m.offset == pages.offset + pages.size and p2m.size == pages.size // 4096 * 16
    assert strtab.offset == p2m.offset + p2m.size and strtab.size == 72
    assert strtab.offset + strtab.size == os.path.getsize(path)


def test_32bit_pagesize_quirk_and_shared_info_offsets():
    path, side, _ = fixture("core32")
    note = section(path, ".note.Xen")
    si = section(path, ".xen_shared_info")
    with open(path, "rb") as fh:
        fh.seek(note.offset + 16 + 48 + 16)      # xen_version descriptor
        desc = fh.read(1280)
        fh.seek(si.offset)
        page = fh.read(4096)
    assert struct.unpack_from("<Q", desc, 1268)[0] == PAGE_SIZE
    assert struct.unpack_from("<II", page, 2316) == (side["max_pfn"], side["top_mfn"])
    path64, side64, _ = fixture("core64")
    si = section(path64, ".xen_shared_info")
    with open(path64, "rb") as fh:
        fh.seek(si.offset + 3088)
        assert struct.unpack("<QQ", fh.read(16)) == (side64["max_pfn"], side64["top_mfn"])


@pytest.mark.parametrize("name,ws", CORES.items())
def test_xc_core_source_hints_and_walk(name, ws):
    path, side, truth = fixture(name)
    with open_image(path) as src:
        assert isinstance(src, XcCoreSource)
        assert (src.word_size_hint, src.top_mfn_hint, src.max_pfn_hint) == \
            (ws, side["top_mfn"], side["max_pfn"])
        r = walk(src, src.top_mfn_hint, word_size=ws, max_pfn=src.max_pfn_hint)
        assert r.table.raw.tobytes() == truth.tobytes()
        assert not r.warnings()
        assert src.container_findings() == []


def test_xc_core_padding_pairs_are_skipped():
    path, side, _ = fixture("core32")
    with open_image(path) as src:
        assert src.header.xch_nr_pages == src.nr_pages
        pfns, gmfns = src.pairs()
        assert len(pfns) == src.nr_pages - 3          # three {~0, ~0} pairs
        assert not (pfns == np.uint64(X.INVALID_PFN)).any()
        assert list(pfns) == sorted(pfns)


@pytest.mark.parametrize("name", VMCORES)
def test_elf_core_walks_to_truth(name):
    path, side, truth = fixture(name)
    with open_image(path) as src:
        assert isinstance(src, ElfCoreSource)
        assert src.top_mfn_hint is None
        r = walk(src, side["top_mfn"], max_pfn=side["max_pfn"])
    assert r.word_size == side["word_size"]
    assert r.table.raw.tobytes() == truth.tobytes()
    assert not r.warnings()


def test_frames_by_mfn_agree_across_containers(tmp_path):
    """The same tree as raw image, ELF core and xc-core serves identical frames."""
    spec = GuestSpec(word_size=8, max_pfn=0x400, ram=[(0, 0x400)], mfn_order="shuffled",
                     data=True, seed=11)
    tree, _ = tree_pages_as_guest_pages(build_tree(spec))
    from p2mdump.writer.containers import write_elf_core
    from p2mdump.writer.image import write_raw_image
    write_raw_image(tree, tmp_path / "g.img")
    write_elf_core(tree, tmp_path / "g.elf")
    write_xc_core(tree, tmp_path / "g.core")
    raw = RawImage(tmp_path / "g.img")
    el = open_image(tmp_path / "g.elf")
    xc = open_image(tmp_path / "g.core")
    mfns = sorted(set(tree.data_mfns.tolist()))
    for m in mfns[::7] + [mfns[-1]]:
        assert el.read_frame(m) == raw.read_frame(m) == xc.read_frame(m)
    # a run of consecutive MFNs is read with one call and matches
    buf1, buf2 = bytearray(64 * PAGE_SIZE), bytearray(64 * PAGE_SIZE)
    start = mfns[0]
    n1 = xc.read_frames_into(start, memoryview(buf1))
    n2 = raw.read_frames_into(start, memoryview(buf2))
    assert n1 == n2 == 64 and buf1 == buf2
    # frames nobody holds
    assert not xc.has_frame(0) and el.read_frame(0) is None and xc.read_frame(0) is None
    assert list(xc.frames_present(np.array([0, start], dtype=np.uint64))) == [False, True]
    assert list(el.frames_present(np.array([0, start], dtype=np.uint64))) == [False, True]
    for s in (raw, el, xc):
        s.close()


@given(st.lists(st.tuples(st.integers(0, 40), st.integers(1, 5), st.integers(0, 4)),
                min_size=1, max_size=6))
@settings(max_examples=40, deadline=None)
def test_elf_reads_match_a_model(tmp_path_factory, segs):
    """Random non-overlapping PT_LOADs with zero tails read like a flat model."""
    tmp = tmp_path_factory.mktemp("elf")
    segments, cursor = [], 0
    model = {}
    for gap, filep, zerop in segs:
        start = cursor + gap
        segments.append((start * PAGE_SIZE, filep * PAGE_SIZE, (filep + zerop) * PAGE_SIZE))
        cursor = start + filep + zerop
    def fill(fd, i, offset, paddr, filesz):
        for k in range(filesz // PAGE_SIZE):
            os.pwrite(fd, bytes([i + 1, k + 1]) * 2048, offset + k * PAGE_SIZE)
    path = tmp / "m.elf"
    write_elf_segments(path, segments, fill=fill)
    for i, (paddr, filesz, memsz) in enumerate(segments):
        for k in range(memsz // PAGE_SIZE):
            model[paddr // PAGE_SIZE + k] = (bytes([i + 1, k + 1]) * 2048
                                             if k < filesz // PAGE_SIZE else bytes(PAGE_SIZE))
    with ElfCoreSource(path) as src:
        for mfn in range(cursor + 2):
            assert src.read_frame(mfn) == model.get(mfn)
            assert src.has_frame(mfn) == (mfn in model)
        # a long read stops at the first frame in no segment
        first = min(model)
        n = 0
        while first + n in model:
            n += 1
        buf = bytearray((n + 3) * PAGE_SIZE)
        assert src.read_frames_into(first, memoryview(buf)) == n
        assert bytes(buf[:n * PAGE_SIZE]) == b"".join(model[first + i] for i in range(n))


# -- detection ---------------------------------------------------------------------------

def test_detection_by_bytes_not_name(tmp_path):
    path, _, _ = fixture("core64")
    misleading = tmp_path / "memory.raw"
    shutil.copyfile(path, misleading)
    with open_image(misleading) as src:
        assert src.container == "xc-core"
    with open_image(os.path.join(FIXTURES, "guest64.img")) as src:
        assert src.container == "raw"
    assert sniff_bytes(b"\x7fELF\x02\x01") == "elf"
    assert sniff_bytes(b"LinuxGuestRecord" + bytes(8)) == "xm-save"
    assert sniff_bytes(struct.pack("<6I", 0xF00FEBED, 1, 10, 24, 24 + 5168, 8192)) == \
        "legacy-xc-core"
    assert sniff_bytes(bytes(64)) == "raw"


def test_container_override(tmp_path):
    path, side, _ = fixture("core64")
    with open_image(path, container="raw") as src:   # forced: the bytes as machine memory
        assert src.container == "raw"
    with pytest.raises(ContainerError, match="without PT_LOAD"):
        open_image(path, container="elf")
    with pytest.raises(ContainerError, match="no .note.Xen"):
        open_image(fixture("vmcore64")[0], container="xc-core")
    with pytest.raises(ImageError, match="raw images only"):
        open_image(path, base=4096)
    with pytest.raises(ImageError, match="unknown container"):
        open_image(path, container="zip")


def test_unsupported_formats_are_named(tmp_path):
    old = tmp_path / "old.core"
    old.write_bytes(struct.pack("<6I", 0xF00FEBED, 1, 1, 24, 5192, 8192) + bytes(12288))
    r = run("walk", old)
    assert "pre-ELF xc_core" in one_line_error(r, 3)
    save = tmp_path / "save.img"
    save.write_bytes(b"LinuxGuestRecord" + bytes(8192))
    assert "xm save" in one_line_error(run("walk", save), 3)


# -- the walk command on containers -----------------------------------------------------------

@pytest.mark.parametrize("name", CORES)
def test_walk_cli_needs_nothing_for_xc_core(name, tmp_path):
    path, side, truth = fixture(name)
    out = tmp_path / "t.raw"
    r = run("walk", path, "--format", "raw", "-o", out, "--summary-json", tmp_path / "s.json")
    assert r.exit_code == 0, r.output
    assert out.read_bytes() == truth.tobytes()
    assert "from .xen_shared_info" in r.stderr
    s = json.loads((tmp_path / "s.json").read_text())
    assert s["container"] == "xc-core" and s["top_mfn_source"] == "container"
    assert s["warnings"] == 0


def test_walk_cli_xc_core_equals_raw_walk_of_same_tree(tmp_path):
    spec = GuestSpec(word_size=4, max_pfn=0x800, ram=[(0, 0x800)], identity=[(0xA0, 0x100)],
                     mfn_order="chunked", seed=2)
    generate_container(spec, tmp_path / "g.core", container="xc-core")
    tree, _ = tree_pages_as_guest_pages(build_tree(spec))
    from p2mdump.writer.image import write_raw_image
    write_raw_image(tree, tmp_path / "g.img")
    r1 = run("walk", tmp_path / "g.core", "--format", "raw", "-o", tmp_path / "a")
    r2 = run("walk", tmp_path / "g.img", "--top-mfn", tree.top_mfn, "--max-pfn", 0x800,
             "--format", "raw", "-o", tmp_path / "b")
    assert r1.exit_code == r2.exit_code == 0
    assert (tmp_path / "a").read_bytes() == (tmp_path / "b").read_bytes()
    r3 = run("walk", tmp_path / "g.core")
    r4 = run("walk", tmp_path / "g.img", "--top-mfn", tree.top_mfn, "--max-pfn", 0x800)
    assert r3.stdout == r4.stdout


def test_walk_cli_elf_and_raw_need_top_mfn(tmp_path):
    path, side, truth = fixture("vmcore32")
    assert "--top-mfn is required" in one_line_error(run("walk", path), 2)
    r = run("walk", path, "--top-mfn", side["top_mfn"], "--max-pfn", side["max_pfn"],
            "--format", "raw", "-o", tmp_path / "o")
    assert r.exit_code == 0 and (tmp_path / "o").read_bytes() == truth.tobytes()
    import shutil

    raw = tmp_path / "nosidecar.img"
    shutil.copy(os.path.join(FIXTURES, "guest64.img"), raw)  # without its sidecar
    assert "--top-mfn is required" in one_line_error(run("walk", raw), 2)
    # with the generator's sidecar beside it, the tree is found from that
    r = run("walk", os.path.join(FIXTURES, "guest64.img"), "--format", "raw", "-o",
            tmp_path / "s.raw")
    assert r.exit_code == 0 and "from the generator's sidecar" in r.stderr
    assert (tmp_path / "s.raw").read_bytes() == open(
        os.path.join(FIXTURES, "guest64.truth"), "rb").read()


def test_generate_cli_containers(tmp_path):
    for c in ("xc-core", "elf"):
        out = tmp_path / f"g.{c}"
        r = run("generate", out, "--container", c, "--max-pfn", 0x300, "--data",
                "--word-size", 4, "--truth", tmp_path / f"{c}.truth", "-q")
        assert r.exit_code == 0, r.output
        side = json.loads((tmp_path / f"g.{c}.json").read_text())
        assert side["container"] == c
        with open_image(out) as src:
            assert src.container == c
    assert "raw container only" in one_line_error(
        run("generate", tmp_path / "x", "--container", "elf", "--base", 4096), 2)


# -- the cross-check ------------------------------------------------------------------------------

def pair_offset(path, k):
    return section(path, ".xen_p2m").offset + 16 * k


def walk_json(tmp_path, path, *extra):
    sj = tmp_path / "s.json"
    r = run("walk", path, "--summary-json", sj, "-q", *extra)
    assert "Traceback" not in r.output
    return r, json.loads(sj.read_text()) if sj.exists() else None


def kinds(summary):
    return {f["kind"]: f for f in summary["findings"] if f["severity"] == "warning"}


def test_crosscheck_gmfn_mismatch(tmp_path):
    path, side, _ = copy(tmp_path, "core64")
    with open_image(path) as src:
        pfns, gmfns = src.pairs()
    k = 5
    poke(path, pair_offset(path, k) + 8, "<Q", 0x7777777)  # a frame nobody has
    r, s = walk_json(tmp_path, path)
    assert r.exit_code == 0
    f = kinds(s)
    assert f[F.DUMP_GMFN_MISMATCH]["count"] == 1
    assert f[F.DUMP_GMFN_MISMATCH]["examples"][0] == {
        "pfn": int(pfns[k]), "gmfn": 0x7777777, "tree_mfn": int(gmfns[k])}
    assert run("walk", path, "--strict", "-q").exit_code == 1


def test_crosscheck_pair_removed_and_unknown_page(tmp_path):
    path, side, _ = copy(tmp_path, "core64")
    with open_image(path) as src:
        pfns, gmfns = src.pairs()
    # pair 3 now names a pfn in the 1:1 range: the tree does not map it,
    # and the tree's pfn of pair 3 has no pair any more
    poke(path, pair_offset(path, 3), "<Q", 0xA5)
    r, s = walk_json(tmp_path, path)
    f = kinds(s)
    assert f[F.DUMP_UNKNOWN_PAGE]["count"] == 1
    assert "1 identity" in f[F.DUMP_UNKNOWN_PAGE]["message"]
    assert f[F.DUMP_LACKS_PFN]["count"] == 1
    assert f[F.DUMP_LACKS_PFN]["pfn_first"] == int(pfns[3])
    assert f[F.DUMP_UNSORTED]["count"] >= 1


def test_duplicate_pfns_and_gmfns_are_findings(tmp_path):
    path, side, truth = copy(tmp_path, "core64")
    with open_image(path) as src:
        pfns, gmfns = src.pairs()
    poke(path, pair_offset(path, 11), "<Q", int(pfns[10]))          # pfn repeated
    poke(path, pair_offset(path, 21) + 8, "<Q", int(gmfns[20]))     # gmfn repeated
    out = tmp_path / "t.raw"
    r, s = walk_json(tmp_path, path, "--format", "raw", "-o", out)
    assert r.exit_code == 0
    f = kinds(s)
    assert f[F.DUMP_DUPLICATE_PFN]["examples"][0] == {"pfn": int(pfns[10]), "pairs": [10, 11]}
    assert f[F.DUMP_DUPLICATE_GMFN]["examples"][0] == {"gmfn": int(gmfns[20]), "pairs": [20, 21]}
    assert F.DUMP_LACKS_PFN in f and F.DUMP_GMFN_MISMATCH in f
    assert out.read_bytes() == truth.tobytes()   # the tree itself is intact


# -- bad input: one line, exit 3 (or a finding), nothing left behind -------------------------------

def bad(tmp_path, path, code=3, *extra):
    out = tmp_path / "out.raw"
    r = run("walk", path, "--format", "raw", "-o", out, *extra)
    line = one_line_error(r, code)
    assert not out.exists()
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".part")]
    return line


@pytest.mark.parametrize("size", [4, 10, 20, 40, 63])
def test_truncated_elf_header(tmp_path, size):
    path, _, _ = fixture("core64")
    with open(path, "rb") as fh:
        head = fh.read(size)
    p = tmp_path / "t.core"
    p.write_bytes(head)
    line = bad(tmp_path, p)
    assert "truncated ELF header" in line or "e_ident" in line


def test_truncated_file_section_past_end(tmp_path):
    path, _, _ = copy(tmp_path, "core64")
    size = os.path.getsize(path)
    os.truncate(path, size - 4096 * 3)
    assert "past the end of the file" in bad(tmp_path, path)


def test_section_offset_past_end(tmp_path):
    path, _, _ = copy(tmp_path, "core32")
    poke(path, shdr_field_offset(path, ".xen_pages", "sh_offset"), "<Q", 1 << 40)
    line = bad(tmp_path, path)
    assert ".xen_pages" in line and "0x10000000000" in line


def test_shdr_table_past_end(tmp_path):
    path, _, _ = copy(tmp_path, "core64")
    poke(path, 40, "<Q", os.path.getsize(path) - 10)     # e_shoff
    assert "shdr table" in bad(tmp_path, path)


def test_p2m_length_not_multiple_of_16(tmp_path):
    path, _, _ = copy(tmp_path, "core64")
    sec = section(path, ".xen_p2m")
    poke(path, shdr_field_offset(path, ".xen_p2m", "sh_size"), "<Q", sec.size - 8)
    line = bad(tmp_path, path)
    assert ".xen_p2m sh_size" in line and str(sec.size - 8) in line and "16" in line


def test_segment_offset_past_end(tmp_path):
    path, _, _ = copy(tmp_path, "vmcore64")
    poke(path, 64 + 8, "<Q", 1 << 36)       # PT_LOAD #0 p_offset
    line = bad(tmp_path, path, 3, "--top-mfn", 1)
    assert "PT_LOAD #0" in line and "past the end" in line


def test_overlapping_pt_loads(tmp_path):
    p = tmp_path / "o.elf"
    write_elf_segments(p, [(0, 8 * PAGE_SIZE, 8 * PAGE_SIZE),
                           (4 * PAGE_SIZE, PAGE_SIZE, PAGE_SIZE)])
    line = bad(tmp_path, p, 3, "--top-mfn", 1)
    assert "overlap" in line and "PT_LOAD #0" in line and "PT_LOAD #1" in line


def test_filesz_larger_than_memsz(tmp_path):
    p = tmp_path / "o.elf"
    write_elf_segments(p, [(0, 2 * PAGE_SIZE, PAGE_SIZE)])
    assert "p_filesz" in bad(tmp_path, p, 3, "--top-mfn", 1)


def test_elf_without_loads_or_notes(tmp_path):
    p = tmp_path / "e.elf"
    p.write_bytes(E.build_core_header(machine=62) + bytes(4096))
    assert "neither an xl dump-core" in bad(tmp_path, p)


def test_big_endian_elf(tmp_path):
    path, _, _ = copy(tmp_path, "core64")
    poke(path, 5, "<B", 2)
    assert "EI_DATA" in bad(tmp_path, path)


def test_shared_info_too_small(tmp_path):
    path, side, truth = copy(tmp_path, "core64")
    poke(path, shdr_field_offset(path, ".xen_shared_info", "sh_size"), "<Q", 2000)
    line = bad(tmp_path, path)
    assert ".xen_shared_info sh_size 2000" in line
    # with --top-mfn the dump is still usable, and the size is a finding
    r, s = walk_json(tmp_path, path, "--top-mfn", side["top_mfn"], "--max-pfn", side["max_pfn"])
    assert r.exit_code == 0
    assert any("sh_size is 2000" in f["message"] for f in s["findings"])


def test_shared_info_odd_size_is_a_finding(tmp_path):
    path, side, truth = copy(tmp_path, "core32")
    poke(path, shdr_field_offset(path, ".xen_shared_info", "sh_size"), "<Q", 2400)
    out = tmp_path / "t"
    r, s = walk_json(tmp_path, path, "--format", "raw", "-o", out)
    assert r.exit_code == 0 and out.read_bytes() == truth.tobytes()
    assert kinds(s)[F.CONTAINER]["message"] == ".xen_shared_info sh_size is 2400, expected 4096"


def test_count_mismatch_is_a_finding(tmp_path):
    path, side, truth = copy(tmp_path, "core64")
    note = section(path, ".note.Xen")
    poke(path, note.offset + 16 + 16 + 16, "<Q", 5)     # xch_nr_pages
    r, s = walk_json(tmp_path, path)
    assert r.exit_code == 0
    assert "xch_nr_pages 5" in kinds(s)[F.CONTAINER]["message"]


@pytest.mark.parametrize("fll", ["zero", "ones"])
def test_frame_list_list_not_usable(tmp_path, fll):
    spec = GuestSpec(word_size=8, max_pfn=0x200, seed=1)
    tree, _ = tree_pages_as_guest_pages(build_tree(spec))
    p = tmp_path / "g.core"
    value = 0 if fll == "zero" else (1 << 64) - 1
    write_xc_core(tree, p, fll=value, p2m_cr3=0x1234000, p2m_vaddr=0xFFFFC90000000000)
    line = bad(tmp_path, p, 4)
    assert "pfn_to_mfn_frame_list_list is " + ("0" if fll == "zero" else "~0") in line
    assert "p2m_cr3 0x1234000" in line and "p2m_vaddr 0xffffc90000000000" in line
    # --top-mfn still walks it
    r = run("walk", p, "--top-mfn", tree.top_mfn, "-q")
    assert r.exit_code == 0


def test_32bit_fll_all_ones_at_guest_width(tmp_path):
    tree, _ = tree_pages_as_guest_pages(build_tree(GuestSpec(word_size=4, max_pfn=0x400)))
    p = tmp_path / "g.core"
    write_xc_core(tree, p, fll=0xFFFFFFFF)
    with pytest.raises(TreeError, match="~0"):
        from p2mdump.autowalk import walk_image
        with open_image(p) as src:
            walk_image(src)


def test_hvm_dump_is_recognised(tmp_path):
    path, _, _ = copy(tmp_path, "core64")
    note = section(path, ".note.Xen")
    poke(path, note.offset + 16 + 16, "<Q", X.XC_CORE_MAGIC_HVM)
    strtab = section(path, ".shstrtab")
    with open(path, "r+b") as fh:
        fh.seek(strtab.offset)
        names = fh.read(strtab.size)
        fh.seek(strtab.offset)
        fh.write(names.replace(b".xen_p2m", b".xen_pfn"))
    with open_image(path) as src:
        assert src.is_hvm and src.info()["header"]["guest"] == "HVM"
    assert "HVM" in bad(tmp_path, path, 4)
