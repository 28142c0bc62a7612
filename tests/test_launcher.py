"""The click-free fast path of a single lookup answers exactly like the CLI."""

import pytest

from conftest import lookup_click, lookup_fast, load_fixture
from p2mdump.launcher import _parse_lookup

fast = lookup_fast
slow = lookup_click


@pytest.mark.parametrize("name", ["e820-64", "guest32"])
@pytest.mark.parametrize("query", [
    ["--pfn", "0x1234", "--json"], ["--pfn", "0x40600"], ["--paddr", "0x1234567"],
    ["--pfn=5", "--word-size", "auto", "--json"], ["--pfn", "0x7fffffff", "--json"],
])
def test_fast_path_matches_click(name, query):
    img, side, _ = load_fixture(name)
    args = [img, "--top-mfn", hex(side["top_mfn"]), *query]
    assert _parse_lookup(args) is not None  # really the fast path
    assert fast(args) == slow(args)


@pytest.mark.parametrize("args", [
    ["x.img", "--pfn", "1"],                       # no --top-mfn: sidecar/hints are click's
    ["x.img", "--top-mfn", "4", "--mfn", "1"],     # whole-table query
    ["x.img", "--top-mfn", "4", "--pfn", "zz"],    # bad number: click's message
    ["x.img", "--top-mfn", "4", "--pfn", "1", "--paddr", "2"],
    ["x.img", "--top-mfn", "4", "--pfn", "1", "--help"],
    ["x.img", "--top-mfn", "4", "--pfn", "1", "--word-size", "6"],
])
def test_other_forms_go_to_click(args):
    assert _parse_lookup(args) is None


def test_fast_path_errors(tmp_path):
    img, side, _ = load_fixture("e820-64")
    code, out, err = fast([str(tmp_path / "nope.img"), "--top-mfn", "4", "--pfn", "1"])
    assert code == 3 and err.startswith("error:") and "no such file" in err
    code, out, err = fast([img, "--top-mfn", "0x999999", "--pfn", "1"])
    assert code == 4 and "not in the image" in err and "Traceback" not in err


def test_the_command_line_starts_no_blas_threads(tmp_path):
    """numpy's BLAS starts a thread per CPU at import unless told otherwise;
    the command line tells it one (p2mdump does no linear algebra)."""
    import subprocess
    import sys

    code = ("import os, sys\n"
            "for v in ('OPENBLAS_NUM_THREADS', 'OMP_NUM_THREADS', 'MKL_NUM_THREADS'):\n"
            "    os.environ.pop(v, None)\n"
            "sys.argv = ['p2mdump', 'info', sys.argv[1]]\n"
            "import p2mdump.launcher as L\n"
            "L._exit_now = lambda code: None\n"
            "L.main()\n"
            "import numpy\n"
            "print('threads', len(os.listdir('/proc/self/task')))\n")
    from conftest import FIXTURES

    out = subprocess.run([sys.executable, "-c", code, f"{FIXTURES}/e820-64.img"],
                         capture_output=True, text=True, check=True).stdout
    assert out.strip().endswith("threads 1"), out


def test_numpy_is_imported_with_the_collector_paused_then_frozen():
    """import_numpy: numpy loaded, collections on again, what was loaded
    frozen (not examined again); a collector the caller turned off stays off."""
    import subprocess
    import sys

    code = ("import gc\n"
            "from p2mdump.launcher import import_numpy\n"
            "seen = []\n"
            "gc.callbacks.append(lambda phase, info: seen.append(phase))\n"
            "import_numpy()\n"
            "import sys\n"
            "print('numpy' in sys.modules, gc.isenabled(), gc.get_freeze_count() > 10000,"
            " seen == [])\n"
            "gc.unfreeze(); gc.disable(); import_numpy(); print(gc.isenabled())\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["True", "True", "True", "True", "False"]
