"""The two places a walk can build its table give the same table.

MemoryRows (an anonymous mapping, every output format) and FileRows (the
``--format raw`` output file itself: frames copied with copy_file_range, or
through a buffer when the container cannot name a file extent) must give the
same words, the same findings and a file byte-identical to the truth.
"""
from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from p2mdump.autowalk import walk_image
from p2mdump.cli import main
from p2mdump.layout import layout_for
from p2mdump.sources import open_image
from p2mdump.tablerows import FileRows, MemoryRows, read_runs

from conftest import FIXTURES

NAMES = ["guest64.img", "guest32.img", "e820-64.img", "scattered64.img", "list64.img",
         "list32.img", "both64.img", "listcore64.core", "core32.core", "vmcore64.elf"]


def _truth(name):
    side = json.load(open(os.path.join(FIXTURES, name + ".json")))
    stem = name.rsplit(".", 1)[0]
    return side, np.fromfile(os.path.join(FIXTURES, stem + ".truth"),
                             dtype=f"<u{side['word_size']}")


def _walk(path, raw_fd=None):
    side_path = path + ".json"
    side = json.load(open(side_path)) if os.path.exists(side_path) else None
    top = side["top_mfn"] if side and side.get("container") == "elf" else None
    with open_image(path) as src:
        result, _ = walk_image(src, top, sidecar=side, raw_fd=raw_fd)
    return result


def _findings(result):
    return sorted((f.kind, f.severity, f.message) for f in result.findings)


@pytest.mark.parametrize("name", NAMES)
def test_file_rows_equal_memory_rows(tmp_path, name):
    path = os.path.join(FIXTURES, name)
    side, truth = _truth(name)
    mem = _walk(path)
    out = tmp_path / "t.raw"
    with open(out, "w+b") as fh:
        in_file = _walk(path, raw_fd=fh.fileno())
    assert in_file.raw_written and not mem.raw_written
    assert np.array_equal(in_file.table.raw, mem.table.raw)
    assert np.array_equal(mem.table.raw, truth)
    assert out.read_bytes() == truth.tobytes()
    assert _findings(in_file) == _findings(mem)
    assert in_file.table.counts() == mem.table.counts()


def test_write_only_file_is_not_used(tmp_path):
    """A file that cannot be mapped back (write-only) leaves the table in memory."""
    with open(tmp_path / "t.raw", "wb") as fh:
        result = _walk(os.path.join(FIXTURES, "list64.img"), raw_fd=fh.fileno())
    assert not result.raw_written and os.path.getsize(tmp_path / "t.raw") == 0


def test_device_target_is_written_from_memory(tmp_path):
    """/dev/null is no regular file: the table is built in memory and written."""
    r = CliRunner().invoke(main, ["walk", os.path.join(FIXTURES, "list64.img"), "--format",
                                  "raw", "-o", os.devnull, "-q"])
    assert r.exit_code == 0, r.output


@pytest.mark.parametrize("name", ["list64.img", "guest32.img"])
def test_cli_raw_output_damaged_image(tmp_path, name):
    """Frames cut off the end of the image: the same INVALID rows and
    unreadable findings whether the table is built in memory or in the file."""
    src = os.path.join(FIXTURES, name)
    img = tmp_path / name
    shutil.copy(src, img)
    shutil.copy(src + ".json", str(img) + ".json")
    size = os.path.getsize(img)
    os.truncate(img, size - 8 * 4096)
    out = tmp_path / "t.raw"
    summary = tmp_path / "s.json"
    r = CliRunner().invoke(main, ["walk", str(img), "--format", "raw", "-o", str(out),
                                  "--summary-json", str(summary), "-q"])
    assert r.exit_code == 0, r.output
    mem = _walk(str(img))
    assert out.read_bytes() == mem.table.raw.tobytes()
    kinds = [f["kind"] for f in json.load(open(summary))["findings"]]
    assert sorted(kinds) == sorted(f.kind for f in mem.findings)


