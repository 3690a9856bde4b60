"""Long tensor trains whose entries span many orders of magnitude: no sweep loses accuracy.

A random TT at d=80 has entries from 1e-1 to 1e13 along its modes. Three things went wrong
there (``benchmarks/bench_scale.py large-d``): the pivot cut, relative to the largest entry
seen anywhere, truncated the middle bonds (a sweep with held-out error 31); a random
column a million times smaller than its block ended a bond's pivot search; and the start
pivot, kept at every bond of the first sweep, was 1e-7 of its columns' largest entries
(interpolation coefficients up to 3e7: error 3e-7 after the first sweep). Cores with
slice scales 10**U(-s, s) reproduce this at d=20-30 in a fraction of a second.
"""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import tensorly_cross as tlc
from tensorly_cross.cross.prrlu import _greedy_lu, prrlu

from .conftest import host
from .strategies import seeds, tt_function
from .test_prrlu import low_rank_block


def scaled_tt(d, n, rank, spread, seed):
    """Cores whose slices are scaled by 10**U(-spread, spread): a wide dynamic range."""
    rng = np.random.default_rng(seed)
    ranks = [1] + [rank] * (d - 1) + [1]
    cores = [rng.standard_normal((ranks[k], n, ranks[k + 1]))
             * 10.0 ** rng.uniform(-spread, spread, size=(1, n, 1)) for k in range(d)]
    return tt_function(cores)


@settings(max_examples=8)
@given(d=st.sampled_from([20, 30]), spread=st.sampled_from([1.0, 2.0]), seed=seeds)
def test_no_sweep_loses_a_long_wide_range_tt(d, spread, seed):
    function = scaled_tt(d, 6, 3, spread, seed)
    tt, info = tlc.tt_cross(tlc.FunctionTensor(function, (6,) * d), tol=1e-8,
                            random_state=seed, return_info=True)
    assert max(info.val_errors) <= 1e-7  # before: sweeps at 0.5-1.2 on a third of the seeds
    test = np.random.default_rng(seed).integers(6, size=(2000, d))
    exact = function(test)
    assert np.linalg.norm(host(tlc.tt_entries(tt, test)) - exact) <= 1e-7 * np.linalg.norm(exact)
    parameters = (d - 2) * 6 * 9 + 2 * 6 * 3 - (d - 1) * 9
    # One sweep reads about 1.3x the parameters (before: up to 2.8x, in 2-4 sweeps); a
    # second sweep runs only where the first lands just above tol (d=20, seed 83: 1.6e-8).
    assert info.evals_per_sweep[0] - info.n_heldout <= 1.5 * parameters
    assert info.n_sweeps <= 2


@given(seed=seeds, tiny=st.sampled_from([1e-6, 1e-9, 1e-12]))
def test_a_column_too_small_to_tell_does_not_end_the_search(backend, seed, tiny):
    # Columns 20-29 are tiny: below any cut relative to the block, whatever their residual.
    scales = np.where(np.arange(30) < 20, 1.0, tiny)
    dense, _, matrix = low_rank_block(30, 30, 4, seed, column_scales=scales)
    rows, cols = prrlu(matrix, 1e-10 * np.abs(dense).max(), 64,
                       np.random.default_rng(seed), "column", start_cols=[0, 1, 2, 25])
    assert len(rows) == 4  # before: 3, the tiny column 25 ended the search
    approx = dense[:, cols] @ np.linalg.solve(dense[np.ix_(rows, cols)], dense[rows])
    assert np.abs(approx - dense).max() <= 1e-8 * np.abs(dense).max()


def test_kept_pivots_far_below_their_columns_are_dropped():
    block = np.array([[1e-7, 1.0], [1.0, 0.5], [0.3, 2.0]])
    # Row 0 is the only allowed (kept) row: its best entry, 1.0 in column 1, is half of
    # that column's largest residual (2.0); in column 0 it would be 1e-7 of 1.0.
    assert _greedy_lu(block, 0.0, 2, [0], max_growth=16) == ([0], [1])
    assert _greedy_lu(block[:, :1], 0.0, 2, [0], max_growth=16) == ([], [])
    assert _greedy_lu(block[:, :1], 0.0, 2, [0]) == ([0], [0])
