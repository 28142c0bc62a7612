"""The x86 page-table walker, on page tables built by hand in raw images.

The images are written word by word (tests/ptimage.py), with index math of
their own (not the walker's), and the bulk path (map_range) is checked
against the entry-by-entry path (translate) on random ranges.
"""
import struct
import time

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from p2mdump import findings as F
from p2mdump.errors import LayoutError, TreeError
from p2mdump.pagetable import (PageTableWalker, pte_frames, pte_nx, pte_present, pte_pse,
                               walker_for_cr3)
from p2mdump.paging import (PAE, PAGE_KERNEL, PAGE_KERNEL_RO, PTE_ACCESSED, PTE_DIRTY,
                            PTE_FRAME_MASK, PTE_GLOBAL, PTE_NX, PTE_PCD, PTE_PRESENT, PTE_PSE,
                            PTE_PWT, PTE_RW, PTE_USER, X86_64, X86_64_LA57, fold_cr3)
from p2mdump.ptlookup import PathTranslator, translator_for_cr3
from p2mdump.schemas.pagetable import PageTableEntry, PageTablePage
from ptimage import (GIB, KIB4, MIB2, CountingImage, Memory, index, install, large, levels_of,
                     page, table, table_of)

FLAG_BITS = {"present": PTE_PRESENT, "rw": PTE_RW, "user": PTE_USER, "pwt": PTE_PWT,
             "pcd": PTE_PCD, "accessed": PTE_ACCESSED, "dirty": PTE_DIRTY, "pse": PTE_PSE,
             "global": PTE_GLOBAL, "nx": PTE_NX}


def kinds(rm, kind):
    return [f for f in rm.findings if f.kind == kind]


# -- the schema and the numpy fast path -------------------------------------------------------

def test_schema_bits_are_the_paging_constants():
    for name, bit in FLAG_BITS.items():
        parsed = PageTableEntry.parse(struct.pack("<Q", bit))
        assert parsed[name] is True
        assert all(parsed[other] is False for other in FLAG_BITS if other != name)
        assert parsed.frame == 0 and parsed.avail == 0 and parsed.avail_hi == 0
    parsed = PageTableEntry.parse(struct.pack("<Q", PTE_FRAME_MASK))
    assert parsed.frame == PTE_FRAME_MASK >> 12
    assert not any(parsed[name] for name in FLAG_BITS)
    # the gaps between the named bits are the two "avail" fields
    parsed = PageTableEntry.parse(struct.pack("<Q", 0x7 << 9 | 0x7FF << 52))
    assert (parsed.avail, parsed.avail_hi, parsed.frame) == (7, 0x7FF, 0)
    assert PageTableEntry.sizeof() == 8
    assert PageTablePage.sizeof() == KIB4


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 2 ** 64 - 1), min_size=1, max_size=64))
def test_numpy_fast_path_agrees_with_construct(words):
    arr = np.array(words, dtype="<u8")
    for word, present, pse, nx, frame in zip(words, pte_present(arr), pte_pse(arr), pte_nx(arr),
                                             pte_frames(arr)):
        parsed = PageTableEntry.parse(struct.pack("<Q", word))
        assert (parsed.present, parsed.pse, parsed.nx, parsed.frame) == (
            bool(present), bool(pse), bool(nx), int(frame))
        assert PageTableEntry.build(parsed) == struct.pack("<Q", word)


@settings(max_examples=20, deadline=None)
@given(st.integers(0, 2 ** 32))
def test_page_schema_agrees_with_numpy(seed):
    data = np.random.default_rng(seed).integers(0, 2 ** 64, 512, dtype=np.uint64).astype("<u8")
    blob = data.tobytes()
    assert list(PageTablePage.parse(blob).entries) == np.frombuffer(blob, "<u8").tolist()


# -- single mappings --------------------------------------------------------------------------

MODES = [X86_64, X86_64_LA57, PAE]
#: a kernel-space base address of each mode (vmalloc-like on 64-bit)
BASE = {"x86-64": 0xFFFFC90000000000, "x86-64-5level": 0xFF11000000000000, "pae": 0x40000000}


