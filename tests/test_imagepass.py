"""scan's sequential pass reads what a frame-by-frame reader reads, in blocks.

:func:`p2mdump.imagepass.blocks` plans the pieces of every block with numpy
and reads scattered single frames in a tight loop; these tests hold it to the
simplest reader there is (every frame of the extents, one ``read_frame``
each, the frames the image lacks skipped) on random sparse layouts: extents
at the end of the file, files that are not a multiple of 4096 bytes, a
``--base``, extents longer than a block, frames that stop reading after the
extent map was made, and the ELF and xl dump-core containers.  The scan
itself must find the same candidates, with the same evidence, counts and
statistics, and print the same bytes, whichever reader fed it.
"""
from __future__ import annotations

import importlib
import os

import numpy as np
import pytest
from click.testing import CliRunner

import p2mdump.pageread as P
from p2mdump import imagepass as IP
from p2mdump.cli import main
from p2mdump.layout import PAGE_SIZE
from p2mdump.sources import open_image
from p2mdump.sources.base import FrameSource
from p2mdump.sources.raw import RawImage
from p2mdump.writer import GuestSpec, generate
from p2mdump.writer.containers import generate_container

SCAN = importlib.import_module("p2mdump.scan")   # the package exports scan() by that name


@pytest.fixture(autouse=True, params=["io_uring", "preadv"])
def page_reader(request, monkeypatch):
    """Every test with scattered pages read by the io_uring (where the
    kernel has one) and by the ``preadv`` fallback (forced)."""
    monkeypatch.setattr(P, "USE_RING", request.param == "io_uring")
    return request.param


def reference_pages(source, extents):
    """(MFN, bytes) of every frame of ``extents`` the image holds, one
    ``read_frame`` each: what the pass must read, in the order it must."""
    for a, n in np.asarray(extents).tolist():
        for m in range(a, a + n):
            data = source.read_frame(m)
            if data is not None:
                yield m, data


def reference_blocks(source, extents, progress=None, size=7):
    """The same pages in blocks of ``size`` (a grouping unlike the pass's)."""
    pages = list(reference_pages(source, extents))
    for at in range(0, len(pages), size):
        part = pages[at:at + size]
        yield (np.array([m for m, _ in part], dtype=np.int64),
               np.frombuffer(b"".join(d for _, d in part), dtype=np.uint8))
    if progress is not None:
        progress(1, 1)


def pass_pages(source, extents):
    """What :func:`blocks` yields, as (MFN, bytes) pairs, and the block sizes."""
    out, sizes = [], []
    for mfns, block in IP.blocks(source, extents):
        assert len(block) == len(mfns) * PAGE_SIZE
        sizes.append(len(mfns))
        out += [(int(m), block[i * PAGE_SIZE:(i + 1) * PAGE_SIZE].tobytes())
                for i, m in enumerate(mfns)]
    return out, sizes


def sparse_file(path, rng, *, frames: int, tail: int = 0, base: int = 0, eof_extent=True,
                max_len: int = 40) -> None:
    """A sparse file of ``base`` bytes, ``frames`` frames and ``tail`` bytes
    more, with random extents of stamped frames (the last one reaching the
    end of the file when ``eof_extent``)."""
    with open(path, "wb") as fh:
        fh.truncate(base + frames * PAGE_SIZE + tail)
        f = int(rng.integers(0, 8))
        while f < frames:
            n = min(int(rng.integers(1, max_len)) if rng.random() < 0.3 else 1, frames - f)
            words = rng.integers(1, 1 << 62, n * 512, dtype=np.uint64)
            words[::512] = np.arange(f, f + n, dtype=np.uint64)
            fh.seek(base + f * PAGE_SIZE)
            fh.write(words.tobytes())
            f += n + int(rng.integers(1, 30))
        if eof_extent:
            fh.seek(base + (frames - 2) * PAGE_SIZE)
            fh.write(rng.integers(1, 255, 2 * PAGE_SIZE + tail, dtype=np.uint8).tobytes())
        fh.flush()
        os.fsync(fh.fileno())


@pytest.mark.parametrize("seed", range(4))
def test_plan_cuts_extents_where_blocks_end(seed, monkeypatch):
    monkeypatch.setattr(IP, "BLOCK_PAGES", 16)
    rng = np.random.default_rng(seed)
    for _ in range(50):
        k = int(rng.integers(1, 40))
        lens = rng.integers(1, int(rng.choice([2, 20, 100])), k)
        starts = np.cumsum(rng.integers(1, 9, k) + np.concatenate([[0], lens[:-1]]))
        ext = np.stack([starts, lens], axis=1).astype(np.int64)
        mfn, n, heads, total = IP._plan(ext)
        # the reference: fill blocks of 16 frames extent by extent
        want, want_heads, fill = [], [0], 0
        for a, c in ext.tolist():
            while c:
                take = min(16 - fill, c)
                want.append((a, take))
                a, c, fill = a + take, c - take, (fill + take) % 16
                if fill == 0:
                    want_heads.append(len(want))
        if want_heads[-1] != len(want):
            want_heads.append(len(want))
        assert list(zip(mfn.tolist(), n.tolist())) == want
        assert heads == want_heads and total == int(lens.sum())


