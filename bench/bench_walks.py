#!/usr/bin/env python3
"""The walk rows of issue 10 in one command, each side by side with its yardstick.

    python bench/bench_walks.py [--sizes 24,27] [--reps 5] [--xc-max 26]

For every size S in --sizes (log2 of max_pfn) it generates into bench/out/
(reused when made by the same command line) and times whole processes,
interleaved, --reps times after one warm-up run, medians and peak RSS
(``os.wait4``):

Each run of a variant that writes a file starts with that file removed
(untimed; :func:`benchkit.measure`), the C walker's and p2mdump's alike.

* ``walk-S.img``: a compact 64-bit tree (chunked MFNs, a partly-1:1 leaf, a
  1:1 region, a ballooned GiB): ``c_walker`` against ``walk --format raw -o``;
* ``walk32-S.img``: the same guest with 4-byte words (32-bit PAE guest):
  ``c_walker ... 4 ...`` against ``walk --format raw -o``; plus, once, a 1 GiB
  32-bit guest (``walk32-1g.img``) whose walk is timed alone;
* ``walkxc-S'.core`` (S' = min(S, --xc-max)): the compact guest of size S' as
  an ``xl dump-core`` file (``--container xc-core``) against the walk of its
  raw image ``walk-S'.img``;
* ``walkshuf-S.img``: the compact guest with its leaf pages in random MFN
  order (``--shuffle-leaves``): ``c_walker`` (one pread per leaf) against
  ``walk --format raw -o``, and ``verify`` / ``map -o SVG`` of the same image
  against that walk (targets from 2^26 on; below, the times are listed).

Every raw output is compared with the generator's truth file.  Prints the
Markdown tables (medians, ratios) and the issue's targets with PASS/FAIL;
writes bench/out/bench_walks.json.  Run it with the interpreter of a venv
p2mdump is installed in (``pip install .``, not editable).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys

import benchkit as K

BENCH = K.BENCH
OUT = K.OUT
C_BIN = os.path.join(BENCH, "bin", "c_walker")
C_SRC = os.path.join(BENCH, "c_walker.c")


def compile_c() -> None:
    os.makedirs(os.path.dirname(C_BIN), exist_ok=True)
    argv = ["cc", "-O2", "-std=c99", "-Wall", "-o", C_BIN, C_SRC]
    K.log(f"$ {K.qcmd(argv)}")
    subprocess.run(argv, check=True)


def guest_args(size: int, word_size: int) -> list:
    """The compact guest of run_bench.py: 2^size pfns, chunked MFNs, a
    partly-1:1 leaf, a whole-leaf 1:1 region and one ballooned GiB."""
    n = 1 << size
    per_gib = (1 << 30) // 4096
    balloon = n - 2 * per_gib
    return ["--max-pfn", hex(n), "--word-size", str(word_size), "--mfn-order", "chunked",
            "--identity", "0xa0-0xff,0xc0000-0xfffff",
            "--balloon", f"{balloon:#x}-{balloon + per_gib - 1:#x}", "--seed", "0"]


def image(name: str, args: list) -> tuple[str, dict, str]:
    """(image, sidecar, truth file) of ``p2mdump generate bench/out/NAME ARGS``."""
    truth = os.path.join(OUT, name + ".truth")
    img, side = K.generate(name, args + ["--truth", truth])
    K.warm(img)
    return img, side, truth


def walk_argv(img: str, side: dict, out: str) -> list:
    return [K.p2mdump_exe(), "walk", img, "--top-mfn", hex(side["top_mfn"]),
            "--word-size", str(side["word_size"]), "--max-pfn", hex(side["max_pfn"]),
            "--format", "raw", "-o", out, "-q"]


def c_argv(img: str, side: dict, out: str) -> list:
    return [C_BIN, img, hex(side["top_mfn"]), str(side["word_size"]), hex(side["max_pfn"]), out]


def tree_opts(side: dict) -> list:
    return ["--top-mfn", hex(side["top_mfn"]), "--word-size", str(side["word_size"]),
            "--max-pfn", hex(side["max_pfn"])]


class Bench:
    """Collects the rows of the result table, the targets and the output checks."""

    def __init__(self, reps: int):
        self.reps = reps
        self.rows: list = []
        self.checks: list = []
        self.outputs: list = []
        self.data: dict = {}
        self.tables: dict = {}

    def run(self, label: str, variants: dict, table_bytes: int) -> dict:
        runs = K.interleave(variants, self.reps)
        self.tables[label] = table_bytes
        for name in variants:
            self.rows.append((label, name, runs[name]))
        self.data[label] = {name: {"argv": K.qcmd(v[0]), "runs": runs[name]}
                            for name, v in variants.items()}
        return runs

    def same(self, what: str, out: str, truth: str) -> None:
        ok = subprocess.run(["cmp", "-s", out, truth]).returncode == 0
        self.outputs.append((what, ok))

    def ratio(self, what: str, runs_a: list, runs_b: list, limit: float) -> None:
        r = K.med(runs_a) / K.med(runs_b)
        self.checks.append((what, f"<= {limit}", f"{r:.2f}", r <= limit))

    def peak(self, what: str, runs: list, table_bytes: int, limit: float) -> None:
        r = K.med(runs, "rss") / table_bytes
        self.checks.append((what, f"<= {limit}", f"{r:.2f}", r <= limit))

    def wall(self, what: str, runs: list, limit: float) -> None:
        w = K.med(runs)
        self.checks.append((what, f"<= {limit} s", f"{w:.3f} s", w <= limit))


def bench_vs_c(b: Bench, size: int, word_size: int, limit: float | None,
               what: str) -> None:
    """The walk of a raw image of ``word_size``-byte words against the C walker,
    both outputs checked against the truth; ``limit``: the target ratio, if any."""
    name = "walk" if word_size == 8 else "walk32"
    img, side, truth = image(f"{name}-{size}.img", guest_args(size, word_size))
    c_out, p_out = (os.path.join(OUT, f"{name}-{size}.{v}.raw") for v in ("c", "p2m"))
    label = f"2^{size} " + ("raw 64-bit" if word_size == 8 else "32-bit")
    runs = b.run(label, {"c": (c_argv(img, side, c_out), None, (0,), [c_out]),
                         "p2mdump walk": (walk_argv(img, side, p_out), None, (0,), [p_out])},
                 side["max_pfn"] * word_size)
    b.same(f"{label}: c", c_out, truth)
    b.same(f"{label}: p2mdump walk", p_out, truth)
    if limit is not None:
        b.ratio(f"{label}: {what}", runs["p2mdump walk"], runs["c"], limit)


def bench_32_1g(b: Bench) -> None:
    img, side, truth = image("walk32-1g.img", ["--memory", "1G", "--word-size", "4",
                                               "--mfn-order", "chunked",
                                               "--identity", "0xa0-0xff", "--seed", "0"])
    p_out = os.path.join(OUT, "walk32-1g.p2m.raw")
    label = "1 GiB 32-bit"
    runs = b.run(label, {"p2mdump walk": (walk_argv(img, side, p_out), None, (0,), [p_out])},
                 side["max_pfn"] * 4)
    b.same(f"{label}: p2mdump walk", p_out, truth)
    b.wall(f"{label}: walk, whole process", runs["p2mdump walk"], 0.15)


def bench_xc(b: Bench, size: int) -> None:
    args = guest_args(size, 8)
    img, side, _ = image(f"walk-{size}.img", args)
    core, cside, ctruth = image(f"walkxc-{size}.core", args + ["--container", "xc-core"])
    r_out, x_out = (os.path.join(OUT, f"walkxc-{size}.{v}.raw") for v in ("raw", "xc"))
    label = f"2^{size} xl dump-core"
    table = side["max_pfn"] * 8
    runs = b.run(label, {"walk raw image": (walk_argv(img, side, r_out), None, (0,), [r_out]),
                         "walk xl dump-core": (walk_argv(core, cside, x_out), None, (0,),
                                               [x_out])},
                 table)
    b.same(f"{label}: walk xl dump-core", x_out, ctruth)
    b.ratio(f"{label}: walk / walk of the raw image", runs["walk xl dump-core"],
            runs["walk raw image"], 2.0)
    b.peak(f"{label}: walk peak RSS / table", runs["walk xl dump-core"], table, 1.5)


def bench_shuffled(b: Bench, size: int) -> None:
    img, side, truth = image(f"walkshuf-{size}.img",
                             guest_args(size, 8) + ["--shuffle-leaves"])
    c_out, p_out = (os.path.join(OUT, f"walkshuf-{size}.{v}.raw") for v in ("c", "p2m"))
    svg = os.path.join(OUT, f"walkshuf-{size}.svg")
    label = f"2^{size} shuffled leaves"
    table = side["max_pfn"] * 8
    opts = tree_opts(side)
    runs = b.run(label, {
        "c": (c_argv(img, side, c_out), None, (0,), [c_out]),
        "p2mdump walk": (walk_argv(img, side, p_out), None, (0,), [p_out]),
        "verify": ([K.p2mdump_exe(), "verify", img] + opts, None, (0, 1)),
        "map": ([K.p2mdump_exe(), "map", img] + opts + ["-o", svg], None, (0,), [svg]),
    }, table)
    b.same(f"{label}: c", c_out, truth)
    b.same(f"{label}: p2mdump walk", p_out, truth)
    walk = runs["p2mdump walk"]
    b.ratio(f"{label}: walk / C", walk, runs["c"], 1.1)
    if size >= 26:   # the rows are at 2^27; below, start-up outweighs the table
        for cmd in ("verify", "map"):
            b.ratio(f"{label}: {cmd} / walk", runs[cmd], walk, 1.25)
            b.peak(f"{label}: {cmd} peak RSS / table", runs[cmd], table, 1.25)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=K.sizes_arg, default=[24, 27])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--xc-max", type=int, default=26,
                    help="largest size of the xl dump-core rows [26]")
    ap.add_argument("--only", default=None,
                    help="comma-separated subset of raw,32,xc,shuffled")
    args = ap.parse_args()
    if not K.p2mdump_exe():
        ap.error("no p2mdump next to this interpreter or on PATH")
    only = set(args.only.split(",")) if args.only else {"raw", "32", "xc", "shuffled"}
    os.makedirs(OUT, exist_ok=True)
    compile_c()
    b = Bench(args.reps)
    sizes = sorted(args.sizes)
    for size in sizes:
        if "raw" in only:
            bench_vs_c(b, size, 8, 0.6 if size == sizes[-1] else None,
                       "`walk --format raw` / C (largest tree)")
        if "32" in only:
            bench_vs_c(b, size, 4, 1.5 if size == 24 else None, "walk / C")
        if "xc" in only:
            bench_xc(b, min(size, args.xc_max))
        if "shuffled" in only:
            bench_shuffled(b, size)
    if "32" in only:
        bench_32_1g(b)
    print(K.table(b.rows, table_bytes=b.tables))
    print()
    text, ok = K.verdicts(b.checks)
    print(text)
    print()
    for what, same in b.outputs:
        print(f"- {what}: output {'== truth' if same else 'DIFFERS from the truth'}")
    print("\nCommands:\n```")
    for variants in b.data.values():
        for v in variants.values():
            print(v["argv"].replace(BENCH + os.sep, "bench/"))
    print("```")
    K.save("bench_walks.json", {"checks": b.checks, "outputs": b.outputs, "runs": b.data})
    return 0 if ok and all(s for _, s in b.outputs) else 1


if __name__ == "__main__":
    sys.exit(main())
