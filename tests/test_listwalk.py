"""The linear p2m list walk (listwalk.walk_list through autowalk) on generated list guests:
round trips over random layouts, a list across bit 47 with 5-level paging, and a 1 TiB guest
walked with its peak memory measured."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from p2mdump.autowalk import resolve_all, walk_image
from p2mdump.layout import PAGE_SIZE, layout_for
from p2mdump.listwalk import memory_available, walk_list
from p2mdump.paging import PTE_FRAME_MASK, X86_64_LA57
from p2mdump.sidecar import read_sidecar
from p2mdump.sources import open_image
from p2mdump.sources.raw import RawImage
from p2mdump.verify import verify
from p2mdump.writer import GuestSpec
from p2mdump.writer.listcontainers import generate_list_container
from p2mdump.writer.listguest import PAGE_PRIVATE
from p2mdump.writer.listlayout import VMALLOC_START_X86_64, default_vaddr, list_pfns, region_pfns

from test_pagetable import Memory, install, page

GiB = 1 << 30


def truth_of(path, ws):
    return np.fromfile(path, dtype=f"<u{ws}")


def walk_generated(path, **kw):
    """Walk a generated image the way the CLI does without options."""
    with open_image(path) as src:
        res, _ = walk_image(src, sidecar=read_sidecar(path), **kw)
    return res


# -- round trips over random list layouts ---------------------------------------------------

@st.composite
def list_specs(draw):
    ws = draw(st.sampled_from([4, 8]))
    L = layout_for(ws)
    n = L.per_page
    region = region_pfns(ws)
    # up to two mid regions on 64-bit (1024 list pages), one on 32-bit
    limit = 2 * region if ws == 8 else region
    max_pfn = draw(st.integers(1, limit))

    def start():
        return draw(st.one_of(st.integers(0, max_pfn),
                              st.sampled_from([0, n, 3 * n, region // 2, region])))

    def ranges(k):
        out = []
        for _ in range(draw(st.integers(0, k))):
            a = min(start(), limit)
            ln = draw(st.sampled_from([1, 7, n - 1, n, n + 1, 3 * n, 50 * n, region]))
            out.append((a, min(a + ln, limit)))
        return out

    rep = draw(st.sampled_from(["list", "both"]))
    ram = ranges(3) or [(0, max_pfn)]
    holes, ballooned, identity, foreign = ranges(2), ranges(2), ranges(2), ranges(2)
    extent = max([max_pfn] + [b for r in (ram, holes, ballooned, identity, foreign)
                              for _, b in r])
    nbytes = list_pfns(extent, ws) * ws
    k = draw(st.sampled_from([0, 1, 5, 511, 512, 600]))      # pages past an aligned start
    where = draw(st.sampled_from(["default", "low"]))
    if where == "default":
        vaddr = (VMALLOC_START_X86_64 if ws == 8 else default_vaddr(4, nbytes)) + k * PAGE_SIZE
    else:
        vaddr = (0x00007F0000000000 if ws == 8 else 0x40000000) + k * PAGE_SIZE
    return GuestSpec(
        word_size=ws, max_pfn=max_pfn, ram=ram, holes=holes, ballooned=ballooned,
        identity=identity, foreign=foreign, representation=rep, p2m_vaddr=vaddr,
        mfn_order=draw(st.sampled_from(["linear", "chunked", "shuffled"])),
        placement=draw(st.sampled_from(["compact", "scattered"])),
        scatter_span=draw(st.sampled_from([1, 5000])),
        other_mappings=draw(st.booleans()),
        p2m_generation=2 * draw(st.integers(0, 50)), seed=draw(st.integers(0, 2 ** 31)))


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(spec=list_specs())
def test_generate_walk_round_trip(tmp_path, spec):
    img, truth_path = tmp_path / "l.img", tmp_path / "l.truth"
    guest = generate_list_container(spec, img, truth=truth_path)
    side = read_sidecar(img)
    truth = truth_of(truth_path, spec.word_size)
    res = walk_generated(img)
    assert res.representation == "list"
    assert res.table.raw.tobytes() == truth.tobytes()
    assert res.table.counts() == side["truth_counts"]
    # healthy: no warning, but for entries of the spec's ranges past max_pfn
    # and a guest whose every pfn is missing
    past = {"entries-past-max-pfn"} if spec.extent > spec.max_pfn else set()
    if side["truth_counts"]["missing"] == spec.max_pfn:
        past.add("empty-tree")
    assert {f.kind for f in res.warnings()} <= past, [str(f) for f in res.warnings()]
    info = res.list_info
    assert (info["p2m_cr3"], info["p2m_vaddr"], info["root_mfn"]) == (
        side["p2m_cr3"], side["p2m_vaddr"], side["root_mfn"])
    assert info["p2m_generation"] == spec.p2m_generation
    # the shared frames: every frame that backs two list pages or more is a
    # placeholder, reported as info
    n_pages = -(-spec.max_pfn // layout_for(spec.word_size).per_page)
    used, count = np.unique(guest.page_mfn[:n_pages], return_counts=True)
    assert set(info["list_placeholders"]) == {int(m) for m in used[count > 1]}
    assert set(info["list_placeholders"]) <= {side["list_placeholders"]["p2m_missing"],
                                              side["list_placeholders"]["p2m_identity"]}
    shared = [f for f in res.findings if f.kind == "shared-page"]
    assert all(f.severity == "info" for f in shared)
    assert {f.mfn for f in shared if f.level == "leaf"} == set(info["list_placeholders"])
    assert (guest.page_kind[:n_pages] != PAGE_PRIVATE).any() or not info["list_placeholders"]
    if spec.representation == "both":
        tree = walk_generated(img, representation="tree")
        assert tree.representation == "tree"
        assert tree.table.raw.tobytes() == truth.tobytes()
        assert {f.kind for f in tree.warnings()} <= past, [str(f) for f in tree.warnings()]
        with open_image(img) as src:
            todo = resolve_all(src, sidecar=side)
            assert [r.representation for r in todo] == ["list", "tree"]
            rep = verify(src, todo[0], also=todo[1])
        assert {f.kind for f in rep.warnings()} <= past, [str(f) for f in rep.warnings()]
        assert "tree-list-match" in {f.kind for f in rep.findings}


# -- 5-level paging: a list across bit 47 -------------------------------------------------------

def test_five_level_list_across_bit_47(tmp_path):
    """With LA57 the non-canonical gap is at bit 56: a list from just below
    0x0000800000000000 to just above it is one canonical range."""
    mem = Memory(256)
    root = mem.alloc()
    vaddr = 0x00007FFFFFFFE000            # two pages below bit 47, two above
    words = {}
    for i in range(4):
        frame = 0x80 + i
        mem.frames[frame] = (np.arange(512, dtype="<u8") + 0x1000 * (i + 1))
        words[i] = mem.frames[frame]
        install(mem, X86_64_LA57, root, vaddr + i * PAGE_SIZE, 1, page(frame))
    with mem.image(tmp_path / "m.img") as src:
        res = walk_list(src, root_mfn=root, p2m_vaddr=vaddr, word_size=8, max_pfn=4 * 512,
                        five_level=True)
    assert res.list_info["paging"] == X86_64_LA57.name and res.list_info["levels"] == 5
    assert res.table.raw.tobytes() == np.concatenate([words[i] for i in range(4)]).tobytes()
    assert not res.warnings()


# -- a 1 TiB guest -----------------------------------------------------------------------------

BIG_PFNS = 1 << 28         # 1 TiB of guest memory, a 2 GiB table
BIG_REGIONS = [(0, 0x40000), (0x4000000, 0x4040000), (BIG_PFNS - 0x40000, BIG_PFNS)]

WALK_AND_MEASURE = """
import json, resource, subprocess, sys
argv = json.loads(sys.argv[1])
proc = subprocess.run(argv, capture_output=True, text=True)
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({"rc": proc.returncode, "stderr": proc.stderr,
                  "maxrss_kib": usage.ru_maxrss}))
