"""Audit s25, a new user's walk through the docs: behaviour a docstring promises that a run
contradicted."""

import os

import numpy as np
import pytest

import tensorly_cross as tlc
from tensorly_cross.lazy.sources import ChunkReadError


def _rewrite(path, array):
    """Replace the file at ``path`` by a new one (another inode, size or time)."""
    os.remove(path)
    np.save(path, array)


def test_streaming_an_opened_npy_rewritten_since_raises_as_its_cross_does(tmp_path):
    """streaming_tt_svd(open_volume(x.npy)) reopened the file by path: a file rewritten in
    between, even with another shape, was streamed silently (a TT of shape 30^3 for a
    volume of shape 20^3), where tt_cross on the same object raised ChunkReadError."""
    path = str(tmp_path / "v.npy")
    np.save(path, np.random.default_rng(0).random((20, 20, 20)))
    volume = tlc.open_volume(path)
    _rewrite(path, np.ones((30, 30, 30)))
    with pytest.raises(ChunkReadError, match="rewritten after it was opened"):
        tlc.streaming_tt_svd(volume, tol=0.1)


def test_streaming_an_opened_npy_truncated_since_raises_chunk_read_error(tmp_path):
    """The docstring's ChunkReadError for a .npy changed after it was opened: a truncated
    file raised a ValueError from NumPy's memory map instead."""
    path = str(tmp_path / "v.npy")
    np.save(path, np.random.default_rng(0).random((40, 40, 40)))
    volume = tlc.open_volume(path)
    os.truncate(path, 200_000)
    with pytest.raises(ChunkReadError, match="truncated after it was opened"):
        tlc.streaming_tt_svd(volume, tol=0.1)


def test_streaming_an_unchanged_opened_npy_still_works(tmp_path):
    path = str(tmp_path / "v.npy")
    grid = np.linspace(0.0, 1.0, 12)
    np.save(path, np.add.outer(np.add.outer(grid, grid), grid))
    tt, info = tlc.streaming_tt_svd(tlc.open_volume(path), tol=1e-8, return_info=True)
    assert tt.rank == (1, 2, 2, 1) and info.error < 1e-8


def test_oversample_refused_for_tci_names_every_method_that_takes_it():
    """``tt_cross(f, oversample=2)`` on a function said the option "needs a fixed-rank
    method ('als' or 'block')": the least-squares cross, which oversamples without a rank,
    was left out, and nothing said that method='auto' had chosen TCI for want of a rank."""
    function = lambda idx: 1.0 / (1.0 + idx.sum(axis=1))  # noqa: E731
    with pytest.raises(ValueError, match=r"'lsq'.*method='auto' chose it.*pass rank="):
        tlc.tt_cross(function, shape=(8, 8, 8), oversample=2)
    with pytest.raises(ValueError, match=r"'lsq'") as caught:
        tlc.tt_cross(function, shape=(8, 8, 8), oversample=2, method="tci")
    assert "auto" not in str(caught.value)


def test_a_streaming_run_that_misses_tol_warns_tolerance_not_met():
    """The user guide's way to make a miss an error, ``warnings.simplefilter("error",
    ToleranceNotMetWarning)``, let a streaming TT-SVD stopped short of ``tol`` by
    ``max_rank`` through: it warned a plain UserWarning."""
    noise = np.random.default_rng(0).standard_normal((10, 10, 10))
    with pytest.warns(tlc.ToleranceNotMetWarning, match="max_rank") as caught:
        tlc.streaming_tt_svd(noise, tol=0.1, max_rank=2)
    missed = [w.message for w in caught if w.category is tlc.ToleranceNotMetWarning]
    assert missed[0].tol == 0.1 and missed[0].error > 0.1
