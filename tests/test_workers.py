"""map_chunks: results in chunk order whatever the threads, one scratch
state per thread, the first failing chunk's error, no thread for one CPU."""
import threading

import pytest

from p2mdump import workers
from p2mdump.workers import map_chunks


@pytest.mark.parametrize("n_workers", [1, 2, 3, 8])
def test_results_come_back_in_chunk_order(n_workers):
    made = []

    def scratch():
        s = {"thread": threading.get_ident(), "done": 0}
        made.append(s)
        return s

    def work(i, s):
        assert s["thread"] == threading.get_ident()   # each thread its own state
        s["done"] += 1
        return i * i

    assert map_chunks(work, 50, scratch, workers=n_workers) == [i * i for i in range(50)]
    assert len(made) == min(n_workers, 50)
    assert sum(s["done"] for s in made) == 50


def test_one_worker_runs_in_the_callers_thread():
    me = threading.get_ident()
    assert map_chunks(lambda i, s: threading.get_ident(), 4, lambda: None,
                      workers=1) == [me] * 4


def test_default_follows_the_usable_cpus(monkeypatch):
    monkeypatch.setattr(workers, "usable_cpus", lambda: 1)
    me = threading.get_ident()
    assert set(map_chunks(lambda i, s: threading.get_ident(), 6, lambda: None)) == {me}


def test_the_first_failing_chunk_is_raised():
    started = []
    gate = threading.Barrier(2)

    def work(i, s):
        started.append(i)
        if i in (0, 1):
            gate.wait(timeout=5)       # both failing chunks run at once
            raise ValueError(f"chunk {i}")
        return i

    with pytest.raises(ValueError, match="chunk 0"):
        map_chunks(work, 100, lambda: None, workers=2)
    assert max(started) < 10           # no chunk is started after a failure


def test_no_chunks():
    assert map_chunks(lambda i, s: i, 0, lambda: None) == []
