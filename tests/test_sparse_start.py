"""Fixed-rank and least-squares starts on mostly zero tensors: through the largest held-out
entry, and a warning when the TT found is no better than zero."""

import warnings

import numpy as np
import pytest
import tensorly as tl
from hypothesis import given, settings
from hypothesis import strategies as st

import tensorly_cross as tlc
from tensorly_cross.cross.init import SPARSE_SHARE, random_indices, through_largest
from tensorly_cross.cross.stopping import Validation
from tensorly_cross.errors import ToleranceNotMetWarning
from tensorly_cross.lazy.cache import EvaluationCache

from .strategies import seeds


def _box(shape, seed):
    """A rank-1 tensor: positive on a random box of 2-4 indices per mode, 0 elsewhere."""
    rng = np.random.default_rng(seed)
    factors = []
    for n in shape:
        factor = np.zeros(n)
        width = int(rng.integers(2, 5))
        start = int(rng.integers(0, n - width + 1))
        factor[start:start + width] = rng.uniform(0.5, 2.0, width)
        factors.append(factor)
    return np.einsum("i,j,k->ijk", *factors)


def _error(tt, tensor):
    return np.linalg.norm(tl.tt_to_tensor(tt) - tensor) / np.linalg.norm(tensor)


@settings(max_examples=15, deadline=None)
@given(seed=seeds, method=st.sampled_from(["als", "lsq"]),
       oversample=st.sampled_from([None, 2.0]))
def test_a_box_is_recovered_or_warned_never_returned_zero_silently(seed, method, oversample):
    """Random sets missed a 4x4x6 box in a 32^3 volume on 17 of 20 seeds: the zero TT, no
    warning. Now the start goes through the largest held-out entry; where the held-out
    sample misses the box too, a warning says so."""
    tensor = _box((24, 24, 24), seed)
    extra = {} if oversample is None or method == "lsq" else {"oversample": oversample}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tt = tlc.tt_cross(tensor, rank=1, method=method, random_state=seed, **extra)
    warned = any(issubclass(w.category, ToleranceNotMetWarning) for w in caught)
    assert warned or _error(tt, tensor) < 1e-8


@pytest.mark.parametrize("seed", range(10))
def test_the_dropin_recovers_a_matrix_with_one_nonzero_entry(seed):
    """TensorLy's drop-in returned the zero TT for half the seeds (no info to notice it)."""
    matrix = np.zeros((7, 4))
    matrix[3, 1] = 2.6
    factors = tlc.tensor_train_cross(matrix, rank=[1, 1, 1], random_state=seed)
    np.testing.assert_allclose(tl.tt_to_tensor(factors), matrix, atol=1e-12)


def _validation(tensor, seed=0):
    cache = EvaluationCache(tlc.ArrayTensor(tensor))
    return Validation(cache, 1000, np.random.default_rng(seed), tol=1e-4)


def test_dense_tensors_keep_their_random_start():
    """Below SPARSE_SHARE zeros the start is as before: results on data where random sets
    work do not move (the exactly low-rank sum(x)**3 of TensorLy's own test included)."""
    grid = np.arange(11) / 10
    tensor = np.add.outer(np.add.outer(grid, grid), grid) ** 3
    validation = _validation(tensor)
    start = random_indices(tensor.shape, [1, 4, 4, 1], np.random.default_rng(1))
    before = [block.copy() for block in start.right]
    through_largest(start, validation)
    assert validation.zero_share < SPARSE_SHARE
    assert all(np.array_equal(a, b) for a, b in zip(before, start.right, strict=True))


def test_sparse_tensors_start_through_the_largest_held_out_entry():
    tensor = np.zeros((24, 24, 24))
    tensor[4:10, 10:16, 2:8] = np.random.default_rng(0).uniform(1, 2, (6, 6, 6))
    validation = _validation(tensor)
    pivot = validation.largest.copy()
    start = through_largest(random_indices(tensor.shape, [1, 3, 3, 1],
                                           np.random.default_rng(1)), validation)
    assert validation.zero_share >= SPARSE_SHARE
    for k, block in enumerate(start.right):
        assert np.any(np.all(block == pivot[k + 1:], axis=1))
    assert not np.any(np.all(validation.indices == pivot, axis=1))  # no longer held out


def test_a_fixed_rank_tt_no_better_than_zero_warns():
    """A 4x4x6 box in 32^3: on some seeds the first held-out stage misses it, so the start
    stays random and reads zeros only, and the confirming stage sees the box: the zero TT,
    held-out error 1. That warns; every other seed recovers the box."""
    tensor = np.zeros((32, 32, 32))
    tensor[10:14, 5:9, 20:26] = 1.0
    warned = 0
    for seed in range(20):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            tt = tlc.tt_cross(tensor, rank=1, method="als", random_state=seed)
        messages = [str(w.message) for w in caught
                    if issubclass(w.category, ToleranceNotMetWarning)]
        if messages:
            assert "no better than the zero tensor" in messages[0]
            warned += 1
        else:
            assert _error(tt, tensor) < 1e-8
    assert warned  # the path is exercised (3 of 20 seeds here)


def test_tci_with_a_rank_cap_warns_when_it_misses_tol():
    """rank= is TCI's per-bond cap: a miss warns as with max_rank (it did not)."""
    grid = np.linspace(1.0, 2.0, 16)
    function = tlc.FunctionTensor.on_grid(lambda x: 1.0 / x.sum(axis=1), [grid] * 5)
    with pytest.warns(ToleranceNotMetWarning, match="raise rank"):
        tlc.tt_cross(function, rank=1, method="tci", tol=1e-8, random_state=0)
