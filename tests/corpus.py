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
}
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

    @property
    def fixture(self) -> str:
        return FIXTURES[self.kind]


@dataclass
class Outcome:
    case: Case
    #: command -> (exit code, output)
    runs: dict = field(default_factory=dict)


def _h(name: str) -> int:
    return zlib.crc32(name.encode())


def _commands(name: str, extra=("verify", "scan", "info", "extract")) -> tuple:
    return ("walk",) + (tuple(extra) if _h(name) % SUBSET == 0 else ())


def _sidecar(kind: str) -> dict:
    with open(fixture_path(FIXTURES[kind]) + ".json") as fh:
        return json.load(fh)


def _walk_args(kind: str) -> tuple:
    if kind == "elf":
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
    path = fixture_path(FIXTURES[kind])
    size = os.path.getsize(path)
    cases = []
    with open_image(path) as src:
        eh = src.ehdr
        sections = [(s.index, s.name or f"s{s.index}") for s in src.sections]
        segs = len(src.segments)
        loads = list(getattr(src, "loads", []))
        notes = getattr(src, "note_list", [])
        note_sec = src.section(X.SEC_NOTE)
        p2m = getattr(src, "p2m_sec", None)
        nr = getattr(src, "nr_pages", 0)
    for name, off, sz in struct_fields(E.EHDR[E.ELFCLASS64]):
        for vn, v in _values(sz, size).items():
            cases.append(_case(f"ehdr.{name}={vn}", kind, [_put(off, sz, v)],
                               _commands(f"{kind}/ehdr.{name}={vn}", ("info", "scan"))))
    for idx, sname in sections:
        for name, off, sz in struct_fields(E.Elf64_Shdr, eh.e_shoff + idx * eh.e_shentsize):
            for vn, v in _values(sz, size).items():
                cases.append(_case(f"shdr[{sname}].{name}={vn}", kind, [_put(off, sz, v)]))
    for idx in range(segs):
        for name, off, sz in struct_fields(E.Elf64_Phdr, eh.e_phoff + idx * eh.e_phentsize):
            for vn, v in _values(sz, size).items():
                cases.append(_case(f"phdr[{idx}].{name}={vn}", kind, [_put(off, sz, v)]))
    for seg in loads[-1:]:
        # the segment (or its zero fill) reaching the largest machine address
        at = eh.e_phoff + seg.index * eh.e_phentsize
        fields = {n: (o, z) for n, o, z in struct_fields(E.Elf64_Phdr, at)}
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
        i = src._find(mfn)
        return None if i < 0 else src.pages.offset + int(src.index()[1][i]) * PAGE_SIZE
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
    with open_image(fixture_path(FIXTURES[kind])) as src:
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
    with open_image(fixture_path(FIXTURES[kind])) as src:
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
    with open_image(fixture_path(FIXTURES[kind])) as src:
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


def all_cases() -> list[Case]:
    cases = []
    for kind in ("xc-core-tree", "xc-core-list", "elf"):
        cases += elf_cases(kind)
    for kind in ("raw-tree", "xc-core-tree", "elf"):
        cases += tree_cases(kind)
    for kind in ("raw-list", "xc-core-list"):
        cases += list_cases(kind)
    for kind in ("raw-list", "xc-core-tree", "xc-core-list"):
        cases += shared_info_cases(kind)
    names = [c.name for c in cases]
    assert len(names) == len(set(names)), "case names must be unique"
    return cases


# -- running a case -----------------------------------------------------------------

def materialise(case: Case, folder: str) -> str:
    """Write the damaged copy of the fixture in ``folder``; returns its path."""
    src = fixture_path(case.fixture)
    dst = os.path.join(folder, os.path.basename(src))
    with open(src, "rb") as fh:
        data = bytearray(fh.read())
    for off, b in case.patches:
        data[off:off + len(b)] = b
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
    raise ValueError(cmd)


def run_case(case: Case, folder: str, runner=None) -> Outcome:
    """Run the case's commands in-process (click's CliRunner)."""
    from click.testing import CliRunner

    from p2mdump.cli import main

    runner = runner or CliRunner()
    image = materialise(case, folder)
    out = Outcome(case)
    for cmd in case.commands:
        r = runner.invoke(main, command_args(cmd, image, case, folder))
        text = r.output
        if r.exception is not None and not isinstance(r.exception, SystemExit):
            text += f"\nTraceback: {type(r.exception).__name__}: {r.exception}"
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
