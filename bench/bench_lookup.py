#!/usr/bin/env python3
"""Benchmark: one `p2mdump lookup --pfn` (whole process) against `python3 -c pass`,
and one `lookup --mfn` against the `walk` of the same image.

    python bench/bench_lookup.py [--runs 20] [--sizes 24,27] [--reps 5] [--only pfn|mfn]

Builds (once, with `p2mdump generate`) bench/out/lookup-512g.img: a 64-bit
guest of 2^27 pfns (512 GiB, the tree's full capacity; ~1 GiB image), then
times interleaved, in one run: `python3 -c pass` (the python3 on PATH),
the venv's own interpreter `-c pass`, `p2mdump lookup IMAGE --top-mfn N
--word-size 8 --pfn P` for pfns spread over the guest and, on a 2^28-pfn
(1 TiB) list-only guest (bench/out/lookup-1t-list.img, sparse),
`p2mdump lookup IMAGE --p2m-cr3 C --p2m-vaddr V --max-pfn N --word-size 8
--pfn P` (page-table path + one list page).  Reports medians and
the ratio, plus the biggest imports of a lookup (python -X importtime).
Writes bench/out/bench_lookup.json.

The --mfn part (sizes from --sizes, log2 of max_pfn): generates
bench/out/lookup-mfn-<size>.img (64-bit, chunked MFNs, leaves shuffled over
the image: --shuffle-leaves) and times, interleaved, --reps times the whole
processes `p2mdump walk IMAGE --top-mfn T --word-size 8 --format raw -q >
/dev/null` (the yardstick: the same walk with the table in memory) and
`p2mdump lookup IMAGE --top-mfn T --word-size 8 --mfn M` (M: the frame of a
pfn three quarters into the guest; the answer is checked).  Targets: lookup
<= 1.25x the walk, peak RSS <= 1.25x the table.  Writes
bench/out/bench_lookup_mfn.json.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

import benchkit as K

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "out")


def p2mdump_exe():
    exe = os.path.join(os.path.dirname(sys.executable), "p2mdump")
    return exe if os.path.exists(exe) else shutil.which("p2mdump")


def build() -> tuple[str, dict]:
    img = os.path.join(OUT, "lookup-512g.img")
    if not (os.path.exists(img) and os.path.exists(img + ".json")):
        t = time.perf_counter()
        subprocess.run([p2mdump_exe(), "generate", img, "--max-pfn", str(1 << 27),
                        "--mfn-order", "chunked", "--identity", "0xa0-0xff", "-q"], check=True)
        print(f"built {img} in {time.perf_counter() - t:.1f}s", file=sys.stderr)
    with open(img + ".json") as fh:
        return img, json.load(fh)


def build_list() -> tuple[str, dict]:
    img = os.path.join(OUT, "lookup-1t-list.img")
    if not (os.path.exists(img) and os.path.exists(img + ".json")):
        subprocess.run([p2mdump_exe(), "generate", img, "--representation", "list",
                        "--max-pfn", str(1 << 28), "--ram", "0-0x3ffff,0xffc0000-0xfffffff",
                        "-q"], check=True)
    with open(img + ".json") as fh:
        return img, json.load(fh)


def timed(cmd):
    t = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True)
    dt = time.perf_counter() - t
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed: {out.stderr}")
    return dt, out.stdout


#: the peak-RSS target is checked from this size on (a 2^24 table is 128 MiB,
#: about three times what the interpreter and numpy take by themselves)
RSS_FROM = 26


def mfn_bench(sizes, reps) -> bool:
    """lookup --mfn against the walk of the same scattered image; True if every target met."""
    rows, checks, data = [], [], {}
    for size in sizes:
        n = 1 << size
        img, side = K.generate(f"lookup-mfn-{size}.img", [
            "--max-pfn", hex(n), "--word-size", "8", "--mfn-order", "chunked",
            "--identity", "0xa0-0xff", "--shuffle-leaves", "--seed", "0"])
        K.warm(img)
        base = [K.p2mdump_exe(), "--top-mfn", hex(side["top_mfn"]), "--word-size", "8"]
        pfn = 3 * n // 4 + 5
        got = subprocess.run([K.p2mdump_exe(), "lookup", img] + base[1:] + ["--pfn", hex(pfn)],
                             capture_output=True, text=True, check=True).stdout
        mfn = int(got.split("-> mfn ")[1].split()[0], 16)
        answer = os.path.join(OUT, f"lookup-mfn-{size}.out")
        variants = {
            "walk": ([K.p2mdump_exe(), "walk", img] + base[1:] + ["--format", "raw", "-q"],
                     None, (0,)),
            "lookup --mfn": ([K.p2mdump_exe(), "lookup", img] + base[1:] + ["--mfn", hex(mfn)],
                             answer, (0,)),
        }
        runs = K.interleave(variants, reps)
        with open(answer) as fh:
            text = fh.read().strip()
        if text != f"mfn {mfn:#x} -> pfn {pfn:#x}":
            raise SystemExit(f"wrong answer: {text!r}")
        label = f"2^{size}"
        for name in variants:
            rows.append((label, name, runs[name]))
        data[label] = runs
        ratio = K.med(runs["lookup --mfn"]) / K.med(runs["walk"])
        rss = K.med(runs["lookup --mfn"], "rss") / (n * 8)
        checks.append((f"{label} `lookup --mfn` / `walk` wall", "<= 1.25", f"{ratio:.2f}",
                       ratio <= 1.25))
        if size >= RSS_FROM:   # below, the interpreter and numpy outweigh the table
            checks.append((f"{label} `lookup --mfn` peak RSS / table", "<= 1.25",
                           f"{rss:.2f}", rss <= 1.25))
    print(K.table(rows, ref="walk", table_bytes={f"2^{s}": 8 << s for s in sizes}))
    print()
    text, ok = K.verdicts(checks)
    print(text)
    K.save("bench_lookup_mfn.json", data)
    return ok


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--sizes", type=K.sizes_arg, default=[24])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--only", choices=["pfn", "mfn"], default=None)
    args = ap.parse_args()
    os.makedirs(OUT, exist_ok=True)
    ok = True
    if args.only != "pfn":
        ok = mfn_bench(args.sizes, args.reps)
        if args.only == "mfn":
            return 0 if ok else 1
    img, side = build()
    top = side["top_mfn"]
    py3 = shutil.which("python3")
    pfns = [(i * 0x7ffffff) // max(1, args.runs - 1) for i in range(args.runs)]
    lookup = [p2mdump_exe(), "lookup", img, "--top-mfn", hex(top), "--word-size", "8", "--pfn"]
    limg, lside = build_list()
    llookup = [p2mdump_exe(), "lookup", limg, "--p2m-cr3", hex(lside["p2m_cr3"]),
               "--p2m-vaddr", hex(lside["p2m_vaddr"]), "--max-pfn", hex(lside["max_pfn"]),
               "--word-size", "8", "--pfn"]
    lpfns = [(i * ((1 << 28) - 1)) // max(1, args.runs - 1) for i in range(args.runs)]
    timed([py3, "-c", "pass"])
    timed(lookup + ["0"])  # warm the cache
    timed(llookup + ["0"])
    t_py3, t_venv, t_look, t_list = [], [], [], []
    answers = []
    for p, lp in zip(pfns, lpfns):
        t_py3.append(timed([py3, "-c", "pass"])[0])
        t_venv.append(timed([sys.executable, "-c", "pass"])[0])
        dt, out = timed(lookup + [hex(p)])
        t_look.append(dt)
        answers.append(out.strip())
        dt, out = timed(llookup + [hex(lp)])
        t_list.append(dt)
        answers.append(out.strip())
    imp = subprocess.run([sys.executable, "-X", "importtime", "-m", "p2mdump", "lookup", img,
                          "--top-mfn", hex(top), "--word-size", "8", "--pfn", "0x1234"],
                         capture_output=True, text=True).stderr
    rows = []
    for line in imp.splitlines():
        if line.startswith("import time:") and "|" in line:
            self_us, cum_us, name = line[len("import time:"):].split("|")
            if self_us.strip().isdigit():
                rows.append((int(cum_us), int(self_us), name[1:]))  # nesting kept
    top_level = sorted((r for r in rows if not r[2].startswith(" ")), reverse=True)[:8]
    mods = {r[2].strip().split(".")[0] for r in rows}
    med = statistics.median
    res = {
        "image": img, "bytes": os.path.getsize(img), "pfns": 1 << 27, "runs": args.runs,
        "python3": py3, "python3_c_pass_median_s": med(t_py3),
        "venv_python_c_pass_median_s": med(t_venv), "lookup_median_s": med(t_look),
        "ratio_vs_python3": med(t_look) / med(t_py3),
        "ratio_vs_venv_python": med(t_look) / med(t_venv),
        "list_lookup_median_s": med(t_list),
        "list_ratio_vs_venv_python": med(t_list) / med(t_venv),
        "imports_numpy": "numpy" in mods, "imports_construct": "construct" in mods,
        "biggest_imports_us": [{"module": n.strip(), "cumulative_us": c} for c, _, n in top_level],
        "sample_answers": answers[:3],
    }
    with open(os.path.join(OUT, "bench_lookup.json"), "w") as fh:
        json.dump(res, fh, indent=2)
    print(f"image {res['bytes'] / 2**30:.2f} GiB, 2^27 pfns (512 GiB guest), {args.runs} runs")
    print(f"python3 -c pass ({py3}): median {med(t_py3) * 1000:.1f} ms")
    print(f"venv python -c pass        : median {med(t_venv) * 1000:.1f} ms")
    print(f"p2mdump lookup --pfn       : median {med(t_look) * 1000:.1f} ms "
          f"(min {min(t_look) * 1000:.1f}, max {max(t_look) * 1000:.1f})")
    print(f"p2mdump lookup --pfn (list): median {med(t_list) * 1000:.1f} ms "
          f"(min {min(t_list) * 1000:.1f}, max {max(t_list) * 1000:.1f}), 2^28-pfn list guest")
    print(f"ratio vs python3 -c pass   : {res['ratio_vs_python3']:.2f}x (the python3 on PATH; "
          "a pyenv shim makes it slow, so the budget is checked against the venv)")
    print(f"ratio vs venv python       : {res['ratio_vs_venv_python']:.2f}x "
          f"(list: {res['list_ratio_vs_venv_python']:.2f}x) (budget 3x)")
    print(f"numpy imported: {res['imports_numpy']}, construct imported: "
          f"{res['imports_construct']}")
    print("biggest top-level imports (cumulative us): " + ", ".join(
        f"{d['module']} {d['cumulative_us']}" for d in res["biggest_imports_us"]))
    print("e.g. " + answers[-1])
    ok = ok and max(res["ratio_vs_venv_python"], res["list_ratio_vs_venv_python"]) <= 3
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
