"""Quantics layout: exact index round trips, factorisation, and exact QTT recovery."""

import math

import numpy as np
import pytest
import tensorly as tl
from hypothesis import given
from hypothesis import strategies as st

import tensorly_cross as tlc
from tensorly_cross import QuanticsLayout, QuanticsTensor, qtt_to_tt
from tensorly_cross.lazy.quantics import radices

from .conftest import host
from .strategies import seeds

sizes = st.integers(1, 3000) | st.sampled_from([2**30, 3 * 2**20, 2**31 - 1])


@given(size=sizes)
def test_radices_multiply_back_with_twos_first(size):
    digits = radices(size)
    assert math.prod(digits) == size
    twos = [d for d in digits if d == 2]
    assert digits[: len(twos)] == twos


@given(shape=st.lists(sizes, min_size=1, max_size=4), order=st.sampled_from(["grouped",
       "interleaved"]), seed=seeds)
def test_index_maps_round_trip_exactly(shape, order, seed):
    layout = QuanticsLayout.create(shape, order)
    rng = np.random.default_rng(seed)
    indices = np.stack([rng.integers(n, size=50) for n in shape], axis=1)
    quantics = layout.to_quantics(indices)
    assert (quantics < np.asarray(layout.quantics_shape)).all() and (quantics >= 0).all()
    np.testing.assert_array_equal(layout.to_original(quantics), indices)
    assert math.prod(layout.quantics_shape) == math.prod(shape)


def test_interleaved_order_alternates_the_modes():
    layout = QuanticsLayout.create((8, 4), "interleaved")
    assert layout.positions[0].tolist() == [0, 2, 4]
    assert layout.positions[1].tolist() == [1, 3]


@given(sizes_=st.lists(st.sampled_from([16, 24, 32, 45, 64]), min_size=1, max_size=3),
       seed=seeds)
def test_quantics_cross_recovers_a_separable_exponential_sum(backend, sizes_, seed):
    # exp(a.x) is rank 1 in every quantics layout; a sum of two is rank <= 2.
    rng = np.random.default_rng(seed)
    rates = rng.uniform(-0.05, 0.05, size=(2, len(sizes_)))

    def function(indices):
        return np.exp(indices @ rates[0]) + 0.5 * np.exp(indices @ rates[1])

    lazy = QuanticsTensor(tlc.FunctionTensor(function, tuple(sizes_)))
    tt = tlc.tt_cross(lazy, tol=1e-13, random_state=seed)
    dense = host(tl.tt_to_tensor(qtt_to_tt(tt, lazy)))
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in sizes_], indexing="ij"), axis=-1)
    exact = function(grid.reshape(-1, len(sizes_))).reshape(sizes_)
    np.testing.assert_allclose(dense, exact, rtol=1e-10, atol=1e-10)
    assert max(tt.rank) <= 2


def test_qtt_to_tt_refuses_interleaved_layouts():
    lazy = QuanticsTensor(tlc.FunctionTensor(lambda idx: idx.sum(axis=1) * 1.0, (4, 4)),
                          order="interleaved")
    tt = tlc.tt_cross(lazy, tol=1e-12, random_state=0)
    with pytest.raises(ValueError, match="order='grouped'"):
        qtt_to_tt(tt, lazy)


def test_unknown_order_is_rejected():
    with pytest.raises(ValueError, match="order must be one of"):
        QuanticsLayout.create((4,), "zigzag")


@pytest.mark.parametrize("shape, error, message", [
    ((0,), ValueError, r"shape\[0\] must be an int in \[1, 2\*\*63 - 1\]"),  # looped forever
    ((4, -4), ValueError, r"shape\[1\] must be an int in"),  # was accepted
    ((4.5,), TypeError, r"shape\[0\] must be an int, got 4.5"),  # was truncated to 4
    ((4.0,), TypeError, r"shape\[0\] must be an int"),
    ((True,), TypeError, r"shape\[0\] must be an int"),
    ((2**63,), ValueError, r"shape\[0\] must be an int in"),
    ((), ValueError, "at least one mode"),
])
def test_layout_refuses_shapes_that_are_not_positive_ints(shape, error, message):
    with pytest.raises(error, match=message):
        QuanticsLayout.create(shape)


