"""What the side-by-side benchmarks share (bench_formats, bench_diff, the
``--mfn`` part of bench_lookup, the scattered part of bench_scan).

* :func:`generate`: ``p2mdump generate`` into bench/out/, skipped when the
  image was already made by the same command line (a stamp file);
* :func:`measure`: one whole process, its wall time and peak RSS
  (``os.wait4``: the rusage of that child alone);
* :func:`interleave`: every variant once per repetition, in turn, so a slow
  phase of the machine hits all of them alike; medians of each; the output
  files a variant names are removed before each of its runs (untimed), so
  that every run writes a new file;
* :func:`table` / :func:`verdicts`: the Markdown tables printed at the end.
"""
from __future__ import annotations

import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(BENCH, "out")
MiB = 1 << 20


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def p2mdump_exe() -> str:
    """The p2mdump script of this interpreter's environment (install it with
    ``pip install .``, not editable, before measuring)."""
    exe = os.path.join(os.path.dirname(sys.executable), "p2mdump")
    return exe if os.path.exists(exe) else shutil.which("p2mdump")


def qcmd(argv) -> str:
    return " ".join(shlex.quote(str(a)) for a in argv)


def generate(name: str, args: list) -> tuple[str, dict]:
    """bench/out/NAME (and its sidecar) made by ``p2mdump generate NAME ARGS``,
    reused when an earlier run used the same arguments."""
    os.makedirs(OUT, exist_ok=True)
    img = os.path.join(OUT, name)
    argv = [p2mdump_exe(), "generate", img] + [str(a) for a in args] + ["-q"]
    stamp = img + ".gen.json"
    want = {"args": [str(a) for a in args]}
    try:
        with open(stamp) as fh:
            have = json.load(fh)
    except (OSError, ValueError):
        have = None
    if have != want or not os.path.exists(img) or not os.path.exists(img + ".json"):
        log(f"$ {qcmd(argv)}")
        t = time.perf_counter()
        subprocess.run(argv, check=True)
        log(f"  built in {time.perf_counter() - t:.1f} s")
        with open(stamp, "w") as fh:
            json.dump(want, fh)
    with open(img + ".json") as fh:
        return img, json.load(fh)


def warm(path: str) -> None:
    """Read a file once so every variant meets a warm page cache.  A sparse
    file is left alone (reading its holes would fill the cache with zero
    pages and push its data out); the warm-up run of each variant warms it."""
    st = os.stat(path)
    if st.st_blocks * 512 < st.st_size // 2:
        return
    with open(os.devnull, "wb") as null:
        subprocess.run(["cat", path], stdout=null, check=True)


def measure(argv, stdout: str | None = None, ok_codes=(0,), fresh=()) -> dict:
    """Run ``argv`` (stdout to ``stdout`` or /dev/null): wall s, peak RSS bytes.

    ``fresh``: files removed before the run, outside the timing.  A run that
    replaces or truncates an existing output pays for that file too (on ext4,
    auto_da_alloc starts the writeback of the new file's pages; the old
    file's pages are freed), by a varying amount as the previous run's
    writeback is still under way: both the C walker and p2mdump, when each
    rerun writes over the last one's output."""
    for path in fresh:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
    actions = [(os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
               (os.POSIX_SPAWN_OPEN, 1, stdout or os.devnull,
                os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644),
               (os.POSIX_SPAWN_OPEN, 2, os.path.join(OUT, "last-stderr.txt"),
                os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)]
    argv = [str(a) for a in argv]
    t0 = time.perf_counter()
    pid = os.posix_spawnp(argv[0], argv, os.environ, file_actions=actions)
    _, status, ru = os.wait4(pid, 0)
    wall = time.perf_counter() - t0
    code = os.waitstatus_to_exitcode(status)
    if code not in ok_codes:
        with open(os.path.join(OUT, "last-stderr.txt")) as fh:
            raise SystemExit(f"{qcmd(argv)} exited {code}: {fh.read()[-2000:]}")
    return {"wall": wall, "rss": ru.ru_maxrss * 1024, "user": ru.ru_utime, "sys": ru.ru_stime}


def interleave(variants: dict, reps: int) -> dict:
    """{name: [measurement, ...]}: each variant ({name: (argv, stdout, ok
    exit codes[, files to remove before each run])}) run once per
    repetition, in turn, after one warm-up run."""
    for argv, out, codes, *fresh in variants.values():
        log(f"$ {qcmd(argv)}" + (f" > {out}" if out else ""))
        measure(argv, out, codes, *fresh)
    runs: dict = {name: [] for name in variants}
    for rep in range(reps):
        for name, (argv, out, codes, *fresh) in variants.items():
            runs[name].append(measure(argv, out, codes, *fresh))
        log(f"  rep {rep + 1}/{reps}: " + ", ".join(
            f"{n} {runs[n][-1]['wall']:.3f}s" for n in variants))
    return runs


def med(runs: list, key: str = "wall") -> float:
    return statistics.median(r[key] for r in runs)


def table(rows: list, ref: str | None = None, table_bytes: int | None = None) -> str:
    """Markdown: one line per (label, variant, runs); ratios to the variant
    ``ref`` of the same label and peak RSS / ``table_bytes``."""
    head = ["what", "variant", "median wall s", "min-max s", "median user s", "median sys s",
            "median peak RSS MiB"]
    if ref:
        head.append(f"wall / {ref}")
    if table_bytes:
        head.append("RSS / table")
    lines = ["| " + " | ".join(head) + " |",
             "|---|---|" + "---:|" * (len(head) - 2)]
    refs = {label: med(runs) for label, name, runs in rows if name == ref}
    for label, name, runs in rows:
        walls = [r["wall"] for r in runs]
        cells = [label, name, f"{med(runs):.3f}", f"{min(walls):.3f}-{max(walls):.3f}",
                 f"{med(runs, 'user'):.2f}", f"{med(runs, 'sys'):.2f}",
                 f"{med(runs, 'rss') / MiB:.1f}"]
        if ref:
            cells.append(f"{med(runs) / refs[label]:.2f}x" if label in refs else "")
        if table_bytes:
            tb = table_bytes[label] if isinstance(table_bytes, dict) else table_bytes
            cells.append(f"{med(runs, 'rss') / tb:.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def verdicts(checks: list) -> tuple[str, bool]:
    """Markdown of [(target, limit text, measured, passed)] and whether all passed."""
    lines = ["| target | limit | measured (medians) | result |", "|---|---:|---:|---|"]
    for what, limit, got, ok in checks:
        lines.append(f"| {what} | {limit} | {got} | **{'PASS' if ok else 'FAIL'}** |")
    return "\n".join(lines), all(c[3] for c in checks)


def sizes_arg(text: str) -> list[int]:
    return [int(s) for s in text.split(",") if s.strip()]


def save(name: str, data: dict) -> None:
    with open(os.path.join(OUT, name), "w") as fh:
        json.dump(data, fh, indent=2)
