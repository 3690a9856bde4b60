"""Partial rank-revealing LU of a lazily read block: column, rook and full search, kept
pivots, and the floor under the TCI pivot cut."""

import numpy as np
import pytest
import tensorly as tl
from hypothesis import given
from hypothesis import strategies as st

from tensorly_cross import FunctionTensor
from tensorly_cross.cross.bond import BondMatrix, TransposedBondMatrix
from tensorly_cross.cross.indices import positions_found, positions_in
from tensorly_cross.cross.prrlu import _full_search, _greedy_lu, prrlu
from tensorly_cross.cross.stopping import CrossInfo
from tensorly_cross.cross.tci import TCISweeper
from tensorly_cross.lazy.cache import EvaluationCache

from .conftest import host
from .strategies import seeds


def low_rank_block(n_rows, n_cols, rank, seed, column_scales=None):
    """A (n_rows, n_cols) matrix of exact rank ``rank``, read as a one-row-prefix bond."""
    rng = np.random.default_rng(seed)
    dense = rng.standard_normal((n_rows, rank)) @ rng.standard_normal((rank, n_cols))
    if column_scales is not None:
        dense = dense * column_scales
    cache = EvaluationCache(FunctionTensor(lambda idx: tl.tensor(dense[idx[:, 0], idx[:, 1]]),
                                           (n_rows, n_cols)))
    empty = np.zeros((1, 0), dtype=np.int64)
    return dense, cache, BondMatrix(cache, empty, n_rows, n_cols, empty)


def cross_error(dense, rows, cols):
    """Relative error of the cross ``M[:, J] M[I, J]^{-1} M[I, :]``."""
    approx = dense[:, cols] @ np.linalg.solve(dense[np.ix_(rows, cols)], dense[rows])
    return np.linalg.norm(approx - dense) / np.linalg.norm(dense)


blocks = st.tuples(st.integers(4, 30), st.integers(4, 30), st.integers(1, 4), seeds)


@given(block=blocks, search=st.sampled_from(["column", "rook", "full", "batched"]))
def test_every_search_finds_the_rank_and_reproduces_the_block(backend, block, search):
    n_rows, n_cols, rank, seed = block
    dense, _, matrix = low_rank_block(n_rows, n_cols, rank, seed)
    rows, cols = prrlu(matrix, 1e-10 * np.abs(dense).max(), 64, np.random.default_rng(seed),
                       search)
    assert len(rows) == len(cols) == rank
    assert cross_error(dense, rows, cols) < 1e-9


@given(block=blocks, n_kept=st.integers(1, 6), search=st.sampled_from(["column", "batched"]))
def test_kept_pivots_are_taken_while_above_tolerance(backend, block, n_kept, search):
    n_rows, n_cols, rank, seed = block
    dense, _, matrix = low_rank_block(n_rows, n_cols, rank, seed)
    rng = np.random.default_rng(seed)
    kept_rows = rng.permutation(n_rows)[: min(n_kept, n_rows)]
    kept_cols = rng.permutation(n_cols)[: min(n_kept, n_cols)]
    rows, cols = prrlu(matrix, 1e-10 * np.abs(dense).max(), 64, rng, search,
                       kept=(kept_rows, kept_cols))
    # Random kept pivots on a generic rank-r block: min(r, kept) of them survive, the
    # search adds the rest, and the cross is still exact.
    n_survivors = min(rank, len(kept_rows), len(kept_cols))
    assert set(rows[:n_survivors]) <= set(kept_rows.tolist())
    assert set(cols[:n_survivors]) <= set(kept_cols.tolist())
    assert len(rows) == rank
    assert cross_error(dense, rows, cols) < 1e-9


def test_kept_pivots_in_a_zero_row_are_dropped(backend):
    dense = np.zeros((6, 5))
    dense[:3] = np.random.default_rng(0).standard_normal((3, 1)) * np.arange(1.0, 6.0)
    cache = EvaluationCache(FunctionTensor(lambda idx: tl.tensor(dense[idx[:, 0], idx[:, 1]]),
                                           dense.shape))
    empty = np.zeros((1, 0), dtype=np.int64)
    matrix = BondMatrix(cache, empty, 6, 5, empty)
    rows, cols = prrlu(matrix, 1e-12, 6, np.random.default_rng(0), "column",
                       kept=(np.array([4, 1]), np.array([2, 3])))
    assert rows.tolist() == [1] and cols.tolist() in ([2], [3])


