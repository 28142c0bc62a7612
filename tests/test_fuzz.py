"""Property-based fuzzing of the readers and walkers with hostile images.

The images are built from the project's Construct schemas -- p2m tree pages,
page-table pages, ELF headers, section and program headers, the Xen notes
and shared_info -- as valid-ish structures, then mutated field by field and
byte by byte.  Whatever comes out, opening, ``info``, walking (tree, list,
auto), ``scan`` and ``verify`` must end in a result or a
:class:`~p2mdump.errors.P2MDumpError` in-process, and in an exit code of the
documented table without a traceback at the command line -- within the
hypothesis deadline and a memory bound.

The budget is fixed (``max_examples``) and the runs derandomized, so the
file is deterministic and takes well under a minute.  Every failure found
here stays as an ``@example`` of the property that found it.
"""
from __future__ import annotations

import os
import tempfile
import time
import tracemalloc

import pytest

from click.testing import CliRunner
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from p2mdump.autowalk import walk_image
from p2mdump.cli import main
from p2mdump.errors import P2MDumpError
from p2mdump.layout import PAGE_SIZE, WORD_SIZES, layout_for
from p2mdump.paging import (KERNPG_TABLE, PAGE_KERNEL, PTE_PRESENT, PTE_PSE, PTE_RW,
                            PTES_PER_PAGE, fold_cr3, mode_for)
from p2mdump.scan import scan
from p2mdump.schemas import elf as E
from p2mdump.schemas import xen_core as X
from p2mdump.schemas.p2m import leaf_page, mid_page, top_page
from p2mdump.schemas.pagetable import PageTablePage
from p2mdump.sources import open_image
from p2mdump.verify import verify
from p2mdump.writer.containers import XcCoreLayout, shared_info

#: the exit codes of the documented table a hostile image may give
ALLOWED_EXIT_CODES = {0, 1, 2, 3, 4, 5, 6}
#: seconds a scan of one (tiny) image may take before it counts as a hang
SCAN_SECONDS = 3.0
#: peak Python-heap bytes one example may use (the images are at most ~100 KiB)
MEMORY_LIMIT = 64 << 20

