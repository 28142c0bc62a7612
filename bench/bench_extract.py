#!/usr/bin/env python3
"""Benchmark ``p2mdump extract`` against ``cp --sparse=always``, and ``p2mdump info``.

Steps:
  1. generate (into bench/out/, reused when present) a guest of --memory MiB
     whose every page holds a stamped data frame, as a raw machine-memory
     image and as an ``xl dump-core`` file; and a --big-gib GiB guest as a
     sparse ``xl dump-core`` file (no data) for ``info``;
  2. warm the page cache (read the images once);
  3. run, interleaved, --reps repetitions of
       cp         cp --sparse=always IMAGE OUT
       extract    p2mdump extract IMAGE -o OUT -q --top-mfn ... (raw image)
       extract-xc p2mdump extract CORE -o OUT -q                 (xl dump-core)
       info       p2mdump info BIGCORE --json
     timing the whole process (start-up, walk and copy included), after a
     sync so that no run pays for the previous run's writeback;
     and, in this process, the copy phase alone (extract() after one walk);
  4. print the medians, the bytes each one copied and the throughput ratio
     extract / cp (target: >= 0.5), and write bench/out/extract.json.

Usage:  python bench/bench_extract.py [--memory 768] [--reps 7] [--big-gib 16]

Note: whole-process times include ~0.25 s of interpreter, numpy and walk
start-up that cp does not pay; the copy phase itself runs at cp's speed.
Run with the interpreter p2mdump is installed in.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "out")
sys.path.insert(0, os.path.dirname(HERE))


def p2mdump_cmd():
    exe = os.path.join(os.path.dirname(sys.executable), "p2mdump")
    return [exe] if os.path.exists(exe) else [sys.executable, "-m", "p2mdump"]


def make_images(mib: int, big_gib: int):
    from p2mdump.writer import GuestSpec
    from p2mdump.writer.containers import generate_container

    os.makedirs(OUT, exist_ok=True)
    pfns = mib * 256
    spec = GuestSpec(word_size=8, max_pfn=pfns, ram=[(0, pfns)], mfn_order="chunked",
                     data=True, seed=1)
    img = os.path.join(OUT, f"extract-{mib}m.img")
    core = os.path.join(OUT, f"extract-{mib}m.core")
    big = os.path.join(OUT, f"info-{big_gib}g.core")
    if not (os.path.exists(img) and os.path.exists(img + ".json")):
        generate_container(spec, img, container="raw")
    if not (os.path.exists(core) and os.path.exists(core + ".json")):
        generate_container(spec, core, container="xc-core")
    if not (os.path.exists(big) and os.path.exists(big + ".json")):
        generate_container(GuestSpec(word_size=8, max_pfn=big_gib << 18), big,
                           container="xc-core")
    return img, core, big


def warm(path):
    with open(path, "rb") as fh:
        while fh.read(1 << 24):
            pass


def timed(cmd):
    t0 = time.perf_counter()
    res = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    took = time.perf_counter() - t0
    if res.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{res.stderr.decode()}")
    return took


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--memory", type=int, default=768, help="guest size in MiB (default 768)")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--big-gib", type=int, default=16, help="size of the info dump's guest")
    args = ap.parse_args()
    img, core, big = make_images(args.memory, args.big_gib)
    side = json.load(open(img + ".json"))
    for p in (img, core):
        warm(p)
    p2m = p2mdump_cmd()
    dst = os.path.join(OUT, "extract-dst")
    runs = {
        "cp": ["cp", "--sparse=always", img, dst],
        "extract": p2m + ["extract", img, "-o", dst, "-q", "--top-mfn", hex(side["top_mfn"]),
                          "--max-pfn", hex(side["max_pfn"])],
        "extract-xc": p2m + ["extract", core, "-o", dst, "-q"],
        "info": p2m + ["info", big, "--json"],
    }
    # the copy phase alone, in this process: walk once, then time extract()
    from p2mdump.extract import Plan, extract
    from p2mdump.sources import open_image
    from p2mdump.walker import walk

    src = open_image(img)
    plan = Plan.from_table(walk(src, side["top_mfn"], max_pfn=side["max_pfn"]).table)

    def copy_phase():
        t0 = time.perf_counter()
        extract(src, plan, dst)
        return time.perf_counter() - t0

    times = {k: [] for k in list(runs) + ["copy-phase"]}
    for _ in range(args.reps):
        for name in times:
            if os.path.exists(dst):
                os.unlink(dst)
            os.sync()  # no writeback of the previous run's output during this one
            times[name].append(copy_phase() if name == "copy-phase" else timed(runs[name]))
    src.close()
    if os.path.exists(dst):
        os.unlink(dst)
    med = {k: statistics.median(v) for k, v in times.items()}
    cp_bytes = os.path.getsize(img)
    ex_bytes = side["truth_counts"]["valid"] * 4096
    rate = {"cp": cp_bytes / med["cp"], "extract": ex_bytes / med["extract"],
            "extract-xc": ex_bytes / med["extract-xc"], "copy-phase": ex_bytes / med["copy-phase"]}
    print(f"guest {args.memory} MiB ({ex_bytes >> 20} MiB of pages); image {cp_bytes >> 20} MiB; "
          f"median of {args.reps}, page cache warm, {os.cpu_count()} CPUs")
    best = {k: min(v) for k, v in times.items()}
    print(f"{'run':<11} {'median s':>9} {'MiB/s':>8}  ratio to cp   {'best s':>7}  best ratio")
    for k in ("cp", "extract", "extract-xc", "copy-phase"):
        nbytes = cp_bytes if k == "cp" else ex_bytes
        print(f"{k:<11} {med[k]:>9.3f} {rate[k] / 2**20:>8.0f}  {rate[k] / rate['cp']:>11.2f}   "
              f"{best[k]:>7.3f}  {nbytes / best[k] / (cp_bytes / best['cp']):.2f}")
    big_size = os.path.getsize(big)
    print(f"info on {big_size / 2**30:.1f} GiB sparse xl dump-core: {med['info']:.3f} s "
          "(whole process)")
    ok = rate["extract"] >= 0.5 * rate["cp"] and rate["extract-xc"] >= 0.5 * rate["cp"] \
        and med["info"] < 1.0
    print("targets: extract >= 0.5 x cp, info < 1 s:", "PASS" if ok else "FAIL")
    with open(os.path.join(OUT, "extract.json"), "w") as fh:
        json.dump({"times": times, "median": med, "bytes": {"cp": cp_bytes, "extract": ex_bytes},
                   "rate": rate, "info_dump_size": big_size, "pass": ok}, fh, indent=2)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