def test_read_runs_reports_each_missing_frame(tmp_path):
    """A run that reaches past the image: rows past the end are INVALID and
    each is reported once, in both sinks."""
    from p2mdump.sources.raw import RawImage

    L = layout_for(8)
    img = tmp_path / "img"
    frames = np.arange(6 * 512, dtype="<u8")
    frames.tofile(img)                                  # 6 frames
    rows = np.arange(4)
    mfns = np.array([3, 4, 5, 6], dtype=np.uint64)      # frame 6 is not there
    with RawImage(img) as source:
        seen_mem, seen_file = [], []
        mem = MemoryRows(4, L)
        assert read_runs(mem, source, rows, mfns, lambda r, m: seen_mem.append((r, m))) == 3
        with open(tmp_path / "out", "w+b") as fh:
            fr = FileRows(fh.fileno(), 4, L)
            assert read_runs(fr, source, rows, mfns,
                             lambda r, m: seen_file.append((r, m))) == 3
            words, past = fr.finish(4 * 512)
            assert np.array_equal(words, mem.finish(4 * 512)[0])
    assert seen_mem == seen_file == [(3, 6)]
    assert np.all(words[3 * 512:] == L.invalid)
    assert np.array_equal(words[:3 * 512], frames[3 * 512:])


@pytest.mark.parametrize("stage_pages", [4, 1024])
def test_short_and_long_runs_give_the_same_file(tmp_path, monkeypatch, stage_pages):
    """Leaves scattered over the image (short runs, staged and written in
    blocks), long runs (copied by the kernel), gaps between rows and frames
    past the end of the image: FileRows writes what MemoryRows holds."""
    import p2mdump.tablerows as T
    from p2mdump.sources.raw import RawImage

    monkeypatch.setattr(T, "STAGE_PAGES", stage_pages)
    L = layout_for(8)
    n_frames = 200
    img = tmp_path / "img"
    np.random.default_rng(1).integers(0, 1 << 62, n_frames * 512, dtype="<u8").tofile(img)
    rng = np.random.default_rng(2)
    n_rows = 160
    mfns = np.full(n_rows, -1, dtype=np.int64)
    mfns[:40] = rng.permutation(n_frames)[:40]               # scattered leaves
    mfns[40:70] = np.arange(100, 130)                         # one long run
    mfns[70:75] = np.arange(195, 200)                         # 5 frames, then ...
    mfns[75:78] = np.arange(200, 203)                         # ... past the end
    mfns[80:100] = np.arange(10, 30)                          # long run after a gap
    mfns[100:150] = rng.integers(0, n_frames + 10, 50)        # short, some missing
    rows = np.flatnonzero(mfns >= 0)
    rows = rows[rows != 120]                                  # a gap inside short runs
    want = mfns[rows].astype(np.uint64)
    with RawImage(img) as source:
        seen_mem, seen_file = [], []
        mem = MemoryRows(n_rows, L)
        mem.invalid(np.setdiff1d(np.arange(n_rows), rows))
        got_mem = read_runs(mem, source, rows, want, lambda r, m: seen_mem.append((r, m)))
        with open(tmp_path / "out", "w+b") as fh:
            fr = FileRows(fh.fileno(), n_rows, L)
            fr.invalid(np.setdiff1d(np.arange(n_rows), rows))
            got_file = read_runs(fr, source, rows, want, lambda r, m: seen_file.append((r, m)))
            words, _ = fr.finish(n_rows * 512)
            table = np.array(words)
    assert got_mem == got_file
    assert seen_mem == seen_file and len(seen_mem) > 3
    expect = np.full((n_rows, 512), L.invalid, dtype=np.uint64)
    data = np.fromfile(img, dtype="<u8").reshape(n_frames, 512)
    for r, m in zip(rows.tolist(), mfns[rows].tolist()):
        if m < n_frames:
            expect[r] = data[m]
    assert np.array_equal(mem.finish(n_rows * 512)[0], expect.reshape(-1))
    assert np.array_equal(table, expect.reshape(-1))


