"""Audit (session 31, review 3): the excused tightenings of the least-squares cross, the
check of the cores a cross returns, and EvaluationCache.largest."""

import warnings

import numpy as np
import pytest
import tensorly as tl

import tensorly_cross as tlc


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


def test_a_sweep_of_nan_cores_after_a_finite_one_is_not_the_best_state():
    # A NaN held-out error counted as "lower" (meant for runs without held-out entries,
    # whose errors are all NaN): a sweep of NaN cores after finite ones became the state
    # returned, and the result check (9ef399f) then refused a run that had a finite TT.
    from tensorly_cross.cross.stopping import BestSweep

    best = BestSweep()
    best.offer(2, 0.1, "finite")
    best.offer(3, float("nan"), "nan cores")
    assert (best.state, best.sweep, best.error) == ("finite", 2, 0.1)
    best.offer(4, 0.2, "worse")  # a NaN did not reset what later sweeps must beat
    assert best.state == "finite"
    best.offer(5, 0.05, "better")
    assert (best.state, best.sweep) == ("better", 5)
    # Without held-out entries every error is NaN: the latest sweep stays the best.
    unheld = BestSweep()
    for sweep in (2, 3):
        unheld.offer(sweep, float("nan"), sweep)
    assert unheld.state == 3


def test_a_finite_error_after_nan_ones_becomes_the_best_state():
    # val_size=0: NaN errors until the tensor is read whole, then exact ones.
    from tensorly_cross.cross.stopping import BestSweep

    best = BestSweep()
    best.offer(2, float("nan"), "unheld")
    best.offer(3, 0.3, "exact")
    assert best.state == "exact"
