"""Outputs under hostile conditions: descriptor-based temp files (no chmod or
rename through a swapped name), SIGTERM / SIGHUP / SIGINT cleaning up the
``.part`` file, several outputs committed together or not at all, and
outputs naming an input refused before anything is written."""
import fcntl
import json
import os
import signal
import stat
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

from p2mdump.atomic import atomic_output, check_outputs, output_transaction
from p2mdump.cli import main
from p2mdump.errors import OutputConflict, OutputError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def parts(folder):
    return [p for p in os.listdir(folder) if p.endswith(".part")]


@pytest.fixture
def guest(tmp_path):
    """A small generated guest in its own folder: (image, sidecar) paths."""
    img = tmp_path / "in" / "g.img"
    img.parent.mkdir()
    r = run("generate", img, "--max-pfn", 0x2000, "-q")
    assert r.exit_code == 0, r.output
    return img, tmp_path / "in" / "g.img.json"


def snapshot(*paths):
    return [(p.read_bytes(), os.stat(p).st_mode) for p in paths]


# -- 1. the temporary file is handled through descriptors ----------------------------------

def test_existing_output_keeps_its_mode_new_one_gets_umask(tmp_path):
    out = tmp_path / "o.bin"
    old = os.umask(0o027)
    try:
        with atomic_output(out) as fh:
            fh.write(b"one")
        assert stat.S_IMODE(os.stat(out).st_mode) == 0o640
        os.chmod(out, 0o604)
        with atomic_output(out) as fh:
            fh.write(b"two")
        assert stat.S_IMODE(os.stat(out).st_mode) == 0o604 and out.read_bytes() == b"two"
        # set-id bits of the old file are never carried over
        os.chmod(out, 0o4755)
        with atomic_output(out) as fh:
            fh.write(b"three")
        assert stat.S_IMODE(os.stat(out).st_mode) == 0o755
    finally:
        os.umask(old)
    assert parts(tmp_path) == []


def test_temp_is_read_write_for_the_raw_table(tmp_path):
    with atomic_output(tmp_path / "o.raw") as fh:
        assert fcntl.fcntl(fh.fileno(), fcntl.F_GETFL) & os.O_ACCMODE == os.O_RDWR


def test_swapped_temp_name_never_chmods_another_file(tmp_path):
    """The attack: the .part entry replaced by a symlink to a victim file
    while the writer runs.  The mode is set through the descriptor, so the
    victim keeps its mode and content."""
    victim = tmp_path / "victim"
    victim.write_bytes(b"secret")
    os.chmod(victim, 0o600)
    out = tmp_path / "o.txt"
    with atomic_output(out, "w") as fh:
        fh.write("data")
        (part,) = parts(tmp_path)
        os.unlink(tmp_path / part)
        os.symlink(victim, tmp_path / part)
    assert stat.S_IMODE(os.stat(victim).st_mode) == 0o600
    assert victim.read_bytes() == b"secret"


def test_swapped_folder_is_not_followed(tmp_path):
    """The folder renamed away and replaced (by a symlink elsewhere) while
    the writer runs: the output still lands in the folder opened first."""
    folder = tmp_path / "d"
    folder.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    with atomic_output(folder / "o.txt", "w") as fh:
        fh.write("data")
        os.rename(folder, tmp_path / "moved")
        os.symlink(elsewhere, folder)
    assert (tmp_path / "moved" / "o.txt").read_text() == "data"
    assert os.listdir(elsewhere) == []
    assert parts(tmp_path / "moved") == []


def test_device_written_in_place():
    with atomic_output(os.devnull, "w") as fh:
        fh.write("x")
    assert stat.S_ISCHR(os.stat(os.devnull).st_mode)


def test_walk_to_dev_null_and_raw_file(guest, tmp_path):
    img, _ = guest
    r = run("walk", img, "--format", "csv", "-o", os.devnull, "-q")
    assert r.exit_code == 0, r.output
    out = tmp_path / "t.raw"
    r = run("walk", img, "--format", "raw", "-o", out, "--summary-json", tmp_path / "s.json",
            "-q")
    assert r.exit_code == 0, r.output
    assert os.path.getsize(out) == 0x2000 * 8
    assert json.loads((tmp_path / "s.json").read_text())["max_pfn"] == 0x2000


