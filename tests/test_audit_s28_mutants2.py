"""Mutation audit (s28, second round): the argument checks (``_validation``), the value
checks of a lazy tensor (``lazy/base``) and the held-out stopping and rollback rules of the
sweep loop, each test written to kill a hand-made mutant that the existing tests let
survive (the comment above each test names it)."""

import numpy as np
import pytest

import tensorly_cross as tlc


def _cosine(indices):
    return np.cos(indices.sum(axis=1) / 9.0)


# Mutant (_validation.check_int): the bool test dropped, so that True passed as 1.
@pytest.mark.parametrize("flag", [True, np.True_])
def test_a_bool_count_is_refused_by_name(flag):
    with pytest.raises(TypeError, match="n_iter_max must be an integer, got .*bool"):
        tlc.tt_cross(_cosine, rank=2, shape=(5, 5, 5), n_iter_max=flag)


# Mutant (_validation.check_float): ``value != value`` dropped, so that a NaN tolerance
# passed every comparison with its minimum and was taken.
@pytest.mark.parametrize("name", ["tol", "max_time"])
def test_a_nan_tolerance_or_time_is_refused_as_not_finite(name):
    with pytest.raises(ValueError, match=f"{name} must be finite, got nan"):
        tlc.tt_cross(_cosine, rank=2, shape=(5, 5, 5), **{name: float("nan")})


# Mutant (_validation.check_random_state): ``random_state < -1``: a seed of -1 reached
# NumPy, whose message names no argument.
def test_a_negative_seed_is_refused_by_name():
    with pytest.raises(ValueError, match="random_state must be a non-negative int, got -1"):
        tlc.tt_cross(_cosine, rank=2, shape=(5, 5, 5), random_state=-1)


# Mutant (driver._diverged): ``error >= DIVERGENCE * lowest``: a sweep exactly at the
# factor was undone, though only one that *exceeds* it has diverged (see DIVERGENCE).
def test_a_sweep_exactly_at_the_divergence_factor_is_kept():
    from tensorly_cross.cross.driver import DIVERGENCE, _diverged

    assert not _diverged(DIVERGENCE * 0.5, [0.5, float("nan")])
    assert _diverged(np.nextafter(DIVERGENCE * 0.5, np.inf), [0.5, float("nan")])


# Mutant (_validation.check_bool): NumPy's bool refused (``isinstance(value, bool)`` only),
# though a flag read from an array is one.
def test_a_numpy_bool_flag_is_taken():
    tt, info = tlc.tt_cross(_cosine, rank=2, shape=(5, 5, 5), random_state=0,
                            return_info=np.True_)
    assert info.n_sweeps >= 1
    with pytest.raises(TypeError, match="return_info must be True or False, got str"):
        tlc.tt_cross(_cosine, rank=2, shape=(5, 5, 5), return_info="yes")
