"""Hostile input at the command line: one exit-code table, one error line,
no traceback, whatever the arguments, the image file or stdout are."""
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from conftest import load_fixture
from p2mdump.cli import main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(args):
    r = CliRunner().invoke(main, args)
    return r.exit_code, r.stdout, r.stderr


def run_proc(args, **kw):
    """The real console script in a child process (stdout as given in kw)."""
    env = dict(os.environ, PYTHONPATH=ROOT)
    code = "import sys; from p2mdump.launcher import main; sys.argv[0] = 'p2mdump'; main()"
    return subprocess.run([sys.executable, "-c", code, *args], env=env, stderr=subprocess.PIPE,
                          text=True, **kw)


def only_error_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    return lines[0]


TREE_NUMBER_OPTIONS = ["--top-mfn", "--max-pfn", "--base", "--p2m-cr3", "--p2m-vaddr"]


@pytest.mark.parametrize("command,option", [
    *[("walk", o) for o in TREE_NUMBER_OPTIONS],
    *[("lookup", o) for o in TREE_NUMBER_OPTIONS + ["--pfn", "--mfn", "--paddr", "--cr3"]],
    *[("verify", o) for o in TREE_NUMBER_OPTIONS],
    ("info", "--base"), ("scan", "--base"), ("diff", "--top-mfn-a"),
    *[("generate", o) for o in ["--max-pfn", "--mfn-base", "--mfn-offset", "--seed",
                                "--scatter-span", "--p2m-vaddr", "--memory"]],
])
@pytest.mark.parametrize("value", ["-1", "-0x10", "zz", "1.5"])
def test_bad_numbers_are_usage_errors(tmp_path, command, option, value):
    img, side, _ = load_fixture("e820-64")
    args = {"diff": [command, img, img], "generate": [command, str(tmp_path / "o.img")]}.get(
        command, [command, img])
    extra = ["--pfn", "1"] if command == "lookup" and option not in (
        "--pfn", "--mfn", "--paddr") else []
    code, out, err = run(args + [option, value] + extra)
    assert code == 2, err
    assert option in only_error_line(err)
    assert not (tmp_path / "o.img").exists()


def test_negative_max_pfn_in_fast_lookup_is_refused():
    img, side, _ = load_fixture("e820-64")
    res = run_proc(["lookup", img, "--top-mfn", hex(side["top_mfn"]), "--max-pfn", "-1",
                    "--pfn", "1"], stdout=subprocess.PIPE)
    assert res.returncode == 2
    assert "--max-pfn" in only_error_line(res.stderr)


def test_bare_command_prints_a_short_usage():
    res = run_proc([], stdout=subprocess.PIPE)
    assert res.returncode == 2 and res.stdout == ""
    lines = res.stderr.strip().splitlines()
    assert lines[0].startswith("error: ") and 2 <= len(lines) <= 5
    assert "walk" in res.stderr and "--help" in res.stderr


def test_notes_do_not_precede_an_error(tmp_path):
    img, side, _ = load_fixture("e820-64")   # the tree comes from the sidecar: a note
    code, out, err = run(["walk", img, "--format", "npy", "-o",
                          str(tmp_path / "no" / "such" / "dir.npy")])
    assert code == 5
    only_error_line(err)
    code, out, err = run(["walk", img, "--format", "npy", "-o", str(tmp_path / "t.npy")])
    assert code == 0 and "from the generator's sidecar" in err


# -- stdout that fails ------------------------------------------------------

def _lookups():
    img, side, _ = load_fixture("e820-64")
    fast = ["lookup", img, "--top-mfn", hex(side["top_mfn"]), "--pfn", "1"]
    slow = ["lookup", img, "--pfn", "1"]   # the sidecar: the click path
    return [fast, slow, ["walk", img, "--format", "table", "-q"],
            ["walk", img, "--format", "raw", "-q"]]


@pytest.mark.parametrize("which", range(4))
def test_full_stdout_is_an_output_error(which):
    with open("/dev/full", "w") as full:
        res = run_proc(_lookups()[which], stdout=full)
    assert res.returncode == 5
    assert "No space left" in only_error_line(res.stderr)


@pytest.mark.parametrize("which", range(4))
def test_closed_stdout_is_an_output_error(which):
    res = run_proc(_lookups()[which], stdout=subprocess.DEVNULL,
                   preexec_fn=lambda: os.close(1))
    assert res.returncode == 5
    assert "closed" in only_error_line(res.stderr)


@pytest.mark.parametrize("which", range(4))
def test_broken_pipe_is_quiet(which):
    r, w = os.pipe()
    os.close(r)              # the reader has gone before the first write
    try:
        res = run_proc(_lookups()[which], stdout=w)
    finally:
        os.close(w)
    assert res.returncode == 0 and res.stderr == ""
