"""A checkpoint resumed on stored data that is not the data it was written from."""

import warnings

import numpy as np
import pytest

import tensorly_cross as tlc


def _cross(volume, checkpoint):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return tlc.tt_cross(volume, rank=3, checkpoint=checkpoint, random_state=0,
                            return_info=True)


@pytest.mark.parametrize("kind", ["npy", "array"])
def test_a_checkpoint_of_other_stored_data_of_the_same_shape_is_refused(tmp_path, kind):
    # Resumed on another volume of the same shape (a script looping over subjects with
    # one checkpoint name), the run returned the first volume's TT as the second's: the
    # fingerprint binds the shape and the arguments, not the data.
    first, second = (np.random.default_rng(seed).random((10, 11, 12)) for seed in (0, 1))
    if kind == "npy":
        np.save(tmp_path / "a.npy", first)
        np.save(tmp_path / "b.npy", second)
        first, second = (tlc.open_volume(tmp_path / name) for name in ("a.npy", "b.npy"))
    checkpoint = tmp_path / "run.ckpt"
    _cross(first, checkpoint)
    with pytest.raises(tlc.CheckpointMismatchError, match="not written from this tensor's data"):
        _cross(second, checkpoint)


def test_a_checkpoint_of_the_same_stored_data_resumes_to_the_same_tt(tmp_path):
    volume = np.random.default_rng(0).random((10, 11, 12))
    np.save(tmp_path / "a.npy", volume)
    checkpoint = tmp_path / "run.ckpt"
    tt, info = _cross(tlc.open_volume(tmp_path / "a.npy"), checkpoint)
    again, resumed = _cross(tlc.open_volume(tmp_path / "a.npy"), checkpoint)
    assert resumed.n_restored == resumed.n_evals == info.n_evals  # nothing read anew
    for core, other in zip(tt, again, strict=True):
        np.testing.assert_array_equal(core, other)
