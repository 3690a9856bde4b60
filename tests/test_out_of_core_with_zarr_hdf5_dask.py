"""Tests of out-of-core volumes on disk and on a Dask cluster (needing zarr, h5py and dask)."""

import numpy as np
import pytest

import tensorly_cross as tlc
from tensorly_cross import DaskTensor, open_volume, streaming_tt_svd
from tensorly_cross.lazy import dask as lazy_dask
from tensorly_cross.lazy.quantics import QuanticsLayout, QuanticsTensor
from tensorly_cross.stream import streaming

from ._helpers_shared import save_npy

zarr = pytest.importorskip("zarr")
h5py = pytest.importorskip("h5py")
da = pytest.importorskip("dask.array")


def test_a_new_tensor_is_never_served_an_old_tensors_cached_chunks(tmp_path, client, monkeypatch):
    # CPython reuses the id() of a collected object: make every id collide, as they may.
    monkeypatch.setattr(lazy_dask, "id", lambda obj: 0, raising=False)
    path = str(tmp_path / "a.zarr")
    for version in range(3):
        array = zarr.create_array(path, shape=(4, 4), chunks=(2, 2), dtype="f8", overwrite=True)
        array[...] = version
        lazy = open_volume(path, client=client)
        assert np.asarray(lazy.evaluate(np.array([[0, 0]])))[0] == version


def test_worker_chunk_caches_are_bounded_in_number(client):
    for _ in range(3 * lazy_dask._MAX_WORKER_CACHES):
        DaskTensor(da.ones((8, 8), chunks=4), client=client).evaluate(np.array([[0, 0]]))
    assert len(lazy_dask._WORKER_CACHES) <= lazy_dask._MAX_WORKER_CACHES


def test_stream_that_cannot_fit_in_memory_raises_before_reading(monkeypatch):
    monkeypatch.setattr(streaming, "_physical_memory", lambda: 2**20)

    def unreadable(block):
        raise AssertionError("read although memory was known to be short")

    volume = da.ones((200, 200, 200), chunks=100).map_blocks(unreadable, dtype=float)
    with pytest.raises(MemoryError, match="needs about .* GiB.*Lower max_width"):
        streaming_tt_svd(volume, tol=1e-3)


# --- cost model and quantics layout ---------------------------------------------------------


@pytest.mark.parametrize("volume", [None, [[1, 2]], 3])
def test_choose_path_refuses_a_volume_without_a_shape_by_name(volume):
    with pytest.raises(TypeError, match="volume must be a lazy tensor"):
        tlc.choose_path(volume)


def test_choose_path_refuses_a_path_that_is_not_a_path():
    with pytest.raises(TypeError, match="path must be a str, bytes or os.PathLike"):
        tlc.choose_path(tlc.lazy_tensor(np.ones((4, 4))), path=3)


@pytest.mark.parametrize("oversample, rank", [(1e300, None), (1.5, 10**200)])
def test_choose_path_with_huge_oversampling_or_rank_reads_everything(tmp_path, oversample, rank):
    path = save_npy(tmp_path / "v.npy", np.ones((64, 64, 64)))
    choice = tlc.choose_path(open_volume(path), oversample=oversample, rank=rank)
    assert choice.method == "stream" and choice.cross_share == 1.0


def test_choose_path_does_not_claim_a_quantics_view_of_a_file_reads_at_no_cost(tmp_path):
    path = save_npy(tmp_path / "v.npy", np.ones((16, 16, 16)))
    choice = tlc.choose_path(QuanticsTensor(open_volume(path)))
    assert choice.method == "lsq" and "no storage cost" not in choice.reason
    assert "not estimated" in choice.reason


@pytest.mark.parametrize("shape", [8, None, 2.5])
def test_quantics_layout_refuses_a_shape_that_is_not_a_sequence(shape):
    with pytest.raises(TypeError, match="shape must be a sequence of ints"):
        QuanticsLayout.create(shape)
