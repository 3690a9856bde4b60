"""The held-out validation: read in two stages, the second for all but clear passes."""

import warnings

import numpy as np
import pytest
import tensorly as tl
from hypothesis import given
from hypothesis import strategies as st

import tensorly_cross as tlc
from tensorly_cross import FunctionTensor
from tensorly_cross.cross.stopping import FIRST_MIN, Validation
from tensorly_cross.lazy.cache import EvaluationCache

from .conftest import host
from .strategies import random_tt_cores, seeds, tt_function

SHAPE, RANK = (6, 7, 8, 5), (1, 2, 3, 2, 1)


def perturbed(seed, size):
    """A rank-(2, 3, 2) TT plus ``size`` times a fixed pseudo-random sign per entry, and
    the TT's cores: their held-out error is proportional to ``size``."""
    cores = random_tt_cores(SHAPE, RANK, seed)
    exact = tt_function(cores)

    def function(indices):
        signs = np.where(np.sin(indices @ np.array([12.9898, 78.233, 37.719, 4.581])) > 0,
                         1.0, -1.0)
        return exact(indices) + size * signs

    return cores, EvaluationCache(FunctionTensor(function, SHAPE))


@given(seed=seeds)
def test_a_clear_pass_is_decided_on_the_first_stage(seed):
    cores, cache = perturbed(seed, 0.0)
    validation = Validation(cache, 1000, np.random.default_rng(seed), tol=1e-6)
    assert validation.error(cores) < 1e-12
    assert validation.n_read == cache.counters.requested == FIRST_MIN


@given(seed=seeds)
def test_a_narrow_pass_reads_the_second_stage(seed):
    cores, cache = perturbed(seed, 1e-3)
    first = Validation(cache, 1000, np.random.default_rng(seed), tol=1.0).error(cores)
    # A tolerance just above the first stage's error: a pass, but not by a factor 100.
    validation = Validation(cache, 1000, np.random.default_rng(seed), tol=1.5 * first)
    error = validation.error(cores)
    assert validation.n_read == 1000
    full = Validation(cache, 1000, np.random.default_rng(seed), tol=0.0)
    assert full.n_read == 1000
    assert error == pytest.approx(full.error(cores), rel=1e-12)


@given(seed=seeds)
def test_a_miss_is_measured_on_every_entry(seed):
    cores, cache = perturbed(seed, 1e-3)
    validation = Validation(cache, 1000, np.random.default_rng(seed), tol=1e-9)
    assert validation.error(cores) > 1e-9
    assert validation.n_read == 1000


def test_without_budget_for_the_second_stage_the_first_decides():
    cores, cache = perturbed(0, 1e-3)
    first = Validation(cache, 1000, np.random.default_rng(0), tol=1.0).error(cores)
    cache.max_evals = cache.counters.unique + 10
    validation = Validation(cache, 1000, np.random.default_rng(0), tol=1.5 * first)
    assert validation.error(cores) == pytest.approx(first, rel=1e-12)
    assert validation.n_read == FIRST_MIN


@given(seed=seeds, n_channels=st.integers(2, 7))
def test_block_stages_read_whole_positions(seed, n_channels):
    cache = EvaluationCache(FunctionTensor(lambda idx: 1.0 + idx.sum(axis=1), (9, 8, n_channels)))
    validation = Validation(cache, 1000, np.random.default_rng(seed), block=n_channels, tol=1e-3)
    assert validation.n_read % n_channels == 0
    assert FIRST_MIN <= validation.n_read < FIRST_MIN + n_channels


def test_an_exact_recovery_counts_only_the_first_stage():
    cores = random_tt_cores(SHAPE, RANK, 3)
    tt, info = tlc.tt_cross(FunctionTensor(tt_function(cores), SHAPE), tol=1e-8,
                            random_state=3, return_info=True)
    _, with_all = tlc.tt_cross(FunctionTensor(tt_function(cores), SHAPE), tol=0.0,
                               n_iter_max=info.n_sweeps, random_state=3, return_info=True)
    assert info.val_errors[-1] < 1e-10
    # Same sweeps, 800 fewer held-out entries (up to those the sweeps read anyway).
    assert info.n_evals < with_all.n_evals - 500


