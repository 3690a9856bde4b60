"""Parallel evaluation: a FunctionTensor's batches in chunks on an executor, values in order."""

import multiprocessing
import pickle
import threading
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tensorly_cross as tlc
from tensorly_cross import FunctionTensor, NonFiniteValueError
from tensorly_cross.lazy.parallel import chunk_bounds
from tensorly_cross.lazy.worker_groups import group_chunks

from ._helpers_shared import _same_tt
from .conftest import host
from .strategies import seeds
from .test_dask import loopback_cluster

GRID = np.linspace(1.0, 2.0, 32)


def inverse_sum(indices):
    """1 / sum(x) on [1, 2]^d: module level, so that a process pool can pickle it."""
    return 1.0 / GRID[indices].sum(axis=1)


def fails_beyond_30(indices):
    if (indices[:, 0] > 30).any():
        raise KeyError("no model for x0 > 30")
    return indices.sum(axis=1).astype(float)


@given(n_entries=st.integers(0, 200), n_chunks=st.integers(1, 9),
       chunk_size=st.one_of(st.none(), st.integers(1, 50)))
def test_chunks_cover_the_batch_in_order(n_entries, n_chunks, chunk_size):
    bounds = chunk_bounds(n_entries, n_chunks, chunk_size)
    covered = [i for start, stop in bounds for i in range(start, stop)]
    assert covered == list(range(n_entries))
    assert all(stop > start for start, stop in bounds)
    if chunk_size is None and n_entries:
        assert len(bounds) <= n_chunks
    elif chunk_size is not None:
        assert all(stop - start <= chunk_size for start, stop in bounds)


@given(chunk_size=st.one_of(st.none(), st.integers(1, 40)), seed=seeds)
def test_threads_give_the_serial_values_in_order(backend, chunk_size, seed):
    indices = np.random.default_rng(seed).integers(32, size=(137, 4))
    serial = FunctionTensor(inverse_sum, (32,) * 4).evaluate(indices)
    with ThreadPoolExecutor(4) as executor:
        parallel = FunctionTensor(inverse_sum, (32,) * 4, executor=executor,
                                  chunk_size=chunk_size).evaluate(indices)
    np.testing.assert_array_equal(host(parallel), host(serial))


def test_tt_cross_on_threads_is_the_serial_tt(backend):
    serial = tlc.tt_cross(FunctionTensor(inverse_sum, (32,) * 5), tol=1e-8, random_state=0)
    with ThreadPoolExecutor(3) as executor:
        parallel = tlc.tt_cross(FunctionTensor(inverse_sum, (32,) * 5, executor=executor),
                                tol=1e-8, random_state=0)
    _same_tt(parallel, serial)


def test_on_grid_runs_on_the_executor(backend):
    grids = [np.linspace(0.0, 1.0, 20)] * 4

    def function(points):
        return np.sin(points.sum(axis=1))

    serial = tlc.tt_cross(FunctionTensor.on_grid(function, grids), tol=1e-10, random_state=1)
    with ThreadPoolExecutor(2) as executor:
        lazy = FunctionTensor.on_grid(function, grids, executor=executor, chunk_size=7)
        parallel = tlc.tt_cross(lazy, tol=1e-10, random_state=1)
    _same_tt(parallel, serial)


def _process_pool(workers=2):
    """Worker processes started by spawn: forking the test process, which runs threads
    (zarr's, tqdm's, dask's), can leave a lock held in the child or, with OpenBLAS, hang
    the parent's next BLAS call (seen once: blas_thread_init waiting forever)."""
    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))


def test_process_pool_gives_the_serial_tt():
    serial = tlc.tt_cross(FunctionTensor(inverse_sum, (32,) * 4), tol=1e-6, random_state=2)
    with _process_pool() as executor:
        parallel = tlc.tt_cross(FunctionTensor(inverse_sum, (32,) * 4, executor=executor),
                                tol=1e-6, random_state=2)
    _same_tt(parallel, serial)


def test_dask_client_gives_the_serial_tt():
    distributed = pytest.importorskip("distributed")
    serial = tlc.tt_cross(FunctionTensor(inverse_sum, (32,) * 5), tol=1e-8, random_state=3)
    with loopback_cluster() as cluster, distributed.Client(cluster) as client:
        lazy = FunctionTensor(inverse_sum, (32,) * 5, executor=client, chunk_size=64)
        parallel, info = tlc.tt_cross(lazy, tol=1e-8, random_state=3, return_info=True)
        with pytest.raises(KeyError, match="x0 > 30") as error:
            FunctionTensor(fails_beyond_30, (32, 32), executor=client, chunk_size=2).evaluate(
                np.array([[1, 2], [3, 4], [31, 5]]))
    _same_tt(parallel, serial)
    assert info.function_seconds > 0
    assert "chunk 2 of 2: 1 multi-index, (31, 5)" in str(error.value.__notes__)


