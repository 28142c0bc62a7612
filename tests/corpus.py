"""A corruption corpus made from the small fixtures while the tests run.

Each :class:`Case` is a fixture with a few bytes overwritten (no binary is
committed): a header field of its container, a tree pointer, a placeholder,
a page-table entry of a linear list, or a shared_info arch field, set to 0,
to its maximum, past the end of the file, to itself or to another level.
:func:`run_case` runs the p2mdump commands on it in-process and returns
what happened; :func:`problems` says what in an outcome breaks the rules
(an exit code outside the documented table, a traceback, not exactly one
``error:`` line when failing).

The grid is sampled deterministically (:data:`KEEP`) to keep the run short.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import zlib
from dataclasses import dataclass, field

from construct import Const, Struct

from conftest import fixture_path
from p2mdump.layout import PAGE_SIZE, layout_for
from p2mdump.paging import MACHINE_ADDRESS_LIMIT, PTE_PRESENT
from p2mdump.ptlookup import translator_for_cr3
from p2mdump.schemas import elf as E
from p2mdump.schemas import xen_core as X
from p2mdump.sources import open_image

#: documented exit codes (README / ``p2mdump --help``)
EXIT_CODES = {0, 1, 2, 3, 4, 5, 6}
#: commands a case may run
COMMANDS = ("walk", "verify", "scan", "info", "extract")
#: every case runs walk; the others run on cases whose name hashes into this share
SUBSET = 4   # 1 in 4
#: fixtures: container kind -> (file, extra walk options)
FIXTURES = {
    "raw-tree": "guest64.img",
    "raw-list": "list64.img",
    "xc-core-tree": "core64.core",
    "xc-core-list": "listcore64.core",
    "elf": "vmcore64.elf",
    # 32-bit guests (4-byte tree words, PAE page tables); both cores are ELF64
    "raw-tree32": "guest32.img",
    "raw-list32": "list32.img",
    "xc-core-tree32": "core32.core",
    "elf32": "vmcore32.elf",
    # the same core as an i386 host writes it: ELFCLASS32, EM_386 (made at test
    # time by :func:`elf_class32`; vmcore32's sidecar)
    "elf-class32": "vmcore32.elf",
}
#: 32-bit kinds run one in this many of their grid's cases (the 64-bit kinds all) ...
SUBSET32 = 4
#: ... and scan on one in this many of those (its trial walks of a 32-bit tree
#: cover 2^20 mid slots: ~0.3 s a run)
SCAN32 = 4
GARBAGE = 0x5A5A_1234_DEAD_BEEF


@dataclass(frozen=True)
class Case:
    name: str
    kind: str
    #: (file offset, bytes) written over a copy of the fixture
    patches: tuple = ()
    commands: tuple = ("walk",)
    #: the sidecar (raw fixtures) is copied beside the image
    sidecar: bool = False
    args: tuple = ()
    #: cut the damaged copy to this many bytes
    truncate: int | None = None
    #: (file offset, bytes) inserted into the copy, after the patches
    inserts: tuple = ()
    #: (command, exit code, text the output must hold) asserted by the tests
    expect: tuple = ()

    @property
    def fixture(self) -> str:
        return FIXTURES[self.kind]

    @property
    def source(self) -> str:
        """The clean file the case damages."""
        return clean_file(self.kind)


@dataclass
class Outcome:
    case: Case
    #: command -> (exit code, output)
    runs: dict = field(default_factory=dict)


def clean_file(kind: str) -> str:
    """The undamaged file of ``kind``."""
    if kind in SAVE_SPECS:
        return save_stream(kind)
    if kind == "elf-class32":
        return elf_class32()
    return fixture_path(FIXTURES[kind])


_MADE: dict = {}


def elf_class32() -> str:
    """vmcore32.elf rewritten as an ELFCLASS32 EM_386 core (the 52-byte header
    and 32-byte program headers of the schemas, the frames where they were),
    made once per process."""
    if "elf-class32" not in _MADE:
        import atexit
        import tempfile

        with open(fixture_path("vmcore32.elf"), "rb") as fh:
            data = fh.read()
        eh = E.Elf64_Ehdr.parse(data)
        phs = [E.Elf64_Phdr.parse(data[eh.e_phoff + i * eh.e_phentsize:])
               for i in range(eh.e_phnum)]
        ident = dict(eh.e_ident, ei_class=E.ELFCLASS32)
        head = E.Elf32_Ehdr.build(dict(
            eh, e_ident=ident, e_machine=E.EM_386, e_phoff=E.EHDR_SIZE[E.ELFCLASS32],
            e_ehsize=E.EHDR_SIZE[E.ELFCLASS32], e_phentsize=E.PHDR_SIZE[E.ELFCLASS32]))
        head += b"".join(E.Elf32_Phdr.build(ph) for ph in phs)
        first = min(ph.p_offset for ph in phs)
        assert len(head) <= first
        folder = tempfile.mkdtemp(prefix="p2mdump-corpus-")
        atexit.register(shutil.rmtree, folder, True)
        path = _MADE["elf-class32"] = os.path.join(folder, "vmcore32-class32.elf")
        with open(path, "wb") as fh:
            fh.write(head + bytes(first - len(head)) + data[first:])
    return _MADE["elf-class32"]


def _h(name: str) -> int:
    return zlib.crc32(name.encode())


def _commands(name: str, extra=("verify", "scan", "info", "extract")) -> tuple:
    return ("walk",) + (tuple(extra) if _h(name) % SUBSET == 0 else ())


def _sidecar(kind: str) -> dict:
    with open(fixture_path(FIXTURES[kind]) + ".json") as fh:
        return json.load(fh)


def _walk_args(kind: str) -> tuple:
    if kind.startswith("elf"):
        return ("--top-mfn", str(_sidecar(kind)["top_mfn"]))
    return ()


def _case(name, kind, patches, commands=None) -> Case:
    return Case(name=f"{kind}/{name}", kind=kind, patches=tuple(patches),
                commands=commands or _commands(f"{kind}/{name}"),
                sidecar=kind.startswith("raw"), args=_walk_args(kind))


def struct_fields(schema: Struct, base: int = 0):
    """[(name, offset, size)] of the named integer fields of a Construct
    struct (nested structs flattened, constants and unnamed padding left out)."""
    out, off = [], base
    for sc in schema.subcons:
        inner = getattr(sc, "subcon", None)
        size = sc.sizeof()
        if isinstance(inner, Struct):
            out += struct_fields(inner, off)
        elif sc.name and not isinstance(sc, Const) and not isinstance(inner, Const):
            out.append((sc.name, off, size))
        off += size
    return out


def _values(size: int, file_size: int) -> dict:
    """0, the field's maximum, and past the end of the file (clipped to the field)."""
    top = (1 << (8 * size)) - 1
    return {"0": 0, "max": top, "past-end": min(file_size + PAGE_SIZE, top)}


