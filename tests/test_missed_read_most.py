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