@pytest.mark.parametrize("make_executor", [lambda: ThreadPoolExecutor(3),
                                           _process_pool])
def test_a_failing_chunk_raises_the_users_error_naming_its_multi_indices(make_executor):
    lazy_indices = np.array([[1, 2], [3, 4], [5, 6], [31, 7], [8, 9]])
    with make_executor() as executor:
        lazy = FunctionTensor(fails_beyond_30, (32, 32), executor=executor, chunk_size=2)
        with pytest.raises(KeyError, match="x0 > 30") as error:
            lazy.evaluate(lazy_indices)
    note = " ".join(error.value.__notes__)
    assert "chunk 2 of 3" in note and "(5, 6) to (31, 7)" in note


def test_non_finite_values_name_their_multi_index_on_an_executor(backend):
    def function(indices):
        values = indices.sum(axis=1).astype(float)
        return np.where(indices[:, 1] == 7, np.nan, values)

    with ThreadPoolExecutor(3) as executor:
        lazy = FunctionTensor(function, (10, 10), executor=executor, chunk_size=3)
        with pytest.raises(NonFiniteValueError, match=r"multi-index \(4, 7\)") as error:
            lazy.evaluate(np.array([[0, 0], [1, 1], [2, 2], [3, 3], [4, 7], [5, 7]]))
    assert error.value.index == (4, 7)


def test_a_chunk_of_the_wrong_length_is_reported():
    with ThreadPoolExecutor(2) as executor:
        lazy = FunctionTensor(lambda idx: np.zeros(3), (10, 10), executor=executor,
                              chunk_size=2)
        with pytest.raises(ValueError, match=r"shape \(3,\) for a chunk of 2 multi-indices"):
            lazy.evaluate(np.zeros((4, 2), dtype=np.int64))


def test_bad_executor_and_chunk_size_are_rejected_by_name():
    with pytest.raises(TypeError, match="executor must be .* no submit method"):
        FunctionTensor(inverse_sum, (4, 4), executor=object())
    with pytest.raises(ValueError, match="chunk_size must be >= 1"):
        FunctionTensor(inverse_sum, (4, 4), chunk_size=0)
    with pytest.raises(TypeError, match="chunk_size must be an integer"):
        FunctionTensor.on_grid(np.sum, [GRID, GRID], chunk_size=2.5)


def test_info_splits_function_time_waiting_and_overhead():
    def slow(indices):
        time.sleep(0.002)
        return inverse_sum(indices)

    lazy = FunctionTensor(slow, (32,) * 4)
    _, info = tlc.tt_cross(lazy, tol=1e-6, random_state=0, return_info=True)
    # Each call sleeps 2 ms inside the function, which the wait encloses, which the
    # whole call encloses.
    assert info.function_seconds >= 0.002 * info.n_calls
    assert info.function_seconds <= info.wait_seconds <= info.total_seconds
    assert info.overhead_seconds == pytest.approx(info.total_seconds - info.wait_seconds)
    with ThreadPoolExecutor(4) as executor:
        lazy = FunctionTensor(slow, (32,) * 4, executor=executor, chunk_size=16)
        _, info = tlc.tt_cross(lazy, tol=1e-6, random_state=0, return_info=True)
    # Summed over the chunks, where they ran: at least 2 ms per chunk of each call.
    assert info.function_seconds >= 0.002 * info.n_calls
    assert info.wait_seconds <= info.total_seconds


