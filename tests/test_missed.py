"""ToleranceNotMetWarning: issued exactly when a rank-adaptive run returns a TT above tol."""

import warnings

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tensorly_cross as tlc
from tensorly_cross import ToleranceNotMetWarning

from .strategies import seeds


def run(tensor, **kwargs):
    """(tt, info, the ToleranceNotMetWarnings issued)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tt, info = tlc.tt_cross(tensor, return_info=True, **kwargs)
    return tt, info, [w for w in caught if w.category is ToleranceNotMetWarning]


def low_rank_plus_noise(seed, noise, size=10):
    rng = np.random.default_rng(seed)
    factors = [rng.standard_normal((size, 2)) for _ in range(3)]
    tensor = np.einsum("ir,jr,kr->ijk", *factors)
    return tensor + noise * np.abs(tensor).max() * rng.standard_normal(tensor.shape)


@given(seed=seeds, noise=st.sampled_from([0.0, 1e-3, 0.1, 1.0]),
       tol=st.sampled_from([1e-8, 1e-2, 0.3]), max_rank=st.integers(1, 4),
       method=st.sampled_from(["auto", "tci", "lsq"]))
def test_warns_exactly_when_the_returned_error_is_above_tol(seed, noise, tol, max_rank,
                                                             method):
    tensor = low_rank_plus_noise(seed, noise)
    _, info, missed = run(tensor, tol=tol, max_rank=max_rank, method=method,
                          random_state=seed, val_size=200)
    assert bool(missed) == (info.val_error > tol)
    if missed:
        assert missed[0].message.error == info.val_error and missed[0].message.tol == tol
        assert f"tol={tol:g} not met" in str(missed[0].message)


def test_the_message_names_the_cap_reached_and_the_least_squares_cross():
    tensor = low_rank_plus_noise(0, 1.0)
    _, info, missed = run(tensor, tol=1e-3, max_rank=2, method="tci", random_state=0)
    message = str(missed[0].message)
    assert "raise max_rank (the ranks reached max_rank=2)" in message
    assert 'method="lsq"' in message and f"stopped: {info.stop_reason}" in message


def test_the_message_names_the_budget_that_stopped_the_run():
    tensor = low_rank_plus_noise(0, 1.0, size=40)
    _, info, missed = run(tensor, tol=1e-3, method="tci", max_rank=8, random_state=0,
                          max_evals=4000)
    assert info.stop_reason == "max_evals" and info.n_heldout
    assert "not met" in str(missed[0].message) and "raise max_evals" in str(missed[0].message)


def test_a_budget_that_stops_the_run_before_any_check_is_warned_about():
    tensor = low_rank_plus_noise(0, 1.0, size=40)
    _, info, missed = run(tensor, tol=1e-3, method="tci", max_rank=8, random_state=0,
                          max_evals=1100)
    assert info.stop_reason == "max_evals" and not info.n_heldout
    message = missed[0].message
    assert "tol=0.001 not checked" in str(message) and np.isnan(message.error)


def test_a_fixed_rank_run_has_no_tolerance_to_miss():
    tensor = low_rank_plus_noise(0, 1.0)
    _, info, missed = run(tensor, rank=2, tol=1e-6, random_state=0)
    assert info.val_error > 1e-6 and not missed


def test_a_run_the_callback_stopped_is_not_warned_about():
    tensor = low_rank_plus_noise(0, 1.0)
    _, info, missed = run(tensor, tol=1e-6, max_rank=2, method="tci", random_state=0,
                          callback=lambda tt, info: True)
    assert info.stop_reason == "callback" and info.val_error > 1e-6 and not missed


def test_a_run_that_meets_tol_is_silent():
    with warnings.catch_warnings():
        warnings.simplefilter("error", ToleranceNotMetWarning)
        tt = tlc.tt_cross(low_rank_plus_noise(0, 0.0), tol=1e-8, random_state=0)
    assert max(tt.rank) == 2


@pytest.mark.parametrize("val_size", [0])
def test_without_held_out_entries_there_is_no_error_to_judge(val_size):
    tensor = low_rank_plus_noise(0, 1.0)
    _, _, missed = run(tensor, tol=1e-6, max_rank=2, method="tci", random_state=0,
                       val_size=val_size)
    assert not missed
