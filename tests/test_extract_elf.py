"""extract --format elf as crash, gdb and drgn expect it: PT_NOTE first, p_vaddr in the direct map.

The layout is read back three ways: with the Construct schemas of
p2mdump.schemas.elf (the note's one source of truth), with p2mdump's own
ELF reader (a walk of the output), and with real clients when they are on
the machine: readelf (binutils) and gdb; drgn only when importable (it is no
dependency of p2mdump).
"""
import json
import os
import re
import shutil
import subprocess

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import FIXTURES, load_fixture
from p2mdump import __version__
from p2mdump.cli import main
from p2mdump.extract import Plan, extract
from p2mdump.layout import PAGE_SIZE, layout_for
from p2mdump.paging import LINUX_DIRECT_MAP_BASE
from p2mdump.schemas import elf as E
from p2mdump.sources import open_image
from p2mdump.sources.elf import ElfCoreSource
from p2mdump.walker import walk

CORE64 = os.path.join(FIXTURES, "core64.core")
CORE32 = os.path.join(FIXTURES, "core32.core")


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def extract_both(tmp_path, image, *extra, name="g"):
    """(ELF output path, raw output bytes) of ``image``."""
    elf, raw = tmp_path / f"{name}.elf", tmp_path / f"{name}.raw"
    r = run("extract", image, "-o", elf, "--format", "elf", "-q", *extra)
    assert r.exit_code == 0, r.output
    opts = [a for a in extra if a != "--vaddr-base"]
    if "--vaddr-base" in extra:
        i = list(extra).index("--vaddr-base")
        opts = list(extra[:i]) + list(extra[i + 2:])
    assert run("extract", image, "-o", raw, "-q", *opts).exit_code == 0
    return elf, raw.read_bytes()


def phdrs(path):
    """The program headers of ``path``, parsed with the schema."""
    data = open(path, "rb").read()
    eh = E.Elf64_Ehdr.parse(data)
    return data, [E.Elf64_Phdr.parse(data[eh.e_phoff + i * eh.e_phentsize:])
                  for i in range(eh.e_phnum)]


def origin_of(path):
    """The P2MDUMP note of ``path``: PT_NOTE must be program header 0."""
    data, ph = phdrs(path)
    assert ph[0].p_type == E.PT_NOTE
    note = E.Elf_Note.parse(data[ph[0].p_offset:ph[0].p_offset + ph[0].p_filesz])
    assert note.name == E.P2MDUMP_NOTE_NAME and note.n_type == E.NT_P2MDUMP_ORIGIN
    assert ph[0].p_filesz == E.NHDR_SIZE + E.note_pad(note.n_namesz) + E.note_pad(note.n_descsz)
    return E.P2mdumpOrigin.parse(note.desc)


def valid_runs(truth, ws):
    lay = layout_for(ws)
    valid = [p for p, e in enumerate(truth.tolist()) if lay.kind_of(e) == "valid"]
    runs, start = [], None
    for i, p in enumerate(valid):
        if start is None:
            start = p
        if i + 1 == len(valid) or valid[i + 1] != p + 1:
            runs.append((start, p + 1))
            start = None
    return runs


# -- the layout, read with the schemas ----------------------------------------------------

@pytest.mark.parametrize("name, ws, base", [("core64", 8, LINUX_DIRECT_MAP_BASE),
                                            ("core32", 4, 0)])
