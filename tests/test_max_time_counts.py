"""A run that ``max_time`` stops inside a batch in chunks reports, in ``info.n_evals``, the
entries its finished chunks computed: the function ran them (and a checkpoint keeps them),
but the cache never stored them, and the count left them out."""

import time

import numpy as np
import pytest

import tensorly_cross as tlc

SHAPE = (10,) * 4
CHUNK = 8


def smooth(indices):
    return 1.0 / (3.0 + indices.sum(axis=1))


class SlowAfter:
    """``smooth``; the call numbered ``slow_call`` sleeps ``seconds``. It records every
    multi-index it computes."""

    def __init__(self, slow_call=None, seconds=0.0):
        self.slow_call, self.seconds = slow_call, seconds
        self.calls, self.seen = 0, set()

    def __call__(self, indices):
        self.calls += 1
        if self.calls == self.slow_call:
            time.sleep(self.seconds)
        self.seen.update(map(tuple, indices.tolist()))
        return smooth(indices)


def _cross(function, **kwargs):
    lazy = tlc.FunctionTensor(function, SHAPE, chunk_size=CHUNK)
    return tlc.tt_cross(lazy, tol=1e-10, random_state=0, return_info=True, **kwargs)


def _calls_of_first_sweep():
    """How many calls the uninterrupted run's first sweep made (it makes more sweeps)."""
    counting = SlowAfter()
    _cross(counting, n_iter_max=1)
    return counting.calls


@pytest.mark.filterwarnings("ignore::tensorly_cross.ToleranceNotMetWarning")
@pytest.mark.parametrize("checkpoint", [False, True])
def test_n_evals_counts_the_finished_chunks_of_a_stopped_batch(tmp_path, checkpoint):
    # Slow in the second sweep's first batch: the deadline passes inside it, after one
    # finished chunk, and its other chunks never start.
    function = SlowAfter(slow_call=_calls_of_first_sweep() + 1, seconds=1.0)
    extra = {"checkpoint": tmp_path / "run.ckpt"} if checkpoint else {}
    _, info = _cross(function, max_time=0.8, **extra)
    assert info.stop_reason == "max_time"
    assert info.n_evals == len(function.seen)
    assert info.function_seconds >= 1.0  # the slow chunk's time counts too


def test_max_time_inf_means_no_limit():
    tt, info = _cross(SlowAfter(), max_time=float("inf"))
    reference, _ = _cross(SlowAfter())
    assert info.stop_reason == "tol"
    assert [np.array_equal(a, b) for a, b in zip(tt, reference, strict=True)] == [True] * 4
