"""The list writer shapes a Linux linear p2m list (arch/x86/xen/p2m.c) and its page tables.

Every check reads the generated files by hand (struct / numpy, page tables
followed from the root here): the list walker is written separately and is
not what checks the writer.
"""
import json
import os
import struct
import time
import tracemalloc

import numpy as np
import pytest
from click.testing import CliRunner

from p2mdump import paging as P
from p2mdump.cli import main
from p2mdump.errors import SpecError
from p2mdump.layout import PAGE_SIZE, layout_for
from p2mdump.schemas.pagetable import PageTableEntry, PageTablePage
from p2mdump.writer import GuestSpec, build_list, e820_example, generate
from p2mdump.writer.containers import generate_container

MISSING, IDENTITY, PFN = "missing", "identity", "pfn"


# -- reading frames by hand ------------------------------------------------------------

class Frames:
    """Machine frames by MFN from a raw image, an xl dump-core file or an ELF core."""

    def __init__(self, path, container="raw", base=0):
        self.fh = open(path, "rb")
        self.cache = {}
        self.where = None
        self.base = base
        if container == "xc-core":
            sec = self.sections()
            pairs = np.frombuffer(self.read(*sec[".xen_p2m"]), dtype="<u8").reshape(-1, 2)
            self.pairs = pairs
            off = sec[".xen_pages"][0]
            self.where = {int(m): off + k * PAGE_SIZE for k, m in enumerate(pairs[:, 1].tolist())
                          if m != 2 ** 64 - 1}
            self.shared_info = self.read(*sec[".xen_shared_info"])
        elif container == "elf":
            head = self.read(0, 64)
            phoff, = struct.unpack_from("<Q", head, 0x20)
            phnum, = struct.unpack_from("<H", head, 0x38)
            self.where = {}
            for i in range(phnum):
                _t, _f, off, _va, paddr, filesz = struct.unpack_from(
                    "<IIQQQQ", self.read(phoff + 56 * i, 56))
                for k in range(filesz // PAGE_SIZE):
                    self.where[paddr // PAGE_SIZE + k] = off + k * PAGE_SIZE

    def read(self, off, size):
        self.fh.seek(off)
        return self.fh.read(size)

    def sections(self):
        head = self.read(0, 64)
        shoff, = struct.unpack_from("<Q", head, 0x28)
        shnum, shstrndx = struct.unpack_from("<HH", head, 0x3C)
        hdrs = [struct.unpack_from("<IIQQQQ", self.read(shoff + 64 * i, 40)) for i in range(shnum)]
        strtab = self.read(hdrs[shstrndx][4], hdrs[shstrndx][5])
        return {strtab[h[0]:strtab.index(b"\0", h[0])].decode(): (h[4], h[5]) for h in hdrs}

    def frame(self, mfn):
        if mfn not in self.cache:
            off = self.base + mfn * PAGE_SIZE if self.where is None else self.where[mfn]
            data = self.read(off, PAGE_SIZE)
            assert len(data) == PAGE_SIZE, f"frame {mfn:#x} is not in the file"
            self.cache[mfn] = data
        return self.cache[mfn]

    def qwords(self, mfn):
        return np.frombuffer(self.frame(mfn), dtype="<u8")

    def close(self):
        self.fh.close()


def frame_of(entry):
    return (entry & P.PTE_FRAME_MASK) >> 12


def unfold(cr3, ws):
    if ws == 8:
        return cr3 >> 12
    return ((cr3 >> 12) | (cr3 << 20)) & 0xFFFFFFFF


def translate(frames, root, vaddr, ws):
    """[(level, table MFN, index, entry)] from the root table down to the PTE of ``vaddr``."""
    path = []
    table = root
    for level in range(4 if ws == 8 else 3, 0, -1):
        width = 3 if (ws == 4 and level == 3) else 511
        idx = (vaddr >> (12 + 9 * (level - 1))) & width
        entry = int(frames.qwords(table)[idx])
        path.append((level, table, idx, entry))
        assert entry & P.PTE_PRESENT, f"{vaddr:#x}: level {level} entry not present"
        table = frame_of(entry)
    return path


def list_pages(frames, side):
    """MFN mapped for each list page, and its PTE, followed by hand from p2m_cr3."""
    ws = side["word_size"]
    root = unfold(side["p2m_cr3"], ws)
    out = []
    for i in range(side["list_pfns"] * ws // PAGE_SIZE):
        pte = translate(frames, root, side["p2m_vaddr"] + i * PAGE_SIZE, ws)[-1][3]
        out.append((frame_of(pte), pte))
    return out


def hand_table(frames, side):
    """The list's words for pfns 0..max_pfn-1, read through the page tables."""
    ws = side["word_size"]
    words = [np.frombuffer(frames.frame(m), dtype=f"<u{ws}") for m, _ in list_pages(frames, side)]
    return np.concatenate(words)[:side["max_pfn"]]


def load(path):
    with open(str(path) + ".json") as fh:
        side = json.load(fh)
    return side


def truth_of(path, ws):
    return np.fromfile(path, dtype=f"<u{ws}")


# -- what Linux's rebuild makes of a spec, pfn by pfn --------------------------------------

def linux_rebuild(spec):
    """(region kinds, page kinds) by the loop of xen_rebuild_p2m_list, from the spec's masks."""
    L = layout_for(spec.word_size)
    fpp = L.per_page
    region = fpp * fpp
    n = -(-max(spec.extent, 1) // region) * region

    def mask(ranges):
        m = np.zeros(n, dtype=bool)
        for a, b in ranges:
            m[a:b] = True
        return m

    foreign = mask(spec.foreign)
    ident = mask(spec.identity) & ~foreign
    own = mask(spec.ram) & ~mask(spec.holes) & ~mask(spec.ballooned) & ~ident & ~foreign
    typ = np.full(n, 0, dtype=np.uint8)           # 0 missing, 1 identity, 2 pfn
    typ[ident] = 1
    typ[own | foreign] = 2
    last = int(np.flatnonzero(own | foreign).max()) + 1 if (own | foreign).any() else 0
    init = -(-max(spec.max_pfn, last) // fpp) * fpp
    typ[init:] = 1
    names = {0: MISSING, 1: IDENTITY}
    regions, pages = {}, {}
    pfn = 0
    while pfn < n:
        if pfn % region == 0:
            t = np.unique(typ[pfn:pfn + region])
            if len(t) == 1 and t[0] != 2:
                regions[pfn // region] = names[int(t[0])]
                for p in range(pfn // fpp, (pfn + region) // fpp):
                    pages[p] = names[int(t[0])]
                pfn += region
                continue
        t = np.unique(typ[pfn:pfn + fpp])
        pages[pfn // fpp] = names[int(t[0])] if len(t) == 1 and t[0] != 2 else PFN
        pfn += fpp
    return regions, pages, own


SPECS = {
    # the E820 example of p2m.c: whole missing and whole identity regions,
    # identity pages, a partly identity page, a tail past the initial array
    "e820": lambda ws: e820_example(ws, representation="list"),
    # a whole missing and a whole identity region, missing and identity
    # pages, identity past the initial array
    "regions": lambda ws: GuestSpec(
        word_size=ws, representation="list", max_pfn=7 * layout_for(ws).pfns_per_mid // 2,
        ram=[(0, 0x1000)], identity=[(layout_for(ws).pfns_per_mid,
                                      2 * layout_for(ws).pfns_per_mid)]),
    "mixed": lambda ws: GuestSpec(word_size=ws, representation="list", max_pfn=0x9000,
                                  identity=[(0xA0, 0x100), (0x5000, 0x5800)],
                                  ballooned=[(0x4000, 0x4800)], foreign=[(0x6000, 0x6010)],
                                  mfn_order="linear", seed=1),
}


# -- the list, read through the page tables ---------------------------------------------------

@pytest.mark.parametrize("ws", [8, 4])
@pytest.mark.parametrize("name", sorted(SPECS))
def test_list_read_by_hand_is_the_truth(tmp_path, ws, name):
    spec = SPECS[name](ws)
    img = tmp_path / "g.img"
    generate(spec, img, truth=tmp_path / "g.truth")
    side = load(img)
    truth = truth_of(tmp_path / "g.truth", ws)
    assert len(truth) == spec.max_pfn
    fr = Frames(img)
    try:
        assert hand_table(fr, side).tobytes() == truth.tobytes()
        # single words, the way a walker looks one pfn up
        root = unfold(side["p2m_cr3"], ws)
        for pfn in (0, 0xA0, 0x4000, spec.max_pfn - 1):
            va = side["p2m_vaddr"] + pfn * ws
            mfn = frame_of(translate(fr, root, va, ws)[-1][3])
            word = int.from_bytes(fr.frame(mfn)[va % PAGE_SIZE:va % PAGE_SIZE + ws], "little")
            assert word == truth[pfn]
    finally:
        fr.close()
    # valid entries: the guest's own pfns, numbered in pfn order (linear)
    _, _, own = linux_rebuild(spec)
    own = np.flatnonzero(own[:spec.max_pfn])
    L = layout_for(ws)
    valid = truth[(truth != L.invalid) & ((truth & L.flag_mask) == 0)]
    assert len(valid) == len(own)
    assert np.array_equal(valid.astype(np.int64), valid[0] + np.arange(len(own)))
    assert side["truth_counts"]["valid"] == len(own)


@pytest.mark.parametrize("ws", [8, 4])
@pytest.mark.parametrize("name", sorted(SPECS))
def test_shared_frames_where_linux_uses_them(tmp_path, ws, name):
    spec = SPECS[name](ws)
    img = tmp_path / "g.img"
    generate(spec, img)
    side = load(img)
    ph = side["list_placeholders"]
    regions, pages, _ = linux_rebuild(spec)
    L = layout_for(ws)
    fpp = L.per_page
    fr = Frames(img)
    try:
        # the shared frames: all-INVALID pages, PTE pages mapping them read-only
        for name_, target in (("p2m_missing_pte", "p2m_missing"),
                              ("p2m_identity_pte", "p2m_identity")):
            assert np.all(fr.qwords(ph[name_]) == (ph[target] << 12) | P.PAGE_KERNEL_RO)
            assert np.all(np.frombuffer(fr.frame(ph[target]), dtype=f"<u{ws}") == L.invalid)
        root = unfold(side["p2m_cr3"], ws)
        region_pages = fpp  # list pages per mid region
        private = []
        for p in range(side["list_pfns"] // fpp):
            path = translate(fr, root, side["p2m_vaddr"] + p * PAGE_SIZE, ws)
            pmd, pte = path[-2][3], path[-1][3]
            kind = regions.get(p // region_pages)
            if kind is not None:
                assert pmd == (ph[f"p2m_{kind}_pte"] << 12) | P.KERNPG_TABLE, (p, kind)
            else:
                assert frame_of(pmd) not in (ph["p2m_missing_pte"], ph["p2m_identity_pte"])
                assert pmd & 0xFFF == P.KERNPG_TABLE
            if pages[p] == PFN:
                assert pte == (frame_of(pte) << 12) | P.PAGE_KERNEL
                private.append(frame_of(pte))
            else:
                assert pte == (ph[f"p2m_{pages[p]}"] << 12) | P.PAGE_KERNEL_RO, (p, pages[p])
        assert len(set(private)) == len(private) == side["list_pages"]
        assert not set(private) & set(ph.values())
    finally:
        fr.close()
    if name == "regions":
        # every shape the rebuild knows is there
        assert set(regions.values()) == {MISSING, IDENTITY}
        assert set(pages[p] for p in pages if p // fpp not in regions) == {MISSING, IDENTITY, PFN}


@pytest.mark.parametrize("ws", [8, 4])
def test_page_table_upper_levels(tmp_path, ws):
    img = tmp_path / "g.img"
    generate(SPECS["mixed"](ws), img)
    side = load(img)
    fr = Frames(img)
    try:
        assert side["paging"] == ("x86-64" if ws == 8 else "pae")
        root = unfold(side["p2m_cr3"], ws)
        assert root == side["root_mfn"]
        top = fr.qwords(root)
        used = np.flatnonzero(top)
        if ws == 4:
            # PAE: the top table has 4 entries, PDPTEs carry only the present bit
            assert used.max() < 4
            assert np.all(top[used] & 0xFFF == P.PTE_PRESENT)
            assert side["p2m_cr3"] == ((root << 12) | (root >> 20)) & 0xFFFFFFFF
        else:
            assert np.all(top[used] & 0xFFF == P.KERNPG_TABLE)
            assert side["p2m_cr3"] == root << 12
        path = translate(fr, root, side["p2m_vaddr"], ws)
        for level, _table, _idx, entry in path[:-1]:
            if not (ws == 4 and level == 3):
                assert entry & 0xFFF == P.KERNPG_TABLE
        # the level-1 page decodes with the Construct schema as written
        l1 = PageTablePage.parse(fr.frame(path[-1][1]))["entries"]
        first = path[-1][2]
        pte = PageTableEntry.parse(struct.pack("<Q", l1[first]))
        assert pte.present and pte.rw and pte.nx and pte.accessed and pte.dirty
        assert not (pte.user or pte.pse) and pte.frame == frame_of(path[-1][3])
        pmd = PageTableEntry.parse(struct.pack("<Q", path[-2][3]))
        assert pmd.present and pmd.rw and not pmd.nx and pmd.frame == path[-1][1]
    finally:
        fr.close()


# -- the list not starting a PMD; other mappings ------------------------------------------------

@pytest.mark.parametrize("ws,vaddr", [(8, 0xFFFFC90000000000 + 5 * PAGE_SIZE),
                                      (8, 0xFFFFC9003FE00000 + 0x7000),
                                      (4, 0xF4000000 + 3 * PAGE_SIZE)])
def test_vaddr_not_starting_a_pmd(tmp_path, ws, vaddr):
    spec = GuestSpec(word_size=ws, representation="list", max_pfn=0x50000,
                     ram=[(0, 0x2000), (0x48000, 0x50000)], identity=[(0x2000, 0x2400)],
                     p2m_vaddr=vaddr)
    img = tmp_path / "g.img"
    generate(spec, img, truth=tmp_path / "g.truth")
    side = load(img)
    assert side["p2m_vaddr"] == vaddr and vaddr % P.level_span(2)
    fr = Frames(img)
    try:
        assert hand_table(fr, side).tobytes() == truth_of(tmp_path / "g.truth", ws).tobytes()
        # the first level-1 table holds other pages in front of the list
        path = translate(fr, side["root_mfn"], vaddr, ws)
        l1, first = path[-1][1], path[-1][2]
        before = dict((v, n) for v, n in side["other_mappings"])[vaddr - 4 * PAGE_SIZE]
        assert before == 4 and first > 0
        entries = fr.qwords(l1)
        list_mfns = {m for m, _ in list_pages(fr, side)}
        for i in range(max(0, first - 4), first):
            assert entries[i] & P.PTE_PRESENT and frame_of(int(entries[i])) not in list_mfns
        # and other pages just after its end, in the last level-1 table
        end = vaddr + side["list_pfns"] * ws
        last = translate(fr, side["root_mfn"], end, ws)[-1][3]
        assert frame_of(last) not in list_mfns
    finally:
        fr.close()


def test_other_mappings_and_without(tmp_path):
    spec = SPECS["mixed"](8)
    generate(spec, tmp_path / "a.img")
    side = load(tmp_path / "a.img")
    kernel = [v for v, n in side["other_mappings"] if v == 0xFFFFFFFF81000000]
    assert kernel and len(side["other_mappings"]) == 3
    fr = Frames(tmp_path / "a.img")
    try:
        list_mfns = {m for m, _ in list_pages(fr, side)}
        for v, n in side["other_mappings"]:
            for i in range(n):
                pte = translate(fr, side["root_mfn"], v + i * PAGE_SIZE, 8)[-1][3]
                assert pte & 0xFFF == P.PAGE_KERNEL & 0xFFF
                assert frame_of(pte) not in list_mfns
    finally:
        fr.close()
    bare = GuestSpec(**{**spec.to_dict(), "other_mappings": False})
    generate(bare, tmp_path / "b.img", truth=tmp_path / "b.truth")
    side_b = load(tmp_path / "b.img")
    assert side_b["other_mappings"] == [] and side_b["table_pages"] < side["table_pages"]
    fr = Frames(tmp_path / "b.img")
    try:
        top = fr.qwords(side_b["root_mfn"])
        assert np.count_nonzero(top) == 1           # only the list's L4 slot
        l1 = translate(fr, side_b["root_mfn"], side_b["p2m_vaddr"], 8)[-1][1]
        assert np.count_nonzero(fr.qwords(l1)) == side_b["list_pfns"] * 8 // PAGE_SIZE
        assert hand_table(fr, side_b).tobytes() == truth_of(tmp_path / "b.truth", 8).tobytes()
    finally:
        fr.close()


# -- both: the MFN tree over the list ---------------------------------------------------------

@pytest.mark.parametrize("ws", [8, 4])
def test_both_tree_leaves_are_list_pages(tmp_path, ws):
    spec = e820_example(ws, representation="both")
    img = tmp_path / "g.img"
    generate(spec, img, truth=tmp_path / "g.truth")
    side = load(img)
    L = layout_for(ws)
    fpp = L.per_page
    regions, _, _ = linux_rebuild(spec)
    fr = Frames(img)
    try:
        mapped = [m for m, _ in list_pages(fr, side)]
        top = np.frombuffer(fr.frame(side["top_mfn"]), dtype=f"<u{ws}")
        ph = side["placeholders"]
        assert ph["leaf_missing"] == side["list_placeholders"]["p2m_missing"]
        assert ph["leaf_identity"] == side["list_placeholders"]["p2m_identity"]
        mid_missing = np.frombuffer(fr.frame(ph["mid_missing"]), dtype=f"<u{ws}")
        assert np.all(mid_missing == ph["leaf_missing"])
        n_regions = side["list_pfns"] // (fpp * fpp)
        leaves = []
        for t in range(fpp):
            if t >= n_regions or t in regions:
                assert top[t] == ph["mid_missing"], t
                leaves += [ph["leaf_missing"]] * fpp
                continue
            mid = np.frombuffer(fr.frame(int(top[t])), dtype=f"<u{ws}")
            assert mid.tolist() == mapped[t * fpp:(t + 1) * fpp]
            leaves += mid.tolist()
        # the tree, followed by hand, reads the same table as the list
        words = np.concatenate([np.frombuffer(fr.frame(int(m)), dtype=f"<u{ws}")
                                for m in leaves[:-(-spec.max_pfn // fpp)]])[:spec.max_pfn]
        assert words.tobytes() == truth_of(tmp_path / "g.truth", ws).tobytes()
    finally:
        fr.close()


def test_both_walks_with_the_tree_walker(tmp_path):
    """The existing tree walker reads a ``both`` guest's tree to the same truth."""
    from p2mdump.sources import RawImage
    from p2mdump.walker import walk

    spec = GuestSpec(word_size=8, representation="both", max_pfn=0x50000,
                     identity=[(0x100, 0x200), (0x30000, 0x40000)])
    img = tmp_path / "g.img"
    generate(spec, img, truth=tmp_path / "g.truth")
    side = load(img)
    with RawImage(str(img)) as src:
        r = walk(src, side["top_mfn"], max_pfn=side["max_pfn"])
    assert r.table.raw.tobytes() == (tmp_path / "g.truth").read_bytes()
    assert not r.warnings()


# -- sidecar ----------------------------------------------------------------------------------

def test_sidecar_fields(tmp_path):
    spec = GuestSpec(word_size=8, representation="list", max_pfn=0x9000, p2m_generation=6)
    generate(spec, tmp_path / "l.img")
    side = load(tmp_path / "l.img")
    g = build_list(spec)
    assert side["representation"] == "list" and side["top_mfn"] is None
    assert side["paging"] == "x86-64" and side["word_size"] == 8
    assert side["p2m_vaddr"] == 0xFFFFC90000000000
    assert side["p2m_generation"] == 6
    assert side["list_pfns"] == 1 << 18
    assert side["root_mfn"] == g.root_mfn and side["p2m_cr3"] == g.root_mfn << 12
    assert set(side["list_placeholders"]) == {"p2m_missing", "p2m_identity", "p2m_missing_pte",
                                              "p2m_identity_pte"}
    assert "placeholders" not in side
    assert GuestSpec.from_dict(side["spec"]) == spec
    assert side["frames"] * PAGE_SIZE == os.path.getsize(tmp_path / "l.img")
    # both: the tree's fields as a tree sidecar has them
    both = GuestSpec(word_size=4, representation="both", max_pfn=0x9000)
    generate(both, tmp_path / "b.img")
    side = load(tmp_path / "b.img")
    assert isinstance(side["top_mfn"], int) and side["paging"] == "pae"
    assert set(side["placeholders"]) == {"mid_missing", "leaf_missing", "leaf_identity"}
    assert side["list_pfns"] == 1 << 20


def test_tree_sidecar_and_spec_unchanged(tmp_path):
    spec = GuestSpec(word_size=8, max_pfn=0x1000)
    generate(spec, tmp_path / "t.img")
    side = load(tmp_path / "t.img")
    assert set(side) == {"format", "container", "word_size", "page_size", "top_mfn", "max_pfn",
                         "base", "frames", "placeholders", "tree_pages", "truth_counts", "spec"}
    assert "representation" not in side["spec"] and "p2m_vaddr" not in side["spec"]


# -- xl dump-core and ELF ---------------------------------------------------------------------

ARCH = {8: (3088, "<QQQQQQ"), 4: (2316, "<IIIIII")}


def arch_fields(shared_info, ws):
    off, fmt = ARCH[ws]
    keys = ("max_pfn", "fll", "nmi_reason", "p2m_cr3", "p2m_vaddr", "p2m_generation")
    return dict(zip(keys, struct.unpack_from(fmt, shared_info, off)))


@pytest.mark.parametrize("ws", [8, 4])
@pytest.mark.parametrize("rep", ["list", "both"])
def test_xc_core(tmp_path, ws, rep):
    spec = GuestSpec(word_size=ws, representation=rep, max_pfn=0x3000, identity=[(0xA0, 0x100)],
                     ballooned=[(0x1000, 0x1400)], foreign=[(0x2F00, 0x2F04)],
                     mfn_order="shuffled", data=True, p2m_generation=2, seed=11)
    core = tmp_path / "g.core"
    generate_container(spec, core, container="xc-core", truth=tmp_path / "g.truth")
    side = load(core)
    fr = Frames(core, "xc-core")
    try:
        a = arch_fields(fr.shared_info, ws)
        assert a["max_pfn"] == 0x3000 and a["p2m_generation"] == 2
        assert a["p2m_cr3"] == side["p2m_cr3"] and a["p2m_vaddr"] == side["p2m_vaddr"]
        assert a["fll"] == (layout_for(ws).word_mask if rep == "list" else side["top_mfn"])
        assert unfold(a["p2m_cr3"], ws) == side["root_mfn"]
        truth = truth_of(tmp_path / "g.truth", ws)
        # the list, walked inside the dump from shared_info alone
        fake = dict(side, p2m_cr3=a["p2m_cr3"], p2m_vaddr=a["p2m_vaddr"], max_pfn=a["max_pfn"])
        assert hand_table(fr, fake).tobytes() == truth.tobytes()
        # .xen_p2m: the pfns whose word is a plain MFN, ascending, pair = (pfn, word)
        L = layout_for(ws)
        plain = np.flatnonzero((truth != L.invalid) & ((truth & L.flag_mask) == 0))
        assert fr.pairs[:, 0].tolist() == plain.tolist()
        assert fr.pairs[:, 1].tolist() == truth[plain].tolist()
        # data pages stamped with (pfn, mfn); structure pages hold themselves
        stamped = [k for k in range(len(plain))
                   if fr.read(fr.where[int(fr.pairs[k, 1])], 8) == b"P2MDATA\0"]
        assert len(stamped) == len(plain) - side["meta_pages"]
        lo, hi = side["meta_pfns"]
        assert hi <= 0x3000 and hi - lo >= side["meta_pages"]
    finally:
        fr.close()


def test_xc_core_odd_generation(tmp_path):
    with pytest.raises(SpecError, match="odd"):
        GuestSpec(representation="list", p2m_generation=7)
    spec = GuestSpec(representation="list", max_pfn=0x2000, p2m_generation=7,
                     allow_odd_generation=True)
    generate_container(spec, tmp_path / "g.core", container="xc-core")
    fr = Frames(tmp_path / "g.core", "xc-core")
    try:
        assert arch_fields(fr.shared_info, 8)["p2m_generation"] == 7
    finally:
        fr.close()


BUG_SPEC = dict(representation="list", ram=[(0, 0x1000)])


@pytest.mark.parametrize("ws,vaddr,drops", [
    (8, 0xFFFFC90000200000, True),    # level-2 index 1: the last PMD is lost
    (8, 0xFFFFC90000000000, False),   # level-2 index 0: nothing is lost
    (4, None, True),                  # the PAE default is not at level-2 index 0
])
def test_xen_dumpcore_bug(tmp_path, ws, vaddr, drops):
    L = layout_for(ws)
    pmd_pfns = P.level_span(2) // ws
    max_pfn = 6 * pmd_pfns
    spec = GuestSpec(word_size=ws, max_pfn=max_pfn, p2m_vaddr=vaddr,
                     ram=[(0, 0x1000), (max_pfn - 0x3000, max_pfn)],
                     representation="list")
    generate_container(spec, tmp_path / "ok.core", container="xc-core")
    generate_container(spec, tmp_path / "bug.core", container="xc-core", xen_dumpcore_bug=True)
    ok, bug = Frames(tmp_path / "ok.core", "xc-core"), Frames(tmp_path / "bug.core", "xc-core")
    side = load(tmp_path / "bug.core")
    try:
        assert len(ok.pairs) == len(bug.pairs) == 0x4000          # nr_pages unchanged
        assert ((side["p2m_vaddr"] >> 21) & 511 != 0) == drops
        lost = np.flatnonzero(ok.pairs[:, 0] >= max_pfn - pmd_pfns) if drops else []
        assert len(lost) == (0x3000 if drops else 0)
        kept = len(ok.pairs) - len(lost)
        assert np.array_equal(bug.pairs[:kept, 0], ok.pairs[:kept, 0])
        assert np.all(bug.pairs[kept:] == 2 ** 64 - 1)
        if drops:
            pages_off = bug.sections()[".xen_pages"][0]
            assert bug.read(pages_off + kept * PAGE_SIZE, PAGE_SIZE) == bytes(PAGE_SIZE)
        assert side["xen_dumpcore_bug"]["dropped"] == [max_pfn - pmd_pfns if drops else max_pfn,
                                                       max_pfn]
        # the structure pages stay inside what Xen dumps: the list can be walked
        lo, hi = side["meta_pfns"]
        assert hi <= side["xen_dumpcore_bug"]["p2m_size"]
        table = hand_table(bug, side)
        low = bug.pairs[bug.pairs[:, 0] < 0x1000]
        assert len(low) == 0x1000 and L.invalid not in table[:0x1000]
        assert np.array_equal(table[low[:, 0].astype(np.int64)], low[:, 1])
    finally:
        ok.close()
        bug.close()


@pytest.mark.parametrize("ws", [8, 4])
def test_elf_core(tmp_path, ws):
    spec = GuestSpec(word_size=ws, representation="both", max_pfn=0x800,
                     identity=[(0xA0, 0xC0)], data=True, placement="scattered",
                     scatter_span=0x400, shuffle_leaves=True, seed=4)
    generate_container(spec, tmp_path / "g.elf", container="elf", truth=tmp_path / "g.truth")
    side = load(tmp_path / "g.elf")
    fr = Frames(tmp_path / "g.elf", "elf")
    try:
        assert hand_table(fr, side).tobytes() == truth_of(tmp_path / "g.truth", ws).tobytes()
        # structure pages, data frames and the shared_info frame
        assert len(fr.where) == side["elf"]["frames"] == side["meta_pages"] + 0x800 - 0x20 + 1
        assert arch_fields(fr.frame(side["shared_info_mfn"]), ws)["p2m_cr3"] == side["p2m_cr3"]
    finally:
        fr.close()


# -- capacity, checks -------------------------------------------------------------------------

def test_capacity():
    assert GuestSpec(representation="list", max_pfn=1 << 32, ram=[]).list_pfns == 1 << 32
    with pytest.raises(SpecError, match="capacity"):
        GuestSpec(representation="list", max_pfn=(1 << 32) + 1)
    with pytest.raises(SpecError, match="capacity"):
        GuestSpec(representation="both", max_pfn=(1 << 27) + 1)
    with pytest.raises(SpecError, match="capacity"):
        GuestSpec(representation="tree", max_pfn=(1 << 27) + 1)


@pytest.mark.parametrize("bad,match", [
    (dict(representation="list", p2m_vaddr=0xFFFF800000100000), "hypervisor"),
    (dict(representation="list", p2m_vaddr=0xFFFF87FFFFF00000), "hypervisor"),
    (dict(representation="list", p2m_vaddr=0x00007FFFFFF00000), "canonical"),
    (dict(representation="list", p2m_vaddr=0xFFFFFFFFFFF00000), "wraps"),
    (dict(representation="list", p2m_vaddr=0xFFFFC90000000800), "page aligned"),
    (dict(representation="list", word_size=4, p2m_vaddr=0xF5600000), "hypervisor"),
    (dict(representation="list", word_size=4, max_pfn=1 << 30), "hypervisor|negative"),
    (dict(representation="tree", p2m_vaddr=0xFFFFC90000000000), "list and both"),
    (dict(representation="tree", other_mappings=False), "list and both"),
    (dict(representation="list", max_pfn=0), "at least 1"),
    (dict(representation="both", identity_leaf="missing"), "tree guests only"),
    (dict(representation="graph"), "representation"),
])
def test_bad_list_specs(bad, match):
    with pytest.raises(SpecError, match=match):
        GuestSpec(**bad)


def test_deterministic(tmp_path):
    spec = GuestSpec(word_size=8, representation="both", max_pfn=0x9000, mfn_order="chunked",
                     placement="scattered", scatter_span=0x1000, seed=5)
    generate(spec, tmp_path / "a.img", truth=tmp_path / "a.truth")
    generate(spec, tmp_path / "b.img", truth=tmp_path / "b.truth")
    for suffix in ("img", "truth", "img.json"):
        assert (tmp_path / f"a.{suffix}").read_bytes() == (tmp_path / f"b.{suffix}").read_bytes()


# -- a big sparse guest -----------------------------------------------------------------------

def test_big_sparse_list_guest(tmp_path):
    """2^28 pfns (a 2 GiB table): written piecewise into a sparse file."""
    n = 1 << 28
    ram = [(0, 0x10000), (0x4000000, 0x4010000), (n - 0x20000, n)]
    spec = GuestSpec(word_size=8, representation="list", max_pfn=n, ram=ram,
                     identity=[(0x100000, 0x100100)], seed=2)
    img = tmp_path / "big.img"
    tracemalloc.start()
    t0 = time.monotonic()
    try:
        generate(spec, img, truth=os.devnull)
        elapsed = time.monotonic() - t0
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 << 20, f"peak {peak >> 20} MiB"
    assert elapsed < 20
    st = os.stat(img)
    assert st.st_blocks * 512 < 16 << 20           # sparse: only the structure pages
    side = load(img)
    own = sum(b - a for a, b in ram)
    assert side["truth_counts"] == {"valid": own, "identity": 0x100,
                                    "missing": n - own - 0x100, "foreign": 0}
    assert side["list_pages"] == own // 512 + 1
    L = layout_for(8)
    fr = Frames(img)
    try:
        root = unfold(side["p2m_cr3"], 8)

        def word(pfn):
            va = side["p2m_vaddr"] + pfn * 8
            mfn = frame_of(translate(fr, root, va, 8)[-1][3])
            return struct.unpack_from("<Q", fr.frame(mfn), va % PAGE_SIZE)[0]

        base = word(0)
        rank = 0
        for a, b in ram:     # linear numbering: own pfns get base, base + 1, ... in pfn order
            for pfn in (a, a + 1, b - 1):
                assert word(pfn) == base + rank + pfn - a, hex(pfn)
            rank += b - a
        assert word(0x100000) == 0x100000 | L.identity_bit
        for pfn in (0x10000, 0x80000, 0x100100, n - 0x20001):
            assert word(pfn) == L.invalid
        # a hole: whole regions through the shared missing PTE page
        path = translate(fr, root, side["p2m_vaddr"] + 0x8000000 * 8, 8)
        assert frame_of(path[-2][3]) == side["list_placeholders"]["p2m_missing_pte"]
    finally:
        fr.close()


# -- command line -----------------------------------------------------------------------------

def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_cli_list(tmp_path):
    out = tmp_path / "g.img"
    r = run("generate", out, "--representation", "list", "--word-size", "4", "--max-pfn",
            "0x3000", "--p2m-vaddr", "0xF4003000", "--p2m-generation", "4",
            "--no-other-mappings", "--identity", "0x100-0x1ff", "--truth", tmp_path / "g.truth")
    assert r.exit_code == 0, r.output
    side = load(out)
    assert side["p2m_vaddr"] == 0xF4003000 and side["p2m_generation"] == 4
    assert side["other_mappings"] == [] and side["representation"] == "list"
    assert "p2m_cr3" in r.stderr
    fr = Frames(out)
    try:
        assert hand_table(fr, side).tobytes() == (tmp_path / "g.truth").read_bytes()
    finally:
        fr.close()
    r = run("generate", tmp_path / "c.core", "--representation", "both", "--container",
            "xc-core", "--xen-dumpcore-bug", "--max-pfn", "0x2000", "-q")
    assert r.exit_code == 0, r.output
    assert "xen_dumpcore_bug" in load(tmp_path / "c.core")


@pytest.mark.parametrize("args,match", [
    (["--xen-dumpcore-bug", "--representation", "list"], "xc-core"),
    (["--xen-dumpcore-bug", "--container", "xc-core"], "list or both"),
    (["--p2m-vaddr", "0xFFFFC90000000000"], "list and both"),
    (["--representation", "list", "--p2m-generation", "3"], "odd"),
])
def test_cli_errors(tmp_path, args, match):
    r = run("generate", tmp_path / "x.img", *args)
    assert r.exit_code == 2
    assert match in r.stderr and "Traceback" not in r.output


def test_cli_help():
    r = run("generate", "--help")
    for opt in ("--representation", "--p2m-vaddr", "--p2m-generation", "--no-other-mappings",
                "--xen-dumpcore-bug", "--allow-odd-generation"):
        assert opt in r.output
