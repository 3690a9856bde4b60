"""Mutation audit (s34): the session-33 performance edits (sorted key levels, the kept
pivots' host elimination, broadcast joins, checkpoint counts), each at a property that
no earlier test pinned down.

Each test below fails on a hand-made mutant of the library that the rest of the suite
let pass (the mutant is named in the comment above it); all assert documented behaviour.
"""

import numpy as np
import tensorly as tl

from tensorly_cross import FunctionTensor
from tensorly_cross.cross.bond import BondMatrix
from tensorly_cross.cross.indices import cartesian_join
from tensorly_cross.cross.prrlu import _greedy_lu, _next_start, prrlu
from tensorly_cross.cross.scaling import exponent_of, max_exponent
from tensorly_cross.lazy.cache import _KEY_SENTINEL, EvaluationCache, SortedKeys, _distinct

from .test_audit_s21_mutants import _bond


# Mutant: the small level merged into the main one with its sentinel (``small[0]``, not
# ``small[0][:-1]``): every lookup still answered, but the cache's keys() then listed the
# sentinel as a key, one more than it holds.
def test_merging_the_small_level_keeps_exactly_the_keys_inserted():
    keys = SortedKeys()
    main = np.arange(0, 40, 2, dtype=np.int64)
    keys.insert(main, np.arange(main.size))
    small = np.arange(1, 2 * 5000, 2, dtype=np.int64)  # above 4096: merged at once
    keys.insert(small, np.arange(main.size, main.size + small.size))
    assert len(keys.levels) == 1
    held = keys.all_keys()
    np.testing.assert_array_equal(held, np.sort(np.concatenate([main, small])))
    assert len(keys) == held.size
    assert keys.levels[0][0][-1] == _KEY_SENTINEL
    assert (keys.levels[0][0] == _KEY_SENTINEL).sum() == 1
    found = keys.lookup(np.array([0, 1, 38, 9999, 10001], dtype=np.int64))
    np.testing.assert_array_equal(found, [0, 20, 19, 20 + 4999, -1])


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


# Mutants of the broadcast join (either side's rows written in another order, the result
# in ``first``'s dtype): every concatenation ``[a, b]``, ``first`` slowest, as
# ``np.repeat`` / ``np.tile`` gave it, empty sides and sides of width 0 included.
def test_cartesian_join_is_every_concatenation_in_c_order():
    rng = np.random.default_rng(3)
    for n_first, n_second, width_first, width_second in [(3, 4, 2, 3), (1, 5, 0, 2),
                                                          (4, 1, 3, 0), (0, 3, 1, 1),
                                                          (2, 0, 1, 1), (5, 6, 1, 1)]:
        first = rng.integers(0, 9, (n_first, width_first))
        second = rng.integers(0, 9, (n_second, width_second))
        expected = np.concatenate([np.repeat(first, n_second, axis=0),
                                   np.tile(second, (n_first, 1))], axis=1)
        joined = cartesian_join(first, second)
        assert joined.shape == expected.shape and joined.dtype == expected.dtype
        np.testing.assert_array_equal(joined, expected)
    wide = cartesian_join(np.zeros((2, 1), dtype=np.int32), np.full((2, 1), 2**40))
    assert wide.dtype == np.int64 and (wide[:, 1] == 2**40).all()


# Mutant: ``exponent_of`` deciding "empty" by the number of dimensions, not the number of
# entries: an empty block raised NumPy's "zero-size array" error, and a 0-d one read 0.
def test_exponent_of_an_empty_block_is_zero_and_of_a_scalar_its_own():
    assert exponent_of(np.zeros((0, 3))) == 0
    assert exponent_of(np.zeros((3, 0, 2))) == 0
    assert exponent_of(np.array(3.0)) == 2  # 3 lies in [2**1, 2**2)
    assert exponent_of(np.array([np.inf, 1.0])) == 0
    assert exponent_of(np.array([-0.75])) == 0  # [2**-1, 2**0)


# Mutant: a stale or shared cached ``maxexp``: each dtype keeps its own range, asked in
# any order and again.
def test_max_exponent_is_each_dtypes_own_asked_in_any_order():
    expected = {np.float32: 128, np.complex64: 128, np.float64: 1024, np.complex128: 1024,
                np.float16: 16}
    for _ in range(2):
        for dtype, maxexp in expected.items():
            assert max_exponent(np.zeros(2, dtype=dtype)) == maxexp
    assert max_exponent([1.0]) == 1024  # no dtype: float64's


# Mutant: the random next start drawn among all columns, pivoted ones included (its
# ``free[cols] = False`` dropped): a pivoted column's residual is zero, and a partial
# pivoting search ends at such a column.
def test_a_random_next_start_is_never_a_pivoted_column():
    rng = np.random.default_rng(4)
    drawn = {_next_start([], [0, 1, 2, 4], 6, rng) for _ in range(200)}
    assert drawn == {3, 5}
    assert _next_start([1, 3], [1], 6, rng) == 3  # starts first, pivoted ones skipped


def _distinct_entries(indices):
    return tl.tensor(indices @ np.array([1000.0, 100.0, 10.0, 1.0]) + 1.0)


# Mutants of a read of several blocks by key (a kept pivots' ``crosses``, which reads the
# search's first column ahead): the keys of the first block alone, or the blocks' values
# cut at shifted offsets. Each block must hold its own entries.
def test_crosses_by_key_give_each_blocks_own_entries():
    cache = EvaluationCache(FunctionTensor(_distinct_entries, (3, 4, 5, 2)))
    left, right = np.array([[2], [0]]), np.array([[1], [0]])
    matrix = BondMatrix(cache, left, 4, 5, right)
    assert matrix._keys is not None  # read by key

    def expected(rows, cols):
        joined = np.concatenate([np.repeat(matrix.row_multi[rows], len(cols), axis=0),
                                 np.tile(matrix.col_multi[cols], (len(rows), 1))], axis=1)
        return np.asarray(_distinct_entries(joined)).reshape(len(rows), len(cols))

    every_row, every_col = np.arange(matrix.shape[0]), np.arange(matrix.shape[1])
    rows, cols = np.array([1, 6]), np.array([0, 3, 7])
    columns, row_block = matrix.crosses(rows, cols, more_cols=[9], more_rows=[4, 5])
    np.testing.assert_array_equal(tl.to_numpy(columns), expected(every_row, cols))
    np.testing.assert_array_equal(tl.to_numpy(row_block), expected(rows, every_col))
    # The blocks read ahead, handed out by the next column and row reads.
    np.testing.assert_array_equal(tl.to_numpy(matrix.column(9)),
                                  expected(every_row, [9])[:, 0])
    np.testing.assert_array_equal(tl.to_numpy(matrix.row(5)), expected([5], every_col)[0])


# Mutant: the "already strictly increasing" shortcut of ``_distinct`` taking a sorted batch
# with repeats (``>=``) as distinct: a key read twice in one batch was stored twice.
def test_distinct_of_sorted_keys_with_repeats_merges_them():
    keys = np.array([1, 1, 2, 5, 5, 5], dtype=np.int64)
    distinct, first, inverse = _distinct(keys)
    np.testing.assert_array_equal(distinct, [1, 2, 5])
    np.testing.assert_array_equal(first, [0, 2, 3])
    np.testing.assert_array_equal(distinct[inverse], keys)
    distinct, first, inverse = _distinct(np.array([1, 2, 5], dtype=np.int64))
    assert inverse is None and first.tolist() == [0, 1, 2]


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
