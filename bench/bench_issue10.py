#!/usr/bin/env python3
"""Every row of issue 10 in one command: the side-by-side scripts in turn,
their verdicts gathered into one table.

    python bench/bench_issue10.py [--reps 5] [--small] [--keep]

Runs, with the interpreter running this script (a venv p2mdump is installed
in with ``pip install .``):

* ``bench_walks.py --sizes 24,27``: raw walk, 32-bit walk (and the 1 GiB
  32-bit guest), ``xl dump-core`` walk (2^24, 2^26), shuffled leaves with
  ``verify`` and ``map`` -- each against the C walker or the raw walk;
* ``bench_scan.py --only scattered --sizes 24,26``: scan of scattered
  against contiguous tree pages;
* ``bench_generate.py --sizes 24,27``: generate's peak memory in every
  container, both word sizes;
* ``bench_formats.py --sizes 24,27``: jsonl / csv rows a second;
* ``bench_lookup.py --only mfn --sizes 24,27``: a single ``lookup --mfn``
  against the walk;
* ``bench_diff.py --sizes 24,27``: diff against two walks;
* ``bench_extract_sparse.py``: extract of a sparse ``xl dump-core``.

(The issue's "no BLAS threads" row is a test:
``tests/test_launcher.py::test_the_command_line_starts_no_blas_threads``.)

Each script's output goes to bench/out/issue10-NAME.txt; the verdict tables
(``| target | limit | measured | result |``) are printed together at the
end and written to bench/out/issue10.md.  The images of a script are
deleted after it (``--keep`` keeps them; the 2^27 ones take ~10 GB in all).
``--small`` runs every script at 2^20 and 2^22 instead, to try the command
itself in a minute or two: its verdicts mean nothing.
"""
from __future__ import annotations

import argparse
import glob
import os
import subprocess
import sys
import time

import benchkit as K

BENCH = K.BENCH
OUT = K.OUT


def steps(reps: int, small: bool) -> list:
    """(name, script arguments) of every script to run."""
    lo, hi, mid = (20, 22, 22) if small else (24, 27, 26)
    two = f"{lo},{hi}"
    r = ["--reps", str(reps)]
    return [
        ("walks", ["bench_walks.py", "--sizes", two, "--xc-max", str(mid)] + r),
        ("scan", ["bench_scan.py", "--only", "scattered", "--sizes", f"{lo},{mid}"] + r),
        ("generate", ["bench_generate.py", "--sizes", two]),
        ("formats", ["bench_formats.py", "--sizes", two] + r),
        ("lookup", ["bench_lookup.py", "--only", "mfn", "--sizes", two] + r),
        ("diff", ["bench_diff.py", "--sizes", two] + r),
        ("extract-sparse", ["bench_extract_sparse.py"] + r),
    ]


def verdicts(text: str) -> list:
    """The lines of a script's output that give a verdict (PASS or FAIL),
    each table's with its header row."""
    out: list[str] = []
    header = None      # the header of the table being read, until used
    in_table = False
    for line in text.splitlines():
        if line.startswith("|"):
            if not in_table:
                header, in_table = line, True
                continue
        else:
            in_table = False
        if "PASS" not in line and "FAIL" not in line:
            continue
        if in_table and header is not None:
            out += ["", header, "|" + "---|" * (header.count("|") - 1)]
            header = None
        out.append(line)
    return out


#: files of bench/out a run keeps: the scripts' results and logs
KEEP = ("bench_", "issue10", "results", "last-stderr")


def clean() -> None:
    """Remove the images, sidecars and outputs the scripts left in bench/out."""
    for path in glob.glob(os.path.join(OUT, "*")):
        if os.path.isfile(path) and not os.path.basename(path).startswith(KEEP):
            os.remove(path)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--small", action="store_true",
                    help="2^20 and 2^22 instead of 2^24 and 2^26/2^27 (tries the command)")
    ap.add_argument("--keep", action="store_true", help="keep the images between scripts")
    args = ap.parse_args()
    if not K.p2mdump_exe():
        ap.error("no p2mdump next to this interpreter or on PATH")
    os.makedirs(OUT, exist_ok=True)
    report: list[str] = []
    failed = []
    for name, argv in steps(args.reps, args.small):
        cmd = [sys.executable, os.path.join(BENCH, argv[0])] + argv[1:]
        shown = K.qcmd(["python", "bench/" + argv[0]] + argv[1:])
        K.log(f"== {name}: {shown}")
        t = time.perf_counter()
        done = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, cwd=BENCH)
        K.log(f"   {time.perf_counter() - t:.0f} s, exit {done.returncode}")
        with open(os.path.join(OUT, f"issue10-{name}.txt"), "w") as fh:
            fh.write(done.stdout)
        found = verdicts(done.stdout)
        report += ["", f"### {name}: `{shown}`"]
        if done.returncode and not any("FAIL" in line for line in found):
            failed.append(name)
            report.append(f"**FAIL**: the script ended with exit {done.returncode} "
                          f"(bench/out/issue10-{name}.txt)")
        report += found
        if not args.keep:
            clean()
    text = "\n".join(report).strip()
    print(text)
    with open(os.path.join(OUT, "issue10.md"), "w") as fh:
        fh.write(text + "\n")
    ok = not failed and not any("FAIL" in line for line in report)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
