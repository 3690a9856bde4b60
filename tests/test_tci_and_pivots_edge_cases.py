"""Tests of the TCI sweeps, index sets, pivot searches and the interpolation basis."""

import warnings

import numpy as np
import pytest
import tensorly as tl
from hypothesis import example, given, settings
from hypothesis import strategies as st

import tensorly_cross as tlc
from tensorly_cross.api import cross_interpolate
from tensorly_cross.cross.basis import (
    column_basis,
    column_rank,
    interpolation_matrix,
    max_condition,
    right_divide,
)
from tensorly_cross.cross.indices import CrossIndices, cartesian_join, fiber_indices
from tensorly_cross.cross.init import random_distinct_multi_indices

from ._helpers_shared import (
    _anatomical_callable,
    _corner_feature,
    _noisy_ramp,
    _small_tts,
    _smooth_noisy,
    _true_error,
)
from .conftest import host, to_backend
from .strategies import random_tt_cores, seeds

# -- property tests of the paths audited --------------------------------------------------


def _run_counting(dense, **kwargs):
    """``tt_cross`` of a function over ``dense`` that records every multi-index it gets."""
    received = []

    def function(multi_indices):
        received.append(np.array(multi_indices))
        return dense[tuple(np.asarray(multi_indices).T)]

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tt, info = tlc.tt_cross(function, shape=dense.shape, return_info=True, **kwargs)
    asked = np.concatenate(received) if received else np.zeros((0, dense.ndim), np.int64)
    return tt, info, asked


@settings(max_examples=25, deadline=None)
@given(problem=_small_tts(), search=st.sampled_from(["column", "rook", "full", "batched"]),
       budget=st.one_of(st.none(), st.integers(30, 400)))
def test_tci_report_matches_what_it_read_and_returned(problem, search, budget):
    shape, ranks, seed = problem
    dense = tl.tt_to_tensor(random_tt_cores(shape, ranks, seed))
    try:
        tt, info, asked = _run_counting(dense, method="tci", pivot_search=search, tol=1e-10,
                                        random_state=seed, max_evals=budget, val_size=200)
    except ValueError as error:  # a budget too small for the held-out entries or a sweep
        assert "max_evals" in str(error)
        return
    assert len(asked) == info.n_evals == len(np.unique(asked, axis=0))
    assert budget is None or info.n_evals <= budget
    assert len(info.val_errors) == len(info.ranks) == len(info.evals_per_sweep) == info.n_sweeps
    assert info.best_sweep not in info.rolled_back
    if not info.refined:
        assert tuple(tt.rank) == info.ranks[info.best_sweep - 1]
    if budget is None:  # an exact recovery, whatever the modes of size 1 or 2
        error = np.linalg.norm(tl.tt_to_tensor(tt) - dense) / np.linalg.norm(dense)
        assert error < 1e-8


def _relative_error(tt, dense):
    return np.linalg.norm(tl.tt_to_tensor(tt) - dense) / np.linalg.norm(dense)


# -- api.py: select_indices reports the TT that cross_interpolate rebuilds ---------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_select_indices_reports_the_tt_that_cross_interpolate_rebuilds(seed):
    # The search refined and rounded its least-squares TT (held-out 0.046, "tol" for
    # 0.05), which cross_interpolate cannot repeat: the TT rebuilt from the indices, at
    # the rounded ranks (1, 1, 1, 1, 1), was off by 0.088.
    dense = _smooth_noisy()
    indices, info = tlc.select_indices(dense, method="lsq", tol=0.05, max_rank=8,
                                       random_state=seed, return_info=True)
    rebuilt = tlc.cross_interpolate(dense, indices)
    true_error = _relative_error(rebuilt, dense)
    assert info.stop_reason == "tol" and true_error <= 0.05
    assert abs(true_error - info.val_error) <= 0.1 * true_error
    assert tuple(rebuilt.rank) == info.ranks[info.best_sweep - 1]


def test_a_dict_whose_ranks_exceed_its_index_sets_is_refused():
    # cross_interpolate rebuilt ranks (1, 4, 6, 1) while indices.rank said (1, 50, 50, 1).
    tensor = np.random.default_rng(0).standard_normal((4, 6, 5))
    indices = tlc.select_indices(tensor, method="lsq", tol=0.5, random_state=0)
    data = indices.to_dict()
    assert tlc.CrossIndices.from_dict(data).rank == indices.rank
    data["ranks"] = [1, 50, 50, 1]
    with pytest.raises(ValueError, match="ranks\\[1\\]=50 exceeds"):
        tlc.CrossIndices.from_dict(data)


