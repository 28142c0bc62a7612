"""The ``xl dump-core`` (xc_core ELF) frame source.

Page k of ``.xen_pages`` is described by pair k of ``.xen_p2m`` ({pfn, gmfn},
gmfn being the MFN for a PV guest).  Frames are served by MFN through an
index gmfn -> page built from the pairs without assuming any order or
contiguity; ``{~0, ~0}`` padding pairs (and their zero pages) are skipped.
The index is built on the first frame access, so opening the file and
answering ``p2mdump info`` read headers only.

An HVM dump (``.xen_pfn``, magic 0xF00FEBEE) is recognised: its guest has no
PV p2m tree.
"""
from __future__ import annotations

from typing import Any

from .. import findings as F
from ..errors import ContainerError, P2MDumpError, TreeError
from ..layout import PAGE_SIZE
from ..schemas import elf as E
from ..schemas import xen_core as X
from .base import FrameSource
from .detect import XC_CORE
from .elf import ElfFile, pread_into

#: the largest .note.Xen we are willing to read (the real one is 1384 bytes)
MAX_NOTE_SECTION = 1 << 20
EXAMPLES = 5


def _cstr(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("ascii", "replace")


class XcCoreSource(ElfFile, FrameSource):
    """Machine frames of an ``xl dump-core`` file, by MFN."""

    container = XC_CORE
    #: the error raised when the tree is needed but top_mfn_problem says why not
    top_mfn_problem_error: type[P2MDumpError] = TreeError

    def __init__(self, path):
        ElfFile.__init__(self, path)
        self._findings: list = []
        self._index = None
        try:
            self._parse_xen()
        except BaseException:
            self.close()
            raise

    # -- headers ----------------------------------------------------------------
    def _note(self, kind, message, **kw):
        self._findings.append(F.Finding(kind, F.WARNING, message, **kw))

    def _require(self, name):
        sec = self._data_section(name)
        if sec is None:
            raise self.error(f"xl dump-core without a {name} section")
        return sec

    def _data_section(self, name):
        """Section ``name`` (None when absent), its data checked to lie in the
        file even when it claims SHT_NOBITS: its size sizes the page index."""
        sec = self.section(name)
        if sec is not None:
            self._check_range(f"section {sec.index} {name} (sh_offset, sh_size)",
                              sec.offset, sec.size)
        return sec

    def _parse_xen(self) -> None:
        h = self.ehdr
        if h.e_type != E.ET_CORE:
            self._note(F.CONTAINER, f"e_type is {h.e_type}, not ET_CORE (4)")
        ws = E.MACHINE_WORD_SIZE.get(h.e_machine)
        if ws is None:
            raise self.error(f"e_machine is {h.e_machine}: an x86 xl dump-core has EM_X86_64 "
                             "(62) or EM_386 (3)")
        self.word_size = ws
        self.word_size_hint = ws
        self.notes = self._parse_notes(self._require(X.SEC_NOTE))
        hdr = self.notes.get(X.XEN_ELFNOTE_DUMPCORE_HEADER)
        if hdr is None:
            raise self.error(".note.Xen has no XEN_ELFNOTE_DUMPCORE_HEADER note")
        if len(hdr) != X.HeaderDesc.sizeof():
            raise self.error(f"XEN_ELFNOTE_DUMPCORE_HEADER descsz is {len(hdr)}, "
                             f"expected {X.HeaderDesc.sizeof()}")
        self.header = X.HeaderDesc.parse(hdr)
        magic = self.header.xch_magic
        if magic not in X.MAGIC_NAMES:
            raise self.error(f"xch_magic is {magic:#x}, neither {X.XC_CORE_MAGIC:#x} (PV) nor "
                             f"{X.XC_CORE_MAGIC_HVM:#x} (HVM)")
        if self.header.xch_page_size != PAGE_SIZE:
            raise self.error(f"xch_page_size is {self.header.xch_page_size}: only "
                             f"{PAGE_SIZE}-byte pages are supported")
        self.xen_version = None
        ver = self.notes.get(X.XEN_ELFNOTE_DUMPCORE_XEN_VERSION)
        if ver is not None:
            if len(ver) == X.XEN_VERSION_DESC_SIZE:
                self.xen_version = X.XEN_VERSION_DESC[ws].parse(ver)
            else:
                self._note(F.CONTAINER, f"XEN_ELFNOTE_DUMPCORE_XEN_VERSION descsz is {len(ver)}, "
                           f"expected {X.XEN_VERSION_DESC_SIZE}; not decoded")
        fmt = self.notes.get(X.XEN_ELFNOTE_DUMPCORE_FORMAT_VERSION)
        self.format_version = X.FormatVersionDesc.parse(fmt).version if fmt and len(fmt) == 8 \
            else None
        if self.format_version not in (None, X.FORMAT_VERSION_CURRENT):
            self._note(F.CONTAINER, f"format version {self.format_version:#x} is not the "
                       f"known {X.FORMAT_VERSION_CURRENT:#x}; reading it anyway")
        # -- pages and their description --
        self.pages = self._require(X.SEC_PAGES)
        if self.pages.size % PAGE_SIZE:
            raise self.error(f".xen_pages sh_size {self.pages.size:#x} is not a multiple of "
                             f"{PAGE_SIZE}")
        self.p2m_sec = self._data_section(X.SEC_P2M)
        self.pfn_sec = self._data_section(X.SEC_PFN)
        self.is_hvm = magic == X.XC_CORE_MAGIC_HVM or (self.pfn_sec is not None
                                                       and self.p2m_sec is None)
        desc = self.pfn_sec if self.is_hvm else self.p2m_sec
        if desc is None:
            raise self.error("xl dump-core with neither a .xen_p2m nor a .xen_pfn section"
                             if self.pfn_sec is None else
                             f"PV magic {magic:#x} but only a .xen_pfn section")
        entry = X.PFN_ENTRY_SIZE if self.is_hvm else X.P2M_PAIR_SIZE
        if desc.size % entry:
            raise self.error(f"{desc.name} sh_size {desc.size} is not a multiple of {entry} "
                             + ("(uint64 pfns)" if self.is_hvm else "(struct xen_dumpcore_p2m)"))
        n_pages = self.pages.size // PAGE_SIZE
        n_desc = desc.size // entry
        nr = self.header.xch_nr_pages
        if not n_pages == n_desc == nr:
            self._note(F.CONTAINER, f"page counts disagree: xch_nr_pages {nr}, .xen_pages "
                       f"{n_pages} pages, {desc.name} {n_desc} entries; using the first "
                       f"{min(n_pages, n_desc)}", count=abs(n_pages - n_desc) or 1)
        self.nr_pages = min(n_pages, n_desc)
        pr = self._data_section(X.SEC_PRSTATUS)
        self.vcpu_stride = (pr.entsize or X.VCPU_CONTEXT_SIZE) if pr else None
        if pr is not None and pr.size != self.header.xch_nr_vcpus * self.vcpu_stride:
            self._note(F.CONTAINER, f".xen_prstatus sh_size {pr.size} is not xch_nr_vcpus "
                       f"{self.header.xch_nr_vcpus} x {self.vcpu_stride}")
        self._parse_shared_info()

    def _parse_notes(self, sec) -> dict:
        if sec.size > MAX_NOTE_SECTION:
            raise self.error(f".note.Xen sh_size {sec.size} is implausibly large")
        data = self.pread(sec.offset, sec.size)
        notes: dict = {}
        self.note_list = []
        off = 0
        while off + E.NHDR_SIZE <= len(data):
            nh = E.Elf_Nhdr.parse(data[off:off + E.NHDR_SIZE])
            name_at = off + E.NHDR_SIZE
            desc_at = name_at + E.note_pad(nh.n_namesz)
            end = desc_at + E.note_pad(nh.n_descsz)
            if desc_at + nh.n_descsz > len(data):
                raise self.error(f".note.Xen: note at offset {off} (type {nh.n_type:#x}, descsz "
                                 f"{nh.n_descsz}) runs past the end of the section "
                                 f"({len(data)} bytes)")
            name = data[name_at:name_at + nh.n_namesz]
            self.note_list.append({"offset": off, "name": _cstr(name), "type": nh.n_type,
                                   "type_name": X.NOTE_TYPE_NAMES.get(nh.n_type, "?"),
                                   "descsz": nh.n_descsz})
            if name == X.NOTE_NAME and nh.n_type not in notes:
                notes[nh.n_type] = data[desc_at:desc_at + nh.n_descsz]
            off = end
        if X.XEN_ELFNOTE_DUMPCORE_NONE not in notes:
            self._note(F.CONTAINER, ".note.Xen lacks the XEN_ELFNOTE_DUMPCORE_NONE marker note")
        return notes

    def _parse_shared_info(self) -> None:
        ws = self.word_size
        self.arch = None
        si = self._data_section(X.SEC_SHARED_INFO)
        if self.is_hvm:
            self.top_mfn_problem = (f"{self.path} is an HVM guest's dump (.xen_pfn, magic "
                                    f"{self.header.xch_magic:#x}): an HVM guest has no PV p2m "
                                    "tree to walk")
        if si is None:
            if not self.is_hvm:
                self.top_mfn_problem_error = ContainerError
                self.top_mfn_problem = ("no .xen_shared_info section: the frame-list-list "
                                        "cannot be found; give --top-mfn")
            return
        need = X.SHARED_INFO_SIZE[ws]
        if si.size != PAGE_SIZE:
            self._note(F.CONTAINER, f".xen_shared_info sh_size is {si.size}, expected "
                       f"{PAGE_SIZE}")
        if si.size < need:
            if not self.is_hvm:
                self.top_mfn_problem_error = ContainerError
                self.top_mfn_problem = (
                    f".xen_shared_info sh_size {si.size} is smaller than sizeof(struct "
                    f"shared_info) {need} of a {ws * 8}-bit guest: arch.max_pfn and "
                    "arch.pfn_to_mfn_frame_list_list cannot be read; give --top-mfn")
            return
        data = self.pread(si.offset, min(si.size, PAGE_SIZE)).ljust(PAGE_SIZE, b"\0")
        self.arch = X.shared_info_page(ws).parse(data).arch
        if self.is_hvm:
            return
        mask = (1 << (8 * ws)) - 1
        fll = self.arch.pfn_to_mfn_frame_list_list
        self.max_pfn_hint = self.arch.max_pfn
        if self.arch.p2m_cr3:
            # a linear p2m list (Xen >= 4.6 headers): preferred, as Xen's own tools do
            self.p2m_cr3_hint = int(self.arch.p2m_cr3)
            self.p2m_vaddr_hint = int(self.arch.p2m_vaddr)
            self.p2m_generation_hint = int(self.arch.p2m_generation)
        tail = (f"; the guest publishes a linear p2m list instead (arch.p2m_cr3 "
                f"{self.arch.p2m_cr3:#x}, MFN {X.unfold_cr3(self.arch.p2m_cr3, ws):#x}; "
                f"arch.p2m_vaddr {self.arch.p2m_vaddr:#x})" if self.arch.p2m_cr3 else
                "; nor does it publish a linear p2m list (arch.p2m_cr3 is 0)")
        if fll == 0:
            self.top_mfn_problem = ("arch.pfn_to_mfn_frame_list_list is 0: the guest had not "
                                    "set up its p2m tree" + tail)
        elif fll == mask:
            self.top_mfn_problem = (f"arch.pfn_to_mfn_frame_list_list is ~0 ({fll:#x}): the "
                                    "guest provides no p2m tree" + tail)
        else:
            self.top_mfn_hint = fll

    # -- the gmfn -> page index ----------------------------------------------------------
    def _build_index(self):
        import numpy as np

        n = self.nr_pages
        empty = np.zeros(0, dtype=np.uint64)
        if self.is_hvm or n == 0:
            self._pairs = (empty, empty)
            self._index = (empty, np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))
            return self._index
        raw = np.frombuffer(self.pread(self.p2m_sec.offset, n * X.P2M_PAIR_SIZE),
                            dtype="<u8").reshape(n, 2)
        pfn, gmfn = raw[:, 0], raw[:, 1]
        inv = np.uint64(X.INVALID_PFN)
        pad = (pfn == inv) & (gmfn == inv)
        half = (pfn == inv) != (gmfn == inv)
        use = ~(pad | half)
        if half.any():
            k = np.flatnonzero(half)
            self._note(F.CONTAINER, f"{len(k)} .xen_p2m pairs have only one half ~0 (first: "
                       f"pair {int(k[0])}: pfn {int(pfn[k[0]]):#x}, gmfn {int(gmfn[k[0]]):#x});"
                       " skipped", count=len(k))
        if pad.any():
            first_pad = int(np.flatnonzero(pad)[0])
            later = np.flatnonzero(use[first_pad:])
            if len(later):
                self._note(F.CONTAINER, f"{int(pad.sum())} {{~0, ~0}} padding pairs, but real "
                           f"pairs follow them (first padding at pair {first_pad}, a real "
                           f"pair at {first_pad + int(later[0])}); Xen pads only at the end",
                           count=int(pad.sum()))
        kidx = np.flatnonzero(use)
        upfn, ugmfn = pfn[use], gmfn[use]
        self._pairs = (upfn, ugmfn)
        self._pair_pages = kidx
        if len(upfn) > 1:
            down = upfn[1:] < upfn[:-1]
            if down.any():
                i = int(np.flatnonzero(down)[0])
                self._note(F.DUMP_UNSORTED,
                           f".xen_p2m pfns are not in ascending order (pair {int(kidx[i + 1])}: "
                           f"pfn {int(upfn[i + 1]):#x} after {int(upfn[i]):#x}); read by "
                           "index anyway", count=int(down.sum()), pfn_first=int(upfn[i + 1]))
        self._dup_finding(upfn, kidx, "pfn", F.DUMP_DUPLICATE_PFN,
                          "the pfn -> page choice is ambiguous")
        self._dup_finding(ugmfn, kidx, "gmfn", F.DUMP_DUPLICATE_GMFN,
                          "frames by MFN use the first of each")
        order = np.argsort(ugmfn, kind="stable")
        g = ugmfn[order]
        k = kidx[order].astype(np.int64)
        if len(g) > 1:
            first = np.ones(len(g), dtype=bool)
            first[1:] = g[1:] != g[:-1]
            g, k = g[first], k[first]
        # runs: consecutive gmfns stored in consecutive pages -> one read
        m = len(g)
        brk = np.ones(m + 1, dtype=bool)
        if m > 1:
            brk[1:m] = (g[1:] != g[:-1] + np.uint64(1)) | (k[1:] != k[:-1] + 1)
        ends = np.flatnonzero(brk)
        run_end = ends[np.searchsorted(ends, np.arange(m), side="right")] if m else \
            np.zeros(0, dtype=np.int64)
        self._index = (g, k, run_end)
        return self._index

    def _dup_finding(self, values, kidx, what, kind, consequence):
        import numpy as np

        if len(values) < 2:
            return
        order = np.argsort(values, kind="stable")
        v = values[order]
        same = np.flatnonzero(v[1:] == v[:-1])
        if not len(same):
            return
        ex: list[dict[str, Any]] = []
        for i in same[:EXAMPLES].tolist():
            ex.append({what: int(v[i]), "pairs": [int(kidx[order[i]]), int(kidx[order[i + 1]])]})
        listing = ", ".join(f"{what} {e[what]:#x} in pairs {e['pairs'][0]} and {e['pairs'][1]}"
                            for e in ex)
        self._findings.append(F.Finding(
            kind, F.WARNING, f"{len(same)} .xen_p2m pairs repeat a {what} ({listing}); "
            f"{consequence}", count=len(same), examples=ex,
            **({"pfn_first": ex[0]["pfn"]} if what == "pfn" else {"mfn": ex[0]["gmfn"]})))

    def index(self):
        """(sorted gmfns, their page numbers, run end positions)."""
        return self._index if self._index is not None else self._build_index()

    def pairs(self):
        """(pfn, gmfn) arrays of the .xen_p2m pairs that are not padding, file order."""
        self.index()
        return self._pairs

    def container_findings(self) -> list:
        self.index()
        return list(self._findings)

    # -- FrameSource -----------------------------------------------------------------
    def frames_held(self) -> int:
        return self.nr_pages

    def frame_runs(self) -> list[tuple[int, int]]:
        """(first MFN, count) of the runs of consecutive gmfns the dump holds,
        ascending: at most one run a page, whatever the gmfns are."""
        import numpy as np

        g = self.index()[0]
        if not len(g):
            return []
        brk = np.flatnonzero(g[1:] != g[:-1] + np.uint64(1)) + 1
        starts = np.concatenate([[0], brk])
        ends = np.concatenate([brk, [len(g)]])
        return [(int(g[a]), int(b - a)) for a, b in zip(starts.tolist(), ends.tolist())]

    def frame_limit(self):
        g = self.index()[0]
        return int(g[-1]) + 1 if len(g) else 0

    def _find(self, mfn: int) -> int:
        import numpy as np

        g = self.index()[0]
        if mfn < 0 or not len(g):
            return -1
        i = int(np.searchsorted(g, np.uint64(mfn)))
        return i if i < len(g) and int(g[i]) == mfn else -1

    def has_frame(self, mfn: int) -> bool:
        return self._find(mfn) >= 0

    def frames_present(self, mfns):
        import numpy as np

        g = self.index()[0]
        m = np.asarray(mfns, dtype=np.uint64)
        if not len(g):
            return np.zeros(len(m), dtype=bool)
        i = np.minimum(np.searchsorted(g, m), len(g) - 1)
        return g[i] == m

    def read_frames_into(self, mfn: int, buf) -> int:
        want = len(buf) // PAGE_SIZE
        if want == 0:
            return 0
        view = memoryview(buf).cast("B")
        g, k, run_end = self.index()
        done = 0
        while done < want:
            i = self._find(mfn + done)
            if i < 0:
                break
            n = min(want - done, int(run_end[i]) - i)
            page = int(k[i])
            nbytes = n * PAGE_SIZE
            got = pread_into(self.fd, view[done * PAGE_SIZE:done * PAGE_SIZE + nbytes],
                             self.pages.offset + page * PAGE_SIZE)
            done += got // PAGE_SIZE
            if got < nbytes:
                break
        return done

    # -- reporting ---------------------------------------------------------------------
    def describe(self) -> str:
        kind = "HVM" if self.is_hvm else "PV"
        ver = ""
        if self.xen_version is not None:
            v = self.xen_version
            ver = f", Xen {v.major_version}.{v.minor_version}{_cstr(v.extra_version)}"
        return (f"xl dump-core {self.path} ({self.word_size * 8}-bit {kind} guest, "
                f"{self.nr_pages} pages{ver})")

    def info(self) -> dict:
        out = {"container": self.container, "path": self.path, "word_size": self.word_size,
               "top_mfn": self.top_mfn_hint, "max_pfn": self.max_pfn_hint,
               "top_mfn_problem": self.top_mfn_problem, "p2m_cr3": self.p2m_cr3_hint,
               "p2m_vaddr": self.p2m_vaddr_hint, "p2m_generation": self.p2m_generation_hint}
        out.update(self.header_info())
        h = self.header
        out["header"] = {"magic": h.xch_magic, "guest": X.MAGIC_NAMES[h.xch_magic],
                         "nr_vcpus": h.xch_nr_vcpus, "nr_pages": h.xch_nr_pages,
                         "page_size": h.xch_page_size}
        out["format_version"] = self.format_version
        out["notes"] = self.note_list
        if self.xen_version is not None:
            v = self.xen_version
            ci = v.compile_info
            out["xen_version"] = {
                "major": v.major_version, "minor": v.minor_version,
                "extra": _cstr(v.extra_version), "changeset": _cstr(v.changeset),
                "capabilities": _cstr(v.capabilities), "compiler": _cstr(ci.compiler),
                "compile_by": _cstr(ci.compile_by), "compile_domain": _cstr(ci.compile_domain),
                "compile_date": _cstr(ci.compile_date), "virt_start": v.virt_start,
                "pagesize": v.pagesize}
        else:
            out["xen_version"] = None
        out["shared_info"] = ({f: int(getattr(self.arch, f)) for f in X.ARCH_FIELDS}
                              if self.arch is not None else None)
        out["is_hvm"] = self.is_hvm
        out["pages_offset"] = self.pages.offset
        out["nr_pages"] = self.nr_pages
        out["header_findings"] = [str(f) for f in self._findings]
        return out