def test_the_scheduler_is_asked_for_its_workers_once_a_second_not_per_batch(monkeypatch):
    distributed = pytest.importorskip("distributed")
    from tensorly_cross.lazy import parallel

    batch = np.arange(40, dtype=np.int64).reshape(20, 2) % 32
    # The count trusted for an hour here, not a second: on a busy machine the four batches
    # may take longer than a second, and the test is that they do not ask per batch.
    monkeypatch.setattr(parallel, "WORKER_COUNT_SECONDS", 3600.0)
    with loopback_cluster() as cluster, distributed.Client(cluster) as client:
        asked = []
        ask = client.nthreads
        monkeypatch.setattr(client, "nthreads", lambda: asked.append(1) or ask())
        lazy = FunctionTensor(inverse_sum, (32, 32), executor=client)
        for _ in range(4):
            np.testing.assert_allclose(host(lazy.evaluate(batch)), inverse_sum(batch))
        assert len(asked) == 1  # a round trip per batch cost a sixth of a batch's time
        monkeypatch.setattr(parallel, "WORKER_COUNT_SECONDS", -1.0)  # trusted no longer
        lazy.evaluate(batch)
        assert len(asked) == 2


def test_another_executor_is_asked_for_its_own_workers():
    sizes = []

    def recording(indices):
        sizes.append(indices.shape[0])
        return inverse_sum(indices)

    batch = np.zeros((12, 2), dtype=np.int64)
    with ThreadPoolExecutor(2) as two, ThreadPoolExecutor(3) as three:
        lazy = FunctionTensor(recording, (32, 32), executor=two)
        lazy.evaluate(batch)
        assert sorted(sizes) == [6, 6]
        sizes.clear()
        lazy.executor = three
        lazy.evaluate(batch)
        assert sorted(sizes) == [4, 4, 4]
    # Without its executor the tensor pickles again: the count did not keep the pool.
    lazy.executor = None
    lazy.function = inverse_sum
    assert pickle.loads(pickle.dumps(lazy)).evaluate(batch).shape == (12,)


@given(n_chunks=st.integers(0, 40),
       threads=st.lists(st.integers(1, 8), min_size=1, max_size=5))
def test_chunk_groups_cover_the_chunks_in_order_in_proportion_to_threads(n_chunks, threads):
    workers = [(f"worker-{number}", count) for number, count in enumerate(threads)]
    groups = group_chunks(n_chunks, workers)
    assert [i for *_, start, stop in groups for i in range(start, stop)] == list(range(n_chunks))
    total = sum(threads)
    for address, count, start, stop in groups:
        assert (address, count) in workers
        assert abs((stop - start) - n_chunks * count / total) < 1


def _threaded_cluster(n_workers, threads):
    """A LocalCluster of threads.

    Rarely (4 runs of these tests in 223, more often beside a busy process), a run whose
    tests all passed, exit status 0, then prints "Future exception was never retrieved ...
    TimeoutError: Timeout": distributed's, not a failure. The client's stream to the
    scheduler waits out its 10 ms send interval after its last message; when the cluster's
    event loop stops just as that wait times out, asyncio reports the timeout nobody read
    once the future is collected, at exit."""
    distributed = pytest.importorskip("distributed")
    return distributed.LocalCluster(n_workers=n_workers, threads_per_worker=threads,
                                    processes=False, dashboard_address="127.0.0.1:0",
                                    worker_dashboard_address="127.0.0.1:0")


# Module level: dask pickles a task's function even for a cluster of threads.
_FOUR_AT_ONCE = threading.Barrier(4, timeout=20)


def inverse_sum_four_at_once(indices):
    """inverse_sum, once four chunks are in it at once: run one after another, the barrier
    breaks."""
    _FOUR_AT_ONCE.wait()
    return inverse_sum(indices)


def test_a_dask_worker_runs_its_chunks_as_one_task_on_all_its_threads():
    distributed = pytest.importorskip("distributed")
    _FOUR_AT_ONCE.reset()
    batch = np.arange(32, dtype=np.int64).reshape(16, 2)
    with _threaded_cluster(1, 4) as cluster, distributed.Client(cluster) as client:
        lazy = FunctionTensor(inverse_sum_four_at_once, (32, 32), executor=client)
        with distributed.get_task_stream(client) as tasks:
            values = lazy.evaluate(batch)
    np.testing.assert_array_equal(host(values), inverse_sum(batch))
    assert len(tasks.data) == 1  # one task of 4 chunks, not 4 tasks


