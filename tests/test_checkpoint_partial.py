"""A batch that fails on an executor keeps its finished chunks in the checkpoint: after
hours of chunks, one failure (a lost node, a transient error, Ctrl-C) cost them all, and
the rerun evaluated them again."""

import pickle
import struct
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import tensorly_cross as tlc
from tensorly_cross.lazy.checkpoint import MAGIC, CheckpointedTensor, CheckpointStore

from .test_checkpoint import GRID, assert_same_tt

SHAPE = (64,) * 4
CHUNK = 8


_LOCK = threading.Lock()
_STATE = {}  # key -> {"seen": [...], "poison": ...}: shared by the copies dask pickles


class Recording:
    """1/sum(x) that records every multi-index it computes; it raises ``error`` (once)
    on the chunk holding ``poison``, after the other chunks of its batch have finished.
    Its state lives at module level, so that the copies an executor pickles share it."""

    def __init__(self, poison=None, error=RuntimeError):
        self.key, self.error = uuid.uuid4().hex, error
        _STATE[self.key] = {"seen": [], "poison": poison}

    def __call__(self, indices):
        state = _STATE[self.key]
        with _LOCK:
            poison = state["poison"]
            fail = poison is not None and (indices == poison).all(axis=1).any()
            if fail:
                state["poison"] = None
            else:
                state["seen"].append(indices.copy())
        if fail:
            time.sleep(0.3)  # the other chunks of the batch finish first
            raise self.error("transient failure")
        return 1.0 / GRID[indices].sum(axis=1)

    @property
    def seen(self):
        return _STATE[self.key]["seen"]

    def computed(self):
        return {tuple(row) for batch in self.seen for row in batch}


def _run(function, path, executor=None):
    lazy = tlc.FunctionTensor(function, SHAPE, executor=executor, chunk_size=CHUNK)
    return tlc.tt_cross(lazy, tol=1e-6, random_state=0, return_info=True, checkpoint=path)


def _poison_of_a_wide_batch():
    """A multi-index in the fourth chunk of the run's first batch of at least 6 chunks."""
    serial = Recording()
    tlc.tt_cross(tlc.FunctionTensor(serial, SHAPE), tol=1e-6, random_state=0)
    batch = next(batch for batch in serial.seen if batch.shape[0] >= 6 * CHUNK)
    return batch[3 * CHUNK], batch


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_the_finished_chunks_of_a_failed_batch_are_not_evaluated_again(tmp_path, error):
    path = tmp_path / "run.ckpt"
    poison, batch = _poison_of_a_wide_batch()
    failing = Recording(poison, error)
    with ThreadPoolExecutor(4) as executor, pytest.raises(error):
        _run(failing, path, executor)
    kept = failing.computed() & {tuple(row) for row in batch}
    assert len(kept) >= 2 * CHUNK  # chunks of the failed batch finished before it failed
    rerun = Recording()
    with ThreadPoolExecutor(4) as executor:
        tt, info = _run(rerun, path, executor)
    assert not kept & rerun.computed()  # read back, not evaluated again
    assert info.n_restored >= len(failing.computed())
    reference, _ = _run(Recording(), tmp_path / "reference.ckpt")
    assert_same_tt(tt, reference)


def test_finished_chunks_under_a_view_are_not_kept_under_the_wrong_indices(tmp_path):
    # Under a TransposedTensor (or a QuanticsTensor) the checkpoint holds the view's
    # multi-indices, the chunks the function's own: stored, they served wrong entries.
    grid = np.linspace(1.0, 2.0, 16)
    weights = np.array([1.0, 3.0, 7.0])

    def function(indices):
        with lock:
            function.calls += 1
            fail = function.calls == 40
        if fail:  # a chunk of a batch of many, the others done first
            time.sleep(0.3)
            raise RuntimeError("transient failure")
        return 1.0 / (grid[indices] @ weights)

    lock, function.calls = threading.Lock(), 0
    path = tmp_path / "t.ckpt"
    axes = (2, 0, 1)
    with ThreadPoolExecutor(4) as executor:
        inner = tlc.FunctionTensor(function, (16, 16, 16), executor=executor,
                                   chunk_size=CHUNK)
        view = tlc.TransposedTensor(inner, axes)
        with pytest.raises(RuntimeError):
            tlc.tt_cross(view, tol=1e-8, random_state=0, checkpoint=path)
    with open(path, "rb") as handle:
        stored = _stored_entries(handle.read(), 3)
    assert stored[0].shape[0] > 0
    inner_points = np.empty_like(stored[0])
    inner_points[:, list(axes)] = stored[0]
    np.testing.assert_array_equal(stored[1], 1.0 / (grid[inner_points] @ weights))