@given(seed=seeds)
def test_a_confirmed_pass_adds_fresh_entries_once(seed):
    cores, cache = perturbed(seed, 1e-3)
    first = Validation(cache, 1000, np.random.default_rng(seed), tol=1.0).error(cores)
    validation = Validation(cache, 1000, np.random.default_rng(seed), tol=1.5 * first)
    validation.error(cores)
    confirmed = validation.confirm(cores)
    assert validation.n_read == len(validation.indices) == 2000
    assert len(np.unique(validation.indices[:1000], axis=0)) <= 1000
    # The confirmed error is the error on all 2000 entries, first and fresh ones together.
    exact = tt_function(cores)(validation.indices)
    values = exact + 1e-3 * np.where(
        np.sin(validation.indices @ np.array([12.9898, 78.233, 37.719, 4.581])) > 0, 1.0, -1.0)
    expected = np.linalg.norm(values - exact) / np.linalg.norm(values)
    assert confirmed == pytest.approx(expected, rel=1e-9)
    assert validation.confirm(cores) == pytest.approx(confirmed, rel=1e-12)
    assert validation.n_read == 2000


def test_a_clear_pass_needs_no_confirmation():
    cores, cache = perturbed(0, 0.0)
    validation = Validation(cache, 1000, np.random.default_rng(0), tol=1e-6)
    validation.confirm(cores)
    assert validation.n_read == FIRST_MIN


def test_a_narrow_pass_at_a_fixed_rank_is_confirmed_and_one_below_the_cap_is_not():
    cores, _ = perturbed(4, 1e-3)
    _, cache = perturbed(4, 1e-3)
    function = cache.lazy
    # The error of the exact-rank TT is the noise: a tolerance of twice it passes narrowly.
    noise = Validation(EvaluationCache(function), 1000, np.random.default_rng(9),
                       tol=1.0).error(cores)
    _, als = tlc.tt_cross(function, rank=list(RANK), tol=2 * noise, random_state=4,
                          return_info=True)
    assert als.stop_reason == "tol"
    assert als.n_heldout == 2000  # the fixed-rank cross is always at its cap
    _, tci = tlc.tt_cross(function, tol=2 * noise, max_rank=20, random_state=4,
                          return_info=True)
    assert tci.stop_reason == "tol" and max(tci.ranks[-1]) < 20
    assert tci.n_heldout == 1000 - 1  # all drawn but the start pivot, which left the sample


def _inverse_sum(indices):
    return 1.0 / (1.0 + indices.sum(axis=1))


@pytest.mark.parametrize("method", ["tci", "als"])
def test_without_held_out_entries_the_sweeps_stop_at_a_fixed_point(method):
    # val_size=0 used to run every one of n_iter_max=50 sweeps, re-reading the same fibers.
    shape = (8, 8, 8, 8)
    rank = None if method == "tci" else 3
    settings = dict(rank=rank, method=method, val_size=0, random_state=0, return_info=True)
    tt, info = tlc.tt_cross(FunctionTensor(_inverse_sum, shape), **settings)
    every, _ = tlc.tt_cross(FunctionTensor(_inverse_sum, shape), patience=None, **settings)
    assert info.stop_reason == "stalled" and info.n_sweeps < 12
    rng = np.random.default_rng(1)
    test = np.stack([rng.integers(8, size=500) for _ in shape], axis=1)

    def error(result):
        return np.linalg.norm(np.asarray(tlc.tt_entries(result, test)) - _inverse_sum(test))

    assert error(tt) <= 1.0001 * error(every)  # what 50 sweeps would have given


