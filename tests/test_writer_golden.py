"""The chunked writer writes what the whole-table writer wrote, byte for byte.

``golden_writer.json`` holds the digests of the image / core, sidecar and
truth of 33 random specs (tree, list and both guests; raw, xc-core and elf)
as the writer wrote them before it produced tables chunk by chunk
(see ``golden_writer.py``)."""
import json

from golden_writer import GOLDEN, digests


def test_outputs_match_the_golden_digests():
    want = json.loads(GOLDEN.read_text())
    got = digests()
    assert sorted(got) == sorted(want)
    bad = [k for k in want if got[k] != want[k]]
    assert not bad, f"outputs differ for {bad[:5]}"