def _stored_entries(data, ndim):
    """Every (multi-index, value) a checkpoint file holds, by its documented layout."""
    offset = len(MAGIC)
    (length,) = struct.unpack_from("<I", data, offset)
    offset += 4 + length + 4
    indices, values = [], []
    while offset < len(data):
        _, count, dtype, _ = struct.unpack_from("<4sI4sI", data, offset)
        offset += 16
        indices.append(np.frombuffer(data, "<i8", count * ndim, offset).reshape(count, ndim))
        offset += 8 * count * ndim
        kind = np.dtype(dtype.rstrip(b"\0").decode())
        values.append(np.frombuffer(data, kind, count, offset))
        offset += kind.itemsize * count
    return np.concatenate(indices), np.concatenate(values)


def test_a_batch_partly_in_the_checkpoint_reads_the_rest(tmp_path):
    # A batch of which the checkpoint held some entries only failed: the stored values
    # were taken for every multi-index asked, found or not (a ValueError on the sizes).
    path = tmp_path / "half.ckpt"
    arguments = {"test": 1}
    points = np.stack([np.arange(10), np.arange(10) % 3], axis=1).astype(np.int64)
    values = 1.0 / (1.0 + points.sum(axis=1))
    store = CheckpointStore(path, (10, 10), arguments)
    store.append(points[::2], values[::2])
    store.close()
    store = CheckpointStore(path, (10, 10), arguments)
    counting = Recording()
    lazy = tlc.FunctionTensor(lambda idx: (counting.seen.append(idx.copy()),
                                           1.0 / (1.0 + idx.sum(axis=1)))[1], (10, 10))
    read = CheckpointedTensor(lazy, store).evaluate_checked(points)
    store.close()
    np.testing.assert_array_equal(np.asarray(read), values)
    assert counting.computed() == {tuple(row) for row in points[1::2]}


def test_a_dask_batch_keeps_the_groups_that_finished(tmp_path):
    distributed = pytest.importorskip("distributed")
    from .test_dask import loopback_cluster

    path = tmp_path / "run.ckpt"
    poison, batch = _poison_of_a_wide_batch()
    failing = Recording(poison)
    with loopback_cluster() as cluster, distributed.Client(cluster) as client:
        with pytest.raises(RuntimeError, match="transient failure"):
            _run(failing, path, client)
        rerun = Recording()
        tt, info = _run(rerun, path, client)
    # A group is kept or lost whole: the groups that finished are not evaluated again.
    entries = {tuple(row) for row in batch}
    assert len(entries & rerun.computed()) <= len(entries) - 4 * CHUNK
    reference, _ = _run(Recording(), tmp_path / "reference.ckpt")
    assert_same_tt(tt, reference)


# -- a review's findings: chunks claimed by the wrong tensor, unpicklable errors, odd futures


