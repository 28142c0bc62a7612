#!/usr/bin/env python3
"""Benchmark: `p2mdump scan` throughput against `cat IMAGE > /dev/null`, warm cache,
and `scan` of a sparse image whose tree pages are scattered against the same
tree stored contiguously.

    python bench/bench_scan.py [--gib 4] [--runs 3] [--sizes 24,27] [--reps 5]
                               [--only throughput|scattered] [--against P2MDUMP]

Builds (once) bench/out/scan-<N>g.img: a 64-bit guest of N GiB whose every
valid pfn has a stamped data frame (so the image is N GiB of mostly
non-zero memory with the tree's pages among it), warms the page cache, then
times, side by side in one run, `cat IMAGE > /dev/null` and the whole
`p2mdump scan IMAGE --json -q` process.  Prints and writes
bench/out/bench_scan.json.

The scattered part (sizes from --sizes, log2 of max_pfn; 2^27 is a 512 GiB
guest with 1 GiB of tree pages): generates bench/out/scan-compact-<size>.img
(tree pages at MFNs 1..) and bench/out/scan-scattered-<size>.img (the same
guest, its tree pages scattered one by one over a sparse file as large as
the guest: --placement scattered --scatter-span 2^size --shuffle-leaves)
and times, interleaved, `p2mdump scan IMAGE --json -q` of both (the top MFN
found is checked).  Target: scattered <= 1.5x compact.  ``--against``
names another install's p2mdump script (the code before a change), timed
in the same interleaved runs; its output must be the same bytes.  Writes
bench/out/bench_scan_scattered.json.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

import benchkit as K

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "out")
sys.path.insert(0, os.path.dirname(HERE))


def p2mdump_cmd():
    exe = shutil.which("p2mdump") or os.path.join(os.path.dirname(sys.executable), "p2mdump")
    return [exe] if os.path.exists(exe) else [sys.executable, "-m", "p2mdump"]


def build(gib: int) -> tuple[str, dict]:
    from p2mdump.writer import GuestSpec, generate

    img = os.path.join(OUT, f"scan-{gib}g.img")
    if not (os.path.exists(img) and os.path.exists(img + ".json")):
        pfns = gib << 18
        spec = GuestSpec(word_size=8, max_pfn=pfns, ram=[(0, pfns)],
                         identity=[(0xA0, 0x100)], ballooned=[(pfns // 2, pfns // 2 + 0x4000)],
                         mfn_order="chunked", data=True, seed=1)
        t = time.perf_counter()
        generate(spec, img)
        print(f"built {img} in {time.perf_counter() - t:.1f}s", file=sys.stderr)
    with open(img + ".json") as fh:
        return img, json.load(fh)


def timed(cmd, shell=False):
    t = time.perf_counter()
    out = subprocess.run(cmd, shell=shell, capture_output=True, text=True)
    return time.perf_counter() - t, out


def scattered_bench(sizes, reps, against: str | None = None) -> bool:
    """scan of scattered tree pages against the same tree stored compactly
    (and, with ``against``, the same runs of another p2mdump script,
    interleaved, whose output must be the same bytes)."""
    rows, checks, data = [], [], {}
    for size in sizes:
        n = 1 << size
        common = ["--max-pfn", hex(n), "--word-size", "8", "--mfn-order", "chunked",
                  "--identity", "0xa0-0xff", "--seed", "0"]
        imgs = {
            "compact": K.generate(f"scan-compact-{size}.img", common),
            "scattered": K.generate(f"scan-scattered-{size}.img", common + [
                "--placement", "scattered", "--scatter-span", hex(n), "--shuffle-leaves"]),
        }
        for img, _ in imgs.values():
            K.warm(img)
        exes = {"": K.p2mdump_exe()}
        if against:
            exes[" (against)"] = against
        outs, variants = {}, {}
        for tag, exe in exes.items():
            for name, (img, _) in imgs.items():
                suffix = "-against" if tag else ""
                outs[name + tag] = os.path.join(OUT, f"scan-{name}-{size}{suffix}.out")
                variants[name + tag] = ([exe, "scan", img, "--json", "-q"], outs[name + tag],
                                        (0,))
        runs = K.interleave(variants, reps)
        for name, (img, side) in imgs.items():
            with open(outs[name]) as fh:
                text = fh.read()
            found = json.loads(text)
            if not found or found[0]["top_mfn"] != side["top_mfn"]:
                raise SystemExit(f"scan of {img} did not find top MFN {side['top_mfn']:#x}")
            if against:
                with open(outs[name + " (against)"]) as fh:
                    if fh.read() != text:
                        raise SystemExit(f"scan of {img}: {against} printed other bytes")
        label = f"2^{size}"
        for name in variants:
            rows.append((label, name, runs[name]))
        data[label] = runs
        for tag in exes:
            ratio = K.med(runs["scattered" + tag]) / K.med(runs["compact" + tag])
            checks.append((f"{label} `scan` scattered / compact{tag}", "<= 1.5",
                           f"{ratio:.2f}", ratio <= 1.5))
    print(K.table(rows, ref="compact"))
    print()
    text, ok = K.verdicts(checks)
    print(text)
    K.save("bench_scan_scattered.json", data)
    return ok


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gib", type=int, default=4)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--sizes", type=K.sizes_arg, default=[24])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--only", choices=["throughput", "scattered"], default=None)
    ap.add_argument("--against", metavar="P2MDUMP", default=None,
                    help="scattered part: also time this p2mdump script (another "
                         "install), side by side in the same run")
    args = ap.parse_args()
    os.makedirs(OUT, exist_ok=True)
    scattered_ok = True
    if args.only != "throughput":
        scattered_ok = scattered_bench(args.sizes, args.reps, args.against)
        if args.only == "scattered":
            return 0 if scattered_ok else 1
    img, side = build(args.gib)
    size = os.path.getsize(img)
    cat = f"cat {img} > /dev/null"
    scan = p2mdump_cmd() + ["scan", img, "--json", "-q"]
    timed(cat, shell=True)  # warm the page cache
    cats, scans = [], []
    found = None
    for _ in range(args.runs):
        cats.append(timed(cat, shell=True)[0])
        dt, out = timed(scan)
        if out.returncode != 0:
            print(out.stderr, file=sys.stderr)
            return 1
        scans.append(dt)
        found = json.loads(out.stdout)
    best_cat, best_scan = min(cats), min(scans)
    ok = bool(found) and found[0]["top_mfn"] == side["top_mfn"]
    res = {
        "image": img, "bytes": size, "runs": args.runs,
        "cat_s": cats, "scan_s": scans,
        "cat_MBps": size / best_cat / 1e6, "scan_MBps": size / best_scan / 1e6,
        "scan_vs_cat": best_scan / best_cat,
        "found_top_mfn": found[0]["top_mfn"] if found else None, "expected_top_mfn":
            side["top_mfn"], "correct": ok,
    }
    with open(os.path.join(OUT, "bench_scan.json"), "w") as fh:
        json.dump(res, fh, indent=2)
    print(f"image {size / 2**30:.2f} GiB ({img})")
    print(f"cat  > /dev/null : best {best_cat:.2f}s  {res['cat_MBps']:.0f} MB/s  "
          f"(runs {', '.join(f'{x:.2f}' for x in cats)})")
    print(f"p2mdump scan     : best {best_scan:.2f}s  {res['scan_MBps']:.0f} MB/s  "
          f"(runs {', '.join(f'{x:.2f}' for x in scans)})  whole process, tree found: {ok}")
    print(f"scan / cat time  : {res['scan_vs_cat']:.2f}x")
    return 0 if ok and scattered_ok else 1


if __name__ == "__main__":
    sys.exit(main())
