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


# -- exceptions that used to escape as exit 70 -------------------------------

def test_forced_container_on_a_raw_image_is_a_container_error():
    img, side, _ = load_fixture("e820-64")
    for container in ("xc-core", "elf"):
        code, out, err = run(["walk", img, "--container", container, "-q"])
        assert code == 3, err
        assert "ELF magic" in only_error_line(err)


@pytest.mark.parametrize("paddr,memsz", [(1 << 63, 0x1000), ((1 << 64) - 0x1000, 0x2000),
                                         (1 << 52, 0x1000)])
def test_pt_load_past_the_machine_address_space_is_a_container_error(tmp_path, paddr, memsz):
    from p2mdump.writer.containers import write_elf_segments

    path = str(tmp_path / "hi.elf")
    write_elf_segments(path, [(0, 0x2000, 0x2000), (paddr, 0x1000, memsz)])
    for args in (["walk", path, "--top-mfn", "1", "-q"], ["scan", path, "-q"], ["info", path]):
        code, out, err = run(args)
        assert code == 3, err
        assert "PT_LOAD #1" in only_error_line(err)


def test_zip_saved_as_npy_is_an_image_error(tmp_path):
    import zipfile

    img, side, _ = load_fixture("e820-64")
    npy = tmp_path / "t.npy"
    with zipfile.ZipFile(npy, "w") as z:
        z.writestr("arr_0.npy", b"not really")
    code, out, err = run(["diff", str(npy), img])
    assert code == 3 and "zip" in only_error_line(err)


def _deep_json(path, depth=100_000):
    path.write_text("[" * depth + "]" * depth)


def test_deeply_nested_sidecar_is_no_sidecar(tmp_path):
    import shutil

    img, side, _ = load_fixture("e820-64")
    copy = tmp_path / "g.img"
    shutil.copy(img, copy)
    _deep_json(tmp_path / "g.img.json")
    code, out, err = run(["walk", str(copy), "-q"])
    assert code == 2 and "--top-mfn is required" in only_error_line(err)


@pytest.mark.parametrize("spec,word", [
    (None, "nested too deeply"), ([1, 2], "not a JSON object"), ({"spec": 5}, "not a JSON"),
    ({"seed": "x"}, "seed"), ({"max_pfn": "0x10"}, "max_pfn"), ({"data": [1]}, "data"),
    ({"ram": 5}, "ram"), ({"ram": [[0, "x"]]}, "bad spec"), ({"mfn_base": 1 << 64}, "mfn_base"),
    ({"mfn_offset": 1 << 60}, "mfn_offset"), ({"word_size": True}, "word_size"),
    ({"mfn_offset": (1 << 40) - 4, "max_pfn": 8}, "would reach"),
])
def test_bad_generate_spec_is_a_usage_error(tmp_path, spec, word):
    import json

    path = tmp_path / "spec.json"
    if spec is None:
        _deep_json(path)
    else:
        path.write_text(json.dumps(spec))
    code, out, err = run(["generate", str(tmp_path / "o.img"), "--spec", str(path), "-q"])
    assert code == 2, err
    assert word in only_error_line(err)
    assert not (tmp_path / "o.img").exists()


@pytest.mark.parametrize("option,value", [("--mfn-base", hex(1 << 64)),
                                          ("--mfn-offset", hex(1 << 52)),
                                          ("--scatter-span", hex(1 << 45))])
def test_out_of_range_frames_are_usage_errors(tmp_path, option, value):
    code, out, err = run(["generate", str(tmp_path / "o.img"), option, value,
                          "--placement", "scattered", "-q"])
    assert code == 2 and option[2:].replace("-", "_") in only_error_line(err)


# -- what map writes is XML whatever the names -------------------------------

def _map_svg(tmp_path, name: bytes, title=None):
    import shutil

    img, side, _ = load_fixture("e820-64")
    path = os.path.join(os.fsencode(tmp_path), name)
    shutil.copy(img, path)
    shutil.copy(img + ".json", path + b".json")
    out = tmp_path / "m.svg"
    args = ["map", os.fsdecode(path), "-o", str(out), "-q"]
    code, _, err = run(args + (["--title", title] if title is not None else []))
    assert code == 0, err
    return out


@pytest.mark.parametrize("name,title", [
    (b"n\xff\x01.img", None),                  # not UTF-8, a control character
    (b"a<&>\"'.img", None),
    (b"g.img", "a\x01b\x1b[31m<&>\x7f\ud800\ufffe end"),
])
def test_map_svg_parses_whatever_the_names(tmp_path, name, title):
    import xml.etree.ElementTree as ET

    out = _map_svg(tmp_path, name, title)
    root = ET.parse(out).getroot()
    texts = [t.text or "" for t in root.iter("{http://www.w3.org/2000/svg}text")]
    first = texts[0]
    if title is None:
        assert first.startswith("p2m of ") and "top MFN" in first
        if b"<" in name:
            assert "a<&>\"'.img" in first       # escaped, and read back as it was
    else:
        assert first.startswith("a\ufffdb\ufffd[31m<&>") and first.endswith(" end")


