import json
import os

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import load_fixture
from p2mdump.cli import main
from p2mdump.layout import PAGE_SIZE, layout_for


def run(*args, **kw):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False, **kw)


@pytest.fixture(params=["guest64", "guest32", "e820-64", "e820-32"])
def fx(request):
    return load_fixture(request.param)


def test_raw_output_equals_truth(fx, tmp_path):
    img, side, truth = fx
    out = tmp_path / "t.raw"
    r = run("walk", img, "--top-mfn", hex(side["top_mfn"]), "--max-pfn", side["max_pfn"],
            "--format", "raw", "-o", out)
    assert r.exit_code == 0, r.output
    assert out.read_bytes() == truth.tobytes()
    assert "max_pfn" in r.stderr and r.stdout == ""


def test_npy_output(fx, tmp_path):
    img, side, truth = fx
    out = tmp_path / "t.npy"
    r = run("walk", img, "--top-mfn", side["top_mfn"], "--max-pfn", side["max_pfn"],
            "--format", "npy", "-o", out, "-q")
    assert r.exit_code == 0 and r.stderr == ""
    arr = np.load(out)
    assert arr.dtype == np.dtype(f"<u{side['word_size']}")
    assert arr.tobytes() == truth.tobytes()


def test_ranges_default_and_summary_json(fx, tmp_path):
    img, side, truth = fx
    L = layout_for(side["word_size"])
    r = run("walk", img, "--top-mfn", side["top_mfn"], "--max-pfn", side["max_pfn"],
            "--summary-json", tmp_path / "s.json")
    assert r.exit_code == 0
    # rebuild the table from the ranges and compare with the truth
    rebuilt = np.full(len(truth), L.invalid, dtype=np.uint64)
    kinds = {}
    for line in r.stdout.splitlines():
        parts = line.split()
        a, b = (int(x, 16) for x in parts[0].split("-"))
        kind = parts[-1]
        kinds[kind] = kinds.get(kind, 0) + b - a + 1
        if kind != "missing":
            m0, m1 = (int(x, 16) for x in parts[2].split("-"))
            assert m1 - m0 == b - a
            flag = {"valid": 0, "identity": L.identity_bit, "foreign": L.foreign_bit}[kind]
            rebuilt[a:b + 1] = np.arange(m0, m1 + 1, dtype=np.uint64) | np.uint64(flag)
    assert rebuilt.astype(truth.dtype).tobytes() == truth.tobytes()
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["counts"] == {k: kinds.get(k, 0) for k in summary["counts"]}
    assert summary["max_pfn"] == side["max_pfn"] and summary["word_size"] == side["word_size"]
    assert summary["top_mfn"] == side["top_mfn"]


@pytest.mark.parametrize("fmt", ["table", "csv", "jsonl"])
def test_row_formats(fmt, tmp_path):
    img, side, truth = load_fixture("guest64")
    L = layout_for(8)
    r = run("walk", img, "--top-mfn", side["top_mfn"], "--max-pfn", 0x6100, "--format", fmt,
            "-q")
    assert r.exit_code == 0
    lines = r.stdout.splitlines()
    if fmt in ("table", "csv"):
        lines = lines[1:]
    assert len(lines) == 0x6100
    for pfn in (0, 0xA5, 0x4000, 0x6005):
        line = lines[pfn]
        kind = L.kind_of(int(truth[pfn]))
        if fmt == "jsonl":
            row = json.loads(line)
            assert row == {"pfn": pfn, "raw": int(truth[pfn]), "kind": kind,
                           "mfn": L.decode(int(truth[pfn]))}
        else:
            cells = line.replace(",", " ").split()
            assert int(cells[0], 16) == pfn and int(cells[1], 16) == int(truth[pfn])
            assert cells[2] == kind


def test_auto_word_size_is_announced():
    img, side, _ = load_fixture("guest32")
    r = run("walk", img, "--top-mfn", side["top_mfn"], "--format", "ranges")
    assert r.exit_code == 0
    assert "word size 4 detected" in r.stderr


def test_strict_exit_code(tmp_path):
    img, side, _ = load_fixture("guest64")
    r = run("walk", img, "--top-mfn", side["top_mfn"], "--max-pfn", 16, "--strict", "-q")
    assert r.exit_code == 1  # entries past max_pfn are a warning
    assert r.stderr.startswith("error:")
    r = run("walk", img, "--top-mfn", side["top_mfn"], "--strict", "-q")
    assert r.exit_code == 0


def _no_traceback(r):
    assert "Traceback" not in r.output
    assert r.stderr.count("\n") <= 2


