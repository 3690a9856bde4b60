"""Held-out values on a few levels: every pass confirmed and judged on its upper bound."""

import warnings

import numpy as np
import pytest
import tensorly as tl
from hypothesis import given
from hypothesis import strategies as st

import tensorly_cross as tlc
from tensorly_cross.cross import stopping
from tensorly_cross.cross.stopping import LEVEL_SHARE, LEVELS_MIN, Validation, _on_levels
from tensorly_cross.lazy.cache import EvaluationCache

from .strategies import seeds

TOL = 1e-2


@given(size=st.integers(LEVELS_MIN, 3000), seed=seeds)
def test_continuous_values_are_not_levelled(size, seed):
    assert not _on_levels(np.random.default_rng(seed).standard_normal(size))


@given(size=st.integers(LEVELS_MIN, 3000), level=st.floats(-1e6, 1e6), seed=seeds)
def test_one_value_holding_the_share_is_levelled(size, level, seed):
    values = np.random.default_rng(seed).standard_normal(size)
    held = int(np.ceil(LEVEL_SHARE * size))
    values[:held] = level
    assert _on_levels(values)
    values[held - 1] = level + 1.0 + abs(level)  # one draw fewer is less than a tenth
    assert not _on_levels(values)


def test_a_small_sample_is_never_levelled():
    assert not _on_levels(np.zeros(LEVELS_MIN - 1))
    assert _on_levels(np.zeros(LEVELS_MIN))


def ball(n=32, centre=(0.43, 0.52, 0.61), radius=0.31):
    """A binary ball on an n^3 grid, as a function of multi-indices."""
    centre = np.asarray(centre) * (n - 1)

    def function(indices):
        return (np.linalg.norm(indices - centre, axis=1) <= radius * n).astype(np.float64)

    return function, (n, n, n)


@given(seed=seeds)
def test_a_mask_is_guarded_and_a_smooth_function_is_not(seed):
    function, shape = ball()
    mask = Validation(EvaluationCache(tlc.FunctionTensor(function, shape)), 1000,
                      np.random.default_rng(seed), tol=TOL)
    assert mask.levelled and mask.guarded and not mask.stored
    smooth = Validation(
        EvaluationCache(tlc.FunctionTensor(lambda x: np.sin(x @ [0.1, 0.2, 0.3]), shape)),
        1000, np.random.default_rng(seed), tol=TOL)
    assert not smooth.levelled and not smooth.guarded


def held_out_of_tol_stops(seeds):
    """The held-out sample sizes of the default cross's "tol" stops on the ball at ``TOL``."""
    function, shape = ball()
    sizes = []
    for seed in seeds:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _, info = tlc.tt_cross(tlc.FunctionTensor(function, shape), tol=TOL,
                                   random_state=seed, return_info=True)
        if info.stop_reason == "tol":
            sizes.append(info.n_heldout)
    return sizes


def test_a_ball_pass_rests_on_fresh_entries(monkeypatch):
    """Without the guard some seeds stopped on "tol" on the 999 held-out entries of one clear
    pass, all exact, with a true error of 7 to 13 tol (docs/guarantees.rst, bench_levels.py).
    With it every pass is confirmed on val_size fresh entries, and bounded. Which seeds
    over-claim depends on LAPACK's round-off (the floors' versions pivot differently), so
    the test checks the confirmation, which does not."""
    seeds = range(10)
    assert min(held_out_of_tol_stops(seeds), default=2 * 999) >= 2 * 999
    monkeypatch.setattr(stopping, "LEVEL_SHARE", np.inf)
    assert min(held_out_of_tol_stops(seeds)) < 2 * 999


def test_exact_recovery_of_levelled_integer_data_still_stops_on_tol():
    """x + y + z on a small grid: its values repeat (levelled), and the exact TT still
    passes (its residuals are zero, and so is their bound)."""
    shape = (6, 7, 8)
    tt, info = tlc.tt_cross(tlc.FunctionTensor(lambda x: x.sum(axis=1).astype(float), shape),
                            tol=1e-8, random_state=0, return_info=True)
    assert info.stop_reason == "tol"
    exact = np.indices(shape).sum(axis=0)
    np.testing.assert_allclose(np.asarray(tl.tt_to_tensor(tt)), exact, atol=1e-9)


@pytest.mark.parametrize("order", ["grouped", "interleaved"])
def test_quantics_views_of_a_mask_are_guarded(order):
    function, shape = ball(16)
    lazy = tlc.QuanticsTensor(tlc.FunctionTensor(function, shape), order=order)
    validation = Validation(EvaluationCache(lazy), 1000, np.random.default_rng(0), tol=TOL)
    assert validation.guarded
