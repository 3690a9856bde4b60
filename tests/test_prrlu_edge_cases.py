"""Tests of the partial rank-revealing LU, its batched search and global pivots."""

import warnings

import numpy as np
import pytest
import tensorly as tl
from hypothesis import given
from hypothesis import strategies as st

from tensorly_cross.cross.global_pivots import add_global_pivots
from tensorly_cross.cross.init import single_pivot_indices
from tensorly_cross.cross.prrlu import _greedy_lu, _next_start, prrlu
from tensorly_cross.lazy.array import ArrayTensor

from ._helpers_shared import _bond, _corner_feature
from .strategies import seeds

EPS = np.finfo(np.float64).eps


def _diagonal_block():
    dense = np.zeros((5, 4))
    dense[0, 0], dense[1, 1], dense[2, 2] = 4.0, 2.0, 1.0
    return dense


# Mutant: pivots accepted while ``|pivot| < abs_tol`` (the documented rule stops at
# ``|pivot| <= abs_tol``): a pivot equal to the tolerance was taken.
@pytest.mark.parametrize("search, start_cols", [("full", ()), ("column", (0, 1, 2)),
                                                ("rook", (0, 1, 2))])
def test_a_pivot_equal_to_the_tolerance_ends_the_search(search, start_cols):
    rows, cols = prrlu(_bond(_diagonal_block()), 2.0, 4, np.random.default_rng(0), search,
                       start_cols=start_cols)
    assert rows.tolist() == [0] and cols.tolist() == [0]
    rows, cols = prrlu(_bond(_diagonal_block()), 1.5, 4, np.random.default_rng(0), search,
                       start_cols=start_cols)
    assert rows.tolist() == [0, 1] and cols.tolist() == [0, 1]


# Mutant (same rule in the kept pivots' host elimination, ``_greedy_lu``).
def test_greedy_lu_stops_at_a_pivot_equal_to_the_tolerance():
    assert _greedy_lu(_diagonal_block(), 2.0, 4) == ([0], [0])
    assert _greedy_lu(_diagonal_block(), 0.5, 4) == ([0, 1, 2], [0, 1, 2])


# Mutant: the first pivot also subject to the tolerance: no pivot at all (the docstring
# promises at least one).
@pytest.mark.parametrize("search", ["full", "column", "rook", "batched"])
def test_a_block_below_the_tolerance_still_gives_one_pivot(search):
    dense = np.random.default_rng(2).standard_normal((7, 6))
    rows, cols = prrlu(_bond(dense), 10 * np.abs(dense).max(), 6, np.random.default_rng(0),
                       search)
    assert len(rows) == len(cols) == 1
    if search == "full":
        assert (rows[0], cols[0]) == np.unravel_index(np.argmax(np.abs(dense)), dense.shape)


# Mutant: the search goes on after a zero pivot (``_accept_pivot`` returning True): the
# residual is divided by 0 and NaN pivots follow.
@pytest.mark.parametrize("search", ["full", "column", "rook"])
def test_a_zero_block_gives_one_pivot_and_stops(search):
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no 0/0 on the way
        rows, cols = prrlu(_bond(np.zeros((6, 5))), 0.0, 5, np.random.default_rng(0), search)
    assert len(rows) == len(cols) == 1


# Mutant: ROUND_OFF_PIVOT = 10: entries within 100 round-offs of the largest one read are
# noise whatever ``abs_tol`` says (module notes), and were taken as pivots.
@given(rank=st.integers(1, 3), seed=seeds)
def test_noise_within_100_round_offs_is_not_pivoted(rank, seed):
    rng = np.random.default_rng(seed)
    # Block diagonal: an exact rank-``rank`` block, and a block of noise of 15 to 30
    # round-offs of the largest entry, which eliminating the first block leaves as it is.
    dense = np.zeros((12, 10))
    dense[:6, :5] = rng.standard_normal((6, rank)) @ rng.standard_normal((rank, 5))
    noise = rng.uniform(15, 30, (6, 5)) * rng.choice([-1.0, 1.0], (6, 5))
    dense[6:, 5:] = noise * EPS * np.abs(dense).max()
    rows, _ = prrlu(_bond(dense), 0.0, 10, rng, "full")
    assert len(rows) == rank