def _smooth(indices):
    return np.sin(indices.sum(axis=1) / 7.0) + 1.5


# -- options.py: pivot_search is TCI's; other methods ignored it without a word -----------


@pytest.mark.parametrize("search", ["rook", "full", "auto", "batched"])
@pytest.mark.parametrize("method, rank", [("als", 2), ("block", 2), ("lsq", None)])
def test_pivot_search_other_than_column_is_refused_by_methods_without_pivot_search(
        method, rank, search):
    with pytest.raises(ValueError, match=f"pivot_search='{search}' applies to method='tci'"):
        tlc.tt_cross(_smooth, shape=(6, 6, 6), method=method, rank=rank,
                     pivot_search=search, random_state=0)


def test_an_unknown_pivot_search_is_named_as_such_whatever_the_method():
    with pytest.raises(ValueError, match="pivot_search must be one of"):
        tlc.tt_cross(_smooth, shape=(6, 6), method="als", rank=2, pivot_search="diagonal")


@pytest.mark.parametrize("search", ["column", "rook", "full", "auto", "batched"])
def test_every_pivot_search_still_runs_tci(search):
    tt = tlc.tt_cross(_smooth, shape=(6, 6, 6), tol=1e-10, pivot_search=search,
                      random_state=0)
    grid = np.indices((6, 6, 6)).reshape(3, -1).T
    np.testing.assert_allclose(tlc.tt_entries(tt, grid), _smooth(grid), rtol=1e-8)


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


# -- cross/tci.py ------------------------------------------------------------------------


def _tci_start(shape):
    from tensorly_cross.cross.init import single_pivot_indices

    return single_pivot_indices(shape, [0] * len(shape))


# Mutant: the last core's fibers not handed over by a left-to-right sweep
# (``k == len(shape) - 3``): the assembly read them a second time.
@given(shape=st.lists(st.integers(2, 5), min_size=2, max_size=5).map(tuple), seed=seeds)
@settings(max_examples=15, deadline=None)
def test_a_tci_sweep_hands_over_every_cores_fibers_and_the_scale(shape, seed):
    from tensorly_cross.cross.tci import tci_half_sweep
    from tensorly_cross.lazy.cache import EvaluationCache

    rng = np.random.default_rng(seed)
    dense = rng.standard_normal(shape)
    indices = _tci_start(shape)
    scale = 1e6  # larger than any entry: kept (mutant: the sweep's own largest modulus)
    for direction in ("lr", "rl", "lr"):
        scale, fibers = tci_half_sweep(EvaluationCache(tlc.lazy_tensor(dense)), indices,
                                       direction, lambda block: 1e-12 * block,
                                       [1] + [3] * (len(shape) - 1) + [1], rng, "column", scale)
        assert scale == 1e6
        for k, fiber in enumerate(fibers):
            expected = dense[tuple(fiber_indices(indices.left[k], shape[k],
                                                 indices.right[k]).T)]
            np.testing.assert_array_equal(np.asarray(fiber).ravel(), expected)


# Mutants: "auto" searching bonds of exactly FULL_SEARCH_PAIRS index pairs by columns
# (``<`` for ``<=``); previous pivots kept on those small bonds too; the batched search's
# rank hint the smaller of the bond's last rank and its neighbour's instead of the larger.
def test_tci_auto_search_is_full_and_fresh_on_small_bonds(monkeypatch):
    from tensorly_cross.cross import tci

    calls = []
    real = tci.prrlu

    def spy(matrix, abs_tol, max_rank, rng, search, hints, kept, growth, hint):
        calls.append((matrix.shape, search, kept is not None, hint))
        return real(matrix, abs_tol, max_rank, rng, search, hints, kept, growth, hint)

    monkeypatch.setattr(tci, "prrlu", spy)
    shape = (4, 4, 5, 4, 2)  # bond pairs: 16, 20, 20, 8
    dense = np.random.default_rng(0).standard_normal(shape)
    indices = _tci_start(shape)
    rng = np.random.default_rng(0)
    max_rank = [1, 4, 4, 4, 4, 1]
    for direction in ("lr", "rl"):
        before = [len(block) for block in indices.left]
        tci.tci_half_sweep(tlc.lazy_tensor(dense), indices, direction, lambda block: 0.0,
                           max_rank, rng, "auto")
        searches = calls[-4:] if direction == "lr" else calls[-4:][::-1]
        for k, (_, search, kept, hint) in enumerate(searches):
            small = shape[k] * shape[k + 1] <= 16
            assert search == ("full" if small else "column"), (direction, k)
            assert kept == (not small), (direction, k)
            assert hint >= before[k + 1]
    # Left to right after a sweep that reached rank 4 everywhere: hints are 4, not 1.
    calls.clear()
    tci.tci_half_sweep(tlc.lazy_tensor(dense), indices, "lr", lambda block: 0.0, max_rank, rng,
                       "auto")
    assert [hint for *_, hint in calls] == [4, 4, 4, 4]  # ranks (1, 4, 4, 4, 2, 1)


