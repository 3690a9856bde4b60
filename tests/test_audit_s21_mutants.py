"""Mutation audit (s21): properties of the numerical core that no earlier test pinned down.

Each test below fails on a mutant of the library that the rest of the suite let pass
(the mutant is named in the comment above it); all assert documented behaviour.
"""

import warnings

import numpy as np
import pytest
import tensorly as tl
from hypothesis import example, given
from hypothesis import strategies as st

from tensorly_cross import (
    EvaluationBudgetExceeded,
    FunctionTensor,
    RankDeficiencyWarning,
    maxvol,
    rect_maxvol,
)
from tensorly_cross._backend import TOURNAMENT_BYTES, lu_pivot_rows
from tensorly_cross.api import cross_interpolate
from tensorly_cross.cross.basis import (
    column_basis,
    column_rank,
    interpolation_matrix,
    max_condition,
    right_divide,
)
from tensorly_cross.cross.bond import BondMatrix
from tensorly_cross.cross.indices import CrossIndices
from tensorly_cross.cross.init import random_distinct_multi_indices
from tensorly_cross.cross.prrlu import _greedy_lu, prrlu
from tensorly_cross.cross.stopping import BestSweep, _scaled_parts, relative_norm
from tensorly_cross.lazy.cache import EvaluationCache

from .conftest import host, to_backend
from .strategies import matrix_with_condition, random_tt_cores, seeds, tall_shapes

EPS = np.finfo(np.float64).eps


# -- maxvol.py ---------------------------------------------------------------------------


# Mutant: every ill-conditioned full-rank matrix taken as rank deficient (``rank <= n_cols``):
# LU pivots without swaps, a RankDeficiencyWarning, coefficients far above tol.
@given(shape=tall_shapes(max_rows=300, max_cols=12), log10_condition=st.floats(4, 10),
       seed=seeds)
@example(shape=(200, 6), log10_condition=8.0, seed=0)
def test_ill_conditioned_full_rank_matrix_is_dominant_without_warning(shape, log10_condition,
                                                                     seed):
    matrix = matrix_with_condition((max(shape[0], 2), max(shape[1], 2)), log10_condition, seed)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RankDeficiencyWarning)
        rows, coefficients = maxvol(matrix, tol=1.05, max_iter=10_000)
    assert np.abs(coefficients).max() <= 1.05 + 1e-9
    np.testing.assert_allclose(coefficients[rows], np.eye(matrix.shape[1]), atol=1e-9)


# Mutant: numerical rank counted above ``eps * s_1`` instead of ``max(n, r) * eps * s_1``.
@given(n_rows=st.integers(20, 300), n_cols=st.integers(2, 8), seed=seeds)
def test_singular_values_below_n_eps_count_as_rank_deficiency(n_rows, n_cols, seed):
    rng = np.random.default_rng(seed)
    left, _ = np.linalg.qr(rng.standard_normal((n_rows, n_cols)))
    right, _ = np.linalg.qr(rng.standard_normal((n_cols, n_cols)))
    singular = np.ones(n_cols)
    singular[-1] = 4 * EPS  # above eps * s_1, below max(n, r) * eps * s_1 (n >= 20)
    matrix = (left * singular) @ right
    with pytest.warns(RankDeficiencyWarning) as record:
        maxvol(matrix)
    assert record[0].message.rank == n_cols - 1


# Mutant: the tournament's finalists indexed without their sort order
# (``np.searchsorted(candidates, rows, sorter=order)`` not mapped back through ``order``):
# the swaps then start from other rows than the LU pivots.
def test_max_iter_zero_returns_the_tournament_lu_pivots():
    n_cols = 8
    n_rows = 3 * TOURNAMENT_BYTES // (8 * n_cols) + 5
    matrix = np.random.default_rng(1).standard_normal((n_rows, n_cols))
    pivots, _, candidates = lu_pivot_rows(matrix)
    assert candidates is not None  # the tournament ran
    rows, coefficients = maxvol(matrix, max_iter=0)
    np.testing.assert_array_equal(rows, pivots)
    np.testing.assert_allclose(coefficients[rows], np.eye(n_cols), atol=1e-10)


# -- rect_maxvol.py ------------------------------------------------------------------------


# Mutants: stopping at ``||B_i||^2 <= tol`` instead of ``tol**2``; ``min_add`` off by one
# (in the loop or in the call); row norms updated upwards (``+=``): each added rows that
# were not needed, and the coefficients still passed every earlier check.
@given(shape=tall_shapes(max_rows=300, max_cols=12), tol=st.floats(1.0, 2.0),
       min_add=st.integers(0, 3), seed=seeds)
@example(shape=(200, 6), tol=1.5, min_add=0, seed=0)
@example(shape=(200, 6), tol=1.5, min_add=2, seed=0)
def test_rect_maxvol_adds_a_row_only_while_some_row_is_too_long(backend, shape, tol, min_add,
                                                                seed):
    matrix = matrix_with_condition(shape, 1, seed)
    min_add = min(min_add, shape[0] - shape[1])
    rows, _ = rect_maxvol(to_backend(matrix), tol=tol, min_add=min_add)
    n_added = len(rows) - shape[1]
    assert n_added >= min_add
    if n_added == min_add:
        return
    # Greedy: the last row added was the longest row of the coefficients before it, and
    # that row was longer than tol (else the selection would have stopped there).
    before = rows[:-1]
    previous = matrix @ np.linalg.pinv(matrix[before])
    norms = np.linalg.norm(previous, axis=1)
    norms[before] = -np.inf
    assert norms.max() > tol
    assert rows[-1] == int(np.argmax(norms))


