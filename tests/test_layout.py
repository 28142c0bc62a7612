import pytest

from p2mdump.layout import (KIND_FOREIGN, KIND_IDENTITY, KIND_MISSING, KIND_VALID, Layout,
                            layout_for)


def test_64bit_geometry():
    L = layout_for(8)
    assert L.per_page == 512
    assert L.pfns_per_mid == 2 ** 18
    assert L.capacity == 2 ** 27
    assert L.invalid == 0xFFFF_FFFF_FFFF_FFFF
    assert L.foreign_bit == 0x8000_0000_0000_0000
    assert L.identity_bit == 0x4000_0000_0000_0000
    assert L.numpy_dtype == "<u8" and L.struct_code == "<Q"


def test_32bit_geometry():
    L = layout_for(4)
    assert L.per_page == 1024
    assert L.pfns_per_mid == 2 ** 20
    assert L.capacity == 2 ** 30
    assert L.invalid == 0xFFFF_FFFF
    assert L.foreign_bit == 0x8000_0000
    assert L.identity_bit == 0x4000_0000


@pytest.mark.parametrize("ws", [4, 8])
def test_index_math_matches_p2m_c(ws):
    L = layout_for(ws)
    n = L.per_page
    for pfn in (0, 1, n - 1, n, n * n - 1, n * n, n * n + 3 * n + 7, L.capacity - 1):
        top, mid, idx = L.split(pfn)
        assert top == pfn // (n * n)
        assert mid == (pfn // n) % n
        assert idx == pfn % n
        assert L.first_pfn(top, mid, idx) == pfn
    with pytest.raises(ValueError):
        L.split(L.capacity)


@pytest.mark.parametrize("ws", [4, 8])
def test_classification_tests_invalid_first(ws):
    L = layout_for(ws)
    # on 64-bit INVALID has both flag bits set: it must still read as missing
    assert L.kind_of(L.invalid) == KIND_MISSING
    assert L.decode(L.invalid) is None
    assert L.kind_of(0x1234) == KIND_VALID and L.decode(0x1234) == 0x1234
    assert L.kind_of(L.identity_entry(0x40500)) == KIND_IDENTITY
    assert L.decode(L.identity_entry(0x40500)) == 0x40500
    assert L.kind_of(L.foreign_entry(0x777)) == KIND_FOREIGN
    assert L.decode(L.foreign_entry(0x777)) == 0x777
    # both bits but not all ones: identity is tested first, both bits cleared
    both = L.flag_mask | 5
    assert L.kind_of(both) == KIND_IDENTITY and L.decode(both) == 5


def test_bad_word_size():
    with pytest.raises(ValueError):
        Layout(6)
