#!/usr/bin/env python3
"""Benchmark: `walk --format jsonl` / `csv` / `table` rows a second, whole process.

    python bench/bench_formats.py [--sizes 24,27] [--reps 5]

For each size (log2 of max_pfn) generates bench/out/fmt-<size>.img with
`p2mdump generate` (64-bit, chunked MFNs, a partly-1:1 leaf, a ballooned
range and a few foreign pfns: every kind) and times, interleaved, the
whole processes

    p2mdump walk IMAGE --top-mfn T --word-size 8 --format raw   > /dev/null
    p2mdump walk IMAGE --top-mfn T --word-size 8 --format jsonl > /dev/null
    ... --format csv, --format table

Rows a second = max_pfn / median wall time of the whole process (walk and
interpreter start included).  Target: jsonl >= 1.5M rows a second (csv is
reported against the same bar).  Writes bench/out/bench_formats.json.
"""
from __future__ import annotations

import argparse
import sys

import benchkit as K

FORMATS = ("raw", "jsonl", "csv", "table")
TARGET_ROWS = 1.5e6


def image_for(size: int) -> tuple[str, dict]:
    n = 1 << size
    return K.generate(f"fmt-{size}.img", [
        "--max-pfn", hex(n), "--word-size", "8", "--mfn-order", "chunked",
        "--identity", "0xa0-0xff", "--balloon", f"{hex(n // 2)}-{hex(n // 2 + 0x3ffff)}",
        "--foreign", f"{hex(n - 0x100)}-{hex(n - 0x81)}", "--seed", "0"])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=K.sizes_arg, default=[24])
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    rows, checks, data = [], [], {}
    for size in args.sizes:
        img, side = image_for(size)
        K.warm(img)
        walk = [K.p2mdump_exe(), "walk", img, "--top-mfn", hex(side["top_mfn"]),
                "--word-size", "8", "-q", "--format"]
        runs = K.interleave({f: (walk + [f], None, (0,)) for f in FORMATS}, args.reps)
        label = f"2^{size}"
        n = side["max_pfn"]
        for f in FORMATS:
            rows.append((label, f, runs[f]))
        data[label] = {f: runs[f] for f in FORMATS}
        for f in ("jsonl", "csv"):
            rate = n / K.med(runs[f])
            checks.append((f"{label} `walk --format {f}` rows a second", ">= 1.5M",
                           f"{rate / 1e6:.2f}M", rate >= TARGET_ROWS))
    text, ok = K.verdicts(checks)
    print(K.table(rows, ref="raw"))
    print()
    print(text)
    K.save("bench_formats.json", data)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
