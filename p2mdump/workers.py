"""One pass over the chunks of a file shared by a few threads.

The bulk passes of p2mdump (reading a section a chunk at a time and
reducing each chunk with numpy) spend their time in ``preadv`` and in numpy
operations on arrays of hundreds of thousands of elements, both of which let
go of the interpreter lock.  :func:`map_chunks` runs such a pass on the CPUs
this process may use (at most :data:`MAX_WORKERS`), each thread with its own
scratch state, and gives the results back in chunk order.  With one CPU, or
one chunk, the pass runs in the caller's thread: no thread is started.
"""
from __future__ import annotations

import os
import threading
from typing import Callable, TypeVar

T = TypeVar("T")
S = TypeVar("S")

#: threads of one pass: the passes are bound by memory bandwidth, which a few
#: CPUs already use up
MAX_WORKERS = 4
#: allocations below this size are served from the heap once threads run
#: (see :func:`keep_freed_memory`)
HEAP_ALLOCATIONS = 32 << 20

_heap_kept = False


def keep_freed_memory() -> None:
    """Have glibc's allocator keep freed memory for reuse (allocations up
    to :data:`HEAP_ALLOCATIONS` from the heap, no trimming) instead of
    mapping each large numpy temporary afresh and unmapping it when freed.
    With several threads running (:func:`map_chunks`, the table's scan
    ahead), every unmap interrupts the other CPUs to flush their TLBs, and
    every fresh page costs a fault: on a virtual machine the .xen_p2m pass
    of a 2^26-pfn guest took 0.17-0.185 s without this and 0.14-0.15 s with
    it (six runs each, fresh processes).  A setting of the whole process:
    the command line makes it (:mod:`p2mdump.launcher`); a program using
    the library decides for itself.  Elsewhere than glibc, nothing."""
    global _heap_kept
    if _heap_kept:
        return
    _heap_kept = True
    try:
        import ctypes

        mallopt = ctypes.CDLL(None).mallopt
    except (ImportError, OSError, AttributeError):
        return
    m_trim_threshold, m_mmap_threshold = -1, -3      # <malloc.h>
    mallopt(m_mmap_threshold, HEAP_ALLOCATIONS)
    mallopt(m_trim_threshold, 8 * HEAP_ALLOCATIONS)


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def map_chunks(work: Callable[[int, S], T], count: int, scratch: Callable[[], S],
               workers: int | None = None) -> list[T]:
    """``[work(0, s), ..., work(count - 1, s)]`` where ``s`` is the calling
    thread's own ``scratch()`` (made once per thread).  Chunks are handed out
    in order to up to ``workers`` threads (default: the usable CPUs, at most
    :data:`MAX_WORKERS`).  When chunks fail, the exception of the first
    failing chunk is raised once every thread has stopped; no chunk is
    started after a failure or an interrupt of the caller."""
    if workers is None:
        workers = min(usable_cpus(), MAX_WORKERS)
    workers = max(1, min(workers, count))
    if workers == 1:
        state = scratch()
        return [work(i, state) for i in range(count)]
    results: list = [None] * count
    failed: dict[int, BaseException] = {}
    lock = threading.Lock()
    stop = threading.Event()
    nxt = [0]

    def run() -> None:
        state = scratch()
        while not stop.is_set():
            with lock:
                i = nxt[0]
                if i >= count:
                    return
                nxt[0] = i + 1
            try:
                results[i] = work(i, state)
            except BaseException as exc:     # raised in the caller's thread below
                failed[i] = exc
                stop.set()
                return

    threads = [threading.Thread(target=run, name=f"p2mdump-chunks-{k}", daemon=True)
               for k in range(workers)]
    for t in threads:
        t.start()
    try:
        for t in threads:
            t.join()
    except BaseException:
        stop.set()                      # Ctrl-C: let each thread end its chunk
        for t in threads:
            t.join()
        raise
    if failed:
        raise failed[min(failed)]
    return results
