"""Tests of evaluation budgets (max_evals) and what a run says when a budget stops it."""

import multiprocessing
import warnings
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tensorly_cross as tlc

from ._helpers_shared import CROSS_CONFIG_IDS, CROSS_CONFIGS, _inverse_sum, _with_rank


def test_a_budget_too_small_for_a_sweep_says_how_much_a_sweep_reads():
    x = np.linspace(0, 1, 30)
    volume = np.exp(-np.add.outer(np.add.outer(x, x), x))
    volume = volume + 0.01 * np.random.default_rng(0).standard_normal(volume.shape)
    with pytest.raises(ValueError, match=r"the first sweep reads up to about \d+ more\): raise"):
        tlc.tt_cross(volume, tol=1e-3, max_evals=8000, method="lsq", random_state=0)


@pytest.mark.parametrize("method, extra", [("block", {"rank": 4}), ("als", {"rank": 4}),
                                           ("lsq", {})])
def test_the_budget_a_failed_sweep_names_is_enough(method, extra):
    """The block cross's estimate left out its channels: 480 named, 2,400 needed."""
    import re

    grid = np.linspace(0, 1, 20)
    tensor = np.exp(-np.add.outer(np.add.outer(np.add.outer(grid, grid), grid),
                                  np.linspace(0, 1, 5)))
    kwargs = dict(method=method, val_size=100, random_state=0, **extra)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match="raise max_evals") as caught:
            tlc.tt_cross(tensor, max_evals=300, **kwargs)
        already, more = map(int, re.search(r"already (\d+) evaluations; the first sweep reads "
                                           r"up to about (\d+) more", str(caught.value)).groups())
        tlc.tt_cross(tensor, max_evals=already + more, **kwargs)  # no ValueError


def _reads_past_its_budget(indices):
    """A function whose entries come from a lazy tensor of its own, read past a budget."""
    cache = tlc.EvaluationCache(tlc.lazy_tensor(np.ones((4, 4))), max_evals=1)
    return cache.evaluate([[0, 0], [1, 1]])


def test_a_worker_s_budget_error_reaches_the_caller_of_a_process_pool():
    # Before: the worker's EvaluationBudgetExceeded could not be unpickled, and the pool
    # broke ("BrokenProcessPool: a process ... terminated abruptly"), the error lost.
    context = multiprocessing.get_context("spawn")  # no fork of a threaded test process
    with ProcessPoolExecutor(1, mp_context=context) as executor:
        lazy = tlc.FunctionTensor(_reads_past_its_budget, (4, 4), executor=executor)
        with pytest.raises(tlc.EvaluationBudgetExceeded, match="max_evals=1") as caught:
            lazy.evaluate([[0, 0], [1, 1]])
    assert caught.value.needed == 2


def _cosine(shape):
    """An exact TT of rank 2: crosses recover it to round-off."""
    return tlc.FunctionTensor(lambda idx: np.cos(idx.sum(axis=1) / 9.0), shape)


# Mutant (api._sweep_size): the fibers of bond k counted without the left set's size
# (right[k - 1]): a budget too small for one sweep named 112 entries for a sweep of 192.
def test_a_budget_too_small_for_one_sweep_names_the_entries_a_sweep_reads():
    # ALS at rank 2 on 16^4: fibers 16*2 + 2*16*2 + 2*16*2 + 2*16 = 192.
    with pytest.raises(ValueError, match="reads up to about 192 more"):
        tlc.tt_cross(_cosine((16,) * 4), method="als", rank=2, val_size=0, max_evals=20,
                     random_state=0)


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


@pytest.mark.parametrize("config", CROSS_CONFIGS, ids=CROSS_CONFIG_IDS)
@settings(max_examples=5)
@given(shape=st.lists(st.integers(1, 9), min_size=2, max_size=4).map(tuple),
       val_size=st.integers(0, 40), extra=st.integers(1, 400), n_iter_max=st.integers(1, 5),
       seed=st.integers(0, 2**16))
def test_budgets_and_counts_are_those_of_the_function_itself(config, shape, val_size, extra,
                                                               n_iter_max, seed):
    # Counted here, by the function: distinct entries never above max_evals, and the
    # report's n_evals, n_calls and n_requested - n_cached are what it was asked.
    weights = np.random.default_rng(seed).standard_normal(len(shape))
    seen, calls = set(), [0]

    def function(indices):
        calls[0] += 1
        seen.update(map(tuple, indices.tolist()))
        return np.sin(indices @ weights / 3.0) + 1.0 / (1.0 + indices.sum(axis=1))

    max_evals = val_size + extra
    config = _with_rank(config, (1, 3, 1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            _, info = tlc.tt_cross(function, shape=shape, tol=0.0, max_evals=max_evals,
                                   val_size=val_size, n_iter_max=n_iter_max,
                                   random_state=seed, return_info=True, **config)
        except ValueError as error:  # a budget too small for the first sweep, by name
            assert "max_evals" in str(error)
            assert len(seen) <= max_evals
            return
    assert len(seen) <= max_evals
    assert info.n_evals == len(seen)
    assert info.n_calls == calls[0]
    assert info.n_requested - info.n_cached == info.n_evals
    # A handover to the least-squares cross counts its sweeps in the same n_iter_max.
    assert info.n_sweeps <= n_iter_max + info.refined


def test_the_run_s_own_budget_is_named_when_it_is_the_one_that_ran_out():
    cache = tlc.EvaluationCache(_inverse_sum(), max_evals=10**6)
    with pytest.raises(ValueError, match="one sweep") as raised:
        tlc.tt_cross(cache, rank=8, method="als", max_evals=1001, random_state=0)
    message = str(raised.value)
    assert message.startswith("max_evals=1001 is too small") and "EvaluationCache" not in message


def test_the_budget_error_keeps_its_limit_through_pickle():
    import pickle

    cache = tlc.EvaluationCache(tlc.lazy_tensor(np.ones((4, 4))), max_evals=3)
    with pytest.raises(tlc.EvaluationBudgetExceeded) as raised:
        cache.evaluate([[0, 0], [1, 1], [2, 2], [3, 3]])
    assert raised.value.max_evals == 3 and raised.value.needed == 4
    copy = pickle.loads(pickle.dumps(raised.value))
    assert (copy.max_evals, copy.needed, str(copy)) == (3, 4, str(raised.value))