# -- inputs that are not regular files ---------------------------------------

def _feed_fifo(fifo: str, data: bytes):
    """A writer that opens ``fifo`` (blocking until the reader comes) and writes ``data``."""
    import threading

    def write():
        with open(fifo, "wb") as fh:
            try:
                fh.write(data)
            except BrokenPipeError:
                pass

    t = threading.Thread(target=write, daemon=True)
    t.start()
    return t


@pytest.mark.parametrize("fixture, args", [
    ("e820-64.img", ["--top-mfn", "4", "--max-pfn", "0xc0000"]),
    ("listcore64.core", []),
    ("save64.save", []),
])
def test_stdin_and_fifo_images_are_read_once(tmp_path, fixture, args):
    """Standard input ('-') and a FIFO are read once into a temporary file and
    walked like the file itself: same table, same summary counts."""
    from conftest import FIXTURES

    path = os.path.join(FIXTURES, fixture)
    data = open(path, "rb").read()
    want = run_proc(["walk", path, *args, "--format", "raw", "-o", str(tmp_path / "want"),
                     "-q"], timeout=60)
    assert want.returncode == 0, want.stderr
    got = run_proc(["walk", "-", *args, "--format", "raw", "-o", str(tmp_path / "stdin"),
                    "-q"], input=data.decode("latin-1"), timeout=60, encoding="latin-1")
    assert got.returncode == 0, got.stderr
    assert (tmp_path / "stdin").read_bytes() == (tmp_path / "want").read_bytes()
    fifo = str(tmp_path / "img.fifo")
    os.mkfifo(fifo)
    writer = _feed_fifo(fifo, data)
    got = run_proc(["walk", fifo, *args, "--format", "raw", "-o", str(tmp_path / "fifo"),
                    "-q"], timeout=60)
    writer.join(10)
    assert got.returncode == 0, got.stderr
    assert (tmp_path / "fifo").read_bytes() == (tmp_path / "want").read_bytes()


def test_a_stream_that_is_no_image_names_the_stream(tmp_path):
    res = run_proc(["walk", "-", "--top-mfn", "4"], input="garbage\n", timeout=30)
    assert res.returncode == 3
    assert only_error_line(res.stderr) == "error: <stdin>: 8 bytes hold no whole 4096-byte frame"
    fifo = str(tmp_path / "img.fifo")
    os.mkfifo(fifo)
    _feed_fifo(fifo, b"")
    for args in (["lookup", fifo, "--top-mfn", "4", "--pfn", "1"],):   # the fast path defers
        res = run_proc(args, stdout=subprocess.PIPE, timeout=30)
        assert res.returncode == 3 and "empty file" in only_error_line(res.stderr)
        assert fifo in res.stderr and "/proc/" not in res.stderr


def test_fifo_sidecar_does_not_block(tmp_path):
    import shutil

    img, side, _ = load_fixture("e820-64")
    copy = str(tmp_path / "g.img")
    shutil.copy(img, copy)
    os.mkfifo(copy + ".json")
    res = run_proc(["lookup", copy, "--pfn", "1"], stdout=subprocess.PIPE, timeout=30)
    assert res.returncode == 2 and "--top-mfn is required" in only_error_line(res.stderr)
    res = run_proc(["lookup", copy, "--top-mfn", hex(side["top_mfn"]), "--pfn", "1"],
                   stdout=subprocess.PIPE, timeout=30)
    assert res.returncode == 0 and "valid" in res.stdout


def test_block_device_size_comes_from_the_device(monkeypatch):
    """A block device's st_size is 0; its size is where a seek to the end
    lands (a regular file stands in for the device here)."""
    import stat as st_mod

    from p2mdump.sources import base
    from p2mdump.sources.raw import RawImage

    img, side, truth = load_fixture("e820-64")
    real_fstat = os.fstat

    def fstat_as_disk(fd):
        st = real_fstat(fd)
        fields = list(st)
        fields[st_mod.ST_MODE] = st_mod.S_IFBLK | 0o660
        fields[st_mod.ST_SIZE] = 0
        return os.stat_result(fields)

    monkeypatch.setattr(base.os, "fstat", fstat_as_disk)
    assert base.read_head(img, 4) == open(img, "rb").read(4)
    with RawImage(img) as src:
        assert src.size == os.path.getsize(img)
        assert src.frames == os.path.getsize(img) // 4096
        from p2mdump.walker import walk

        res = walk(src, side["top_mfn"], max_pfn=side["max_pfn"])
        assert (res.table.raw[:len(truth)] == truth).all()
