"""Audit s32, mutants: behaviour of the last sessions' guards that no test pinned (a
mutant of each constant or comparison survived every test that covers it)."""

import warnings

import numpy as np
import pytest

from tensorly_cross import FunctionTensor
from tensorly_cross.cross.confidence import residual_carriers
from tensorly_cross.cross.stopping import Validation
from tensorly_cross.errors import UnseenStructureWarning
from tensorly_cross.lazy.cache import EvaluationCache

SHAPE = (40, 40, 40)


def _validation(function, tol=0.1, size=1000, seed=0):
    cache = EvaluationCache(FunctionTensor(function, SHAPE))
    return cache, Validation(cache, size, np.random.default_rng(seed), tol=tol)


def _unseen_warnings(validation, error, residuals=None):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        validation.warn_if_unseen(error, residuals=residuals)
    return [w for w in caught if issubclass(w.category, UnseenStructureWarning)]


def _ones(indices):
    return np.ones(indices.shape[0])


@pytest.mark.parametrize("ratio, warned", [(30.0, False), (150.0, True)])
def test_a_read_entry_warns_from_100_times_the_largest_held_out_one(ratio, warned):
    # UNSEEN_FACTOR: an entry read 30x the held-out ones is not a sign (a bright voxel the
    # TT recovers); 150x is. A factor 10 warned of the first.
    def bright(indices):
        values = np.ones(indices.shape[0])
        values[np.all(indices == 39, axis=1)] = ratio
        return values

    cache, validation = _validation(bright)
    assert validation.max_abs == 1.0  # the held-out draws missed the corner
    cache.evaluate(np.array([[39, 39, 39]]))
    assert cache.max_abs() == ratio
    assert bool(_unseen_warnings(validation, 0.0)) == warned


@pytest.mark.parametrize("carriers, warned", [(20, True), (40, False)])
def test_a_residual_carried_by_fewer_than_30_held_out_entries_is_a_sign(carriers, warned):
    # FEW_CARRIERS: a pass (error 0.05 at tol 0.1) whose held-out residual about 20
    # entries carry is warned of; about 40 carry one sure enough. Mutants at 10 and 100 of
    # the constant passed every test.
    _, validation = _validation(_ones)
    residuals = np.zeros(validation.n_read)
    residuals[:carriers] = 1.0
    assert residual_carriers(residuals) == pytest.approx(carriers)
    found = _unseen_warnings(validation, 0.05, residuals)
    assert bool(found) == warned
    if warned:
        assert "carry the residual" in str(found[0].message)


def _spiky(indices):
    """1 everywhere, 40 on the planes i = 0 and i = 1: a few held-out entries carry the
    held-out norm."""
    return np.where(indices[:, 0] < 2, 40.0, 1.0)


def _spikier(indices):
    """As :func:`_spiky`, the bright plane i = 0 alone."""
    return np.where(indices[:, 0] < 1, 40.0, 1.0)


@pytest.mark.parametrize("function, low, high, warned",
                         [(_spikier, 3, 10, True), (_spiky, 10, 30, False)])
def test_a_norm_carried_by_fewer_than_10_held_out_entries_is_a_sign(function, low, high,
                                                                     warned):
    # FEW_VALUE_CARRIERS: the held-out norm (the relative error's denominator) carried by
    # 3-10 entries is a sign, by 10-30 is not. Mutants at 3 and 30 passed every test.
    _, validation = _validation(function)
    count = residual_carriers(validation.values)
    assert low < count < high
    found = _unseen_warnings(validation, 0.05)
    assert bool(found) == warned
    if warned:
        assert "carry the held-out norm" in str(found[0].message)