def _put(offset: int, size: int, value: int):
    return (offset, value.to_bytes(size, "little"))


# -- containers: ELF header, section headers, program headers, notes --------------

def elf_cases(kind: str) -> list[Case]:
    path = clean_file(kind)
    size = os.path.getsize(path)
    cases = []
    with open_image(path) as src:
        eh, cls = src.ehdr, src.ei_class
        sections = [(s.index, s.name or f"s{s.index}") for s in src.sections]
        segs = len(src.segments)
        loads = list(getattr(src, "loads", []))
        notes = getattr(src, "note_list", [])
        note_sec = src.section(X.SEC_NOTE)
        p2m = getattr(src, "p2m_sec", None)
        nr = getattr(src, "nr_pages", 0)
    for name, off, sz in struct_fields(E.EHDR[cls]):
        for vn, v in _values(sz, size).items():
            cases.append(_case(f"ehdr.{name}={vn}", kind, [_put(off, sz, v)],
                               _commands(f"{kind}/ehdr.{name}={vn}", ("info", "scan"))))
    for idx, sname in sections:
        for name, off, sz in struct_fields(E.SHDR[cls], eh.e_shoff + idx * eh.e_shentsize):
            for vn, v in _values(sz, size).items():
                cases.append(_case(f"shdr[{sname}].{name}={vn}", kind, [_put(off, sz, v)]))
    for idx in range(segs):
        for name, off, sz in struct_fields(E.PHDR[cls], eh.e_phoff + idx * eh.e_phentsize):
            for vn, v in _values(sz, size).items():
                cases.append(_case(f"phdr[{idx}].{name}={vn}", kind, [_put(off, sz, v)]))
    for seg in loads[-1:] if cls == E.ELFCLASS64 else ():
        # the segment (or its zero fill) reaching the largest machine address
        at = eh.e_phoff + seg.index * eh.e_phentsize
        fields = {n: (o, z) for n, o, z in struct_fields(E.PHDR[cls], at)}
        for name, v in (("p_memsz", MACHINE_ADDRESS_LIMIT - seg.paddr),
                        ("p_paddr", MACHINE_ADDRESS_LIMIT - seg.memsz)):
            cases.append(_case(f"phdr[{seg.index}].{name}=to-limit", kind,
                               [_put(*fields[name], v)], COMMANDS))
    if note_sec is not None:
        for n in notes:
            at = note_sec.offset + n["offset"]
            for name, off, sz in struct_fields(E.Elf_Nhdr, at):
                for vn, v in _values(sz, size).items():
                    cases.append(_case(f"note[{n['type_name']}].{name}={vn}", kind,
                                       [_put(off, sz, v)]))
            if n["type_name"] == "HEADER":
                desc = at + E.NHDR_SIZE + E.note_pad(4)
                for name, off, sz in struct_fields(X.HeaderDesc, desc):
                    for vn, v in _values(sz, size).items():
                        cases.append(_case(f"xch.{name}={vn}", kind, [_put(off, sz, v)]))
    if p2m is not None:
        for pair in sorted({0, 1, nr // 2, nr - 1}):
            for half, hoff in (("pfn", 0), ("gmfn", 8)):
                for vn, v in dict(_values(8, size), huge=1 << 63).items():
                    cases.append(_case(f"xen_p2m[{pair}].{half}={vn}", kind,
                                       [_put(p2m.offset + pair * 16 + hoff, 8, v)]))
    return cases


# -- frames of a fixture: where MFN m lies in the file ----------------------------

def frame_offset(src, mfn: int) -> int | None:
    from p2mdump.sources.elf import ElfCoreSource
    from p2mdump.sources.raw import RawImage
    from p2mdump.sources.xc_core import XcCoreSource

    if isinstance(src, RawImage):
        return src.base + mfn * PAGE_SIZE
    if isinstance(src, XcCoreSource):
        page = src.page_of(mfn)
        return None if page < 0 else src.pages.offset + page * PAGE_SIZE
    if isinstance(src, ElfCoreSource):
        addr = mfn * PAGE_SIZE
        for s in src.loads:
            if s.paddr <= addr < s.paddr + s.filesz:
                return s.offset + addr - s.paddr
    return None


def _words(src, mfn, ws):
    import numpy as np

    return np.frombuffer(src.read_frame(mfn), dtype=layout_for(ws).numpy_dtype)


def tree_cases(kind: str) -> list[Case]:
    """Top and mid slots set to 0, ~0, past the end, to their own page, to
    another level; placeholders damaged."""
    side = _sidecar(kind)
    ws, top = side["word_size"], side["top_mfn"]
    L = layout_for(ws)
    ph = side["placeholders"]
    cases = []
    with open_image(clean_file(kind)) as src:
        limit = src.frame_limit()
        T = _words(src, top, ws)
        real = [i for i, m in enumerate(T.tolist()) if m != ph["mid_missing"]]
        mid = int(T[real[0]])
        M = _words(src, mid, ws)
        leaf = int(M[0])
        other_mid = int(T[real[-1]])
        pages = {"top": (top, sorted({real[0], real[-1], len(T) - 1})),
                 "mid": (mid, sorted({0, 1, len(M) // 2, len(M) - 1}))}
        for level, (mfn, slots) in pages.items():
            base = frame_offset(src, mfn)
            values = {"0": 0, "~0": L.word_mask, "past-end": limit + 7, "self": mfn,
                      "leaf": leaf, "top": top, "other-mid": other_mid,
                      "placeholder": ph["mid_missing"] if level == "top" else ph["leaf_missing"]}
            for slot in slots:
                for vn, v in values.items():
                    cases.append(_case(f"{level}[{slot}]={vn}", kind,
                                       [_put(base + slot * ws, ws, v)]))
        # placeholders: a word of the missing / identity leaf, a mid placeholder slot
        for pname in ("leaf_missing", "leaf_identity"):
            base = frame_offset(src, ph[pname])
            for slot in (0, len(T) // 2):
                for vn, v in {"0": 0, "garbage": GARBAGE & L.word_mask, "mfn": leaf,
                              "invalid": L.invalid}.items():
                    cases.append(_case(f"{pname}[{slot}]={vn}", kind,
                                       [_put(base + slot * ws, ws, v)]))
        base = frame_offset(src, ph["mid_missing"])
        for slot in (0, len(M) - 1):
            for vn, v in {"0": 0, "~0": L.word_mask, "leaf": leaf, "self": ph["mid_missing"],
                          "top": top, "identity": ph["leaf_identity"]}.items():
                cases.append(_case(f"mid_missing[{slot}]={vn}", kind,
                                   [_put(base + slot * ws, ws, v)]))
    return cases


def list_cases(kind: str) -> list[Case]:
    """Entries on the page-table path of p2m_vaddr (and of a later list page)
    set to 0, ~0, past the end, to their own table, to the root table."""
    side = _sidecar(kind)
    cases = []
    with open_image(clean_file(kind)) as src:
        limit = src.frame_limit()
        tr = translator_for_cr3(src, side["p2m_cr3"], side["word_size"])
        root = tr.root_mfn
        seen = set()
        for k in sorted({0, side["list_pages"] - 1}):
            t = tr.translate(side["p2m_vaddr"] + k * PAGE_SIZE)
            for step in t.path:
                if (step.table_mfn, step.index) in seen:
                    continue
                seen.add((step.table_mfn, step.index))
                at = frame_offset(src, step.table_mfn) + step.index * 8
                flags = step.entry & 0xFFF
                values = {"0": 0, "~0": (1 << 64) - 1, "not-present": step.entry & ~PTE_PRESENT,
                          "past-end": ((limit + 7) << 12) | flags,
                          "self": (step.table_mfn << 12) | flags, "root": (root << 12) | flags,
                          "garbage": GARBAGE}
                for vn, v in values.items():
                    cases.append(_case(f"pt-l{step.level}[{step.table_mfn:#x}:{step.index}]"
                                       f"={vn}", kind, [_put(at, 8, v)]))
            if t.mfn is not None:
                at = frame_offset(src, t.mfn)
                for vn, v in {"0": 0, "garbage": GARBAGE, "~0": (1 << 64) - 1}.items():
                    cases.append(_case(f"listpage{k}[0]={vn}", kind, [_put(at, 8, v)]))
    return cases


def shared_info_cases(kind: str) -> list[Case]:
    """The arch_shared_info fields set to 0, their maximum, garbage."""
    side = _sidecar(kind)
    ws = side["word_size"]
    with open_image(clean_file(kind)) as src:
        if kind.startswith("xc-core"):
            si = src.section(X.SEC_SHARED_INFO).offset
        elif side.get("shared_info_mfn") is not None:
            si = frame_offset(src, side["shared_info_mfn"])
        else:
            return []
    cases = []
    for i, name in enumerate(X.ARCH_FIELDS):
        at = si + X.ARCH_SHARED_INFO_OFFSET[ws] + i * ws
        for vn, v in {"0": 0, "max": (1 << (8 * ws)) - 1, "garbage": GARBAGE,
                      "odd": 3}.items():
            cases.append(_case(f"arch.{name}={vn}", kind, [_put(at, ws, v & ((1 << 8 * ws) - 1))],
                               ("walk", "verify", "scan", "info", "extract")
                               if _h(name + vn) % 2 == 0 else ("walk", "scan")))
    return cases


# -- truncation: the file cut at every structure boundary --------------------------
#
# Where the structures lie is read here with the schemas and the sidecar, not
# with p2mdump's readers: the ELF header and its tables, the sections and
# segments, the frames of the tree's levels, the page tables and pages of a
# linear list.

@dataclass
class FileMap:
    """The structures of a clean fixture, by file offset."""
    size: int
    #: ELF containers: the schema-parsed header, [(index, name, shdr)], [(index, phdr)]
    ehdr: object = None
    shdrs: list = field(default_factory=list)
    phdrs: list = field(default_factory=list)
    ei_class: int = 0
    #: mfn -> file offset of the frames the file holds
    frames: dict = field(default_factory=dict)


def file_map(kind: str) -> FileMap:
    with open(clean_file(kind), "rb") as fh:
        data = fh.read()
    fm = FileMap(len(data))
    if kind.startswith("raw"):
        base = _sidecar(kind)["base"]
        fm.frames = {m: base + m * PAGE_SIZE for m in range((len(data) - base) // PAGE_SIZE)}
        return fm
    ident = E.ElfIdent.parse(data)
    fm.ei_class = ident.ei_class
    eh = fm.ehdr = E.EHDR[ident.ei_class].parse(data)
    raw = [E.SHDR[ident.ei_class].parse(data[eh.e_shoff + i * eh.e_shentsize:])
           for i in range(eh.e_shnum)]
    names = data[raw[eh.e_shstrndx].sh_offset:][:raw[eh.e_shstrndx].sh_size] if raw else b""
    fm.shdrs = [(i, names[sh.sh_name:].split(b"\0", 1)[0].decode(), sh)
                for i, sh in enumerate(raw)]
    fm.phdrs = [(i, E.PHDR[ident.ei_class].parse(data[eh.e_phoff + i * eh.e_phentsize:]))
                for i in range(eh.e_phnum)]
    sec = {name: sh for _, name, sh in fm.shdrs}
    if X.SEC_P2M in sec:
        p2m, pages = sec[X.SEC_P2M], sec[X.SEC_PAGES]
        for k in range(p2m.sh_size // X.P2M_PAIR_SIZE):
            pair = X.XenDumpcoreP2m.parse(data[p2m.sh_offset + k * X.P2M_PAIR_SIZE:])
            fm.frames.setdefault(pair.gmfn, pages.sh_offset + k * PAGE_SIZE)
    for _, ph in fm.phdrs:
        if ph.p_type == E.PT_LOAD:
            for a in range(0, ph.p_filesz, PAGE_SIZE):
                fm.frames[(ph.p_paddr + a) // PAGE_SIZE] = ph.p_offset + a
    return fm


def _page_words(path: str, offset: int, ws: int) -> list:
    from p2mdump.schemas import p2m as P

    with open(path, "rb") as fh:
        fh.seek(offset)
        page = fh.read(PAGE_SIZE)
    return list(P.top_page(ws).parse(page).mid_mfns)


def tree_frames(kind: str, fm: FileMap) -> dict:
    """{name: mfn} of the pages of each tree level: the top page, every mid
    page, the first, middle and last leaf, the placeholders."""
    side = _sidecar(kind)
    ws, top, ph = side["word_size"], side["top_mfn"], side["placeholders"]
    path = clean_file(kind)
    mids = [m for m in dict.fromkeys(_page_words(path, fm.frames[top], ws))
            if m != ph["mid_missing"]]
    leaves = [m for mid in mids for m in dict.fromkeys(_page_words(path, fm.frames[mid], ws))
              if m not in (ph["leaf_missing"], ph["leaf_identity"])]
    out = {"top": top}
    out.update({f"mid{i}": m for i, m in enumerate(mids)})
    out.update({f"leaf{i}": leaves[i] for i in sorted({0, len(leaves) // 2, len(leaves) - 1})})
    out.update(ph)
    return out


def list_frames(kind: str, fm: FileMap) -> dict:
    """{name: mfn} of the page-table pages on the list's paths (every level)
    and of the first, middle and last list page, the list placeholders."""
    from p2mdump.paging import MODES, pte_frame

    side = _sidecar(kind)
    mode = MODES[side["paging"]]
    path = clean_file(kind)
    out = dict(side["list_placeholders"])
    n = side["list_pages"]
    for k in range(n):
        vaddr = side["p2m_vaddr"] + k * PAGE_SIZE
        table = side["root_mfn"]
        for level in range(mode.levels, 0, -1):
            out.setdefault(f"pt-l{level}@{table:#x}", table)
            with open(path, "rb") as fh:
                fh.seek(fm.frames[table] + mode.index(vaddr, level) * 8)
                table = pte_frame(int.from_bytes(fh.read(8), "little"))
        if k in (0, n // 2, n - 1):
            out[f"listpage{k}"] = table
    return out


def _cuts(kind: str, fm: FileMap) -> dict:
    """{file offset: name} of the places to cut ``kind``: the start and the
    middle of every structure (names joined by ``+`` where two meet)."""
    cuts: dict = {}

    def at(name, off, size):
        if not size:
            return
        for where, o in (("start", off), ("middle", off + size // 2))[:1 + (size > 1)]:
            cuts[o] = f"{cuts[o]}+{name}-{where}" if o in cuts else f"{name}-{where}"

    if fm.ehdr is not None:
        eh = fm.ehdr
        cuts.update({0: "empty", 8: "in-ident", 40: "in-ehdr"})
        at("shdr-table", eh.e_shoff, eh.e_shnum * eh.e_shentsize)
        at("phdr-table", eh.e_phoff, eh.e_phnum * eh.e_phentsize)
        for i, name, sh in fm.shdrs:
            if sh.sh_size:
                at(f"sec{i}{name}", sh.sh_offset, sh.sh_size)
        for i, ph in fm.phdrs:
            at(f"seg{i}", ph.p_offset, ph.p_filesz)
    else:
        cuts.update({0: "empty", PAGE_SIZE // 2: "in-frame0"})
    pages = tree_frames(kind, fm) if "tree" in kind or kind.startswith("elf") else \
        list_frames(kind, fm)
    for name, mfn in pages.items():
        at(name, fm.frames[mfn], PAGE_SIZE)
    return {off: name for off, name in sorted(cuts.items()) if off < fm.size}


def truncation_cases(kind: str) -> list[Case]:
    """``kind`` cut at every structure boundary, each with its outcome."""
    fm = file_map(kind)
    cases = []
    for off, name in _cuts(kind, fm).items():
        full = f"{kind}/cut-{name}@{off:#x}"
        commands = tuple(dict.fromkeys(("walk", "verify", "extract", "info") + _commands(full)))
        cases.append(Case(name=full, kind=kind, commands=commands, truncate=off,
                          sidecar=kind.startswith("raw"), args=_walk_args(kind),
                          expect=tuple(truncation_outcome(kind, fm, off))))
    return cases


def truncation_outcome(kind: str, fm: FileMap, cut: int) -> list:
    """[(command, exit code, text)] a file of ``kind`` cut at ``cut`` must
    give: the first structure the cut leaves incomplete decides."""
    code, text = (3, "empty file") if cut == 0 else _cut_container(kind, fm, cut)
    if code:
        return [(cmd, code, text)
                for cmd in ("walk", "verify", "extract") + (("info",) if code == 3 else ())]
    # the frames: a lost top page or page table ends the walk (each fixture's list lies
    # under one table of each level), a lost page below it is a finding
    frames = {m for m, off in fm.frames.items() if off + PAGE_SIZE <= cut}
    lost: list = []
    if "list" in kind:
        from p2mdump.paging import MODES

        side = _sidecar(kind)
        pages = list_frames(kind, fm)
        tables = [m for name, m in pages.items() if name.startswith("pt-")]
        assert len(tables) == MODES[side["paging"]].levels, "one table a level"
        if side["root_mfn"] not in frames:
            code, text = 4, f"top page-table MFN {side['root_mfn']:#x} is not in the image"
        elif any(t not in frames for t in tables):
            code, text = 4, "map no page of the list at p2m_vaddr"
        else:
            lost = [m for name, m in pages.items() if m not in frames]
            text = "warning: unreadable-frame: list page frame MFN" if lost else ""
    else:
        pages = tree_frames(kind, fm)
        if pages["top"] not in frames:
            code, text = 4, f"top MFN {pages['top']:#x} is not in the image"
        else:
            lost = sorted(m for m in pages.values() if m not in frames)
            text = "warning: unreadable-frame: " if lost else ""
    return [("walk", code, text), ("verify", code or (1 if lost else 0), text),
            ("extract", code, text)]


def _cut_container(kind: str, fm: FileMap, cut: int) -> tuple:
    """(3, message) when the cut leaves the container's headers, tables,
    sections or PT_LOAD segments incomplete, in the order they are checked;
    (0, "") when they are whole."""
    if fm.ehdr is None:
        return (3, f"{cut} bytes hold no whole 4096-byte frame") if cut < PAGE_SIZE else (0, "")
    eh = fm.ehdr
    if cut < E.EI_NIDENT:
        return 3, f"truncated ELF header: {cut} bytes, e_ident needs {E.EI_NIDENT}"
    if cut < eh.e_ehsize:
        return 3, (f"truncated ELF header: {cut} bytes, ELFCLASS{fm.ei_class * 32} needs "
                   f"{eh.e_ehsize}")
    if eh.e_shnum and eh.e_shoff + eh.e_shnum * eh.e_shentsize > cut:
        return 3, f"shdr table (e_shoff, {eh.e_shnum} entries): offset {eh.e_shoff:#x}"
    if fm.shdrs:
        st = fm.shdrs[eh.e_shstrndx][2]
        if st.sh_offset + st.sh_size > cut:
            return 3, f"section {eh.e_shstrndx} (string table): offset {st.sh_offset:#x}"
    for i, name, sh in fm.shdrs:
        if sh.sh_type != E.SHT_NULL and sh.sh_offset + sh.sh_size > cut:
            return 3, f"section {i} {name} (sh_offset, sh_size): offset {sh.sh_offset:#x}"
    if eh.e_phnum and eh.e_phoff + eh.e_phnum * eh.e_phentsize > cut:
        return 3, f"phdr table (e_phoff, {eh.e_phnum} entries): offset {eh.e_phoff:#x}"
    for i, ph in fm.phdrs:
        if ph.p_type == E.PT_LOAD and ph.p_offset + ph.p_filesz > cut:
            return 3, f"PT_LOAD #{i} (p_offset, p_filesz): offset {ph.p_offset:#x}"
    return 0, ""


def _first_of_group(case: Case, seen: set) -> bool:
    """Whether ``case`` is the first of its kind's group (``top[``, ``ehdr.``,
    ``pt-l3``...) in ``seen``: a thinned kind keeps every group."""
    group = (case.kind, re.split(r"[\[.=]", case.name.split("/", 1)[1], maxsplit=1)[0])
    if group in seen:
        return False
    seen.add(group)
    return True


def _thin32(case: Case) -> Case:
    """A case of a 32-bit kind runs scan on one in :data:`SCAN32` of the
    cases that ask for it."""
    if not case.kind.endswith("32") or _h(case.name + "scan") % SCAN32 == 0:
        return case
    return Case(**dict(case.__dict__, commands=tuple(c for c in case.commands if c != "scan")))


def all_cases() -> list[Case]:
    cases = []
    for kind in ("xc-core-tree", "xc-core-list", "elf", "xc-core-tree32", "elf32",
                 "elf-class32"):
        cases += elf_cases(kind)
    for kind in ("raw-tree", "xc-core-tree", "elf", "raw-tree32", "xc-core-tree32", "elf32",
                 "elf-class32"):
        cases += tree_cases(kind)
    for kind in ("raw-list", "xc-core-list", "raw-list32"):
        cases += list_cases(kind)
    for kind in ("raw-list", "xc-core-tree", "xc-core-list", "raw-list32", "xc-core-tree32"):
        cases += shared_info_cases(kind)
    groups: set = set()
    cases = [c for c in cases if not c.kind.endswith("32")
             or _h(c.name + "/32") % SUBSET32 == 0 or _first_of_group(c, groups)]
    for kind in FIXTURES:
        cases += truncation_cases(kind)
    cases = [_thin32(c) for c in cases]
    names = [c.name for c in cases]
    assert len(names) == len(set(names)), "case names must be unique"
    return cases


# -- running a case -----------------------------------------------------------------

def materialise(case: Case, folder: str) -> str:
    """Write the damaged copy of the fixture in ``folder``; returns its path."""
    src = case.source
    dst = os.path.join(folder, os.path.basename(src))
    with open(src, "rb") as fh:
        data = bytearray(fh.read())
    for off, b in case.patches:
        data[off:off + len(b)] = b
    for off, b in sorted(case.inserts, reverse=True):
        data[off:off] = b
    if case.truncate is not None:
        del data[case.truncate:]
    with open(dst, "wb") as fh:
        fh.write(data)
    if case.sidecar:
        shutil.copyfile(src + ".json", dst + ".json")
    return dst


def command_args(cmd: str, image: str, case: Case, folder: str) -> list[str]:
    if cmd == "walk":
        return ["walk", image, *case.args, "-o", os.path.join(folder, "table.txt")]
    if cmd == "verify":
        return ["verify", image, *case.args]
    if cmd == "scan":
        return ["scan", image, "-q", "--json"]
    if cmd == "info":
        return ["info", image]
    if cmd == "extract":
        return ["extract", image, *case.args, "-o", os.path.join(folder, "pfns.bin")]
    if cmd == "lookup":
        return ["lookup", image, *case.args, "--pfn", hex(LOOKUP_PFN)]
    if cmd == "map":
        return ["map", image, *case.args, "-o", os.path.join(folder, "map.svg")]
    if cmd == "diff":
        return ["diff", image, case.source]
    raise ValueError(cmd)


#: the files a command writes (removed after each run; left behind on an error: a problem)
OUTPUTS = {"walk": "table.txt", "extract": "pfns.bin", "map": "map.svg"}


def run_case(case: Case, folder: str, runner=None) -> Outcome:
    """Run the case's commands in-process (click's CliRunner)."""
    from click.testing import CliRunner

    from p2mdump.cli import main

    runner = runner or CliRunner()
    image = materialise(case, folder)
    out = Outcome(case)
    before = set(os.listdir(folder))
    for cmd in case.commands:
        r = runner.invoke(main, command_args(cmd, image, case, folder))
        text = r.output
        if r.exception is not None and not isinstance(r.exception, SystemExit):
            text += f"\nTraceback: {type(r.exception).__name__}: {r.exception}"
        left = set(os.listdir(folder)) - before
        if r.exit_code >= 2 and left:
            text += f"\nLeft behind: {sorted(left)}"
        elif left - {OUTPUTS.get(cmd)}:
            text += f"\nLeft behind: {sorted(left - {OUTPUTS.get(cmd)})}"
        for name in left:
            os.unlink(os.path.join(folder, name))
        out.runs[cmd] = (r.exit_code, text)
    return out


def problems(outcome: Outcome) -> list[str]:
    """What in ``outcome`` breaks the rules for hostile input."""
    bad = []
    for cmd, (code, text) in outcome.runs.items():
        where = f"{outcome.case.name} {cmd}"
        if code not in EXIT_CODES:
            bad.append(f"{where}: exit {code}: {text.strip().splitlines()[-1:]}")
        if "Traceback" in text or "internal error" in text:
            bad.append(f"{where}: {text.strip().splitlines()[-1:]}")
        if "\nLeft behind: " in text:
            bad.append(f"{where}: exit {code}, {text[text.index('Left behind'):]}")
        if code >= 2:
            errors = [ln for ln in text.splitlines() if ln.startswith("error:")]
            if len(errors) != 1:
                bad.append(f"{where}: exit {code} with {len(errors)} error: lines")
    return bad


def exit_counts(outcomes) -> dict:
    """{exit code: runs} over all the runs of ``outcomes``."""
    counts: dict = {}
    for o in outcomes:
        for code, _ in o.runs.values():
            counts[code] = counts.get(code, 0) + 1
    return dict(sorted(counts.items()))


# -- xl save streams ----------------------------------------------------------------
#
# Small save files generated at test time by the writer (a tree and a list guest
# at each width, 240 pages with data, three p2m frames), then damaged: header
# fields, record lengths, PAGE_DATA counts and pfn words, X86_PV_INFO,
# X86_PV_P2M_FRAMES, SHARED_INFO, truncation at and inside every record,
# inserted unknown records, a domain config that is not JSON.

#: save stream kinds -> the writer's GuestSpec arguments (about 1 MB each)
SAVE_SPECS = {
    "save-tree64": dict(word_size=8, max_pfn=0x480, ballooned=[(0xC0, 0x440)],
                        identity=[(0xA0, 0xB0)], mfn_order="shuffled", seed=1),
    "save-tree32": dict(word_size=4, max_pfn=0x880, ballooned=[(0xC0, 0x840)],
                        identity=[(0xA0, 0xB0)], mfn_order="shuffled", seed=2),
    "save-list64": dict(word_size=8, representation="list", max_pfn=0x480,
                        ballooned=[(0xC0, 0x440)], identity=[(0xA0, 0xB0)],
                        mfn_order="shuffled", seed=3),
    "save-list32": dict(word_size=4, representation="list", max_pfn=0x880,
                        ballooned=[(0xC0, 0x840)], identity=[(0xA0, 0xB0)],
                        mfn_order="shuffled", seed=4),
}
#: the commands that read save files
SAVE_COMMANDS = ("walk", "verify", "lookup", "extract", "info", "map", "diff")
#: kinds that get the whole grid; the others the records, truncation and insertions
SAVE_FULL = ("save-tree64", "save-list32")
#: the pfn looked up by ``lookup --pfn`` (a valid pfn of every save stream)
LOOKUP_PFN = 0x5
#: a record type no Xen defines (bit 31: the optional form)
UNKNOWN_TYPE = 0x7F


@dataclass(frozen=True)
class SaveRecord:
    layer: str        # "libxl" or "libxc"
    index: int        # in stream order, both layers counted (as the reader counts)
    offset: int
    rtype: int
    length: int

    @property
    def body(self) -> int:
        return self.offset + 8

    @property
    def end(self) -> int:
        from p2mdump.schemas.xl_save import padded_length

        return self.body + padded_length(self.length)


@dataclass(frozen=True)
class SaveLayout:
    """Where the parts of a save file lie (read here with the schemas, not the reader)."""
    size: int
    config: int        # offset of the u32 config length
    config_len: int
    libxl: int         # the libxl stream header
    libxc: int         # the libxc image header (the domain header follows)
    records: tuple

    def of_type(self, layer: str, rtype: int) -> list:
        return [r for r in self.records if r.layer == layer and r.rtype == rtype]


_SAVE_DIR: dict = {}


def save_stream(kind: str) -> str:
    """The clean save file of ``kind``, generated once per process."""
    if kind not in _SAVE_DIR:
        import tempfile

        from p2mdump.writer import GuestSpec
        from p2mdump.writer.xlsave import generate_xl_save

        import atexit

        folder = tempfile.mkdtemp(prefix="p2mdump-corpus-")
        atexit.register(shutil.rmtree, folder, True)
        path = os.path.join(folder, f"{kind}.save")
        generate_xl_save(GuestSpec(**SAVE_SPECS[kind]), path,
                         truth=os.path.join(folder, f"{kind}.truth"))
        _SAVE_DIR[kind] = path
    return _SAVE_DIR[kind]


def save_layout(data: bytes) -> SaveLayout:
    """The headers and records of a clean save file (xl entry)."""
    from p2mdump.schemas import xl_save as S

    xl = S.XlHeader.parse(data)
    config = S.XL_HEADER_SIZE
    clen = S.XlConfigLength.parse(data[config:]).config_len
    libxl = S.XL_HEADER_SIZE + xl.optional_data_len
    off, layer, libxc, records = libxl + S.LIBXL_HEADER_SIZE, "libxl", None, []
    while off + 8 <= len(data):
        h = S.RecordHeader.parse(data[off:])
        r = SaveRecord(layer, len(records), off, h.type, h.length)
        records.append(r)
        off = r.end
        if layer == "libxl" and h.type == S.LIBXL_REC_LIBXC_CONTEXT:
            libxc, layer = off, "libxc"
            off += S.LIBXC_IMAGE_HEADER_SIZE + S.LIBXC_DOMAIN_HEADER_SIZE
        elif layer == "libxc" and h.type == S.REC_END:
            layer = "libxl"
        elif layer == "libxl" and h.type == S.LIBXL_REC_END:
            break
    return SaveLayout(len(data), config, clen, libxl, libxc, tuple(records))


def ordered_fields(schema: Struct, base: int = 0):
    """[(name, offset, size, byte order)] of a struct's integer fields (as
    :func:`struct_fields`, with each field's byte order)."""
    out = []
    for name, off, size in struct_fields(schema, base):
        sub = next(sc for sc in schema.subcons if sc.name == name)
        fmt = getattr(getattr(sub, "subcon", sub), "fmtstr", "<")
        out.append((name, off, size, "big" if fmt[0] == ">" else "little"))
    return out


def _put_order(offset: int, size: int, value: int, order: str):
    return (offset, value.to_bytes(size, order))


def _save_case(name, kind, patches=(), commands=None, truncate=None, inserts=(),
               expect=()) -> Case:
    full = f"{kind}/{name}"
    return Case(name=full, kind=kind, patches=tuple(patches),
                commands=commands or _save_commands(full), truncate=truncate,
                inserts=tuple(inserts), expect=tuple(expect))


#: save cases run walk; one in this many runs every command
SAVE_SUBSET = 6


def _save_commands(name: str) -> tuple:
    return ("walk",) + (SAVE_COMMANDS[1:] if _h(name) % SAVE_SUBSET == 0 else ())


def _header_cases(kind: str, lay: SaveLayout) -> list:
    from p2mdump.schemas import xl_save as S

    past = lay.size + PAGE_SIZE
    groups = (("xl", S.XlHeader, 0), ("libxl", S.LibxlHeader, lay.libxl),
              ("libxc", S.LibxcImageHeader, lay.libxc),
              ("domain", S.LibxcDomainHeader, lay.libxc + S.LIBXC_IMAGE_HEADER_SIZE),
              ("xl.config", S.XlConfigLength, lay.config))
    cases = []
    for group, schema, base in groups:
        for name, off, size, order in ordered_fields(schema, base):
            top = (1 << (8 * size)) - 1
            was = int.from_bytes(open_bytes(kind, off, size), order)
            for vn, v in {"0": 0, "max": top, "past-end": min(past, top)}.items():
                if v != was:
                    cases.append(_save_case(f"{group}.{name}={vn}", kind,
                                            [_put_order(off, size, v, order)]))
    return cases


def _record_cases(kind: str, lay: SaveLayout) -> list:
    """Every record's length set to 0, to its maximum, past the end, off by 8."""
    cases = []
    for r in lay.records:
        tag = f"rec[{r.index}:{r.layer}:{r.rtype:#x}]"
        values = {"0": 0, "max": 0xFFFF_FFFF, "past-end": lay.size,
                  "+8": r.length + 8, "-8": max(r.length - 8, 0) if r.length else 4}
        for vn, v in values.items():
            if vn != "0" and v == 0 or (vn == "0" and r.length == 0):
                continue
            cases.append(_save_case(f"{tag}.length={vn}", kind, [_put(r.offset + 4, 4, v)]))
    return cases


def _truncation_cases(kind: str, lay: SaveLayout) -> list:
    """The file cut at every record boundary, inside every record header and body."""
    from p2mdump.schemas import xl_save as S

    p2m = lay.of_type("libxc", S.REC_X86_PV_P2M_FRAMES)[0]
    cases = []
    for r in lay.records:
        tag = f"rec[{r.index}:{r.layer}:{r.rtype:#x}]"
        cuts = {"at": r.offset, "in-header": r.offset + 4}
        if r.length:
            cuts["in-body"] = r.body + r.length // 2
        for vn, cut in cuts.items():
            # cut before the p2m record is whole: no saved p2m; after: a finding
            walk = (4, "error: ") if cut < p2m.end else (0, "warning: save-truncated: ")
            name = f"cut-{vn}-{tag}"
            cases.append(_save_case(name, kind, truncate=cut,
                                    commands=tuple(dict.fromkeys(("walk", "info")
                                                                 + _save_commands(name))),
                                    expect=[("walk", *walk),
                                            ("info", 0, "warning: save-truncated: ")]))
    for vn, cut in (("in-xl-header", 20), ("in-config", lay.config + 8),
                    ("in-libxl-header", lay.libxl + 8), ("in-libxc-header", lay.libxc + 30),
                    ("empty", 0)):
        cases.append(_save_case(f"cut-{vn}", kind, truncate=cut))
    return cases


def _page_data_cases(kind: str, lay: SaveLayout) -> list:
    from p2mdump.schemas import xl_save as S

    recs = lay.of_type("libxc", S.REC_PAGE_DATA)
    cases = []
    for which, r in (("first", recs[0]), ("last", recs[-1])):
        count = int.from_bytes(open_bytes(kind, r.body, 4), "little")
        for vn, v in {"0": 0, "1025": 1025, "2^32-1": 0xFFFF_FFFF, "+1": count + 1,
                      "-1": count - 1}.items():
            kind_ = "save-page-count" if vn in ("0", "1025", "2^32-1") else "save-record-length"
            cases.append(_save_case(f"page_data[{which}].count={vn}", kind,
                                    [_put(r.body, 4, v)],
                                    expect=[("walk", 0, f"warning: {kind_}: record #")]))
        cases.append(_save_case(f"page_data[{which}].reserved=max", kind,
                                [_put(r.body + 4, 4, 0xFFFF_FFFF)]))
        words = r.body + S.PAGE_DATA_HEADER_SIZE
        for slot in sorted({0, count // 2, count - 1}):
            at = words + slot * 8
            word = int.from_bytes(open_bytes(kind, at, 8), "little")
            pfn, ptype = word & S.PAGE_DATA_PFN_MASK, word >> S.PAGE_DATA_TYPE_SHIFT
            values = {"reserved-bits": word | S.PAGE_DATA_RESERVED_MASK,
                      "pfn=2^40": S.pfn_word(1 << 40, ptype),
                      "pfn=2^52-1": S.pfn_word(S.PAGE_DATA_PFN_MASK, ptype),
                      "pfn=max_pfn": S.pfn_word(0x1_0000_0000, ptype),
                      "xtab": S.pfn_word(pfn, S.PFINFO_XTAB)}
            for t in S.PFINFO_INVALID:
                values[f"type={t}"] = S.pfn_word(pfn, t)
            for vn, v in values.items():
                if v == word:
                    continue
                expect = ()
                if vn.startswith("pfn=2^"):
                    expect = [("walk", 0, "warning: save-absurd-pfn: record #")]
                elif vn.startswith("type=") and S.has_page_data(ptype):
                    expect = [("walk", 0, "warning: save-bad-page-type: record #")]
                elif vn == "reserved-bits":
                    expect = [("walk", 0, "warning: save-reserved-bits: record #")]
                cases.append(_save_case(f"page_data[{which}].pfn[{slot}]={vn}", kind,
                                        [_put(at, 8, v)], expect=expect))
    return cases


def open_bytes(kind: str, offset: int, n: int) -> bytes:
    with open(save_stream(kind), "rb") as fh:
        fh.seek(offset)
        return fh.read(n)


def _pv_cases(kind: str, lay: SaveLayout) -> list:
    """X86_PV_INFO, X86_PV_P2M_FRAMES and SHARED_INFO contents."""
    from p2mdump.schemas import xl_save as S
    from p2mdump.schemas.xen_core import ARCH_FIELDS, ARCH_SHARED_INFO_OFFSET

    ws = SAVE_SPECS[kind]["word_size"]
    fpp = PAGE_SIZE // ws
    cases = []
    info = lay.of_type("libxc", S.REC_X86_PV_INFO)[0]
    for vn in (0, 3, 16):
        cases.append(_save_case(f"pv_info.guest_width={vn}", kind, [_put(info.body, 1, vn)],
                                expect=[("walk", 4, "no X86_PV_INFO record gives the guest's "
                                         "word size")]))
    cases.append(_save_case(f"pv_info.guest_width={12 - ws}", kind,
                            [_put(info.body, 1, 12 - ws)]))
    for vn in (0, 2, 5, 255):
        cases.append(_save_case(f"pv_info.pt_levels={vn}", kind, [_put(info.body + 1, 1, vn)]))
    fr = lay.of_type("libxc", S.REC_X86_PV_P2M_FRAMES)[0]
    start, end = (int.from_bytes(open_bytes(kind, fr.body + i, 4), "little") for i in (0, 4))
    frames = [int.from_bytes(open_bytes(kind, fr.body + 8 + 8 * i, 8), "little")
              for i in range((fr.length - 8) // 8)]
    ballooned = SAVE_SPECS[kind]["ballooned"][0][0] + 1
    cases.append(_save_case("p2m_frames.start>end", kind, [_put(fr.body, 4, end + 1)],
                            commands=("walk", "lookup"),
                            expect=[(cmd, 4, "past end_pfn") for cmd in ("walk", "lookup")]))
    mp = ARCH_FIELDS.index("max_pfn")
    si = lay.of_type("libxc", S.REC_SHARED_INFO)[0]
    arch = si.body + ARCH_SHARED_INFO_OFFSET[ws]
    cases.append(_save_case("p2m_frames.start=2^32-1,arch.max_pfn=0", kind,
                            [_put(fr.body, 4, 0xFFFF_FFFF), _put(fr.body + 4, 4, 0xFFFF_FFFF),
                             _put(arch + mp * ws, ws, 0)],
                            expect=[("walk", 0, "warning: table-beyond-image: ")]))
    for vn, (s, e) in {"start=end": (end, end),
                       "start=fpp": (fpp, end), "start=2^32-1": (0xFFFF_FFFF, 0xFFFF_FFFF),
                       "end=2^32-1": (start, 0xFFFF_FFFF), "end=0": (start, 0),
                       "end+fpp": (start, end + fpp), "end-fpp": (start, end - fpp)}.items():
        cases.append(_save_case(f"p2m_frames.{vn}", kind,
                                [_put(fr.body, 4, s), _put(fr.body + 4, 4, e)]))
    for slot in (0, len(frames) - 1):
        for vn, v in {"no-data": ballooned, "unsent": 0x10_0000, "2^52": 1 << 52,
                      "~0": (1 << 64) - 1, "other-frame": frames[(slot + 1) % len(frames)],
                      "pfn0": 0}.items():
            expect = ()
            if vn in ("no-data", "unsent", "2^52", "~0"):
                expect = [("walk", 0, "warning: save-p2m-frame-no-data: ")]
            cases.append(_save_case(f"p2m_frames.pfn[{slot}]={vn}", kind,
                                    [_put(fr.body + 8 + 8 * slot, 8, v)], expect=expect))
    for vn, v in {"0": 0, "2^63": 1 << 63, "huge": (1 << 40) + 1, "max": (1 << 64) - 1,
                  "+1": SAVE_SPECS[kind]["max_pfn"] + 1,
                  "+pmd": SAVE_SPECS[kind]["max_pfn"] + 512 * fpp,
                  "+pmd+1": SAVE_SPECS[kind]["max_pfn"] + 512 * fpp + 1}.items():
        v &= (1 << 8 * ws) - 1
        expect = [("walk", 0, "warning: save-p2m-short: " if v > SAVE_SPECS[kind]["max_pfn"]
                   else "info: save-p2m-record: " if v else "arch.max_pfn is 0")]
        cases.append(_save_case(f"shared_info.arch.max_pfn={vn}", kind,
                                [_put(arch + mp * ws, ws, v)], expect=expect))
    for name in ("p2m_cr3", "p2m_vaddr"):
        i = ARCH_FIELDS.index(name)
        cases.append(_save_case(f"shared_info.arch.{name}=max", kind,
                                [_put(arch + i * ws, ws, (1 << 8 * ws) - 1)]))
    return cases


def _insert_cases(kind: str, lay: SaveLayout) -> list:
    """Records no Xen writes, inserted before the libxc END; a config that is not JSON."""
    from p2mdump.schemas import xl_save as S

    end = lay.of_type("libxc", S.REC_END)[0]
    lend = lay.of_type("libxl", S.LIBXL_REC_END)[0]

    def record(rtype, body=b"", length=None):
        n = len(body) if length is None else length
        return S.RecordHeader.build({"type": rtype, "length": n}) + body + \
            bytes(S.padded_length(len(body)) - len(body))

    unknown = [("walk", 0, "warning: save-unknown-record: record #")]
    cases = [
        _save_case("insert-unknown-mandatory", kind, inserts=[(end.offset, record(
            UNKNOWN_TYPE, b"x" * 12))], expect=unknown),
        _save_case("insert-unknown-optional", kind, inserts=[(end.offset, record(
            UNKNOWN_TYPE | S.REC_TYPE_OPTIONAL, b"x" * 12))], expect=[("walk", 0, "")]),
        _save_case("insert-unknown-mandatory-huge", kind, inserts=[(end.offset, record(
            UNKNOWN_TYPE, length=0xFFFF_FFF0))],
            expect=[("walk", 0, "warning: save-truncated: record #")]),
        _save_case("insert-unknown-libxl", kind, inserts=[(lend.offset, record(0x77, b"y"))],
                   expect=unknown),
        _save_case("insert-second-p2m-frames", kind, inserts=[(end.offset, record(
            S.REC_X86_PV_P2M_FRAMES, bytes(8) + (1 << 52).to_bytes(8, "little")))]),
        _save_case("insert-many-unknown", kind, inserts=[(end.offset, b"".join(
            record(0x100 + i) for i in range(200)))],
            expect=unknown),
    ]
    text = lay.config + 4
    for vn, body in {"not-json": b"{ name = 'x' ", "not-utf8": b"\xff\xfe\x80",
                     "array": b"[1, 2]", "nested": b"[" * 64,
                     "no-nul": b"x"}.items():
        n = min(len(body), lay.config_len)
        patch = [(text, body[:n])]
        if vn == "no-nul":
            patch = [(text + lay.config_len - 1, b"x")]
        cases.append(_save_case(f"config={vn}", kind, patch,
                                commands=("walk", "info"),
                                expect=[(cmd, 0, "warning: save-config: xl header optional "
                                         "data at offset 0x34: ") for cmd in ("walk", "info")]))
    return cases


def save_cases() -> list[Case]:
    """The corpus of damaged save streams."""
    cases = []
    for kind in SAVE_SPECS:
        with open(save_stream(kind), "rb") as fh:
            lay = save_layout(fh.read())
        cases += _record_cases(kind, lay) + _truncation_cases(kind, lay)
        cases += _insert_cases(kind, lay) + _pv_cases(kind, lay)
        if kind in SAVE_FULL:
            cases += _header_cases(kind, lay) + _page_data_cases(kind, lay)
    names = [c.name for c in cases]
    assert len(names) == len(set(names)), "case names must be unique"
    return cases