@pytest.mark.parametrize("mode", MODES, ids=lambda m: m.name)
def test_4k_2m_1g_mappings(tmp_path, mode):
    mem = Memory(64)
    root = mem.alloc()
    base = BASE[mode.name]
    va4k = base + 5 * KIB4
    l1 = install(mem, mode, root, va4k, 1, page(0x12345) | PTE_NX)
    va2m = base + 3 * MIB2
    install(mem, mode, root, va2m, 2, large(0x40000, pat=True))   # bit 12 set: PAT, not address
    with mem.image(tmp_path / "m.img") as src:
        w = PageTableWalker(src, root, mode)
        tr = w.translate(va4k + 0x123)
        assert (tr.maddr, tr.mfn, tr.page_size, tr.problem) == (0x12345123, 0x12345, KIB4, None)
        assert not tr.frame_in_image
        assert [s.level for s in tr.path] == list(range(levels_of(mode), 0, -1))
        assert tr.path[0].table_mfn == root and tr.path[-1].table_mfn == l1
        assert tr.path[-1].index == 5 and tr.path[-1].entry == page(0x12345) | PTE_NX
        off = 7 * KIB4 + 0x42
        tr = w.translate(va2m + off)
        assert (tr.maddr, tr.page_size) == (0x40000 * KIB4 + off, MIB2)
        assert len(tr.path) == levels_of(mode) - 1
        rm = w.map_range(va2m - 2 * KIB4, 516)
        assert not rm.mapped[:2].any()
        assert rm.mapped[2:514].all() and not rm.mapped[514:].any()
        assert rm.mfns[2:514].tolist() == list(range(0x40000, 0x40000 + 512))
        assert not rm.l1_tables[2:514].any()
        assert rm.large_pages == 1
        [lp] = kinds(rm, F.PT_LARGE_PAGE)
        assert (lp.level, lp.mfn, lp.count, lp.severity) == ("pt-l2", 0x40000, 1, F.INFO)
        assert (lp.vaddr_first, lp.vaddr_last) == (va2m, va2m + MIB2 - 1)
        if mode is not PAE:
            va1g = base + 4 * GIB
            install(mem, mode, root, va1g, 3, large(0x80000, pat=True))
    if mode is PAE:
        return
    with mem.image(tmp_path / "m2.img") as src:
        w = PageTableWalker(src, root, mode)
        off = 300 * MIB2 + 5 * KIB4 + 1
        tr = w.translate(va1g + off)
        assert (tr.maddr, tr.page_size) == (0x80000 * KIB4 + off, GIB)
        rm = w.map_range(va1g + GIB - 3 * KIB4, 6)
        assert rm.mfns[:3].tolist() == [0x80000 + (GIB // KIB4) - k for k in (3, 2, 1)]
        assert not rm.mapped[3:].any()
        [lp] = kinds(rm, F.PT_LARGE_PAGE)
        assert (lp.level, lp.count) == ("pt-l3", 1)


def test_pse_only_counts_where_the_mode_allows_it(tmp_path):
    """PAE: PSE at level 3 is no large page; 64-bit: PSE at levels 4/5 is none either."""
    mem = Memory(64)
    root = mem.alloc()
    l2 = mem.alloc()
    l1 = mem.alloc()
    mem.put(root, 1, table(l2) | PTE_PSE)   # PAE L3 entry for 0x40000000
    mem.put(l2, 0, table(l1))
    mem.put(l1, 0, page(0x777))
    with mem.image(tmp_path / "pae.img") as src:
        w = PageTableWalker(src, root, PAE)
        assert w.translate(0x40000000).mfn == 0x777
        assert w.map_range(0x40000000, 1).mfns.tolist() == [0x777]
    mem = Memory(64)
    root = mem.alloc()
    top = [mem.alloc() for _ in range(4)]
    mem.put(root, 3, table(top[0]) | PTE_PSE)
    for upper, lower in zip(top, top[1:]):
        mem.put(upper, 0, table(lower))
    mem.put(top[-1], 0, page(0x999))
    va = 3 << 48
    with mem.image(tmp_path / "la57.img") as src:
        w = PageTableWalker(src, root, X86_64_LA57)
        tr = w.translate(va + 5)
        assert (tr.maddr, [s.level for s in tr.path]) == (0x999005, [5, 4, 3, 2, 1])


def test_five_level_uses_bits_48_to_56(tmp_path):
    mem = Memory(64)
    root = mem.alloc()
    va = 0xFF11000000000000 + 0x123 * KIB4
    install(mem, X86_64_LA57, root, va, 1, page(0x4242))
    with mem.image(tmp_path / "m.img") as src:
        w5 = PageTableWalker(src, root, X86_64_LA57)
        assert w5.translate(va).mfn == 0x4242
        assert w5.translate(va).path[0].index == 0x111
        with pytest.raises(LayoutError, match="canonical"):
            PageTableWalker(src, root, X86_64).translate(va)


# -- what goes wrong --------------------------------------------------------------------------

@pytest.mark.parametrize("mode", MODES, ids=lambda m: m.name)
def test_not_present_at_each_level(tmp_path, mode):
    mem = Memory(64)
    root = mem.alloc()
    base = BASE[mode.name]
    levels = levels_of(mode)
    install(mem, mode, root, base, 1, page(0x500))
    for level in range(1, levels + 1):
        # the entry right after base's, at ``level``: clear its present bit
        span = 1 << (12 + 9 * (level - 1))
        va = base + span
        tbl = table_of(mem, mode, root, base, level)
        mem.put(tbl, index(mode, va, level), 0x1234000)   # a frame but no present bit
        with mem.image(tmp_path / f"l{level}.img") as src:
            w = PageTableWalker(src, root, mode)
            tr = w.translate(va)
            assert tr.maddr is None and tr.page_size == 0 and not tr.frame_in_image
            assert f"level-{level} entry" in tr.problem and "not present" in tr.problem
            assert tr.path[-1].level == level and tr.path[-1].entry == 0x1234000
            rm = w.map_range(va, 3)
            assert not rm.mapped.any() and not rm.mfns.any()
            [f] = kinds(rm, F.PT_NOT_PRESENT)
            assert f.level == f"pt-l{level}" and f.severity == F.WARNING
            assert (f.slot, f.parent_mfn, f.mfn) == (index(mode, va, level), tbl, None)
            assert (f.vaddr_first, f.vaddr_last) == (va, va + 3 * KIB4 - 1)
        mem.put(tbl, index(mode, va, level), 0)


def test_consecutive_non_present_entries_are_one_finding(tmp_path):
    mem = Memory(64)
    root = mem.alloc()
    base = BASE["x86-64"]
    l1 = install(mem, X86_64, root, base, 1, page(0x500))
    for i in (1, 2, 3, 7):
        mem.put(l1, i, page(0x500 + i))
    with mem.image(tmp_path / "m.img") as src:
        rm = PageTableWalker(src, root, X86_64).map_range(base, 10)
    assert rm.mapped.tolist() == [True] * 4 + [False] * 3 + [True] + [False] * 2
    got = [(f.slot, f.count, f.vaddr_first, f.vaddr_last) for f in kinds(rm, F.PT_NOT_PRESENT)]
    assert got == [(4, 3, base + 4 * KIB4, base + 7 * KIB4 - 1),
                   (8, 2, base + 8 * KIB4, base + 10 * KIB4 - 1)]


def test_table_outside_the_image(tmp_path):
    mem = Memory(64)
    root = mem.alloc()
    base = BASE["x86-64"]
    install(mem, X86_64, root, base, 1, page(0x500))
    l2 = table_of(mem, X86_64, root, base, 2)
    mem.put(l2, 1, table(1000))          # past the 64 frames of the image
    mem.put(l2, 2, table(1001))
    with mem.image(tmp_path / "m.img") as src:
        w = PageTableWalker(src, root, X86_64)
        tr = w.translate(base + MIB2 + KIB4)
        assert tr.maddr is None and "0x3e8" in tr.problem and "not in the image" in tr.problem
        rm = w.map_range(base, 3 * 512)
    assert rm.mapped[0] and not rm.mapped[512:].any()
    [f] = kinds(rm, F.PT_UNREADABLE)
    assert (f.level, f.slot, f.mfn, f.parent_mfn, f.count) == ("pt-l2", 1, 1000, l2, 2)
    assert (f.vaddr_first, f.vaddr_last) == (base + MIB2, base + 3 * MIB2 - 1)
    assert 1000 not in rm.tables[1] and 1000 not in rm.table_refs[1]


def test_frame_zero(tmp_path):
    mem = Memory(64)
    root = mem.alloc()
    base = BASE["x86-64"]
    l1 = install(mem, X86_64, root, base, 1, page(0))          # a 4 KiB page at frame 0
    mem.put(l1, 1, page(0x501))
    l2 = table_of(mem, X86_64, root, base, 2)
    mem.put(l2, 1, table(0))                                   # a table at frame 0
    mem.put(l2, 2, large(0, pat=True))                         # a 2 MiB page at frame 0
    with mem.image(tmp_path / "m.img") as src:
        w = PageTableWalker(src, root, X86_64)
        for va in (base, base + MIB2, base + 2 * MIB2 + 5):
            tr = w.translate(va)
            assert tr.maddr is None and "frame 0" in tr.problem
        rm = w.map_range(base, 3 * 512)
    assert rm.mapped.tolist() == [False, True] + [False] * (3 * 512 - 2)
    got = sorted((f.level, f.slot, f.parent_mfn, f.mfn, f.count, f.vaddr_first)
                 for f in kinds(rm, F.PT_FRAME_ZERO))
    assert got == [("pt-l1", 0, l1, 0, 1, base), ("pt-l2", 1, l2, 0, 1, base + MIB2),
                   ("pt-l2", 2, l2, 0, 1, base + 2 * MIB2)]
    assert rm.large_pages == 0 and not kinds(rm, F.PT_LARGE_PAGE)


def test_self_mapping_top_entry(tmp_path):
    """An L4 entry naming its own table: reported as a loop, the walk ends."""
    mem = Memory(64)
    root = mem.alloc()
    k = 0x1ED
    mem.put(root, k, table(root))
    self_va = 0xFFFF000000000000 | (k << 39)             # canonical: slot 0x1ED is in the top half
    with mem.image(tmp_path / "m.img") as src:
        w = PageTableWalker(src, root, X86_64)
        # (k, k, k, k, 0): four steps through the root, ending at the root's own frame
        va = self_va | (k << 30) | (k << 21) | (k << 12)
        tr = w.translate(va + 8)
        assert tr.maddr == root * KIB4 + 8
        assert [(s.level, s.table_mfn, s.index) for s in tr.path] == [
            (lv, root, k) for lv in (4, 3, 2, 1)]
        rm = w.map_range(va - KIB4, 2)
        assert rm.mfns.tolist() == [0, root] and rm.mapped.tolist() == [False, True]
        assert rm.l1_tables.tolist() == [0, root]
        [loop] = kinds(rm, F.PT_LOOP)
        assert loop.severity == F.WARNING and (loop.level, loop.slot, loop.mfn,
                                               loop.parent_mfn) == ("pt-l4", k, root, root)
        assert all(rm.tables[lv].tolist() == [root] for lv in (4, 3, 2, 1))
        assert w.pages_read == 1


def test_shared_l1_table(tmp_path):
    """The Linux list maps whole missing PMD ranges through one PTE page."""
    mem = Memory(64)
    root = mem.alloc()
    base = BASE["x86-64"]
    install(mem, X86_64, root, base, 1, page(0x500))
    l2 = table_of(mem, X86_64, root, base, 2)
    shared = mem.alloc()
    mem.frames[shared][:] = page(0x600) & ~PTE_RW     # every entry -> one read-only page
    assert page(0x600) & ~PTE_RW == (0x600 << 12) | PAGE_KERNEL_RO
    for slot in range(2, 9):
        mem.put(l2, slot, table(shared))
    with mem.image(tmp_path / "m.img") as src:
        w = PageTableWalker(src, root, X86_64)
        rm = w.map_range(base + MIB2 + 10 * KIB4, 7 * 512)
        reads = w.pages_read
    assert (rm.mfns[502:] == 0x600).all() and rm.mapped[502:].all()
    assert (rm.l1_tables[502:] == shared).all()
    assert rm.table_refs[1][shared] == 7        # slots 2-8 (partly) in the range
    [f] = kinds(rm, F.PT_SHARED_TABLE)
    assert (f.severity, f.level, f.slot, f.mfn, f.parent_mfn, f.count) == (
        F.INFO, "pt-l2", 2, shared, l2, 7)
    assert (f.vaddr_first, f.vaddr_last) == (base + 2 * MIB2, base + 8 * MIB2 + 10 * KIB4 - 1)
    assert reads == 4                  # L4, L3, L2, the shared L1 (base's own L1 is not in range)


def test_range_across_table_boundaries(tmp_path):
    """Start in the middle of a PMD, run through several L2 and L3 tables."""
    mem = Memory(2100)
    root = mem.alloc()
    start = 0x00007FFF00000000 - 3 * GIB - 5 * MIB2 + 300 * KIB4    # lower half, near its end
    npages = (4 * GIB + 13 * MIB2) // KIB4 // 64            # every 64th page mapped
    mfn_of = lambda p: 0x100000 + 3 * p                       # noqa: E731
    for p in range(0, npages * 64, 64):
        install(mem, X86_64, root, start + p * KIB4, 1, page(mfn_of(p)))
    with mem.image(tmp_path / "m.img") as src:
        w = PageTableWalker(src, root, X86_64)
        rm = w.map_range(start, npages * 64)
    expect = np.zeros(npages * 64, dtype=np.uint64)
    expect[::64] = [mfn_of(p) for p in range(0, npages * 64, 64)]
    assert (rm.mfns == expect).all() and (rm.mapped == (expect != 0)).all()
    assert {f.kind for f in rm.findings} == {F.PT_NOT_PRESENT}
    assert len(rm.tables[3]) == 1 and len(rm.tables[2]) >= 4 and len(rm.tables[1]) > 2000
    assert w.pages_read == sum(len(t) for t in rm.tables.values())


# -- PAE and cr3 ------------------------------------------------------------------------------

def test_pae_with_folded_cr3(tmp_path):
    root = 0x100005                      # above 2^20: folding moves its top bits
    mem = Memory(root + 8, first_free=root + 1)
    mem.frames[root] = np.zeros(512, dtype="<u8")
    va = 0xC0123000
    l1 = install(mem, PAE, root, va, 1, page(0x3ABCDE))
    install(mem, PAE, root, 0x00400000, 2, large(0x200, pat=True))
    mem.put(root, 3 + 4, table(l1))      # entries past the 4 used ones do not count
    cr3 = fold_cr3(root, 4)
    assert cr3 < 1 << 32 and cr3 >> 12 != root
    with mem.image(tmp_path / "pae.img") as src:
        w = walker_for_cr3(src, cr3, 4)
        assert w.root_mfn == root and w.mode is PAE
        tr = w.translate(va + 0x10)
        assert (tr.maddr, [s.index for s in tr.path]) == (0x3ABCDE010, [3, 0, 0x123])
        assert w.translate(0x00400000 + 5 * KIB4).mfn == 0x205
        with pytest.raises(LayoutError, match="canonical"):
            w.translate(1 << 32)
        rm = w.map_range(0, 1 << 20)         # the whole 4 GiB
        assert rm.mfns[0xC0123] == 0x3ABCDE and rm.mfns[0x400:0x600].tolist() == list(
            range(0x200, 0x400))
        assert int(rm.mapped.sum()) == 513
        with pytest.raises(LayoutError, match="wraps"):
            w.map_range(0xFFFFF000, 2)


def test_bad_cr3(tmp_path):
    mem = Memory(8)
    root = mem.alloc()
    with mem.image(tmp_path / "m.img") as src:
        with pytest.raises(LayoutError, match="bits 32-63"):
            walker_for_cr3(src, (1 << 32) | fold_cr3(root, 4), 4)
        with pytest.raises(LayoutError):
            walker_for_cr3(src, root << 12, 2)
        with pytest.raises(LayoutError):
            walker_for_cr3(src, root << 12, 4, five_level=True)
        with pytest.raises(TreeError, match="cr3 is 0"):
            walker_for_cr3(src, 0, 8)
        with pytest.raises(TreeError, match="not in the image"):
            walker_for_cr3(src, 100 << 12, 8)
        with pytest.raises(TreeError):
            PageTableWalker(src, 0, X86_64)
        assert walker_for_cr3(src, root << 12, 8, five_level=True).mode is X86_64_LA57


def test_range_arguments(tmp_path):
    mem = Memory(8)
    root = mem.alloc()
    with mem.image(tmp_path / "m.img") as src:
        w = PageTableWalker(src, root, X86_64)
        bad = [(0, -1, "non-negative"), (0x1000, 1.5, "non-negative"),
               (0x1001, 1, "page-aligned"),
               (0x0000800000000000, 1, "canonical"),
               (0x00007FFFFFFFF000, 2, "non-canonical"),
               (0xFFFFFFFFFFFFF000, 2, "wraps"),
               (0xFFFF800000000000, 1 << 36 | 1, "address space"),
               (1 << 64, 1, "canonical")]
        for vaddr, npages, message in bad:
            with pytest.raises(LayoutError, match=message):
                w.map_range(vaddr, npages)
        rm = w.map_range(np.uint64(0xFFFFFFFFFFFFF000), np.int64(1))    # numpy integers do
        assert (rm.vaddr, rm.npages) == (0xFFFFFFFFFFFFF000, 1) and not rm.mapped.any()
        assert type(rm.vaddr) is int and w.translate(np.uint64(0x1000)).vaddr == 0x1000
        with pytest.raises(LayoutError, match="integer"):
            w.translate(4096.0)
        empty = w.map_range(0x1000, 0)
        assert empty.mfns.shape == (0,) and not empty.findings and w.pages_read == 1


# -- bulk against single lookups --------------------------------------------------------------

def build_scene(mem, mode):
    """A page-table tree with one of everything, under BASE[mode]; returns
    (root, interesting virtual addresses)."""
    rng = np.random.default_rng(7)
    root = mem.alloc()
    base = BASE[mode.name]
    if mode is PAE:
        l3 = root
    else:
        install(mem, mode, root, base, 3, 0)
        l3 = table_of(mem, mode, root, base, 3)
    j0 = index(mode, base, 3)
    a = mem.alloc()                                             # the rich L2 table
    mem.put(l3, j0, table(a))
    if mode is PAE:
        c = mem.alloc()
        mem.put(l3, j0 + 1, table(c) | PTE_PSE)                 # PSE means nothing at PAE L3
        mem.put(c, 0, large(0x800, pat=True))
    else:
        mem.put(l3, j0 + 1, large(0x40000, pat=True))           # 1 GiB
    mem.put(l3, j0 + 2, 0xABC000)                               # not present
    mem.put(l3, j0 + 3, table(mem.nframes + 5))                 # table outside the image
    if mode is not PAE:
        mem.put(l3, j0 + 4, table(0))
        mem.put(l3, j0 + 5, table(a))                           # shared L2
        mem.put(l3, j0 + 6, table(l3))                          # L3 used as an L2 too
    for k in range(4):                                          # four random L1 tables
        l1 = mem.alloc()
        mem.put(a, k, table(l1))
        frames = rng.integers(0, mem.nframes * 2, 512, dtype=np.uint64)
        flags = rng.choice(np.array([PAGE_KERNEL, PAGE_KERNEL_RO, 0, PTE_RW, PTE_PRESENT],
                                    dtype=np.uint64), 512)
        words = (frames << np.uint64(12)) | flags
        words[rng.integers(0, 512, 20)] = np.uint64(PAGE_KERNEL)  # present, frame 0
        mem.frames[l1][:] = words
    for k in range(4, 7):
        mem.put(a, k, large(0x1000 + 512 * k, pat=k == 5))
    mem.put(a, 7, large(0, pat=True))
    mem.put(a, 10, table(0))
    mem.put(a, 11, table(mem.nframes + 9))
    shared = mem.alloc()
    mem.frames[shared][:] = page(0x600)
    for k in range(12, 20):
        mem.put(a, k, table(shared))
    mem.put(a, 20, table(a))                                    # an L2 used as an L1
    mem.put(a, 21, table(root))
    mem.put(a, 22, table(l3) | PTE_NX)
    marks = [base + j * GIB for j in range(8)] + [base + k * MIB2 for k in range(24)]
    return root, marks


@pytest.fixture(scope="module", params=MODES, ids=lambda m: m.name)
def scene(request, tmp_path_factory):
    mode = request.param
    mem = Memory(256)
    root, marks = build_scene(mem, mode)
    src = mem.image(tmp_path_factory.mktemp("scene") / "scene.img")
    yield mode, src, root, marks
    src.close()


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_map_range_agrees_with_translate(scene, data):
    mode, src, root, marks = scene
    mark = data.draw(st.sampled_from(marks))
    start = max(0, mark // KIB4 + data.draw(st.integers(-1500, 1500))) * KIB4
    if mode is not PAE and start < BASE[mode.name]:
        start = BASE[mode.name]
    npages = data.draw(st.integers(0, 1500))
    if mode is PAE:
        start = min(start, (1 << 32) - KIB4)
        npages = min(npages, ((1 << 32) - start) // KIB4)
    w = PageTableWalker(src, root, mode)
    rm = w.map_range(start, npages)
    unmapped_by_findings = np.zeros(npages, dtype=bool)
    for f in rm.findings:
        assert start <= f.vaddr_first <= f.vaddr_last < start + npages * KIB4
        if f.kind in (F.PT_NOT_PRESENT, F.PT_UNREADABLE, F.PT_FRAME_ZERO):
            a = (f.vaddr_first - start) // KIB4
            assert not unmapped_by_findings[a:(f.vaddr_last - start) // KIB4 + 1].any()
            unmapped_by_findings[a:(f.vaddr_last - start) // KIB4 + 1] = True
    for p in range(npages):
        tr = w.translate(start + p * KIB4)
        assert bool(rm.mapped[p]) == (tr.maddr is not None)
        assert int(rm.mfns[p]) == (tr.mfn or 0)
        assert int(rm.l1_tables[p]) == (tr.path[-1].table_mfn if tr.page_size == KIB4 else 0)
        assert unmapped_by_findings[p] == (tr.maddr is None)
    # every table page read once, whichever path read it first (the root: by the constructor)
    assert w.pages_read == len(set().union({root}, *(set(t.tolist()) for t in rm.tables.values())))


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_path_translator_agrees_with_the_walker(scene, data):
    """The struct-based single translation (what single lookups use) gives the
    walker's Translation and the bulk map's frame for random addresses around
    every kind of entry: 4 KiB, 2 MiB and 1 GiB pages, non-present entries,
    tables outside the image, frame 0, shared tables, loops."""
    mode, src, root, marks = scene
    mark = data.draw(st.sampled_from(marks))
    va = mark + data.draw(st.integers(-3 * MIB2, 3 * MIB2))
    if mode is PAE:
        va = min(max(va, 0), (1 << 32) - 1)
    elif va < BASE[mode.name]:
        va = BASE[mode.name]
    counting = CountingImage(src.path)
    light = PathTranslator(counting, root, mode)
    walker = PageTableWalker(src, root, mode)
    got, want = light.translate(va), walker.translate(va)
    assert got == want
    assert int(walker.map_range(va & ~(KIB4 - 1), 1).mfns[0]) == (got.mfn or 0)
    # only the path was read, each page once
    tables = {s.table_mfn for s in got.path} | {root}
    assert set(counting.reads) == tables and light.pages_read == len(tables)
    assert all(n == 1 for n in counting.reads.values())
    counting.close()


def test_translator_for_cr3_checks_like_the_walker(tmp_path):
    mem = Memory(8)
    root = mem.alloc()
    with mem.image(tmp_path / "m.img") as src:
        for args in [((1 << 32) | fold_cr3(root, 4), 4), (root << 12, 2), (0, 8),
                     (100 << 12, 8), (root << 12, 4, True)]:
            with pytest.raises((LayoutError, TreeError)) as light:
                translator_for_cr3(src, *args)
            with pytest.raises(type(light.value)) as bulk:
                walker_for_cr3(src, *args)
            assert str(light.value) == str(bulk.value)
        t = translator_for_cr3(src, fold_cr3(root, 4), 4)
        assert (t.root_mfn, t.mode, t.pages_read) == (root, PAE, 1)
        with pytest.raises(LayoutError, match="canonical"):
            t.translate(1 << 32)


def test_scene_findings_and_single_reads(scene, tmp_path):
    mode, src, root, marks = scene
    counting = CountingImage(src.path)
    w = PageTableWalker(counting, root, mode)
    first, last = marks[0], (marks[7] if mode is not PAE else (1 << 32)) - KIB4
    rm = w.map_range(first, (last - first) // KIB4 + 1)
    assert all(n == 1 for n in counting.reads.values())
    assert len(counting.reads) == w.pages_read
    w.map_range(first, 1000)
    assert all(n == 1 for n in counting.reads.values())
    got = {f.kind for f in rm.findings}
    assert {F.PT_NOT_PRESENT, F.PT_UNREADABLE, F.PT_FRAME_ZERO, F.PT_LOOP, F.PT_LARGE_PAGE,
            F.PT_SHARED_TABLE} <= got
    loops = {f.mfn for f in kinds(rm, F.PT_LOOP)}
    assert root in loops
    for lv, tables in rm.tables.items():
        assert (np.diff(tables.astype(np.int64)) > 0).all()
        assert set(rm.table_refs[lv]) == (set(tables.tolist()) - ({root} if lv == levels_of(mode)
                                                                   else set()))
    counting.close()


# -- speed and progress -----------------------------------------------------------------------

def test_a_million_pages_quickly(tmp_path):
    """2^20 pages (4 GiB of virtual space): 2048 distinct L1 tables."""
    mem = Memory(4096)
    root = mem.alloc()
    base = BASE["x86-64"]
    l2s = []
    for j in range(4):
        l2 = mem.alloc()
        l2s.append(l2)
        install(mem, X86_64, root, base + j * GIB, 3, table(l2))
    for n in range(2048):
        l1 = mem.alloc()
        mem.frames[l1][:] = (((np.arange(512, dtype=np.uint64) + np.uint64(0x200000 + n * 512))
                              << np.uint64(12)) | np.uint64(PAGE_KERNEL))
        mem.put(l2s[n // 512], n % 512, table(l1))
    calls = []
    with mem.image(tmp_path / "big.img") as src:
        w = PageTableWalker(src, root, X86_64)
        t0 = time.perf_counter()
        rm = w.map_range(base, 1 << 20, progress=lambda done, total: calls.append((done, total)))
        elapsed = time.perf_counter() - t0
    assert (rm.mfns == np.arange(0x200000, 0x200000 + (1 << 20), dtype=np.uint64)).all()
    assert rm.mapped.all() and not rm.findings
    assert w.pages_read == 1 + 1 + 4 + 2048
    assert elapsed < 1.0, elapsed
    assert calls[-1] == (1 << 20, 1 << 20) and len(calls) >= 50
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)
