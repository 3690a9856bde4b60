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
