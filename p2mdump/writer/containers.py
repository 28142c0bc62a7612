"""Wrap a built tree in the containers analysts hold: ``xl dump-core`` and ELF cores.

``xc-core``: a faithful ``xl dump-core`` file of a PV guest (reference section
6): ELF64 ET_CORE without program headers, e_machine EM_X86_64 (62) for a
64-bit guest and EM_386 (3) for a 32-bit one; section headers null,
.shstrtab, .note.Xen, .xen_prstatus, .xen_shared_info, .xen_pages, .xen_p2m;
data in the order notes, prstatus, shared_info, zero padding to 4096,
pages, p2m pairs, string table.  .xen_pages holds the pages a PV dump holds:
the guest's own (valid) pfns in ascending pfn order, pair k of .xen_p2m
being {pfn, gmfn} of page k; ``padding`` extra pages are zero with
{~0, ~0} pairs, as Xen writes when fewer pages than tot_pages could be
dumped.

Which pfns hold the tree pages: in a real guest the p2m pages are guest
pages, mapped by the p2m like any other page, which is what makes them
reachable through .xen_p2m.  A generated tree puts its pages at MFNs no pfn
maps, so :func:`tree_pages_as_guest_pages` gives each tree page a pfn: the
last ``tree_pages`` valid pfns below max_pfn are remapped to the tree pages'
MFNs (their leaf entries change accordingly; the truth table is the one of
the remapped tree).  The dump then holds the tree pages as guest pages and
the walk of the tree agrees with .xen_p2m pair for pair.

``elf``: an ELF64 core with one PT_LOAD per run of consecutive machine frames
that hold something (tree pages, and the stamped data frames with
``data``), p_paddr being the machine address: the shape of a host vmcore.
"""
from __future__ import annotations

import dataclasses
import os
from typing import TYPE_CHECKING

import numpy as np

from ..atomic import atomic_output, pwrite_all
from ..errors import SpecError
from ..layout import PAGE_SIZE
from ..schemas import elf as E
from ..schemas import xen_core as X
from ..sidecar import sidecar_path
from .image import BATCH, runs, sidecar, stamped_frames, write_json, write_raw_image, write_truth
from .tree import CHUNK_PFNS, BuiltTree, TreeGuest, TreeShape, build_tree_guest

if TYPE_CHECKING:  # imported where used: they import this module
    from .listguest import ListGuest
    from .saveguest import SaveGuest

CONTAINERS = ("raw", "xc-core", "elf", "xl-save")

DEFAULT_XEN_VERSION = (4, 19, "-p2mdump")


