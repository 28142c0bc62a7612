"""The committed fixtures walk to their truth, and the script remakes them."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import FIXTURES, load_fixture
from p2mdump.autowalk import walk_image
from p2mdump.cli import main
from p2mdump.sidecar import read_sidecar
from p2mdump.sources import RawImage, open_image
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
    if side.get("representation", "tree") == "list":
        pytest.skip("a list-only guest has no tree (test_list_fixture_walks_to_truth)")
    assert os.path.getsize(img) < 4 * 1024 * 1024
    with RawImage(img, base=side.get("base", 0)) as src:
        r = walk(src, side["top_mfn"], max_pfn=side["max_pfn"])
    assert r.word_size == side["word_size"]
    assert r.table.raw.tobytes() == truth.tobytes()
    assert not r.warnings()
    assert r.table.counts() == side["truth_counts"]


def _sidecar(name):
    with open(os.path.join(FIXTURES, name + ".json"), encoding="utf-8") as fh:
        return json.load(fh)


#: fixtures of guests that publish a linear p2m list (alone or with the tree)
LIST_NAMES = sorted(f for f in os.listdir(FIXTURES)
                    if f.endswith((".img", ".core", ".elf"))
                    and os.path.exists(os.path.join(FIXTURES, f + ".json"))
                    and _sidecar(f).get("representation") in ("list", "both"))


def test_there_are_list_fixtures():
    assert {"list64.img", "list32.img", "both64.img", "listcore64.core"} <= set(LIST_NAMES)


@pytest.mark.parametrize("name", LIST_NAMES)
def test_list_fixture_walks_to_truth(name, tmp_path):
    """Walked without options: the sidecar names a raw image's list, shared_info
    an xl dump-core's."""
    path = os.path.join(FIXTURES, name)
    side = _sidecar(name)
    truth = np.fromfile(os.path.join(FIXTURES, name.rsplit(".", 1)[0] + ".truth"),
                        dtype=f"<u{side['word_size']}")
    assert os.path.getsize(path) < 1 << 20
    raw = side["container"] == "raw"
    with open_image(path) as src:
        res, r = walk_image(src, sidecar=read_sidecar(path) if raw else None)
    assert res.representation == "list"
    assert r.list_source == ("sidecar" if raw else "container")
    assert res.table.raw.tobytes() == truth.tobytes()
    assert not res.warnings(), [str(f) for f in res.warnings()]
    assert res.table.counts() == side["truth_counts"]
    info = res.list_info
    assert (info["p2m_cr3"], info["p2m_vaddr"], info["root_mfn"], info["p2m_generation"]) == (
        side["p2m_cr3"], side["p2m_vaddr"], side["root_mfn"], side["p2m_generation"])
    out = tmp_path / "t.raw"
    res = CliRunner().invoke(main, ["walk", path, "--format", "raw", "-o", str(out), "-q"])
    assert res.exit_code == 0, res.output
    assert out.read_bytes() == truth.tobytes()


def test_make_fixtures_is_byte_for_byte():
    script = os.path.join(FIXTURES, "make_fixtures.py")
    res = subprocess.run([sys.executable, script, "--check"], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def test_save_fixture_walks_to_truth(tmp_path):
    """fixtures/save64.save (an xl save file with a resend round) walked without
    options: the saved p2m is the truth, the stream agrees with it."""
    from p2mdump.savewalk import walk_saved_p2m
    from p2mdump.sources.xl_save import open_save

    path = os.path.join(FIXTURES, "save64.save")
    side = _sidecar("save64.save")
    truth = np.fromfile(os.path.join(FIXTURES, "save64.truth"), dtype=f"<u{side['word_size']}")
    assert os.path.getsize(path) < 1 << 20
    with open_save(path) as stream:
        assert (stream.complete, stream.findings) == (True, [])
        assert stream.record_counts["libxc/PAGE_DATA"] > 1
        assert stream.resent == side["xl_save"]["resend_rounds"][0]["resent_pages"] > 0
        res = walk_saved_p2m(stream)
    assert res.representation == "save-p2m-frames" and res.max_pfn_source == "container"
    assert res.table.raw.tobytes() == truth.tobytes()
    assert not res.warnings(), [str(f) for f in res.warnings()]
    assert res.table.counts() == side["truth_counts"]
    assert res.save_info["end_pfn"] == side["xl_save"]["end_pfn"]
    out = tmp_path / "t.raw"
    r = CliRunner().invoke(main, ["walk", path, "--format", "raw", "-o", str(out), "-q"])
    assert r.exit_code == 0, r.output
    assert out.read_bytes() == truth.tobytes()