def test_layout_refuses_a_channel_count_that_is_not_a_positive_int():
    with pytest.raises(ValueError, match="channels must be an int in"):
        QuanticsLayout.with_channels((4,), 0)


@pytest.mark.parametrize("size", [2**61 - 1, 10**12 + 39, 2**127 - 1 >> 64, 2**63 - 1])
def test_sizes_with_large_prime_factors_factor_at_once(size):
    # Trial division up to sqrt(size) hung on a prime near 2**61 (a forged TT file's shape).
    digits = radices(size)
    assert math.prod(digits) == size
    assert all(digit < 2**16 for digit in digits[:-1])
    lazy = QuanticsTensor(tlc.FunctionTensor(lambda idx: np.ones(len(idx)), (size,)))
    assert math.prod(lazy.shape) == size


def test_prime_factors_below_the_bound_get_digits_of_their_own():
    assert radices(4 * 1031 * 1033 * 65521) == [2, 2, 1031, 1033, 65521]
    assert radices(3 * 65537 * 65539) == [3, 65537 * 65539]  # both above 2**16: one digit


def test_auto_pivot_search_recovers_boxes_in_quantics_layout():
    def boxes(indices):
        first = np.all((indices >= [5, 8, 10]) & (indices < [15, 22, 17]), axis=1) * 1.0
        second = np.all((indices >= [18, 2, 20]) & (indices < [30, 12, 27]), axis=1) * 0.5
        return first + second

    lazy = QuanticsTensor(tlc.FunctionTensor(boxes, (32, 32, 32)))
    tt = tlc.tt_cross(lazy, tol=1e-10, random_state=0, pivot_search="auto", n_iter_max=20)
    dense = host(tl.tt_to_tensor(qtt_to_tt(tt, lazy)))
    grid = np.stack(np.meshgrid(*[np.arange(32)] * 3, indexing="ij"), -1).reshape(-1, 3)
    np.testing.assert_allclose(dense.reshape(-1), boxes(grid), atol=1e-9)


@pytest.mark.parametrize("indices", [[[16, 3]], [[-1, 0]], [[0, 8]], [[1.5, 2]], [[1, 2, 3]]])
def test_layout_maps_refuse_indices_that_would_name_another_entry(indices):
    # They wrapped around, truncated or ignored a column, and tt_entries then read the TT at
    # another entry without a word.
    layout = tlc.QuanticsLayout.create((16, 8))
    with pytest.raises(ValueError, match="indices"):
        layout.to_quantics(indices)
    with pytest.raises(ValueError, match="out of range"):
        layout.to_original([[2] + [0] * (len(layout.quantics_shape) - 1)])


def test_transposed_view_refuses_out_of_range_and_float_indices():
    view = tlc.TransposedTensor(np.zeros((3, 4, 5)), (0, 2, 1))
    for bad in ([[3, 0, 0]], [[1.7, 2, 3]], [[0, 0]]):
        with pytest.raises(ValueError, match="indices"):
            view.from_original(bad)


@pytest.mark.parametrize("tt_q", [np.ones((3, 1, 2, 1)), None,
                                  tl.cp_tensor.CPTensor((np.ones(1), [np.ones((2, 1))] * 3))])
def test_qtt_to_tt_refuses_what_is_not_a_tt(tt_q):
    # A dense (3, 1, 2, 1) array was split into three (1, 2, 1) "cores" and merged into a
    # TT of shape (8,) without a word; None failed in list() ("not iterable").
    with pytest.raises(TypeError, match="tt_q must be a TTTensor or a list of 3-D cores"):
        qtt_to_tt(tt_q, QuanticsLayout.create((8,)))