def test_each_dask_worker_gets_one_task_and_errors_count_chunks_across_workers():
    distributed = pytest.importorskip("distributed")
    batch = np.array([[i, i] for i in range(12)])
    batch[9, 0] = 31
    with _threaded_cluster(2, 2) as cluster, distributed.Client(cluster) as client:
        lazy = FunctionTensor(inverse_sum, (32, 32), executor=client)
        with distributed.get_task_stream(client) as tasks:
            np.testing.assert_array_equal(host(lazy.evaluate(batch)), inverse_sum(batch))
        assert sorted(task["worker"] for task in tasks.data) == sorted(
            cluster.scheduler_info["workers"])
        failing = FunctionTensor(fails_beyond_30, (32, 32), executor=client)
        with pytest.raises(KeyError, match="x0 > 30") as error:
            failing.evaluate(batch)
    # 4 chunks of 3 (two per worker); the fourth, on the second worker, holds (31, 9).
    assert "chunk 4 of 4: 3 multi-indices from (31, 9) to (11, 11)" in " ".join(
        error.value.__notes__)


def test_a_worker_process_runs_its_group_on_its_own_threads():
    distributed = pytest.importorskip("distributed")
    batch = np.random.default_rng(4).integers(32, size=(50, 3))
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=True,
                                  host="127.0.0.1", dashboard_address="127.0.0.1:0",
                                  worker_dashboard_address="127.0.0.1:0") as cluster:
        with distributed.Client(cluster) as client:
            lazy = FunctionTensor(inverse_sum, (32,) * 3, executor=client)
            with distributed.get_task_stream(client) as tasks:
                values = lazy.evaluate(batch)
    np.testing.assert_array_equal(host(values), inverse_sum(batch))
    assert len(tasks.data) == 1


def _within_a_worker(indices):
    """inverse_sum, after asking dask for the worker running it (module level: dask pickles
    the function)."""
    distributed = pytest.importorskip("distributed")
    assert distributed.get_worker() is not None
    return inverse_sum(indices)


class _HoldsALock(Exception):
    """An exception that does not pickle: dask sends it back as a plain Exception."""

    def __init__(self, message):
        super().__init__(message)
        self.lock = threading.Lock()


def _raises_unpicklable(indices):
    if (indices[:, 0] > 30).any():
        raise _HoldsALock("no model for x0 > 30")
    return inverse_sum(indices)


_RELEASE_SLOW_CHUNK = threading.Event()


def _first_slow_then_failing(indices):
    """The chunk holding row 0 waits (up to 60 s) for the test to let it go, then fails in
    its own way; the chunk holding x0 > 30 fails at once."""
    if indices[0, 0] == 0:
        released = _RELEASE_SLOW_CHUNK.wait(60)
        raise RuntimeError(f"the slow chunk ran to its end (released: {released})")
    return fails_beyond_30(indices)


@pytest.mark.parametrize("layout", [(1, 4), (2, 2)], ids=["1x4", "2x2"])
def test_every_thread_of_every_worker_runs_a_chunk_at_once(layout):
    distributed = pytest.importorskip("distributed")
    _FOUR_AT_ONCE.reset()
    batch = np.arange(32, dtype=np.int64).reshape(16, 2)
    # The workers of a cluster of threads share a process: one pool each, not one per size.
    with _threaded_cluster(*layout) as cluster, distributed.Client(cluster) as client:
        lazy = FunctionTensor(inverse_sum_four_at_once, (32, 32), executor=client)
        np.testing.assert_array_equal(host(lazy.evaluate(batch)), inverse_sum(batch))


def test_the_function_runs_in_its_workers_context():
    distributed = pytest.importorskip("distributed")
    batch = np.arange(16, dtype=np.int64).reshape(8, 2)
    with _threaded_cluster(1, 2) as cluster, distributed.Client(cluster) as client:
        lazy = FunctionTensor(_within_a_worker, (32, 32), executor=client)
        np.testing.assert_array_equal(host(lazy.evaluate(batch)), inverse_sum(batch))


def test_an_exception_dask_cannot_send_back_is_still_noted():
    distributed = pytest.importorskip("distributed")
    batch = np.array([[i, i] for i in range(8)])
    batch[6, 0] = 31
    with _threaded_cluster(2, 1) as cluster, distributed.Client(cluster) as client:
        lazy = FunctionTensor(_raises_unpicklable, (32, 32), executor=client)
        with pytest.raises(Exception, match="x0 > 30") as error:
            lazy.evaluate(batch)
    assert "chunk 2 of 2: 4 multi-indices from (4, 4) to (7, 7)" in " ".join(
        error.value.__notes__)


