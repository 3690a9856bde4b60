"""Second-pass audit of the cross core (``tensorly_cross/cross``, the API and its options).

Each bug test failed before its fix; the property tests guard the paths audited.
"""

import warnings

import numpy as np
import pytest
import tensorly as tl

import tensorly_cross as tlc

from .strategies import random_tt_cores
from .test_audit_s13_engine import _smooth_noisy


def _dense(shape, ranks, seed):
    return tl.tt_to_tensor(random_tt_cores(shape, ranks, seed))


def _quiet_cross(tensor, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return tlc.tt_cross(tensor, return_info=True, **kwargs)


def _relative_error(tt, dense):
    return np.linalg.norm(tl.tt_to_tensor(tt) - dense) / np.linalg.norm(dense)


# -- stopping.py: a tensor read whole is judged on every entry, confirmed passes too ------


@pytest.mark.parametrize("shape, ranks, seed, options", [
    # A block cross whose held-out sample (read first) covers every entry: the pass at
    # 0.298 on the sample was "confirmed" on fresh draws after the exact error over every
    # entry (0.348) had been computed and dropped: stop_reason "tol" for a TT off by 0.348.
    ((5, 5, 3, 3), [1, 1, 3, 1, 1], 794, dict(method="block", rank=2)),
    # The least-squares cross's rounding was chosen and reported on 5 held-out draws
    # (0.015, then 0.0087) of a tensor it had read whole (exact error 0.030).
    ((5, 3), [1, 3, 1], 9, dict(method="lsq", val_size=5)),
    # TCI's second held-out stage completed the tensor: its error on the sample (0.294)
    # was reported instead of the exact 0.251.
    ((5, 5, 1, 3), [1, 2, 2, 2, 1], 738, dict(method="tci")),
])
def test_a_tensor_read_whole_reports_and_stops_on_its_exact_error(shape, ranks, seed,
                                                                  options):
    dense = _dense(shape, ranks, seed)
    tt, info = _quiet_cross(dense, tol=0.3, random_state=seed, **options)
    assert info.n_evals == dense.size  # every entry read: nothing is unknown
    exact = _relative_error(tt, dense)
    assert info.val_error == pytest.approx(exact, rel=1e-9, abs=1e-15)
    assert info.stop_reason != "tol" or exact <= 0.3


# -- _validation.py: a choice given as an array is refused by name ------------------------


@pytest.mark.parametrize("argument", ["method", "pivot_search"])
def test_a_choice_given_as_an_array_is_refused_by_its_name(argument):
    # NumPy's "truth value of an array ... is ambiguous" came out of check_choice.
    with pytest.raises(ValueError, match=f"{argument} must be one of"):
        tlc.tt_cross(np.ones((3, 4)), **{argument: np.array(["tci", "als"])})


# -- api.py: select_indices reports the TT that cross_interpolate rebuilds ---------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_select_indices_reports_the_tt_that_cross_interpolate_rebuilds(seed):
    # The search refined and rounded its least-squares TT (held-out 0.046, "tol" for
    # 0.05), which cross_interpolate cannot repeat: the TT rebuilt from the indices, at
    # the rounded ranks (1, 1, 1, 1, 1), was off by 0.088.
    dense = _smooth_noisy()
    indices, info = tlc.select_indices(dense, method="lsq", tol=0.05, max_rank=8,
                                       random_state=seed, return_info=True)
    rebuilt = tlc.cross_interpolate(dense, indices)
    true_error = _relative_error(rebuilt, dense)
    assert info.stop_reason == "tol" and true_error <= 0.05
    assert abs(true_error - info.val_error) <= 0.1 * true_error
    assert tuple(rebuilt.rank) == info.ranks[info.best_sweep - 1]


def test_a_dict_whose_ranks_exceed_its_index_sets_is_refused():
    # cross_interpolate rebuilt ranks (1, 4, 6, 1) while indices.rank said (1, 50, 50, 1).
    tensor = np.random.default_rng(0).standard_normal((4, 6, 5))
    indices = tlc.select_indices(tensor, method="lsq", tol=0.5, random_state=0)
    data = indices.to_dict()
    assert tlc.CrossIndices.from_dict(data).rank == indices.rank
    data["ranks"] = [1, 50, 50, 1]
    with pytest.raises(ValueError, match="ranks\\[1\\]=50 exceeds"):
        tlc.CrossIndices.from_dict(data)


def test_the_exact_error_asks_the_cache_for_every_entry_once():
    # Each check asked the cache for the whole tensor again: the least-squares trim, which
    # checks every rounding candidate, inflated info.n_requested (18,928 -> 33,392 on a
    # 12^3 run, the same evaluations).
    from tensorly_cross.cross.stopping import Validation
    from tensorly_cross.lazy.cache import EvaluationCache

    dense = np.random.default_rng(0).standard_normal((6, 5, 4))
    cache = EvaluationCache(tlc.lazy_tensor(dense))
    cache.evaluate(np.indices(dense.shape).reshape(3, -1).T)
    validation = Validation(cache, 50, np.random.default_rng(0))
    cores = tl.tt_tensor.TTTensor(tl.decomposition.tensor_train(dense, [1, 6, 4, 1])).factors
    before = cache.counters.requested
    first = validation.exact_error(cores)
    asked = cache.counters.requested - before
    assert asked == dense.size and first < 1e-10
    assert validation.exact_error(cores) == first
    assert cache.counters.requested - before == asked