"""


def test_one_tib_list_guest_walks_within_its_table(tmp_path):
    """A 64-bit list of 2^28 pfns with three populated GiB, generated here into
    a sparse file, walked to --format raw by the CLI in a child process: the
    output equals the truth and the walk's peak memory stays near the 2 GiB
    table."""
    table_bytes = BIG_PFNS * 8
    avail = memory_available()
    if avail is None or avail < 8 * GiB:
        pytest.skip(f"needs 8 GiB of available memory, the machine has "
                    f"{(avail or 0) / GiB:.1f} GiB")
    img, truth, out = tmp_path / "big.img", tmp_path / "big.truth", tmp_path / "big.raw"
    spec = GuestSpec(word_size=8, representation="list", max_pfn=BIG_PFNS, ram=BIG_REGIONS,
                     identity=[(0xA0, 0x100)], foreign=[(0x4000100, 0x4000104)], seed=28)
    generate_list_container(spec, img, truth=truth)
    assert os.stat(img).st_blocks * 512 < 32 << 20        # sparse: structure pages only
    argv = [sys.executable, "-m", "p2mdump", "walk", str(img), "--format", "raw", "-o",
            str(out), "-q"]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [os.path.dirname(os.path.dirname(os.path.abspath(__file__)))]
        + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    meas = subprocess.run([sys.executable, "-c", WALK_AND_MEASURE, json.dumps(argv)],
                          capture_output=True, text=True, env=env, timeout=600)
    assert meas.returncode == 0, meas.stderr
    got = json.loads(meas.stdout)
    assert got["rc"] == 0, got["stderr"]
    peak = got["maxrss_kib"] * 1024
    # the walk holds the whole table (so the measure is real), and little more
    assert peak >= 0.9 * table_bytes
    assert peak <= 1.5 * table_bytes, f"peak RSS {peak >> 20} MiB for a {table_bytes >> 20} " \
                                      "MiB table"
    assert os.path.getsize(out) == os.path.getsize(truth) == table_bytes
    chunk = 64 << 20
    with open(out, "rb") as a, open(truth, "rb") as b:
        for off in range(0, table_bytes, chunk):
            assert a.read(chunk) == b.read(chunk), f"differs in bytes {off:#x}+"
    side = read_sidecar(img)
    assert side["truth_counts"]["valid"] == sum(b - a for a, b in BIG_REGIONS) - 0x60 - 4



# -- where the list's own pages are (map's second strip) ---------------------------------------

@pytest.mark.parametrize("ws", [8, 4])
def test_list_pages_in_machine_memory(tmp_path, ws):
    from p2mdump.listinfo import read_list_pages

    L = layout_for(ws)
    region = region_pfns(ws)
    spec = GuestSpec(word_size=ws, representation="list", max_pfn=3 * region,
                     ram=[(0, 0x2000), (2 * region, 2 * region + 0x1000)],
                     identity=[(0x1000, 0x1000 + 2 * L.per_page)], seed=ws)
    img = tmp_path / "l.img"
    guest = generate_list_container(spec, img)
    res = walk_generated(img)
    with RawImage(img) as src:
        pages = read_list_pages(src, res.list_info, res.layout)
    assert pages.root_mfn == guest.root_mfn
    private = guest.page_mfn[guest.page_kind == PAGE_PRIVATE]
    assert sorted(pages.list_mfns.tolist()) == sorted(int(m) for m in private)
    ph = guest.placeholders
    # the missing region in the middle: its PMD(s) name p2m_missing_pte; a
    # private table that maps only p2m_missing (a whole missing PMD of a PAE
    # region that is not) cannot be told from it and is listed too
    assert ph["p2m_missing_pte"] in pages.shared_ptes.tolist()
    for m in set(pages.shared_ptes.tolist()) - {ph["p2m_missing_pte"]}:
        frames = (guest.tables[m] & np.uint64(PTE_FRAME_MASK)) >> np.uint64(12)
        assert set(frames.tolist()) == {ph["p2m_missing"]}
    assert set(pages.placeholders.tolist()) == {ph["p2m_missing"], ph["p2m_identity"]}
    tables = set(pages.table_mfns().tolist())
    assert tables <= set(guest.tables) and guest.root_mfn not in tables
    private_l1 = {int(m) for m in guest.pmd_table.tolist()} - {ph["p2m_missing_pte"],
                                                                 ph["p2m_identity_pte"]}
    assert private_l1 <= tables | set(pages.shared_ptes.tolist())


def test_a_table_of_whole_missing_pages_is_not_called_the_shared_one(tmp_path):
    """PAE: a mid region is two PMDs; a region whose second PMD has only missing
    pages keeps a table of its own mapping p2m_missing 512 times, which reads
    like p2m_missing_pte: the finding says it may be either."""
    region = region_pfns(4)
    spec = GuestSpec(word_size=4, representation="list", max_pfn=2 * region,
                     ram=[(0, 0x1000)], seed=1)
    img = tmp_path / "l.img"
    guest = generate_list_container(spec, img)
    res = walk_generated(img)
    ph = guest.placeholders
    found = {f.mfn: f for f in res.findings if f.kind == "shared-page" and f.level == "pt-l1"}
    own = [m for m in found if m != ph["p2m_missing_pte"]]
    assert own and all(found[m].severity == "info" for m in found)
    for m in own:
        assert found[m].count == 1 and "or a table of whole missing" in found[m].message
    shared = found[ph["p2m_missing_pte"]]
    assert shared.count == 2 and "or a table of" not in shared.message
