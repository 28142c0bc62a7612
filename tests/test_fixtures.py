"""The committed fixtures walk to their truth, and the script remakes them."""
import os
import subprocess
import sys

import pytest

from conftest import FIXTURES, load_fixture
from p2mdump.sources import RawImage
from p2mdump.walker import walk

NAMES = sorted(f[:-4] for f in os.listdir(FIXTURES) if f.endswith(".img")
               and os.path.exists(os.path.join(FIXTURES, f[:-4] + ".truth"))
               and os.path.exists(os.path.join(FIXTURES, f + ".json")))


def test_there_are_fixtures():
    for name in ("guest64", "guest32", "e820-64", "e820-32"):
        assert name in NAMES


@pytest.mark.parametrize("name", NAMES)
def test_fixture_walks_to_truth(name):
    img, side, truth = load_fixture(name)
    if side.get("container", "raw") != "raw":
        pytest.skip("container fixtures are tested in test_containers.py")
    assert os.path.getsize(img) < 4 * 1024 * 1024
    with RawImage(img, base=side.get("base", 0)) as src:
        r = walk(src, side["top_mfn"], max_pfn=side["max_pfn"])
    assert r.word_size == side["word_size"]
    assert r.table.raw.tobytes() == truth.tobytes()
    assert not r.warnings()
    assert r.table.counts() == side["truth_counts"]


def test_make_fixtures_is_byte_for_byte():
    script = os.path.join(FIXTURES, "make_fixtures.py")
    res = subprocess.run([sys.executable, script, "--check"], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
