"""Review s27 of the day's changes to the streaming TT-SVD, the cost model, the CLI and nn:
regressions (or incomplete fixes) they left. Each test failed before its fix."""

import threading
import time

import numpy as np
import pytest

import tensorly_cross as tlc

from .test_audit_s27_stream import _slow_copy


def test_choose_path_models_a_volume_transposed_twice_as_once():
    # A 4096^3 zarr store (256 GiB), transposed once, is a cross (6% of its chunks);
    # transposed twice (the identity) it became "an array in memory is read whole at no
    # storage cost": the stream, reading it all. storage_geometry followed one view only.
    zarr = pytest.importorskip("zarr")
    store = zarr.create(shape=(4096,) * 3, chunks=(32,) * 3, dtype="f4",
                        store=zarr.storage.MemoryStore())
    volume = tlc.open_volume(store)
    once = tlc.TransposedTensor(volume, (1, 0, 2))
    twice = tlc.TransposedTensor(once, (1, 0, 2))
    expected = tlc.choose_path(volume, rank=8)
    assert expected.method == "lsq"
    for view in (once, twice):
        choice = tlc.choose_path(view, rank=8)
        assert (choice.method, choice.cross_share) == (expected.method, expected.cross_share)
    # The composed permutation: mode m of the view is mode axes[m] of the store.
    chunks = (8, 16, 32)
    skewed = tlc.open_volume(zarr.create(shape=(64, 64, 64), chunks=chunks, dtype="f4",
                                         store=zarr.storage.MemoryStore()))
    view = tlc.TransposedTensor(tlc.TransposedTensor(skewed, (1, 0, 2)), (0, 2, 1))
    from tensorly_cross.cost import storage_geometry

    # View mode m is the inner view's mode (0, 2, 1)[m], the store's (1, 0, 2)[that].
    assert storage_geometry(view).unit_shape == (chunks[1], chunks[2], chunks[0])
    assert view.shape == skewed.shape  # all 64: the units alone tell the orders apart


def test_a_stream_whose_client_is_closed_raises_the_run_s_error_not_the_cancel_s():
    # The cancellation added for a failed block asked the closed client to cancel: its
    # ClosedClientError ("Can't send cancel-keys message") replaced the run's own error
    # (the futures cancelled, reason: the client closed).
    distributed = pytest.importorskip("distributed")
    dask_array = pytest.importorskip("dask.array")
    volume = dask_array.from_array(np.ones((400, 8, 8)), chunks=(1, 8, 8)).map_blocks(
        _slow_copy)
    with distributed.LocalCluster(processes=False, n_workers=1, threads_per_worker=2,
                                  dashboard_address="127.0.0.1:0",
                                  worker_dashboard_address="127.0.0.1:0") as cluster:
        client = distributed.Client(cluster)
        timer = threading.Timer(0.5, client.close)
        timer.start()
        try:
            with pytest.raises(BaseException) as caught:
                tlc.streaming_tt_svd(volume, client=client, block_bytes=8 * 64)
        finally:
            timer.join()
            client.close()
    assert "cancel-keys" not in str(caught.value)
    assert "cancelled" in str(caught.value)


def test_dense_embedding_names_an_array_given_for_padding():
    # The nn settings were moved to check_choice, but DenseEmbedding's padding kept
    # "padding not in PADDINGS": an array failed with NumPy's "truth value of an array ...
    # is ambiguous", which names neither the argument nor its options.
    pytest.importorskip("torch")
    from tensorly_cross.nn import DenseEmbedding, default_encoder

    with pytest.raises(ValueError, match="padding must be one of 'reflect'"):
        DenseEmbedding(default_encoder(3, 2), padding=np.array(["reflect", "edge"]))


class _LoggedSlowArray:
    """A sliceable array that appends a byte to a log file per read and takes 20 ms: the
    log counts the reads wherever the workers run them."""

    def __init__(self, values, log):
        self.values, self.log = values, log
        self.shape, self.dtype, self.ndim = values.shape, values.dtype, values.ndim

    def __getitem__(self, key):
        with open(self.log, "ab") as handle:
            handle.write(b"x")
        time.sleep(0.02)
        return self.values[key]


def test_a_failed_stream_on_a_cluster_stops_the_reads_of_the_other_tasks(tmp_path):
    # fdeb2ab cancelled the other tasks' futures, but a cancelled task's thread runs on: a
    # task folds a whole group of blocks, and the other group was read to its end (a NaN in
    # the first block of a store: 151 of 156 blocks read after it). Its test read a
    # dask array, whose reads stopped with the futures. Now each task stops at its next
    # block once it is cancelled.
    distributed = pytest.importorskip("distributed")
    import os

    log = str(tmp_path / "reads.log")
    values = np.ones((10000, 8, 8), dtype=np.float32)  # 2.5 MiB sent: 78 blocks a task
    values[0, 0, 0] = np.nan
    volume = _LoggedSlowArray(values, log)
    with distributed.LocalCluster(processes=False, n_workers=1, threads_per_worker=2,
                                  dashboard_address="127.0.0.1:0",
                                  worker_dashboard_address="127.0.0.1:0") as cluster, \
            distributed.Client(cluster) as client:
        with pytest.raises(tlc.NonFiniteValueError, match=r"\(0, 0, 0\)"):
            tlc.streaming_tt_svd(volume, client=client, block_bytes=8 * 64)
        time.sleep(1.0)  # 50 blocks' time
        assert os.path.getsize(log) < 20


def test_the_dtype_remedy_does_not_say_the_error_was_below_a_tol_met_at_round_off(tmp_path,
                                                                                  capsys):
    # Since the CLI takes the stream's verdict (c0aab1d), --tol 1e-17 is met on a constant
    # volume at an error of 1.8e-16; rounded to float32 it is a "dtype" miss whose remedy
    # said "Its error was below --tol before its cores were rounded", which it was not.
    from tensorly_cross import cli

    path, out = str(tmp_path / "c.npy"), str(tmp_path / "c.tt.npz")
    np.save(path, np.full((4, 5, 6), 3.0, dtype=np.float32))
    code = cli.main(["compress", path, "-o", out, "--tol", "1e-17", "--method", "stream",
                     "-q"])
    err = capsys.readouterr().err
    metadata = tlc.load_tt(out)[1]
    assert code == 3 and metadata["stop_reason"] == "dtype"
    assert metadata["error"] - metadata["rounding_error"] > 1e-17  # not below it
    assert "was below --tol" not in err and "--dtype float64" in err
