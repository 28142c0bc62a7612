"""Hostile input to scan: addresses read from the container (PT_LOAD p_paddr
and p_memsz, .xen_p2m gmfns) never size the pass's memory or its loop."""
import os
import shutil
import subprocess
import sys

import numpy as np

from conftest import fixture_path
from p2mdump.paging import MACHINE_ADDRESS_LIMIT
from p2mdump.scan import ScanStats, scan
from p2mdump.schemas import elf as E
from p2mdump.sources import open_image
from p2mdump.sources.elf import ElfFile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _patch_phdr(path, index, **fields):
    """Overwrite fields (p_paddr, p_filesz, p_memsz, ...) of program header ``index``."""
    ef = ElfFile(path)
    try:
        at = ef.ehdr.e_phoff + index * ef.ehdr.e_phentsize
        size = ef.ehdr.e_phentsize
    finally:
        ef.close()
    with open(path, "r+b") as fh:
        fh.seek(at)
        ph = E.PHDR[E.ELFCLASS64].parse(fh.read(size))
        for k, v in fields.items():
            ph[k] = v
        fh.seek(at)
        fh.write(E.PHDR[E.ELFCLASS64].build(ph))


def _scan_trees(path):
    stats = ScanStats()
    with open_image(path) as src:
        found = scan(src, word_sizes=(8,), representations=("tree",), stats=stats)
    return [(c.top_mfn, c.pfns_mapped) for c in found], stats


def _last_load(path):
    with open_image(path) as src:
        return src.loads[-1]


def test_zero_fill_of_a_pt_load_is_not_scanned(tmp_path):
    """p_memsz of 2^40 with a small p_filesz: only the file-backed frames are read."""
    core = tmp_path / "v.elf"
    shutil.copyfile(fixture_path("vmcore64.elf"), core)
    want, stats0 = _scan_trees(core)
    seg = _last_load(core)
    _patch_phdr(core, seg.index, p_memsz=1 << 40)
    got, stats = _scan_trees(core)
    assert got == want and want
    assert stats.pages_scanned == stats0.pages_scanned
    assert stats.pages_scanned * 4096 <= os.path.getsize(core)


def test_pt_load_reaching_the_machine_address_limit(tmp_path):
    """A segment whose zero fill ends at 2^52: frame_limit is 2^40 frames, the
    scan's memory and work stay those of the file."""
    core = tmp_path / "v.elf"
    shutil.copyfile(fixture_path("vmcore64.elf"), core)
    want, _ = _scan_trees(core)
    seg = _last_load(core)
    _patch_phdr(core, seg.index, p_memsz=MACHINE_ADDRESS_LIMIT - seg.paddr)
    with open_image(core) as src:
        assert src.frame_limit() == MACHINE_ADDRESS_LIMIT // 4096
        assert src.frame_runs()[-1] == (seg.paddr // 4096, seg.filesz // 4096)
    got, stats = _scan_trees(core)
    assert got == want
    assert stats.pages_scanned * 4096 <= os.path.getsize(core)


def _patch_gmfns(path, values):
    """Set the gmfn of ``len(values)`` .xen_p2m pairs from the middle on (the
    guest's data pages, not its tree's)."""
    with open_image(path) as src:
        sec, n = src.p2m_sec, src.nr_pages
    with open(path, "r+b") as fh:
        for k, v in enumerate(values):
            fh.seek(sec.offset + (n // 2 + k) * 16 + 8)
            fh.write(int(v).to_bytes(8, "little"))


def test_xen_p2m_gmfns_near_2_63(tmp_path):
    core = tmp_path / "c.core"
    shutil.copyfile(fixture_path("core64.core"), core)
    high = [(1 << 63) + 5, (1 << 64) - 2, MACHINE_ADDRESS_LIMIT // 4096 - 1]
    _patch_gmfns(core, high)
    with open_image(core) as src:
        assert src.frame_limit() == (1 << 64) - 1
        runs = src.frame_runs()
        assert sum(n for _, n in runs) == src.nr_pages
    got, stats = _scan_trees(core)
    assert [m for m, _ in got] == [4]
    # the frames above the machine frame limit are not machine frames: not read
    assert stats.pages_scanned == sum(n for _, n in runs) - 2


_PEAK = """
import resource, sys
limit = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
from p2mdump.sources import open_image
from p2mdump.scan import scan
with open_image(sys.argv[2]) as src:
    found = scan(src)
# VmHWM: this process's own peak (ru_maxrss would carry the parent's over exec)
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM:")][0].split()[1]
print(len(found), hwm)
"""

AS_LIMIT = 1536 << 20


def peak_scan(path):
    """(candidates found, peak RSS KiB) of a scan under a 1.5 GiB address-space limit."""
    out = subprocess.run([sys.executable, "-c", _PEAK, str(AS_LIMIT), str(path)],
                         capture_output=True, text=True, timeout=120,
                         env=dict(os.environ, PYTHONPATH=ROOT))
    assert out.returncode == 0, out.stderr[-2000:]
    n, peak = map(int, out.stdout.split())
    return n, peak


def test_peak_memory_of_scans_with_huge_addresses(tmp_path):
    elf = tmp_path / "v.elf"
    shutil.copyfile(fixture_path("vmcore64.elf"), elf)
    seg = _last_load(elf)
    _patch_phdr(elf, seg.index, p_memsz=MACHINE_ADDRESS_LIMIT - seg.paddr)
    core = tmp_path / "c.core"
    shutil.copyfile(fixture_path("core64.core"), core)
    _patch_gmfns(core, [(1 << 63) + 5, MACHINE_ADDRESS_LIMIT // 4096 - 1])
    for path in (elf, core):
        n, peak = peak_scan(path)
        assert n >= 1
        assert peak < 400 * 1024, (path, peak)


def test_bitmap_is_sized_by_the_extents():
    from p2mdump.scan import _Bitmap

    bm = _Bitmap([(5, 3), (1 << 39, 2)])
    assert len(bm.bits) <= 2
    bm.set(np.array([6, (1 << 39) + 1], dtype=np.int64))
    got = bm.test(np.array([5, 6, 7, 8, 1 << 39, (1 << 39) + 1, (1 << 39) + 2, 1 << 63,
                            (1 << 64) - 1], dtype=np.uint64))
    assert got.tolist() == [False, True, False, False, False, True, False, False, False]
