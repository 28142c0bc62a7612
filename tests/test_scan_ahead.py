"""The table's run scan begun while its rows are filled (table.ScanAhead,
tablerows.hold_rows): whatever a sink says is filled is final, and walks
with and without the scan ahead give the same table, runs and findings."""
from __future__ import annotations

import json
import os
import time

import numpy as np
import pytest

import p2mdump.table as T
import p2mdump.tablerows as TR
from p2mdump.autowalk import walk_image
from p2mdump.layout import layout_for
from p2mdump.sources import open_image
from p2mdump.sources.raw import RawImage
from p2mdump.table import P2MTable, ScanAhead
from p2mdump.tablerows import FileRows, FillPlan, MemoryRows, fill_rows

from conftest import FIXTURES
from test_tablerows import NAMES, _findings, _truth

L = layout_for(8)


class _Recorder:
    """Stands in for a ScanAhead: at every settle, what the sink holds then
    below the bound."""

    def __init__(self, read_now):
        self.read_now = read_now
        self.seen: list = []

    def settled(self, entries: int) -> None:
        self.seen.append((entries, self.read_now(entries)))


def _scattered_plan(n_rows: int, n_frames: int, seed: int) -> FillPlan:
    """Rows of scattered frames (short runs, staged by FileRows), long runs
    (copied a SETTLE_PAGES step at a time), frames past the image's end and
    INVALID rows between them."""
    rng = np.random.default_rng(seed)
    mfns = np.full(n_rows, 0, dtype=np.uint64)
    mfns[:30] = rng.permutation(n_frames)[:30]
    mfns[30:70] = np.arange(100, 140)
    mfns[70:76] = np.arange(n_frames - 3, n_frames + 3)        # runs past the end
    mfns[80:110] = rng.integers(0, n_frames, 30)
    mfns[110:150] = np.arange(20, 60)
    bad = np.array([76, 77, 78, 79, 120, 155], dtype=np.int64)
    own = np.setdiff1d(np.arange(n_rows), bad)
    return FillPlan(mfns, bad, [], own)


@pytest.mark.parametrize("kind", ["memory", "file"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_settle_names_only_final_rows(tmp_path, monkeypatch, kind, seed):
    monkeypatch.setattr(TR, "SETTLE_PAGES", 3)
    monkeypatch.setattr(TR, "STAGE_PAGES", 4)
    n_frames, n_rows = 200, 160
    img = tmp_path / "img"
    np.random.default_rng(seed).integers(0, 1 << 62, n_frames * 512, dtype="<u8").tofile(img)
    plan = _scattered_plan(n_rows, n_frames, seed)
    with RawImage(img) as source, open(tmp_path / "out", "w+b") as fh:
        if kind == "memory":
            sink = MemoryRows(n_rows, L)
            sink.ahead = rec = _Recorder(lambda e: sink.buf[:e].copy())
        else:
            sink = FileRows(fh.fileno(), n_rows, L)
            sink.ahead = rec = _Recorder(
                lambda e: np.frombuffer(os.pread(fh.fileno(), e * 8, 0), dtype="<u8"))
        fill_rows(sink, plan, 0, n_rows, source, lambda row, mfn: None)
        final = np.array(sink.finish(n_rows * 512)[0])
    bounds = [e for e, _ in rec.seen]
    assert bounds[-1] == n_rows * 512 and len(set(bounds)) > 5    # told as it goes
    for entries, held in rec.seen:
        assert np.array_equal(held, final[:entries]), entries


@pytest.mark.parametrize("name", NAMES)
def test_walks_with_and_without_the_scan_ahead_agree(tmp_path, monkeypatch, name):
    """Chunks of 700 entries, rows filled 2 at a time: the scan ahead cuts
    chunks while the walk fills the rest (each as soon as it is settled);
    the runs, counts, findings and the raw file are those of a walk without
    it."""
    monkeypatch.setattr(T, "SCAN_CHUNK", 700)
    monkeypatch.setattr(TR, "SETTLE_PAGES", 2)
    path = os.path.join(FIXTURES, name)
    side_path = path + ".json"
    side = json.load(open(side_path)) if os.path.exists(side_path) else None
    top = side["top_mfn"] if side and side.get("container") == "elf" else None
    taken: list = []
    real_take, real_settled = ScanAhead.take, ScanAhead.settled

    def settled_and_cut(self, entries):
        """settled(), then wait for the thread to cut what it was given (so
        that the chunks are cut ahead whatever the timing)."""
        real_settled(self, entries)
        deadline = time.monotonic() + 10
        while len(self.done) < self._sent and time.monotonic() < deadline:
            time.sleep(0.001)

    monkeypatch.setattr(ScanAhead, "settled", settled_and_cut)
    monkeypatch.setattr(ScanAhead, "take", lambda self: taken.append(real_take(self))
                        or taken[-1])
    results = []
    for cpus in (1, 2):
        monkeypatch.setattr(TR, "usable_cpus", lambda cpus=cpus: cpus)
        out = tmp_path / f"t{cpus}.raw"
        with open(out, "w+b") as fh, open_image(path) as src:
            result, _ = walk_image(src, top, sidecar=side, raw_fd=fh.fileno())
            results.append((result, out.read_bytes()))
    (alone, raw_alone), (ahead, raw_ahead) = results
    assert len(taken) == 1
    if name != "scattered64.img":     # there, every row is gathered before any is settled
        assert taken[0], "the scan ahead cut no chunk"
    _, truth = _truth(name)
    assert raw_ahead == raw_alone == truth.tobytes()
    assert ahead.table.counts() == alone.table.counts()
    for x, y in zip(ahead.table.run_arrays(), alone.table.run_arrays()):
        assert np.array_equal(x, y)
    assert _findings(ahead) == _findings(alone)


def test_scan_ahead_cuts_only_settled_chunks(monkeypatch):
    monkeypatch.setattr(T, "SCAN_CHUNK", 1000)
    words = np.arange(10_000, dtype=np.uint64)
    words[5000:5100] = L.invalid
    ahead = ScanAhead(words, L, 8_500)
    ahead.settled(999)
    time.sleep(0.05)
    assert ahead.done == {}              # no whole chunk was final yet
    ahead.settled(4_500)
    ahead.settled(4_500)                 # told twice: cut once
    deadline = time.monotonic() + 10
    while len(ahead.done) < 4 and time.monotonic() < deadline:
        time.sleep(0.01)
    done = ahead.take()
    assert sorted(done) == [0, 1, 2, 3]
    ahead.settled(8_500)                 # after take: nothing more is cut
    assert sorted(ahead.done) == [0, 1, 2, 3]
    table = P2MTable(words[:8_500], L, cuts=done)
    assert table.counts() == P2MTable(words[:8_500].copy(), L).counts()
    assert table.counts()["missing"] == 100
    for x, y in zip(table.run_arrays(), P2MTable(words[:8_500].copy(), L).run_arrays()):
        assert np.array_equal(x, y)