# Mutants: a stall judged on a 20x drop instead of a halving; the pivot cut raised above its
# start after a divergence, or lowered "to" a floor above 1 (min_cut > tol); the kept
# pivots' growth bound without its floor of 16; a bond at full rank counted as capped.
def test_tci_sweeper_cut_rules():
    from tensorly_cross.cross.tci import TCISweeper

    def sweeper(tol=1e-6, min_cut=1e-13, max_rank=(1, 4, 4, 1)):
        return TCISweeper(tol, list(max_rank), np.random.default_rng(0), "column", 1.0, None,
                          min_cut=min_cut)

    tci = sweeper()
    assert tci.lower_cut_if_stalled([1e-3, 0.6e-3]) and tci.pivot_factor == pytest.approx(0.1)
    assert not tci.lower_cut_if_stalled([1e-3, 0.4e-3]) and tci.pivot_factor == pytest.approx(0.1)
    assert not tci.lower_cut_if_stalled([1e-3, 0.9e-6])  # met the tolerance
    tci.diverged()
    tci.diverged()
    assert tci.pivot_factor == 1.0
    # min_cut above tol: the cut stays at tol (the factor at 1), never above it.
    high = sweeper(tol=1e-14, min_cut=2.2e-14)
    assert high.lower_cut_if_stalled([1e-3, 1e-3]) and high.pivot_factor == 1.0
    assert sweeper(tol=1e-12, min_cut=1e-13).max_kept_growth == 16.0
    assert sweeper(tol=1e-6, min_cut=1e-13).max_kept_growth == pytest.approx(1e6)
    # (2, 3, 2): full ranks (1, 2, 2, 1); a bond at its cap 2 = full rank is exact.
    indices = _tci_start((2, 3, 2))
    indices.left[1] = np.array([[0], [1]])
    indices.right[0] = np.array([[0, 0], [1, 1]])
    indices.left[2] = np.array([[0, 0], [1, 1]])
    indices.right[1] = np.array([[0], [1]])
    assert not sweeper(max_rank=(1, 2, 2, 1)).at_rank_cap(indices)
    indices_3 = _tci_start((3, 3, 3))
    indices_3.left[1] = np.array([[0], [1]])
    indices_3.right[0] = np.array([[0, 0], [1, 1]])
    assert sweeper(max_rank=(1, 2, 4, 1)).at_rank_cap(indices_3)  # 2 < full rank 3


# Mutant: rows packed into one int64 key up to 2**66 index combinations (not 2**62): the
# keys wrap around and two different rows can share one (a row reported as found).
# (A hashed search, beyond 2**62, compares the rows themselves.)
def test_row_search_tells_apart_rows_whose_packed_keys_would_wrap_around():
    from tensorly_cross.cross.indices import positions_found, positions_in

    n = 3 * 2**20  # three modes of n: 2**64 < n**3 < 2**66 combinations
    da, rest = divmod(2**64, n * n)
    db, dc = divmod(rest, n)  # (da, db, dc) . (n^2, n, 1) = 2**64: equal keys mod 2**64
    candidates = np.array([[0, 0, 0], [n - 1, n - 1, n - 1]], dtype=np.int64)
    wrapped = np.array([[da, db, dc]], dtype=np.int64)
    assert positions_found(wrapped, candidates).size == 0
    with pytest.raises(ValueError, match="not nested"):
        positions_in(wrapped, candidates)
    np.testing.assert_array_equal(positions_in(candidates[::-1], candidates), [1, 0])