def test_a_function_calling_a_parallel_tensor_does_not_claim_its_chunks(tmp_path):
    # The outer (serial) function's error carried the inner tensor's finished chunks, which
    # the checkpoint stored as the outer's: g where it should hold 2 g, a wrong resumed TT.
    inner_calls, lock = [0], threading.Lock()

    def g(indices):
        with lock:
            inner_calls[0] += 1
            fail = inner_calls[0] == 3
        if fail:
            time.sleep(0.2)
            raise RuntimeError("transient failure")
        return 1.0 / (1.0 + indices.sum(axis=1))

    points = np.array([(i, j) for i in range(10) for j in range(4)], dtype=np.int64)
    path = tmp_path / "nested.ckpt"
    with ThreadPoolExecutor(4) as executor:
        inner = tlc.FunctionTensor(g, (10, 10), executor=executor, chunk_size=5)
        outer = tlc.FunctionTensor(lambda idx: 2.0 * np.asarray(inner.evaluate(idx)),
                                   (10, 10))
        store = CheckpointStore(path, (10, 10), {"test": 2})
        with pytest.raises(RuntimeError, match="transient failure"):
            CheckpointedTensor(outer, store).evaluate_checked(points)
        store.close()
    store = CheckpointStore(path, (10, 10), {"test": 2})
    np.testing.assert_array_equal(store.values, 2.0 / (1.0 + store.indices.sum(axis=1)))
    store.close()


def test_an_error_that_carried_finished_chunks_still_pickles():
    # Its finished chunks held the tensor and its executor: pickling the error (a process
    # pool returning it, a dask client) failed on a queue instead of the user's error.
    def f(indices):
        if (indices[:, 0] == 3).any():
            time.sleep(0.2)
            raise RuntimeError("bad entry in my model")
        return indices.sum(axis=1) + 1.0

    with ThreadPoolExecutor(4) as executor:
        lazy = tlc.FunctionTensor(f, (10, 10), executor=executor, chunk_size=5)
        with pytest.raises(RuntimeError) as caught:
            lazy.evaluate(np.array([(i, j) for i in range(10) for j in range(2)]))
    copy = pickle.loads(pickle.dumps(caught.value))
    assert type(copy) is RuntimeError and str(copy) == "bad entry in my model"


class _MinimalFuture:
    """A future with ``result`` and ``done`` only (all ``evaluate_in_chunks`` needs)."""

    def __init__(self, function, argument):
        try:
            self._value, self._error = function(argument), None
        except Exception as error:  # noqa: BLE001 -- raised again by result()
            self._value, self._error = None, error

    def done(self):
        return True

    def result(self):
        if self._error is not None:
            raise self._error
        return self._value


class _MinimalExecutor:
    def submit(self, function, argument):
        return _MinimalFuture(function, argument)


def test_a_minimal_executor_still_raises_the_functions_own_error():
    # Collecting the finished chunks asked its futures for cancelled(): an AttributeError
    # replaced the user's error.
    def f(indices):
        if (indices[:, 0] == 3).any():
            raise RuntimeError("my real error")
        return indices.sum(axis=1) + 1.0

    lazy = tlc.FunctionTensor(f, (10, 10), executor=_MinimalExecutor(), chunk_size=5)
    with pytest.raises(RuntimeError, match="my real error"):
        lazy.evaluate(np.array([(i, j) for i in range(10) for j in range(2)]))


def test_a_finished_chunk_with_a_nan_does_not_lose_the_clean_ones(tmp_path):
    """A batch that fails in its third chunk, whose second chunk held a NaN: the first
    chunk is kept (before, the NaN made the checkpoint refuse every finished chunk)."""
    path = tmp_path / "run.ckpt"
    calls = []

    def nan_then_fail(indices):
        calls.append(indices.copy())
        values = 1.0 / (1.0 + indices.sum(axis=1))
        if len(calls) == 2:
            values[0] = np.nan
        if len(calls) == 3:
            raise RuntimeError("transient failure")
        return values

    lazy = tlc.FunctionTensor(nan_then_fail, SHAPE, chunk_size=CHUNK)
    with pytest.raises(RuntimeError, match="transient"):
        tlc.tt_cross(lazy, tol=1e-8, random_state=0, checkpoint=path)
    rerun = tlc.FunctionTensor(lambda idx: 1.0 / (1.0 + idx.sum(axis=1)), SHAPE)
    _, info = tlc.tt_cross(rerun, tol=1e-8, random_state=0, checkpoint=path,
                           return_info=True)
    assert info.n_restored == len(calls[0])