# Mutant: the growth test of kept pivots without its factor (``|pivot| < max |column|``).
def test_greedy_lu_growth_limit_is_a_factor():
    block = np.array([[1.0, 0.0], [5.0, 0.0], [0.0, 1.0]])
    # Rows 0 and 2 allowed: the pivot 1 at (0, 0) is 5x below its column's largest entry.
    assert _greedy_lu(block, 1e-12, 4, allowed_rows=[0, 2], max_growth=10.0) == ([0, 1], [0, 1])
    assert _greedy_lu(block, 1e-12, 4, allowed_rows=[0, 2], max_growth=2.0) == ([], [])


# --- global_pivots -------------------------------------------------------------------------

FEATURE_SHAPE = (8, 8, 8, 8)


def _zero_tt(shape):
    return [tl.zeros((1, n, 1)) for n in shape]


def _contains(block, row):
    return bool((block == np.asarray(row)).all(axis=1).any())


def test_global_pivots_join_every_index_set_and_keep_them_nested():
    indices = single_pivot_indices(FEATURE_SHAPE, (0, 0, 0, 0))
    added = add_global_pivots(ArrayTensor(_corner_feature()), indices,
                              _zero_tt(FEATURE_SHAPE), np.random.default_rng(0), abs_tol=0.5)
    # 200 probes, 1/16 of them in the corner: the default two pivots are found there.
    assert added == 2
    pivots = indices.left[-1]
    in_corner = [row for row in pivots if (row >= 4).all()]
    assert len(in_corner) == 2
    for k in range(1, indices.ndim):
        for row in indices.left[k]:  # left-nested: each prefix extends one of left[k - 1]
            assert _contains(indices.left[k - 1], row[:-1])
        for row in indices.right[k - 1]:  # right-nested likewise
            assert _contains(indices.right[k], row[1:])
    corner_pivot = indices.left[-1][-1]
    last = np.concatenate([corner_pivot, indices.right[-2][-1]])
    assert (last >= 4).all()
    for k in range(1, indices.ndim):
        assert _contains(indices.left[k], last[:k])
        assert _contains(indices.right[k - 1], last[k:])


def test_global_pivots_are_added_only_where_the_error_exceeds_the_tolerance():
    dense = 0.8 * _corner_feature()
    lazy = ArrayTensor(dense)
    for abs_tol, expected in ((0.7, 2), (0.9, 0)):
        indices = single_pivot_indices(FEATURE_SHAPE, (0, 0, 0, 0))
        added = add_global_pivots(lazy, indices, _zero_tt(FEATURE_SHAPE),
                                  np.random.default_rng(0), abs_tol=abs_tol)
        assert added == expected
        assert indices.left[-1].shape[0] == 1 + expected


# --- batched_search ------------------------------------------------------------------------


def test_batched_search_with_a_right_hint_takes_four_reads_on_a_rank_8_block():
    # The module's own figure: ranks 1, 8, a column and a row per round: 4 reads (6 when a
    # round was capped at twice the pivots found). A round that picked its pivots on
    # columns not cleared of the earlier pivots took more.
    from tensorly_cross.cross.prrlu import prrlu

    from .test_prrlu import cross_error, low_rank_block

    for seed in range(4):
        dense, cache, matrix = low_rank_block(40, 40, 8, seed)
        rows, cols = prrlu(matrix, 1e-10 * np.abs(dense).max(), 64,
                           np.random.default_rng(seed), "batched", rank_hint=8)
        assert len(rows) == 8 and cross_error(dense, rows, cols) < 1e-9
        assert cache.counters.calls == 4