# Mutant: the hashed row search (index ranges beyond one int64 key) trusting equal hashes
# without comparing the rows.
def test_row_search_is_not_fooled_by_a_hash_collision():
    from tensorly_cross.cross.indices import _hash_weights, positions_found

    w1, w2 = (int(w) % 2**64 for w in _hash_weights(2))
    inverse = pow(w1, -1, 2**64)  # the weights are odd
    for b in range(1, 200):
        a = (-w2 * b * inverse) % 2**64  # w1 a + w2 b = 0 (mod 2**64): the hash of (0, 0)
        if a < 2**61:
            break
    else:
        pytest.skip("no colliding row in range for these weights")
    candidates = np.array([[0, 0], [2**61, 2**61]], dtype=np.int64)  # beyond packed keys
    rows = np.array([[a, b]], dtype=np.int64)
    assert positions_found(rows, candidates).size == 0
    np.testing.assert_array_equal(positions_found(candidates, candidates), [0, 1])


# Mutant: a mode of exactly ``MAX_MODE_SIZE`` refused (``>=`` for ``>``); checked at a
# lowered limit (2**26 indices would take 512 MiB).
def test_a_mode_of_exactly_the_largest_size_is_accepted(monkeypatch):
    from tensorly_cross.cross import indices

    monkeypatch.setattr(indices, "MAX_MODE_SIZE", 8)
    np.testing.assert_array_equal(indices.mode_column(8).ravel(), np.arange(8))
    with pytest.raises(ValueError, match="QuanticsTensor"):
        indices.mode_column(9)


# Before: a set emptied in a saved dict (a bond of rank 0) was taken: interpolating methods
# rebuilt the zero TT, of ranks (1, 3, 0, 1), without a word; a block cross's failed in
# NumPy ("LinAlgError: cond is not defined on empty arrays").
@pytest.mark.parametrize("method", ["als", "tci", "block", "lsq"])
def test_an_empty_index_set_is_refused_by_name(method):
    tensor = np.sin(np.indices((5, 6, 7)).sum(0) / 3.0)
    indices = tlc.select_indices(tensor, method=method, random_state=0,
                                 rank=3 if method in ("als", "block") else None)
    saved = indices.to_dict()
    saved["right"][1] = np.zeros((0, 1), dtype=np.int64)
    if method in ("als", "tci"):  # the bond's two sets agree, as its rank
        saved["left"][2] = np.zeros((0, 2), dtype=np.int64)
    if method == "block":
        saved["right"][0] = np.zeros((0, 1), dtype=np.int64)
    with pytest.raises(ValueError, match=r"(left|right)\[\d\] holds no multi-index"):
        tlc.cross_interpolate(tensor, saved)


# --- global_pivots -------------------------------------------------------------------------

FEATURE_SHAPE = (8, 8, 8, 8)


# --- handover ------------------------------------------------------------------------------


def test_a_tci_stall_at_a_small_error_still_hands_over():
    # TCI stalls at 3e-3 on a smooth function with noise 1e-3 (tol 1e-4): above round-off,
    # so the least-squares cross gets its turn, and comes closer.
    grid = np.linspace(0, 1, 24)
    x = np.stack(np.meshgrid(grid, grid, grid, indexing="ij"))
    data = 1 / (1 + x.sum(0)) + 1e-3 * np.random.default_rng(0).standard_normal(x.shape[1:])

    def function(indices):
        return data[tuple(np.asarray(indices).T)]

    settings = dict(shape=data.shape, tol=1e-4, max_rank=8, random_state=0, return_info=True)
    with pytest.warns(tlc.ToleranceNotMetWarning):
        _, tci_info = tlc.tt_cross(function, method="tci", **settings)
    assert tci_info.stop_reason == "stalled" and 1e-3 < tci_info.val_error < 1e-2
    with pytest.warns(tlc.ToleranceNotMetWarning):
        _, info = tlc.tt_cross(function, **settings)
    assert info.method == "tci+lsq" and info.val_error < tci_info.val_error


# --- init ----------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore::tensorly_cross.ToleranceNotMetWarning")
def test_tcis_start_probe_takes_at_most_a_tenth_of_a_small_budget():
    sizes = []

    def function(indices):
        sizes.append(len(indices))
        return 1.0 / (1.0 + np.asarray(indices).sum(axis=1))

    tlc.tt_cross(function, shape=(16,) * 4, val_size=0, max_evals=400, tol=1e-8,
                 method="tci", random_state=0)
    assert sizes[0] <= 40  # the start probe: 200 random entries, or a tenth of max_evals


