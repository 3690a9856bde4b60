"""``max_time`` stops a batch in flight when the batch runs in chunks (on an executor, or
serially with a ``chunk_size``): before, a batch started just before the deadline ran to
its end, hours late for an expensive function. The finished chunks stay in the
checkpoint, and a rerun resumes from them."""

import errno
import multiprocessing
import os
import sys
import threading
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import pytest

import tensorly_cross as tlc
from tensorly_cross.errors import MaxTimeReached
from tensorly_cross.lazy.checkpoint import CheckpointStore
from tensorly_cross.lazy.chunk_result import LateChunks

from .test_checkpoint import assert_same_tt

SHAPE = (12,) * 4
CHUNK = 40


def smooth(indices):
    return 1.0 / (4.0 + indices.sum(axis=1))


_GATES = {}  # key -> state: shared by the copies dask pickles (even on a cluster of threads)


class Gated:
    """``smooth``, whose calls after the first ``free`` wait for :meth:`open` (at most
    ``limit`` seconds); it counts the calls that started and those that returned. Its
    state lives at module level, so that an executor's pickled copies share it."""

    def __init__(self, free, limit=60.0):
        self.key, self.free, self.limit = uuid.uuid4().hex, free, limit
        _GATES[self.key] = {"release": threading.Event(), "lock": threading.Lock(),
                            "started": 0, "returned": 0}

    def __call__(self, indices):
        state = _GATES[self.key]
        with state["lock"]:
            state["started"] += 1
            gated = state["started"] > self.free
        if gated:
            state["release"].wait(self.limit)
        with state["lock"]:
            state["returned"] += 1
        return smooth(indices)

    def open(self):
        _GATES[self.key]["release"].set()

    def all_returned(self):
        state = _GATES[self.key]
        return state["returned"] == state["started"]


def _cross(lazy, **kwargs):
    return tlc.tt_cross(lazy, tol=1e-8, random_state=0, return_info=True, **kwargs)


def _resumed_matches_uninterrupted(path):
    counted = []
    rerun = tlc.FunctionTensor(lambda idx: (counted.append(len(idx)), smooth(idx))[1], SHAPE)
    tt, info = _cross(rerun, checkpoint=path)
    reference, _ = _cross(tlc.FunctionTensor(smooth, SHAPE))
    assert_same_tt(tt, reference)
    return info


def test_an_executor_batch_stops_at_the_deadline_and_keeps_its_finished_chunks(tmp_path):
    path = tmp_path / "run.ckpt"
    function = Gated(free=3)
    with ThreadPoolExecutor(2) as executor:
        lazy = tlc.FunctionTensor(function, SHAPE, executor=executor, chunk_size=CHUNK)
        try:
            with pytest.raises(MaxTimeReached, match="still to finish"):
                _cross(lazy, max_time=0.5, checkpoint=path)
            # Raised while the gated chunks still wait: the batch was not waited for.
            assert not function.all_returned()
        finally:
            function.open()
    info = _resumed_matches_uninterrupted(path)
    assert info.n_restored >= 3 * CHUNK - 1  # the chunks that finished (one may be short)


class _SlowAfter:
    """``smooth``, whose calls from the ``fast + 1``-th on sleep ``seconds``; it records
    the multi-indices of each call that returned."""

    def __init__(self, fast, seconds):
        self.fast, self.seconds, self.lock = fast, seconds, threading.Lock()
        self.started, self.returned = 0, []

    def __call__(self, indices):
        with self.lock:
            self.started += 1
            slow = self.started > self.fast
        if slow:
            time.sleep(self.seconds)
        with self.lock:
            self.returned.append(indices.copy())
        return smooth(indices)


def _rerun_counting(path, again):
    rerun = tlc.FunctionTensor(lambda idx: (again.extend(map(tuple, idx.tolist())),
                                            smooth(idx))[1], SHAPE)
    return _cross(rerun, checkpoint=path)


