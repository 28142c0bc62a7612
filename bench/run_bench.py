#!/usr/bin/env python3
"""Benchmark ``p2mdump walk`` against a minimal C walker (bench/c_walker.c).

Steps:
  1. compile bench/c_walker.c with ``cc -O2`` into bench/bin/;
  2. generate the benchmark images with ``p2mdump generate`` into bench/out/
     (skipped when the image, its sidecar and the truth file already exist
     and were made with the same command line);
  3. warm the page cache (read the image once);
  4. run, interleaved, --reps repetitions of
       c-raw     bench/bin/c_walker IMAGE TOP WS MAX_PFN OUT
       p2m-raw   p2mdump walk ... --format raw -o OUT -q
       p2m-ranges p2mdump walk ... --format ranges -o OUT -q
       python    python -c pass            (interpreter start-up baseline)
     measuring the wall time of the whole process and its peak RSS
     (os.wait4 -> per-child rusage ru_maxrss);
  5. check that the C and the p2mdump raw outputs are byte-identical to the
     truth file written by the generator;
  6. print a markdown table of medians and the targets with PASS/FAIL, and
     write everything to bench/out/results.json.

Usage:  python bench/run_bench.py [--sizes 24,27] [--reps 5] [--quick]

Run it with the interpreter of the environment p2mdump is installed in (the
p2mdump script next to sys.executable is used unless --p2mdump is given).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(BENCH, "out")
BIN = os.path.join(BENCH, "bin")
C_SRC = os.path.join(BENCH, "c_walker.c")
C_BIN = os.path.join(BIN, "c_walker")

WORD_SIZE = 8
GiB = 1 << 30
MiB = 1 << 20

# Generator options per size (log2 of max_pfn).  Both trees: compact
# placement (tree pages at MFNs 1.., leaf pages in pfn order), a partly-1:1
# leaf (pfns 0xa0-0xff: entries pfn | IDENTITY bit), a whole-leaf 1:1 region
# (slots naming the p2m_identity placeholder), and one aligned ballooned-out
# GiB (a top slot naming the mid placeholder); "chunked" MFN numbering.
SIZES = {
    24: dict(max_pfn=0x1000000, extra=["--identity", "0xa0-0xff,0xc0000-0xfffff",
                                       "--balloon", "0xe00000-0xe3ffff"]),
    27: dict(max_pfn=0x8000000, extra=["--identity", "0xa0-0xff,0xc0000-0xfffff",
                                       "--balloon", "0x7000000-0x703ffff"]),
}
COMMON_GEN = ["--word-size", str(WORD_SIZE), "--placement", "compact",
              "--mfn-order", "chunked", "--seed", "0", "-q"]

VARIANTS = ("c-raw", "p2m-raw", "p2m-ranges", "python")

# targets: (id, description, limit)
TARGETS = [
    ("t24-raw-vs-c", "2^24 wall: p2mdump raw / C raw", 2.0),
    ("t27-raw-vs-c", "2^27 wall: p2mdump raw / C raw", 1.5),
    ("t27-raw-rss", "2^27 peak RSS: p2mdump raw / table size (1 GiB)", 1.25),
    ("t24-ranges-vs-raw", "2^24 wall: p2mdump ranges / p2mdump raw", 2.0),
]


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def qcmd(argv) -> str:
    return " ".join(shlex.quote(str(a)) for a in argv)


def rel(path: str) -> str:
    """Path relative to the repository (for printed command lines)."""
    try:
        return os.path.relpath(path, os.path.dirname(BENCH))
    except ValueError:
        return path


# -- build --------------------------------------------------------------------

def compile_c(cc: str) -> list:
    os.makedirs(BIN, exist_ok=True)
    argv = [cc, "-O2", "-std=c99", "-Wall", "-o", C_BIN, C_SRC]
    log(f"$ {qcmd(argv)}")
    subprocess.run(argv, check=True)
    return argv


# -- images -------------------------------------------------------------------

def paths_for(size: int) -> dict:
    stem = os.path.join(OUT, f"t{size}")
    return dict(image=stem + ".img", sidecar=stem + ".img.json", truth=stem + ".truth",
                stamp=stem + ".gen.json", c_out=stem + ".c.raw", p_raw=stem + ".p2m.raw",
                p_ranges=stem + ".p2m.ranges")


def gen_argv(p2mdump: str, size: int) -> list:
    cfg = SIZES[size]
    p = paths_for(size)
    return ([p2mdump, "generate", p["image"], "--max-pfn", hex(cfg["max_pfn"]),
             "--truth", p["truth"]] + COMMON_GEN + cfg["extra"])


def generated_ok(size: int, argv: list) -> dict | None:
    """The sidecar when the image, sidecar and truth exist, match each other
    and were made by ``argv``; else None."""
    p = paths_for(size)
    try:
        with open(p["stamp"], encoding="utf-8") as fh:
            stamp = json.load(fh)
        with open(p["sidecar"], encoding="utf-8") as fh:
            side = json.load(fh)
    except (OSError, ValueError):
        return None
    if stamp.get("argv") != argv[1:] or stamp.get("sidecar") != side:
        return None
    try:
        if os.path.getsize(p["image"]) != side["frames"] * side["page_size"] + side["base"]:
            return None
        if os.path.getsize(p["truth"]) != side["max_pfn"] * side["word_size"]:
            return None
    except (OSError, KeyError):
        return None
    return side


def need_bytes(size: int) -> int:
    """Disk needed for one size: image + truth + C and p2mdump raw outputs
    (+ one temporary output file while p2mdump writes atomically)."""
    table = SIZES[size]["max_pfn"] * WORD_SIZE
    return 5 * table + 64 * MiB


def ensure_image(p2mdump: str, size: int) -> tuple[dict, dict]:
    argv = gen_argv(p2mdump, size)
    p = paths_for(size)
    side = generated_ok(size, argv)
    info = {"argv": argv, "generated": False}
    if side is not None:
        log(f"t{size}: image up to date ({rel(p['image'])})")
        return side, info
    free = shutil.disk_usage(OUT).free
    if free < need_bytes(size):
        raise SystemExit(f"t{size}: needs {need_bytes(size) / GiB:.1f} GiB free in {OUT}, "
                         f"only {free / GiB:.1f} GiB left")
    for key in ("stamp", "image", "sidecar", "truth"):
        if os.path.exists(p[key]):
            os.unlink(p[key])
    log(f"$ {qcmd(argv)}")
    wall, rss, rc, _, _ = run_measured(argv, os.path.join(OUT, f"t{size}.gen.log"))
    if rc != 0:
        raise SystemExit(f"t{size}: generate failed (exit {rc}), see bench/out/t{size}.gen.log")
    with open(p["sidecar"], encoding="utf-8") as fh:
        side = json.load(fh)
    with open(p["stamp"], "w", encoding="utf-8") as fh:
        json.dump({"argv": argv[1:], "sidecar": side}, fh, indent=1)
    info.update(generated=True, wall_s=wall, peak_rss_bytes=rss)
    log(f"t{size}: generated in {wall:.1f} s, peak RSS {rss / MiB:.0f} MiB")
    return side, info


def warm(path: str) -> float:
    t0 = time.perf_counter()
    with open(os.devnull, "wb") as null:
        subprocess.run(["cat", path], stdout=null, check=True)
    return time.perf_counter() - t0


# -- measuring ----------------------------------------------------------------

def run_measured(argv: list, stderr_path: str | None = None, stdout_path: str | None = None):
    """Run argv; (wall seconds, peak RSS bytes, exit status, user s, sys s) of
    that child."""
    actions = [(os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0)]
    actions.append((os.POSIX_SPAWN_OPEN, 1, stdout_path or os.devnull,
                    os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644))
    actions.append((os.POSIX_SPAWN_OPEN, 2, stderr_path or os.devnull,
                    os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644))
    t0 = time.perf_counter()
    pid = os.posix_spawnp(argv[0], [str(a) for a in argv], os.environ, file_actions=actions)
    _, status, ru = os.wait4(pid, 0)
    wall = time.perf_counter() - t0
    return (wall, ru.ru_maxrss * 1024, os.waitstatus_to_exitcode(status),
            ru.ru_utime, ru.ru_stime)


def variant_argv(name: str, size: int, side: dict, p2mdump: str, python: str) -> list:
    p = paths_for(size)
    top, mp = hex(side["top_mfn"]), hex(side["max_pfn"])
    ws = str(side["word_size"])
    walk = [p2mdump, "walk", p["image"], "--top-mfn", top, "--word-size", ws, "--max-pfn", mp]
    if name == "c-raw":
        return [C_BIN, p["image"], top, ws, mp, p["c_out"]]
    if name == "p2m-raw":
        return walk + ["--format", "raw", "-o", p["p_raw"], "-q"]
    if name == "p2m-ranges":
        return walk + ["--format", "ranges", "-o", p["p_ranges"], "-q"]
    if name == "python":
        return [python, "-c", "pass"]
    raise ValueError(name)


def output_of(name: str, size: int) -> str | None:
    p = paths_for(size)
    return {"c-raw": p["c_out"], "p2m-raw": p["p_raw"], "p2m-ranges": p["p_ranges"]}.get(name)


def same_file(a: str, b: str) -> bool:
    return subprocess.run(["cmp", "-s", a, b]).returncode == 0


def bench_size(size: int, side: dict, reps: int, p2mdump: str, python: str) -> dict:
    p = paths_for(size)
    log(f"t{size}: warming the page cache ({os.path.getsize(p['image']) / MiB:.0f} MiB)")
    warm_s = warm(p["image"])
    load_before = os.getloadavg()
    cmds = {v: variant_argv(v, size, side, p2mdump, python) for v in VARIANTS}
    samples = {v: [] for v in VARIANTS}
    for rep in range(reps):
        # interleaved, with the starting variant rotated each repetition
        order = VARIANTS[rep % len(VARIANTS):] + VARIANTS[:rep % len(VARIANTS)]
        for v in order:
            out = output_of(v, size)
            if out and os.path.exists(out):
                os.unlink(out)  # every run creates its output afresh
            os.sync()  # no dirty pages of earlier runs written back during this one
            err = os.path.join(OUT, f"t{size}.{v}.stderr")
            wall, rss, rc, user, system = run_measured(cmds[v], err)
            if rc != 0:
                with open(err, encoding="utf-8", errors="replace") as fh:
                    msg = fh.read().strip()
                raise SystemExit(f"t{size} {v}: exit {rc}: {qcmd(cmds[v])}\n{msg}")
            samples[v].append({"wall_s": wall, "peak_rss_bytes": rss, "user_s": user,
                               "sys_s": system})
            log(f"t{size} rep {rep + 1}/{reps} {v:<11} {wall:7.3f} s  (user {user:.2f} "
                f"sys {system:.2f})  {rss / MiB:8.1f} MiB")
    checks = {
        "c-raw == truth": same_file(p["c_out"], p["truth"]),
        "p2m-raw == truth": same_file(p["p_raw"], p["truth"]),
        "p2m-ranges non-empty": os.path.getsize(p["p_ranges"]) > 0,
    }
    medians = {v: {"wall_s": statistics.median(s["wall_s"] for s in samples[v]),
                   "peak_rss_bytes": int(statistics.median(s["peak_rss_bytes"]
                                                           for s in samples[v])),
                   "user_s": statistics.median(s["user_s"] for s in samples[v]),
                   "sys_s": statistics.median(s["sys_s"] for s in samples[v]),
                   "min_wall_s": min(s["wall_s"] for s in samples[v]),
                   "max_wall_s": max(s["wall_s"] for s in samples[v])}
               for v in VARIANTS}
    return {"size": size, "max_pfn": side["max_pfn"], "word_size": side["word_size"],
            "top_mfn": side["top_mfn"], "table_bytes": side["max_pfn"] * side["word_size"],
            "image_bytes": os.path.getsize(p["image"]), "warm_s": warm_s,
            "loadavg_before": load_before, "loadavg_after": os.getloadavg(),
            "commands": {v: qcmd(c) for v, c in cmds.items()},
            "samples": samples, "medians": medians, "checks": checks}


# -- report -------------------------------------------------------------------

def evaluate(results: dict) -> list:
    out = []
    for tid, desc, limit in TARGETS:
        size = int(tid[1:3])
        r = results.get(size)
        value = best = None
        if r is not None:
            m = r["medians"]
            if tid.endswith("raw-vs-c"):
                value = m["p2m-raw"]["wall_s"] / m["c-raw"]["wall_s"]
                best = m["p2m-raw"]["min_wall_s"] / m["c-raw"]["min_wall_s"]
            elif tid.endswith("raw-rss"):
                value = m["p2m-raw"]["peak_rss_bytes"] / r["table_bytes"]
                best = max(s["peak_rss_bytes"] for s in r["samples"]["p2m-raw"]) \
                    / r["table_bytes"]
            elif tid.endswith("ranges-vs-raw"):
                value = m["p2m-ranges"]["wall_s"] / m["p2m-raw"]["wall_s"]
                best = m["p2m-ranges"]["min_wall_s"] / m["p2m-raw"]["min_wall_s"]
        status = "n/a" if value is None else ("PASS" if value <= limit else "FAIL")
        # "other": the same ratio from the fastest runs (wall) or the worst
        # run (RSS); informative only, the verdict uses the medians
        out.append({"id": tid, "target": desc, "limit": limit, "value": value,
                    "other": best, "status": status})
    return out


def markdown(results: dict, targets: list, reps: int, env: dict) -> str:
    dirty = env.get("git_dirty")
    state = f"p2mdump at {(env.get('git_head') or '?')[:12]}" + (
        f" + {len(dirty)} uncommitted change(s) outside bench/" if dirty else "")
    loads = ", ".join(f"2^{s}: {r['loadavg_before'][0]:.2f} -> {r['loadavg_after'][0]:.2f}"
                      for s, r in sorted(results.items()))
    lines = [f"### Medians of {reps} interleaved runs (wall = whole process, warm cache)", "",
             f"{state}; {env.get('cpus')} CPUs ({env.get('cpu')}); 1-min load average "
             f"{loads}", "",
             "| tree | variant | median wall s | min-max s | median user s | median sys s "
             "| median peak RSS MiB | wall / C raw | RSS / table |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for size in sorted(results):
        r = results[size]
        m = r["medians"]
        c = m["c-raw"]["wall_s"]
        for v in VARIANTS:
            x = m[v]
            lines.append(
                f"| 2^{size} | {v} | {x['wall_s']:.3f} | {x['min_wall_s']:.3f}-"
                f"{x['max_wall_s']:.3f} | {x['user_s']:.2f} | {x['sys_s']:.2f} | "
                f"{x['peak_rss_bytes'] / MiB:.1f} | "
                f"{x['wall_s'] / c:.2f}x | {x['peak_rss_bytes'] / r['table_bytes']:.2f} |")
    lines += ["", "### Targets (verdict on medians)", "",
              "| target | limit | measured (medians) | min-wall ratio / max RSS | result |",
              "|---|---:|---:|---:|---|"]
    for t in targets:
        val = "-" if t["value"] is None else f"{t['value']:.2f}"
        other = "-" if t["other"] is None else f"{t['other']:.2f}"
        lines.append(f"| {t['target']} | <= {t['limit']} | {val} | {other} | "
                     f"**{t['status']}** |")
    lines += ["", "### Output checks", ""]
    for size in sorted(results):
        for name, ok in results[size]["checks"].items():
            lines.append(f"- 2^{size}: {name}: {'ok' if ok else 'MISMATCH'}")
    lines += ["", "### Commands", "", "```"]
    for size in sorted(results):
        r = results[size]
        if r.get("generate"):
            lines.append(qcmd([rel(a) if str(a).startswith(BENCH) else a
                               for a in r["generate"]["argv"]]))
        for v in VARIANTS:
            lines.append(r["commands"][v].replace(BENCH + os.sep, "bench/"))
    lines.append("```")
    return "\n".join(lines)


def environment(cc: str) -> dict:
    def first_line(argv):
        try:
            return subprocess.run(argv, capture_output=True, text=True).stdout.splitlines()[0]
        except (OSError, IndexError):
            return None
    cpu = None
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            cpu = next((ln.split(":", 1)[1].strip() for ln in fh
                        if ln.startswith("model name")), None)
    except OSError:
        pass
    repo = os.path.dirname(BENCH)
    head = first_line(["git", "-C", repo, "rev-parse", "HEAD"])
    try:
        dirty = subprocess.run(["git", "-C", repo, "status", "--porcelain", "--", ".",
                                ":!bench"], capture_output=True, text=True).stdout.splitlines()
    except OSError:
        dirty = None
    return {"git_head": head, "git_dirty": dirty, "python": sys.version.split()[0],
            "platform": platform.platform(),
            "cpu": cpu, "cpus": os.cpu_count(), "cc": first_line([cc, "--version"])}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="24,27",
                    help="comma-separated log2(max_pfn) of the trees: 24, 27 [24,27]")
    ap.add_argument("--reps", type=int, default=5, help="repetitions per variant [5]")
    ap.add_argument("--quick", action="store_true", help="only the 2^24 tree")
    ap.add_argument("--p2mdump", default=None,
                    help="p2mdump executable [the one next to this interpreter]")
    ap.add_argument("--python", default=sys.executable,
                    help="interpreter for the 'python -c pass' baseline [this one]")
    ap.add_argument("--cc", default="cc", help="C compiler [cc]")
    args = ap.parse_args(argv)
    sizes = [24] if args.quick else sorted({int(s) for s in args.sizes.split(",") if s.strip()})
    bad = [s for s in sizes if s not in SIZES]
    if bad:
        ap.error(f"--sizes: unknown size(s) {bad}; known: {sorted(SIZES)}")
    if args.reps < 1:
        ap.error("--reps must be at least 1")
    p2mdump = args.p2mdump or os.path.join(os.path.dirname(sys.executable), "p2mdump")
    if not os.path.exists(p2mdump):
        p2mdump = shutil.which("p2mdump") or ap.error("p2mdump not found; give --p2mdump")
    os.makedirs(OUT, exist_ok=True)

    cc_argv = compile_c(args.cc)
    results = {}
    for size in sizes:
        side, gen = ensure_image(p2mdump, size)
        r = bench_size(size, side, args.reps, p2mdump, args.python)
        r["generate"] = gen
        results[size] = r
    targets = evaluate(results)
    env = environment(args.cc)
    report = markdown(results, targets, args.reps, env)
    print(report)
    path = os.path.join(OUT, "results.json")
    with open(path, "w", encoding="utf-8") as fh:
        json.dump({"reps": args.reps, "sizes": sizes, "compile": qcmd(cc_argv),
                   "environment": env,
                   "results": {str(k): v for k, v in results.items()},
                   "targets": targets}, fh, indent=1)
    log(f"wrote {rel(path)}")
    ok = all(c for r in results.values() for c in r["checks"].values())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
