"""generate -> walk gives back the generated table, over random layouts."""
import numpy as np
from hypothesis import HealthCheck, given, settings, strategies as st

from p2mdump.layout import layout_for
from p2mdump.sources import RawImage
from p2mdump.walker import walk
from p2mdump.writer import GuestSpec, build_tree
from p2mdump.writer.image import write_raw_image


@st.composite
def specs(draw):
    ws = draw(st.sampled_from([4, 8]))
    L = layout_for(ws)
    n = L.per_page
    # up to ~3 mid regions on 64-bit; within one region on 32-bit (small files)
    limit = 3 * L.pfns_per_mid if ws == 8 else L.pfns_per_mid // 4
    max_pfn = draw(st.integers(1, limit))

    def ranges(k):
        out = []
        for _ in range(draw(st.integers(0, k))):
            a = draw(st.integers(0, max_pfn))
            ln = draw(st.sampled_from([1, 7, n - 1, n, n + 1, 3 * n, 50 * n]))
            out.append((a, min(a + ln, limit)))
        return out

    ram = ranges(3) or [(0, max_pfn)]
    return GuestSpec(
        word_size=ws, max_pfn=max_pfn, ram=ram, holes=ranges(2), ballooned=ranges(2),
        identity=ranges(2), foreign=ranges(2),
        mfn_order=draw(st.sampled_from(["linear", "chunked", "shuffled"])),
        placement=draw(st.sampled_from(["compact", "scattered"])),
        scatter_span=draw(st.sampled_from([1, 5000])),
        identity_leaf=draw(st.sampled_from(["identity", "missing"])),
        shuffle_leaves=draw(st.booleans()), seed=draw(st.integers(0, 2 ** 31)))


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(spec=specs())
def test_generate_walk_round_trip(tmp_path, spec):
    tree = build_tree(spec)
    path = tmp_path / "rt.img"
    write_raw_image(tree, path)
    L = layout_for(spec.word_size)
    with RawImage(path) as src:
        given_max = walk(src, tree.top_mfn, word_size=spec.word_size, max_pfn=spec.max_pfn)
        auto = walk(src, tree.top_mfn)  # word size and max_pfn found by the walker
    assert given_max.table.raw.tobytes() == tree.truth.tobytes()
    assert not given_max.warnings() or all(f.kind == "entries-past-max-pfn"
                                           for f in given_max.warnings())
    nonmissing = np.flatnonzero(tree.leaf_table != L.invalid)
    expect = int(nonmissing[-1]) + 1 if len(nonmissing) else 0
    assert auto.max_pfn == expect
    if expect:
        assert auto.word_size == spec.word_size
    assert auto.table.raw.tobytes() == tree.leaf_table[:expect].tobytes()
    # the counts are those of the truth
    truth_kinds = {k: 0 for k in ("valid", "missing", "identity", "foreign")}
    for v in tree.truth.tolist():
        truth_kinds[L.kind_of(v)] += 1
    assert given_max.table.counts() == truth_kinds