def test_note_first_then_loads_at_the_direct_map(name, ws, base, tmp_path):
    img = os.path.join(FIXTURES, f"{name}.core")
    truth = np.fromfile(os.path.join(FIXTURES, f"{name}.truth"), dtype=f"<u{ws}")
    side = json.load(open(img + ".json"))
    elf, flat = extract_both(tmp_path, img)
    data, ph = phdrs(elf)
    note_end = ph[0].p_offset + ph[0].p_filesz
    assert ph[0].p_offset == E.EHDR_SIZE[E.ELFCLASS64] + len(ph) * E.PHDR_SIZE[E.ELFCLASS64]
    loads = ph[1:]
    assert all(p.p_type == E.PT_LOAD for p in loads)
    assert min(p.p_offset for p in loads) >= note_end
    runs = valid_runs(truth, ws)
    assert [(p.p_paddr // PAGE_SIZE, (p.p_paddr + p.p_filesz) // PAGE_SIZE) for p in loads] == runs
    for p in loads:
        assert p.p_vaddr == (base + p.p_paddr if base else 0)
        assert p.p_memsz == p.p_filesz
        assert data[p.p_offset:p.p_offset + p.p_filesz] == flat[p.p_paddr:p.p_paddr + p.p_filesz]
    o = origin_of(elf)
    assert (o.layout, o.word_size, o.max_pfn) == (E.P2MDUMP_ORIGIN_LAYOUT, ws, side["max_pfn"])
    assert o.pfn_count == sum(b - a for a, b in runs) and o.unreadable == 0
    assert (o.vaddr_base, o.p2mdump_version) == (base, __version__)
    assert (o.image, o.container, o.representation) == (f"{name}.core", "xc-core", "tree")


def test_note_names_list_guests_and_raw_images(tmp_path):
    img, side, _ = load_fixture("data64")
    elf = tmp_path / "g.elf"
    assert run("extract", img, "-o", elf, "--format", "elf", "-q").exit_code == 0
    o = origin_of(elf)
    assert (o.image, o.container, o.representation) == ("data64.img", "raw", "tree")
    assert os.sep not in o.image                         # the file name only
    list_img = os.path.join(FIXTURES, "listcore64.core")
    assert run("extract", list_img, "-o", elf, "--format", "elf", "-q").exit_code == 0
    assert origin_of(elf).representation == "list"


def test_vaddr_base_zero_keeps_the_old_loads(tmp_path):
    """--vaddr-base 0: the loads are what extract wrote before the note
    existed (p_vaddr 0, same p_paddr/sizes/flags, same bytes); the default
    output differs from it in p_vaddr and the note's base only."""
    elf0, flat = extract_both(tmp_path, CORE64, "--vaddr-base", "0", name="zero")
    elfd, _ = extract_both(tmp_path, CORE64, name="default")
    d0, ph0 = phdrs(elf0)
    dd, phd = phdrs(elfd)
    start = ph0[1].p_offset
    packed = b"".join(flat[p.p_paddr:p.p_paddr + p.p_filesz] for p in ph0[1:])
    assert d0[start:] == packed and dd[phd[1].p_offset:] == packed
    for p in ph0[1:]:
        assert E.Elf64_Phdr.build(p) == E.build_phdr(paddr=p.p_paddr, offset=p.p_offset,
                                              filesz=p.p_filesz)
    for a, b in zip(ph0[1:], phd[1:]):
        assert (a.p_vaddr, b.p_vaddr) == (0, LINUX_DIRECT_MAP_BASE + a.p_paddr)
        assert (a.p_paddr, a.p_offset, a.p_filesz) == (b.p_paddr, b.p_offset, b.p_filesz)
    assert origin_of(elf0).vaddr_base == 0


def test_explicit_base_for_a_32_bit_guest(tmp_path):
    elf, _ = extract_both(tmp_path, CORE32, "--vaddr-base", "0xC0000000")
    _, ph = phdrs(elf)
    assert all(p.p_vaddr == 0xC0000000 + p.p_paddr for p in ph[1:])
    assert origin_of(elf).vaddr_base == 0xC0000000


def test_note_counts_unreadable_frames(tmp_path):
    """A frame the image claims but cannot deliver is zero-filled and counted."""

    class Flaky:
        def __init__(self, src, bad):
            self.src, self.bad = src, bad
            self.path, self.container = src.path, src.container

        def frames_present(self, mfns):
            return self.src.frames_present(mfns)

        def read_frames_into(self, mfn, buf):
            n = len(buf) // PAGE_SIZE
            if mfn <= self.bad < mfn + n:
                n = self.bad - mfn
            return self.src.read_frames_into(mfn, memoryview(buf)[:n * PAGE_SIZE]) if n else 0

    with open_image(CORE64) as src:
        res = walk(src, src.top_mfn_hint, max_pfn=src.max_pfn_hint)
        plan = Plan.from_table(res.table)
        bad = int(plan.mfns[5])
        rep = extract(Flaky(src, bad), plan, tmp_path / "g.elf", "elf")
    o = origin_of(tmp_path / "g.elf")
    assert o.unreadable == 1 and o.pfn_count == len(plan.pfns) == rep.copied + 1


# -- p2mdump's own reader ------------------------------------------------------------------

def identity_image(path, max_pfn=0x400, hole=(0x200, 0x240), tree_at=0x10):
    """A 64-bit guest whose pfn p is machine frame p (a hole of missing pfns),
    tree pages included: its extract output is the same memory, so the tree
    can be walked again in it."""
    lay = layout_for(8)
    n_leaves = -(-max_pfn // lay.per_page)
    top, mid, leaves = tree_at, tree_at + 1, range(tree_at + 2, tree_at + 2 + n_leaves)
    mem = np.zeros((max_pfn, lay.per_page), dtype="<u8")
    entries = np.arange(max_pfn, dtype=np.uint64)
    entries[hole[0]:hole[1]] = lay.invalid
    for p in range(max_pfn):                   # stamped data pages
        mem[p, :2] = (0x5041474500000000 | p, p * 3)
    mem[top] = lay.invalid
    mem[top, 0] = mid
    mem[mid] = lay.invalid
    mem[mid, :n_leaves] = list(leaves)
    for i, leaf in enumerate(leaves):
        chunk = entries[i * lay.per_page:(i + 1) * lay.per_page]
        mem[leaf] = lay.invalid
        mem[leaf, :len(chunk)] = chunk
    mem[hole[0]:hole[1]] = 0
    mem.tofile(path)
    return top, entries


def test_round_trip_walk_of_the_elf_output(tmp_path):
    img = tmp_path / "id.img"
    top, entries = identity_image(img)
    out = tmp_path / "id.elf"
    r = run("extract", img, "-o", out, "--format", "elf", "--top-mfn", top, "--max-pfn",
            len(entries), "-q")
    assert r.exit_code == 0, r.output
    with open_image(out) as src:
        assert isinstance(src, ElfCoreSource) and src.origin()["pfn_count"] == 0x3C0
        res = walk(src, top, max_pfn=len(entries))
    assert np.array_equal(res.table.mfns()[:len(entries)], entries)
    table = tmp_path / "table.raw"
    r = run("walk", out, "--top-mfn", top, "--max-pfn", len(entries), "--format", "raw",
            "-o", table)
    assert r.exit_code == 0, r.output
    assert np.array_equal(np.fromfile(table, dtype="<u8"), entries)
    r = run("info", out, "--json")
    assert json.loads(r.stdout)["p2mdump_origin"]["image"] == "id.img"
    r = run("info", out)
    assert "P2MDUMP note   p2mdump" in r.stdout and "physical" in r.stdout


def test_damaged_note_is_reported_not_fatal(tmp_path):
    elf, _ = extract_both(tmp_path, CORE64)
    data, ph = phdrs(elf)
    desc_at = ph[0].p_offset + E.NHDR_SIZE + len(E.P2MDUMP_NOTE_NAME)
    bad = bytearray(data)
    bad[desc_at:desc_at + 4] = (99).to_bytes(4, "little")        # unknown layout
    elf.write_bytes(bytes(bad))
    info = json.loads(run("info", elf, "--json").stdout)
    assert "layout 99" in info["p2mdump_origin"]["problem"]
    bad[desc_at:desc_at + 4] = (1).to_bytes(4, "little")
    bad[desc_at + 40:desc_at + 42] = b"\xff\xff"      # the version string runs past the note
    elf.write_bytes(bytes(bad))
    r = run("info", elf, "--json")
    assert r.exit_code == 0
    assert "does not parse" in json.loads(r.stdout)["p2mdump_origin"]["problem"]
    with ElfCoreSource(elf) as src:                   # the memory is still read
        assert src.read_frame(ph[1].p_paddr // PAGE_SIZE) == data[ph[1].p_offset:
                                                                  ph[1].p_offset + PAGE_SIZE]


# -- bad --vaddr-base ------------------------------------------------------------------------

@pytest.mark.parametrize("image, value, words", [
    (CORE64, "-0x1000", "negative"),
    (CORE64, "0x0000800000000000", "not a canonical"),
    (CORE64, "0xffff888000000800", "not page-aligned"),
    (CORE64, "0xfffffffffffff000", "wrap past 2^64"),
    (CORE64, "0x00007ffffffff000", "not a canonical address in the half"),
    (CORE32, "0xfff00000", "4 GiB address space of a 32-bit guest"),
    (CORE32, "0x10000000000000000", "not a canonical"),
])
def test_bad_vaddr_base_is_a_usage_error(image, value, words, tmp_path):
    out = tmp_path / "g.elf"
    r = run("extract", image, "-o", out, "--format", "elf", "--vaddr-base", value)
    assert r.exit_code == 2, r.output
    assert words in r.stderr and "Traceback" not in r.stderr
    assert not out.exists() and os.listdir(tmp_path) == []


def test_vaddr_base_needs_elf(tmp_path):
    r = run("extract", CORE64, "-o", tmp_path / "g.raw", "--vaddr-base", "0")
    assert r.exit_code == 2 and "--format elf" in r.stderr
    with open_image(CORE64) as src:
        plan = Plan.from_table(walk(src, src.top_mfn_hint, max_pfn=src.max_pfn_hint).table)
        with pytest.raises(ValueError):
            extract(src, plan, tmp_path / "g.raw", "raw", vaddr_base=0)
    assert os.listdir(tmp_path) == []


def test_help_states_the_default():
    r = run("extract", "--help")
    assert "0xffff888000000000" in r.output and "0xffff880000000000" in r.output


# -- real clients ------------------------------------------------------------------------------

@pytest.mark.skipif(shutil.which("readelf") is None, reason="binutils' readelf is not installed")
def test_readelf_lists_the_note_first_and_the_loads(tmp_path):
    elf, _ = extract_both(tmp_path, CORE64)
    _, ph = phdrs(elf)
    out = subprocess.run(["readelf", "-lnW", str(elf)], capture_output=True, text=True,
                         check=True).stdout
    rows = re.findall(r"^\s+(NOTE|LOAD)\s+(0x[0-9a-f]+)\s+(0x[0-9a-f]+)\s+(0x[0-9a-f]+)", out,
                      re.M)
    assert rows[0][0] == "NOTE" and all(t == "LOAD" for t, *_ in rows[1:])
    assert len(rows) == len(ph)
    for (_, off, vaddr, paddr), p in zip(rows[1:], ph[1:]):
        assert (int(off, 16), int(paddr, 16)) == (p.p_offset, p.p_paddr)
        assert int(vaddr, 16) == LINUX_DIRECT_MAP_BASE + int(paddr, 16)
    assert re.search(r"P2MDUMP\s+0x[0-9a-f]+\s+Unknown note type: \(0x50324d01\)", out)


def gdb_words(core, addr, n=4):
    out = subprocess.run(["gdb", "-nx", "-batch", "-ex", f"core-file {core}",
                          "-ex", f"x/{n}gx {addr:#x}"], capture_output=True, text=True,
                         timeout=60).stdout
    words = []
    for line in out.splitlines():             # "0xffff888000001000:\t0x... 0x..."
        if re.match(r"^0x[0-9a-f]+:", line):
            words += re.findall(r"0x[0-9a-f]{16}", line.split(":", 1)[1])
    return [int(w, 16) for w in words[:n]]


@pytest.mark.skipif(shutil.which("gdb") is None, reason="gdb is not installed")
def test_gdb_reads_guest_pages_at_direct_map_addresses(tmp_path):
    elf, flat = extract_both(tmp_path, CORE64)
    _, ph = phdrs(elf)
    for p in (ph[1], ph[-1]):                   # first pages of the first and last loads
        paddr = p.p_paddr + (PAGE_SIZE if p.p_filesz > PAGE_SIZE else 0)
        want = np.frombuffer(flat[paddr:paddr + 32], dtype="<u8").tolist()
        assert any(want)
        assert gdb_words(elf, LINUX_DIRECT_MAP_BASE + paddr) == want


def test_drgn_reads_guest_pages_at_direct_map_addresses(tmp_path):
    drgn = pytest.importorskip("drgn")          # optional: not a dependency of p2mdump
    elf, flat = extract_both(tmp_path, CORE64)
    prog = drgn.Program()
    prog.set_core_dump(str(elf))
    _, ph = phdrs(elf)
    for p in ph[1:]:
        assert prog.read(LINUX_DIRECT_MAP_BASE + p.p_paddr, PAGE_SIZE) == \
            flat[p.p_paddr:p.p_paddr + PAGE_SIZE]
