"""The console script's click-free ``walk`` (p2mdump.cli.fastpath) parses a
command line exactly as click does and ends exactly as the click command
does: same stdout, stderr, exit code and files."""
import os
import shutil
import subprocess
import sys

import pytest
from click.testing import CliRunner

from conftest import load_fixture
from p2mdump.cli import main
from p2mdump.cli.options import WALK_OPTIONS, parse
from p2mdump.cli.walk import walk as walk_command

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IMG, SIDE, _ = load_fixture("guest32")
TOP = hex(SIDE["top_mfn"])


def click_params(argv):
    """The parameters click gives the walk command for ``argv``."""
    with walk_command.make_context("walk", list(argv)) as ctx:
        return dict(ctx.params)


@pytest.mark.parametrize("argv", [
    [IMG],
    [IMG, "--top-mfn", TOP, "--word-size", "4", "--max-pfn", "0x9000", "--format", "raw",
     "-o", "out.raw", "-q"],
    ["--top-mfn=4", "--format=csv", IMG, "--quiet", "--output", "-", "--strict"],
    [IMG, "--base", "0x1_000", "--container", "raw", "--summary-json", "s.json"],
    [IMG, "--representation", "list", "--p2m-cr3", "0x5000", "--p2m-vaddr", "0o777",
     "--five-level", "--max-pfn", "0b1000"],
    [IMG, "--word-size", "auto", "--max-pfn", " 12 ", "-o", ""],
])
def test_plain_forms_parse_as_click_parses_them(argv):
    params = parse(argv, WALK_OPTIONS)
    assert params is not None
    assert params == click_params(argv)


@pytest.mark.parametrize("argv", [
    [],                                            # no IMAGE
    [IMG, "other.img"],                            # a second one
    [IMG, "--help"], [IMG, "-h"],
    [IMG, "--top-mfn", "4", "--top-mfn", "5"],     # repeated
    [IMG, "--top-mfn"],                            # no value
    [IMG, "--top-mfn", "zz"], [IMG, "--top-mfn", "-1"], [IMG, "--word-size", "6"],
    [IMG, "--format", "RAW"],
    [IMG, "-qo", "x"], [IMG, "-ox"], [IMG, "-o=x"], [IMG, "--quiet=1"],
    [IMG, "-o", "-q"],                             # a value that looks like an option
    ["--", IMG], ["-", "--top-mfn", "4"],
    [IMG, "--pfn", "1"],                           # not a walk option
])
def test_other_forms_go_to_click(argv):
    assert parse(argv, WALK_OPTIONS) is None


def _fast(args, cwd):
    code = "import sys; from p2mdump.launcher import main; sys.argv[0] = 'p2mdump'; main()"
    env = dict(os.environ, PYTHONPATH=ROOT, P2MDUMP_NO_PROGRESS="1")
    r = subprocess.run([sys.executable, "-c", code, "walk", *args], capture_output=True,
                       cwd=cwd, env=env)
    return r.returncode, r.stdout, r.stderr


def _click(args, cwd):
    old = os.getcwd()
    os.chdir(cwd)
    try:
        r = CliRunner().invoke(main, ["walk", *args])
    finally:
        os.chdir(old)
    return r.exit_code, r.stdout_bytes, r.stderr_bytes


def _files(folder):
    return {name: (folder / name).read_bytes() for name in sorted(os.listdir(folder))
            if (folder / name).is_file()}


@pytest.mark.parametrize("args", [
    ["--format", "raw", "-o", "out.raw", "-q"],
    ["--word-size", "4", "--max-pfn", "0x9000", "--format", "raw", "-o", "out.raw"],
    ["--format", "ranges"],
    ["--format", "csv", "-o", "-", "--summary-json", "s.json", "-q"],
    ["--summary-json", "-", "-q", "--format", "npy", "-o", "t.npy"],
    ["--strict", "-q", "--format", "jsonl", "-o", "t.jsonl"],
    ["--word-size", "8", "-q"],                        # wrong word size: exit 4
    ["--max-pfn", "0x7fffffff", "-q"],                 # beyond the capacity
    ["-o", "sub", "-q"],                               # a directory: exit 5
    ["--container", "xc-core", "-q"],                  # not that container: exit 3
])
def test_fast_path_ends_as_click_does(tmp_path, args):
    results = []
    for run in (_fast, _click):
        folder = tmp_path / run.__name__
        (folder / "sub").mkdir(parents=True)
        img = shutil.copy(IMG, folder / "g.img")
        argv = ["g.img", "--top-mfn", TOP, *args]
        assert parse(argv, WALK_OPTIONS) is not None  # really the fast path
        code, out, err = run(argv, folder)
        os.unlink(img)
        results.append((code, out, err.replace(str(folder).encode(), b"DIR"), _files(folder)))
    assert results[0] == results[1]


def test_missing_image_ends_as_click_does(tmp_path):
    argv = [str(tmp_path / "nope.img"), "--top-mfn", "4", "-q"]
    fast, slow = _fast(argv, tmp_path), _click(argv, tmp_path)
    assert fast == slow and fast[0] == 3


def test_a_quiet_walk_imports_no_click(tmp_path):
    code = ("import sys\nfrom p2mdump.cli import fastpath\n"
            "try:\n    fastpath.walk(sys.argv[1:])\n"
            "except SystemExit as exc:\n    print('click' in sys.modules, exc.code)\n")
    out = subprocess.run([sys.executable, "-c", code, IMG, "--top-mfn", TOP, "--format", "raw",
                          "-o", str(tmp_path / "t.raw"), "-q"], capture_output=True, text=True,
                         env=dict(os.environ, PYTHONPATH=ROOT)).stdout
    assert out.split() == ["False", "0"]