@pytest.mark.parametrize("seed, tail, base", [(0, 0, 0), (1, 1, 0), (2, 4095, 0),
                                              (3, 2048 + 7, 3 * PAGE_SIZE + 512), (4, 5, 100)])
def test_blocks_read_what_a_frame_by_frame_reader_reads(tmp_path, monkeypatch, seed, tail,
                                                        base):
    monkeypatch.setattr(IP, "BLOCK_PAGES", 16)
    rng = np.random.default_rng(seed)
    path = tmp_path / "sparse.img"
    sparse_file(path, rng, frames=3000, tail=tail, base=base)
    with RawImage(path, base=base) as src:
        assert src.frames == 3000
        for extents in (IP.data_extents(src), IP._pairs([0, src.frames]),
                        IP._pairs([[0, 1], [5, 40], [2999, 1]])):
            got, sizes = pass_pages(src, extents)
            assert got == list(reference_pages(src, extents))
            assert all(s == 16 for s in sizes[:-1]) and 0 < sizes[-1] <= 16
        # the extent map names every stamped frame, and nothing past the last whole frame
        ext = IP.data_extents(src)
        assert int((ext[:, 0] + ext[:, 1]).max()) <= src.frames
        covered = np.zeros(src.frames, dtype=bool)
        for a, n in ext.tolist():
            covered[a:a + n] = True
        for m, data in reference_pages(src, IP._pairs([0, src.frames])):
            if any(data):
                assert covered[m], m


def test_frames_that_stop_reading_are_skipped(tmp_path, monkeypatch):
    """Frames the extent map named but that no longer read whole (the file
    shrank after it was opened: a short ``preadv``, here in the middle of a
    single-frame extent) are skipped, whether they are single pages or inside
    longer pieces, as the frame-by-frame reader skips them."""
    monkeypatch.setattr(IP, "BLOCK_PAGES", 16)
    rng = np.random.default_rng(9)
    path = tmp_path / "sparse.img"
    sparse_file(path, rng, frames=2000, tail=0)
    with RawImage(path) as src:
        extents = IP.data_extents(src)
        whole = IP._pairs([0, src.frames])
        single = extents[(extents[:, 1] == 1) & (extents[:, 0] > 1000)][0, 0]
        os.truncate(path, int(single) * PAGE_SIZE + 100)
        for ext in (extents, whole):
            got, _ = pass_pages(src, ext)
            want = list(reference_pages(src, ext))
            assert got == want and max(m for m, _ in got) < single