def test_a_settled_bond_with_its_kept_pivots_takes_one_read():
    # The module's claim: where every kept pivot stays and the rank has settled, the column
    # read with the kept pivots' crosses ends the search, and the bond takes one read.
    from tensorly_cross.cross.prrlu import prrlu

    from .test_prrlu import cross_error, low_rank_block

    for seed in range(3):
        dense, _, matrix = low_rank_block(30, 30, 5, seed)
        cut = 1e-10 * np.abs(dense).max()
        kept = prrlu(matrix, cut, 64, np.random.default_rng(seed), "batched", rank_hint=5)
        dense, cache, matrix = low_rank_block(30, 30, 5, seed)  # the next sweep's bond
        rows, cols = prrlu(matrix, cut, 64, np.random.default_rng(seed + 1), "batched",
                           kept=kept, max_kept_growth=16.0, rank_hint=5)
        assert len(rows) == 5 and cross_error(dense, rows, cols) < 1e-9
        assert cache.counters.calls == 1


# Mutant: the kept pivots' elimination looping ``min(max_rank, rows, cols)`` times, not
# ``min(max_rank, allowed rows, cols)``: once every allowed row was a pivot, rounding left
# residuals of about 1e-16 in them, and with a zero tolerance a row was chosen twice.
def test_greedy_lu_chooses_each_allowed_row_once():
    rng = np.random.default_rng(0)
    for _ in range(20):
        block = rng.standard_normal((5, 5))
        rows, cols = _greedy_lu(block, 0.0, 5, allowed_rows=[0, 2])
        assert len(rows) == 2
        assert sorted(rows) == [0, 1]  # positions among the allowed rows
        assert len(set(cols)) == 2


# Mutant: ``np.asarray`` for ``np.array`` in ``_greedy_lu``: a float64 block was
# eliminated in place, and ``_keep_pivots`` passes its host copy of the columns, which
# under NumPy is the columns themselves, read again for the interpolation after it.
def test_greedy_lu_leaves_its_block_untouched():
    rng = np.random.default_rng(1)
    block = rng.standard_normal((6, 4))
    before = block.copy()
    _greedy_lu(block, 0.0, 4)
    _greedy_lu(block, 0.0, 4, allowed_rows=[1, 3, 5], max_growth=100.0)
    np.testing.assert_array_equal(block, before)


# Mutants: the elimination with allowed rows subtracting the multiple of ``block[i]`` (the
# i-th row of the block, not the i-th allowed row), or choosing among all rows. Without a
# growth limit, the pivots among allowed rows are those of the allowed rows' own block.
def test_greedy_lu_with_allowed_rows_is_that_of_their_block():
    rng = np.random.default_rng(2)
    for _ in range(20):
        block = rng.standard_normal((7, 5))
        allowed = np.sort(rng.choice(7, size=4, replace=False))
        alone = _greedy_lu(block[allowed], 0.0, 5)
        assert _greedy_lu(block, 0.0, 5, allowed_rows=allowed) == alone
        assert _greedy_lu(block, 0.0, 5, allowed_rows=allowed, max_growth=1e300) == alone


# Mutant: the random next start drawn among all columns, pivoted ones included (its
# ``free[cols] = False`` dropped): a pivoted column's residual is zero, and a partial
# pivoting search ends at such a column.
def test_a_random_next_start_is_never_a_pivoted_column():
    rng = np.random.default_rng(4)
    drawn = {_next_start([], [0, 1, 2, 4], 6, rng) for _ in range(200)}
    assert drawn == {3, 5}
    assert _next_start([1, 3], [1], 6, rng) == 3  # starts first, pivoted ones skipped


# Mutant: ``_masked_abs`` marking pivoted positions 0, not -1. A rook search started in a
# zero column then took a pivoted row (residual 0, tied with the others) for its maximum,
# found that row's residual all zero and stopped: rank 1 of a rank-2 matrix, for about
# half of the random starts. Pivoted positions must lose every tie.
def test_a_rook_search_from_a_zero_column_still_finds_every_pivot():
    dense = np.zeros((4, 7))
    dense[0, 3], dense[1, 5] = 1.5, 1.75
    for seed in range(12):
        rows, cols = prrlu(_bond(dense), 0.0, 4, np.random.default_rng(seed), "rook")
        assert sorted(zip(rows.tolist(), cols.tolist(), strict=True)) == [(0, 3), (1, 5)]
