#!/usr/bin/env python3
"""Benchmark: indexing an `xl save` file against `cat FILE > /dev/null`, warm cache.

    python bench/bench_saveindex.py [--gib 4] [--runs 5]

Builds (once) bench/out/save-<N>g.save: an xl-format save file of a 64-bit PV
guest with N GiB of pages (N * 262144 pfns in PAGE_DATA records of 1024), laid
out from p2mdump.schemas.xl_save; the page data are holes of a sparse file, so
the file costs little disk.  Then times, interleaved, `cat FILE > /dev/null`
and a whole `python -c 'open_save(FILE)'` process; prints medians and the
indexer's peak RSS and writes bench/out/bench_saveindex.json.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "out")
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

BATCH = 1024
INDEX = ("import sys; from p2mdump.sources.xl_save import open_save; "
         "s = open_save(sys.argv[1]); assert s.complete, s.findings; print(len(s.data_pfns))")


def build(path: str, npages: int) -> None:
    """A sparse xl save file: headers and pfn words written, page data left as holes."""
    from p2mdump.layout import PAGE_SIZE
    from p2mdump.schemas import xl_save as S

    def rec(rtype, body=b"", length=None):
        n = len(body) if length is None else length
        return S.RecordHeader.build({"type": rtype, "length": n}) + body + \
            b"\0" * (S.padded_length(len(body)) - len(body))

    fpp = PAGE_SIZE // 8
    frames = list(range(npages - (npages - 1) // fpp - 1, npages))
    with open(path + ".part", "wb") as fh:
        fh.write(S.XlHeader.build({"byteorder": S.XL_BYTEORDER_MARKER,
                                   "mandatory_flags": S.XL_MANDATORY_FLAG_STREAMV2,
                                   "optional_flags": 0, "optional_data_len": 0}))
        fh.write(S.LibxlHeader.build({"ident": S.LIBXL_IDENT, "version": 2, "options": 0}))
        fh.write(rec(S.LIBXL_REC_LIBXC_CONTEXT))
        fh.write(S.LibxcImageHeader.build({"marker": S.LIBXC_MARKER, "ident": S.LIBXC_IDENT,
                                           "version": 3, "options": 0, "reserved1": 0,
                                           "reserved2": 0}))
        fh.write(S.LibxcDomainHeader.build({"type": S.DHDR_TYPE_X86_PV, "page_shift": 12,
                                            "reserved": 0, "xen_major": 4, "xen_minor": 17}))
        fh.write(rec(S.REC_X86_PV_INFO, S.X86PvInfo.build(
            {"guest_width": 8, "pt_levels": 4, "reserved": bytes(6)})))
        fh.write(rec(S.REC_STATIC_DATA_END))
        fh.write(rec(S.REC_X86_PV_P2M_FRAMES, S.x86_pv_p2m_frames(len(frames)).build(
            {"start_pfn": 0, "end_pfn": npages - 1, "p2m_pfns": frames})))
        for first in range(0, npages, BATCH):
            pfns = list(range(first, min(first + BATCH, npages)))
            head = S.page_data_pfns(len(pfns)).build(
                {"count": len(pfns), "reserved": 0, "pfns": pfns})
            fh.write(rec(S.REC_PAGE_DATA, head, length=len(head) + len(pfns) * PAGE_SIZE))
            fh.seek(len(pfns) * PAGE_SIZE, os.SEEK_CUR)
        fh.write(rec(S.REC_SHARED_INFO, bytes(PAGE_SIZE)))
        fh.write(rec(S.REC_END))
        fh.write(rec(S.LIBXL_REC_END))
    os.replace(path + ".part", path)


def timed(cmd, **kw) -> tuple[float, int]:
    """(wall seconds, peak RSS in KiB of the child) of one run of ``cmd``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, **kw)
    dt = time.perf_counter() - t0
    return dt, max(before, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gib", type=int, default=4)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    os.makedirs(OUT, exist_ok=True)
    path = os.path.join(OUT, f"save-{args.gib}g.save")
    npages = args.gib << 18
    if not os.path.exists(path):
        build(path, npages)
    env = {**os.environ, "PYTHONPATH": ROOT}
    index = [sys.executable, "-c", INDEX, path]
    cat = ["sh", "-c", 'cat "$1" > /dev/null', "sh", path]
    subprocess.run(cat, check=True)                        # warm the cache
    subprocess.run(index, check=True, env=env, capture_output=True)
    cats, idx = [], []
    rss = 0
    for _ in range(args.runs):
        cats.append(timed(cat)[0])
        dt, _peak = timed(index, env=env, capture_output=True)
        idx.append(dt)
    # peak RSS of the indexer alone (RUSAGE_CHILDREN is a maximum over all children)
    rss = int(subprocess.run(
        [sys.executable, "-c", INDEX + "; import resource; "
         "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)", path],
        check=True, env=env, capture_output=True, text=True).stdout.split()[-1])
    res = {"file": path, "file_bytes": os.path.getsize(path), "pages": npages,
           "disk_bytes": os.stat(path).st_blocks * 512, "runs": args.runs,
           "cat_median_s": statistics.median(cats), "index_median_s": statistics.median(idx),
           "ratio": statistics.median(idx) / statistics.median(cats), "index_peak_rss_kib": rss,
           "command": f"python bench/bench_saveindex.py --gib {args.gib} --runs {args.runs}"}
    print(json.dumps(res, indent=2))
    with open(os.path.join(OUT, "bench_saveindex.json"), "w") as fh:
        json.dump(res, fh, indent=2)


if __name__ == "__main__":
    main()
