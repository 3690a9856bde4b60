"""Helpers shared by several test files: volumes, views and functions they build."""

import numpy as np
import pytest
import tensorly as tl

import tensorly_cross as tlc
from tensorly_cross import FunctionTensor
from tensorly_cross.cross.bond import BondMatrix
from tensorly_cross.lazy.cache import EvaluationCache

# -- api.py (outside this audit's files): differentiable=True returns another TT -----------


def _smooth_noisy():
    grid = np.linspace(0, 1, 12)
    dense = 1 / (1 + np.add.outer(np.add.outer(grid, grid), grid)[..., None] + grid)
    return dense + 0.01 * np.random.default_rng(0).standard_normal(dense.shape)


# -- cross/prrlu.py ------------------------------------------------------------------------


def _bond(dense):
    """``dense`` read as a one-row-prefix bond matrix through a fresh cache."""
    dense = np.asarray(dense, dtype=np.float64)
    cache = EvaluationCache(FunctionTensor(lambda idx: tl.tensor(dense[idx[:, 0], idx[:, 1]]),
                                           dense.shape))
    empty = np.zeros((1, 0), dtype=np.int64)
    return BondMatrix(cache, empty, dense.shape[0], dense.shape[1], empty)


def _slow_copy(block):
    import time

    time.sleep(0.02)
    return block.copy()


def astype_view(dataset, dtype):
    """``dataset.astype(dtype)``, h5py's view; skips where it is h5py 3.8's ``AstypeWrapper``
    (our floor), which has no shape: refused as any object without one."""
    view = dataset.astype(dtype)
    if not hasattr(view, "shape"):
        pytest.skip(f"{type(view).__name__} (h5py < 3.9) is not an array view")
    return view


def _inverse_sum(d=5, n=16):
    grid = np.linspace(1.0, 2.0, n)
    return tlc.FunctionTensor.on_grid(lambda x: 1.0 / x.sum(axis=1), [grid] * d)


def ones_with(bright, scale=1.0):
    """A function of ones but ``value`` at ``(i, i, i)`` for each ``i: value`` of
    ``bright``, all times ``scale``: a tensor with a few bright entries."""

    def function(indices):
        values = np.ones(indices.shape[0])
        for index, value in bright.items():
            values[np.all(indices == index, axis=1)] = value
        return values * scale

    return function