@pytest.mark.parametrize("pool_running", [False, True])
def test_chunks_still_running_at_the_deadline_go_to_the_checkpoint(tmp_path, pool_running):
    # The chunks running when max_time passed cannot be stopped: they finished in the
    # background and their values were dropped, so a resumed run evaluated them again
    # (minutes each for an expensive function). They are now stored once they finish;
    # a rerun in this process while they still run waits for them.
    path = tmp_path / "run.ckpt"
    function = _SlowAfter(fast=3, seconds=0.4)
    again = []
    with ThreadPoolExecutor(2) as executor:
        lazy = tlc.FunctionTensor(function, SHAPE, executor=executor, chunk_size=CHUNK)
        with pytest.raises(MaxTimeReached, match="still to finish"):
            _cross(lazy, max_time=0.2, checkpoint=path)
        if pool_running:
            tt, info = _rerun_counting(path, again)
    if not pool_running:  # the pool was shut down (its running chunks waited for)
        tt, info = _rerun_counting(path, again)
    first = {tuple(row) for chunk in function.returned for row in chunk.tolist()}
    assert function.started > function.fast  # some chunks were running at the deadline
    assert not first & set(again)  # no entry the first run computed was computed again
    assert info.n_restored == len(first)
    assert_same_tt(tt, _cross(tlc.FunctionTensor(smooth, SHAPE))[0])


def _open_in_thread(path, timeout=5.0):
    """A CheckpointStore opened on ``path`` in a thread given ``timeout`` seconds: the
    store, or None if it is still waiting (a daemon thread: the test does not hang)."""
    opened = []
    thread = threading.Thread(target=lambda: opened.append(CheckpointStore(path, SHAPE, {})),
                              daemon=True)
    thread.start()
    thread.join(timeout)
    return opened[0] if opened else None


def test_a_late_chunk_whose_closing_sync_fails_does_not_hang_a_rerun(tmp_path, monkeypatch):
    # The last late chunk closes the store; a failed fsync there (a full disk, NFS) left
    # the store marked as still waiting, and a rerun in the process waited forever.
    path = tmp_path / "run.ckpt"
    store = CheckpointStore(path, SHAPE, {})
    future = Future()
    future.set_running_or_notify_cancel()
    store.keep_late(LateChunks([(np.zeros((2, 4), dtype=np.int64), future)]))
    store.close()  # put off: the chunk still runs

    def failing_fsync(descriptor):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    future.set_result((np.array([1.0, 2.0]), 0.0))  # its callback runs here, and closes
    monkeypatch.undo()
    rerun = _open_in_thread(path)
    assert rerun is not None  # it did not wait for ever
    assert len(rerun) == 2  # the late entries were written before the sync failed
    rerun.close()


def _open_once_told(path, told):
    """In a forked child: open the checkpoint at ``path`` once ``told`` is set."""
    told.wait(10)
    CheckpointStore(path, SHAPE, {}).close()


@pytest.mark.skipif(sys.platform != "linux", reason="fork start method")
def test_a_forked_child_does_not_wait_for_its_parents_late_chunks(tmp_path):
    # A child forked while a store waited for late chunks inherited the store as waiting,
    # but not the executor's threads that finish it: once the parent's chunks had
    # finished (the file closed and unlocked), a rerun in the child waited for ever.
    path = tmp_path / "run.ckpt"
    store = CheckpointStore(path, SHAPE, {})
    future = Future()
    future.set_running_or_notify_cancel()
    store.keep_late(LateChunks([(np.zeros((1, 4), dtype=np.int64), future)]))
    store.close()  # put off
    context = multiprocessing.get_context("fork")
    told = context.Event()
    child = context.Process(target=_open_once_told, args=(path, told), daemon=True)
    child.start()
    try:
        future.set_result((np.array([1.0]), 0.0))  # stored; the store closes
        told.set()
        child.join(5)
        assert child.exitcode == 0  # not still waiting
    finally:
        if child.is_alive():
            child.kill()
            child.join(5)


