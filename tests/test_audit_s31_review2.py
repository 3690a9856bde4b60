"""Audit session 31, review of the shrinking of data near the top of its dtype
(``ShrunkTensor``): what the user is told about data the cross read scaled."""

import numpy as np
import pytest

import tensorly_cross as tlc
from tensorly_cross.errors import UnseenStructureWarning

from .test_reliability import HiddenSpike

BIG = 2.0**700  # beyond 2**512: the cross reads such data scaled to 1


def test_an_unseen_structure_warning_names_the_moduli_of_the_data_as_they_are():
    # Data at 2**700 is crossed scaled near 1; the warning named the scaled moduli
    # ("an entry of modulus 100, 201x the largest held-out one (0.5)").
    spike = HiddenSpike(200.0)
    with pytest.warns(UnseenStructureWarning) as record:
        tlc.tt_cross(lambda indices: spike(indices) * BIG, shape=(30, 30, 30), random_state=0)
    (message,) = [str(item.message) for item in record
                  if item.category is UnseenStructureWarning]
    assert f"an entry of modulus {201 * BIG:.3g}, 201x" in message
    assert f"largest held-out one ({BIG:.3g})" in message


def test_the_least_squares_overflow_error_names_the_moduli_of_the_data_as_they_are():
    from tensorly_cross.cross.scaling import ShrunkTensor, refuse_non_finite
    from tensorly_cross.lazy.cache import EvaluationCache

    # The cache of a cross reads through the shrinking: 2**1020 is held as 0.5.
    cache = EvaluationCache(ShrunkTensor(tlc.lazy_tensor(np.full((3, 4), 2.0**1020))))
    cache.evaluate(np.array([[0, 0], [1, 2]]))
    with pytest.raises(OverflowError, match=r"moduli up to 1\.12e\+307"):
        refuse_non_finite([np.ones((1, 3, 2)), np.full((2, 4, 1), np.nan)], cache,
                          "tci+lsq")


def _complex64_near_its_largest():
    """A rank-two complex64 array whose largest entry has parts of 3e38 each: a modulus of
    4.2e38, beyond float32's largest (3.4e38), and each part finite."""
    rng = np.random.default_rng(0)
    array = np.einsum("ir,jr,kr->ijk", *[rng.standard_normal((n, 2)) for n in (9, 10, 11)])
    array /= np.abs(array).max()
    return (3e38 * (array + 1j * array)).astype(np.complex64), array


def test_complex64_data_whose_modulus_passes_float32s_largest_is_crossed():
    # Its modulus, taken in single precision, is inf: the cross refused it as "modulus
    # inf, within a factor 4 of float64's largest", and did not shrink it.
    data, array = _complex64_near_its_largest()
    tt, info = tlc.tt_cross(data, tol=1e-4, method="lsq", random_state=0, return_info=True)
    wide = [core.astype(np.complex128) for core in tt]  # its products overflow complex64
    dense = tlc.tt_entries(wide, np.indices(data.shape).reshape(3, -1).T)
    expected = (array + 1j * array).reshape(-1)
    assert np.linalg.norm(dense / 3e38 - expected) / np.linalg.norm(expected) < 1e-4
    assert info.val_error < 1e-4
    assert tt[0].dtype == np.complex64


def test_the_refusal_leaves_complex64_beyond_float32s_largest_to_the_shrinking():
    from tensorly_cross.cross.stopping import refuse_beyond_limit

    values = np.array([1.0, 3e38 + 3e38j], dtype=np.complex64)
    refuse_beyond_limit(values, np.array([[0], [1]]))  # 4.2e38: far below 2**1022


def test_the_refusal_of_an_entry_beyond_2_1022_names_it_by_its_full_multi_index():
    # TCI crosses the tensor without its interior size-one modes: the refusal named the
    # entry (4, 0, 5, 0) as (4, 5, 0).
    data = np.ones((6, 1, 7, 1))
    data[4, 0, 5, 0] = 2.0**1023
    with pytest.raises(ValueError, match=r"the entry at \(4, 0, 5, 0\) has modulus 8\.99e\+307"):
        tlc.tt_cross(data, method="tci", random_state=0)


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.complex128])
def test_data_in_the_usual_range_is_read_as_it_is_and_beyond_it_by_a_power_of_two(dtype):
    # The guarantee the shrinking rests on: up to 2**(maxexp / 2) the values a cross reads
    # are the tensor's own, bit for bit; beyond, the first nonzero read sets an exact power
    # of two that every later read shares (no test held either).
    from tensorly_cross.cross.scaling import ShrunkTensor

    half = np.finfo(dtype).maxexp // 2
    indices = np.array([[0, 0], [1, 2], [2, 3]])
    for top, exponent in ((2.0 ** (half - 1), 0), (2.0**half, -half - 1)):
        array = np.zeros((3, 4), dtype=dtype)
        array[1, 2], array[2, 3] = top, top / 8
        shrunk = ShrunkTensor(tlc.lazy_tensor(array))
        assert not np.any(shrunk.evaluate(indices[:1]))  # zeros decide nothing
        values = shrunk.evaluate(indices)
        assert shrunk.exponent == exponent
        assert values.dtype == dtype
        np.testing.assert_array_equal(values, array[tuple(indices.T)] * 2.0**exponent)
        if not exponent:
            read = tlc.lazy_tensor(array).evaluate(indices)
            assert values.tobytes() == read.tobytes()
        # Later reads, however large, keep the factor the first nonzero one set.
        assert shrunk.evaluate(indices[2:])[0] == array[2, 3] * 2.0**exponent
