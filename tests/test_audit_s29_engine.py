"""Audit s29 of the cross engine through the public API. Each test failed before its fix."""

import warnings

import numpy as np
import pytest

import tensorly_cross as tlc


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


@pytest.mark.parametrize("method, extra", [("tci", {}), ("als", {"rank": 2}),
                                           ("lsq", {}), ("block", {"rank": 2})])
def test_the_differentiable_read_is_counted_as_asked_for_and_as_a_call(method, extra):
    # The fresh read after the search was added to n_evals only: n_requested stayed the
    # search's, so n_requested - n_cached (entries computed, CacheCounters' definition) no
    # longer gave n_evals, and n_calls missed the batched call that made the read.
    def function(indices):
        return 1.0 / (1.0 + indices.sum(axis=1))

    shape = (6, 5, 4)
    _, search = tlc.select_indices(function, shape=shape, method=method, random_state=0,
                                   return_info=True, **extra)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", tlc.ToleranceNotMetWarning)
        _, info = tlc.tt_cross(function, shape=shape, method=method, random_state=0,
                               return_info=True, differentiable=True, **extra)
    read = info.n_evals - search.n_evals
    assert read > 0
    assert info.n_cached == search.n_cached
    assert info.n_requested == search.n_requested + read
    assert info.n_requested - info.n_cached == info.n_evals
    assert info.n_calls == search.n_calls + 1  # the cores come from ONE batched read


@pytest.mark.parametrize("exponent", [-130, -140])
def test_the_block_cross_of_float32_data_near_its_subnormal_range_is_finite(exponent):
    # Rescaling by a power of two multiplied by a factor up to 2**1000 at once, which
    # float32 holds as inf (NumPy and PyTorch cast the factor to the data's precision):
    # the block cross failed deep in LAPACK ("array must not contain infs or NaNs", "SVD
    # did not converge") on float32 data near 2**-130.
    rng = np.random.default_rng(1)
    array = np.einsum("ia,ja,ka->ijk", *(rng.standard_normal((n, 3)) for n in (5, 6, 7)))
    array /= np.abs(array).max()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", tlc.SubnormalValuesWarning)  # documented, expected
        tt = tlc.tt_cross(np.ldexp(array, exponent).astype(np.float32), method="block",
                          rank=3, random_state=0)
    back = np.ldexp(np.asarray(tt.to_tensor()).astype(np.float64), -exponent)
    assert np.isfinite(back).all()
    # The entry-wise crosses keep 7e-6 at 2**-130 and 8e-3 at 2**-140 (float32's
    # subnormals keep few digits): the block cross keeps as many.
    assert np.linalg.norm(back - array) / np.linalg.norm(array) < 2e-2


@pytest.mark.parametrize("dtype", [np.float32, np.complex64, np.float64])
def test_a_power_of_two_of_a_single_precision_array_is_applied_exactly(dtype):
    from tensorly_cross.cross.scaling import exponent_of, times_power_of_two

    values = np.array([1e-40, 3e-41, -2e-44], dtype=np.float32).astype(dtype)
    exponent = exponent_of(values)
    scaled = times_power_of_two(values, -exponent)
    assert np.isfinite(scaled).all() and 0.5 <= np.abs(scaled).max() < 1
    np.testing.assert_array_equal(times_power_of_two(scaled, exponent), values)


def test_a_budget_stop_returns_the_best_complete_sweep_as_documented():
    # max_evals's docs said "the result is the last complete sweep within it"; the run
    # returns the one with the lowest held-out error (sweep 4 of 5 here), as patience and
    # the Returns section say. The docs now say so.
    rng = np.random.default_rng(0)
    noise = rng.standard_normal((12, 12, 12)) * 0.05
    array = noise + np.einsum("i,j,k->ijk", *(rng.random(12) for _ in range(3)))
    tt, info = tlc.tt_cross(array, method="lsq", rank=2, val_size=100, max_evals=720,
                            random_state=0, return_info=True)
    assert info.stop_reason == "max_evals"
    assert info.val_error == min(info.val_errors[1:]) < info.val_errors[-1]
    assert info.best_sweep < info.n_sweeps
    assert "last complete sweep" not in tlc.tt_cross.__doc__
    assert "lowest held-out error" in tlc.tt_cross.__doc__.split("max_evals :")[1][:300]


def _parents(child, n_parent_modes, from_left):
    part = child[:, :n_parent_modes] if from_left else child[:, child.shape[1] - n_parent_modes:]
    return np.unique(part, axis=0).shape[0]


def test_max_slices_docs_say_where_a_set_is_chosen_freely():
    # The docs said every set extends at most max_slices parents; one of rank 4 over
    # modes of size 2 cannot (one parent extends 2 multi-indices), and is chosen freely
    # (slices.in_few_slices, a design decision): 4 parents at max_slices=1. They say so now.
    dense = np.random.default_rng(0).standard_normal((2,) * 6)
    indices = tlc.select_indices(dense, rank=[1, 2, 4, 4, 4, 2, 1], max_slices=1,
                                 method="als", random_state=0)
    widest = max(_parents(indices.left[k + 1], k, from_left=True) for k in range(1, 5))
    assert indices.rank[3] == 4 and widest > 1
    docs = tlc.tt_cross.__doc__.split("max_slices :")[1].split("checkpoint :")[0]
    assert "chosen freely" in " ".join(docs.split())


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