# -- cross/prrlu.py ------------------------------------------------------------------------


def _bond(dense):
    """``dense`` read as a one-row-prefix bond matrix through a fresh cache."""
    dense = np.asarray(dense, dtype=np.float64)
    cache = EvaluationCache(FunctionTensor(lambda idx: tl.tensor(dense[idx[:, 0], idx[:, 1]]),
                                           dense.shape))
    empty = np.zeros((1, 0), dtype=np.int64)
    return BondMatrix(cache, empty, dense.shape[0], dense.shape[1], empty)


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


# -- cross/stopping.py ---------------------------------------------------------------------


# Mutants: STALL_DECREASE 0.1 instead of 0.01, or its sign flipped (1 + 0.01): progress and
# stalls were told apart at another threshold; ties replacing the best sweep; nan errors
# counted as stalls even when the sweep changed its sets.
def test_best_sweep_counts_stalls_at_a_one_percent_decrease():
    best = BestSweep()
    best.offer(1, 1.0, state="a")
    assert best.stale == 0
    best.offer(2, 0.995, state="b")  # 0.5% lower: noise of the sample, a stall
    assert (best.stale, best.sweep) == (1, 2)
    best.offer(3, 0.98, state="c")  # 2% below the reference 1.0: progress
    assert (best.stale, best.sweep) == (0, 3)
    best.offer(4, 0.95, state="d")  # 3% lower: progress (not a stall at a 10% threshold)
    assert (best.stale, best.sweep) == (0, 4)
    best.offer(5, 1.2, state="e")  # higher: a stall, and not the best
    assert (best.stale, best.sweep, best.state) == (1, 4, "d")


def test_best_sweep_keeps_the_first_sweep_of_the_lowest_error():
    best = BestSweep()
    best.offer(1, 0.0, state="first")
    best.offer(2, 0.0, state="second")
    assert (best.sweep, best.state, best.error) == (1, "first", 0.0)


def test_without_held_out_entries_only_settled_sweeps_stall():
    best = BestSweep()
    nan = float("nan")
    best.offer(1, nan, state="a", settled=False)
    best.offer(2, nan, state="b", settled=False)
    assert (best.stale, best.sweep) == (0, 2)
    best.offer(3, nan, state="c", settled=True)
    best.offer(4, nan, state="d", settled=True)
    assert (best.stale, best.sweep) == (2, 4)
    best.offer(5, nan, state="e", settled=False)
    assert best.stale == 0


# Mutant: an all-zero reference gave ``max |difference|`` instead of the absolute 2-norm.
@given(size=st.integers(1, 50), seed=seeds, zero=st.booleans())
@example(size=5, seed=0, zero=True)
def test_relative_norm_is_the_norm_ratio_or_the_absolute_norm(size, seed, zero):
    rng = np.random.default_rng(seed)
    difference = rng.standard_normal(size)
    values = np.zeros(size) if zero else rng.standard_normal(size)
    expected = np.linalg.norm(difference) / (1.0 if zero else np.linalg.norm(values))
    assert relative_norm(difference, _scaled_parts(values)) == pytest.approx(expected,
                                                                              rel=1e-12)


# -- cross/assemble.py ---------------------------------------------------------------------


# Mutant: the pivot blocks of non-nested sets read at ``left[k] x right[k]`` instead of
# ``left[k+1] x right[k]`` (no test read a TT through non-nested sets).
@given(shape=st.lists(st.integers(3, 5), min_size=2, max_size=4).map(tuple),
       rank=st.integers(1, 2), seed=seeds)
@example(shape=(4, 3, 5), rank=2, seed=0)
def test_non_nested_sets_recover_a_tt_of_their_rank(backend, shape, rank, seed):
    d = len(shape)
    ranks = [1] + [min(rank, int(np.prod(shape[:k])), int(np.prod(shape[k:])))
                   for k in range(1, d)] + [1]
    cores = random_tt_cores(shape, ranks, seed)
    dense = tl.to_numpy(tl.tt_to_tensor([tl.tensor(core) for core in cores]))
    rng = np.random.default_rng(seed)
    left = [random_distinct_multi_indices(shape[:k], ranks[k], rng) for k in range(d)]
    right = [random_distinct_multi_indices(shape[k + 1 :], ranks[k + 1], rng)
             for k in range(d)]
    tt = cross_interpolate(to_backend(dense), CrossIndices(shape, left, right, nested=None))
    rebuilt = host(tl.tt_to_tensor(tt))
    # Interpolation: exact at every entry whose multi-index lies in a left x mode x right
    # cross (the fibers read), and, the pivot blocks being generic, everywhere.
    np.testing.assert_allclose(rebuilt, dense, atol=1e-7 * np.abs(dense).max())