# -- 2. signals ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def big_guest(tmp_path_factory):
    """A guest of 2^22 pfns: `walk --format csv` of it takes a few seconds."""
    folder = tmp_path_factory.mktemp("big")
    img = folder / "big.img"
    r = run("generate", img, "--max-pfn", 1 << 22, "-q")
    assert r.exit_code == 0, r.output
    return img


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_signal_removes_the_part_file(big_guest, tmp_path, sig):
    out = tmp_path / "out.csv"
    out.write_text("previous\n")
    env = dict(os.environ, PYTHONPATH=ROOT)
    proc = subprocess.Popen([sys.executable, "-m", "p2mdump", "walk", str(big_guest),
                             "--format", "csv", "-o", str(out), "-q"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while not parts(tmp_path) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        assert parts(tmp_path), "the output was never started"
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 128 + sig, err
    assert err.decode().startswith("error: ") and b"Traceback" not in err
    assert parts(tmp_path) == []
    assert out.read_text() == "previous\n"


# -- 3. several outputs: all or none -------------------------------------------------------

def test_transaction_commits_all_or_none(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    b.write_text("old b")
    with pytest.raises(RuntimeError):
        with output_transaction():
            with atomic_output(a, "w") as fh:
                fh.write("new a")
            with atomic_output(b, "w") as fh:
                fh.write("new b")
            assert not a.exists() and b.read_text() == "old b"  # not before the end
            raise RuntimeError("later failure")
    assert not a.exists() and b.read_text() == "old b"
    assert parts(tmp_path) == []
    # the second output cannot even be created: the first is dropped too
    with pytest.raises(OutputError):
        with output_transaction():
            with atomic_output(a, "w") as fh:
                fh.write("new a")
            with atomic_output(tmp_path / "missing" / "c", "w") as fh:
                fh.write("c")
    assert not a.exists() and parts(tmp_path) == []
    with output_transaction():
        with atomic_output(a, "w") as fh:
            fh.write("new a")
        with atomic_output(b, "w") as fh:
            fh.write("new b")
    assert a.read_text() == "new a" and b.read_text() == "new b"
    assert parts(tmp_path) == []


@pytest.mark.parametrize("summary", ["missing/s.json", "adir", "adir/"])
def test_walk_bad_summary_path_refused_before_work(guest, tmp_path, summary):
    img, _ = guest
    (tmp_path / "adir").mkdir()
    out = tmp_path / "t.csv"
    out.write_text("previous\n")
    r = run("walk", img, "--format", "csv", "-o", out, "--summary-json",
            f"{tmp_path}/{summary}")
    assert r.exit_code == 5, r.output
    assert r.stderr.startswith("error: ") and r.stderr.count("\n") == 1
    assert out.read_text() == "previous\n" and parts(tmp_path) == []


def _failing_json(path, data):
    raise OutputError(f"{path}: write failed: no space left on device")


@pytest.mark.parametrize("fmt", ["csv", "raw"])
def test_walk_side_output_failure_keeps_main_output_out(guest, tmp_path, monkeypatch, fmt):
    img, _ = guest
    monkeypatch.setattr("p2mdump.cli.walkrun.write_json_file", _failing_json)
    out = tmp_path / "t.out"
    r = run("walk", img, "--format", fmt, "-o", out, "--summary-json", tmp_path / "s.json")
    assert r.exit_code == 5 and "no space left" in r.stderr
    assert not out.exists() and parts(tmp_path) == []


def test_extract_side_output_failure_keeps_main_output_out(guest, tmp_path, monkeypatch):
    img, _ = guest
    monkeypatch.setattr("p2mdump.cli.extract.write_json_file", _failing_json)
    out = tmp_path / "guest.raw"
    r = run("extract", img, "-o", out, "--summary-json", tmp_path / "s.json", "-q")
    assert r.exit_code == 5 and "no space left" in r.stderr
    assert not out.exists() and parts(tmp_path) == []
    monkeypatch.undo()
    r = run("extract", img, "-o", out, "--summary-json", tmp_path / "s.json", "-q")
    assert r.exit_code == 0 and out.exists() and (tmp_path / "s.json").exists()


@pytest.mark.parametrize("container", ["raw", "xc-core", "elf"])
def test_generate_truth_failure_leaves_nothing(tmp_path, monkeypatch, container):
    def failing_truth(*args):
        raise OutputError("truth: write failed: no space left on device")

    monkeypatch.setattr("p2mdump.writer.image.write_truth", failing_truth)
    monkeypatch.setattr("p2mdump.writer.containers.write_truth", failing_truth)
    out = tmp_path / "g.img"
    r = run("generate", out, "--max-pfn", 0x2000, "--container", container,
            "--truth", tmp_path / "g.truth", "-q")
    assert r.exit_code == 5 and "no space left" in r.stderr
    assert os.listdir(tmp_path) == []


def test_generate_truth_folder_checked_first(tmp_path):
    out = tmp_path / "g.img"
    r = run("generate", out, "--max-pfn", 0x2000, "--truth", tmp_path / "no" / "g.truth")
    assert r.exit_code == 5 and "does not exist" in r.stderr
    assert os.listdir(tmp_path) == []


# -- 4. never destroy an input -------------------------------------------------------------

def _aliases(img, tmp_path):
    """Other names of ``img``: relative, a hard link, a symlink."""
    link = tmp_path / "hard.img"
    os.link(img, link)
    sym = tmp_path / "sym.svg"
    os.symlink(img, sym)
    rel = os.path.relpath(img)
    return {"same": img, "relative": rel, "hard": link, "symlink": sym}


@pytest.mark.parametrize("alias", ["same", "relative", "hard", "symlink"])
@pytest.mark.parametrize("option", ["-o", "--summary-json"])
def test_walk_refuses_to_overwrite_the_image(guest, tmp_path, alias, option):
    img, side = guest
    target = _aliases(img, tmp_path)[alias]
    before = snapshot(img, side)
    args = ["walk", img, option, target, "-q"]
    if option == "--summary-json":
        args += ["-o", tmp_path / "t.txt"]
    r = run(*args)
    assert r.exit_code == 2, r.output
    assert r.stderr.startswith("error: ") and "is the input" in r.stderr
    assert snapshot(img, side) == before
    assert not (tmp_path / "t.txt").exists()
    assert parts(img.parent) == [] and parts(tmp_path) == []


@pytest.mark.parametrize("option", ["-o", "--summary-json"])
def test_walk_and_extract_refuse_the_sidecar(guest, tmp_path, option):
    img, side = guest
    before = snapshot(img, side)
    for cmd in ("walk", "extract"):
        args = [cmd, img, option, side]
        if option == "--summary-json":
            args += ["-o", tmp_path / "x.out"]
        r = run(*args)
        assert r.exit_code == 2 and "is the input" in r.stderr, (cmd, r.output)
    assert snapshot(img, side) == before
    assert os.listdir(tmp_path) == ["in"]


def test_extract_and_map_refuse_the_image(guest, tmp_path):
    img, side = guest
    before = snapshot(img, side)
    names = _aliases(img, tmp_path)
    for args in (["extract", img, "-o", names["hard"]], ["map", img, "-o", names["symlink"]]):
        r = run(*args)
        assert r.exit_code == 2 and "is the input" in r.stderr, (args, r.output)
    assert snapshot(img, side) == before


def test_walk_two_outputs_naming_one_file(guest, tmp_path):
    img, _ = guest
    out = tmp_path / "t.txt"
    r = run("walk", img, "-o", out, "--summary-json", tmp_path / "." / "t.txt")
    assert r.exit_code == 2 and "name the same file" in r.stderr
    assert not out.exists()


@pytest.mark.parametrize("which", ["image", "sidecar", "spec"])
def test_generate_truth_refused_on_its_own_outputs_and_spec(guest, tmp_path, which):
    img, side = guest
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"max_pfn": 0x1000}))
    truth = {"image": img, "sidecar": side, "spec": spec}[which]
    before = snapshot(img, side, spec)
    r = run("generate", img, "--spec", spec, "--truth", truth, "-q")
    assert r.exit_code == 2, r.output
    assert r.stderr.startswith("error: ") and r.stderr.count("\n") == 1
    assert snapshot(img, side, spec) == before


