"""Audit, session 31: objects and state reused across calls (results must not depend on
what an object saw before, under which backend, or with which budget)."""

import numpy as np
import pytest
import tensorly as tl

import tensorly_cross as tlc
from tensorly_cross._backend import to_host


def _volume():
    return np.random.default_rng(0).random((6, 7, 8))


def test_a_cache_filled_under_numpy_serves_and_grows_under_pytorch():
    pytest.importorskip("torch")
    volume = _volume()
    cache = tlc.EvaluationCache(tlc.lazy_tensor(volume))
    cache.evaluate([[0, 0, 0], [1, 1, 1]])
    with tl.backend_context("pytorch"):
        hits = cache.evaluate([[1, 1, 1], [0, 0, 0]])  # all cached
        assert tl.is_tensor(hits)  # a tensor of the active backend, not the NumPy buffer
        mixed = cache.evaluate([[0, 0, 0], [2, 3, 4]])  # failed in torch.cat
        assert tl.is_tensor(mixed)
        np.testing.assert_array_equal(to_host(mixed), volume[[0, 2], [0, 3], [0, 4]])
        assert cache.max_abs() == pytest.approx(max(volume[0, 0, 0], volume[1, 1, 1],
                                                    volume[2, 3, 4]))
        tt = tlc.tt_cross(cache, rank=2, method="als", random_state=0)
        assert all(tl.is_tensor(core) for core in tt)
    back = cache.evaluate([[2, 3, 4], [5, 6, 7]])  # and back under NumPy
    assert isinstance(back, np.ndarray)
    np.testing.assert_array_equal(back, volume[[2, 5], [3, 6], [4, 7]])
    assert cache.value_dtype() == np.float64
