"""ELF containers: the common ELF reader and the PT_LOAD core frame source.

:class:`ElfFile` parses and bounds-checks the ELF header, section headers and
program headers (reading headers only).  :class:`ElfCoreSource` serves frames
of an ELF core whose PT_LOAD segments carry *machine* addresses in p_paddr
(e.g. a host kdump vmcore): machine address -> file offset through the
segment; bytes of p_memsz beyond p_filesz read as zeros; a frame in no
segment is simply not in the image (the walker reports it); PT_NOTE and
other segments are skipped, except that ``info`` shows the ``P2MDUMP``
origin note of a ``p2mdump extract`` output (:func:`read_origin`).
:func:`open_elf` decides between this and the ``xl dump-core`` reader of
:mod:`.xc_core`.
"""
from __future__ import annotations

import bisect
import errno
import os

from construct import ConstructError

from ..errors import ContainerError
from ..layout import PAGE_SIZE
from ..paging import MACHINE_ADDRESS_LIMIT
from ..schemas import elf as E
from .base import FrameSource
from .base import open_fd
from .detect import ELF, XC_CORE


#: PT_NOTE segments larger than this are not searched for p2mdump's note
#: (one extract output's note is ~100 bytes; a host vmcore's notes are a few
#: KiB per CPU)
ORIGIN_NOTE_LIMIT = 1 << 20


def pread_into(fd: int, view, offset: int) -> int:
    """Fill ``view`` from ``offset``; returns the bytes read (short at EOF/error)."""
    done = 0
    total = len(view)
    while done < total:
        try:
            n = os.preadv(fd, [view[done:]], offset + done)
        except OSError as exc:
            if exc.errno == errno.EINTR:
                continue
            break
        if n <= 0:
            break
        done += n
    return done


class Section:
    __slots__ = ("index", "name", "type", "offset", "size", "addralign", "entsize", "flags")

    def __init__(self, index, name, sh):
        self.index = index
        self.name = name
        self.type = sh.sh_type
        self.offset = sh.sh_offset
        self.size = sh.sh_size
        self.addralign = sh.sh_addralign
        self.entsize = sh.sh_entsize
        self.flags = sh.sh_flags

    def to_dict(self) -> dict:
        return {"index": self.index, "name": self.name,
                "type": E.SHT_NAMES.get(self.type, str(self.type)), "offset": self.offset,
                "size": self.size, "addralign": self.addralign, "entsize": self.entsize}


class Segment:
    __slots__ = ("index", "type", "offset", "vaddr", "paddr", "filesz", "memsz", "flags", "align")

    def __init__(self, index, ph):
        self.index = index
        self.type = ph.p_type
        self.offset = ph.p_offset
        self.vaddr = ph.p_vaddr
        self.paddr = ph.p_paddr
        self.filesz = ph.p_filesz
        self.memsz = ph.p_memsz
        self.flags = ph.p_flags
        self.align = ph.p_align

    @property
    def end(self) -> int:
        return self.paddr + self.memsz

    def to_dict(self) -> dict:
        return {"index": self.index, "paddr": self.paddr, "memsz": self.memsz,
                "offset": self.offset, "filesz": self.filesz, "vaddr": self.vaddr}


