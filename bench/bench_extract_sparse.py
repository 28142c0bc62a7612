#!/usr/bin/env python3
"""``extract`` from a sparse ``xl dump-core``: do holes stay holes?

Generates (into bench/out/) an ``xl dump-core`` of a guest with --pfns pfns
and no data pages (the guest's pages are holes of the file: a few MiB
allocated for a GiB-sized core), then runs, interleaved, --reps times

    cp       cp --sparse=always CORE OUT
    extract  p2mdump extract CORE -o OUT -q            (raw output)
    elf      p2mdump extract CORE -o OUT --format elf -q

and prints the median wall time and the allocated size (st_blocks) of each
output next to the input's.  Target (issue 10): the output allocates no more
than the input plus its metadata.

Usage:  python bench/bench_extract_sparse.py [--pfns 0x40000] [--reps 5]
Run with the interpreter p2mdump is installed in.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "out")


def p2mdump_cmd():
    exe = os.path.join(os.path.dirname(sys.executable), "p2mdump")
    return [exe] if os.path.exists(exe) else [sys.executable, "-m", "p2mdump"]


def allocated(path: str) -> int:
    return os.stat(path).st_blocks * 512


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pfns", type=lambda v: int(v, 0), default=0x40000)
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    os.makedirs(OUT, exist_ok=True)
    core = os.path.join(OUT, f"sparse-{args.pfns:#x}.core")
    p2m = p2mdump_cmd()
    if not os.path.exists(core):
        subprocess.run(p2m + ["generate", core, "--container", "xc-core", "--max-pfn",
                              hex(args.pfns), "-q"], check=True)
    variants = {
        "cp": lambda out: ["cp", "--sparse=always", core, out],
        "extract": lambda out: p2m + ["extract", core, "-o", out, "-q"],
        "elf": lambda out: p2m + ["extract", core, "-o", out, "--format", "elf", "-q"],
    }
    times = {k: [] for k in variants}
    alloc = {}
    for _ in range(args.reps):
        for name, cmd in variants.items():
            out = os.path.join(OUT, f"sparse-out.{name}")
            if os.path.exists(out):
                os.unlink(out)
            os.sync()
            t0 = time.perf_counter()
            subprocess.run(cmd(out), check=True)
            times[name].append(time.perf_counter() - t0)
            alloc[name] = (os.stat(out).st_size, allocated(out))
            os.unlink(out)
    size_in, alloc_in = os.stat(core).st_size, allocated(core)
    print(f"input: {core}: {size_in / 2**20:.0f} MiB, {alloc_in / 2**20:.1f} MiB allocated\n")
    print("| variant | median wall s | output MiB | allocated MiB | allocated / input's |")
    print("|---|---:|---:|---:|---:|")
    for name in variants:
        size, al = alloc[name]
        print(f"| {name} | {statistics.median(times[name]):.3f} | {size / 2**20:.0f} | "
              f"{al / 2**20:.1f} | {al / alloc_in:.2f} |")
    ok = all(alloc[n][1] <= alloc_in + (1 << 20) for n in ("extract", "elf"))
    print(f"\ntarget: extract output allocation <= input allocation + metadata: "
          f"{'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
