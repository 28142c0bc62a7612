"""The writer's PRNG: a piecewise choice draws what a whole permutation would."""
import numpy as np
import pytest

from p2mdump.writer.prng import DRAW_CHUNK, SORT_CHUNK, Stream


@pytest.mark.parametrize("span,k", [(1, 0), (1, 1), (5, 3), (10, 10), (DRAW_CHUNK + 7, 1),
                                    (3 * DRAW_CHUNK, DRAW_CHUNK // 2), (3 * DRAW_CHUNK, 0),
                                    (2 * DRAW_CHUNK + 5, 2 * DRAW_CHUNK + 5),
                                    (4 * DRAW_CHUNK, 40000)])
@pytest.mark.parametrize("seed", [0, 7])
def test_choice_is_the_head_of_the_permutation(span, k, seed):
    whole, piecewise = Stream(seed), Stream(seed)
    want = whole.permutation(span)[:k]
    got = piecewise.choice(span, k)
    assert got.dtype == want.dtype and np.array_equal(got, want)
    # later draws are unaffected
    assert np.array_equal(whole.words(4), piecewise.words(4))


def test_choice_refuses_more_than_the_span():
    with pytest.raises(ValueError):
        Stream(0).choice(3, 4)


@pytest.mark.parametrize("n", [0, 1, 5, 1000, SORT_CHUNK, 3 * SORT_CHUNK + 17, 1 << 22])
def test_uint32_permutation_is_the_permutation(n):
    whole, bucketed = Stream(3), Stream(3)
    whole.words(5)
    bucketed.words(5)
    want = whole.permutation(n)
    got = bucketed.permutation_u32(n)
    assert got.dtype == np.uint32 and np.array_equal(got, want)
    assert np.array_equal(whole.words(4), bucketed.words(4))
