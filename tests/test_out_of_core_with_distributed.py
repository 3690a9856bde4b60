"""Tests of out-of-core volumes on disk and on a Dask cluster (needing dask.distributed)."""

import numpy as np
import pytest

from tensorly_cross import DaskTensor, streaming_tt_svd

da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")
dask = pytest.importorskip("dask")


@pytest.fixture
def client_refreshing_often(loopback_cluster):
    """A client whose periodic refresh of its cached scheduler identity (which carries no
    per-worker entries) runs every millisecond, as a busy default client's every 2 s does
    now and then: the race that refresh loses or wins is then run often, not rarely."""
    with dask.config.set({"distributed.client.scheduler-info-interval": "1ms"}):
        with distributed.Client(loopback_cluster) as client:
            client.wait_for_workers(1)
            yield client


def test_a_cluster_with_workers_is_never_reported_without_any(client_refreshing_often):
    # Before: client_workers read client.scheduler_info(), whose cached identity the
    # periodic refresh overwrote with one listing no worker; about 4% of the reads saw
    # none, and a distributed cross (here a point read) raised "has no workers" mid-run
    # (seen once in about 100 crosses of a zarr file with the default 2 s refresh).
    lazy = DaskTensor(da.arange(64.0, chunks=8).reshape(8, 8), client=client_refreshing_often,
                      cache_bytes=0)
    for step in range(100):
        index = np.array([[step % 8, (3 * step) % 8]])
        assert lazy.evaluate(index)[0] == 8 * index[0, 0] + index[0, 1]


def test_the_stream_counts_the_workers_of_a_cluster_that_has_them(client_refreshing_often):
    volume = np.add.outer(np.arange(6.0), np.arange(5.0))
    for _ in range(60):
        tt = streaming_tt_svd(volume, rank=2, client=client_refreshing_often)
        assert len(tt) == 2


@pytest.fixture
def client(loopback_cluster):
    with distributed.Client(loopback_cluster) as connected:
        yield connected


def in_memory_hdf5_over_another_file(tmp_path, volume):
    """An HDF5 file held in memory (driver="core", no backing store) whose name is that
    of a file on disk holding other data (ones)."""
    h5py = pytest.importorskip("h5py")
    path = tmp_path / "volume.h5"
    with h5py.File(path, "w") as on_disk:
        on_disk.create_dataset("x", data=np.ones_like(volume), chunks=(3, 3, 3))
    in_memory = h5py.File(path, "w", driver="core", backing_store=False)
    in_memory.create_dataset("x", data=volume, chunks=(3, 3, 3))
    return in_memory["x"]


def test_an_in_memory_hdf5_file_is_not_read_from_the_disk_file_of_its_name(tmp_path, client):
    # Before: the workers reopened the dataset by its file's name and read the file on
    # disk (all ones): a distributed cross returned a rank-1 TT of ones, the stream
    # ranks (1, 1, 1, 1), both without a word. Now both are refused before any read.
    from tensorly_cross import open_volume, tt_cross

    volume = np.random.default_rng(0).standard_normal((6, 7, 5))
    dataset = in_memory_hdf5_over_another_file(tmp_path, volume)
    with pytest.raises(ValueError, match="client: .*held in memory"):
        tt_cross(open_volume(dataset, client=client), rank=2, random_state=0)
    with pytest.raises(ValueError, match="client: .*held in memory"):
        streaming_tt_svd(dataset, rank=2, client=client)
    # Without a client it is read in this process, from memory.
    crossed = tt_cross(open_volume(dataset), rank=2, random_state=0, n_iter_max=2)
    reference = tt_cross(volume, rank=2, random_state=0, n_iter_max=2)
    assert all(np.array_equal(a, b) for a, b in zip(reference, crossed, strict=True))
    reference = streaming_tt_svd(volume, rank=2, random_state=0)
    streamed = streaming_tt_svd(dataset, rank=2, random_state=0)
    assert all(np.allclose(a, b) for a, b in zip(reference, streamed, strict=True))


def test_a_zarr_zip_store_still_being_written_is_not_read_as_fill_values(tmp_path, client):
    # Before: the workers reopened the ZipStore by its path, whose zip file is complete only
    # once the store is closed: every chunk read as the fill value (0), and a distributed
    # cross or stream returned a rank-1 TT of zeros without a word. Now both are refused.
    zarr = pytest.importorskip("zarr")
    from zarr.storage import ZipStore

    from tensorly_cross import open_volume, tt_cross

    volume = np.random.default_rng(1).standard_normal((6, 7, 5))
    store = ZipStore(tmp_path / "volume.zip", mode="w")
    array = zarr.create_array(store, shape=volume.shape, chunks=(3, 3, 3), dtype="f8")
    array[...] = volume
    with pytest.raises(ValueError, match="client: .*ZipStore opened for writing"):
        tt_cross(open_volume(array, client=client), rank=2, random_state=0)
    with pytest.raises(ValueError, match="client: .*ZipStore opened for writing"):
        streaming_tt_svd(array, rank=2, client=client)
    crossed = tt_cross(open_volume(array), rank=2, random_state=0, n_iter_max=2)
    reference = tt_cross(volume, rank=2, random_state=0, n_iter_max=2)
    assert all(np.array_equal(a, b) for a, b in zip(reference, crossed, strict=True))
    store.close()
