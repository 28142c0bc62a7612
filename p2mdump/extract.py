"""Write a guest's pseudo-physical memory in pfn order, from any container.

For every pfn whose p2m entry is a machine frame of the guest (kind
``valid``) the frame is read from the image and written to the output:

* ``raw``: frame of pfn p at offset p*4096; the file is max_pfn*4096 bytes
  and every pfn not copied is a hole (sparse, reads as zeros);
* ``elf``: an ELF64 ET_CORE with one PT_LOAD per run of consecutive copied
  pfns (p_paddr = pfn*4096), program headers right after the ELF header,
  data page-aligned and packed in pfn order.

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

from .atomic import atomic_output, pwrite_all
from .crosscheck import pfn_ranges
from .errors import OutputError
from .layout import PAGE_SIZE
from .table import FOREIGN, IDENTITY, MISSING, VALID

FORMATS = ("raw", "elf")
BATCH = 256  # frames per buffer: 1 MiB


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

    @classmethod
    def from_table(cls, table, representation: str = "tree") -> "Plan":
        kinds = table.kinds()
        mfns = table.mfns()
        valid = np.flatnonzero(kinds == VALID)
        skipped = {name: np.flatnonzero(kinds == code)
                   for code, name in ((MISSING, "missing"), (IDENTITY, "identity"),
                                      (FOREIGN, "foreign"))}
        return cls(valid.astype(np.int64), mfns[valid].astype(np.uint64), len(table),
                   table.layout.word_size, skipped, f"the guest's p2m {representation}")

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
        pfns, gmfns = pfns[~far], gmfns[~far]
        top = int(pfns.max()) + 1 if len(pfns) else 0
        n = max(max_pfn or 0, top)
        order = np.argsort(pfns, kind="stable")
        p, g = pfns[order], gmfns[order]
        first = np.ones(len(p), dtype=bool)
        first[1:] = p[1:] != p[:-1]
        p, g = p[first].astype(np.int64), g[first]
        have = np.zeros(n, dtype=bool)
        have[p] = True
        skipped = {"missing": np.flatnonzero(~have)}
        if len(beyond):
            skipped["beyond-dump"] = beyond
        return cls(p, g, n, word_size, skipped, "the dump's .xen_p2m pairs" + note)


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

    def lines(self, limit: int = 8):
        yield (f"extracted {self.copied} pages ({self.copied * PAGE_SIZE / 2**20:.1f} MiB) of "
               f"{self.max_pfn} pfns to {self.output} ({self.fmt}"
               + (f", {self.segments} PT_LOAD" if self.fmt == "elf" else "") + ")")
        if self.source_note:
            yield f"  pfn -> mfn from {self.source_note}"
        for kind, pfns in self.skipped.items():
            if len(pfns):
                yield f"  not copied, {kind}: {len(pfns)} pfns: {pfn_ranges(pfns, limit)}"

    def to_dict(self) -> dict:
        return {"output": self.output, "format": self.fmt, "max_pfn": self.max_pfn,
                "copied": self.copied, "segments": self.segments, "size": self.size,
                "source": self.source_note,
                "not_copied": {k: len(v) for k, v in self.skipped.items()}}


def _present(source, mfns: np.ndarray) -> np.ndarray:
    from .sources.raw import RawImage

    if isinstance(source, RawImage):
        return mfns < np.uint64(source.frames)
    return np.asarray(source.frames_present(mfns), dtype=bool)


def _runs(values: np.ndarray) -> list:
    """[(a, b)] index ranges where values step by one."""
    if not len(values):
        return []
    brk = np.ones(len(values), dtype=bool)
    brk[1:] = np.diff(values.astype(np.int64)) != 1
    starts = np.flatnonzero(brk).tolist()
    return list(zip(starts, starts[1:] + [len(values)]))


def extract(source, plan: Plan, output, fmt: str = "raw", progress=None) -> ExtractReport:
    """Copy the frames of ``plan`` from ``source`` into ``output``."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}")
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

        segs = _runs(pfns)
        data_start = -(-(E.EHDR_SIZE[E.ELFCLASS64] + len(segs) * E.PHDR_SIZE[E.ELFCLASS64])
                       // PAGE_SIZE) * PAGE_SIZE
        size = data_start + total * PAGE_SIZE
    else:
        segs = []
        data_start = 0
        size = plan.max_pfn * PAGE_SIZE
    buf = np.empty(BATCH * PAGE_SIZE, dtype=np.uint8)
    mem = memoryview(buf)
    unreadable: list = []
    with atomic_output(output, "wb") as fh:
        fd = fh.fileno()
        try:
            os.ftruncate(fd, size)
        except OSError as exc:
            raise OutputError(f"{output}: cannot size the output to {size} bytes: "
                              f"{exc.strerror}") from None
        if fmt == "elf":
            machine = E.EM_X86_64 if plan.word_size == 8 else E.EM_386
            head = [E.build_core_header(machine=machine, phoff=E.EHDR_SIZE[E.ELFCLASS64],
                                        phnum=len(segs))]
            for a, b in segs:
                head.append(E.build_phdr(paddr=int(pfns[a]) * PAGE_SIZE,
                                         offset=data_start + a * PAGE_SIZE,
                                         filesz=(b - a) * PAGE_SIZE))
            pwrite_all(fd, memoryview(b"".join(head)), 0)
        for start in range(0, total, BATCH):
            bp = pfns[start:start + BATCH]
            bm = mfns[start:start + BATCH]
            ok = np.ones(len(bm), dtype=bool)
            for a, b in _runs(bm):
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
            if fmt == "elf":
                pwrite_all(fd, mem[:len(bm) * PAGE_SIZE], data_start + start * PAGE_SIZE)
            else:
                for a, b in _runs(bp):
                    for c, d in _split(ok, a, b):
                        pwrite_all(fd, mem[c * PAGE_SIZE:d * PAGE_SIZE], int(bp[c]) * PAGE_SIZE)
            if progress is not None:
                progress(min(start + BATCH, total), total)
    if len(absent):
        skipped["not in image"] = absent
    if unreadable:
        skipped["unreadable"] = np.array(unreadable, dtype=np.int64)
    report.skipped = skipped
    report.copied = total - len(unreadable)
    report.segments = len(segs)
    report.size = size
    return report


def _split(ok: np.ndarray, a: int, b: int):
    """Sub-ranges of [a, b) where ``ok`` holds."""
    if ok[a:b].all():
        yield a, b
        return
    i = a
    while i < b:
        while i < b and not ok[i]:
            i += 1
        j = i
        while j < b and ok[j]:
            j += 1
        if j > i:
            yield i, j
        i = j
