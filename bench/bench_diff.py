#!/usr/bin/env python3
"""Benchmark: `p2mdump diff A B` of two images against the two walks it needs.

    python bench/bench_diff.py [--sizes 24,27] [--reps 5]

For each size (log2 of max_pfn) generates two 64-bit guests with
`p2mdump generate`: bench/out/diff-<size>-a.img (chunked MFNs, seed 0) and
bench/out/diff-<size>-b.img (chunked MFNs, seed 1, another 1:1 range, a
ballooned range and a few foreign pfns), so every leaf's run of frames
differs (one change line per leaf or more: 2^18+ lines at 2^27).  Times,
interleaved, the whole processes

    p2mdump walk A --top-mfn T --word-size 8 --format raw -q > /dev/null
    p2mdump walk B ...                                      (the yardstick: the sum)
    p2mdump diff A B --top-mfn T --word-size 8 > /dev/null  (exit 1: they differ)

Targets: diff <= 2x the two walks (sum of medians), peak RSS <= 2.25x one
table.  Writes bench/out/bench_diff.json.
"""
from __future__ import annotations

import argparse
import sys

import benchkit as K

#: the peak-RSS target is checked from this size on (the interpreter and
#: numpy take about as much as a 2^22 table by themselves)
RSS_FROM = 26


def images(size: int):
    n = 1 << size
    common = ["--max-pfn", hex(n), "--word-size", "8", "--mfn-order", "chunked"]
    a = K.generate(f"diff-{size}-a.img", common + ["--identity", "0xa0-0xff", "--seed", "0"])
    b = K.generate(f"diff-{size}-b.img", common + [
        "--identity", "0xa0-0xff,0x400-0x7ff", "--seed", "1",
        "--balloon", f"{hex(n // 2)}-{hex(n // 2 + 0x3ffff)}",
        "--foreign", f"{hex(n - 0x100)}-{hex(n - 0x81)}"])
    return a, b


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=K.sizes_arg, default=[24])
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    rows, checks, data = [], [], {}
    for size in args.sizes:
        (a, sa), (b, sb) = images(size)
        if sa["top_mfn"] != sb["top_mfn"]:
            raise SystemExit("the two images should have their top page at one MFN")
        for img in (a, b):
            K.warm(img)
        opts = ["--top-mfn", hex(sa["top_mfn"]), "--word-size", "8"]
        exe = K.p2mdump_exe()
        variants = {
            "walk A": ([exe, "walk", a] + opts + ["--format", "raw", "-q"], None, (0,)),
            "walk B": ([exe, "walk", b] + opts + ["--format", "raw", "-q"], None, (0,)),
            "diff A B": ([exe, "diff", a, b] + opts, None, (1,)),
        }
        runs = K.interleave(variants, args.reps)
        label = f"2^{size}"
        for name in variants:
            rows.append((label, name, runs[name]))
        data[label] = runs
        two = K.med(runs["walk A"]) + K.med(runs["walk B"])
        ratio = K.med(runs["diff A B"]) / two
        rss = K.med(runs["diff A B"], "rss") / (8 << size)
        checks.append((f"{label} `diff` / two walks (sum of medians {two:.3f} s)", "<= 2.0",
                       f"{ratio:.2f}", ratio <= 2.0))
        if size >= RSS_FROM:
            checks.append((f"{label} `diff` peak RSS / one table", "<= 2.25", f"{rss:.2f}",
                           rss <= 2.25))
    print(K.table(rows, ref="walk A", table_bytes={f"2^{s}": 8 << s for s in args.sizes}))
    print()
    text, ok = K.verdicts(checks)
    print(text)
    K.save("bench_diff.json", data)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