@pytest.mark.parametrize("on_dask", [False, True], ids=["threads", "dask"])
def test_a_failing_chunk_does_not_wait_for_a_slower_one_before_it(on_dask):
    distributed = pytest.importorskip("distributed") if on_dask else None
    _RELEASE_SLOW_CHUNK.clear()
    batch = np.array([[0, 1], [2, 3], [31, 4], [5, 6]])
    with (_threaded_cluster(1, 2) if on_dask else ThreadPoolExecutor(2)) as executor:
        client = distributed.Client(executor) if on_dask else executor
        try:
            lazy = FunctionTensor(_first_slow_then_failing, (32, 32), executor=client)
            with pytest.raises(KeyError, match="x0 > 30") as error:
                lazy.evaluate(batch)  # the slow chunk's RuntimeError, were it waited for
        finally:
            _RELEASE_SLOW_CHUNK.set()
            if on_dask:
                client.close()
    assert "chunk 2 of 2: 2 multi-indices from (31, 4) to (5, 6)" in " ".join(
        error.value.__notes__)


def test_a_function_that_does_not_pickle_is_named_as_such():
    distributed = pytest.importorskip("distributed")
    lock = threading.Lock()

    def holds_a_lock(indices):
        with lock:
            return inverse_sum(indices)

    with _threaded_cluster(1, 1) as cluster, distributed.Client(cluster) as client:
        lazy = FunctionTensor(holds_a_lock, (32, 32), executor=client)
        with pytest.raises(TypeError) as error:
            lazy.evaluate(np.zeros((3, 2), dtype=np.int64))
    note = " ".join(error.value.__notes__)
    assert "could not pickle the function" in note and "d scalars" not in note

    def says_pickle(indices):  # no executor, nothing pickled: the usual advice
        raise TypeError("cannot pickle this argument")

    with pytest.raises(TypeError) as error:
        FunctionTensor(says_pickle, (32, 32)).evaluate(np.zeros((3, 2), dtype=np.int64))
    assert "d scalars" in " ".join(error.value.__notes__)


_RUNNING = {"now": 0, "most": 0}
_RUNNING_CHANGED = threading.Condition()


def _counting_at_once(indices):
    """inverse_sum, counting the chunks in it at once. A chunk waits (10 s at most) until
    two have been in at once, however late a busy machine starts the second thread, then
    stays 50 ms, for a third to show up were one allowed to run."""
    with _RUNNING_CHANGED:
        _RUNNING["now"] += 1
        _RUNNING["most"] = max(_RUNNING["most"], _RUNNING["now"])
        _RUNNING_CHANGED.notify_all()
        _RUNNING_CHANGED.wait_for(lambda: _RUNNING["most"] >= 2, timeout=10)
    time.sleep(0.05)
    with _RUNNING_CHANGED:
        _RUNNING["now"] -= 1
    return inverse_sum(indices)


def test_a_group_runs_no_more_chunks_at_once_than_its_worker_has_threads():
    distributed = pytest.importorskip("distributed")
    from tensorly_cross.lazy.parallel import _TimedCall
    from tensorly_cross.lazy.worker_groups import run_group

    _RUNNING.update(now=0, most=0)
    chunks = [np.full((2, 2), number, dtype=np.int64) for number in range(3)]
    # A group sized for 3 threads that the scheduler placed on a worker of 2.
    with _threaded_cluster(1, 2) as cluster, distributed.Client(cluster) as client:
        results = client.submit(run_group, _TimedCall(_counting_at_once), chunks, 0, 3,
                                pure=False).result()
    assert [values.tolist() for values, _ in results] == [
        inverse_sum(chunk).tolist() for chunk in chunks]
    assert _RUNNING["most"] == 2


def _pool_of_this_worker(indices):
    from distributed import get_worker

    from tensorly_cross.lazy.worker_groups import _POOLS

    _POOLS_SEEN.append(_POOLS[get_worker()])
    return inverse_sum(indices)


_POOLS_SEEN = []


def test_closing_a_worker_shuts_its_chunk_pool_down():
    distributed = pytest.importorskip("distributed")
    _POOLS_SEEN.clear()
    with _threaded_cluster(1, 2) as cluster, distributed.Client(cluster) as client:
        lazy = FunctionTensor(_pool_of_this_worker, (32, 32), executor=client)
        np.testing.assert_array_equal(host(lazy.evaluate(np.eye(2, dtype=np.int64))),
                                      inverse_sum(np.eye(2, dtype=np.int64)))
        pool = _POOLS_SEEN[0]
        assert not pool._shutdown and pool._threads
    # distributed keeps the closed worker object alive; its pool must not outlive it.
    assert pool._shutdown
    assert not any(thread.is_alive() for thread in pool._threads)


