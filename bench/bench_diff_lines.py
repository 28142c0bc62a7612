#!/usr/bin/env python3
"""Benchmark: the text of `p2mdump diff`'s ranges alone (DiffResult.lines()).

    python bench/bench_diff_lines.py [--ranges 286000] [--reps 5] [--batch 16384]

Builds, in memory, a DiffResult shaped like the diff of bench_diff.py at
2^27 pfns (about 286k ranges: mostly multi-pfn ``mapping`` ranges of
valid frames, some ``kind`` ranges to and from identity, ``added`` /
``removed`` ranges with a missing side, a few foreign and single pfns;
seeded, so every run gets the same ranges) and times rendering all its
lines (every batch's string made), median of ``--reps``.  Prints the
sha256 of the text too: run it with two interpreters (two versions of
p2mdump) to compare both the time and that the text is the same.
"""
from __future__ import annotations

import argparse
import hashlib
import statistics
import time

import numpy as np

from p2mdump.diff import CLASSES, DiffResult
from p2mdump.layout import KINDS


def shaped_result(n: int, seed: int = 0) -> DiffResult:
    """``n`` ranges of a diff between two chunked-mfn guests of 2^27 pfns."""
    rng = np.random.default_rng(seed)
    span = rng.integers(0, 1024, n)
    span[rng.random(n) < 0.05] = 0                    # single pfns
    first = np.cumsum(span + 1 + rng.integers(0, 64, n)) - span - 1
    change = rng.choice(len(CLASSES), n, p=[0.85, 0.05, 0.05, 0.05]).astype(np.uint8)
    valid, missing, identity, foreign = (KINDS.index(k) for k in
                                         ("valid", "missing", "identity", "foreign"))
    a_kind = np.full(n, valid, dtype=np.uint8)
    b_kind = np.full(n, valid, dtype=np.uint8)
    is_kind = change == CLASSES.index("kind")
    b_kind[is_kind] = np.where(rng.random(is_kind.sum()) < 0.9, identity, foreign)
    a_kind[change == CLASSES.index("added")] = missing
    b_kind[change == CLASSES.index("removed")] = missing
    a_mfn = rng.integers(0, 1 << 28, n).astype(np.uint64)
    b_mfn = rng.integers(0, 1 << 28, n).astype(np.uint64)
    b_mfn[b_kind == identity] = first[b_kind == identity].astype(np.uint64)
    a_mfn[a_kind == missing] = 0
    b_mfn[b_kind == missing] = 0
    arrays = {"first": first.astype(np.int64), "last": (first + span).astype(np.int64),
              "change": change, "a_kind": a_kind, "b_kind": b_kind, "a_mfn": a_mfn,
              "b_mfn": b_mfn}
    return DiffResult(1 << 27, 1 << 27, arrays, dict.fromkeys(CLASSES, 0))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ranges", type=int, default=286_000)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--batch", type=int, default=1 << 14)
    args = ap.parse_args()
    res = shaped_result(args.ranges)
    times = []
    for _ in range(args.reps):
        t = time.perf_counter()
        parts = list(res.lines(args.batch))
        times.append(time.perf_counter() - t)
    text = "".join(parts).encode()
    print(f"{len(res)} ranges, {len(text)} bytes, sha256 {hashlib.sha256(text).hexdigest()[:16]}")
    print(f"lines(): median {statistics.median(times) * 1000:.1f} ms, "
          f"min {min(times) * 1000:.1f} ms over {args.reps} runs")


if __name__ == "__main__":
    main()