@pytest.mark.filterwarnings("ignore::tensorly_cross.ToleranceNotMetWarning")
def test_tci_without_held_out_entries_starts_from_the_largest_probe():
    dense = _corner_feature()

    def function(indices):
        return dense[tuple(np.asarray(indices).T)]

    tt = tlc.tt_cross(function, shape=FEATURE_SHAPE, val_size=0, tol=1e-10, method="tci",
                      random_state=0)
    # A start in the zero background finds nothing to interpolate: the TT would be zero.
    approx = np.asarray(tl.tt_to_tensor([tl.to_numpy(core) for core in tt]))
    assert np.linalg.norm(approx - dense) <= 1e-8 * np.linalg.norm(dense)


@pytest.mark.filterwarnings("ignore::tensorly_cross.ToleranceNotMetWarning")
def test_tcis_start_pivot_is_not_held_out():
    data, function = _anatomical_callable()
    _, info = tlc.tt_cross(function, shape=data.shape, tol=0.1, max_rank=16, method="tci",
                           val_size=1000, random_state=0, return_info=True)
    assert info.n_heldout == 999  # the largest held-out entry became the start pivot


def test_sliced_right_sets_of_a_rank_above_the_mode_size_extend_enough_parents():
    rng = np.random.default_rng(0)
    dense = tl.tt_to_tensor([rng.standard_normal(s)
                             for s in [(1, 4, 4), (4, 4, 6), (6, 4, 4), (4, 4, 1)]])
    tt = tlc.tt_cross(tlc.lazy_tensor(dense), rank=[1, 4, 6, 4, 1], max_slices=1, tol=1e-12,
                      random_state=0, n_iter_max=6)
    approx = np.asarray(tl.tt_to_tensor([tl.to_numpy(core) for core in tt]))
    assert np.linalg.norm(approx - dense) <= 1e-8 * np.linalg.norm(dense)


# Mutant (missed.warn_if_missed): TCI with rank= taken for a fixed-rank run, whose missed
# tol is no news: TCI's rank is only a cap, and a TT far above tol came back silently.
def test_tci_capped_by_rank_warns_when_it_misses_tol():
    wavy = tlc.FunctionTensor(lambda idx: np.sin(idx[:, 0] * idx[:, 1] * idx[:, 2] / 7.0),
                              (12, 12, 12))
    with pytest.warns(tlc.ToleranceNotMetWarning, match="raise rank"):
        _, info = tlc.tt_cross(wavy, method="tci", rank=1, tol=1e-8, random_state=0,
                               return_info=True)
    assert info.val_error > 1e-8


# Mutant (driver._settled): ``any`` set of a family unchanged for ``all``: without held-out
# entries a sweep that still moved one bond's sets counted as a fixed point (stalled).
def test_a_sweep_that_moved_one_bonds_sets_is_not_settled():
    from tensorly_cross.cross.driver import _settled

    left = [np.array([[0], [1]]), np.array([[0, 1], [1, 2]])]
    right = [np.array([[2], [3]]), np.array([[1, 1], [2, 0]])]
    moved = [right[0], np.array([[1, 1], [2, 1]])]  # the second bond's set moved
    assert _settled([(left, right), (left, right)])
    assert not _settled([(left, right), (left, moved)])


def _spike_beside_a_smooth_half(shape=(10, 11, 12)):
    """A spike of 5 at (3, 4, :) on a tensor that is 0 on its first six last-mode slices
    and ``1 / (1 + sum(i))`` on the others: TCI keeps pivots across sweeps here."""
    grid = np.indices(shape).astype(float)
    spike = np.where((grid[0] == 3) & (grid[1] == 4), 5.0, 0.0)
    return spike + np.where(grid[2] < 6, 0.0, 1.0 / (1.0 + grid.sum(axis=0)))