class ElfFile:
    """The headers of an ELF file, checked against the file's size."""

    def __init__(self, path):
        self.path = os.fspath(path)
        self.fd = -1
        fd, size = open_fd(self.path)
        self.fd, self.size = fd, size
        try:
            self._parse()
        except BaseException:
            self.close()
            raise

    # -- helpers ---------------------------------------------------------------
    def error(self, message: str) -> ContainerError:
        return ContainerError(f"{self.path}: {message}")

    def pread(self, offset: int, length: int) -> bytes:
        buf = bytearray(length)
        got = pread_into(self.fd, memoryview(buf), offset)
        if got != length:
            raise self.error(f"cannot read {length} bytes at offset {offset:#x} "
                             f"(file size {self.size:#x})")
        return bytes(buf)

    def _check_range(self, what: str, offset: int, length: int) -> None:
        if offset + length > self.size:
            raise self.error(f"{what}: offset {offset:#x} + size {length:#x} runs past the "
                             f"end of the file ({self.size:#x} bytes)")

    # -- parsing -----------------------------------------------------------------
    def _parse(self) -> None:
        head = self.pread(0, min(self.size, 64))
        if len(head) < E.EI_NIDENT:
            raise self.error(f"truncated ELF header: {len(head)} bytes, e_ident needs "
                             f"{E.EI_NIDENT}")
        try:
            ident = E.ElfIdent.parse(head)
        except ConstructError:
            raise self.error("not an ELF file: it does not start with the ELF magic "
                             "7f 45 4c 46") from None
        if ident.ei_class not in E.EHDR:
            raise self.error(f"e_ident[EI_CLASS] is {ident.ei_class}, neither ELFCLASS32 (1) "
                             "nor ELFCLASS64 (2)")
        if ident.ei_data != E.ELFDATA2LSB:
            raise self.error(f"e_ident[EI_DATA] is {ident.ei_data}: only little-endian "
                             "(ELFDATA2LSB, 1) x86 cores are supported")
        self.ei_class = ident.ei_class
        need = E.EHDR_SIZE[self.ei_class]
        if len(head) < need:
            raise self.error(f"truncated ELF header: {len(head)} bytes, "
                             f"ELFCLASS{32 if self.ei_class == 1 else 64} needs {need}")
        try:
            self.ehdr = E.EHDR[self.ei_class].parse(head)
        except ConstructError as exc:  # pragma: no cover - sizes checked above
            raise self.error(f"bad ELF header: {exc}") from None
        h = self.ehdr
        self.machine = h.e_machine
        self.sections: list[Section] = []
        self.segments: list[Segment] = []
        if h.e_shnum:
            self._parse_sections()
        if h.e_phnum:
            self._parse_segments()

    def _table(self, what, off, num, entsize, schema, size_field):
        if entsize != schema.sizeof():
            raise self.error(f"{size_field} is {entsize}, expected {schema.sizeof()}")
        if off == 0:
            raise self.error(f"{what}: offset is 0 with {num} entries")
        self._check_range(f"{what} (e_{what[0]}hoff, {num} entries)", off, num * entsize)
        data = self.pread(off, num * entsize)
        return [schema.parse(data[i * entsize:(i + 1) * entsize]) for i in range(num)]

    def _parse_sections(self) -> None:
        h = self.ehdr
        raw = self._table("shdr table", h.e_shoff, h.e_shnum, h.e_shentsize,
                          E.SHDR[self.ei_class], "e_shentsize")
        names = b""
        if 0 < h.e_shstrndx < len(raw):
            st = raw[h.e_shstrndx]
            self._check_range(f"section {h.e_shstrndx} (string table)", st.sh_offset, st.sh_size)
            names = self.pread(st.sh_offset, st.sh_size) if st.sh_size else b""
        elif h.e_shstrndx:
            raise self.error(f"e_shstrndx {h.e_shstrndx} is not a section (e_shnum {h.e_shnum})")
        for i, sh in enumerate(raw):
            if sh.sh_name >= len(names) and sh.sh_name:
                raise self.error(f"section {i}: sh_name {sh.sh_name} is past the string "
                                 f"table ({len(names)} bytes)")
            name = names[sh.sh_name:names.index(b"\0", sh.sh_name)
                         if b"\0" in names[sh.sh_name:] else len(names)].decode("ascii",
                                                                                 "replace")
            sec = Section(i, name, sh)
            if sh.sh_type not in (E.SHT_NULL, 8):  # 8 = SHT_NOBITS: no file data
                self._check_range(f"section {i} {name or '(unnamed)'} (sh_offset, sh_size)",
                                  sh.sh_offset, sh.sh_size)
            self.sections.append(sec)

    def _parse_segments(self) -> None:
        h = self.ehdr
        raw = self._table("phdr table", h.e_phoff, h.e_phnum, h.e_phentsize,
                          E.PHDR[self.ei_class], "e_phentsize")
        self.segments = [Segment(i, ph) for i, ph in enumerate(raw)]

    # -- lookups -------------------------------------------------------------------
    def section(self, name: str) -> Section | None:
        for sec in self.sections:
            if sec.name == name:
                return sec
        return None

    def header_info(self) -> dict:
        h = self.ehdr
        return {
            "elf_class": 64 if self.ei_class == E.ELFCLASS64 else 32,
            "e_type": h.e_type,
            "e_machine": h.e_machine,
            "machine": E.MACHINE_NAMES.get(h.e_machine, f"machine {h.e_machine}"),
            "e_shnum": h.e_shnum,
            "e_phnum": h.e_phnum,
            "file_size": self.size,
            "sections": [s.to_dict() for s in self.sections],
        }

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __del__(self):
        self.close()


