"""The ``xl dump-core`` (xc_core ELF) frame source.

Page k of ``.xen_pages`` is described by pair k of ``.xen_p2m`` ({pfn, gmfn},
gmfn being the MFN for a PV guest).  Frames are served by MFN through an
index gmfn -> page of *runs* of pairs (:mod:`.pairruns`), built from the
section read a chunk at a time without assuming any order or contiguity;
``{~0, ~0}`` padding pairs (and their zero pages) are skipped.  The index is
built on the first frame access, so opening the file and answering
``p2mdump info`` read headers only.

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
from .pairruns import PieceFinder, RunIndex, merge_continuing, merge_pieces, resolve

#: the largest .note.Xen we are willing to read (the real one is 1384 bytes)
MAX_NOTE_SECTION = 1 << 20
EXAMPLES = 5
#: .xen_p2m pairs read at a time (4 MiB): the section is never read whole
PAIR_CHUNK = 1 << 18
#: pieces are kept for the cross-check while there is one a PIECE_RATIO pairs
PIECE_RATIO = 16
#: ... and up to this many whatever the dump's size (a few MiB)
PIECES_ANYWAY = 1 << 16


class _ChunkPieces:
    """What one chunk of .xen_p2m adds to the index (see
    :meth:`XcCoreSource._chunk_pieces`); pages are counted from the section's
    first pair."""

    __slots__ = ("pieces", "first_real", "half_n", "half_first", "pad_n", "first_pad",
                 "real_after_pad")

    def __init__(self):
        #: (pfns, gmfns, first pages, lengths) of its real pairs, or None
        self.pieces = None
        #: the page of its first real pair (neither half ~0)
        self.first_real: int | None = None
        #: pairs with one half ~0, and the first as (page, pfn, gmfn)
        self.half_n = 0
        self.half_first: tuple[int, int, int] | None = None
        #: {~0, ~0} padding pairs, the first one's page, and the first real
        #: pair after it in this chunk
        self.pad_n = 0
        self.first_pad: int | None = None
        self.real_after_pad: int | None = None


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
        self._pieces = None
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
    def pair_chunks(self, chunk: int = PAIR_CHUNK):
        """(first page, pfns, gmfns) of the .xen_p2m pairs, file order,
        ``chunk`` pairs a read (pair k describes page k).  Padding and
        half-~0 pairs included.  pfns and gmfns are uint64 views of one
        buffer that the next chunk overwrites: copy what you keep."""
        import numpy as np

        n = 0 if self.is_hvm else self.nr_pages
        buf = np.empty(2 * min(chunk, n), dtype="<u8")
        for first in range(0, n, chunk):
            pairs = self._read_pairs(first, min(chunk, n - first), buf)
            yield first, pairs[0::2], pairs[1::2]

    def _read_pairs(self, first: int, count: int, buf):
        """Pairs first..first+count-1 of .xen_p2m read into ``buf`` (uint64,
        room for them): the interleaved view (pfn, gmfn, pfn, ...)."""
        pairs = buf[:2 * count]
        view = pairs.data.cast("B")
        offset = self.p2m_sec.offset + first * X.P2M_PAIR_SIZE
        if pread_into(self.fd, view, offset) != len(view):
            raise self.error(f"cannot read {len(view)} bytes of .xen_p2m at offset "
                             f"{offset:#x} (file size {self.size:#x})")
        return pairs

    def used_pair_chunks(self, chunk: int = PAIR_CHUNK):
        """(pfns, gmfns) of the pairs that are neither padding nor half ~0,
        file order, chunk by chunk (views: copy what you keep)."""
        import numpy as np

        inv = np.uint64(X.INVALID_PFN)
        for _, pfn, gmfn in self.pair_chunks(chunk):
            if max(pfn.max(), gmfn.max()) < inv:
                yield pfn, gmfn
            else:
                use = (pfn != inv) & (gmfn != inv)
                yield pfn[use], gmfn[use]

    def _chunk_pieces(self, k: int, scratch) -> _ChunkPieces:
        """What chunk ``k`` of .xen_p2m (:data:`PAIR_CHUNK` pairs) adds to the
        index: the pieces of its real pairs and what it holds of ~0; run in
        any thread, with that thread's ``scratch`` (buffer, PieceFinder)."""
        import numpy as np

        buf, finder = scratch
        first = k * PAIR_CHUNK
        count = min(PAIR_CHUNK, self.nr_pages - first)
        pairs = self._read_pairs(first, count, buf)
        out = _ChunkPieces()
        inv = np.uint64(X.INVALID_PFN)
        pieces = finder.pieces(pairs, None, first)
        ps, gs, _, lengths = pieces
        reach = inv - (lengths - 1).astype(np.uint64)   # a piece from here on holds ~0
        if not ((ps >= reach) | (gs >= reach)).any():   # the usual chunk: no ~0 at all
            out.pieces = pieces
            out.first_real = first
            return out
        pfn, gmfn = pairs[0::2], pairs[1::2]
        pages = np.arange(first, first + count, dtype=np.int64)
        pinv, ginv = pfn == inv, gmfn == inv
        pad = pinv & ginv
        half = pinv != ginv
        use = ~(pinv | ginv)
        if half.any():
            h = int(np.flatnonzero(half)[0])
            out.half_n = int(np.count_nonzero(half))
            out.half_first = (first + h, int(pfn[h]), int(gmfn[h]))
        if pad.any():
            out.pad_n = int(np.count_nonzero(pad))
            out.first_pad = first + int(np.flatnonzero(pad)[0])
            after = np.flatnonzero(use & (pages > out.first_pad))
            if len(after):
                out.real_after_pad = first + int(after[0])
        used = np.flatnonzero(use)
        if len(used):
            out.first_real = first + int(used[0])
            real = np.empty(2 * len(used), dtype=np.uint64)
            real[0::2], real[1::2] = pfn[used], gmfn[used]
            out.pieces = finder.pieces(real, pages[used])
        return out

    def _build_index(self) -> RunIndex:
        """One pass over .xen_p2m, a chunk at a time on the usable CPUs
        (:func:`~p2mdump.workers.map_chunks`): the pieces of the pairs and the
        findings about them; then the runs of pfns and of gmfns, and the gmfn
        index."""
        import numpy as np

        from ..workers import map_chunks

        n = 0 if self.is_hvm else self.nr_pages
        chunks = map_chunks(self._chunk_pieces, -(-n // PAIR_CHUNK),
                            lambda: (np.empty(2 * min(PAIR_CHUNK, n), dtype="<u8"),
                                     PieceFinder()))
        half_n = pad_n = 0
        half_first: tuple[int, int, int] | None = None
        first_pad = later = None
        for c in chunks:
            half_n += c.half_n
            if half_first is None:
                half_first = c.half_first
            pad_n += c.pad_n
            if first_pad is not None and later is None:
                later = c.first_real
            if first_pad is None and c.first_pad is not None:
                first_pad, later = c.first_pad, c.real_after_pad
        if half_first is not None:
            hk, hp, hg = half_first
            self._note(F.CONTAINER, f"{half_n} .xen_p2m pairs have only one half ~0 (first: "
                       f"pair {hk}: pfn {hp:#x}, gmfn {hg:#x}); skipped", count=half_n)
        if pad_n and later is not None:
            self._note(F.CONTAINER, f"{pad_n} {{~0, ~0}} padding pairs, but real pairs follow "
                       f"them (first padding at pair {first_pad}, a real pair at {later}); "
                       "Xen pads only at the end", count=pad_n)
        parts = [c.pieces for c in chunks if c.pieces is not None and len(c.pieces[0])]
        pieces = merge_pieces(*(np.concatenate([p[i] for p in parts]) for i in range(4))) \
            if parts else (np.zeros(0, np.uint64),) * 2 + (np.zeros(0, np.int64),) * 2
        del chunks, parts
        ps, gs, pp, pn = pieces
        pfns = merge_continuing(ps, pp, pn)
        self._unsorted_finding(*pfns)
        by_pfn = resolve(*pfns, examples=EXAMPLES)
        self._dup_finding(by_pfn, "pfn", F.DUMP_DUPLICATE_PFN,
                          "the pfn -> page choice is ambiguous")
        gmfns = merge_continuing(gs, pp, pn)
        index = resolve(*gmfns, examples=EXAMPLES)
        self._dup_finding(index, "gmfn", F.DUMP_DUPLICATE_GMFN,
                          "frames by MFN use the first of each")
        self._pieces = None
        if not by_pfn.repeats and len(pfns[0]) + len(gmfns[0]) <= max(
                self.nr_pages // PIECE_RATIO, PIECES_ANYWAY):
            self._pieces = (ps, gs, pn)
        self._index = index
        return index

    def pair_pieces(self):
        """(pfns, gmfns, lengths) of the stretches of pairs over which the pfn
        and the gmfn both step by one, when no pfn repeats and there are few
        of them (a dump as Xen writes it); None otherwise."""
        self.index()
        return self._pieces

    def _unsorted_finding(self, starts, pages, lengths) -> None:
        """pfns that go down from one pair to the next: only where a run of
        pfns (file order) starts below the end of the one before it."""
        import numpy as np

        if len(starts) < 2:
            return
        before = starts[:-1] + (lengths[:-1] - 1).astype(np.uint64)
        down = np.flatnonzero(starts[1:] < before)
        if not len(down):
            return
        i = int(down[0])
        p = int(starts[i + 1])
        self._note(F.DUMP_UNSORTED,
                   f".xen_p2m pfns are not in ascending order (pair {int(pages[i + 1])}: pfn "
                   f"{p:#x} after {int(before[i]):#x}); read by index anyway",
                   count=len(down), pfn_first=p)

    def _dup_finding(self, runs: RunIndex, what, kind, consequence) -> None:
        if not runs.repeats:
            return
        ex: list[dict[str, Any]] = [{what: v, "pairs": [a, b]} for v, a, b in runs.examples]
        listing = ", ".join(f"{what} {e[what]:#x} in pairs {e['pairs'][0]} and {e['pairs'][1]}"
                            for e in ex)
        self._findings.append(F.Finding(
            kind, F.WARNING, f"{runs.repeats} .xen_p2m pairs repeat a {what} ({listing}); "
            f"{consequence}", count=runs.repeats, examples=ex,
            **({"pfn_first": ex[0]["pfn"]} if what == "pfn" else {"mfn": ex[0]["gmfn"]})))

    def index(self) -> RunIndex:
        """The gmfn -> page index (runs sorted by gmfn, first pair of a gmfn wins)."""
        return self._index if self._index is not None else self._build_index()

    def pairs(self):
        """(pfn, gmfn) arrays of all the .xen_p2m pairs that are not padding,
        file order, in memory (:meth:`used_pair_chunks` streams them)."""
        import numpy as np

        self.index()
        n = 0 if self.is_hvm else self.nr_pages
        pfns, gmfns = np.empty(n, dtype=np.uint64), np.empty(n, dtype=np.uint64)
        k = 0
        for p, g in self.used_pair_chunks():
            pfns[k:k + len(p)], gmfns[k:k + len(g)] = p, g
            k += len(p)
        return pfns[:k], gmfns[:k]

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

        ix = self.index()
        if not len(ix):
            return []
        s, n = ix.starts, ix.lengths
        heads = np.ones(len(s), dtype=bool)
        heads[1:] = s[1:] != s[:-1] + n[:-1].astype(np.uint64)
        at = np.flatnonzero(heads)
        return list(zip(s[at].tolist(), np.add.reduceat(n, at).tolist()))

    def frame_limit(self):
        return self.index().end()

    def page_of(self, mfn: int) -> int:
        """The page of .xen_pages that holds frame ``mfn`` (the first pair of
        a repeated gmfn wins), -1 when none does."""
        return self.index().find(mfn)[0]

    def has_frame(self, mfn: int) -> bool:
        return self.page_of(mfn) >= 0

    def frames_present(self, mfns):
        import numpy as np

        m = np.asarray(mfns, dtype=np.uint64)
        out = np.empty(len(m), dtype=bool)
        ix = self.index()
        for a in range(0, len(m), PAIR_CHUNK):   # temporaries a chunk, not the table
            out[a:a + PAIR_CHUNK] = ix.locate(m[a:a + PAIR_CHUNK])[1]
        return out

    def frame_offsets(self, mfns):
        """(fd, int64 file offsets of frames ``mfns``, -1 where not in the dump)."""
        import numpy as np

        pages, held = self.index().locate(mfns)
        return self.fd, np.where(held, self.pages.offset + pages * PAGE_SIZE, -1)

    def file_extent(self, mfn: int, count: int):
        """(fd, offset, count) when all ``count`` frames from ``mfn`` lie back
        to back in .xen_pages, else None (the callers take a short extent for
        a frame the dump lacks, so none is given where the pages of the
        frames are merely elsewhere: :meth:`read_frames_into` reads those)."""
        page, avail = self.index().find(mfn)
        if page < 0 or count <= 0 or avail < count:
            return None
        return self.fd, self.pages.offset + page * PAGE_SIZE, count

    def read_frames_into(self, mfn: int, buf) -> int:
        want = len(buf) // PAGE_SIZE
        if want == 0:
            return 0
        view = memoryview(buf).cast("B")
        ix = self.index()
        done = 0
        while done < want:
            page, avail = ix.find(mfn + done)
            if page < 0:
                break
            n = min(want - done, avail)
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