def test_checkpoints_opened_in_threads_at_once_are_not_refused(tmp_path):
    # Each store opened looked through the process's open stores for late chunks, while
    # another thread added its own: "RuntimeError: Set changed size during iteration"
    # failed runs of a thread pool over subjects, each with its checkpoint.
    errors, kept = [], []
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # thread switches as often as can be

    def open_many(worker):
        for number in range(150):
            try:
                store = CheckpointStore(tmp_path / f"{worker}-{number}.ckpt", (3, 3), {})
            except Exception as error:  # noqa: BLE001 -- collected for the assert
                errors.append(error)
                continue
            store.close()
            kept.append(store)  # alive: the open stores' set grows

    try:
        threads = [threading.Thread(target=open_many, args=(k,), daemon=True)
                   for k in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    finally:
        sys.setswitchinterval(interval)
    assert not errors, errors[:1]


def test_a_serial_batch_in_chunks_stops_between_chunks(tmp_path):
    path = tmp_path / "run.ckpt"
    calls = []

    def slow(indices):  # from its third call on, each call outlasts max_time
        calls.append(len(indices))
        if len(calls) >= 3:
            time.sleep(0.3)
        return smooth(indices)

    lazy = tlc.FunctionTensor(slow, SHAPE, chunk_size=CHUNK)
    with pytest.raises(MaxTimeReached, match="chunks of a batch"):
        _cross(lazy, max_time=0.2, checkpoint=path)
    assert len(calls) <= 3  # the deadline had passed when the third call returned
    info = _resumed_matches_uninterrupted(path)
    assert info.n_restored == sum(calls)


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_a_serial_batch_in_chunks_keeps_its_finished_chunks_on_an_error(tmp_path, error):
    path = tmp_path / "run.ckpt"
    calls = []

    def failing(indices):  # fails on a batch's second chunk (after a whole first one)
        calls.append(len(indices))
        if len(calls) >= 2 and calls[-2] == CHUNK:
            raise error("transient failure")
        return smooth(indices)

    lazy = tlc.FunctionTensor(failing, SHAPE, chunk_size=CHUNK)
    with pytest.raises(error) as raised:
        _cross(lazy, checkpoint=path)
    if error is RuntimeError:  # the failing chunk is named
        assert any("chunk 2 of" in note for note in raised.value.__notes__)
    assert max(calls) <= CHUNK
    info = _resumed_matches_uninterrupted(path)
    assert info.n_restored == sum(calls[:-1])  # the failed batch's first chunk included


@pytest.mark.parametrize("chunk_size", [1, 7, 1000])
def test_serial_chunks_give_the_tt_of_one_call_per_batch(chunk_size):
    chunked, _ = _cross(tlc.FunctionTensor(smooth, SHAPE, chunk_size=chunk_size))
    whole, _ = _cross(tlc.FunctionTensor(smooth, SHAPE))
    assert_same_tt(chunked, whole)


def test_a_serial_chunk_with_the_wrong_number_of_values_is_named():
    lazy = tlc.FunctionTensor(lambda idx: smooth(idx)[:-1], SHAPE, chunk_size=CHUNK)
    with pytest.raises(ValueError, match="for a chunk of"):
        lazy.evaluate(np.zeros((3 * CHUNK, 4), dtype=np.int64))


def test_a_dask_batch_stops_at_the_deadline(tmp_path):
    distributed = pytest.importorskip("distributed")
    from .test_dask import loopback_cluster

    function = Gated(free=0, limit=30.0)
    with loopback_cluster() as cluster, distributed.Client(cluster) as client:
        lazy = tlc.FunctionTensor(function, SHAPE, executor=client, chunk_size=CHUNK)
        try:
            with pytest.raises(MaxTimeReached, match="dask tasks of a batch"):
                _cross(lazy, max_time=0.5, checkpoint=tmp_path / "run.ckpt")
            assert not function.all_returned()
        finally:
            function.open()


def test_a_function_running_its_own_cross_is_not_under_the_outer_deadline():
    inner_stops = []

    def nested(indices):
        inner = tlc.FunctionTensor(smooth, (6, 6), chunk_size=5)
        _, info = tlc.tt_cross(inner, tol=1e-8, random_state=0, return_info=True)
        inner_stops.append(info.stop_reason)
        return smooth(indices)

    lazy = tlc.FunctionTensor(nested, (6, 6, 6), chunk_size=10_000)
    _cross(lazy, max_time=3600.0)
    assert inner_stops and set(inner_stops) == {"tol"}