def test_generate_refuses_to_write_over_its_spec(tmp_path):
    spec = tmp_path / "g.img.json"
    spec.write_text(json.dumps({"max_pfn": 0x1000}))
    r = run("generate", tmp_path / "g.img", "--spec", spec)
    assert r.exit_code == 2 and "is the input" in r.stderr
    assert json.loads(spec.read_text()) == {"max_pfn": 0x1000}
    assert os.listdir(tmp_path) == ["g.img.json"]


def test_check_outputs_api(tmp_path):
    inp = tmp_path / "in.img"
    inp.write_bytes(b"x")
    check_outputs({"-o": tmp_path / "new", "--x": "-", "--y": None, "--z": os.devnull},
                  inputs=(inp, tmp_path / "absent"))
    with pytest.raises(OutputConflict):
        check_outputs({"-o": tmp_path / "sub" / ".." / "in.img"}, inputs=(inp,))
    with pytest.raises(OutputError):
        check_outputs({"-o": tmp_path})
    with pytest.raises(OutputError):
        check_outputs({"-o": inp / "child"})


def test_signals_held_even_when_another_thread_takes_them():
    """A SIGINT the process gets while a temporary file is being created is
    raised after the block, even when another thread (numpy's BLAS threads)
    is the one the kernel hands it to."""
    import threading

    from p2mdump.atomic import _signals_held

    inside = []
    with pytest.raises(KeyboardInterrupt):
        with _signals_held():
            t = threading.Thread(target=os.kill, args=(os.getpid(), signal.SIGINT))
            t.start()
            t.join()
            for _ in range(1000):       # bytecodes at which a handler could run
                inside.append(1)
            time.sleep(0.05)
            inside.append("done")
    assert inside[-1] == "done"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_signal_while_the_part_file_is_opened(tmp_path, monkeypatch, sig):
    """A termination signal that arrives as the temporary file is created is
    held back until the file object owns its descriptor, then ends the command
    the usual way (exit 128+signum): the descriptor is closed once (twice gave
    "Bad file descriptor", exit 5), the .part file is removed, the target kept."""
    from p2mdump import atomic
    from p2mdump.cli.running import _termination_signals

    target = tmp_path / "out.bin"
    target.write_bytes(b"previous")
    real = atomic._fdopen

    def open_then_signal(fd, mode):
        # the signal comes as the file object is made: its handler runs while
        # the object is only on the interpreter's stack (as inside os.fdopen)
        return (real(fd, mode), signal.raise_signal(sig))[0]

    monkeypatch.setattr(atomic, "_fdopen", open_then_signal)
    with pytest.raises(SystemExit) as ended:
        with _termination_signals():
            with atomic_output(target) as fh:
                fh.write(b"new")
    assert ended.value.code == 128 + sig
    assert parts(tmp_path) == []
    assert target.read_bytes() == b"previous"
