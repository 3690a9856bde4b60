"""Tests of parallel evaluation: executors, process pools, Dask clients, chunks and deadlines
(needing zarr, h5py and dask)."""

import os
import pickle

import numpy as np
import pytest

from tensorly_cross import DaskTensor, open_volume
from tensorly_cross.lazy.sources import ChunkReadError, H5Source

from ._helpers_shared import save_npy

zarr = pytest.importorskip("zarr")
h5py = pytest.importorskip("h5py")
da = pytest.importorskip("dask.array")


# --- dask arrays --------------------------------------------------------------------------


def test_a_virtual_dask_array_is_wrapped_without_listing_its_chunks(monkeypatch):
    from dask.blockwise import Blockwise

    def refuse(self):
        raise AssertionError("a lazy layer was materialized")

    monkeypatch.setattr(Blockwise, "_dict", property(refuse))
    lazy = DaskTensor(da.zeros((2**20,) * 3, chunks=64))  # 2**42 chunks
    assert lazy.shape == (2**20,) * 3


def test_a_virtual_dask_array_reads_only_the_chunks_it_is_asked_for():
    # 4,096 chunks, not 2**42: dask 2024.12 (the floor) materialises the whole graph to
    # compute one block of it (24 GB and the OOM killer); newer dask does not.
    lazy = DaskTensor(da.zeros((2**10,) * 3, chunks=64))
    values = lazy.evaluate(np.array([[2**10 - 1] * 3, [5, 6, 7]]))
    assert np.array_equal(np.asarray(values), [0.0, 0.0]) and lazy.chunks_read == 2


def test_a_dask_block_of_the_wrong_shape_raises_naming_the_chunk():
    array = da.ones((10, 10), chunks=5).map_blocks(lambda block: block[:1], dtype=float)
    with pytest.raises(
        ChunkReadError,
        match=r"chunk \[5:10, 5:10\].*shape \(1, 5\).*"
        r"expected shape \(5, 5\)",
    ):
        DaskTensor(array).evaluate(np.array([[9, 9]]))


def test_a_npy_deleted_after_opening_raises_a_chunk_read_error(tmp_path):
    path = save_npy(tmp_path / "v.npy", np.ones((4, 4)))
    lazy = open_volume(path)
    os.remove(path)
    with pytest.raises(ChunkReadError, match="deleted after it was opened"):
        lazy.evaluate(np.array([[1, 1]]))


# --- HDF5 ---------------------------------------------------------------------------------


def test_h5_source_sent_to_a_worker_after_the_file_was_replaced_raises(tmp_path):
    path = str(tmp_path / "v.h5")
    with h5py.File(path, "w") as handle:
        handle.create_dataset("x", data=np.ones((4, 4)), chunks=(2, 2))
    source = open_volume(path).source
    other = str(tmp_path / "other.h5")
    with h5py.File(other, "w") as handle:
        handle.create_dataset("x", data=np.zeros((4, 4)), chunks=(2, 2))
    os.replace(other, path)
    on_worker = pickle.loads(pickle.dumps(source))  # reopens by name there
    assert isinstance(on_worker, H5Source)
    with pytest.raises(ChunkReadError, match="changed after it was opened"):
        on_worker.read((slice(0, 2), slice(0, 2)))


def test_a_client_for_a_npy_file_is_not_dropped_silently(tmp_path, loopback_cluster):
    # open_volume(path.npy, client=...) read in this process without a word.
    distributed = pytest.importorskip("distributed")
    path = save_npy(tmp_path / "v.npy", np.arange(24.0).reshape(2, 3, 4))
    with distributed.Client(loopback_cluster) as client:
        with pytest.warns(UserWarning, match=r"client is not used for 'v.npy'"):
            lazy = open_volume(path, client=client)
    assert np.asarray(lazy.evaluate([[1, 2, 3]]))[0] == 23.0
