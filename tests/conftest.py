import json
import os
import subprocess
import sys

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(os.path.dirname(HERE), "fixtures")


def fixture_path(name: str) -> str:
    return os.path.join(FIXTURES, name)


def load_fixture(name: str):
    """(image path, sidecar dict, truth array) of a committed fixture."""
    img = fixture_path(f"{name}.img")
    with open(img + ".json") as fh:
        side = json.load(fh)
    truth = np.fromfile(fixture_path(f"{name}.truth"), dtype=f"<u{side['word_size']}")
    return img, side, truth


@pytest.fixture
def tmp_image(tmp_path):
    """Build a spec into an image in tmp_path: returns (path, BuiltTree)."""
    from p2mdump.writer import build_tree
    from p2mdump.writer.image import write_raw_image

    def make(spec, name="guest.img"):
        tree = build_tree(spec)
        path = tmp_path / name
        write_raw_image(tree, path)
        return str(path), tree

    return make


def lookup_fast(args):
    """``p2mdump lookup ARGS`` through the console script (its click-free
    fast path where it applies): (exit code, stdout, stderr)."""
    code = "import sys; from p2mdump.launcher import main; sys.argv[0] = 'p2mdump'; main()"
    res = subprocess.run([sys.executable, "-c", code, "lookup", *args], capture_output=True,
                         text=True)
    return res.returncode, res.stdout, res.stderr


def lookup_click(args):
    """The same through click, in-process: (exit code, stdout, stderr)."""
    from click.testing import CliRunner

    from p2mdump.cli import main

    r = CliRunner().invoke(main, ["lookup", *args])
    return r.exit_code, r.stdout, r.stderr