@pytest.mark.parametrize("case, code, text", [
    ("missing", 3, "no such file"),
    ("dir", 3, "directory"),
    ("empty", 3, "empty"),
    ("top-past-end", 4, "not in the image"),
    ("garbage", 4, "not a p2m top page"),
    ("wrong-ws", 4, "does not fit"),
    ("huge-max-pfn", 4, "larger than"),
    ("bad-number", 2, "not a number"),
])
def test_bad_input(case, code, text, tmp_path):
    img, side, _ = load_fixture("guest64")
    top = side["top_mfn"]
    args = ["walk", img, "--top-mfn", top, "--format", "raw"]
    if case == "missing":
        args[1] = tmp_path / "nope.img"
    elif case == "dir":
        args[1] = tmp_path
    elif case == "empty":
        (tmp_path / "e.img").write_bytes(b"")
        args[1] = tmp_path / "e.img"
    elif case == "top-past-end":
        args[3] = "0x10000000"
    elif case == "garbage":
        (tmp_path / "g.img").write_bytes(np.random.default_rng(0).bytes(PAGE_SIZE * 8))
        args[1], args[3] = tmp_path / "g.img", 2
    elif case == "wrong-ws":
        args += ["--word-size", "4"]
    elif case == "huge-max-pfn":
        args += ["--max-pfn", 2 ** 27 + 1]
    elif case == "bad-number":
        args[3] = "12zz"
    out = tmp_path / "out.raw"
    r = run(*args, "-o", out)
    assert r.exit_code == code, r.output
    assert text in r.stderr
    _no_traceback(r)
    assert not out.exists()
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".part")]


def test_output_folder_missing(tmp_path):
    img, side, _ = load_fixture("guest64")
    r = run("walk", img, "--top-mfn", side["top_mfn"], "-o", tmp_path / "no" / "x.txt")
    assert r.exit_code == 5 and "does not exist" in r.stderr


def test_damage_is_reported_and_table_still_written(tmp_path):
    img, side, truth = load_fixture("guest64")
    data = bytearray(open(img, "rb").read())
    top = side["top_mfn"]
    mid = int.from_bytes(data[top * PAGE_SIZE:top * PAGE_SIZE + 8], "little")
    data[mid * PAGE_SIZE + 8:mid * PAGE_SIZE + 16] = (0xFFFFFF).to_bytes(8, "little")
    bad = tmp_path / "bad.img"
    bad.write_bytes(bytes(data))
    out = tmp_path / "t.raw"
    r = run("walk", bad, "--top-mfn", top, "--max-pfn", side["max_pfn"], "--format", "raw",
            "-o", out, "--summary-json", tmp_path / "s.json")
    assert r.exit_code == 0
    assert "warning: unreadable-frame" in r.stderr
    got = np.fromfile(out, dtype="<u8")
    assert np.all(got[512:1024] == 2 ** 64 - 1)
    assert np.array_equal(got[1024:], truth[1024:])
    s = json.loads((tmp_path / "s.json").read_text())
    [f] = [f for f in s["findings"] if f["kind"] == "unreadable-frame"]
    assert (f["level"], f["slot"], f["mfn"]) == ("leaf", 1, 0xFFFFFF)


def test_generate_cli(tmp_path):
    out = tmp_path / "g.img"
    r = run("generate", out, "--word-size", "4", "--memory", "64M", "--identity", "0xa0-0xff",
            "--foreign", "0x100-0x103", "--balloon", "0x2000-0x23ff", "--truth",
            tmp_path / "g.truth", "--mfn-order", "shuffled")
    assert r.exit_code == 0, r.output
    side = json.loads((tmp_path / "g.img.json").read_text())
    assert side["max_pfn"] == 0x4000 and side["word_size"] == 4
    r = run("walk", out, "--top-mfn", side["top_mfn"], "--max-pfn", side["max_pfn"],
            "--format", "raw", "-o", tmp_path / "w.raw", "-q")
    assert r.exit_code == 0
    assert (tmp_path / "w.raw").read_bytes() == (tmp_path / "g.truth").read_bytes()
    assert side["truth_counts"]["foreign"] == 4
    assert side["truth_counts"]["identity"] == 0x60


@pytest.mark.parametrize("args, text", [
    (["--ram", "5-2"], "ends before"),
    (["--ram", "x-y"], "not a pfn range"),
    (["--memory", "1G", "--max-pfn", "5"], "not both"),
    (["--word-size", "8", "--max-pfn", str(2 ** 27 + 1)], "capacity"),
])
def test_generate_bad_input(args, text, tmp_path):
    out = tmp_path / "g.img"
    r = run("generate", out, *args)
    assert r.exit_code == 2 and text in r.stderr
    assert not out.exists()


def test_python_m_and_help():
    import subprocess
    import sys

    res = subprocess.run([sys.executable, "-m", "p2mdump", "walk", "--help"],
                         capture_output=True, text=True)
    assert res.returncode == 0
    assert "--top-mfn" in res.stdout and "Exit codes" in res.stdout


def test_output_to_a_device_is_written_in_place(tmp_path):
    """-o /dev/null (or a fifo) must be written to, never replaced by a file."""
    import stat

    img, side, _ = load_fixture("guest64")
    before = os.stat(os.devnull)
    assert stat.S_ISCHR(before.st_mode)
    r = run("walk", img, "--top-mfn", side["top_mfn"], "--format", "raw", "-o", os.devnull,
            "--summary-json", os.devnull, "-q")
    assert r.exit_code == 0, r.output
    after = os.stat(os.devnull)
    assert stat.S_ISCHR(after.st_mode) and after.st_rdev == before.st_rdev