# -- cross/basis.py ------------------------------------------------------------------------


# Mutant: max(...) instead of min(...): float32 pivot blocks of condition up to 1e12 solved
# as is (the docstring: lower precisions keep about three digits).
def test_max_condition_keeps_three_digits_in_every_precision():
    for dtype in (np.float32, np.float64, np.complex64, np.complex128):
        eps = np.finfo(dtype).eps
        assert max_condition(dtype) * eps <= 1e-3 * (1 + 1e-12)
        assert max_condition(dtype) <= 1e12


# Mutant: RANK_RTOL 1e-11: a singular value of 3e-12 (relative) is still rank in float64.
def test_column_rank_counts_singular_values_above_1e_minus_12():
    rng = np.random.default_rng(0)
    left, _ = np.linalg.qr(rng.standard_normal((30, 3)))
    right, _ = np.linalg.qr(rng.standard_normal((3, 3)))
    assert column_rank((left * [1.0, 1.0, 3e-12]) @ right) == 3
    assert column_rank((left * [1.0, 1.0, 3e-13]) @ right) == 2


# Mutant: the pivot-condition cut of ``interpolation_matrix`` 10x higher: a pivot block of
# condition ~3e12 was solved as is, and not reported in ``singular``.
def test_pivots_of_condition_above_1e12_are_reported_singular():
    matrix = np.array([[1.0, 0.0], [0.0, 3e-13], [0.0, 1.0], [1.0, 1.0]])
    singular = []
    interpolation_matrix(matrix, np.array([0, 1]), singular)
    assert singular, "a pivot block of condition ~3e12 was solved as if regular"
    singular = []
    coefficients = interpolation_matrix(matrix, np.array([0, 2]), singular)
    assert singular == []
    np.testing.assert_allclose(coefficients @ matrix[[0, 2]], matrix, atol=1e-12)


# Mutant: ``right_divide`` always solving: a singular pivot block raised LinAlgError (or
# gave inf) instead of the guarded pseudo-inverse.
def test_right_divide_by_a_singular_block_is_the_pseudo_inverse(backend):
    block = np.array([[1.0, 2.0], [2.0, 4.0]])
    matrix = np.random.default_rng(0).standard_normal((5, 1)) @ np.array([[1.0, 2.0]])
    result = host(right_divide(to_backend(matrix), to_backend(block), (5, 2)))
    assert np.isfinite(result).all()
    np.testing.assert_allclose(result, matrix @ np.linalg.pinv(block), atol=1e-10)


# Mutant: the differentiable basis of a rank-deficient block without its 1/s_k scaling:
# not orthonormal, which ``column_basis`` promises.
def test_differentiable_column_basis_is_orthonormal():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    dense = rng.standard_normal((12, 2)) @ (np.diag([50.0, 0.02]) @ rng.standard_normal((2, 4)))
    with tl.backend_context("pytorch"):
        matrix = torch.tensor(dense, requires_grad=True)
        basis = column_basis(matrix)
        assert tuple(basis.shape) == (12, 2)
        gram = (basis.T @ basis).detach().numpy()
    np.testing.assert_allclose(gram, np.eye(2), atol=1e-10)


# Mutant: the normal equations of a rank-deficient block without the conjugate transpose
# (``block^T`` for ``block^H``): complex coefficients that do not reproduce the matrix.
@given(n_rows=st.integers(6, 20), n_cols=st.integers(3, 5), seed=seeds)
def test_complex_rank_deficient_interpolation_reproduces_the_matrix(n_rows, n_cols, seed):
    rng = np.random.default_rng(seed)
    rank = n_cols - 1
    factor = rng.standard_normal((n_rows, rank)) + 1j * rng.standard_normal((n_rows, rank))
    mixing = rng.standard_normal((rank, n_cols)) + 1j * rng.standard_normal((rank, n_cols))
    matrix = factor @ mixing
    pos = rng.choice(n_rows, size=n_cols, replace=False)
    singular = []
    coefficients = interpolation_matrix(matrix, pos, singular)
    assert singular == []
    np.testing.assert_allclose(coefficients @ matrix[pos], matrix,
                               atol=1e-9 * np.abs(matrix).max())


# -- lazy/cache.py -------------------------------------------------------------------------


# Mutant: ``>=`` in the budget check: a batch that brings the count exactly to max_evals
# was refused (the docstring: refused when it would push the count *above* max_evals).
def test_a_batch_that_reaches_max_evals_exactly_is_evaluated(backend):
    cache = EvaluationCache(FunctionTensor(lambda idx: tl.tensor(idx.sum(axis=1) * 1.0),
                                           (4, 4)), max_evals=3)
    values = cache.evaluate([[0, 1], [1, 1], [0, 1], [2, 3]])
    np.testing.assert_array_equal(host(values), [1.0, 2.0, 1.0, 5.0])
    assert cache.counters.unique == 3
    np.testing.assert_array_equal(host(cache.evaluate([[2, 3]])), [5.0])  # cached: free
    with pytest.raises(EvaluationBudgetExceeded):
        cache.evaluate([[3, 3]])