def test_a_tolerance_left_unchecked_is_reported_as_such():
    # With nothing left to hold out (the one draw was the start pivot), the warning said
    # "the TT returned is the starting one" after sweeps that had built it.
    tensor = FunctionTensor(_inverse_sum, (8, 8, 8, 8))
    with pytest.warns(tlc.ToleranceNotMetWarning, match="no held-out entry was left") as caught:
        _, info = tlc.tt_cross(tensor, method="tci", random_state=0, return_info=True,
                               val_size=1)
    assert "starting one" not in str(caught[0].message)
    assert info.n_heldout == 0 and info.stop_reason == "stalled"


@given(seed=seeds, method=st.sampled_from(["tci", "als"]))
def test_a_tensor_read_whole_is_judged_on_every_entry(seed, method):
    # Zero but at one corner: a full-rank ALS cross read all 256 entries and returned a
    # zero TT whose held-out error (on zeros) was 0, stop "tol"; a 1 x 1 tensor, whose
    # one draw was the start pivot, was reported as unchecked.
    for tensor in (np.full((1, 1), 3.0), np.zeros((4, 4, 4, 4))):
        tensor[(-1,) * tensor.ndim] = 3.0
        rank = None if method == "tci" else 16
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # rank clipped, unseen structure
            tt, info = tlc.tt_cross(tensor, method=method, rank=rank, random_state=seed,
                                    return_info=True)
        true_error = np.linalg.norm(host(tt.to_tensor()) - tensor) / np.linalg.norm(tensor)
        if info.n_evals == tensor.size:  # (a TCI that reads less warns of unseen structure)
            assert info.val_error == pytest.approx(true_error, abs=1e-12)
            assert info.stop_reason != "tol" or true_error <= 1e-6


def test_entries_at_the_edge_of_float64_are_refused_by_name():
    # 1e308 times a cosine: any sum of two entries overflows, and every fit crashed deep
    # inside (scipy's "array must not contain infs or NaNs", LinAlgError).
    grid = np.arange(5)
    tensor = 1e308 * np.cos(0.3 * np.add.outer(np.add.outer(grid, grid), grid))
    with pytest.raises(ValueError, match=r"the entry at \(0, 0, 0\) has modulus 1e\+308"):
        tlc.tt_cross(tensor, random_state=0)
    tlc.tt_cross(tensor / 10, random_state=0)  # 1e307: still fitted


def test_unseeded_generators_differ_from_call_to_call():
    from tensorly_cross._validation import check_random_state

    first, second = (check_random_state(None).integers(2**62, size=4) for _ in range(2))
    assert not np.array_equal(first, second)


@pytest.mark.parametrize("shape", [(1,), (1, 1), (1, 1, 1)])
def test_a_one_entry_tensor_meets_tol_without_a_warning(shape):
    # Nothing is left to hold out, but the cross read the whole tensor: its error is known
    # (0), so "tol not checked" would be false.
    values = np.full(shape, 3.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tt, info = tlc.tt_cross(values, tol=1e-10, method="tci", return_info=True)
    assert info.val_error == 0.0
    assert np.array_equal(host(tlc.tt_entries(list(tt), np.zeros((1, len(shape)), int))),
                          [3.0])


@pytest.mark.parametrize("method", ["auto", "lsq", "tci"])
def test_val_size_zero_on_a_tensor_read_whole_judges_it_exactly(method):
    # The least-squares cross read this small tensor whole and passed on its exact error,
    # then tried to round the TT on held-out entries that val_size=0 had not drawn.
    rng = np.random.default_rng(0)
    cores = [rng.standard_normal(shape) for shape in [(1, 6, 3), (3, 7, 3), (3, 8, 1)]]
    values = tl.tt_to_tensor(cores)
    tt, info = tlc.tt_cross(values, val_size=0, method=method, return_info=True)
    # TCI reads a part: without held-out entries it stops at a fixed point.
    assert info.stop_reason == ("stalled" if method == "tci" else "tol")
    assert np.linalg.norm(host(tl.tt_to_tensor(tt)) - values) <= 1e-10 * np.linalg.norm(values)