class _NoOffsets:
    """A raw image that does not name file offsets: every run takes the
    careful path (the sink reads it from the source frame by frame)."""

    def __init__(self, raw):
        self.raw = raw

    def read_frames_into(self, mfn, buf):
        return self.raw.read_frames_into(mfn, buf)

    def file_extent(self, mfn, count):
        return self.raw.file_extent(mfn, count)


@pytest.mark.parametrize("seed, batch", [(0, 7), (1, 7), (2, 1 << 16), (3, 1 << 16)])
def test_batched_single_pages_equal_the_careful_path(tmp_path, monkeypatch, seed, batch):
    """Single scattered pages read in batches (in file order, those back to
    back in the file gathered by one ``preadv``, into memory; in row order,
    staged, into a file) fill the same rows, read the same count and report
    the same unreadable frames in the same order as the careful path, also
    for pages whose ``preadv`` comes up short (the image shrank after it was
    opened) and frames past its end."""
    import p2mdump.tablerows as T
    from p2mdump.sources.raw import RawImage

    monkeypatch.setattr(T, "EACH_PAGES", batch)
    monkeypatch.setattr(T, "STAGE_PAGES", 5)
    monkeypatch.setattr(T, "IOV_MAX", 8)
    L = layout_for(8)
    rng = np.random.default_rng(seed)
    n_frames, n_rows = 300, 400
    img = tmp_path / "img"
    rng.integers(0, 1 << 62, n_frames * 512, dtype="<u8").tofile(img)
    mfns = rng.integers(0, n_frames + 40, n_rows)                      # some past the end
    mfns[50:60] = np.arange(20, 30)                                    # a run, too
    mfns[100:140] = rng.permutation(np.arange(150, 190))    # back to back in the file, shuffled
    mfns[200:230] = rng.permutation(np.arange(265, 295))    # ... across where the image ends
    rows = np.sort(rng.choice(n_rows, 300, replace=False))
    want = mfns[rows].astype(np.uint64)
    results = []
    with RawImage(img) as raw:
        os.truncate(img, 280 * 4096 + 1000)   # frames 280.. no longer read whole
        for source in (raw, _NoOffsets(raw)):
            seen_mem, seen_file = [], []
            mem = MemoryRows(n_rows, L, rows2d=np.zeros((n_rows, 512), dtype=np.uint64))
            got_mem = read_runs(mem, source, rows, want,
                                lambda r, m, seen=seen_mem: seen.append((r, m)))
            with open(tmp_path / "out", "w+b") as fh:
                fr = FileRows(fh.fileno(), n_rows, L)
                got_file = read_runs(fr, source, rows, want,
                                     lambda r, m, seen=seen_file: seen.append((r, m)))
                words, _ = fr.finish(n_rows * 512)
                table = np.array(words).reshape(n_rows, 512)
            assert got_mem == got_file and seen_mem == seen_file
            assert np.array_equal(table[rows], mem.rows2d[rows])
            results.append((got_mem, seen_mem, mem.rows2d[rows].copy()))
    (got, seen, table), (ref_got, ref_seen, ref_table) = results
    assert got == ref_got and seen == ref_seen and np.array_equal(table, ref_table)
    assert len(seen) > 10 and got > 200
    assert sorted(seen) == seen                                        # row order


def test_preallocate_gives_a_file_its_blocks_and_leaves_a_pipe_alone(tmp_path):
    """preallocate: the file reads as nbytes of zeros where the file system
    allocates on request (as it stood, empty, where it does not); a pipe is
    left alone without an error."""
    from p2mdump.tablerows import preallocate

    path = tmp_path / "out"
    with open(path, "w+b") as fh:
        preallocate(fh.fileno(), 5 * 4096)
        size = os.fstat(fh.fileno()).st_size
        assert size in (0, 5 * 4096)
        assert fh.read() == bytes(size)
    r, w = os.pipe()
    try:
        preallocate(w, 4096)
    finally:
        os.close(r)
        os.close(w)