@pytest.mark.parametrize("search", ["column", "rook", "batched"])
@pytest.mark.parametrize("exponent", [-1040, -1060])
def test_tci_of_subnormal_data_keeps_its_pivots_without_a_singular_solve(search, exponent):
    # The kept pivots' cross was solved as read: the LU of a block of subnormal values
    # raised numpy's bare LinAlgError ("Singular matrix") on a block that is not singular.
    array = _spike_beside_a_smooth_half()
    scaled = np.ldexp(array, exponent)
    reference = tlc.tt_cross(lambda idx: array[tuple(idx.T)], shape=array.shape,
                             method="tci", tol=1e-3, pivot_search=search, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", tlc.SubnormalValuesWarning)  # documented, expected
        tt = tlc.tt_cross(lambda idx: scaled[tuple(idx.T)], shape=array.shape,
                          method="tci", tol=1e-3, pivot_search=search, random_state=0)
    back = np.ldexp(np.asarray(tt.to_tensor()), -exponent)
    assert np.isfinite(back).all()
    error = np.linalg.norm(back - array) / np.linalg.norm(array)
    expected = np.linalg.norm(np.asarray(reference.to_tensor()) - array) / np.linalg.norm(array)
    # Subnormal values keep fewer digits (about 9 at 2**-1060): the same TT to those.
    assert error < max(2 * expected, 1e-2)


@pytest.mark.parametrize("search", ["column", "rook", "batched", "full"])
def test_tci_of_data_of_a_few_subnormal_units_stops_at_their_round_off(search):
    # Values of at most 8 units of the last place (2**-1070 times a cosine): the pivot
    # cut, 100 epsilons of the largest modulus, underflowed to 0, so pivots of a unit or
    # two of rounding were taken and the kept pivots' cross was exactly singular (bare
    # LinAlgError with rook search). The cut is now never below 100 units of the last
    # place: such data, which keep about one digit, give a finite TT.
    grid = np.indices((9, 10, 11)).astype(float)
    array = np.ldexp(np.where(grid[1] < 3, 0.0, np.cos(grid.sum(axis=0) / 4)), -1070)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", tlc.SubnormalValuesWarning)  # documented, expected
        warnings.simplefilter("ignore", tlc.ToleranceNotMetWarning)  # one digit: expected
        tt = tlc.tt_cross(array, method="tci", pivot_search=search, random_state=0)
    assert np.isfinite(np.ldexp(np.asarray(tt.to_tensor()), 1070)).all()


def _nested(sets, prefix):
    """Whether every multi-index of ``sets[k + 1]`` extends one of ``sets[k]`` (``prefix``:
    the part that should be found in the neighbouring set)."""
    return all({tuple(row) for row in sets[k]} >= {tuple(prefix(row)) for row in sets[k + 1]}
               for k in range(len(sets) - 1))


@pytest.mark.parametrize("search", ["column", "rook", "full", "batched", "als"])
@settings(max_examples=8)
@given(shape=st.lists(st.integers(1, 7), min_size=2, max_size=4).map(tuple),
       cap=st.integers(1, 3), n_iter_max=st.integers(1, 4), seed=st.integers(0, 2**16))
def test_sets_nested_both_ways_are_interpolated_on_every_fiber(search, shape, cap, n_iter_max,
                                                                seed):
    # cross_interpolate's promise: on full-rank data (so no approximation can be exact),
    # the TT equals the tensor on every fiber A[left[k], :, right[k]] once both families
    # of sets are nested.
    data = np.random.default_rng(seed).standard_normal(shape)
    config = ({"method": "als", "rank": cap} if search == "als"
              else {"method": "tci", "pivot_search": search, "rank": cap})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        indices = tlc.select_indices(data, tol=1e-3, n_iter_max=n_iter_max, random_state=seed,
                                     **config)
    left_nested = _nested(indices.left, lambda row: row[:-1])
    right_nested = _nested(indices.right[::-1], lambda row: row[1:])
    if not (left_nested and right_nested):
        return
    full = tl.tt_to_tensor(tlc.cross_interpolate(data, indices))
    for k, size in enumerate(shape):
        left, right = indices.left[k], indices.right[k]
        rows = np.array([[*a, i, *b] for a in left for i in range(size) for b in right],
                        dtype=np.int64).reshape(-1, len(shape))
        np.testing.assert_allclose(full[tuple(rows.T)], data[tuple(rows.T)], atol=1e-9)


# Before: a TCI that stalled handed over to the least-squares cross, whose sweeps read the
# rest of this 6x8x3 function: their errors were exact (0.0037), TCI's its 10 draws'
# (0.0024), and TCI's TT was returned as the better one, reporting 0.0024 for a true 0.0114.
def test_a_handover_that_reads_every_entry_compares_exact_errors():
    shape = (6, 8, 3)
    dense = _noisy_ramp(shape, seed=116, noise=1e-3)
    tt, info = tlc.tt_cross(lambda idx: dense[tuple(idx.T)], shape=shape, method="auto",
                            tol=1e-3, max_rank=3, val_size=10, random_state=116,
                            return_info=True)
    assert info.n_evals == dense.size
    assert len(info.val_errors) > info.n_sweeps - 1 > 2  # TCI's sweeps, then the handover's
    assert abs(info.val_error - _true_error(tt, dense)) <= 1e-12
    assert info.method == "tci+lsq"  # the better state, by the exact errors


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
