#!/usr/bin/env python3
"""Benchmark the *linear list* walk: ``p2mdump walk --p2m-cr3 ... --format raw``
against the C reference walker's ``--list`` mode (bench/c_walker.c).

Steps (the same measuring rules as bench/run_bench.py, whose helpers this
script uses):
  1. compile bench/c_walker.c with ``cc -O2``;
  2. generate list-only 64-bit guests with ``p2mdump generate --representation
     list`` into bench/out/ (kept while their command line is unchanged):
       l24  2^24 pfns (64 GiB guest, 128 MiB table), RAM throughout but a
            1:1 hole and one ballooned GiB (shared PTE page) -> C comparison
       l28  2^28 pfns (1 TiB guest, 2 GiB table), four populated 1 GiB regions
            in a sparse list -> peak memory against the table's size
  3. warm the page cache, then run interleaved repetitions of
       c-list    bench/bin/c_walker --list IMAGE CR3 VADDR 8 MAX_PFN OUT
       p2m-list  p2mdump walk IMAGE --p2m-cr3 CR3 --p2m-vaddr VADDR --word-size 8
                     --max-pfn MAX_PFN --format raw -o OUT -q
       python    python -c pass
     measuring each whole process (wall, user, sys, peak RSS via wait4);
  4. check both raw outputs are byte-identical to the generator's truth;
  5. print medians and the targets (list walk of 2^24 within 1.5x of C; peak
     RSS of the 2^28 walk at most 1.25x its table) and write
     bench/out/list_results.json.

Usage:  python bench/bench_list.py [--sizes 24,28] [--reps 7]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys

import run_bench as rb

GiB = 1 << 30
MiB = 1 << 20

SIZES = {
    24: dict(max_pfn=1 << 24, extra=["--identity", "0xa0-0xff,0xc0000-0xfffff",
                                     "--balloon", "0xe00000-0xe3ffff",
                                     "--mfn-order", "chunked"]),
    28: dict(max_pfn=1 << 28, extra=["--ram", "0-0x3ffff,0x4000000-0x403ffff,"
                                     "0x8000000-0x803ffff,0xffc0000-0xfffffff",
                                     "--identity", "0xa0-0xff"]),
}
COMMON = ["--representation", "list", "--word-size", "8", "--placement", "compact",
          "--seed", "0", "-q"]
VARIANTS = ("c-list", "p2m-list", "python")
TARGETS = [
    (24, "2^24 list wall: p2mdump raw / C list", "wall", 1.5),
    (28, "2^28 list peak RSS: p2mdump raw / table size (2 GiB)", "rss", 1.25),
]


def paths(size: int) -> dict:
    stem = os.path.join(rb.OUT, f"l{size}")
    return dict(image=stem + ".img", sidecar=stem + ".img.json", truth=stem + ".truth",
                stamp=stem + ".gen.json", c_out=stem + ".c.raw", p_raw=stem + ".p2m.raw")


def ensure(p2mdump: str, size: int) -> tuple[dict, dict]:
    p = paths(size)
    cfg = SIZES[size]
    argv = [p2mdump, "generate", p["image"], "--max-pfn", hex(cfg["max_pfn"]),
            "--truth", p["truth"]] + COMMON + cfg["extra"]
    try:
        with open(p["stamp"], encoding="utf-8") as fh:
            stamp = json.load(fh)
        with open(p["sidecar"], encoding="utf-8") as fh:
            side = json.load(fh)
        if (stamp.get("argv") == argv[1:] and stamp.get("sidecar") == side
                and os.path.getsize(p["truth"]) == side["max_pfn"] * side["word_size"]):
            rb.log(f"l{size}: image up to date")
            return side, {"argv": argv, "generated": False}
    except (OSError, ValueError, KeyError):
        pass
    need = 4 * cfg["max_pfn"] * 8 + 256 * MiB
    if shutil.disk_usage(rb.OUT).free < need:
        raise SystemExit(f"l{size}: needs {need / GiB:.1f} GiB free in {rb.OUT}")
    rb.log(f"$ {rb.qcmd(argv)}")
    wall, rss, rc, _, _ = rb.run_measured(argv, os.path.join(rb.OUT, f"l{size}.gen.log"))
    if rc:
        raise SystemExit(f"l{size}: generate failed (exit {rc}), see bench/out/l{size}.gen.log")
    with open(p["sidecar"], encoding="utf-8") as fh:
        side = json.load(fh)
    with open(p["stamp"], "w", encoding="utf-8") as fh:
        json.dump({"argv": argv[1:], "sidecar": side}, fh)
    rb.log(f"l{size}: generated in {wall:.1f} s, peak RSS {rss / MiB:.0f} MiB")
    return side, {"argv": argv, "generated": True, "wall_s": wall, "peak_rss_bytes": rss}


def commands(size: int, side: dict, p2mdump: str, python: str) -> dict:
    p = paths(size)
    cr3, vaddr, mp = hex(side["p2m_cr3"]), hex(side["p2m_vaddr"]), hex(side["max_pfn"])
    return {
        "c-list": [rb.C_BIN, "--list", p["image"], cr3, vaddr, "8", mp, p["c_out"]],
        "p2m-list": [p2mdump, "walk", p["image"], "--p2m-cr3", cr3, "--p2m-vaddr", vaddr,
                     "--word-size", "8", "--max-pfn", mp, "--format", "raw", "-o", p["p_raw"],
                     "-q"],
        "python": [python, "-c", "pass"],
    }


def bench(size: int, side: dict, reps: int, p2mdump: str, python: str) -> dict:
    p = paths(size)
    rb.log(f"l{size}: warming the page cache")
    rb.warm(p["image"])
    cmds = commands(size, side, p2mdump, python)
    outs = {"c-list": p["c_out"], "p2m-list": p["p_raw"]}
    samples = {v: [] for v in VARIANTS}
    for rep in range(reps):
        order = VARIANTS[rep % len(VARIANTS):] + VARIANTS[:rep % len(VARIANTS)]
        for v in order:
            if v in outs and os.path.exists(outs[v]):
                os.unlink(outs[v])
            os.sync()
            err = os.path.join(rb.OUT, f"l{size}.{v}.stderr")
            wall, rss, rc, user, system = rb.run_measured(cmds[v], err)
            if rc:
                with open(err, encoding="utf-8", errors="replace") as fh:
                    raise SystemExit(f"l{size} {v}: exit {rc}: {rb.qcmd(cmds[v])}\n"
                                     f"{fh.read().strip()}")
            samples[v].append({"wall_s": wall, "peak_rss_bytes": rss, "user_s": user,
                               "sys_s": system})
            rb.log(f"l{size} rep {rep + 1}/{reps} {v:<9} {wall:7.3f} s (user {user:.2f} "
                   f"sys {system:.2f}) {rss / MiB:8.1f} MiB")
    med = {v: {k: statistics.median(s[k] for s in samples[v])
               for k in ("wall_s", "peak_rss_bytes", "user_s", "sys_s")}
           for v in VARIANTS}
    for v in VARIANTS:
        med[v]["min_wall_s"] = min(s["wall_s"] for s in samples[v])
        med[v]["max_wall_s"] = max(s["wall_s"] for s in samples[v])
        med[v]["max_rss"] = max(s["peak_rss_bytes"] for s in samples[v])
    checks = {f"{v} == truth": rb.same_file(outs[v], p["truth"]) for v in outs}
    return {"size": size, "max_pfn": side["max_pfn"], "table_bytes": side["max_pfn"] * 8,
            "image_bytes": os.path.getsize(p["image"]),
            "image_allocated_bytes": os.stat(p["image"]).st_blocks * 512,
            "commands": {v: rb.qcmd(c) for v, c in cmds.items()}, "samples": samples,
            "medians": med, "checks": checks}


def report(results: dict, reps: int) -> tuple[str, list]:
    lines = [f"### List walk: medians of {reps} interleaved runs (whole process, warm cache)", "",
             "| list | variant | median wall s | min-max s | median user s | median sys s "
             "| median peak RSS MiB | wall / C | RSS / table |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for size in sorted(results):
        r = results[size]
        m = r["medians"]
        for v in VARIANTS:
            x = m[v]
            lines.append(f"| 2^{size} | {v} | {x['wall_s']:.3f} | {x['min_wall_s']:.3f}-"
                         f"{x['max_wall_s']:.3f} | {x['user_s']:.2f} | {x['sys_s']:.2f} | "
                         f"{x['peak_rss_bytes'] / MiB:.1f} | "
                         f"{x['wall_s'] / m['c-list']['wall_s']:.2f}x | "
                         f"{x['peak_rss_bytes'] / r['table_bytes']:.2f} |")
    targets = []
    lines += ["", "| target | limit | measured (medians) | best wall ratio / worst RSS | result |",
              "|---|---:|---:|---:|---|"]
    for size, desc, what, limit in TARGETS:
        r = results.get(size)
        if r is None:
            continue
        m = r["medians"]
        if what == "wall":
            val = m["p2m-list"]["wall_s"] / m["c-list"]["wall_s"]
            other = m["p2m-list"]["min_wall_s"] / m["c-list"]["min_wall_s"]
        else:
            val = m["p2m-list"]["peak_rss_bytes"] / r["table_bytes"]
            other = m["p2m-list"]["max_rss"] / r["table_bytes"]
        status = "PASS" if val <= limit else "FAIL"
        targets.append({"target": desc, "limit": limit, "value": val, "other": other,
                        "status": status})
        lines.append(f"| {desc} | <= {limit} | {val:.2f} | {other:.2f} | **{status}** |")
    lines += ["", "Output checks:"]
    for size in sorted(results):
        for name, ok in results[size]["checks"].items():
            lines.append(f"- 2^{size}: {name}: {'ok' if ok else 'MISMATCH'}")
    return "\n".join(lines), targets


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="24,28", help="log2(max_pfn) of the lists [24,28]")
    ap.add_argument("--reps", type=int, default=7, help="repetitions per variant [7]")
    ap.add_argument("--p2mdump", default=None)
    ap.add_argument("--python", default=sys.executable)
    ap.add_argument("--cc", default="cc")
    args = ap.parse_args(argv)
    sizes = sorted({int(s) for s in args.sizes.split(",") if s.strip()})
    if any(s not in SIZES for s in sizes):
        ap.error(f"--sizes: known sizes are {sorted(SIZES)}")
    p2mdump = args.p2mdump or os.path.join(os.path.dirname(sys.executable), "p2mdump")
    if not os.path.exists(p2mdump):
        p2mdump = shutil.which("p2mdump") or ap.error("p2mdump not found; give --p2mdump")
    os.makedirs(rb.OUT, exist_ok=True)
    rb.compile_c(args.cc)
    results = {}
    for size in sizes:
        side, gen = ensure(p2mdump, size)
        results[size] = bench(size, side, args.reps, p2mdump, args.python)
        results[size]["generate"] = gen
    text, targets = report(results, args.reps)
    print(text)
    with open(os.path.join(rb.OUT, "list_results.json"), "w", encoding="utf-8") as fh:
        json.dump({"reps": args.reps, "environment": rb.environment(args.cc),
                   "results": {str(k): v for k, v in results.items()}, "targets": targets},
                  fh, indent=1)
    return 0 if all(c for r in results.values() for c in r["checks"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
