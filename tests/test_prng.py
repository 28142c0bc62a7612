"""The writer's PRNG: a piecewise choice, and a permutation read piece by piece, draw what
a whole permutation would."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2mdump.writer.prng import (BLOCK, BUCKET_BITS, BUCKET_MIN, DRAW_CHUNK, Stream,
                                 order_of_distinct)


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


@pytest.mark.parametrize("n", [0, 1, 5, 1000, BUCKET_MIN - 1, BUCKET_MIN, BLOCK - 1, BLOCK + 1,
                               3 * BLOCK + 17, 1 << 21])
def test_permutation_index_is_the_permutation(n):
    whole, indexed = Stream(3), Stream(3)
    whole.words(5)
    indexed.words(5)
    want = whole.permutation(n)
    index = indexed.permutation_index(n)
    # read in pieces of several sizes, as the writers read it
    rnd = np.random.default_rng(n)
    cuts = np.unique(np.concatenate([[0, n], rnd.integers(0, n + 1, 7)]))
    got = np.concatenate([index.slice(int(a), int(b)) for a, b in zip(cuts[:-1], cuts[1:])]
                         + [np.zeros(0, np.uint64)])
    assert got.dtype == np.uint64 and np.array_equal(got, want)
    # any ranks, unsorted and repeated
    ranks = rnd.integers(0, max(n, 1), 3000) if n else np.zeros(0, np.int64)
    assert np.array_equal(index.take(ranks), want[ranks])
    # later draws are unaffected
    assert np.array_equal(whole.words(4), indexed.words(4))


def test_permutation_index_holds_two_bytes_a_position():
    n = 1 << 23
    index = Stream(0).permutation_index(n)
    assert index.bits == BUCKET_BITS
    # the offsets, and a uint32 per bucket (and one more) per block of positions
    assert index.offsets.nbytes + index.starts.nbytes <= n * (2 + 4 * (2**BUCKET_BITS + 1) / BLOCK)


def test_permutation_index_refuses_ranks_out_of_range():
    index = Stream(0).permutation_index(100)
    with pytest.raises(IndexError):
        index.slice(90, 101)
    with pytest.raises(IndexError):
        index.take([5, 100])
    with pytest.raises(IndexError):
        index.take([-1])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, (1 << 20) - 1), min_size=1, max_size=300, unique=True),
       st.integers(0, (1 << 64) - (1 << 40)), st.integers(20, 40))
def test_order_of_distinct_sorts_words_whose_cut_keys_tie(low_bits, lo, span_bits):
    """Words sharing their top bits in a 2^40-wide window: cut to 32 bits, many tie."""
    span = 1 << span_bits
    words = (np.uint64(lo) + (np.array(low_bits, dtype=np.uint64) % np.uint64(span)))
    words = np.unique(words)
    np.random.default_rng(len(words)).shuffle(words)
    got = order_of_distinct(words, lo, span)
    assert np.array_equal(words[got], np.sort(words))
