"""Write a guest's pseudo-physical memory in pfn order, from any container.

For every pfn whose p2m entry is a machine frame of the guest (kind
``valid``) the frame is read from the image and written to the output:

* ``raw``: frame of pfn p at offset p*4096; the file is max_pfn*4096 bytes
  and every pfn not copied is a hole (sparse, reads as zeros);
* ``elf``: an ELF64 ET_CORE laid out as a kdump vmcore is: program header 0
  is a PT_NOTE whose segment (right after the program headers) holds one
  ``P2MDUMP`` note (:data:`~p2mdump.schemas.elf.P2mdumpOrigin`: what the
  file is and where it came from); then one PT_LOAD per run of consecutive
  copied pfns, p_paddr = pfn*4096 and p_vaddr = vaddr base + p_paddr (the
  guest kernel's direct map, so that gdb and drgn read kernel addresses;
  base 0 leaves every p_vaddr 0); data page-aligned and packed in pfn order.

Missing, identity and foreign pfns are not copied (they are not the guest's
RAM), nor are valid pfns whose frame the image does not hold; all are
counted and listed in the report.  Frames are read with large ``preadv``
runs of consecutive MFNs into an 8 MiB buffer and written with one
``pwrite`` per run of consecutive pfns.  The output is written atomically.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from .arrays import nonzero_pages, step_runs, true_runs
from .atomic import atomic_output, pwrite_all
from .crosscheck import pfn_ranges
from .errors import OptionError, OutputError
from .layout import PAGE_SIZE
from .paging import LINUX_DIRECT_MAP_BASE, X86_64
from .table import FOREIGN, IDENTITY, MISSING, VALID

FORMATS = ("raw", "elf")
BATCH = 256  # frames per buffer: 1 MiB
#: the representation an ELF output's note names for a plan from .xen_p2m
PAIRS_REPRESENTATION = "xen_p2m-pairs"


def default_vaddr_base(word_size: int) -> int:
    """The p_vaddr base of an ELF output when none is given: a 64-bit
    guest's Linux direct map; 0 (no virtual addresses) for a 32-bit guest,
    whose kernel maps only its low memory (below about 896 MiB) at
    PAGE_OFFSET, so that most pages of a big guest have no such address."""
    return LINUX_DIRECT_MAP_BASE if word_size == 8 else 0


def vaddr_base_problem(base: int, word_size: int | None = None, end: int = 0) -> str | None:
    """Why ``base`` cannot be the p_vaddr base of an ELF output, or None.

    Refused: a negative base, one not page-aligned or not a canonical x86-64
    address (4-level paging, as Xen PV guests have); with the guest's
    ``word_size`` and ``end`` (one past the highest physical address the
    PT_LOADs hold) also one that puts a page past the end of the guest's
    address space (4 GiB for a 32-bit guest, 2^64) or out of the canonical
    half of the base.  Base 0 (no virtual addresses) always fits."""
    if base < 0:
        return "negative"
    if base % PAGE_SIZE:
        return f"not page-aligned ({PAGE_SIZE:#x})"
    if not X86_64.canonical(base):
        return "not a canonical x86-64 address (4-level paging: bits 63-47 all 0 or all 1)"
    if base == 0 or end <= 0 or word_size is None:
        return None
    top = end - PAGE_SIZE                      # physical address of the highest page
    if word_size == 4 and base + end > 1 << 32:
        return (f"the highest page (physical {top:#x}) would be at {base + top:#x}, past the "
                "4 GiB address space of a 32-bit guest (use 0)")
    if base + end > 1 << 64:
        return f"the highest page (physical {top:#x}) would wrap past 2^64"
    half = X86_64.va_bits - 1
    last = base + end - 1
    if not X86_64.canonical(last) or (last >> half) != (base >> half):
        return (f"the highest page (physical {top:#x}) would be at {base + top:#x}, not a "
                "canonical address in the half of the base")
    return None


@dataclass
class Plan:
    """What to copy: valid pfns (ascending) and their MFNs, out of max_pfn pfns."""

    pfns: np.ndarray
    mfns: np.ndarray
    max_pfn: int
    word_size: int
    #: kind name -> sorted pfns not copied for that reason
    skipped: dict = field(default_factory=dict)
    source_note: str = ""
    #: where pfn -> mfn came from (the walk's representation, or
    #: PAIRS_REPRESENTATION), as an ELF output's note names it
    representation: str = "tree"

    @classmethod
    def from_table(cls, table, representation: str = "tree") -> "Plan":
        kinds = table.kinds()
        mfns = table.mfns()
        valid = np.flatnonzero(kinds == VALID)
        skipped = {name: np.flatnonzero(kinds == code)
                   for code, name in ((MISSING, "missing"), (IDENTITY, "identity"),
                                      (FOREIGN, "foreign"))}
        return cls(valid.astype(np.int64), mfns[valid].astype(np.uint64), len(table),
                   table.layout.word_size, skipped, f"the guest's p2m {representation}",
                   representation)

    @classmethod
    def from_pairs(cls, pfns, gmfns, max_pfn: int, word_size: int, *,
                   max_pfn_claimed: bool = False) -> "Plan":
        """From an xl dump-core's .xen_p2m pairs (first pair of a pfn wins).

        The plan spans no more pfns than the pairs' pages could fill as leaf
        pages (``len(pairs) * per_page``, at least
        :data:`~p2mdump.walker.TABLE_FLOOR`), the walker's rule: pairs past
        that are skipped as ``beyond-dump``, and a ``max_pfn`` read from the
        dump (``max_pfn_claimed``) is cut there; a user's ``max_pfn`` widens it.
        """
        from .walker import TABLE_FLOOR

        pfns = np.asarray(pfns, dtype=np.uint64)
        gmfns = np.asarray(gmfns, dtype=np.uint64)
        limit = max(len(pfns) * (PAGE_SIZE // word_size), TABLE_FLOOR)
        note = ""
        if not max_pfn_claimed:
            limit = max(limit, max_pfn or 0)
        elif (max_pfn or 0) > limit:
            note = (f"; arch.max_pfn {max_pfn:#x} is more than {len(pfns)} pairs can "
                    f"fill, cut to {limit:#x}")
            max_pfn = limit
        far = pfns >= np.uint64(limit)
        beyond = np.unique(pfns[far]).astype(np.int64)
        if len(beyond):
            pfns, gmfns = pfns[~far], gmfns[~far]
        del far
        top = int(pfns.max()) + 1 if len(pfns) else 0
        n = max(max_pfn or 0, top)
        if len(pfns) < 2 or bool((pfns[1:] > pfns[:-1]).all()):
            # Xen's order (ascending, no pfn twice): the pairs are the plan
            p, g = pfns.view(np.int64), gmfns
        else:
            order = np.argsort(pfns, kind="stable")
            p, g = pfns[order], gmfns[order]
            del order
            first = np.ones(len(p), dtype=bool)
            first[1:] = p[1:] != p[:-1]
            p, g = p[first].astype(np.int64), g[first]
        have = np.zeros(n, dtype=bool)
        have[p] = True
        skipped = {"missing": np.flatnonzero(~have)}
        if len(beyond):
            skipped["beyond-dump"] = beyond
        return cls(p, g, n, word_size, skipped, "the dump's .xen_p2m pairs" + note,
                   PAIRS_REPRESENTATION)


@dataclass
class ExtractReport:
    output: str
    fmt: str
    max_pfn: int
    copied: int = 0
    segments: int = 0
    size: int = 0
    #: kind -> pfns not copied ("not-in-image" for valid pfns whose frame is absent)
    skipped: dict = field(default_factory=dict)
    source_note: str = ""
    #: ELF: p_vaddr = vaddr_base + p_paddr (0: every p_vaddr 0)
    vaddr_base: int | None = None

    def lines(self, limit: int = 8):
        elf = ""
        if self.fmt == "elf":
            elf = (f", PT_NOTE + {self.segments} PT_LOAD, "
                   + (f"p_vaddr = {self.vaddr_base:#x} + p_paddr" if self.vaddr_base
                      else "p_vaddr 0"))
        yield (f"extracted {self.copied} pages ({self.copied * PAGE_SIZE / 2**20:.1f} MiB) of "
               f"{self.max_pfn} pfns to {self.output} ({self.fmt}{elf})")
        if self.source_note:
            yield f"  pfn -> mfn from {self.source_note}"
        for kind, pfns in self.skipped.items():
            if len(pfns):
                yield f"  not copied, {kind}: {len(pfns)} pfns: {pfn_ranges(pfns, limit)}"

    def to_dict(self) -> dict:
        return {"output": self.output, "format": self.fmt, "max_pfn": self.max_pfn,
                "copied": self.copied, "segments": self.segments, "size": self.size,
                "source": self.source_note, "vaddr_base": self.vaddr_base,
                "not_copied": {k: len(v) for k, v in self.skipped.items()}}


def _present(source, mfns: np.ndarray) -> np.ndarray:
    from .sources.raw import RawImage

    if isinstance(source, RawImage):
        return mfns < np.uint64(source.frames)
    return np.asarray(source.frames_present(mfns), dtype=bool)


def origin_note(source, plan: Plan, *, pfn_count: int, unreadable: int,
                vaddr_base: int) -> bytes:
    """The ``P2MDUMP`` note of an ELF output (header, name, descriptor).

    The image is named by its file name only: the output may travel where
    the analyst's directory layout should not (the JSON summary keeps the
    path given)."""
    from . import __version__
    from .schemas import elf as E

    desc = E.P2mdumpOrigin.build(dict(
        layout=E.P2MDUMP_ORIGIN_LAYOUT, word_size=plan.word_size, max_pfn=plan.max_pfn,
        pfn_count=pfn_count, unreadable=unreadable, vaddr_base=vaddr_base,
        p2mdump_version=__version__, image=os.path.basename(os.fspath(source.path)),
        container=source.container, representation=plan.representation))
    return E.build_note(E.NT_P2MDUMP_ORIGIN, desc, E.P2MDUMP_NOTE_NAME)


def elf_offsets(n_loads: int, note_size: int) -> tuple[int, int]:
    """(note offset, first data offset) of an ELF output with ``n_loads``
    PT_LOADs: program headers (PT_NOTE first) right after the ELF header,
    the note right after them, the data from the next page boundary."""
    from .schemas import elf as E

    note_at = E.EHDR_SIZE[E.ELFCLASS64] + (1 + n_loads) * E.PHDR_SIZE[E.ELFCLASS64]
    return note_at, -(-(note_at + note_size) // PAGE_SIZE) * PAGE_SIZE


def elf_head(pfns: np.ndarray, segs: list, note: bytes, *, machine: int,
             vaddr_base: int) -> bytes:
    """ELF header, program headers and note of an ELF output whose PT_LOAD k
    holds the pages of ``pfns[a:b]`` for ``segs[k] == (a, b)``, packed from
    the first data offset."""
    from .schemas import elf as E

    note_at, data_start = elf_offsets(len(segs), len(note))
    head = [E.build_core_header(machine=machine, phoff=E.EHDR_SIZE[E.ELFCLASS64],
                                phnum=1 + len(segs)),
            E.build_phdr(ptype=E.PT_NOTE, flags=0, paddr=0, offset=note_at,
                         filesz=len(note))]
    for a, b in segs:
        paddr = int(pfns[a]) * PAGE_SIZE
        head.append(E.build_phdr(paddr=paddr, vaddr=vaddr_base + paddr if vaddr_base else 0,
                                 offset=data_start + a * PAGE_SIZE,
                                 filesz=(b - a) * PAGE_SIZE))
    head.append(note)
    return b"".join(head)


def extract(source, plan: Plan, output, fmt: str = "raw", progress=None, *,
            vaddr_base: int | None = None) -> ExtractReport:
    """Copy the frames of ``plan`` from ``source`` into ``output``.

    ``vaddr_base`` (ELF only): p_vaddr = vaddr_base + p_paddr; None takes
    :func:`default_vaddr_base` of the guest; 0 leaves every p_vaddr 0.  A
    base the segments cannot use is an OptionError before anything is
    written (:func:`vaddr_base_problem`)."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}")
    if fmt != "elf" and vaddr_base is not None:
        raise ValueError("vaddr_base applies to the elf format only")
    output = os.fspath(output)
    present = _present(source, plan.mfns)
    pfns = plan.pfns[present]
    mfns = plan.mfns[present]
    skipped = dict(plan.skipped)
    absent = plan.pfns[~present]
    report = ExtractReport(output, fmt, plan.max_pfn, source_note=plan.source_note)
    total = len(pfns)
    if fmt == "elf":
        from .schemas import elf as E  # construct: only for ELF output

        base = default_vaddr_base(plan.word_size) if vaddr_base is None else vaddr_base
        problem = vaddr_base_problem(base, plan.word_size,
                                     (int(pfns[-1]) + 1) * PAGE_SIZE if total else 0)
        if problem:
            raise OptionError(f"--vaddr-base {base:#x}: {problem}")
        report.vaddr_base = base
        segs = step_runs(pfns)
        note_size = len(origin_note(source, plan, pfn_count=0, unreadable=0, vaddr_base=base))
        data_start = elf_offsets(len(segs), note_size)[1]
        size = data_start + total * PAGE_SIZE
    else:
        segs = []
        data_start = 0
        size = plan.max_pfn * PAGE_SIZE
    buf = np.empty(BATCH * PAGE_SIZE, dtype=np.uint8)
    # (numpy's stubs give ndarray the buffer protocol from Python 3.12 only)
    mem = memoryview(buf)  # type: ignore[arg-type]
    unreadable: list = []
    with atomic_output(output, "wb") as fh:
        fd = fh.fileno()
        try:
            os.ftruncate(fd, size)
        except OSError as exc:
            raise OutputError(f"{output}: cannot size the output to {size} bytes: "
                              f"{exc.strerror}") from None
        for start in range(0, total, BATCH):
            bp = pfns[start:start + BATCH]
            bm = mfns[start:start + BATCH]
            ok = np.ones(len(bm), dtype=bool)
            for a, b in step_runs(bm):
                mfn = int(bm[a])
                while a < b:
                    got = source.read_frames_into(mfn, mem[a * PAGE_SIZE:b * PAGE_SIZE])
                    a += got
                    mfn += got
                    if a < b:  # a frame the image claimed but could not deliver
                        ok[a] = False
                        buf[a * PAGE_SIZE:(a + 1) * PAGE_SIZE] = 0
                        unreadable.append(int(bp[a]))
                        a += 1
                        mfn += 1
            # all-zero pages (and unreadable ones, zeroed above) stay holes
            # of the sized output: they read as zeros all the same
            data = ok & nonzero_pages(buf, len(bm))
            if fmt == "elf":
                for c, d in true_runs(data, 0, len(bm)):
                    pwrite_all(fd, mem[c * PAGE_SIZE:d * PAGE_SIZE],
                               data_start + (start + c) * PAGE_SIZE)
            else:
                for a, b in step_runs(bp):
                    for c, d in true_runs(data, a, b):
                        pwrite_all(fd, mem[c * PAGE_SIZE:d * PAGE_SIZE], int(bp[c]) * PAGE_SIZE)
            if progress is not None:
                progress(min(start + BATCH, total), total)
        if fmt == "elf":  # the note counts the unreadable frames: written last
            note = origin_note(source, plan, pfn_count=total, unreadable=len(unreadable),
                               vaddr_base=base)
            machine = E.EM_X86_64 if plan.word_size == 8 else E.EM_386
            pwrite_all(fd, memoryview(elf_head(pfns, segs, note, machine=machine,
                                               vaddr_base=base)), 0)
    if len(absent):
        skipped["not in image"] = absent
    if unreadable:
        skipped["unreadable"] = np.array(unreadable, dtype=np.int64)
    report.skipped = skipped
    report.copied = total - len(unreadable)
    report.segments = len(segs)
    report.size = size
    return report
