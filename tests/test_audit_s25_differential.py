"""Audit s25: differential and property-based checks of the public API.

The same problem handed over in different forms (kinds of storage, views, backends) must
give the same TT; exact low-rank data must come back at its ranks.
"""

import numpy as np
import pytest
import tensorly as tl
from hypothesis import given, settings
from hypothesis import strategies as st

import tensorly_cross as tlc

from .strategies import seeds


def _random_tt_array(shape, ranks, seed, dtype=np.float64):
    rng = np.random.default_rng(seed)
    cores = [rng.standard_normal((ranks[k], n, ranks[k + 1])) for k, n in enumerate(shape)]
    if np.issubdtype(dtype, np.complexfloating):
        cores = [core + 1j * rng.standard_normal(core.shape) for core in cores]
    dense = cores[0].reshape(shape[0], -1)
    for core in cores[1:]:
        dense = (dense @ core.reshape(core.shape[0], -1)).reshape(-1, core.shape[2])
    return dense.reshape(shape).astype(dtype)


def _relative_error(tt, dense):
    approx = tl.to_numpy(tl.tt_to_tensor(tt)).astype(np.complex128)
    return np.linalg.norm(approx - dense) / np.linalg.norm(dense)


# Before: the least-squares cross (the default on stored data) kept the round-off singular
# values of its fits as rank whenever tol was below the data's precision: a rank-1 array
# crossed at tol=0 came back at ranks (1, 7, 42, 6, 1), no more accurate than at rank 1
# (TCI, on the same array: rank 1).
@pytest.mark.parametrize("dtype", [np.float64, np.complex128, np.float32])
def test_a_least_squares_cross_below_the_datas_precision_keeps_the_datas_ranks(dtype):
    tensor = _random_tt_array((7, 7, 7, 6), [1, 1, 1, 1, 1], seed=0, dtype=dtype)
    tt, info = tlc.tt_cross(tensor, tol=0.0, random_state=0, return_info=True)
    assert info.method == "lsq"
    assert tt.rank == (1, 1, 1, 1, 1)
    assert _relative_error(tt, tensor) < (1e-6 if dtype == np.float32 else 1e-13)


@settings(max_examples=15, deadline=None)
@given(shape=st.lists(st.integers(2, 7), min_size=3, max_size=4),
       inner=st.lists(st.integers(1, 3), min_size=3, max_size=3), seed=seeds,
       dtype=st.sampled_from([np.float64, np.complex128]))
def test_exact_low_rank_data_at_tol_zero_is_recovered_at_most_at_its_ranks(shape, inner, seed,
                                                                          dtype):
    d = len(shape)
    ranks = [1] + [min(r, int(np.prod(shape[:k + 1])), int(np.prod(shape[k + 1:])))
                   for k, r in enumerate(inner[: d - 1])] + [1]
    tensor = _random_tt_array(tuple(shape), ranks, seed % 2**16, dtype)
    for method in ("lsq", "tci"):
        tt = tlc.tt_cross(tensor, tol=0.0, method=method, random_state=seed)
        assert all(got <= true for got, true in zip(tt.rank, ranks, strict=True)), (
            method, tt.rank, ranks)
        assert _relative_error(tt, tensor) < 1e-10