@pytest.mark.parametrize("transposed", [False, True])
def test_kept_pivots_are_read_in_one_batched_call(backend, transposed):
    dense, cache, matrix = low_rank_block(40, 30, 3, 1)
    if transposed:
        matrix, dense = TransposedBondMatrix(matrix), dense.T
    rows, cols = prrlu(matrix, 1e-10, 64, np.random.default_rng(1), "column",
                       kept=(np.array([0, 5, 9]), np.array([2, 4, 8])))
    # One call for the kept columns and rows, then one column (residual below the cut):
    # the search needs no row read to stop.
    assert cache.counters.calls == 2
    assert sorted(rows.tolist()) == [0, 5, 9] and sorted(cols.tolist()) == [2, 4, 8]
    assert cross_error(dense, rows, cols) < 1e-9
    assert cache.counters.unique == 3 * 40 + 3 * 30 - 9 + matrix.shape[0] - 3



@pytest.mark.parametrize("transposed", [False, True])
def test_columns_and_rows_read_whole_are_not_asked_of_the_cache_again(backend, transposed):
    dense, cache, matrix = low_rank_block(12, 9, 2, 3)
    if transposed:
        matrix, dense = TransposedBondMatrix(matrix), dense.T
    columns, row_block = matrix.crosses(np.array([1, 4]), np.array([0, 7]), more_cols=[5],
                                        more_rows=[2])
    np.testing.assert_allclose(host(columns), dense[:, [0, 7]])
    np.testing.assert_allclose(host(row_block), dense[[1, 4]])
    requested = cache.counters.requested
    for col in (0, 7, 5):
        np.testing.assert_allclose(host(matrix.column(col)), dense[:, col])
    for row in (1, 4, 2):
        np.testing.assert_allclose(host(matrix.row(row)), dense[row])
    assert cache.counters.requested == requested
    # A column not read before is read (once).
    np.testing.assert_allclose(host(matrix.column(3)), dense[:, 3])
    np.testing.assert_allclose(host(matrix.column(3)), dense[:, 3])
    assert cache.counters.requested == requested + matrix.shape[0]

@given(n_rows=st.integers(6, 30), n_cols=st.integers(6, 30), rank=st.integers(2, 4),
       seed=seeds)
def test_a_single_kept_pivot_is_read_with_the_searchs_first_column(n_rows, n_cols, rank,
                                                                   seed):
    """The first sweep keeps one pivot per bond (the start pivot): the random column the
    search reads next comes in the same call, the very column it would have drawn."""
    dense, cache, matrix = low_rank_block(n_rows, n_cols, rank, seed)
    row, col = np.unravel_index(np.abs(dense).argmax(), dense.shape)
    kept = (np.array([row]), np.array([col]))
    rows, cols = prrlu(matrix, 1e-10 * np.abs(dense).max(), 64, np.random.default_rng(seed),
                       "column", kept=kept)
    assert len(rows) == rank and cross_error(dense, rows, cols) < 1e-8
    # Calls: the crosses with the first column, then a row per pivot and a column per
    # pivot after the first, and the column that ends the search (2 * rank before).
    assert cache.counters.calls == 2 * rank - 1
    # The drawn column is the one a search drawing after its kept pivot takes.
    free = np.delete(np.arange(n_cols), col)
    assert cols[1] == free[np.random.default_rng(seed).integers(free.size)]


def test_a_column_read_ahead_does_not_raise_the_cut_the_kept_pivot_is_judged_by():
    """The column drawn ahead counts in the block's scale only once the search takes it:
    with a 1e7 entry in it and a cut relative to the block's largest, the kept pivot
    (1.7) was dropped for it (other pivots, one more batch than without the read ahead)."""
    dense, cache, matrix = low_rank_block(20, 20, 3, 1)
    dense[7, 5] = 1e7
    free = np.delete(np.arange(20), 2)
    seed = next(s for s in range(1000) if free[np.random.default_rng(s).integers(19)] == 5)
    rows, cols = prrlu(matrix, lambda largest: 1e-6 * largest, 64, np.random.default_rng(seed),
                       "column", start_cols=[2], kept=(np.array([0]), np.array([2])))
    assert rows.tolist() == [0, 7] and cols.tolist() == [2, 5]
    assert cache.counters.calls == 4 and cache.counters.requested == 120


