"""A shuffled numbering read piece by piece writes what the whole permutation wrote.

``golden_shuffled.json`` holds the digests of shuffled guests (tree, list and both;
32 and 64-bit; raw, xc-core, elf and xl-save, with data frames and live-migration
rounds) as the writer wrote them when it held the whole permutation
(see ``golden_shuffled.py``)."""
import json

import numpy as np

from golden_shuffled import CASES, GOLDEN, digests

from p2mdump.writer import GuestSpec
from p2mdump.writer.prng import BLOCK
from p2mdump.writer.saveguest import build_save_guest
from p2mdump.writer.tree import build_tree_guest
from p2mdump.writer.xlsave import write_xl_save


def test_the_cases_read_the_index_in_several_blocks_and_groups():
    _, fields, _ = CASES[0]
    index = build_tree_guest(GuestSpec.from_dict(dict(fields, mfn_order="shuffled"))
                             ).numbering.shuffle
    assert index.n > 2 * BLOCK and len(index.group_end) > 4


def test_a_case_exchanges_the_highest_data_frame(tmp_path):
    _, fields, options = CASES[-1]
    spec = GuestSpec.from_dict(dict(fields, mfn_order="shuffled"))
    save, _ = write_xl_save(build_save_guest(spec), tmp_path / "g.save", **options)
    guest = save.guest
    exchanged = guest.override_pfns[guest.exchanged].astype(np.int64)
    assert guest.numbering.top() in guest.numbering(exchanged).tolist()


def test_shuffled_outputs_match_the_golden_digests():
    want = json.loads(GOLDEN.read_text())
    got = digests()
    assert sorted(got) == sorted(want)
    bad = [k for k in want if got[k] != want[k]]
    assert not bad, f"outputs differ for {bad}"
