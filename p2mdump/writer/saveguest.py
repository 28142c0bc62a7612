"""A generated guest as Xen's saver sees it: pfn-keyed memory, page tables, p2m frames.

The saver (``tools/libs/guest/xg_sr_save_x86_pv.c``) reads a PV guest through
its p2m: pfn p is backed by machine frame p2m[p] when that word is a plain
MFN, and every frame it sends it names by pfn.  So every page the stream
must describe by pfn has to *be* a guest page: the p2m pages, the page
tables, and (for the vCPU's cr3) a top-level table.  A generated guest puts
its structure pages at MFNs no pfn maps; as for ``xl dump-core``
(:mod:`.containers`, :mod:`.listcontainers`) the highest own pfns are
remapped to them.  A tree guest has no page tables of its own: it gets a
small kernel address space (a root table down to one level-1 table that maps
the tree pages), as every PV guest runs on one.

:class:`SaveGuest` answers what the saver asks: the p2m words of a pfn range
(:meth:`SaveGuest.words`), the content of structure frames
(:meth:`SaveGuest.structure_words`), each page table's level, the pfn of a
structure MFN (the saver's m2p), the p2m frames in order (its
``map_p2m_tree`` / ``map_p2m_list``) and the shared_info page.
:meth:`SaveGuest.with_swaps` gives the guest after it exchanged the frames
of some pfns, which is what a live migration's later rounds resend.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import numpy.typing as npt

from ..errors import SpecError
from ..layout import PAGE_SHIFT, PAGE_SIZE, Layout
from ..paging import PAGE_KERNEL, PTE_FRAME_MASK, PTE_PRESENT, PagingMode, fold_cr3, mode_for
from .containers import TreeFrames, shared_info
from .image import stamped_frames, write_truth
from .listcontainers import xen_dump_p2m_size
from .listguest import KERNEL_VADDR, ListGuest, build_list
from .listimage import write_list_truth
from .mfns import check_fits
from .pagetables import PMD_SHIFT, PageTables
from .spec import GuestSpec
from .tree import TreeGuest, TreeShape, build_tree_guest


def table_levels(root: int, levels: int, words_of) -> dict:
    """MFN -> level of every page table reachable from ``root`` (a table at
    ``levels``); ``words_of(mfns)`` gives the content of table frames."""
    out = {int(root): levels}
    todo = [int(root)]
    while todo:
        pages = words_of(np.array(todo, dtype=np.uint64))
        nxt = []
        for mfn in todo:
            level = out[mfn]
            if level == 1:
                continue
            ptes = np.asarray(pages[mfn], dtype=np.uint64)
            present = ptes[(ptes & np.uint64(PTE_PRESENT)) != 0]
            for target in np.unique((present & np.uint64(PTE_FRAME_MASK)) >> np.uint64(PAGE_SHIFT)):
                t = int(target)
                if t not in out:
                    out[t] = level - 1
                    nxt.append(t)
        todo = nxt
    return out


@dataclasses.dataclass
class SaveGuest:
    """The guest the saver saves (tree or list guest, structure pages as guest pages)."""

    #: the TreeGuest or ListGuest, remapped
    guest: TreeGuest | ListGuest
    #: the structure MFNs (sorted) and the pfns that map them (the saver's m2p)
    struct_mfns: np.ndarray
    struct_pfns: np.ndarray
    #: tree guests: MFN -> entries of the kernel page tables added for the save
    extra_tables: dict
    #: MFN -> level of every page table
    levels: dict
    root_mfn: int
    #: the last pfn the saver sends (X86_PV_P2M_FRAMES end_pfn, inclusive)
    end_pfn: int
    #: the pfns of the p2m frames, in p2m order (count end_pfn / fpp + 1)
    p2m_frame_pfns: np.ndarray
    notes: list = dataclasses.field(default_factory=list)

    @property
    def spec(self) -> GuestSpec:
        return self.guest.spec

    @property
    def layout(self) -> Layout:
        return self.guest.layout

    @property
    def mode(self) -> PagingMode:
        return mode_for(self.spec.word_size)

    @property
    def max_pfn(self) -> int:
        return self.spec.max_pfn

    # -- what the saver reads --------------------------------------------------------
    def words(self, a: int, b: int) -> np.ndarray:
        """The p2m words the saver reads for pfns [a, b) (what the p2m pages hold)."""
        if isinstance(self.guest, ListGuest):
            return self.guest.words(a, b)
        return self.guest.words_in(a, b)

    def own_mask(self, words: np.ndarray) -> np.ndarray:
        """Which p2m words name a machine frame of the guest (not INVALID, IDENTITY or
        FOREIGN): the pfns the saver sends with data, all others are XTAB."""
        L = self.layout
        dt = words.dtype.type
        return (words != dt(L.invalid)) & ((words & dt(L.flag_mask)) == 0)

    def pfn_of(self, mfns: npt.ArrayLike) -> np.ndarray:
        """The pfns of structure MFNs (SpecError for one that is not a guest page)."""
        mfns = np.asarray(mfns, dtype=np.uint64)
        j = np.minimum(np.searchsorted(self.struct_mfns, mfns), len(self.struct_mfns) - 1)
        bad = self.struct_mfns[j] != mfns
        if bad.any():
            raise SpecError(f"MFN {int(mfns[bad][0]):#x} named by a page table is not a "
                            "guest page")
        return self.struct_pfns[j]

    def is_structure(self, mfns: np.ndarray) -> np.ndarray:
        j = np.minimum(np.searchsorted(self.struct_mfns, mfns), len(self.struct_mfns) - 1)
        return self.struct_mfns[j] == mfns

    def structure_words(self, mfns: np.ndarray) -> dict:
        """MFN -> words (guest words or 64-bit PTEs) of those of ``mfns`` that are
        structure pages."""
        mfns = np.asarray(mfns, dtype=np.uint64)
        hit = mfns[self.is_structure(mfns)]
        if not len(hit):
            return {}
        if isinstance(self.guest, ListGuest):
            return self.guest.page_words(hit)
        out = TreeFrames(self.guest).page_words(hit)
        want = set(hit.tolist())
        out.update({m: w for m, w in self.extra_tables.items() if m in want})
        return out

    def data_frames(self, pfns: np.ndarray, mfns: np.ndarray):
        """(k, 4096) stamped data frames of own non-structure pfns, or None without
        ``data``."""
        if not self.spec.data:
            return None
        return stamped_frames(pfns, mfns)

    def shared_info_page(self) -> bytes:
        if isinstance(self.guest, ListGuest):
            return self.guest.shared_info_page()
        return shared_info(self.spec.word_size, max_pfn=self.max_pfn,
                           pfn_to_mfn_frame_list_list=self.guest.top_mfn)

    def cr3(self) -> int:
        """vCPU 0's cr3 as the saver writes it: the root table's *pfn*, folded."""
        return fold_cr3(int(self.pfn_of([self.root_mfn])[0]), self.spec.word_size)

    # -- outputs -------------------------------------------------------------------------
    def write_truth(self, path) -> None:
        if isinstance(self.guest, ListGuest):
            write_list_truth(self.guest, path)
        else:
            write_truth(self.guest, path)

    # -- live migration: frames exchanged ------------------------------------------------
    def with_swaps(self, a: np.ndarray, b: np.ndarray) -> "SaveGuest":
        """The guest after pfns ``a[i]`` and ``b[i]`` exchanged their machine frames (own,
        non-structure pfns): the p2m pages holding them change, nothing else does."""
        a = np.asarray(a, dtype=np.uint64)
        b = np.asarray(b, dtype=np.uint64)
        pfns = np.concatenate([a, b])
        old = np.concatenate([self.words(int(p), int(p) + 1) for p in pfns.tolist()]) \
            if len(pfns) else np.zeros(0, self.layout.numpy_dtype)
        new = np.concatenate([old[len(a):], old[:len(a)]]).astype(np.uint64)
        g = self.guest
        if isinstance(g, TreeGuest):
            g = g.with_exchanged(pfns, new)
        else:
            allp = np.concatenate([g.override_pfns, pfns])
            allm = np.concatenate([g.override_mfns, new])
            # later rules win: keep the last occurrence of every pfn
            rev = len(allp) - 1 - np.unique(allp[::-1], return_index=True)[1]
            order = np.sort(rev)
            keep = order[np.argsort(allp[order], kind="stable")]
            g = dataclasses.replace(g, override_pfns=allp[keep], override_mfns=allm[keep])
        return dataclasses.replace(self, guest=g)


# -- building ------------------------------------------------------------------------------

def tree_kernel_tables(tree: TreeShape, first_mfn: int):
    """A kernel address space for a tree guest: the page tables (root down to one level-1
    table) mapping the tree pages at the kernel's address, placed from ``first_mfn``.
    Returns (MFN -> 512 entries, root MFN)."""
    ws = tree.spec.word_size
    mode = mode_for(ws)
    vaddr = KERNEL_VADDR[ws]
    pt = PageTables(mode)
    pt.add_l1(vaddr >> PMD_SHIFT)
    keys = pt.table_keys()
    mfn_of = {key: first_mfn + i for i, key in enumerate(keys)}
    check_fits(tree.layout, first_mfn + len(keys) - 1, "page-table MFNs")
    pages = tree.tree_page_mfns()
    first = mode.index(vaddr, 1)
    mapped = pages[:(1 << (PMD_SHIFT - PAGE_SHIFT)) - first]

    def l1_entries(_pmd):
        out = np.zeros(PAGE_SIZE // 8, dtype=np.uint64)
        out[first:first + len(mapped)] = (mapped << np.uint64(PAGE_SHIFT)) | np.uint64(PAGE_KERNEL)
        return out

    tables = pt.build(mfn_of, {}, l1_entries)
    return tables, mfn_of[keys[0]]


def tree_save_end(tree: TreeShape) -> int:
    """The last pfn Xen's ``map_p2m_tree`` keeps: max_pfn - 1, lowered past trailing
    top-level entries that repeat their predecessor (missing regions)."""
    fpp = tree.layout.per_page
    last = tree.max_pfn - 1
    fll = np.asarray(tree.top[:last // (fpp * fpp) + 1], dtype=np.uint64)
    changes = np.flatnonzero(np.concatenate([[True], fll[1:] != fll[:-1]]))
    saved_x = int(changes[-1])
    return min(last, (saved_x + 1) * fpp * fpp - 1)


def tree_leaf_mfns(tree: TreeShape, rows: int) -> np.ndarray:
    """The MFN of the leaf of each of the first ``rows`` rows, as the mid pages name them."""
    fpp = tree.layout.per_page
    out = np.empty(rows, dtype=np.uint64)
    for t in range(-(-rows // fpp)):
        mid = tree.mids.get(int(tree.top[t]))
        n = min(fpp, rows - t * fpp)
        out[t * fpp:t * fpp + n] = (np.full(n, tree.placeholders["leaf_missing"]) if mid is None
                                    else np.asarray(mid[:n], dtype=np.uint64))
    return out


def build_save_guest(spec, *, xen_save_bug: bool = False) -> SaveGuest:
    """Build ``spec`` (tree, list or both) and make it a guest the saver can save."""
    if spec.max_pfn < 1:
        raise SpecError("an xl save needs max_pfn of at least 1")
    if spec.representation == "tree":
        if xen_save_bug:
            raise SpecError("the save bug concerns list guests (a p2m_cr3 to walk)")
        return _tree_save_guest(build_tree_guest(spec))
    return _list_save_guest(build_list(spec), xen_save_bug)


def _tree_save_guest(tree: TreeGuest) -> SaveGuest:
    page_mfns = tree.tree_page_mfns()
    top = max(int(page_mfns.max()), tree.numbering.top() if tree.segments.n_own else 0)
    tables, root = tree_kernel_tables(tree, top + 1)
    table_mfns = np.array(sorted(tables), dtype=np.uint64)
    tree, chosen = tree.with_pages_as_guest_pages(extra_mfns=table_mfns)
    mfns = np.union1d(page_mfns, table_mfns)
    end = tree_save_end(tree)
    fpp = tree.layout.per_page
    leaves = tree_leaf_mfns(tree, end // fpp + 1)
    save = SaveGuest(guest=tree, struct_mfns=mfns, struct_pfns=chosen.astype(np.uint64),
                     extra_tables=tables, levels={}, root_mfn=root, end_pfn=end,
                     p2m_frame_pfns=np.zeros(0, np.uint64), notes=list(tree.notes))
    save.levels = table_levels(root, save.mode.levels,
                               lambda m: {int(x): tables[int(x)] for x in m.tolist()})
    save.p2m_frame_pfns = save.pfn_of(leaves)
    return save


def _list_save_guest(guest: ListGuest, bug: bool) -> SaveGuest:
    end = xen_dump_p2m_size(guest, bug=bug) - 1
    guest, chosen = guest.with_pages_as_guest_pages(end + 1 if guest.segments.own_count(end + 1)
                                                    >= len(guest.meta_mfns) else None)
    fpp = guest.layout.per_page
    save = SaveGuest(guest=guest, struct_mfns=np.sort(guest.meta_mfns).astype(np.uint64),
                     struct_pfns=chosen.astype(np.uint64), extra_tables={}, levels={},
                     root_mfn=int(guest.root_mfn), end_pfn=end,
                     p2m_frame_pfns=np.zeros(0, np.uint64), notes=list(guest.notes))
    save.levels = table_levels(guest.root_mfn, guest.mode.levels, guest.page_words)
    save.p2m_frame_pfns = save.pfn_of(guest.page_mfn[:end // fpp + 1])
    return save
