"""Tests of the least-squares cross (lsq, als, oversampling) and the refinement of cores."""

import warnings

import numpy as np
import pytest
import tensorly as tl
from hypothesis import given, settings
from hypothesis import strategies as st

import tensorly_cross as tlc
from tensorly_cross import FunctionTensor
from tensorly_cross.cross.confidence import upper_bound
from tensorly_cross.cross.refine import _fit_core, refine_cores

from ._helpers_shared import (
    LOW_RANK_SHAPE,
    FailingFunction,
    _anatomical_callable,
    _low_rank,
    _low_rank_tensor,
    _random_tt_array,
    _rank_three,
    _smooth_noisy,
)
from .strategies import random_tt_cores, seeds

# -- refine.py: the ridge of the least-squares refinement follows the dtype ---------------


@pytest.mark.parametrize("seed, shape, rank", [
    (0, (4, 4, 2, 2), [1, 1, 1, 1, 1]),
    (2, (2, 1, 2, 3), [1, 2, 2, 1, 1]),
    (12, (2, 6, 6), [1, 1, 1, 1]),
])
def test_float32_als_above_the_data_rank_refines_without_a_singular_solve(seed, shape, rank):
    # ALS asked for one more rank than the data has misses tol=1e-12 in float32 and ends with
    # the least-squares refinement; its ridge (1e-13 of the mean diagonal) vanished below
    # float32's resolution and PyTorch's solve raised "the input matrix is singular".
    torch = pytest.importorskip("torch")
    dense = _low_rank_tensor(shape, rank, seed).astype(np.float32)
    with tl.backend_context("pytorch"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tt = tlc.tt_cross(torch.tensor(dense), rank=max(rank) + 1, method="als",
                          random_state=seed, tol=1e-12)
        result = tl.to_numpy(tl.tt_to_tensor(tt))
    assert result.dtype == np.float32
    assert np.linalg.norm(result - dense) <= 1e-4 * np.linalg.norm(dense)


def test_refinement_of_float32_cores_over_rank_deficient_fibers_is_finite():
    # The same solve on NumPy: a float32 normal matrix that the ridge must keep invertible.
    from tensorly_cross.cross.refine import refine_cores
    from tensorly_cross.lazy.array import ArrayTensor

    rng = np.random.default_rng(0)
    dense = np.einsum("i,j,k->ijk", *(rng.standard_normal(n) for n in (4, 5, 6)))
    lazy = ArrayTensor(dense.astype(np.float32))
    cores = [rng.standard_normal(s).astype(np.float32) for s in [(1, 4, 2), (2, 5, 2), (2, 6, 1)]]
    left = [np.zeros((1, 0), np.int64), np.array([[0], [1]]), np.array([[0, 0], [1, 1]])]
    right = [np.array([[0, 0], [1, 1]]), np.array([[0], [1]]), np.zeros((1, 0), np.int64)]
    refined = refine_cores(lazy, cores, [(left, right)])
    assert all(core.dtype == np.float32 and np.isfinite(core).all() for core in refined)


def test_lsq_pseudo_inverse_of_a_zero_interface_stays_in_the_graph():
    torch = pytest.importorskip("torch")
    from tensorly_cross.cross.lsq import _pinv_times

    with tl.backend_context("pytorch"):
        matrix = torch.zeros((5, 2), dtype=torch.float64, requires_grad=True)
        rhs = torch.ones((5, 3), dtype=torch.float64, requires_grad=True)
        solution = _pinv_times(matrix, rhs)
        assert tuple(solution.shape) == (2, 3) and solution.grad_fn is not None
        solution.sum().backward()
    assert rhs.grad is not None and float(rhs.grad.abs().sum()) == 0.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_differentiable_lsq_returns_the_tt_its_info_describes(seed):
    # tol=0.05: the search's refined and rounded TT passed (held-out 0.046), and the
    # differentiable assembly, which repeats neither, returned a TT at the rounded ranks
    # with true error 0.088, reported as 0.046 and "tol". Now the search judges the fits
    # it returns.
    dense = _smooth_noisy()
    tt, info = tlc.tt_cross(dense, method="lsq", tol=0.05, max_rank=8, random_state=seed,
                            return_info=True, differentiable=True)
    true_error = np.linalg.norm(tl.tt_to_tensor(tt) - dense) / np.linalg.norm(dense)
    assert info.stop_reason == "tol" and not info.refined
    assert true_error <= 0.05
    assert abs(true_error - info.val_error) <= 0.1 * true_error  # its own, not another TT's


def test_differentiable_als_does_not_report_a_refinement_it_dropped():
    # The final least-squares refinement (info.refined, its lower error) cannot be rebuilt
    # with gradient: a differentiable run does not take it, and reports what it returns.
    dense = _smooth_noisy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tt, info = tlc.tt_cross(dense, rank=4, method="als", tol=1e-8, random_state=0,
                                val_size=20000, return_info=True, differentiable=True)
        plain, plain_info = tlc.tt_cross(dense, rank=4, method="als", tol=1e-8,
                                         random_state=0, val_size=20000, return_info=True)
    assert plain_info.refined and not info.refined
    true_error = np.linalg.norm(tl.tt_to_tensor(tt) - dense) / np.linalg.norm(dense)
    assert abs(true_error - info.val_error) <= 0.1 * true_error


def test_pivot_search_is_refused_where_auto_chooses_the_least_squares_cross():
    stored = np.add.outer(np.arange(6.0), np.arange(6.0))
    with pytest.raises(ValueError, match="method='auto' chose it"):
        tlc.tt_cross(stored, pivot_search="full", random_state=0)


def _noisy_rational(indices):
    hashed = (indices * (np.arange(1, 5) * 73856093 % 1000003 + 7)).sum(1) % 1000003
    return 1.0 / (1.0 + indices.sum(1) / 10.0) + 0.02 * (hashed / 1000003.0 - 0.5)


def test_a_refined_tt_that_meets_tol_stops_on_tol_without_a_miss_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error", tlc.ToleranceNotMetWarning)
        tt, info = tlc.tt_cross(_noisy_rational, shape=(16,) * 4, tol=0.03, method="tci",
                                max_rank=6, random_state=0, return_info=True)
    assert info.refined and info.stop_reason == "tol"
    indices = np.random.default_rng(7).integers(0, 16, (20000, 4))
    exact = _noisy_rational(indices)
    error = np.linalg.norm(np.asarray(tlc.tt_entries(tt, indices)) - exact)
    assert error <= 0.03 * np.linalg.norm(exact)


def _full_sets(shape, k):
    """Every multi-index of modes ``0..k-1`` (left) and ``k+1..`` (right), as int64 blocks."""
    def grid(modes):
        if not modes:
            return np.zeros((1, 0), np.int64)
        return np.stack(np.unravel_index(np.arange(int(np.prod(modes))), modes), 1).astype(
            np.int64)
    return grid(shape[:k]), grid(shape[k + 1:])


def _random_sets(rng, shape, count):
    """One ``(left_sets, right_sets)`` pair of random distinct multi-index blocks."""
    d = len(shape)
    left, right = [], []
    for k in range(d):
        for modes, out in ((shape[:k], left), (shape[k + 1:], right)):
            if not modes:
                out.append(np.zeros((1, 0), np.int64))
                continue
            size = min(count, int(np.prod(modes)))
            flat = np.sort(rng.choice(int(np.prod(modes)), size=size, replace=False))
            out.append(np.stack(np.unravel_index(flat, modes), 1).astype(np.int64))
    return left, right


# -- cross/refine.py ---------------------------------------------------------------------


# Mutant: the pairs of ``history`` not deduplicated (``seen.add(pair)`` dropped): a sweep
# whose sets repeat an earlier one's weighs those fibers twice in the least-squares fit.
@given(seed=seeds)
@settings(max_examples=10, deadline=None)
def test_refinement_ignores_a_repeated_pair_of_sets(seed):
    rng = np.random.default_rng(seed)
    shape, ranks = (5, 4, 6, 3), (1, 2, 3, 2, 1)
    cores = [rng.standard_normal((ranks[m], shape[m], ranks[m + 1])) for m in range(4)]
    lazy = tlc.lazy_tensor(rng.standard_normal(shape))  # not of low rank: weights matter
    first, second = _random_sets(rng, shape, 5), _random_sets(rng, shape, 5)
    once = refine_cores(lazy, cores, [first, second])
    twice = refine_cores(lazy, cores, [first, second, first, first])
    for a, b in zip(once, twice, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


# Mutants: the ridge of the refit 1000x too strong (``RIDGE = 1e-10``), or relative to the
# normal matrix's trace instead of its mean diagonal. Where the interfaces are nearly
# rank deficient (a direction below the ridge), the fit is the ridge-regularised one:
# ``(N + rho I) g = b + rho g_current`` with ``rho = RIDGE * mean(diag N)``.
@given(seed=seeds, weak=st.sampled_from([1e-6, 1e-7, 3e-8]))
@settings(max_examples=10, deadline=None)
def test_refit_core_is_the_ridge_regularised_least_squares_fit(seed, weak):
    rng = np.random.default_rng(seed)
    shape, ranks, k = (7, 4, 8), (1, 4, 5, 1), 1
    cores = [rng.standard_normal((ranks[m], shape[m], ranks[m + 1])) for m in range(3)]
    # Left interface with a singular value ``weak`` (its normal matrix's: weak**2 < RIDGE).
    u, _ = np.linalg.qr(rng.standard_normal((shape[0], ranks[1])))
    v, _ = np.linalg.qr(rng.standard_normal((ranks[1], ranks[1])))
    singular = np.array([1.0, 0.7, 0.4, weak])
    cores[0] = ((u * singular) @ v).reshape(1, shape[0], ranks[1])
    dense = rng.standard_normal(shape)
    left_sets, right_sets = _full_sets(shape, k)
    history = [([None, left_sets, None], [None, right_sets, None])]
    fitted = _fit_core(tlc.lazy_tensor(dense), cores, k, history)

    left = cores[0][0][left_sets[:, 0]]  # (p, r1)
    right = cores[2][:, right_sets[:, 0], 0]  # (r2, q)
    normal = np.kron(left.T @ left, right @ right.T)
    # The ridge written out, not imported: a mutant of refine.RIDGE moves the fit, and
    # would move an expectation that read it too.
    rho = 1e-13 * np.trace(normal) / normal.shape[0]
    for i in range(shape[k]):
        rhs = (left.T @ dense[:, i, :] @ right.T).ravel()
        expected = np.linalg.solve(normal + rho * np.eye(normal.shape[0]),
                                   rhs + rho * cores[k][:, i, :].ravel())
        # Norm-wise: the system's condition (about 1 / weak**2) lets round-off move single
        # entries by 1e-4 between BLAS builds (0.2% norm-wise at most over 40 seeds on an
        # AMD EPYC's OpenBLAS); both mutants move the fit by more than 100%.
        deviation = np.linalg.norm(fitted[:, i, :].ravel() - expected)
        assert deviation <= 0.05 * np.linalg.norm(expected)


# Mutant: no QR between the fits (``_orthogonalize_left`` skipped): the next core is fitted
# against the raw left interface, whose normal matrix squares the bond's singular-value
# spread; below the ridge, its directions are pulled to the stale core instead of fitted.
@given(seed=seeds)
@settings(max_examples=10, deadline=None)
def test_refinement_recovers_exact_data_whatever_the_bonds_singular_spread(seed):
    rng = np.random.default_rng(seed)
    shape = (6, 5, 6)
    u, _ = np.linalg.qr(rng.standard_normal((shape[0], 2)))
    true = [(u * [1.0, 1e-7]).reshape(1, shape[0], 2),
            rng.standard_normal((2, shape[1], 2)),
            np.linalg.qr(rng.standard_normal((shape[2], 2)))[0].T.reshape(2, shape[2], 1)]
    dense = tl.tt_to_tensor(true)
    # The last core exact, the others stale: one pass fits core 0 to the exact column
    # space, then core 1 (and 2) exactly.
    start = [rng.standard_normal(true[0].shape), true[1] + rng.standard_normal(true[1].shape),
             true[2]]
    sets = [_full_sets(shape, k) for k in range(3)]
    history = [([left for left, _ in sets], [right for _, right in sets])]
    refined = refine_cores(tlc.lazy_tensor(dense), start, history)
    error = np.linalg.norm(tl.tt_to_tensor(refined) - dense) / np.linalg.norm(dense)
    assert error < 1e-10


# -- cross/lsq.py ------------------------------------------------------------------------


# Mutant: singular values below ``1e-9`` (not ``1e-12``) of the largest dropped as noise:
# a tall interface of condition 1e10 (full rank in double precision) was solved on 3 of
# its 4 directions.
@given(seed=seeds, log10_condition=st.floats(9.5, 11))
@settings(max_examples=10, deadline=None)
def test_pinv_times_solves_a_full_rank_interface_of_condition_1e10(seed, log10_condition):
    from tensorly_cross.cross.lsq import _pinv_times

    rng = np.random.default_rng(seed)
    u, _ = np.linalg.qr(rng.standard_normal((30, 4)))
    v, _ = np.linalg.qr(rng.standard_normal((4, 4)))
    matrix = (u * np.logspace(0, -log10_condition, 4)) @ v.T
    solution = rng.standard_normal((4, 3))
    fitted = _pinv_times(matrix, matrix @ solution)
    assert np.linalg.norm(fitted - solution) <= 1e-3 * np.linalg.norm(solution)


def _sweeper(shape, ranks=None, max_rank=None, oversample=2.0, kick=4):
    from tensorly_cross.cross.lsq import LSQSweeper

    d = len(shape)
    max_rank = max_rank or [1] + [64] * (d - 1) + [1]
    return LSQSweeper(shape, 0.1, ranks, max_rank, oversample, np.random.default_rng(0),
                      kick=kick)


# Mutants: the outer sets (the left set of the last core, the right set of the first: cheap
# fibers) taken at the wrong bond; the rank-adaptive ``kick`` added to fixed-rank sets too.
@given(d=st.integers(3, 6), rank=st.integers(1, 5), oversample=st.sampled_from([1.5, 2.0, 3.0]),
       fixed=st.booleans())
def test_lsq_set_sizes_are_oversampled_outer_sets_larger(d, rank, oversample, fixed):
    import math

    from tensorly_cross.cross.lsq import OUTER_FACTOR

    shape = (40,) * d  # no set capped by its modes' size
    ranks = [1] + [rank] * (d - 1) + [1] if fixed else None
    sweeper = _sweeper(shape, ranks=ranks, oversample=oversample, kick=4)
    kick = 0 if fixed else 4
    inner = math.ceil(oversample * rank) + kick
    outer = math.ceil(OUTER_FACTOR * oversample * rank) + kick
    for bond in range(1, d):
        assert sweeper.set_size(bond, "left", rank) == (outer if bond == d - 1 else inner)
    for bond in range(d - 1):
        assert sweeper.set_size(bond, "right", rank) == (outer if bond == 0 else inner)


# Mutant: ``max_rank`` not applied by the rank-adaptive truncation (``cap`` left at the
# fitted block's size).
@given(seed=seeds, cap=st.integers(1, 3))
@settings(max_examples=5, deadline=None)
def test_adaptive_lsq_keeps_every_rank_within_max_rank(seed, cap):
    dense = np.random.default_rng(seed).standard_normal((6, 7, 6, 5))  # full rank
    with pytest.warns(tlc.ToleranceNotMetWarning):
        tt = tlc.tt_cross(dense, method="lsq", tol=1e-8, max_rank=cap, n_iter_max=3,
                          random_state=seed)
    assert max(core.shape[2] for core in tt.factors[:-1]) <= cap
    sweeper = _sweeper((6, 7, 6, 5), max_rank=[1, cap, cap, cap, 1])
    assert sweeper.choose_rank(2, np.ones(10), 10) == cap


# Mutant: the truncation at ``tol / (d - 1)`` instead of ``tol / sqrt(d - 1)`` (the bonds'
# errors add in squares): ranks above what the tolerance needs.
@given(d=st.integers(3, 8), seed=seeds)
def test_adaptive_lsq_truncation_is_the_fewest_values_within_tol_over_sqrt_d_minus_1(d, seed):
    from tensorly_cross.cross.lsq import TRUNCATION_MARGIN

    singular = np.sort(np.random.default_rng(seed).uniform(0, 1, 40))[::-1] ** 4
    sweeper = _sweeper((9,) * d)
    rank = sweeper.choose_rank(1, singular, 40)
    delta = TRUNCATION_MARGIN * sweeper.tol / np.sqrt(d - 1) * np.linalg.norm(singular)
    tail = [np.linalg.norm(singular[j:]) for j in range(41)]
    assert rank == max(1, min(j for j in range(41) if tail[j] <= delta))


# Mutants: "lowered the best error by 1%" judged at 1.01 (a sweep that lowered it by 0.2%
# counted as progress, the truncation never tightened), or the truncation tightened after a
# sweep that passed; rank growth counted as progress at any growth instead of above 2%.
def test_lsq_tightens_only_after_a_failing_sweep_that_improved_less_than_1_percent():
    from tensorly_cross.cross.lsq import TIGHTEN, TRUNCATION_MARGIN

    for errors, passes, tightened in [([0.5, 0.499], [False, False], True),
                                      ([0.5, 0.49], [False, False], False),
                                      ([0.5, 0.499], [False, True], False),
                                      ([0.5, 0.6], [False, False], True)]:
        sweeper = _sweeper((5, 5, 5))
        sweeper.errors, sweeper.passes = list(errors), list(passes)
        sweeper.tighten()
        expected = TRUNCATION_MARGIN * (TIGHTEN if tightened else 1.0)
        assert sweeper.delta_factor == pytest.approx(expected), (errors, passes)


def test_lsq_rank_growth_counts_as_progress_above_2_percent_of_parameters():
    sweeper = _sweeper((10, 10, 10, 10))
    base = (1, 10, 10, 10, 1)  # 2,200 parameters
    assert not sweeper.ranks_progressed([base, base])
    assert sweeper.ranks_progressed([base, (1, 10, 11, 10, 1)])  # +200 parameters: 9%
    large = [(1, 40, 40, 40, 1), (1, 40, 40, 40, 1)]  # 32,800 parameters
    # One more rank on the first bond: +410 parameters, 1.25% (not progress).
    assert not sweeper.ranks_progressed(large + [(1, 41, 40, 40, 1)])
    assert sweeper.ranks_progressed(large + [(1, 41, 41, 40, 1)])  # +1,220: 3.7%


# Mutants: one rectangular-maxvol row replaced by a random one (``extra = count - rank -
# 1``); the random rows of a rank-deficient matrix drawn with replacement.
@given(seed=seeds, n_rows=st.integers(12, 60), rank=st.integers(1, 5), extra=st.integers(0, 6))
@settings(max_examples=25, deadline=None)
def test_oversampled_rows_are_deterministic_at_full_rank_and_always_distinct(seed, n_rows, rank,
                                                                             extra):
    from tensorly_cross.cross.lsq import _oversampled_rows

    rng = np.random.default_rng(seed)
    matrix = rng.standard_normal((n_rows, rank))
    count = min(rank + extra, n_rows)
    first = _oversampled_rows(matrix, count, np.random.default_rng(1))
    second = _oversampled_rows(matrix, count, np.random.default_rng(2))
    np.testing.assert_array_equal(first, second)  # random rows only when rank deficient
    assert len(np.unique(first)) == count
    # Rank deficient, nonzero on 3 rows only: the random fill must not repeat a row.
    deficient = np.zeros((n_rows, 3))
    deficient[:3] = np.outer(rng.standard_normal(3), rng.standard_normal(3))
    rows = _oversampled_rows(deficient, n_rows, np.random.default_rng(seed))
    np.testing.assert_array_equal(np.sort(rows), np.arange(n_rows))


# Mutant: the trim test drops its confidence bound: a rounding whose held-out error sits
# just under tol on a few large residuals (upper 95% bound above tol) was accepted.
def test_a_trim_whose_error_passes_only_on_its_sample_is_rejected():
    from tensorly_cross.cross.confidence import held_out_residuals
    from tensorly_cross.cross.lsq import _TrimTest
    from tensorly_cross.cross.stopping import Validation
    from tensorly_cross.lazy.cache import EvaluationCache

    rng = np.random.default_rng(0)
    data = rng.uniform(1.0, 2.0, (20, 21, 22))
    full = [1, 20, 22, 1]
    validation = Validation(EvaluationCache(tlc.lazy_tensor(data)), 1500,
                            np.random.default_rng(0), tol=0.2)
    validation.error(tl.decomposition.tensor_train(data, full))
    held = validation.indices[: validation.n_read]
    wrong = data.copy()
    # The whole error (0.18) on 4 of the held-out entries.
    amount = 0.18 * np.linalg.norm(np.asarray(validation.values)) / 2.0
    wrong[tuple(held[:4].T)] += amount
    candidate = tl.decomposition.tensor_train(wrong, full)
    residuals = held_out_residuals(validation, candidate)
    error = validation.relative(residuals)
    assert 0.1 < error < 0.2 and upper_bound(error, residuals) > 0.2
    assert not _TrimTest(validation, 0.2)(candidate)
    assert _TrimTest(validation, 0.2)(tl.decomposition.tensor_train(data, full))


# Mutant: singular values equal to round-off not treated as degenerate in the SVD's
# derivative (``|gap| <= 0``): 1 / (s_i^2 - s_j^2) of 1e13 in the gradient.
def test_left_singular_gradient_is_bounded_at_nearly_repeated_singular_values(pytorch_backend):
    import torch

    from tensorly_cross.cross.lsq import _left_singular

    rng = np.random.default_rng(0)
    u, _ = np.linalg.qr(rng.standard_normal((12, 4)))
    v, _ = np.linalg.qr(rng.standard_normal((4, 4)))
    values = (u * [2.0, 1.0, 1.0 - 1e-13, 0.5]) @ v.T
    matrix = torch.tensor(values, requires_grad=True)
    left, _ = _left_singular(matrix)
    (left * torch.tensor(rng.standard_normal((12, 4)))).sum().backward()
    assert torch.isfinite(matrix.grad).all()
    assert float(matrix.grad.abs().max()) < 1e3


# Mutant: the refinement fitted over the last sweep's fibers only (``REFINE_SWEEPS = 1``)
# instead of those of the last 6 sweeps.
def test_lsq_refinement_fits_the_fibers_of_the_last_six_sweeps(monkeypatch):
    from tensorly_cross.cross import lsq

    seen = []

    def spy(lazy, cores, history):
        seen.append([(tuple(b.tobytes() for b in left), tuple(b.tobytes() for b in right))
                     for left, right in history])
        return cores

    monkeypatch.setattr(lsq, "refine_cores", spy)
    shape = (6, 5, 7, 4)
    lazy = tlc.lazy_tensor(np.random.default_rng(0).standard_normal(shape))
    sweeper = _sweeper(shape, ranks=[1, 2, 3, 2, 1])
    indices = sweeper.start(np.random.default_rng(0))
    for sweep in range(9):
        sweeper(lazy, indices, "lr" if sweep % 2 == 0 else "rl", None)
    recorded = [(tuple(b.tobytes() for b in left), tuple(b.tobytes() for b in right))
                for left, right in sweeper.history]
    assert [len(history) for history in seen] == [1, 2, 3, 4, 5, 6, 6, 6, 6]
    assert seen[-1] == recorded[-6:]


# Mutant: ``CrossIndices.copy`` without the least-squares ranks.
def test_a_copy_of_least_squares_indices_equals_them():
    dense = np.random.default_rng(0).standard_normal((8, 9, 10))
    indices = tlc.select_indices(dense, rank=2, method="lsq", random_state=0)
    copy = indices.copy()
    assert copy.ranks == indices.ranks and copy.rank == indices.rank
    assert copy.to_dict() == indices.to_dict()
    assert all(a is not b for a, b in zip(copy.left + copy.right, indices.left + indices.right,
                                          strict=True))


# -- cross/finish.py ---------------------------------------------------------------------


class _Info:
    def __init__(self, error):
        self.val_error, self.n_sweeps, self.best_sweep, self.refined = error, 3, 2, False
        self.ranks, self.val_errors, self.evals_per_sweep = [(1, 2, 2, 1)] * 3, [1.0] * 3, [9] * 3


class _Validation:
    values = np.ones(3)

    def __init__(self, error):
        self._error = error

    def error(self, cores):
        return self._error(cores) if callable(self._error) else self._error


def _finish_problem(seed, max_evals=None):
    from tensorly_cross.cross.init import single_pivot_indices
    from tensorly_cross.lazy.cache import EvaluationCache

    rng = np.random.default_rng(seed)
    shape, ranks = (6, 5, 4), (1, 2, 2, 1)
    dense = rng.standard_normal(shape)
    cores = [rng.standard_normal((ranks[m], shape[m], ranks[m + 1])) for m in range(3)]
    history = [_random_sets(rng, shape, 4) for _ in range(3)]
    indices = single_pivot_indices(shape, [0, 0, 0])
    cache = EvaluationCache(tlc.lazy_tensor(dense), max_evals=max_evals)
    return dense, cache, (indices, cores), history


# Mutants: one ALS pass instead of two (FINAL_PASSES); a refinement kept when it lowers the
# error by less than 1%; the evaluations of the refined "sweep" not recorded.
@given(seed=seeds)
@settings(max_examples=5, deadline=None)
def test_final_refinement_is_two_passes_kept_only_on_a_1_percent_gain(seed):
    from tensorly_cross.cross.finish import refine_if_better

    dense, cache, state, history = _finish_problem(seed)
    expected = refine_cores(cache, refine_cores(cache, state[1], history), history)
    info = _Info(1.0)
    indices, refined = refine_if_better(cache, state, history, _Validation(0.5), info)
    assert indices is state[0] and info.refined and info.n_sweeps == 4
    for a, b in zip(refined, expected, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
    assert info.val_errors[-1] == 0.5 and info.best_sweep == 4
    assert len(info.evals_per_sweep) == 4 and info.evals_per_sweep[-1] == cache.counters.unique
    info = _Info(1.0)
    assert refine_if_better(cache, state, history, _Validation(0.995), info) is state
    assert not info.refined and info.n_sweeps == 3 and len(info.val_errors) == 3


# Mutant: a refinement cut short by the evaluation budget (its fibers evicted) carried on
# with half-refined cores instead of returning the state as it was.
def test_final_refinement_stopped_by_the_budget_returns_the_state_unchanged():
    from tensorly_cross.cross.finish import refine_if_better

    _, cache, state, history = _finish_problem(0, max_evals=5)
    info = _Info(1.0)
    assert refine_if_better(cache, state, history, _Validation(0.1), info) is state
    assert not info.refined and info.n_sweeps == 3


def test_a_complex_least_squares_cross_warns_of_no_cast():
    grids = [np.linspace(-1, 1, n) for n in (10, 11, 12)]

    def function(indices):
        x = np.stack([grids[k][indices[:, k]] for k in range(3)], 1)
        return (1 + 2j) * np.exp(x.sum(1)) + 1j * x[:, 0]

    with warnings.catch_warnings():
        warnings.simplefilter("error", np.exceptions.ComplexWarning)
        tlc.tt_cross(function, shape=(10, 11, 12), method="lsq", random_state=0)


def _relative_error(tt, dense):
    approx = tl.to_numpy(tl.tt_to_tensor(tt)).astype(np.complex128)
    return np.linalg.norm(approx - dense) / np.linalg.norm(dense)


# Before: the least-squares cross (the default on stored data) kept the round-off singular
# values of its fits as rank whenever tol was below the data's precision: a rank-1 array
# crossed at tol=0 came back at ranks (1, 7, 42, 6, 1), no more accurate than at rank 1
# (TCI, on the same array: rank 1).
@pytest.mark.parametrize("dtype", [np.float64, np.complex128])
def test_a_least_squares_cross_below_the_datas_precision_keeps_the_datas_ranks(dtype):
    tensor = _random_tt_array((7, 7, 7, 6), [1, 1, 1, 1, 1], seed=0, dtype=dtype)
    tt, info = tlc.tt_cross(tensor, tol=0.0, random_state=0, return_info=True)
    assert info.method == "lsq"
    assert tt.rank == (1, 1, 1, 1, 1)
    assert _relative_error(tt, tensor) < 1e-13


def test_oversample_refused_for_tci_names_every_method_that_takes_it():
    """``tt_cross(f, oversample=2)`` on a function said the option "needs a fixed-rank
    method ('als' or 'block')": the least-squares cross, which oversamples without a rank,
    was left out, and nothing said that method='auto' had chosen TCI for want of a rank."""
    function = lambda idx: 1.0 / (1.0 + idx.sum(axis=1))  # noqa: E731
    with pytest.raises(ValueError, match=r"'lsq'.*method='auto' chose it.*pass rank="):
        tlc.tt_cross(function, shape=(8, 8, 8), oversample=2)
    with pytest.raises(ValueError, match=r"'lsq'") as caught:
        tlc.tt_cross(function, shape=(8, 8, 8), oversample=2, method="tci")
    assert "auto" not in str(caught.value)


# --- handover ------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore::tensorly_cross.ToleranceNotMetWarning")
def test_the_handover_holds_out_the_least_squares_sample_and_keeps_n_iter_max():
    data, function = _anatomical_callable()
    settings = dict(shape=data.shape, tol=0.1, max_rank=16, random_state=0, return_info=True)
    _, tci_info = tlc.tt_cross(function, method="tci", **settings)
    _, info = tlc.tt_cross(function, **settings)
    assert info.method == "tci+lsq"
    # The returned state's run held out the least-squares cross's own sample (4,000 at
    # least), not TCI's 1,000.
    assert info.n_heldout >= 4000 > tci_info.n_heldout
    # One sweep left after TCI's: the least-squares cross makes that one, no more.
    _, info = tlc.tt_cross(function, n_iter_max=tci_info.n_sweeps + 1, **settings)
    assert info.n_sweeps == tci_info.n_sweeps + 1 and info.stop_reason == "n_iter_max"


# --- rounding ------------------------------------------------------------------------------


def _padded_tt():
    """An exact rank-(1, 2, 2, 2, 1) TT stored at ranks (1, 6, 6, 6, 1) (TT-SVD, no cut)."""
    from .strategies import random_tt_cores

    cores = random_tt_cores((6, 7, 6, 5), (1, 2, 2, 2, 1), 4)
    dense = tl.tt_to_tensor([tl.tensor(c) for c in cores])
    rng = np.random.default_rng(0)
    padded = []
    for k, core in enumerate(cores):  # pad every bond with zero directions, then mix them
        r_left, n, r_right = core.shape
        left, right = (1 if k == 0 else 6), (1 if k == len(cores) - 1 else 6)
        big = np.zeros((left, n, right))
        big[:r_left, :, :r_right] = core
        padded.append(big)
    for k in range(len(padded) - 1):  # an invertible mix on each bond keeps the tensor
        mix = rng.standard_normal((padded[k].shape[2],) * 2) + 3 * np.eye(padded[k].shape[2])
        padded[k] = np.einsum("anb,bc->anc", padded[k], mix)
        padded[k + 1] = np.einsum("cb,bnd->cnd", np.linalg.inv(mix), padded[k + 1])
    return [tl.tensor(c) for c in padded], dense


def test_rounding_cuts_every_bond_of_a_padded_tt_to_its_rank():
    from tensorly_cross.cross.rounding import round_cores

    cores, dense = _padded_tt()
    rounded = round_cores(cores, 1e-8)
    assert [int(tl.shape(c)[2]) for c in rounded] == [2, 2, 2, 1]
    error = np.linalg.norm(tl.to_numpy(tl.tt_to_tensor(rounded)) - tl.to_numpy(dense))
    assert error <= 1e-8 * np.linalg.norm(tl.to_numpy(dense))


def _halving_spectrum():
    """A 3-way tensor whose rank-one terms halve one by one (8 x 8 x 8)."""
    rng = np.random.default_rng(0)
    return sum(0.5**j * np.einsum("i,j,k->ijk", *[rng.standard_normal(8) for _ in range(3)])
               for j in range(7))


def test_rounding_keeps_the_relative_error_within_delta_over_all_bonds():
    from tensorly_cross.cross.rounding import round_cores

    dense = _halving_spectrum()
    cores = tl.decomposition.tensor_train(dense, [1, 8, 8, 1]).factors
    for delta in np.linspace(0.0, 1.0, 101):
        rounded = tl.tt_to_tensor(round_cores(cores, delta))
        assert np.linalg.norm(rounded - dense) <= (delta + 1e-12) * np.linalg.norm(dense)


@pytest.mark.parametrize("largest", [0.25, 0.5])
def test_rounding_to_a_tolerance_finds_the_threshold_a_fine_grid_finds(largest):
    from tensorly_cross.cross.rounding import round_cores, round_to_tolerance

    dense = _halving_spectrum()  # each threshold step drops a little more
    cores = tl.decomposition.tensor_train(dense, [1, 8, 8, 1]).factors

    def passes(candidate):
        return np.linalg.norm(tl.tt_to_tensor(candidate) - dense) <= 0.115 * np.linalg.norm(dense)

    def size(candidate):
        return sum(int(np.prod(tl.shape(c))) for c in candidate)

    best = min(size(round_cores(cores, t)) for t in np.linspace(0, largest, 401)
               if passes(round_cores(cores, t)))
    rounded = round_to_tolerance(cores, passes, largest)
    assert passes(rounded) and size(rounded) == best < size(cores)


# Mutant (options._auto_method): the least-squares cross chosen from 3 modes on, not 2: a
# stored matrix went to TCI (rank-adaptive) or the ALS cross (rank=) under "auto".
@pytest.mark.parametrize("rank", [None, 2])
def test_auto_runs_the_least_squares_cross_on_a_stored_matrix(rank):
    matrix = np.add.outer(np.arange(12.0), np.arange(10.0))
    _, info = tlc.tt_cross(matrix, rank=rank, random_state=0, return_info=True)
    assert info.method == "lsq"


# Mutant (indices._check_ranks_fit): a least-squares rank one above the multi-indices that
# bound its bond let through (the TT rebuilt had smaller ranks than the dict claimed).
def test_a_least_squares_rank_above_its_sets_is_refused():
    matrix = np.add.outer(np.arange(6.0), np.arange(5.0)) ** 2
    data = tlc.select_indices(matrix, rank=2, method="lsq", random_state=0).to_dict()
    room = min(len(data["left"][1]), len(data["right"][0]))  # 5: right[0]'s rows
    with pytest.raises(ValueError, match=f"ranks\\[1\\]={room + 1} exceeds the {room}"):
        tlc.cross_interpolate(matrix, dict(data, ranks=[1, room + 1, 1]))


def test_least_squares_assembly_with_gradient_of_a_rank_deficient_interface(pytorch_backend):
    """Indices of a least-squares cross reused on a tensor that is zero on most of their
    fibers (a background, a mask): with gradient, the pseudo-inverse of the rank-deficient
    interface recursed without end (RecursionError), where the same read without gradient
    gave the TT. Now the same TT, with finite gradients."""
    torch = pytest.importorskip("torch")
    dense = torch.randn((6, 5, 7, 4), generator=torch.Generator().manual_seed(0),
                        dtype=torch.float64)
    indices = tlc.select_indices(dense, rank=3, method="lsq", random_state=0)
    mask = torch.zeros(5, dtype=torch.float64)
    mask[0] = 1.0
    masked = dense * mask[None, :, None, None]
    without_gradient = tlc.cross_interpolate(masked, indices).to_tensor()
    variable = masked.clone().requires_grad_(True)
    values = tlc.cross_interpolate(variable, indices).to_tensor()
    np.testing.assert_allclose(values.detach().numpy(), without_gradient.numpy(), atol=1e-12)
    values.sum().backward()
    assert torch.isfinite(variable.grad).all()


@pytest.mark.filterwarnings("ignore::tensorly_cross.SubnormalValuesWarning")
@pytest.mark.parametrize("exponent", [1000, -1030])
def test_least_squares_cross_with_gradient_of_data_near_the_float64_limits(pytorch_backend,
                                                                          exponent):
    """The least-squares cross holds data up to 2**1022 and down in the subnormals
    (docs/guarantees.rst), but with gradient its fits formed normal equations ``A^H A``,
    which overflowed (underflowed) and failed in SciPy ("array must not contain infs or
    NaNs"). Now the TT and gradient are those of the data at scale 1, times the scale."""
    torch = pytest.importorskip("torch")
    from tensorly_cross.cross.scaling import times_power_of_two

    rng = np.random.default_rng(0)
    dense = torch.tensor(rng.standard_normal((6, 5, 7, 4)))
    probe = torch.tensor(rng.standard_normal(dense.shape))
    results = []
    for data in (dense, times_power_of_two(dense, exponent)):
        variable = data.clone().requires_grad_(True)
        tt = tlc.tt_cross(variable, rank=2, method="lsq", random_state=0,
                          differentiable=True)
        values = tt.to_tensor()
        (values * probe).sum().backward()
        results.append((values.detach(), variable.grad))
    (values, gradient), (scaled_values, scaled_gradient) = results
    np.testing.assert_allclose(times_power_of_two(scaled_values, -exponent).numpy(),
                               values.numpy(), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(scaled_gradient.numpy(), gradient.numpy(), rtol=1e-9,
                               atol=1e-9)


# -- cross/driver.py, cross/finish.py, cross/refine.py: the refinement -----------------------


def _noisy(shape, seed):
    """A smooth tensor plus noise: no low rank meets a small tol, so the cross refines."""
    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*[np.linspace(0, 1, n) for n in shape], indexing="ij")
    return (np.sin(4 * sum(grids)) + np.exp(-3 * grids[0] * grids[2])
            + 0.05 * rng.standard_normal(shape))


def test_a_run_stopped_by_max_time_returns_its_best_sweep_unrefined():
    # Mutant: the least-squares refinement also ran after a max_time stop: past the time
    # allowed, the run added a sweep (info.refined) that no sweep had validated, where
    # max_time is documented to return "the best sweep it has completed and validated".
    import time

    import tensorly_cross as tlc

    def past_the_deadline_after_two_sweeps(tt, info):
        if info.n_sweeps == 2:
            time.sleep(1.2)

    dense = _noisy((30, 28, 26), 0)
    _, info = tlc.tt_cross(dense, rank=5, method="als", tol=1e-6, random_state=0,
                           return_info=True, max_time=1.0,
                           callback=past_the_deadline_after_two_sweeps)
    assert info.stop_reason == "max_time"
    assert not info.refined and info.n_sweeps == len(info.val_errors) <= 2


def test_a_refinement_meeting_tol_past_max_time_is_judged_without_fresh_entries():
    # Mutant: MaxTimeReached not caught around the refined TT's confirmation: a run whose
    # refinement met tol once max_time had passed raised it out of tt_cross (documented:
    # a run past max_time stops and returns), where it is judged on the entries held out.
    import time

    import tensorly_cross as tlc

    dense = _noisy((30, 28, 26), 0)
    _, plain = tlc.tt_cross(dense, rank=5, method="als", tol=1e-6, random_state=0,
                            return_info=True, n_iter_max=2)
    assert plain.refined
    tol = 1.02 * plain.val_errors[-1]  # met by the refinement, by no sweep

    def past_the_deadline_in_the_last_sweep(tt, info):
        if info.n_sweeps == 2:
            time.sleep(1.2)

    _, info = tlc.tt_cross(dense, rank=5, method="als", tol=tol, random_state=0,
                           return_info=True, max_time=1.0, n_iter_max=2,
                           callback=past_the_deadline_in_the_last_sweep)
    assert info.refined and info.val_errors[-1] == plain.val_errors[-1]


def test_the_refinement_of_a_tensor_scaled_by_a_power_of_two_is_the_same_refinement():
    # Mutant: the ridge pulls towards the current core in the data's units, not in the
    # scaled blocks' (refine.py brings them near 1 by powers of two): for data near 1e120
    # the pull outweighed the fit and the refinement was dropped (refined False).
    import tensorly_cross as tlc

    dense = _noisy((30, 28, 26), 0)
    runs = [tlc.tt_cross(np.ldexp(dense, exponent), rank=5, method="als", tol=1e-6,
                         random_state=0, return_info=True)[1] for exponent in (0, 400)]
    assert all(info.refined for info in runs)
    assert runs[1].val_errors[-1] == pytest.approx(runs[0].val_errors[-1], rel=1e-9)


def test_oversampled_als_keeps_and_counts_finished_chunks(tmp_path):
    # method="als" with oversample > 1 runs on a one-channel view of the tensor: the
    # finished chunks of a failed batch were neither kept by the checkpoint nor counted,
    # even without a view of the user's.
    dense = _low_rank()
    settings = dict(rank=2, method="als", oversample=2, random_state=4)
    reference = FailingFunction(dense)
    expected = tlc.tt_cross(FunctionTensor(reference, LOW_RANK_SHAPE), **settings)
    function = FailingFunction(dense, fail_at=12)
    path = tmp_path / "als.ckpt"
    with pytest.raises(RuntimeError, match="lost a node"):
        tlc.tt_cross(FunctionTensor(function, LOW_RANK_SHAPE, chunk_size=5), checkpoint=path,
                     **settings)
    first = {tuple(row) for row in np.concatenate(function.computed)}
    rerun = FailingFunction(dense)
    tt, info = tlc.tt_cross(FunctionTensor(rerun, LOW_RANK_SHAPE, chunk_size=5), checkpoint=path,
                            return_info=True, **settings)
    second = {tuple(row) for row in np.concatenate(rerun.computed)}
    assert not first & second
    assert info.n_restored == len(first)
    for core, expected_core in zip(tt.factors, expected.factors, strict=True):
        np.testing.assert_array_equal(core, expected_core)


def test_the_estimator_clones_fits_and_refits_as_scikit_learn_expects():
    base = pytest.importorskip("sklearn.base")
    estimator = tlc.TensorTrainCross(rank=[1, 2, 2, 1], tol=1e-6, random_state=3)
    tensor = tl.tt_to_tensor(random_tt_cores((4, 5, 6), (1, 2, 2, 1), 1))
    assert estimator.fit(tensor) is estimator
    twin = base.clone(estimator)
    assert twin.get_params() == estimator.get_params()
    assert not hasattr(twin, "decomposition_")  # a clone is unfitted
    factors = twin.fit_transform(tensor)
    assert factors is twin.decomposition_
    np.testing.assert_allclose(tl.tt_to_tensor(factors), estimator.to_tensor())
    np.testing.assert_allclose(twin.to_tensor(), tensor, atol=1e-8)
    twin.set_params(rank=[1, 1, 1, 1])
    assert twin.fit(tensor).decomposition_.rank == (1, 1, 1, 1)
    with pytest.raises(RuntimeError, match="not fitted"):
        tlc.TensorTrainCross(rank=2).to_tensor()


@pytest.mark.parametrize("dtype, scale", [(np.float32, 1.9 * 2.0**125),
                                          (np.float64, 1.9 * 2.0**1021)])
@pytest.mark.parametrize("rank", [None, 3])
def test_a_least_squares_cross_of_data_near_the_dtypes_largest_has_finite_cores(dtype, scale,
                                                                                 rank):
    # The singular values of a fiber block (up to sqrt(its size) times its largest entry)
    # overflowed the dtype: float32 data near 1e38 came back as NaN cores with val_error
    # nan and only NumPy's warnings, float64 near 2**1021 on 20x21x22 raised SciPy's
    # "array must not contain infs or NaNs"; the guarantee is finite cores up to 2**1022.
    array = _rank_three((20, 21, 22))
    data = (array * scale).astype(dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no overflow on the way either
        tt, info = tlc.tt_cross(data, method="lsq", rank=rank, random_state=0,
                                return_info=True)
    assert all(np.isfinite(core).all() for core in tt)
    assert tt[0].dtype == dtype
    dense = np.asarray(tl.tt_to_tensor([core.astype(np.float64) for core in tt]))
    error = np.linalg.norm(dense / scale - array) / np.linalg.norm(array)
    assert error < (1e-5 if dtype == np.float32 else 1e-12)
    assert np.isfinite(info.val_error)


def test_a_least_squares_result_with_non_finite_cores_raises_an_overflow_error_saying_why():
    # The cross shrinks data beyond 2**(maxexp/2) on its first nonzero read; a later read far
    # larger than that one can still overflow the fits, which returned a TT of NaNs.
    from tensorly_cross.cross.scaling import refuse_non_finite
    from tensorly_cross.lazy.cache import EvaluationCache

    cache = EvaluationCache(tlc.lazy_tensor(np.full((3, 4), 2.0**1020)))
    cache.evaluate(np.array([[0, 0], [1, 2]]))
    finite = [np.ones((1, 3, 2)), np.ones((2, 4, 1))]
    refuse_non_finite(finite, cache, "lsq")  # finite cores pass
    with pytest.raises(OverflowError, match=r"method='lsq'.*1\.12e\+307.*near 1.*'tci'"):
        refuse_non_finite([finite[0], np.full((2, 4, 1), np.nan)], cache, "lsq")


def test_a_subnormal_constant_whose_first_least_squares_sweep_is_nan_is_still_crossed():
    # The first sweep of 5e-324 data is NaN and the next one recovers: only the result is
    # checked, which is finite and of the data (a check per sweep refused it).
    values = np.full((4, 5, 3), 5e-324)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tt = tlc.tt_cross(values, rank=1, random_state=0)
    assert all(np.isfinite(core).all() for core in tt.factors)
    assert np.array_equal(tl.tt_to_tensor(tt), values)


def test_the_least_squares_overflow_error_names_the_moduli_of_the_data_as_they_are():
    from tensorly_cross.cross.scaling import ShrunkTensor, refuse_non_finite
    from tensorly_cross.lazy.cache import EvaluationCache

    # The cache of a cross reads through the shrinking: 2**1020 is held as 0.5.
    cache = EvaluationCache(ShrunkTensor(tlc.lazy_tensor(np.full((3, 4), 2.0**1020))))
    cache.evaluate(np.array([[0, 0], [1, 2]]))
    with pytest.raises(OverflowError, match=r"moduli up to 1\.12e\+307"):
        refuse_non_finite([np.ones((1, 3, 2)), np.full((2, 4, 1), np.nan)], cache,
                          "tci+lsq")


@pytest.mark.parametrize("rank", [1, None])
def test_one_least_squares_sweep_of_subnormal_data_returns_finite_cores(rank):
    # The first sweep of 5e-324 data underflowed a core to zeros and its refinement
    # overflowed to NaN; checked on the result (9ef399f), n_iter_max=1 (or a budget or a
    # deadline after one sweep) raised "overflowed on data of moduli up to 4.94e-324".
    values = np.full((4, 5, 3), 5e-324)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tt, info = tlc.tt_cross(values, rank=rank, n_iter_max=1, random_state=0,
                                return_info=True)
    assert all(np.isfinite(core).all() for core in tt.factors)
    assert info.val_errors[-1] == info.val_errors[-1]  # judged, not NaN
    if rank == 1:
        assert np.array_equal(tl.tt_to_tensor(tt), values)
