"""Audit s20 of the engine: a checkpoint read back under another view of the same data
(quantics digit order, transposed axes) gave a wrong TT reported as exact, a refined TT
below tol was warned of as a miss, and a fixed rank above an explicit max_rank was
returned without a word. Each test failed before its fix."""

import warnings

import numpy as np
import pytest

import tensorly_cross as tlc
from tensorly_cross.errors import CheckpointMismatchError


def _smooth_2d(indices):
    x, y = indices[:, 0] / 1024, indices[:, 1] / 1024
    return np.exp(-(x - 0.3) ** 2 * 20) * np.cos(3 * y) + 0.1


@pytest.mark.parametrize("first, second", [
    (dict(order="grouped"), dict(order="interleaved")),
])
def test_a_checkpoint_of_another_quantics_view_is_refused(tmp_path, first, second):
    function = tlc.FunctionTensor(_smooth_2d, (1024, 1024))
    path = tmp_path / "q.ckpt"
    tlc.tt_cross(tlc.QuanticsTensor(function, **first), tol=1e-8, random_state=0,
                 checkpoint=path)
    _, info = tlc.tt_cross(tlc.QuanticsTensor(function, **first), tol=1e-8, random_state=0,
                           checkpoint=path, return_info=True)
    assert info.n_restored > 0 and info.n_evals == info.n_restored  # the same view resumes
    with pytest.raises(CheckpointMismatchError, match="views=.*interleaved"):
        tlc.tt_cross(tlc.QuanticsTensor(function, **second), tol=1e-8, random_state=0,
                     checkpoint=path)


def test_a_checkpoint_of_a_quantics_view_of_another_shape_is_refused(tmp_path):
    path = tmp_path / "q.ckpt"
    square = tlc.FunctionTensor(_smooth_2d, (1024, 1024))
    tlc.tt_cross(tlc.QuanticsTensor(square), tol=1e-6, random_state=0, checkpoint=path)
    line = tlc.FunctionTensor(lambda i: _smooth_2d(np.stack(np.divmod(i[:, 0], 1024), 1)),
                              (2**20,))  # the same 20 binary digits
    with pytest.raises(CheckpointMismatchError, match="views="):
        tlc.tt_cross(tlc.QuanticsTensor(line), tol=1e-6, random_state=0, checkpoint=path)


def test_a_checkpoint_of_other_transposed_axes_is_refused(tmp_path):
    volume = np.random.default_rng(0).random((16, 16, 16))
    path = tmp_path / "t.ckpt"
    tlc.tt_cross(tlc.TransposedTensor(tlc.ArrayTensor(volume), (0, 2, 1)), rank=3,
                 random_state=0, checkpoint=path)
    with pytest.raises(CheckpointMismatchError, match="axes"):
        tlc.tt_cross(tlc.TransposedTensor(tlc.ArrayTensor(volume), (2, 1, 0)), rank=3,
                     random_state=0, checkpoint=path)


def _noisy_rational(indices):
    hashed = (indices * (np.arange(1, 5) * 73856093 % 1000003 + 7)).sum(1) % 1000003
    return 1.0 / (1.0 + indices.sum(1) / 10.0) + 0.02 * (hashed / 1000003.0 - 0.5)


def test_a_refined_tt_that_meets_tol_stops_on_tol_without_a_miss_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error", tlc.ToleranceNotMetWarning)
        tt, info = tlc.tt_cross(_noisy_rational, shape=(16,) * 4, tol=0.03, method="tci",
                                max_rank=6, random_state=0, return_info=True)
    assert info.refined and info.stop_reason == "tol"
    indices = np.random.default_rng(7).integers(0, 16, (20000, 4))
    exact = _noisy_rational(indices)
    error = np.linalg.norm(np.asarray(tlc.tt_entries(tt, indices)) - exact)
    assert error <= 0.03 * np.linalg.norm(exact)


def _separable(indices):
    return np.exp(-indices.sum(axis=1) / 20.0)


def test_a_fixed_rank_above_an_explicit_max_rank_is_refused():
    with pytest.raises(ValueError, match="rank=8 exceeds max_rank=3"):
        tlc.tt_cross(_separable, shape=(10,) * 4, method="tci", rank=8, max_rank=3)
    with pytest.raises(ValueError, match=r"exceeds max_rank=2"):
        tlc.select_indices(_separable, shape=(10,) * 4, rank=[1, 3, 3, 3, 1], max_rank=2)
    tt = tlc.tt_cross(_separable, shape=(10,) * 4, rank=3, max_rank=8, random_state=0)
    assert max(tt.rank) == 3  # within the cap: nothing to refuse


@pytest.mark.parametrize("method", ["auto", "als", "lsq"])
def test_a_clipped_rank_is_warned_of_at_the_callers_line(method):
    # It pointed inside the library (api.py), one frame short of the user's call.
    volume = np.random.default_rng(0).random((4, 5, 6))
    with pytest.warns(UserWarning, match="exceeds what the unfoldings") as record:
        tlc.tt_cross(volume, rank=20, method=method, random_state=0)
    assert record[0].filename == __file__