class ElfCoreSource(ElfFile, FrameSource):
    """Frames of an ELF core by machine address (PT_LOAD p_paddr)."""

    container = ELF

    def __init__(self, path):
        ElfFile.__init__(self, path)
        try:
            self._index_loads()
        except BaseException:
            self.close()
            raise

    def _index_loads(self) -> None:
        loads = [s for s in self.segments if s.type == E.PT_LOAD]
        if not loads:
            raise self.error("ELF file without PT_LOAD segments: no memory to read "
                             f"(e_type {self.ehdr.e_type}, {len(self.sections)} sections)")
        for s in loads:
            if s.filesz > s.memsz:
                raise self.error(f"PT_LOAD #{s.index}: p_filesz {s.filesz:#x} is larger than "
                                 f"p_memsz {s.memsz:#x}")
            self._check_range(f"PT_LOAD #{s.index} (p_offset, p_filesz)", s.offset, s.filesz)
            if s.end > MACHINE_ADDRESS_LIMIT:
                raise self.error(f"PT_LOAD #{s.index}: p_paddr {s.paddr:#x} + p_memsz "
                                 f"{s.memsz:#x} runs past the largest machine address "
                                 f"({MACHINE_ADDRESS_LIMIT - 1:#x})")
        loads = sorted((s for s in loads if s.memsz), key=lambda s: s.paddr)
        for a, b in zip(loads, loads[1:]):
            if b.paddr < a.end:
                raise self.error(
                    f"PT_LOAD #{a.index} (p_paddr {a.paddr:#x}-{a.end - 1:#x}) and "
                    f"PT_LOAD #{b.index} (p_paddr {b.paddr:#x}-{b.end - 1:#x}) overlap")
        self.loads = loads
        self._starts = [s.paddr for s in loads]
        # covered machine address intervals: adjacent segments merged
        cov: list[list[int]] = []
        for s in loads:
            if cov and cov[-1][1] == s.paddr:
                cov[-1][1] = s.end
            else:
                cov.append([s.paddr, s.end])
        self._cov_starts = [c[0] for c in cov]
        self._cov_ends = [c[1] for c in cov]

    def frame_limit(self) -> int:
        """One past the highest MFN a PT_LOAD covers: an address bound (below
        2^40, as p_paddr + p_memsz was checked against the machine address
        limit), for plausibility tests and messages; never an allocation
        size (:meth:`frames_held`, :meth:`frame_runs` are what the file holds)."""
        return self._cov_ends[-1] // PAGE_SIZE if self._cov_ends else 0

    def frame_runs(self) -> list[tuple[int, int]]:
        """(first MFN, count) of the frames with file data, by address: the
        zero fill from p_filesz up to p_memsz holds nothing to scan."""
        runs: list[tuple[int, int]] = []
        for s in self.loads:
            first = -(-s.paddr // PAGE_SIZE)
            end = min(-(-(s.paddr + s.filesz) // PAGE_SIZE), s.end // PAGE_SIZE)
            if end <= first:
                continue
            if runs and runs[-1][0] + runs[-1][1] == first:
                runs[-1] = (runs[-1][0], end - runs[-1][0])
            else:
                runs.append((first, end - first))
        return runs

    def frames_held(self) -> int:
        """Frames with data in the file (p_filesz); the zero fill past
        p_filesz up to p_memsz holds nothing of its own."""
        return sum(s.filesz for s in self.loads) // PAGE_SIZE

    def has_frame(self, mfn: int) -> bool:
        if mfn < 0:
            return False
        addr = mfn * PAGE_SIZE
        i = bisect.bisect_right(self._cov_starts, addr) - 1
        return i >= 0 and addr + PAGE_SIZE <= self._cov_ends[i]

    def frames_present(self, mfns):
        import numpy as np

        addr = np.asarray(mfns, dtype=np.int64) * PAGE_SIZE
        starts = np.asarray(self._cov_starts, dtype=np.int64)
        ends = np.asarray(self._cov_ends, dtype=np.int64)
        i = np.searchsorted(starts, addr, side="right") - 1
        ok = i >= 0
        out = np.zeros(len(addr), dtype=bool)
        out[ok] = addr[ok] + PAGE_SIZE <= ends[i[ok]]
        return out

    def frame_offsets(self, mfns):
        """(fd, int64 file offsets of frames ``mfns``; -1 where a frame does
        not lie whole in one segment's file data: not in the image, read as
        zeros past p_filesz, or split over two segments)."""
        import numpy as np

        m = np.asarray(mfns, dtype=np.uint64)
        inside = m < np.uint64(self.frame_limit())
        addr = np.where(inside, m, 0).astype(np.int64) * PAGE_SIZE
        starts = np.array(self._starts, dtype=np.int64)
        i = np.maximum(np.searchsorted(starts, addr, side="right") - 1, 0)
        rel = addr - starts[i]
        filesz = np.array([s.filesz for s in self.loads], dtype=np.int64)[i]
        offset = np.array([s.offset for s in self.loads], dtype=np.int64)[i]
        whole = inside & (rel >= 0) & (rel + PAGE_SIZE <= filesz)
        return self.fd, np.where(whole, offset + rel, -1)

    def read_frames_into(self, mfn: int, buf) -> int:
        want = len(buf) // PAGE_SIZE
        if mfn < 0 or want == 0:
            return 0
        view = memoryview(buf).cast("B")[: want * PAGE_SIZE]
        addr = mfn * PAGE_SIZE
        total = want * PAGE_SIZE
        done = 0
        while done < total:
            i = bisect.bisect_right(self._starts, addr + done) - 1
            if i < 0:
                break
            seg = self.loads[i]
            here = addr + done
            if here >= seg.end:
                break
            n = min(total - done, seg.end - here)
            rel = here - seg.paddr
            k = max(0, min(n, seg.filesz - rel))
            if k:
                got = pread_into(self.fd, view[done:done + k], seg.offset + rel)
                if got < k:
                    done += got
                    break
            if n > k:
                view[done + k:done + n] = bytes(n - k)  # p_memsz beyond p_filesz
            done += n
        return done // PAGE_SIZE

    def origin(self) -> dict | None:
        """The ``P2MDUMP`` origin note of a ``p2mdump extract`` output, or None."""
        return read_origin(self)

    def describe(self) -> str:
        return (f"ELF core {self.path} ({len(self.loads)} PT_LOAD segments, "
                f"{E.MACHINE_NAMES.get(self.machine, self.machine)})")

    def info(self) -> dict:
        out = FrameSource.info(self)
        out.update(self.header_info())
        out["pt_load"] = [s.to_dict() for s in self.loads]
        out["frames"] = sum(s.memsz for s in self.loads) // PAGE_SIZE
        origin = self.origin()
        if origin is not None:
            out["p2mdump_origin"] = origin
        return out


def read_origin(elf: ElfFile) -> dict | None:
    """The descriptor of the first ``P2MDUMP`` / NT_P2MDUMP_ORIGIN note in the
    PT_NOTE segments of ``elf`` as a dict (None when there is none); a note
    that does not parse, or of a layout this version does not know, gives
    ``{"problem": ...}`` instead: it is information, never a reason to
    refuse the file."""
    for seg in elf.segments:
        if seg.type != E.PT_NOTE or not 0 < seg.filesz <= ORIGIN_NOTE_LIMIT:
            continue
        if seg.offset + seg.filesz > elf.size:
            continue
        data = elf.pread(seg.offset, seg.filesz)
        off = 0
        while off + E.NHDR_SIZE <= len(data):
            nh = E.Elf_Nhdr.parse(data[off:off + E.NHDR_SIZE])
            end = off + E.NHDR_SIZE + E.note_pad(nh.n_namesz) + E.note_pad(nh.n_descsz)
            if end > len(data):
                break                                   # not a note we can read
            note = E.Elf_Note.parse(data[off:end])
            at, off = seg.offset + off, end
            if note.name != E.P2MDUMP_NOTE_NAME or note.n_type != E.NT_P2MDUMP_ORIGIN:
                continue
            try:
                desc = E.P2mdumpOrigin.parse(note.desc)
            except (ConstructError, UnicodeDecodeError) as exc:
                return {"problem": f"P2MDUMP note at file offset {at:#x} does not parse: "
                                   f"{' '.join(str(exc).split())}"}
            if desc.layout != E.P2MDUMP_ORIGIN_LAYOUT:
                return {"problem": f"P2MDUMP note of layout {desc.layout}; this version "
                                   f"reads layout {E.P2MDUMP_ORIGIN_LAYOUT}"}
            return {k: v for k, v in desc.items() if not k.startswith("_")}
    return None


def open_elf(path, want: str | None = None):
    """Open an ELF file as the right frame source.

    ``want`` None detects: a ``.note.Xen`` section makes it an ``xl dump-core``
    file, PT_LOAD segments an ELF core.  This is the container boundary: a
    header that does not parse, or numbers too large for a file offset, are
    a :class:`ContainerError`, whatever the reader below raised.
    """
    try:
        return _open_elf(path, want)
    except ConstructError as exc:
        raise ContainerError(f"{os.fspath(path)}: malformed {want or 'ELF'} container: "
                             f"{' '.join(str(exc).split())}") from None
    except OverflowError as exc:
        raise ContainerError(f"{os.fspath(path)}: malformed {want or 'ELF'} container: a "
                             f"header value is out of range ({exc})") from None


def _open_elf(path, want):
    probe = ElfFile(path)
    try:
        is_xen = probe.section(".note.Xen") is not None
        has_load = any(s.type == E.PT_LOAD for s in probe.segments)
    finally:
        probe.close()
    kind = want
    if kind is None:
        if is_xen:
            kind = XC_CORE
        elif has_load:
            kind = ELF
        else:
            raise ContainerError(
                f"{path}: an ELF file, but neither an xl dump-core (no .note.Xen section) "
                "nor a core with PT_LOAD segments")
    if kind == XC_CORE:
        if not is_xen:
            raise ContainerError(f"{path}: not an xl dump-core file: no .note.Xen section")
        from .xc_core import XcCoreSource

        return XcCoreSource(path)
    return ElfCoreSource(path)
