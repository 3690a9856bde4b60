"""A cross that misses its tolerance after reading most of the tensor says that a TT-SVD
of everything would cost about as much: MNI152 T1 at tol=0.05 stalled after reading 43%
of its voxels, where the streaming TT-SVD met tol reading each once, 30x faster."""

import warnings

import numpy as np
import pytest

import tensorly_cross as tlc
from tensorly_cross.errors import ToleranceNotMetWarning


def _missed_message(array, **kwargs):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _, info = tlc.tt_cross(tlc.ArrayTensor(array), random_state=0, return_info=True,
                               **kwargs)
    missed = [w for w in caught if issubclass(w.category, ToleranceNotMetWarning)]
    assert len(missed) == 1
    return str(missed[0].message), info


def test_a_miss_after_reading_most_entries_names_a_tt_svd_of_everything():
    noise = np.random.default_rng(0).standard_normal((8, 8, 8))
    message, info = _missed_message(noise, tol=0.01, max_rank=3, method="tci")
    assert info.n_evals >= 0.25 * noise.size
    assert f"it read {info.n_evals / noise.size:.0%} of the entries" in message
    assert "streaming_tt_svd" in message


@pytest.mark.parametrize("seed", [0, 1])
def test_a_miss_after_reading_little_does_not(seed):
    noise = np.random.default_rng(seed).standard_normal((40, 40, 40))
    message, info = _missed_message(noise, tol=0.01, max_rank=2, method="tci")
    assert info.n_evals < 0.25 * noise.size
    assert "TT-SVD" not in message


@pytest.mark.parametrize("error, tol, shown", [(1.0000004e-6, 1e-6, "1.0000004e-06"),
                                               (0.0511, 0.05, "0.0511"),
                                               (0.05000000000000001, 0.05,
                                                "0.05000000000000001")])
def test_a_missed_error_is_shown_with_the_digits_that_tell_it_from_tol(error, tol, shown):
    # At 3 digits, an error just above 1e-06 read "held-out error 1e-06" in a message
    # saying that tol=1e-06 was not met.
    from tensorly_cross.cross.missed import warn_if_missed
    from tensorly_cross.cross.stopping import CrossInfo
    from tensorly_cross.options import cross_options

    options = cross_options((8, 8, 8), tol=tol, method="tci")
    info = CrossInfo(method="tci", val_errors=[error], ranks=[(1, 4, 4, 1)], n_sweeps=2,
                     best_sweep=1, stop_reason="max_time", n_heldout=999)
    with pytest.warns(ToleranceNotMetWarning, match=f"held-out error {shown} on"):
        warn_if_missed(options, info)
