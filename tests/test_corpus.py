"""The corruption corpus (:mod:`corpus`): every damaged fixture ends with a
documented exit code, never a traceback, one ``error:`` line when failing;
a few representative cases end exactly as they should; the worst ones
stay far below a hard address-space limit."""
import json
import os
import subprocess
import sys
import tempfile

import pytest

import corpus

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


@pytest.fixture(scope="module")
def outcomes():
    from click.testing import CliRunner

    runner = CliRunner()
    out = {}
    for case in corpus.all_cases():
        with tempfile.TemporaryDirectory() as folder:
            out[case.name] = corpus.run_case(case, folder, runner)
    return out


def test_corpus_covers_every_container_and_command(outcomes):
    kinds = {o.case.kind for o in outcomes.values()}
    assert kinds == set(corpus.FIXTURES)
    ran = {cmd for o in outcomes.values() for cmd in o.runs}
    assert ran == set(corpus.COMMANDS)
    assert len(outcomes) > 1000
    for prefix in ("ehdr.", "shdr[", "phdr[", "note[", "xch.", "xen_p2m[", "top[", "mid[",
                   "leaf_missing[", "mid_missing[", "pt-l4", "pt-l1", "listpage", "arch."):
        assert any(("/" + prefix) in n for n in outcomes), prefix


def test_no_case_breaks_the_rules(outcomes):
    bad = [p for o in outcomes.values() for p in corpus.problems(o)]
    assert not bad, "\n".join(bad[:40])
    counts = corpus.exit_counts(outcomes.values())
    print(f"\n{len(outcomes)} cases, {sum(counts.values())} runs, by exit code: {counts}")
    # the damage matters: some cases are refused, some walk with findings
    assert counts.get(0) and counts.get(3) and counts.get(4) and counts.get(1)


def _run(outcomes, name, cmd="walk"):
    assert name in outcomes, name
    return outcomes[name].runs[cmd]


def _error(text):
    return [ln for ln in text.splitlines() if ln.startswith("error:")][0]


@pytest.mark.parametrize("name,code,needle", [
    ("xc-core-tree/shdr[.xen_pages].sh_offset=max", 3, ".xen_pages (sh_offset, sh_size)"),
    ("xc-core-tree/ehdr.e_machine=0", 3, "e_machine is 0"),
    ("xc-core-tree/xch.xch_magic=0", 3, "xch_magic is 0x0"),
    ("elf/phdr[7].p_filesz=max", 3, "is larger than p_memsz"),
    ("elf/phdr[7].p_memsz=max", 3, "runs past the largest machine address"),
    ("xc-core-tree/arch.pfn_to_mfn_frame_list_list=0", 4, "had not set up its p2m tree"),
    ("xc-core-list/arch.p2m_cr3=0", 4, "arch.p2m_cr3 is 0"),
])
def test_representative_errors(outcomes, name, code, needle):
    got, text = _run(outcomes, name)
    assert got == code, text
    assert needle in _error(text)


@pytest.mark.parametrize("name,kind", [
    ("raw-tree/top[0]=0", "mfn-zero"),
    ("raw-tree/mid[1]=self", "cross-level-page"),
    ("raw-tree/mid[0]=past-end", "unreadable-frame"),
    ("raw-tree/mid_missing[0]=leaf", "shared-page"),
])
def test_representative_findings(outcomes, name, kind):
    code, text = _run(outcomes, name)
    assert code == 0, text
    assert f"warning: {kind}:" in text


def test_pt_load_to_the_machine_limit_is_scanned_like_the_file(outcomes):
    for field in ("p_memsz", "p_paddr"):
        o = outcomes[f"elf/phdr[7].{field}=to-limit"]
        code, text = o.runs["scan"]
        assert code == 0, text
        assert json.loads(text[text.index("["):])[0]["representation"] == "tree"


# -- the worst cases under a hard address-space limit ---------------------------------

AS_LIMIT = 1536 << 20
#: values that claim the most (sizes, counts, addresses at their maximum)
WORST = ("=max", "=~0", "=huge", "=to-limit", "=garbage", "=past-end")

_RUNNER = """
import json, resource, sys, tempfile
limit = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
sys.path.insert(0, sys.argv[2])
import corpus
names = set(json.loads(sys.stdin.read()))
bad, counts = [], {}
for case in corpus.all_cases():
    if case.name not in names:
        continue
    case = corpus.Case(**dict(case.__dict__, commands=("walk", "scan")))
    with tempfile.TemporaryDirectory() as folder:
        o = corpus.run_case(case, folder)
    bad += corpus.problems(o)
    for code, _ in o.runs.values():
        counts[code] = counts.get(code, 0) + 1
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM:")][0].split()[1]
print(json.dumps({"bad": bad, "counts": counts, "hwm_kib": int(hwm), "cases": len(names)}))
"""


def worst_names():
    return [c.name for c in corpus.all_cases()
            if c.name.endswith(WORST) and not c.name.split("/")[1].startswith(("ehdr", "note"))
            and corpus._h(c.name) % 3 == 0 or c.name.endswith("=to-limit")]


def test_worst_cases_under_an_address_space_limit():
    names = worst_names()
    assert len(names) > 100
    out = subprocess.run([sys.executable, "-c", _RUNNER, str(AS_LIMIT), HERE],
                         input=json.dumps(names), capture_output=True, text=True, timeout=300,
                         env=dict(os.environ, PYTHONPATH=ROOT))
    assert out.returncode == 0, out.stderr[-3000:]
    res = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"\nworst {res['cases']} cases under RLIMIT_AS {AS_LIMIT >> 20} MiB: "
          f"exit codes {res['counts']}, peak RSS {res['hwm_kib'] >> 10} MiB")
    assert not res["bad"], "\n".join(res["bad"][:40])
    assert "6" not in res["counts"]          # no case ran out of memory
    assert res["hwm_kib"] < 512 * 1024