class Holey(FrameSource):
    """A raw image that lacks the frames of ``missing`` (as a container whose
    runs name frames it cannot read): the pass must step over each and read
    on from the next."""

    container = "holey"

    def __init__(self, raw: RawImage, missing):
        self.raw, self.missing = raw, sorted(missing)

    def _avail(self, mfn: int, count: int) -> int:
        nxt = [m for m in self.missing if m >= mfn]
        return min(count, (nxt[0] - mfn) if nxt else count, self.raw.frames - mfn)

    def frame_runs(self):
        return [(0, self.raw.frames + 3)]       # more than it holds, holes and all

    def frame_offsets(self, mfns):
        fd, off = self.raw.frame_offsets(mfns)
        return fd, np.where(np.isin(mfns, self.missing), -1, off)

    def file_extent(self, mfn: int, count: int):
        n = self._avail(mfn, count) if 0 <= mfn < self.raw.frames else 0
        return (self.raw.fd, mfn * PAGE_SIZE, n) if n > 0 else None

    def read_frames_into(self, mfn: int, buf) -> int:
        n = self._avail(mfn, len(buf) // PAGE_SIZE) if 0 <= mfn < self.raw.frames else 0
        return self.raw.read_frames_into(mfn, memoryview(buf)[:max(n, 0) * PAGE_SIZE])


def test_frames_a_container_lacks_are_stepped_over(tmp_path, monkeypatch):
    monkeypatch.setattr(IP, "BLOCK_PAGES", 16)
    rng = np.random.default_rng(11)
    path = tmp_path / "sparse.img"
    sparse_file(path, rng, frames=600, tail=0)
    with RawImage(path) as raw:
        missing = set(rng.integers(0, 600, 40).tolist()) | {0, 15, 16, 17, 31, 599}
        src = Holey(raw, missing)
        for ext in (IP.data_extents(src), IP.data_extents(raw),
                    IP._pairs([[10, 1], [15, 3], [40, 100], [598, 5]])):
            got, _ = pass_pages(src, ext)
            want = list(reference_pages(src, ext))
            assert got == want
            assert not missing & {m for m, _ in got}


@pytest.mark.parametrize("container", ["xc-core", "elf"])
def test_containers_read_the_same_frames(tmp_path, monkeypatch, container):
    monkeypatch.setattr(IP, "BLOCK_PAGES", 16)
    spec = GuestSpec(word_size=8, max_pfn=0x3000, placement="scattered", scatter_span=0x4000,
                     mfn_order="shuffled", shuffle_leaves=True, seed=4)
    path = tmp_path / f"g.{container}"
    generate_container(spec, path, container=container)
    with open_image(str(path)) as src:
        ext = IP.data_extents(src)
        got, sizes = pass_pages(src, ext)
        assert got == list(reference_pages(src, ext)) and len(sizes) >= 2


def test_extents_above_the_machine_limit_are_dropped():
    big = np.uint64(IP.MACHINE_FRAMES)
    ext = np.array([[big + np.uint64(5), 3], [7, 2], [big - np.uint64(2), 10],
                    [np.uint64(1 << 63), np.uint64(1 << 62)], [3, 0]], dtype=np.uint64)
    got = IP._below_limit(ext)
    assert got.dtype == np.int64
    assert got.tolist() == [[7, 2], [IP.MACHINE_FRAMES - 2, 2]]


# -- the scan: same candidates, same statistics, same output bytes ------------------

def scattered_guests(tmp_path, rng):
    """Sparse raw images of scattered guests (both word sizes, tree / list /
    both) with junk pages of every kind added, some cut short at the end and
    some not a multiple of 4096 bytes long."""
    out = []
    for i, (ws, rep) in enumerate([(8, "tree"), (4, "tree"), (8, "both"), (4, "list")]):
        path = tmp_path / f"g{i}.img"
        spec = GuestSpec(word_size=ws, max_pfn=0x8000 + 0x1000 * i, placement="scattered",
                         scatter_span=0x20000, shuffle_leaves=True, seed=i,
                         identity=[(0xA0, 0xFF)], mfn_order="chunked", representation=rep)
        generate(spec, path)
        size = os.path.getsize(path)
        with open(path, "r+b") as fh:
            for _ in range(60):
                n = int(rng.integers(1, 5))
                kind = int(rng.integers(0, 4))
                words = [rng.integers(1, 1 << 20, 512 * n, dtype=np.uint64),
                         rng.integers(1, size // PAGE_SIZE, 512 * n, dtype=np.uint64),
                         np.full(512 * n, (1 << 64) - 1, dtype=np.uint64),
                         rng.integers(0, 1 << 63, 512 * n, dtype=np.uint64)][kind]
                fh.seek(int(rng.integers(0, size // PAGE_SIZE)) * PAGE_SIZE)
                fh.write(words.tobytes())
            cut = [0, 1, 4095, -3 * PAGE_SIZE + 5][i]
            fh.truncate(size + cut)
            if cut > 0:
                fh.seek(size + cut - 1)
                fh.write(b"\x07")
        out.append(str(path))
    return out


def _scan(path, **kw):
    stats = SCAN.ScanStats()
    with open_image(path) as src:
        found = SCAN.scan(src, stats=stats, **kw)
    return [c.to_dict() for c in found], stats


def test_scan_finds_the_same_whichever_reader_fed_it(tmp_path, monkeypatch):
    monkeypatch.setattr(IP, "BLOCK_PAGES", 64)
    paths = scattered_guests(tmp_path, np.random.default_rng(5))
    fast = [_scan(p) for p in paths]
    cli = {}
    runner = CliRunner()
    for p in paths[::2]:
        for args in (["--json", "-q"], ["-q"]):
            r = runner.invoke(main, ["scan", p, *args])
            cli[(p, tuple(args))] = (r.exit_code, r.stdout, r.stderr)
    monkeypatch.setattr(SCAN, "blocks", reference_blocks)
    slow = [_scan(p) for p in paths]
    assert fast == slow
    assert all(found for found, _ in fast)
    for (p, args), want in cli.items():
        r = runner.invoke(main, ["scan", p, *args])
        assert (r.exit_code, r.stdout, r.stderr) == want, (p, args)


def test_memory_is_a_block_and_the_extent_map(tmp_path, monkeypatch):
    """The pass holds one block and its plan of the extents (tens of bytes an
    extent), nothing that grows with the frames it reads or skips."""
    import tracemalloc

    monkeypatch.setattr(IP, "BLOCK_PAGES", 64)
    rng = np.random.default_rng(2)
    path = tmp_path / "sparse.img"
    frames = 1 << 18                                     # 1 GiB, mostly holes
    data = np.unique(rng.integers(0, frames, 3000))
    with open(path, "wb") as fh:
        fh.truncate(frames * PAGE_SIZE)
        for f in data.tolist():
            fh.seek(f * PAGE_SIZE)
            fh.write(b"\x01" * PAGE_SIZE)
    with RawImage(path) as src:
        ext = IP.data_extents(src)
        pages = 0
        tracemalloc.start()
        try:
            for mfns, _ in IP.blocks(src, ext):
                pages += len(mfns)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert pages == int(ext[:, 1].sum()) >= len(data)
    assert peak < 64 * PAGE_SIZE + 64 * len(ext) + (128 << 10), peak    # < a byte a frame