def _round_up(n: int, align: int) -> int:
    return -(-n // align) * align


# -- the content of frames -------------------------------------------------------------

def tree_pages(tree: BuiltTree) -> dict:
    """MFN -> words of every tree page (top, mids, placeholders, leaves)."""
    fpp = tree.layout.per_page
    pages = {int(m): np.asarray(w, dtype=tree.layout.numpy_dtype) for m, w in tree.page_list()}
    leaf2d = tree.leaf_table.reshape(-1, fpp)
    for row, mfn in zip(tree.leaf_rows.tolist(), tree.leaf_mfns.tolist()):
        pages[int(mfn)] = leaf2d[row]
    return pages


def tree_pages_as_guest_pages(tree: BuiltTree, extra_mfns=()) -> tuple[BuiltTree, np.ndarray]:
    """A copy of ``tree`` whose last valid pfns map the tree pages' MFNs (and
    ``extra_mfns``, other frames that must be guest pages).

    Returns (new tree, the pfns now holding those pages, in MFN order)."""
    mfns = np.union1d(np.array(sorted(tree_pages(tree)), dtype=np.uint64),
                      np.asarray(extra_mfns, dtype=np.uint64))
    own = tree.data_pfns[tree.data_pfns < np.uint64(tree.max_pfn)]
    if len(own) < len(mfns):
        raise SpecError(f"an xc-core dump needs at least {len(mfns)} valid pfns below max_pfn "
                        f"to hold the {len(mfns)} tree pages as guest pages; the spec has "
                        f"{len(own)}")
    chosen = own[len(own) - len(mfns):]
    dtype = tree.leaf_table.dtype
    entries = tree.entries.copy()
    leaf_table = tree.leaf_table.copy()
    entries[chosen.astype(np.int64)] = mfns.astype(dtype)
    leaf_table[chosen.astype(np.int64)] = mfns.astype(dtype)
    # the chosen pfns hold tree pages now, not data frames
    drop = np.flatnonzero(np.isin(tree.data_pfns, chosen))
    if len(drop) and drop[0] == len(tree.data_pfns) - len(drop):
        # the last data pfns (the usual case): the rest is a view, not a copy
        data_pfns, data_mfns = tree.data_pfns[:drop[0]], tree.data_mfns[:drop[0]]
    else:
        data_pfns, data_mfns = np.delete(tree.data_pfns, drop), np.delete(tree.data_mfns, drop)
    new = dataclasses.replace(
        tree, entries=entries, leaf_table=leaf_table, data_pfns=data_pfns,
        data_mfns=data_mfns,
        notes=list(tree.notes) + [f"pfns {int(chosen[0]):#x}-{int(chosen[-1]):#x} hold the "
                                  f"{len(mfns)} tree pages"])
    return new, chosen


def _frames_for(pfns: np.ndarray, mfns: np.ndarray, tree_by_mfn: dict, data: bool):
    """(k, 4096) uint8 content of the frames (pfn, mfn), or None if all zero."""
    frames = stamped_frames(pfns, mfns) if data else None
    if not tree_by_mfn:
        return frames
    pages = np.fromiter(tree_by_mfn, dtype=np.uint64, count=len(tree_by_mfn))
    hits = np.flatnonzero(np.isin(np.asarray(mfns, dtype=np.uint64), pages))
    if not len(hits):
        return frames
    if frames is None:
        frames = np.zeros((len(mfns), PAGE_SIZE), dtype=np.uint8)
    for i in hits.tolist():
        words = tree_by_mfn[int(mfns[i])]
        frames[i] = np.frombuffer(np.ascontiguousarray(words).tobytes(), dtype=np.uint8)
    return frames


class TreeFrames:
    """The content of a tree's pages, looked up by MFN a batch at a time.

    Holds the tree pages' MFNs (sorted) and, for each, its leaf row (or -1
    and its words for the few non-leaf pages); leaf pages are produced by the
    tree when a batch names them (:meth:`.tree.TreeShape.leaf_pages`)."""

    def __init__(self, tree: TreeShape):
        self.tree = tree
        self.small = {int(m): w for m, w in tree.page_list()}
        mfns = np.concatenate([np.fromiter(self.small, dtype=np.uint64, count=len(self.small)),
                               tree.leaf_mfns.astype(np.uint64)])
        rows = np.concatenate([np.full(len(self.small), -1, dtype=np.int64),
                               tree.leaf_rows.astype(np.int64)])
        #: every tree page's MFN, in page_list order then leaf row order
        self.listed = mfns
        order = np.argsort(mfns, kind="stable")
        self.mfns, self.rows = mfns[order], rows[order]

    def find(self, mfns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(positions in ``mfns`` that are tree pages, their index in :attr:`mfns`)."""
        j = np.minimum(np.searchsorted(self.mfns, mfns), len(self.mfns) - 1)
        hit = np.flatnonzero(self.mfns[j] == mfns)
        return hit, j[hit]

    def page_words(self, mfns: np.ndarray) -> dict:
        """MFN -> words of those of ``mfns`` that are tree pages."""
        pos, idx = self.find(np.asarray(mfns, dtype=np.uint64))
        rows = self.rows[idx]
        leaf = rows >= 0
        found = self.mfns[idx].tolist()
        out = {m: self.small[m] for m, is_leaf in zip(found, leaf.tolist()) if not is_leaf}
        if leaf.any():
            out.update(zip(self.mfns[idx[leaf]].tolist(), self.tree.leaf_pages(rows[leaf])))
        return out

    def overlay(self, mfns: np.ndarray, frames=None, hits=None):
        """``frames`` ((k, 4096) uint8, or None: zeros) with the tree pages among
        ``mfns`` filled in; None if there are none and ``frames`` is None."""
        pos, idx = self.find(mfns) if hits is None else hits
        if not len(pos):
            return frames
        if frames is None:
            frames = np.zeros((len(mfns), PAGE_SIZE), dtype=np.uint8)
        words = frames.view(self.tree.layout.numpy_dtype)
        rows = self.rows[idx]
        leaf = rows >= 0
        if leaf.any():
            words[pos[leaf]] = self.tree.leaf_pages(rows[leaf])
        for p, i in zip(pos[~leaf].tolist(), idx[~leaf].tolist()):
            words[p] = self.small[int(self.mfns[i])]
        return frames


# -- ELF building blocks ----------------------------------------------------------------

elf64_header = E.build_core_header
elf64_phdr = E.build_phdr
elf64_shdr = E.build_shdr


def note(ntype: int, desc: bytes, name: bytes = X.NOTE_NAME) -> bytes:
    return E.build_note(ntype, desc, name)


def _cbytes(text: str, size: int) -> bytes:
    return text.encode("ascii")[: size - 1].ljust(size, b"\0")


def xen_notes(*, word_size: int, nr_vcpus: int, nr_pages: int, hvm: bool = False,
              version=DEFAULT_XEN_VERSION) -> bytes:
    """The four notes of .note.Xen, in Xen's order."""
    major, minor, extra = version
    header = X.HeaderDesc.build(dict(
        xch_magic=X.XC_CORE_MAGIC_HVM if hvm else X.XC_CORE_MAGIC, xch_nr_vcpus=nr_vcpus,
        xch_nr_pages=nr_pages, xch_page_size=PAGE_SIZE))
    caps = "xen-3.0-x86_64 hvm-3.0-x86_32 hvm-3.0-x86_32p hvm-3.0-x86_64"
    if word_size == 4:
        caps = "xen-3.0-x86_32p " + caps
    ver = X.XEN_VERSION_DESC[word_size].build(dict(
        major_version=major, minor_version=minor, extra_version=_cbytes(extra, 16),
        compile_info=dict(compiler=_cbytes("gcc (p2mdump generator)", 64),
                          compile_by=_cbytes("p2mdump", 16),
                          compile_domain=_cbytes("example.org", 32),
                          compile_date=_cbytes("Thu Jan  1 00:00:00 UTC 1970", 32)),
        capabilities=_cbytes(caps, 1024), changeset=_cbytes("p2mdump synthetic dump", 64),
        virt_start=0xFFFF800000000000 if word_size == 8 else 0xF5800000,
        pagesize=PAGE_SIZE))
    fmt = X.FormatVersionDesc.build(dict(version=X.FORMAT_VERSION_CURRENT))
    return (note(X.XEN_ELFNOTE_DUMPCORE_NONE, b"")
            + note(X.XEN_ELFNOTE_DUMPCORE_HEADER, header)
            + note(X.XEN_ELFNOTE_DUMPCORE_XEN_VERSION, ver)
            + note(X.XEN_ELFNOTE_DUMPCORE_FORMAT_VERSION, fmt))


def shared_info(word_size: int, **arch) -> bytes:
    """A 4096-byte shared_info page carrying ``arch`` fields at the guest-width offsets."""
    fields = {f: 0 for f in X.ARCH_FIELDS}
    if word_size == 4:
        fields["wc_sec_hi"] = 0
    fields.update(arch)
    return X.shared_info_page(word_size).build(dict(arch=fields))


# -- xl dump-core ---------------------------------------------------------------------

class XcCoreLayout:
    """Where the parts of an ``xl dump-core`` file go (reference section 6.7)."""

    def __init__(self, *, word_size: int, nr_vcpus: int, nr_pages: int, sinfo: bytes,
                 version=DEFAULT_XEN_VERSION):
        names = [b""] + [n.encode() for n in X.PV_SECTION_ORDER]
        self.shstrtab = b"\0".join(names) + b"\0"
        name_off = {}
        pos = 0
        for n in names:
            name_off[n.decode()] = pos
            pos += len(n) + 1
        notes = xen_notes(word_size=word_size, nr_vcpus=nr_vcpus, nr_pages=nr_pages,
                          version=version)
        prstatus = bytes(nr_vcpus * X.VCPU_CONTEXT_SIZE)
        nsec = len(names)
        self.nr_pages = nr_pages
        self.off_notes = E.EHDR_SIZE[E.ELFCLASS64] + nsec * E.SHDR_SIZE[E.ELFCLASS64]
        off_prs = self.off_notes + len(notes)
        self.off_si = off_prs + len(prstatus)
        self.off_pages = _round_up(self.off_si + len(sinfo), PAGE_SIZE)
        self.off_p2m = self.off_pages + nr_pages * PAGE_SIZE
        self.off_str = self.off_p2m + nr_pages * X.P2M_PAIR_SIZE
        self.size = self.off_str + len(self.shstrtab)
        sh = [bytes(E.SHDR_SIZE[E.ELFCLASS64]),
              elf64_shdr(name=name_off[X.SEC_SHSTRTAB], stype=E.SHT_STRTAB,
                         offset=self.off_str, size=len(self.shstrtab)),
              elf64_shdr(name=name_off[X.SEC_NOTE], stype=E.SHT_NOTE, offset=self.off_notes,
                         size=len(notes)),
              elf64_shdr(name=name_off[X.SEC_PRSTATUS], stype=E.SHT_PROGBITS, offset=off_prs,
                         size=len(prstatus), addralign=X.PROGBITS_ALIGN,
                         entsize=X.VCPU_CONTEXT_SIZE),
              elf64_shdr(name=name_off[X.SEC_SHARED_INFO], stype=E.SHT_PROGBITS,
                         offset=self.off_si, size=len(sinfo), addralign=X.PROGBITS_ALIGN,
                         entsize=PAGE_SIZE),
              elf64_shdr(name=name_off[X.SEC_PAGES], stype=E.SHT_PROGBITS,
                         offset=self.off_pages, size=nr_pages * PAGE_SIZE,
                         addralign=PAGE_SIZE, entsize=PAGE_SIZE),
              elf64_shdr(name=name_off[X.SEC_P2M], stype=E.SHT_PROGBITS, offset=self.off_p2m,
                         size=nr_pages * X.P2M_PAIR_SIZE, addralign=X.PROGBITS_ALIGN,
                         entsize=X.P2M_PAIR_SIZE)]
        self.machine = E.EM_X86_64 if word_size == 8 else E.EM_386
        ehdr = elf64_header(machine=self.machine, shoff=E.EHDR_SIZE[E.ELFCLASS64], shnum=nsec,
                            shstrndx=1, abiversion=E.EV_CURRENT)  # sic: Xen stores EV_CURRENT
        self.head = ehdr + b"".join(sh) + notes + prstatus + sinfo

    def write_skeleton(self, fd: int) -> None:
        """Size the file and write everything but the pages and the pairs."""
        os.ftruncate(fd, self.size)
        pwrite_all(fd, self.head, 0)
        pwrite_all(fd, self.shstrtab, self.off_str)

    def describe(self) -> dict:
        return {"nr_pages": self.nr_pages, "pages_offset": self.off_pages,
                "p2m_offset": self.off_p2m, "shared_info_offset": self.off_si,
                "notes_offset": self.off_notes, "size": self.size, "e_machine": self.machine}


def page_batches(count: int, every: bool, holding: np.ndarray):
    """First pages of the batches of :data:`~.image.BATCH` pages (of ``count``) to
    write: all of them when ``every``, else those holding one of the pages at
    ``holding`` (sorted positions); the others are zeros, left as holes."""
    if every:
        return range(0, count, BATCH)
    return (np.unique(holding // BATCH) * BATCH).tolist()


def write_pairs(fd: int, lay: "XcCoreLayout", first: int, pfns: np.ndarray,
                mfns: np.ndarray) -> None:
    """.xen_p2m pairs ``first``, ``first + 1``, ...: {pfn, gmfn} of each dumped page."""
    pwrite_all(fd, np.stack([pfns, mfns], axis=1).astype("<u8", copy=False),
               lay.off_p2m + first * X.P2M_PAIR_SIZE)


def pad_pairs(fd: int, lay: "XcCoreLayout", written: int, nr_pages: int) -> None:
    """The pairs past the ``written`` ones up to ``nr_pages``: Xen's {~0, ~0} padding."""
    for k in range(written, nr_pages, CHUNK_PFNS):
        pad = np.full((min(CHUNK_PFNS, nr_pages - k), 2), X.INVALID_PFN, dtype="<u8")
        pwrite_all(fd, pad, lay.off_p2m + k * X.P2M_PAIR_SIZE)


def write_xc_core(tree: TreeShape, path, *, nr_vcpus: int = 1, padding: int = 0,
                  fll: int | None = None, max_pfn: int | None = None, p2m_cr3: int = 0,
                  p2m_vaddr: int = 0, version=DEFAULT_XEN_VERSION) -> dict:
    """Write ``tree`` (whose tree pages are guest pages, see
    :func:`tree_pages_as_guest_pages` / :meth:`.tree.TreeGuest.with_pages_as_guest_pages`)
    as an ``xl dump-core`` file, chunk by chunk.

    ``fll`` / ``max_pfn`` override what shared_info publishes (default: the
    tree's top MFN and max_pfn).  Returns a description of the layout."""
    ws = tree.layout.word_size
    pages = TreeFrames(tree)
    # the pages Xen dumps for a PV guest: pfns whose entry is a machine frame
    # (not INVALID, no FOREIGN / IDENTITY bit), ascending, below max_pfn
    nr_pages = tree.own_frames_count(tree.max_pfn) + padding
    sinfo = shared_info(ws, max_pfn=tree.max_pfn if max_pfn is None else max_pfn,
                        pfn_to_mfn_frame_list_list=tree.top_mfn if fll is None else fll,
                        p2m_cr3=p2m_cr3, p2m_vaddr=p2m_vaddr)
    lay = XcCoreLayout(word_size=ws, nr_vcpus=nr_vcpus, nr_pages=nr_pages, sinfo=sinfo,
                       version=version)
    seen = np.zeros(len(pages.mfns), dtype=bool)
    written = 0
    with atomic_output(path, "wb") as fh:
        fd = fh.fileno()
        lay.write_skeleton(fd)
        for pfns, mfns in tree.own_frames(tree.max_pfn, CHUNK_PFNS):
            pos, idx = pages.find(mfns)
            seen[idx] = True
            for a in page_batches(len(mfns), tree.spec.data, pos):
                b = min(a + BATCH, len(mfns))
                lo, hi = np.searchsorted(pos, [a, b])
                frames = stamped_frames(pfns[a:b], mfns[a:b]) if tree.spec.data else None
                frames = pages.overlay(mfns[a:b], frames, (pos[lo:hi] - a, idx[lo:hi]))
                pwrite_all(fd, frames, lay.off_pages + (written + a) * PAGE_SIZE)
            write_pairs(fd, lay, written, pfns, mfns)
            written += len(pfns)
        pad_pairs(fd, lay, written, nr_pages)
        if not seen.all():
            dumped = set(pages.mfns[seen].tolist())
            missing = next(m for m in pages.listed.tolist() if m not in dumped)
            raise SpecError(f"tree page MFN {missing:#x} is not a guest page; wrap the tree "
                            "with tree_pages_as_guest_pages() first")
    return lay.describe()


# -- ELF core with PT_LOAD ----------------------------------------------------------------

def write_elf_segments(path, segments, *, machine: int = E.EM_X86_64,
                       fill=None) -> dict:
    """Write an ELF64 core: ``segments`` is a list of (paddr, filesz, memsz);
    ``fill(fd, index, offset, paddr, filesz)`` writes segment data (default:
    nothing, i.e. zeros).  Data is page-aligned after the program headers."""
    n = len(segments)
    off = _round_up(E.EHDR_SIZE[E.ELFCLASS64] + n * E.PHDR_SIZE[E.ELFCLASS64], PAGE_SIZE)
    ph = []
    offsets = []
    for paddr, filesz, memsz in segments:
        ph.append(elf64_phdr(paddr=paddr, offset=off, filesz=filesz, memsz=memsz))
        offsets.append(off)
        off += _round_up(filesz, PAGE_SIZE)
    ehdr = elf64_header(machine=machine, phoff=E.EHDR_SIZE[E.ELFCLASS64], phnum=n)
    with atomic_output(path, "wb") as fh:
        fd = fh.fileno()
        os.ftruncate(fd, off)
        pwrite_all(fd, ehdr + b"".join(ph), 0)
        if fill is not None:
            for i, (paddr, filesz, _memsz) in enumerate(segments):
                fill(fd, i, offsets[i], paddr, filesz)
    return {"segments": n, "size": off, "data_offsets": offsets}


def write_elf_frames(path, mfns: np.ndarray, frames_of) -> dict:
    """Write machine frames ``mfns`` (sorted, distinct) as an ELF core, one
    PT_LOAD per run of consecutive MFNs; ``frames_of(mfns)`` gives the content
    of a batch ((k, 4096) uint8, or None when all zero)."""
    mfn_runs = runs(mfns)
    segments = [(int(mfns[a]) * PAGE_SIZE, (b - a) * PAGE_SIZE, (b - a) * PAGE_SIZE)
                for a, b in mfn_runs]

    def fill(fd, i, offset, paddr, filesz):
        a, b = mfn_runs[i]
        for c in range(a, b, BATCH):
            frames = frames_of(mfns[c:min(c + BATCH, b)])
            if frames is not None:
                pwrite_all(fd, frames, offset + (c - a) * PAGE_SIZE)

    out = write_elf_segments(path, segments, fill=fill)
    out["frames"] = len(mfns)
    return out


class DataStamps:
    """The stamped data frames of a guest's own (pfn, mfn) pairs, looked up by MFN."""

    def __init__(self, pfns: np.ndarray, mfns: np.ndarray):
        order = np.argsort(mfns, kind="stable")
        self.mfns = mfns[order].astype(np.uint64)
        self.pfns = pfns[order].astype(np.uint64)

    def overlay(self, frames, mm: np.ndarray, exclude: np.ndarray):
        """``frames`` (or zeros if None) with the data frames among ``mm`` stamped,
        except where ``exclude`` is set."""
        if not len(self.mfns):
            return frames
        j = np.minimum(np.searchsorted(self.mfns, mm), len(self.mfns) - 1)
        pp = np.where(self.mfns[j] == mm, self.pfns[j], np.uint64(0))
        isdata = np.isin(mm, self.mfns) & ~exclude
        st = stamped_frames(pp, mm)
        if frames is None:
            frames = np.zeros((len(mm), PAGE_SIZE), dtype=np.uint8)
        frames[isdata] = st[isdata]
        return frames


def write_elf_core(tree: TreeShape, path) -> dict:
    """Write the frames of ``tree`` (as a raw image would hold them) as an ELF
    core, one PT_LOAD per run of consecutive MFNs."""
    pages = TreeFrames(tree)
    mfns = pages.mfns
    stamps = None
    if tree.spec.data and tree.data_count:
        pairs = list(tree.data_pairs())
        stamps = DataStamps(np.concatenate([p for p, _ in pairs]),
                            np.concatenate([m for _, m in pairs]))
        mfns = np.union1d(mfns, stamps.mfns)

    def frames_of(mm):
        hits = pages.find(mm)
        frames = pages.overlay(mm, None, hits)
        if stamps is not None:
            tree_page = np.zeros(len(mm), dtype=bool)
            tree_page[hits[0]] = True
            frames = stamps.overlay(frames, mm, tree_page)
        return frames

    return write_elf_frames(path, mfns, frames_of)


# -- generate ---------------------------------------------------------------------------

def check_container(container: str, base: int) -> None:
    """Refuse an unknown container, and a --base for anything but a raw image."""
    if container not in CONTAINERS:
        raise SpecError(f"container must be one of {', '.join(CONTAINERS)}")
    if base and container != "raw":
        raise SpecError("--base applies to raw images only")


def generate(spec, out, *, truth=None, sidecar_file=None, base: int = 0):
    """Build ``spec`` (any representation), write the raw image ``out``, its
    sidecar (default ``out + '.json'``) and, when asked, the truth table in
    the raw format.  Returns the :class:`~.tree.TreeGuest` or
    :class:`~.listguest.ListGuest`."""
    return generate_container(spec, out, container="raw", truth=truth,
                              sidecar_file=sidecar_file, base=base)


def generate_container(spec, out, *, container: str = "raw", truth=None, sidecar_file=None,
                       base: int = 0, **options) -> TreeGuest | ListGuest | SaveGuest:
    """Build ``spec`` and write it as ``container`` (raw, xc-core or elf), with
    its sidecar (``out + '.json'``) and, when asked, the truth table.
    A tree guest is built without its table (:func:`.tree.build_tree_guest`)
    and written chunk by chunk (returned as a :class:`~.tree.TreeGuest`).
    A list or both guest is written by
    :func:`.listcontainers.generate_list_container` (and returned as a
    :class:`~.listguest.ListGuest`).  ``xl-save`` is written by
    :func:`.xlsave.generate_xl_save` (returned as a
    :class:`~.saveguest.SaveGuest`)."""
    if container == "xl-save":
        from .xlsave import generate_xl_save

        check_container(container, base)
        return generate_xl_save(spec, out, truth=truth, sidecar_file=sidecar_file, **options)
    if spec.representation != "tree":
        from .listcontainers import generate_list_container

        return generate_list_container(spec, out, container=container, truth=truth,
                                       sidecar_file=sidecar_file, base=base, **options)
    check_container(container, base)
    tree = build_tree_guest(spec)
    extra = {}
    if container == "raw":
        write_raw_image(tree, out, base)
    elif container == "xc-core":
        tree, chosen = tree.with_pages_as_guest_pages()
        info = write_xc_core(tree, out, **options)
        extra = {"xc_core": info, "tree_pfns": [int(chosen[0]), int(chosen[-1]) + 1]}
    else:
        info = write_elf_core(tree, out)
        extra = {"elf": info}
    write_json(sidecar_file or sidecar_path(out), sidecar(tree, container, base, extra))
    if truth is not None:
        write_truth(tree, truth)
    return tree