FUZZ = settings(max_examples=int(os.environ.get("P2MDUMP_FUZZ_EXAMPLES", "150")),
                deadline=5000, derandomize=True, database=None, print_blob=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

MAX_FRAMES = 12

# -- words ---------------------------------------------------------------------------------


def _word(ws: int, nframes: int):
    """A tree word: a frame of the image (or just past it), INVALID, a flagged
    entry or anything of the word's width."""
    L = layout_for(ws)
    return st.one_of(st.integers(0, nframes + 1), st.just(L.invalid),
                     st.integers(0, nframes + 1).map(lambda m: m | L.identity_bit),
                     st.integers(0, nframes + 1).map(lambda m: m | L.foreign_bit),
                     st.integers(0, L.word_mask))


@st.composite
def _words(draw, ws: int, nframes: int) -> list:
    """``per_page`` words: a background (0 or INVALID) with a few slots set."""
    L = layout_for(ws)
    fill = draw(st.sampled_from([0, L.invalid]))
    words = [fill] * L.per_page
    for slot, value in draw(st.dictionaries(st.integers(0, L.per_page - 1),
                                            _word(ws, nframes), max_size=6)).items():
        words[slot] = value
    if draw(st.booleans()):   # a run of valid entries from slot 0: a plausible leaf / mid
        for i in range(draw(st.integers(1, 16))):
            words[i] = draw(st.integers(0, nframes + 1))
    return words


@st.composite
def tree_frame(draw, ws: int, nframes: int) -> bytes:
    """One frame: zero, a few random bytes, or a top / mid / leaf page."""
    kind = draw(st.sampled_from(["zero", "bytes", "top", "mid", "leaf"]))
    if kind == "zero":
        return bytes(PAGE_SIZE)
    if kind == "bytes":
        blob = draw(st.binary(min_size=1, max_size=64))
        at = draw(st.integers(0, PAGE_SIZE - len(blob)))
        return bytes(at) + blob + bytes(PAGE_SIZE - at - len(blob))
    schema, field = {"top": (top_page, "mid_mfns"), "mid": (mid_page, "leaf_mfns"),
                     "leaf": (leaf_page, "entries")}[kind]
    return schema(ws).build({field: draw(_words(ws, nframes))})


# -- byte-level mutation -------------------------------------------------------------------


@st.composite
def mutated(draw, blob: bytes) -> bytes:
    """``blob`` with a few bytes overwritten and maybe cut short."""
    out = bytearray(blob)
    for pos, value in draw(st.lists(st.tuples(st.integers(0, max(len(out) - 1, 0)),
                                              st.integers(0, 255)), max_size=4)):
        if out:
            out[pos] = value
    if draw(st.integers(0, 9)) == 0:
        del out[draw(st.integers(0, len(out))):]
    return bytes(out)


# -- raw images: p2m trees and page tables of a linear list ------------------------------

#: where a list may start: a 64-bit kernel's vmalloc area, a 32-bit kernel's lowmem
LIST_VADDRS = {8: 0xFFFFC90000000000, 4: 0xC1000000}


def _pte(draw, nframes: int) -> int:
    frame = draw(st.integers(0, nframes + 1))
    flags = draw(st.sampled_from([KERNPG_TABLE, PAGE_KERNEL, 0, PTE_PRESENT | PTE_PSE,
                                  PTE_PRESENT | PTE_RW]))
    return (frame << 12) | flags


@st.composite
def raw_image(draw) -> dict:
    """A raw image of tree pages, a page-table path to a list, and noise;
    the parameters of a tree and a list in it (not necessarily right)."""
    ws = draw(st.sampled_from(WORD_SIZES))
    nframes = draw(st.integers(1, MAX_FRAMES))
    frames = [draw(tree_frame(ws, nframes)) for _ in range(nframes)]
    mode = mode_for(ws)
    vaddr = LIST_VADDRS[ws] + draw(st.integers(0, 3)) * PAGE_SIZE * PTES_PER_PAGE \
        + draw(st.integers(0, 3)) * PAGE_SIZE
    root = draw(st.integers(0, nframes - 1))
    if draw(st.booleans()):   # page tables from root down to the list's first page
        table = root
        for level in range(mode.levels, 0, -1):
            entries = [0] * PTES_PER_PAGE
            for slot, value in draw(st.dictionaries(st.integers(0, PTES_PER_PAGE - 1),
                                                    st.integers(0, (1 << 64) - 1),
                                                    max_size=3)).items():
                entries[slot] = value
            entry = _pte(draw, nframes)
            entries[mode.index(vaddr, level)] = entry
            frames[table] = PageTablePage.build({"entries": entries})
            table = entry >> 12
            if table >= nframes:
                break
    data = draw(mutated(b"".join(frames)))
    return dict(data=data, ws=ws, top=draw(st.integers(0, nframes + 1)),
                max_pfn=draw(st.one_of(st.none(), st.integers(0, 4 * layout_for(ws).per_page))),
                cr3=fold_cr3(root, ws), vaddr=vaddr)


# -- xl dump-core images ------------------------------------------------------------------

SHDR_FIELDS = ("sh_name", "sh_type", "sh_offset", "sh_size", "sh_entsize", "sh_addralign")
EHDR_FIELDS = ("e_machine", "e_shoff", "e_shnum", "e_shstrndx", "e_shentsize", "e_phoff",
               "e_phnum", "e_phentsize", "e_type")


def _field_value(size: int):
    """Values a hostile header field takes: small, near the file size, huge."""
    return st.one_of(st.integers(0, 16), st.integers(0, size + PAGE_SIZE),
                     st.sampled_from([size, size - 1, size + 1, (1 << 32) - 1, 1 << 40,
                                      (1 << 63) - 1, (1 << 64) - 1]))


def _mutate_header(draw, out: bytearray, schema, at: int, names) -> None:
    """Parse the header at ``at`` with its Construct schema, set one field, rebuild."""
    head = schema.parse(bytes(out[at:at + schema.sizeof()]))
    name = draw(st.sampled_from(names))
    width = 8 * next(sc.sizeof() for sc in schema.subcons if sc.name == name)
    head[name] = draw(_field_value(len(out))) & ((1 << width) - 1)
    out[at:at + schema.sizeof()] = schema.build(head)


@st.composite
def xc_core_image(draw) -> dict:
    """An ``xl dump-core`` file (ELF64 ET_CORE: .note.Xen, .xen_shared_info,
    .xen_pages, .xen_p2m) of tree pages, with mutated headers and bytes."""
    ws = draw(st.sampled_from(WORD_SIZES))
    nframes = draw(st.integers(1, MAX_FRAMES))
    frames = [draw(tree_frame(ws, nframes)) for _ in range(nframes)]
    top = draw(st.integers(0, nframes + 1))
    max_pfn = draw(st.integers(0, 4 * layout_for(ws).per_page))
    sinfo = shared_info(ws, max_pfn=max_pfn, pfn_to_mfn_frame_list_list=top,
                        p2m_cr3=draw(st.sampled_from([0, fold_cr3(0, ws)])),
                        p2m_vaddr=draw(st.sampled_from([0, LIST_VADDRS[ws]])))
    lay = XcCoreLayout(word_size=ws, nr_vcpus=1, nr_pages=nframes, sinfo=sinfo)
    out = bytearray(lay.size)
    out[:len(lay.head)] = lay.head
    out[lay.off_str:lay.off_str + len(lay.shstrtab)] = lay.shstrtab
    for k, frame in enumerate(frames):
        out[lay.off_pages + k * PAGE_SIZE:lay.off_pages + (k + 1) * PAGE_SIZE] = frame
        gmfn = draw(st.one_of(st.just(k), st.integers(0, nframes + 1), st.just(X.INVALID_GMFN)))
        pair = X.XenDumpcoreP2m.build({"pfn": k, "gmfn": gmfn})
        out[lay.off_p2m + k * X.P2M_PAIR_SIZE:lay.off_p2m + (k + 1) * X.P2M_PAIR_SIZE] = pair
    shsize = E.SHDR_SIZE[E.ELFCLASS64]
    for _ in range(draw(st.integers(0, 3))):
        if draw(st.booleans()):
            _mutate_header(draw, out, E.Elf64_Ehdr, 0, EHDR_FIELDS)
        else:
            index = draw(st.integers(1, len(X.PV_SECTION_ORDER)))
            _mutate_header(draw, out, E.Elf64_Shdr, E.EHDR_SIZE[E.ELFCLASS64] + index * shsize,
                           SHDR_FIELDS)
    if draw(st.booleans()):   # a note header: namesz, descsz or type
        at = lay.off_notes + draw(st.sampled_from([0, E.NHDR_SIZE + 4]))
        nh = E.Elf_Nhdr.parse(bytes(out[at:at + E.NHDR_SIZE]))
        nh[draw(st.sampled_from(["n_namesz", "n_descsz", "n_type"]))] = \
            draw(_field_value(len(out))) & 0xFFFFFFFF
        out[at:at + E.NHDR_SIZE] = E.Elf_Nhdr.build(nh)
    return dict(data=draw(mutated(bytes(out))), ws=ws, top=top, max_pfn=max_pfn,
                cr3=None, vaddr=None)


# -- ELF cores with PT_LOAD segments ------------------------------------------------------

PHDR_FIELDS = ("p_type", "p_offset", "p_paddr", "p_filesz", "p_memsz")


@st.composite
def elf_load_image(draw) -> dict:
    """An ELF64 core with one PT_LOAD per run of frames (p_paddr: machine
    address), program headers mutated."""
    ws = draw(st.sampled_from(WORD_SIZES))
    nframes = draw(st.integers(1, MAX_FRAMES))
    frames = [draw(tree_frame(ws, nframes)) for _ in range(nframes)]
    cuts = sorted(set(draw(st.lists(st.integers(1, nframes), max_size=3)) + [nframes]))
    phsize = E.PHDR_SIZE[E.ELFCLASS64]
    data_at = -(-(E.EHDR_SIZE[E.ELFCLASS64] + len(cuts) * phsize) // PAGE_SIZE) * PAGE_SIZE
    machine = E.EM_X86_64 if ws == 8 else E.EM_386
    out = bytearray(E.build_core_header(machine=machine, phoff=E.EHDR_SIZE[E.ELFCLASS64],
                                        phnum=len(cuts)))
    start = 0
    for end in cuts:
        mfn0 = start + draw(st.sampled_from([0, 0, 0x100]))
        out += E.build_phdr(paddr=mfn0 * PAGE_SIZE, offset=data_at + start * PAGE_SIZE,
                            filesz=(end - start) * PAGE_SIZE)
        start = end
    out += bytes(data_at - len(out))
    out += b"".join(frames)
    for _ in range(draw(st.integers(0, 3))):
        index = draw(st.integers(0, len(cuts) - 1))
        _mutate_header(draw, out, E.Elf64_Phdr, E.EHDR_SIZE[E.ELFCLASS64] + index * phsize,
                       PHDR_FIELDS)
    return dict(data=draw(mutated(bytes(out))), ws=ws, top=draw(st.integers(0, nframes + 1)),
                max_pfn=None, cr3=None, vaddr=None)


ANY_IMAGE = st.one_of(raw_image(), xc_core_image(), elf_load_image())


# -- the invariants ----------------------------------------------------------------------


def _attempt(fn, *args, **kw):
    """``fn`` returns or raises a P2MDumpError; anything else fails the test."""
    try:
        return fn(*args, **kw)
    except P2MDumpError as exc:
        assert str(exc), f"{type(exc).__name__} without a message"
        return None


class ScanTooSlow(AssertionError):
    """A scan of a tiny image still going after SCAN_SECONDS."""


def bounded_scan(source, seconds: float = SCAN_SECONDS):
    """:func:`scan`, failing (instead of hanging) once it runs too long."""
    t0 = time.monotonic()

    def progress(done, total):
        if time.monotonic() - t0 > seconds:
            raise ScanTooSlow(f"scan at byte {done:#x} of {total:#x} after {seconds} s")
    return scan(source, max_trials=64, progress=progress)


def _with_file(data: bytes, check) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "image.bin")
        with open(path, "wb") as fh:
            fh.write(data)
        tracemalloc.start()
        try:
            check(path)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < MEMORY_LIMIT, f"peak {peak >> 20} MiB for a {len(data)}-byte image"


def api_invariants(img: dict) -> None:
    def check(path):
        try:
            source = open_image(path)
        except P2MDumpError:
            return
        with source:
            _attempt(source.info)
            _attempt(walk_image, source)
            _attempt(walk_image, source, top_mfn=img["top"], max_pfn=img["max_pfn"],
                     representation="tree")
            if img["cr3"] is not None:
                _attempt(walk_image, source, p2m_cr3=img["cr3"], p2m_vaddr=img["vaddr"],
                         max_pfn=img["max_pfn"] or 1, representation="list")
            _attempt(bounded_scan, source)
            _attempt(verify, source, img["top"], max_pfn=img["max_pfn"])
    _with_file(img["data"], check)


def cli_invariants(img: dict) -> None:
    def check(path):
        commands = [["info", path], ["info", "--json", path], ["walk", path, "-q"],
                    ["walk", path, "-q", "--representation", "tree", "--top-mfn",
                     str(img["top"])], ["scan", path, "-q"], ["verify", path, "-q"],
                    ["verify", path, "--json", "--top-mfn", str(img["top"])]]
        if img["cr3"] is not None:
            commands.append(["walk", path, "-q", "--p2m-cr3", hex(img["cr3"]), "--p2m-vaddr",
                             hex(img["vaddr"]), "--max-pfn", str(img["max_pfn"] or 1)])
        for args in commands:
            r = CliRunner().invoke(main, args)
            assert r.exit_code in ALLOWED_EXIT_CODES, (args, r.exit_code, r.stderr)
            assert r.exception is None or isinstance(r.exception, SystemExit), \
                (args, repr(r.exception))
            assert "Traceback" not in r.stderr, (args, r.stderr)
    _with_file(img["data"], check)


@FUZZ
@given(raw_image())
def test_raw_images_api(img):
    api_invariants(img)


@FUZZ
@given(xc_core_image())
def test_xc_core_images_api(img):
    api_invariants(img)


@FUZZ
@given(elf_load_image())
def test_elf_load_images_api(img):
    api_invariants(img)


@settings(FUZZ, max_examples=max(FUZZ.max_examples // 2, 1))
@given(ANY_IMAGE)
def test_any_image_cli(img):
    cli_invariants(img)


@FUZZ
@given(st.binary(max_size=3 * PAGE_SIZE))
@example(b"\x7fELF")
@example(b"\x7fELF\x02\x01\x01" + bytes(57))
def test_arbitrary_bytes_api(data):
    api_invariants(dict(data=data, ws=8, top=0, max_pfn=None, cr3=None, vaddr=None))


# -- regressions found by the properties above --------------------------------------------


def _one_load_core(**phdr) -> bytes:
    """An ELF64 core: one PT_LOAD of one frame at file offset PAGE_SIZE."""
    ph = dict(paddr=0, offset=PAGE_SIZE, filesz=PAGE_SIZE)
    ph.update(phdr)
    head = E.build_core_header(machine=E.EM_X86_64, phoff=E.EHDR_SIZE[E.ELFCLASS64], phnum=1)
    head += E.build_phdr(**ph)
    return head + bytes(PAGE_SIZE - len(head)) + bytes(PAGE_SIZE)


@pytest.mark.parametrize("phdr", [dict(memsz=1 << 40), dict(paddr=1 << 40),
                                  dict(paddr=0xFFFFFFFF)],
                         ids=["memsz-2^40", "paddr-2^40", "paddr-unaligned-4GiB"])
def test_scan_time_is_bounded_by_file_data(phdr):
    """PT_LOADs that claim far more than the file holds (zero fill up to
    p_memsz, holes below p_paddr): scan reads only the file-backed frames."""
    def check(path):
        with open_image(path) as source:
            bounded_scan(source, seconds=1.0)
    _with_file(_one_load_core(**phdr), check)
