#!/usr/bin/env python3
"""``generate`` of big guests: wall time and peak memory against the table's size.

For each size 2^k in --sizes, word size, representation and container it runs

    p2mdump generate OUT --container C --max-pfn 2^k --word-size W --representation R -q

(into bench/out/, each output removed before and after its run, outside the
timing) and prints the wall time, the peak RSS of the process (from wait4),
the table's size (max_pfn * word size) and RSS / table, with PASS / FAIL
against --limit (issue 10: peak <= 1.5x the table for every container).
With --compare EXE the same commands run with another p2mdump (e.g. one
installed from main) at --compare-sizes, side by side.

Usage:  python bench/bench_generate.py [--sizes 24,27] [--word-sizes 8,4]
            [--containers raw,xc-core,elf] [--representations tree,list,both]
            [--truth] [--extra "--mfn-order shuffled"]
            [--compare /path/to/main/venv/bin/p2mdump] [--compare-sizes 24]
Run with the interpreter p2mdump is installed in (a non-editable install).
An xc-core of 2^27 pfns is a 512 GiB sparse file (about 3 GiB allocated).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "out")


def p2mdump_cmd():
    exe = os.path.join(os.path.dirname(sys.executable), "p2mdump")
    return [exe] if os.path.exists(exe) else [sys.executable, "-m", "p2mdump"]


def _csv(kind):
    return lambda v: [kind(x) for x in v.split(",") if x]


def _remove(paths) -> None:
    for p in paths:
        if os.path.exists(p):
            os.unlink(p)


def measure(cmd: list, outputs: list) -> tuple[float, int]:
    """(wall seconds, peak RSS in bytes) of ``cmd``; ``outputs`` removed before and after."""
    _remove(outputs)
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    _remove(outputs)
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)}: exit {proc.returncode}")
    return wall, usage.ru_maxrss * 1024


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=_csv(int), default=[24, 27],
                    help="log2 of max_pfn, comma-separated (default 24,27)")
    ap.add_argument("--word-sizes", type=_csv(int), default=[8, 4])
    ap.add_argument("--containers", type=_csv(str), default=["raw", "xc-core", "elf"])
    ap.add_argument("--representations", type=_csv(str), default=["tree"])
    ap.add_argument("--truth", action="store_true", help="write the truth file too")
    ap.add_argument("--extra", default="", metavar="OPTIONS",
                    help='more generate options, e.g. "--mfn-order shuffled"')
    ap.add_argument("--limit", type=float, default=1.5, help="target: peak RSS / table")
    ap.add_argument("--compare", metavar="EXE", help="another p2mdump to run side by side")
    ap.add_argument("--compare-sizes", type=_csv(int), default=None,
                    help="sizes to run --compare at (default: --sizes)")
    args = ap.parse_args()
    os.makedirs(OUT, exist_ok=True)
    tools = [("this", p2mdump_cmd(), args.sizes)]
    if args.compare:
        tools.append(("compare", [args.compare], args.compare_sizes or args.sizes))
    head = ("| pfns | word | repr | container | wall s | peak MiB | table MiB | peak/table "
            "| target |")
    if args.compare:
        head += " compare wall s | compare peak MiB | compare peak/table |"
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    failed = 0
    for k in args.sizes:
        for ws in args.word_sizes:
            for rep in args.representations:
                for container in args.containers:
                    table = (1 << k) * ws
                    out = os.path.join(OUT, f"gen-{k}-{ws}-{rep}.{container}")
                    outputs = [out, out + ".json", out + ".truth"]
                    row = f"| 2^{k} | {ws} | {rep} | {container} |"
                    for name, exe, sizes in tools:
                        if k not in sizes:
                            row += " - | - | - |"
                            continue
                        cmd = exe + ["generate", out, "--container", container, "--max-pfn",
                                     hex(1 << k), "--word-size", str(ws),
                                     "--representation", rep, "-q"]
                        if args.truth:
                            cmd += ["--truth", out + ".truth"]
                        cmd += args.extra.split()
                        wall, rss = measure(cmd, outputs)
                        ratio = rss / table
                        row += f" {wall:.2f} | {rss / 2**20:.0f} |"
                        if name == "this":
                            ok = ratio <= args.limit
                            failed += not ok
                            row += (f" {table / 2**20:.0f} | {ratio:.2f}x |"
                                    f" {'PASS' if ok else 'FAIL'} |")
                        else:
                            row += f" {ratio:.2f}x |"
                    print(row, flush=True)
    print(f"\ntarget: peak RSS <= {args.limit}x the table: "
          f"{'PASS' if not failed else f'FAIL ({failed} rows)'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