@given(block=blocks)
def test_column_search_reads_fewer_entries_than_rook_search(block):
    n_rows, n_cols, rank, seed = block
    counts = {}
    for search in ("column", "rook"):
        dense, cache, matrix = low_rank_block(n_rows, n_cols, rank, seed)
        prrlu(matrix, 1e-10 * np.abs(dense).max(), 64, np.random.default_rng(seed), search)
        counts[search] = cache.counters.unique
    assert counts["column"] <= counts["rook"]


def test_searching_the_transpose_gives_transposed_pivots(backend):
    dense, _, matrix = low_rank_block(12, 9, 2, 3)
    cols, rows = prrlu(TransposedBondMatrix(matrix), 1e-10, 64, np.random.default_rng(3),
                       "column")
    assert len(rows) == 2
    assert cross_error(dense, rows, cols) < 1e-9


@given(shape=st.tuples(st.integers(1, 8), st.integers(1, 8)), seed=seeds)
def test_greedy_lu_picks_the_full_search_pivots(shape, seed):
    block = np.random.default_rng(seed).standard_normal(shape)
    rows, cols = _greedy_lu(block, 1e-12, 10)
    full_rows, full_cols = _full_search(tl.tensor(block), 1e-12, min(shape))
    assert (rows, cols) == (full_rows.tolist(), full_cols.tolist())


@given(n_rows=st.integers(1, 40), n_modes=st.integers(1, 4), seed=seeds,
       huge=st.booleans())
def test_positions_found_agrees_with_a_python_search(n_rows, n_modes, seed, huge):
    rng = np.random.default_rng(seed)
    # huge: index ranges whose product overflows one int64 word (structured keys).
    high = 2**40 if huge else 5
    candidates = np.unique(rng.integers(high, size=(n_rows, n_modes)), axis=0)
    queries = np.concatenate([candidates[rng.permutation(len(candidates))[:3]],
                              rng.integers(high, size=(3, n_modes))])
    expected = [i for q in queries.tolist() for i, c in enumerate(candidates.tolist())
                if c == q]
    assert positions_found(queries, candidates).tolist() == expected
    if len(expected) == len(queries):
        assert positions_in(queries, candidates).tolist() == expected
    else:
        with pytest.raises(ValueError, match="not nested"):
            positions_in(queries, candidates)


def test_stalls_never_cut_pivots_below_round_off():
    sweeper = TCISweeper(0.3, [1, 4, 1], np.random.default_rng(0), "column", 1.0,
                         CrossInfo(method="tci"), min_cut=100 * np.finfo(float).eps)
    errors = [0.9]
    for _ in range(40):
        errors.append(0.9)
        assert sweeper.lower_cut_if_stalled(errors)
    assert sweeper._abs_tol(1.0) == pytest.approx(100 * np.finfo(float).eps, rel=1e-9, abs=0)
    assert not sweeper.lower_cut_if_stalled([0.9, 0.2])


def test_block_values_are_on_the_backend(backend):
    _, _, matrix = low_rank_block(5, 4, 1, 0)
    column = matrix.column(1)
    assert host(column).shape == (5,)
    assert type(column) is type(tl.tensor(np.zeros(1)))


@pytest.mark.parametrize("seed", range(5))
def test_column_search_moves_on_from_a_pivot_far_below_its_row(seed):
    # Rank 3, with column 2 within 1e-6 of the span of columns 0 and 1: started there, column
    # search meets a third pivot of ~1e-6 next to row entries of ~1, a pivot block of
    # condition ~1e6, and a round-off residual that a tight cut takes as a fourth pivot.
    rng = np.random.default_rng(seed)
    left, right = rng.standard_normal((40, 3)), rng.standard_normal((3, 30))
    right[:, 2] = right[:, 0] + right[:, 1] + 1e-6 * np.array([0.0, 0.0, 1.0])
    dense = left @ right
    cache = EvaluationCache(FunctionTensor(lambda idx: dense[idx[:, 0], idx[:, 1]], (40, 30)))
    empty = np.zeros((1, 0), dtype=np.int64)
    matrix = BondMatrix(cache, empty, 40, 30, empty)
    cut = 1e-12 * np.abs(dense).max()
    rows, cols = prrlu(matrix, cut, 10, np.random.default_rng(0), "column", [0, 1, 2],
                       max_kept_growth=16.0)
    assert len(rows) == 3
    assert np.linalg.cond(dense[np.ix_(rows, cols)]) < 1e4