class _WorkerBeingClosed:
    """What ``_pool`` sees of a dask worker: its executors, iterated by its close."""

    def __init__(self):
        self.state = type("State", (), {"nthreads": 2})()
        self.executors = {"default": ThreadPoolExecutor(1)}


def test_a_chunk_pool_made_while_the_worker_closes_does_not_break_its_close():
    from tensorly_cross.lazy.worker_groups import POOL_NAME, _pool

    worker = _WorkerBeingClosed()
    # Worker.close walks its executors with awaits in between; a group's first chunk
    # made the pool then, from a task thread, and the walk raised "dictionary changed
    # size during iteration".
    closing = iter(worker.executors.values())
    next(closing).shutdown()
    pool = _pool(worker, 2)
    assert list(closing) == []
    assert worker.executors[POOL_NAME] is pool
    assert _pool(worker, 2) is pool
    pool.shutdown()


class _Stop(BaseException):
    """Not an Exception: a dask worker does not report it."""


def _stops_at_7(indices):
    if (indices[:, 0] == 7).any():
        raise _Stop("stop at 7")
    return inverse_sum(indices)


def test_a_base_exception_in_a_dask_task_comes_back_instead_of_hanging():
    distributed = pytest.importorskip("distributed")
    batch = np.array([[i, i] for i in range(12)])
    with _threaded_cluster(1, 2) as cluster, distributed.Client(cluster) as client:
        lazy = FunctionTensor(_stops_at_7, (32, 32), executor=client)
        outcome = []
        # In a daemon thread: a hang fails the test after a minute, and does not block exit.
        caller = threading.Thread(target=lambda: outcome.append(_raised(lazy.evaluate, batch)),
                                  daemon=True)
        caller.start()
        caller.join(60)
        assert outcome, "the evaluation hung"
        error = outcome[0]
        assert isinstance(error, RuntimeError) and "raised _Stop: stop at 7" in str(error)
        np.testing.assert_array_equal(host(lazy.evaluate(batch[:3])), inverse_sum(batch[:3]))
    assert "chunks 1-2 of 2: 12 multi-indices from (0, 0) to (11, 11)" in " ".join(
        error.__notes__)


def _raised(call, *args):
    try:
        call(*args)
    except Exception as error:
        return error
    return None


def _shifts_in_place(indices):
    """NaN at the origin, found after shifting the multi-indices in place (1-based)."""
    indices += 1
    values = 1.0 / indices.sum(axis=1)
    values[(indices == 1).all(axis=1)] = np.nan
    return values


@pytest.mark.parametrize("executor", [None, "threads"])
def test_a_non_finite_value_names_its_multi_index_when_the_function_shifts_them(executor):
    """The NaN was reported at the multi-index the function had shifted in place,
    (1, 1, 1), not at (0, 0, 0), where it is."""
    with ThreadPoolExecutor(2) if executor else _no_executor() as pool:
        tensor = FunctionTensor(_shifts_in_place, (4, 4, 4), executor=pool, chunk_size=1)
        with pytest.raises(NonFiniteValueError, match=r"\(0, 0, 0\)") as raised:
            tensor.evaluate([[2, 2, 2], [0, 0, 0]])
    assert raised.value.index == (0, 0, 0)


class _no_executor:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def _sleepy(indices):
    time.sleep(0.02)
    return indices.sum(axis=1) * 1.0


def test_a_dask_client_closed_during_a_batch_says_so():
    """The batch's own error (its tasks cancelled) was replaced by the ClosedClientError of
    cancelling them on the closed client: "Client is closed. Can't send cancel-keys
    message", which named neither the batch nor what happened."""
    distributed = pytest.importorskip("distributed")
    with loopback_cluster() as cluster, distributed.Client(cluster) as client:
        lazy = FunctionTensor(_sleepy, (100, 100), executor=client, chunk_size=1)
        batch = np.stack([np.arange(100), np.arange(100)], axis=1)  # 50 rounds of 20 ms
        closer = threading.Timer(0.3, client.close)
        closer.start()
        try:
            with pytest.raises(Exception) as raised:
                lazy.evaluate(batch)
        finally:
            closer.join()
    # ClosedClientError is absent from older distributed releases (then nothing to rule out).
    assert not isinstance(raised.value, getattr(distributed.client, "ClosedClientError", ()))
    assert "client was closed" in " ".join(getattr(raised.value, "__notes__", []))
