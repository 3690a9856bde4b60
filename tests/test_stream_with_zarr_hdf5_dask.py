"""Tests of the streaming TT-SVD: sketches, blocks, tolerances and its messages (needing zarr, h5py
and dask)."""

import os
import warnings

import numpy as np
import pytest
import tensorly as tl
from hypothesis import given
from hypothesis import strategies as st

import tensorly_cross as tlc
from tensorly_cross import DaskTensor, open_volume, streaming_tt_svd
from tensorly_cross.lazy import npy as lazy_npy
from tensorly_cross.lazy.sources import ChunkReadError
from tensorly_cross.lazy.transpose import TransposedTensor
from tensorly_cross.stream import blocks, streaming

from ._helpers_shared import save_npy
from .strategies import seeds

zarr = pytest.importorskip("zarr")
h5py = pytest.importorskip("h5py")
da = pytest.importorskip("dask.array")


def dense(tt):
    return np.asarray(tl.to_numpy(tl.tt_to_tensor(tt)))


@pytest.mark.parametrize("client", ["tcp://127.0.0.1:8786", 3, object()])
def test_a_client_that_is_not_a_client_is_refused_by_name(client):
    with pytest.raises(TypeError, match="client must be a dask.distributed.Client or None"):
        DaskTensor(np.ones((4, 4)), client=client)
    with pytest.raises(TypeError, match="client must be"):
        open_volume(np.ones((4, 4)), client=client)
    with pytest.raises(TypeError, match="client must be"):
        streaming_tt_svd(np.ones((4, 4)), client=client)


def test_a_closed_client_raises_naming_the_client(cluster):
    import distributed

    closed = distributed.Client(cluster)
    lazy = DaskTensor(da.ones((8, 8), chunks=4), client=closed)
    closed.close()
    with pytest.raises(ValueError, match="client .* has no workers"):
        lazy.evaluate(np.array([[7, 7]]))
    with pytest.raises(ValueError, match="client .* has no workers"):
        streaming_tt_svd(np.ones((4, 4)), client=closed)


# --- .npy files ---------------------------------------------------------------------------


@pytest.mark.parametrize("array", [np.array(2.0), np.zeros((3, 0, 4))], ids=["0-d", "empty"])
def test_a_npy_with_no_entries_is_refused_naming_the_file(tmp_path, array):
    path = save_npy(tmp_path / "v.npy", array)
    with pytest.raises(ValueError, match=r"v\.npy' holds an array of shape"):
        lazy_npy.NpyTensor(path)
    with pytest.raises(ValueError, match=r"v\.npy' holds an array of shape"):
        streaming_tt_svd(path)


# --- streaming TT-SVD ---------------------------------------------------------------------


@pytest.mark.parametrize("tol", [1.0, 1.5, 1e9])
def test_stream_refuses_a_tolerance_of_one_or_more(tol):
    with pytest.raises(ValueError, match=r"tol must be in \[0, 1\)"):
        streaming_tt_svd(np.ones((4, 4, 4)), tol=tol)


@pytest.mark.parametrize("return_info", ["yes", 1, None])
def test_stream_refuses_a_return_info_that_is_not_a_bool(return_info):
    with pytest.raises(TypeError, match="return_info must be True or False"):
        streaming_tt_svd(np.ones((4, 4)), return_info=return_info)


def test_stream_checks_max_rank_before_reading_anything():
    def unreadable(block):
        raise AssertionError("read before the arguments were checked")

    volume = da.ones((8, 8), chunks=4).map_blocks(unreadable, dtype=float)
    with pytest.raises(ValueError, match="max_rank must be >= 1"):
        streaming_tt_svd(volume, max_rank=0)


def test_stream_of_a_npy_rewritten_between_its_passes_raises(tmp_path, monkeypatch):
    volume = np.random.default_rng(0).standard_normal((40, 40, 40))
    path = save_npy(tmp_path / "v.npy", volume)
    read, calls = blocks.MemmapSource._read, []

    def rewrite_during_the_first_pass(self, slices):
        calls.append(slices)
        if len(calls) == 2:
            np.save(path, np.zeros_like(volume))
            os.utime(path, ns=(0, 0))
        return read(self, slices)

    monkeypatch.setattr(blocks.MemmapSource, "_read", rewrite_during_the_first_pass)
    monkeypatch.setattr(blocks, "_n_workers", lambda client: 1)  # no read races the rewrite
    with pytest.raises(ChunkReadError, match="changed after it was opened"):
        streaming_tt_svd(path, tol=1e-3, max_width=10, block_bytes=40 * 40 * 8 * 10)


def test_stream_sketches_no_wider_than_the_rank_of_each_unfolding():
    assert streaming._widths((2, 2**26), None, None) == (2, 2)
    assert streaming._widths((3, 5, 2**25), None, None) == (3, 5, 15)


def test_stream_of_a_long_last_mode_is_exact_at_the_unfoldings_rank(monkeypatch):
    # The core budget forces a sketch of the last mode; 14 columns (what it was narrowed
    # to) cannot hold the rank-15 range of its unfolding, 15 do.
    monkeypatch.setattr(streaming, "MAX_CORE_ENTRIES", 1000)
    volume = np.random.default_rng(0).standard_normal((3, 5, 4000))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tt, info = streaming_tt_svd(volume, tol=1e-6, random_state=0, return_info=True)
    assert info.widths == (3, 5, 15) and info.error <= 1e-6
    assert np.linalg.norm(dense(tt) - volume) <= 1e-6 * np.linalg.norm(volume)


@given(axes=st.permutations([0, 1, 2]), seed=seeds)
def test_stream_of_a_transposed_volume_is_the_transposed_volumes_tt(tmp_path_factory, axes, seed):
    volume = np.random.default_rng(seed).standard_normal((4, 5, 6))
    path = save_npy(tmp_path_factory.mktemp("t") / "v.npy", volume)
    view = TransposedTensor(open_volume(path), axes)
    tt = streaming_tt_svd(view, tol=1e-12)
    assert np.allclose(dense(tt), np.transpose(volume, axes), atol=1e-10)


def test_stream_refuses_a_computed_tensor_naming_the_volume_argument():
    function = tlc.FunctionTensor(lambda idx: idx.sum(axis=1) * 1.0, (3, 4, 5))
    with pytest.raises(TypeError, match="volume is a FunctionTensor, whose entries are computed"):
        streaming_tt_svd(function)
    with pytest.raises(TypeError, match="volume must be a path"):
        streaming_tt_svd([[1.0, 2.0]])


@pytest.mark.parametrize(("max_width", "says"), [
    (None, r"budget of 64 entries narrowed the sketches to widths \("),
    (1, r"raise max_width \(now 1\)"),
])
def test_stream_missing_tol_blames_what_narrowed_the_sketches(monkeypatch, max_width, says):
    # With max_width=None the warning said "raise max_width (now 1)": a setting the user
    # never gave, and raising it would not have helped (the core budget had narrowed them).
    monkeypatch.setattr(streaming, "MAX_CORE_ENTRIES", 64)
    volume = np.random.default_rng(0).standard_normal((2,) * 8)
    with pytest.warns(UserWarning, match=says):
        streaming_tt_svd(volume, tol=1e-6, max_width=max_width)
