"""Tests of parallel evaluation: executors, process pools, Dask clients, chunks and deadlines."""

import mmap
import multiprocessing
import os
import pickle
import sys
import threading
import time
import warnings
from concurrent.futures import CancelledError, ProcessPoolExecutor, ThreadPoolExecutor

import numpy as np
import pytest
import tensorly as tl
import zarr

import tensorly_cross as tlc
from tensorly_cross import DaskTensor, FunctionTensor, open_volume
from tensorly_cross.lazy import ArrayTensor
from tensorly_cross.lazy.chunk_result import NOTE_PREFIX
from tensorly_cross.lazy.parallel import evaluate_in_chunks
from tensorly_cross.lazy.sources import MissingChunksError

from ._helpers_shared import FAILING_SHAPE, Failing, TimedFunction, _chunked, _same_tt
from .conftest import host


def inverse_sum(indices):
    """1 / (1 + sum of the multi-index): module level, so that executors can pickle it."""
    return 1.0 / (1.0 + indices.sum(axis=1))


def returns_a_generator(indices):
    """Pickles itself, but its values do not (a generator): they cannot come back from a
    worker process."""
    return (value for value in inverse_sum(indices))


# B3 ---------------------------------------------------------------------------------------


def test_chunks_of_torch_values_that_require_grad_give_the_serial_tt():
    torch = pytest.importorskip("torch")

    def function(indices):
        return torch.tensor(inverse_sum(indices), requires_grad=True)

    with tl.backend_context("numpy"):
        serial = tlc.tt_cross(FunctionTensor(function, (8, 8, 8)), random_state=0)
        with ThreadPoolExecutor(2) as executor:
            lazy = FunctionTensor(function, (8, 8, 8), executor=executor, chunk_size=5)
            parallel = tlc.tt_cross(lazy, random_state=0)
    _same_tt(parallel, serial)


# B4 ---------------------------------------------------------------------------------------


def _pickling_failure(pool, function):
    """The notes, in one string, on the error of evaluating ``function`` on ``pool``."""
    lazy = FunctionTensor(function, (8, 8), executor=pool)
    # Which of these it is depends on the Python version and on what failed to pickle.
    with pytest.raises((pickle.PicklingError, AttributeError, TypeError)) as error:
        lazy.evaluate(np.arange(16, dtype=np.int64).reshape(8, 2) % 8)
    return " ".join(getattr(error.value, "__notes__", ()))


def test_a_process_pool_that_cannot_pickle_gives_the_hint_and_does_not_blame_the_function():
    # spawn: forking a test process that runs threads can leave a lock held in the child.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(2, mp_context=context) as pool:
        # A local function: an AttributeError (or a PicklingError), never sent.
        notes = _pickling_failure(pool, lambda indices: inverse_sum(indices))
        assert "could not pickle the function" in notes
        assert NOTE_PREFIX not in notes and "d scalars" not in notes
        assert "raised by pickling chunk 1 of 2" in notes
        # The function ran, but its values could not be sent back.
        notes = _pickling_failure(pool, returns_a_generator)
        assert "could not pickle the function" in notes and NOTE_PREFIX not in notes


def test_values_a_dask_worker_process_cannot_send_back_do_not_blame_the_function():
    distributed = pytest.importorskip("distributed")
    from .test_dask import loopback_cluster

    with loopback_cluster(processes=True) as cluster, distributed.Client(cluster) as client:
        notes = _pickling_failure(client, returns_a_generator)
    assert "could not pickle the function" in notes and NOTE_PREFIX not in notes


# B5 ---------------------------------------------------------------------------------------


def test_a_closed_dask_client_as_executor_is_refused_with_a_message(loopback_cluster):
    distributed = pytest.importorskip("distributed")
    client = distributed.Client(loopback_cluster)  # closed here, the cluster left running
    lazy = FunctionTensor(inverse_sum, (8, 8), executor=client)
    np.testing.assert_array_equal(host(lazy.evaluate([[1, 2]])), [0.25])
    client.close()
    lazy = FunctionTensor(inverse_sum, (8, 8), executor=client)
    with pytest.raises(ValueError, match=r"executor .* has no workers \(is it closed"):
        lazy.evaluate([[1, 2]])


GRID = np.linspace(1.0, 2.0, 8)


def inverse_grid_sum(indices):
    return 1.0 / GRID[indices].sum(axis=1)


# --- executors -----------------------------------------------------------------------------


def _run_in_thread(target):
    """``target()`` in a daemon thread; (finished, outcome) after at most 5 s."""
    outcome = {}

    def body():
        try:
            outcome["value"] = target()
        except BaseException as error:  # noqa: BLE001 -- handed to the test
            outcome["error"] = error

    thread = threading.Thread(target=body, daemon=True)
    thread.start()
    thread.join(5.0)
    return not thread.is_alive(), outcome


def test_chunks_cancelled_by_an_executor_shutdown_raise_instead_of_hanging():
    # shutdown(cancel_futures=True) cancels queued futures without notifying wait(): the
    # batch waited for them forever.
    submitted_all, started, release = threading.Event(), threading.Event(), threading.Event()

    class CountingPool(ThreadPoolExecutor):
        """Says when the batch's 4 chunks are all queued: a shutdown before that made
        submit raise instead (a race this test lost on a loaded machine)."""

        submitted = 0

        def submit(self, *args, **kwargs):
            future = super().submit(*args, **kwargs)
            self.submitted += 1
            if self.submitted == 4:
                submitted_all.set()
            return future

    executor = CountingPool(1)

    def blocking(indices):
        started.set()
        release.wait(5.0)
        return indices[:, 0] * 1.0

    indices = np.arange(40, dtype=np.int64).reshape(20, 2)
    finished = [None]

    def cancel_then_release():
        started.wait(5.0)
        submitted_all.wait(5.0)
        executor.shutdown(wait=False, cancel_futures=True)
        release.set()

    threading.Thread(target=cancel_then_release, daemon=True).start()
    finished[0], outcome = _run_in_thread(
        lambda: evaluate_in_chunks(blocking, indices, executor, chunk_size=5))
    assert finished[0], "evaluate_in_chunks hung on cancelled futures"
    error = outcome.get("error")
    assert isinstance(error, CancelledError), outcome
    notes = " ".join(getattr(error, "__notes__", []))
    assert "chunk 2 of 4" in notes and "cancelled" in notes
    assert "raised by the function" not in notes  # the function never ran on it


def test_a_failing_submit_cancels_the_chunks_already_submitted():
    ran = []
    gate = threading.Event()

    class FailsOnThirdSubmit:
        _max_workers = 1

        def __init__(self):
            self.pool, self.submitted = ThreadPoolExecutor(1), 0

        def submit(self, function, *args):
            self.submitted += 1
            if self.submitted == 3:
                raise RuntimeError("the executor is full")
            return self.pool.submit(function, *args)

    def slow(indices):
        gate.wait(5.0)
        ran.append(indices.shape[0])
        return indices[:, 0] * 1.0

    executor = FailsOnThirdSubmit()
    with pytest.raises(RuntimeError, match="the executor is full"):
        evaluate_in_chunks(slow, np.zeros((20, 2), dtype=np.int64), executor, chunk_size=5)
    gate.set()
    executor.pool.shutdown(wait=True)
    # The first chunk was running already; the second, queued, must not run for nothing.
    assert ran == [5]


@pytest.mark.parametrize("chunk_size", [0, -3])
def test_a_chunk_size_below_one_is_refused_not_an_empty_result(chunk_size):
    with ThreadPoolExecutor(2) as executor, pytest.raises(ValueError, match="chunk_size"):
        evaluate_in_chunks(inverse_grid_sum, np.zeros((6, 2), dtype=np.int64), executor,
                           chunk_size=chunk_size)


def test_a_submit_that_returns_no_future_is_named():
    class NoFuture:
        _max_workers = 2

        def submit(self, function, *args):
            return None

    with pytest.raises(TypeError, match=r"executor\.submit returned NoneType"):
        evaluate_in_chunks(inverse_grid_sum, np.zeros((6, 2), dtype=np.int64), NoFuture())


@pytest.fixture
def client(loopback_cluster):
    import distributed

    with distributed.Client(loopback_cluster) as connected:
        yield connected


def _zarr_volume(shape=(10, 10), chunks=(3, 3)):
    """An in-memory zarr array of distinct float64 entries, and those entries."""
    data = np.arange(float(np.prod(shape))).reshape(shape)
    array = zarr.create_array(store={}, shape=shape, chunks=chunks, dtype="f8")
    array[:] = data
    return array, data


def test_an_empty_batch_on_a_cluster_gives_no_values_like_a_local_read(client):
    # Grouping an empty batch by chunk gave one (empty) group for no chunk: the cluster
    # path zipped them strictly and raised "zip() argument 2 is longer than argument 1".
    array, _ = _zarr_volume()
    lazy = DaskTensor(array, client=client)
    values = np.asarray(lazy.evaluate(np.zeros((0, 2), dtype=np.int64)))
    assert values.shape == (0,)
    assert lazy.evaluate([[9, 9]])[0] == 99.0  # the tensor still reads afterwards


def test_a_dask_array_of_more_than_2_63_chunks_is_refused_naming_its_chunks():
    # A virtual array of 2**64 one-entry chunks failed in len() of its graph with
    # "OverflowError: cannot fit 'int' into an index-sized integer", naming nothing.
    da = pytest.importorskip("dask.array")
    # Four modes (NumPy 1.x, the floor CI tests, holds at most 32): 2**16 chunks each.
    virtual = da.ones((2**16,) * 4, chunks=1)
    with pytest.raises(ValueError, match=r"about 2\*\*64.*rechunk"):
        DaskTensor(virtual)


def test_a_dask_array_of_unknown_chunk_sizes_read_in_memory_says_what_to_call():
    # lazy_tensor made an ArrayTensor, whose shape check said "shape[0] must be an int,
    # got nan": the user passed no shape, and nothing said compute_chunk_sizes().
    da = pytest.importorskip("dask.array")
    from tensorly_cross.lazy import lazy_tensor

    data = da.from_array(np.arange(12.0).reshape(4, 3), chunks=2)
    masked = data[data[:, 0] > 2]
    with pytest.raises(ValueError, match=r"unknown size.*compute_chunk_sizes"):
        lazy_tensor(masked)
    with pytest.raises(ValueError, match=r"unknown size.*compute_chunk_sizes"):
        ArrayTensor(masked)


def test_a_nifti_chunk_is_read_into_memory_of_its_own(tmp_path):
    nibabel = pytest.importorskip("nibabel")
    path = tmp_path / "scan.nii"
    values = np.arange(20 * 18 * 6, dtype=np.float32).reshape(20, 18, 6)
    nibabel.save(nibabel.Nifti1Image(values, np.eye(4)), path)
    volume = tlc.open_volume(path)
    block = volume.source.read(volume.chunk_slices(0))
    owner = block
    while isinstance(owner, np.ndarray) and not isinstance(owner, np.memmap):
        owner = owner.base  # the object whose memory the block is
    assert not isinstance(owner, np.memmap | mmap.mmap)
    np.testing.assert_array_equal(block, values)


# Mutant: the chunk grid of an HDF5 dataset counted with floor division: a partial last
# chunk never written went unnoticed, and strict=True read it as the fill value.
def test_strict_refuses_an_hdf5_dataset_whose_partial_last_chunk_was_never_written(tmp_path):
    h5py = pytest.importorskip("h5py")
    path = tmp_path / "partial.h5"
    with h5py.File(path, "w") as handle:
        dataset = handle.create_dataset("data", shape=(5, 4), chunks=(2, 4), dtype="f8")
        dataset[:4] = 1.0  # chunks 0 and 1; the last, of one row, never written
    with pytest.raises(MissingChunksError, match="stores 2 of its 3 chunks"):
        open_volume(str(path), strict=True)
    np.testing.assert_array_equal(open_volume(str(path)).evaluate([[4, 0], [0, 0]]), [0.0, 1.0])


# Mutant: a dask array of unknown chunk sizes not refused up front: it failed later with
# a message that named neither the cause nor the cure.
def test_a_dask_array_of_unknown_chunk_sizes_is_refused_with_the_cure():
    da = pytest.importorskip("dask.array")
    data = da.from_array(np.arange(16.0).reshape(4, 4), chunks=2)
    masked = data[data[:, 0] > 3]  # rows kept unknown until computed
    with pytest.raises(ValueError, match=r"compute_chunk_sizes\(\) first"):
        DaskTensor(masked)


def kill_own_worker(indices):
    """Kill the process-pool worker this runs in (as the OOM killer, or a Ctrl-C sent to
    the terminal's whole process group, does)."""
    import signal

    os.kill(os.getpid(), signal.SIGKILL)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_a_dead_process_pool_worker_is_not_blamed_on_the_function_s_entries():
    """A worker killed under the run (the OOM killer, Ctrl-C reaching the pool's processes)
    breaks the pool: BrokenProcessPool came noted "raised by the function on chunk 1 of 1:
    ... (chunk_size=1 names the very entry)", sending the user to hunt for a bad entry;
    the note now says the worker died and the executor cannot be used again."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    import tensorly_cross as tlc

    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=context) as executor:
        tensor = tlc.FunctionTensor(kill_own_worker, (4, 4), executor=executor)
        with pytest.raises(BrokenProcessPool) as caught:
            tensor.evaluate(np.array([[0, 0], [1, 1]]))
    notes = " ".join(getattr(caught.value, "__notes__", []))
    assert "raised by the function" not in notes
    assert "died" in notes and "new executor" in notes


def _smooth(indices):
    return 1.0 / (1.0 + indices.sum(axis=1))


def test_max_time_on_a_dask_client_that_is_not_the_default():
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster, set_as_default=False) as client:
        lazy = tlc.FunctionTensor(_smooth, (8, 8, 8), executor=client)
        tt, info = tlc.tt_cross(lazy, rank=2, max_time=60, random_state=0,
                                return_info=True)
    assert info.stop_reason != "max_time"
    assert info.n_evals > 0


class _CrossPerBatch(tlc.LazyTensor):
    """Entries whose every batch first runs a cross of its own, without max_time, on a
    function evaluated in chunks; the outer run's deadline passes meanwhile."""

    def __init__(self):
        super().__init__((5, 5, 5))
        self.inner_stops = []

    def _evaluate(self, indices):
        time.sleep(0.25)
        inner = tlc.FunctionTensor(_smooth, (6, 6, 6), chunk_size=4)
        _, info = tlc.tt_cross(inner, rank=2, random_state=0, return_info=True)
        self.inner_stops.append(info.stop_reason)
        return _smooth(indices)


def test_a_nested_run_without_max_time_is_not_stopped_by_the_outer_runs():
    lazy = _CrossPerBatch()
    with pytest.raises(tlc.MaxTimeReached, match="before the first sweep"):
        tlc.tt_cross(lazy, rank=2, random_state=0, max_time=0.1)
    assert lazy.inner_stops and "max_time" not in lazy.inner_stops


def test_serial_chunks_of_a_function_that_refills_one_output_buffer():
    """A wrapped model writing into one output array it returns every time: in one call
    per batch (before chunk_size applied serially) the values were right; in serial
    chunks, every chunk showed the last chunk's values."""
    buffer = np.empty(64)

    def refills(indices):
        out = buffer[:len(indices)]
        out[:] = _smooth(indices)
        return out

    indices = np.array([[i, j, 0] for i in range(4) for j in range(4)])
    values = tlc.FunctionTensor(refills, (4, 4, 4), chunk_size=4).evaluate(indices)
    np.testing.assert_allclose(values, _smooth(indices))


def test_a_serial_chunk_with_the_wrong_number_of_values_stops_the_batch_there():
    """Serial chunks were checked once every chunk had run: a function returning one value
    too few ran every other chunk of the batch (hours of them) before the ValueError,
    where one call per batch failed after that call."""
    calls = []

    def one_short(indices):
        calls.append(len(indices))
        return _smooth(indices)[:-1]

    lazy = tlc.FunctionTensor(one_short, (8, 8, 8), chunk_size=4)
    with pytest.raises(ValueError, match="for a chunk of 4"):
        lazy.evaluate(np.zeros((40, 3), dtype=np.int64))
    assert calls == [4]


SHAPE = (6, 6, 6)


def _all_indices(shape):
    return np.indices(shape).reshape(len(shape), -1).T


class BufferedModel:
    """A model that writes its values into one output buffer per thread and returns a view
    of it (as a wrapped simulation or network often does): each call refills the buffer."""

    def __init__(self):
        self.local = threading.local()

    def __call__(self, indices):
        buffer = getattr(self.local, "buffer", None)
        if buffer is None or buffer.shape[0] < indices.shape[0]:
            buffer = self.local.buffer = np.empty(max(indices.shape[0], 4096))
        out = buffer[: indices.shape[0]]
        np.divide(1.0, 1.0 + indices.sum(axis=1), out=out)
        return out


@pytest.mark.parametrize("workers", [1, 2])
def test_executor_chunks_keep_their_values_when_the_function_reuses_its_buffer(workers):
    # Before: the chunks one thread ran one after another all held the view of its buffer,
    # so the batch came back with that thread's last chunk's values in every one of its
    # chunks' places (a TT with error 0.48 from a cross that reported 0.038); serially
    # (chunk_size, no executor) each chunk's values were already copied.
    indices = _all_indices(SHAPE)
    expected = 1.0 / (1.0 + indices.sum(axis=1))
    with ThreadPoolExecutor(workers) as executor:
        lazy = tlc.FunctionTensor(BufferedModel(), SHAPE, executor=executor, chunk_size=10)
        np.testing.assert_array_equal(lazy.evaluate(indices), expected)


def test_executor_shut_down_before_the_run_is_named():
    # Before: a bare "cannot schedule new futures after shutdown" from concurrent.futures,
    # which named neither the executor argument nor the usual cause (a `with` block that
    # ended before the run).
    with ThreadPoolExecutor(2) as executor:
        lazy = tlc.FunctionTensor(lambda idx: idx.sum(axis=1) * 1.0, SHAPE, executor=executor)
    with pytest.raises(RuntimeError, match="after shutdown") as caught:
        tlc.tt_cross(lazy, random_state=0)
    notes = " ".join(getattr(caught.value, "__notes__", []))
    assert "executor (ThreadPoolExecutor) was shut down" in notes
    assert "executor=None" in notes


@pytest.mark.parametrize("differentiable", [False, True])
def test_runs_sharing_a_function_tensor_time_their_own_calls(differentiable):
    # Before: info.function_seconds was the difference of the tensor's function_seconds
    # over the run, so two runs sharing one FunctionTensor from two threads each reported
    # both runs' time in the function (0.86 s and 0.90 s, in runs of 0.48 s and 0.52 s).
    lazy = tlc.FunctionTensor(TimedFunction(), (6, 6, 6))
    infos = {}

    def run(seed):
        infos[seed] = tlc.tt_cross(lazy, random_state=seed, return_info=True,
                                   differentiable=differentiable)[1]

    threads = [threading.Thread(target=run, args=(seed,)) for seed in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for info in infos.values():
        assert 0.0 < info.function_seconds <= info.wait_seconds <= info.total_seconds


def test_max_time_as_a_timedelta64_is_refused_by_name():
    # Before: np.timedelta64 passed the "real number" check (NumPy registers it as an
    # integer) and float() then failed with "float() argument must be a string or a real
    # number, not 'datetime.timedelta'", naming neither max_time nor what it takes.
    lazy = tlc.FunctionTensor(lambda idx: 1.0 / (1.0 + idx.sum(axis=1)), SHAPE)
    with pytest.raises(TypeError, match="max_time must be a real number"):
        tlc.tt_cross(lazy, random_state=0, max_time=np.timedelta64(5, "s"))


class NanAfter:
    """1/(1+sum), with a NaN in the batch numbered ``bad_call`` (from 1)."""

    def __init__(self, bad_call):
        self.bad_call, self.calls = bad_call, 0

    def __call__(self, indices):
        self.calls += 1
        values = 1.0 / (1.0 + indices.sum(axis=1))
        if self.calls == self.bad_call:
            values[0] = np.nan
        return values


def test_progress_bar_is_closed_when_the_run_raises(capsys):
    tqdm = pytest.importorskip("tqdm").tqdm
    # Before: an error (here a NaN in the second sweep) or Ctrl-C left the bar open: the
    # traceback kept it alive, half-drawn, and what was printed next went onto its line.
    lazy = tlc.FunctionTensor(NanAfter(bad_call=40), (8, 8, 8, 8))
    with pytest.raises(tlc.NonFiniteValueError) as caught:
        tlc.tt_cross(lazy, tol=1e-12, random_state=0, progress=True)
    assert caught.value is not None  # the traceback (and the bar, if open) is still alive
    assert not [bar for bar in tqdm._instances if bar.desc == "tt_cross"]
    assert capsys.readouterr().err.endswith("\n")


class ShortOnCall:
    """1/(1+sum), one value short on the call numbered ``bad_call`` (from 1)."""

    def __init__(self, bad_call=None):
        self.bad_call, self.calls = bad_call, 0

    def __call__(self, indices):
        self.calls += 1
        values = 1.0 / (1.0 + indices.sum(axis=1))
        return values[:-1] if self.calls == self.bad_call else values


@pytest.mark.parametrize("threads", [None, 1])
def test_chunk_of_the_wrong_length_keeps_the_finished_chunks(tmp_path, threads):
    # The run's first batch is two chunks of at most 100; the second comes back short.
    # Before: serially the first chunk was kept by the checkpoint, on an executor it was
    # lost (the values' shapes were checked after the batch's chunks had been gathered,
    # where no finished chunk is attached to the error).
    path = tmp_path / "run.ckpt"
    executor = None if threads is None else ThreadPoolExecutor(threads)
    try:
        lazy = tlc.FunctionTensor(ShortOnCall(bad_call=2), (8,) * 4, executor=executor,
                                  chunk_size=100)
        with pytest.raises(ValueError, match="for a chunk of"):
            tlc.tt_cross(lazy, random_state=0, checkpoint=path)
    finally:
        if executor is not None:
            executor.shutdown()
    _, info = tlc.tt_cross(tlc.FunctionTensor(ShortOnCall(), (8,) * 4), random_state=0,
                           checkpoint=path, return_info=True)
    assert info.n_restored == 100


def _cosine(shape):
    """An exact TT of rank 2: crosses recover it to round-off."""
    return tlc.FunctionTensor(lambda idx: np.cos(idx.sum(axis=1) / 9.0), shape)


# Mutant (function._evaluate_chunks): the deadline checked from the third chunk on
# (``number > 1``), not from the second: a chunk started after max_time had passed.
def test_serial_chunks_stop_at_the_deadline_after_the_chunk_then_running():
    import time

    calls = []

    def slow(idx):
        calls.append(idx.shape[0])
        time.sleep(1.2)  # past max_time: no further chunk of the batch may start
        return np.ones(idx.shape[0])

    tensor = tlc.FunctionTensor(slow, (8,) * 3, chunk_size=50)
    with pytest.raises(tlc.errors.MaxTimeReached, match="after 1 of"):
        tlc.tt_cross(tensor, tol=1e-6, val_size=400, random_state=0, max_time=1.0)
    assert calls == [50]


# Mutant (chunk_result.results_in_order): the error of the last failed chunk raised, not
# the lowest-numbered one's.
def test_of_several_failed_chunks_the_lowest_numbered_ones_error_is_raised():
    from concurrent.futures import Future

    from tensorly_cross.lazy.chunk_result import results_in_order

    futures = [Future() for _ in range(3)]
    futures[0].set_exception(ValueError("chunk zero"))
    futures[1].set_result(np.ones(2))
    futures[2].set_exception(ValueError("chunk two"))
    chunks = [np.full((2, 3), k, dtype=np.int64) for k in range(3)]
    with pytest.raises(ValueError, match="chunk zero") as caught:
        results_in_order(futures, chunks, first_number=4, n_chunks=9)
    assert "chunk 5 of 9" in "\n".join(caught.value.__notes__)


# Mutant (chunk_result.FinishedChunks.claim): a later claim replaced the first: a function
# that evaluates another tensor could pass that tensor's finished chunks off as its own.
def test_finished_chunks_keep_their_first_claimant():
    from tensorly_cross.lazy.chunk_result import FinishedChunks

    inner, outer = _cosine((4, 4)), _cosine((4, 4))
    finished = FinishedChunks(np.zeros((1, 2), dtype=np.int64), [np.ones(1)])
    finished.claim(inner)
    finished.claim(outer)
    assert finished.source is inner


# Mutant (chunk_result.attach_finished): without a finished chunk of its own, a batch's
# error kept the finished chunks an inner evaluation had attached (those are not its own).
def test_a_batch_without_finished_chunks_drops_those_an_inner_evaluation_attached():
    from tensorly_cross.lazy.chunk_result import FINISHED, FinishedChunks, attach_finished

    error = RuntimeError("inner")
    setattr(error, FINISHED, FinishedChunks(np.zeros((1, 2), dtype=np.int64), [np.ones(1)]))
    attach_finished(error, [np.zeros((2, 2), dtype=np.int64)], [None])
    assert getattr(error, FINISHED, None) is None


# Mutant (parallel.evaluate_in_chunks): the seconds inside the function as the longest
# chunk's, not summed over the chunks as function_seconds is documented.
def test_function_seconds_with_an_executor_sum_over_the_chunks():
    import time
    from concurrent.futures import ThreadPoolExecutor

    def slow(idx):
        time.sleep(0.1)
        return np.ones(idx.shape[0])

    with ThreadPoolExecutor(4) as pool:
        tensor = tlc.FunctionTensor(slow, (10, 10), executor=pool, chunk_size=10)
        tensor.evaluate(np.stack([np.arange(40) // 10, np.arange(40) % 10], axis=1))
    assert tensor.function_seconds >= 0.35  # four chunks of 0.1 s each, run at once


def test_an_executor_runs_the_index_search_without_gradient(pytorch_backend):
    """``tt_cross(..., differentiable=True)`` searches under ``torch.no_grad()``, which is
    thread-local: a FunctionTensor's executor threads ran every search batch with autograd
    on, so the cache held values with graphs (and grew by concatenation, not in place).
    Only the final read records a graph now, as without an executor, and the gradient is
    the same."""
    torch = pytest.importorskip("torch")
    from concurrent.futures import ThreadPoolExecutor

    grid = torch.linspace(0, 1, 12, dtype=torch.float64)
    reads = []

    def make_tensor(weights, executor):
        def function(indices):
            reads.append((torch.is_grad_enabled(), len(indices)))
            return torch.exp(grid[torch.as_tensor(indices)] @ weights)

        return tlc.FunctionTensor(function, (12, 12, 12), executor=executor, chunk_size=16)

    gradients, with_grad = [], []
    with ThreadPoolExecutor(2) as pool:
        for executor in (None, pool):
            reads.clear()
            weights = torch.tensor([0.3, -0.2, 0.5], dtype=torch.float64, requires_grad=True)
            tt = tlc.tt_cross(make_tensor(weights, executor), rank=2, method="als",
                              random_state=0, differentiable=True)
            tt.to_tensor().sum().backward()
            gradients.append(weights.grad.numpy())
            with_grad.append(sum(size for enabled, size in reads if enabled))
    assert with_grad[1] == with_grad[0]  # the cores' fresh read only
    np.testing.assert_allclose(gradients[1], gradients[0], rtol=1e-12)


# -- lazy/worker_groups.py -----------------------------------------------------------------


def test_a_worker_left_without_chunks_gets_no_group():
    # Mutant: ``stop >= start``: a worker whose share rounds to no chunk still got a group
    # (an empty dask task per idle worker, each paying the fixed cost the groups save).
    from tensorly_cross.lazy.worker_groups import group_chunks

    workers = [("a", 1), ("b", 1), ("c", 1)]
    assert group_chunks(1, workers) == [("c", 1, 0, 1)]
    assert group_chunks(0, workers) == []
    assert all(stop > start for *_, start, stop in group_chunks(2, workers))


def _fails_beyond_30(indices):
    """Module level: dask pickles a task's function even for a cluster of threads."""
    if (indices[:, 0] > 30).any():
        raise KeyError("no model for x0 > 30")
    return indices.sum(axis=1).astype(float)


def test_a_failing_chunk_on_a_dask_worker_is_named_once():
    # Mutant: the group's range noted even when the chunk's own note survived the trip:
    # the error then named two culprits, "chunk 4 of 4" and "chunks 3-4 of 4".
    distributed = pytest.importorskip("distributed")
    from tensorly_cross import FunctionTensor
    from tensorly_cross.lazy.chunk_result import NOTE_PREFIX

    batch = np.array([[i, i] for i in range(12)])
    batch[9, 0] = 31
    with distributed.LocalCluster(n_workers=2, threads_per_worker=2, processes=False,
                                  dashboard_address="127.0.0.1:0",
                                  worker_dashboard_address="127.0.0.1:0") as cluster, \
            distributed.Client(cluster) as client:
        failing = FunctionTensor(_fails_beyond_30, (32, 32), executor=client)
        with pytest.raises(KeyError, match="x0 > 30") as error:
            failing.evaluate(batch)
    notes = [note for note in error.value.__notes__ if note.startswith(NOTE_PREFIX)]
    assert len(notes) == 1
    assert notes[0].startswith(f"{NOTE_PREFIX} 4 of 4: 3 multi-indices from (31, 9) to (11, 11)")


def _slow_or_fails(indices):
    """Fails at once on x0 > 30; else takes 2 s."""
    import time

    if (indices[:, 0] > 30).any():
        raise KeyError("no model for x0 > 30")
    time.sleep(2.0)
    return indices.sum(axis=1).astype(float)


def test_a_failing_dask_group_raises_its_error_before_a_slower_group_meets_the_deadline():
    # Mutant: the wait for the groups goes on past a failed one (``continue``, not
    # ``return``): the slower group then ran into max_time, and the function's own error
    # came back as MaxTimeReached ("1 of 2 dask tasks still to finish"), a stop, not a bug.
    import time

    distributed = pytest.importorskip("distributed")
    from tensorly_cross.lazy.deadline import Deadline
    from tensorly_cross.lazy.parallel import evaluate_in_chunks

    batch = np.array([[i, i] for i in range(4)])
    batch[3, 0] = 31  # in the second chunk, run by the second worker
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                  dashboard_address="127.0.0.1:0",
                                  worker_dashboard_address="127.0.0.1:0") as cluster, \
            distributed.Client(cluster) as client:
        with pytest.raises(KeyError, match="x0 > 30"):
            evaluate_in_chunks(_slow_or_fails, batch, client,
                               deadline=Deadline(time.perf_counter() + 1.0, 1.0))


# -- lazy/dask.py --------------------------------------------------------------------------


def test_a_dask_tensor_spreads_its_chunks_over_the_workers():
    # Mutant: every chunk pinned to the first worker (not by its hash): the reads of a
    # batch ran one worker's threads only, and its cache held every chunk.
    distributed = pytest.importorskip("distributed")
    zarr = pytest.importorskip("zarr")
    from tensorly_cross import DaskTensor

    array = zarr.zeros((64, 64), chunks=(8, 8), dtype="f8")
    array[:] = np.arange(64 * 64.0).reshape(64, 64)
    points = np.array([[i, j] for i in range(0, 64, 8) for j in range(0, 64, 8)])
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                  dashboard_address="127.0.0.1:0",
                                  worker_dashboard_address="127.0.0.1:0") as cluster, \
            distributed.Client(cluster) as client:
        lazy = DaskTensor(array, client=client)
        with distributed.get_task_stream(client) as tasks:
            values = lazy.evaluate(points)
        workers = {task["worker"] for task in tasks.data}
    np.testing.assert_array_equal(np.asarray(values), points[:, 0] * 64.0 + points[:, 1])
    # 64 chunks hashed to 2 workers: all on one has probability 2**-63
    assert len(workers) == 2


def energy_of_state(indices):
    """A function whose values are one short: a user's off-by-one."""
    return 1.0 / (1.0 + indices.sum(axis=1))[:-1]


@pytest.mark.parametrize("chunks", [{"chunk_size": 7}, {"executor": "threads"}])
def test_a_chunked_functions_wrong_shape_names_the_function(chunks):
    # In chunks (serially or on an executor) the message said "the function returned
    # values of shape (8,) for a chunk of 7 multi-indices", which function unsaid.
    from concurrent.futures import ThreadPoolExecutor

    def energy_of_state(indices):
        return np.ones(indices.shape[0] + 1)

    with ThreadPoolExecutor(2) as pool:
        options = {"executor": pool} if "executor" in chunks else chunks
        tensor = tlc.FunctionTensor(energy_of_state, (4, 5, 6), **options)
        with pytest.raises(ValueError, match="function energy_of_state returned values of "
                                             r"shape \(\d+,\) for a chunk"):
            tlc.tt_cross(tensor, random_state=0)


def _volume():
    grid = np.linspace(0.0, 1.0, 9)
    return np.add.outer(np.add.outer(grid, np.arange(8.0)), np.arange(7.0) ** 2) + 1.0


def _masked_dask():
    da = pytest.importorskip("dask.array")
    data = da.from_array(_volume(), chunks=(3, 4, 7))
    return da.ma.masked_array(data, mask=data > 40.0)


@pytest.mark.parametrize("read", [
    lambda x: tlc.tt_cross(x, rank=2, random_state=0),
    lambda x: tlc.open_volume(x),
    lambda x: tlc.streaming_tt_svd(x, rank=2, random_state=0),
    lambda x: tlc.DaskTensor(x),
])
def test_a_dask_array_of_masked_chunks_is_refused_as_a_masked_array_is(read):
    # Before: every reader dropped the mask and crossed the masked entries' raw values,
    # where a NumPy masked array is refused.
    with pytest.raises(TypeError, match="masked"):
        read(_masked_dask())


def test_a_chunk_read_as_a_masked_array_is_an_error_naming_the_chunk():
    # A reader whose blocks come back masked (a dask array whose meta says otherwise):
    # the mask was dropped by np.asarray.
    da = pytest.importorskip("dask.array")
    from tensorly_cross.lazy.sources import ChunkReadError

    data = da.from_array(_volume(), chunks=(3, 4, 7))
    masked = data.map_blocks(lambda block: np.ma.masked_greater(block, 40.0),
                             meta=np.empty((0, 0, 0)))
    with pytest.raises(ChunkReadError, match=r"chunk \[.*masked"):
        tlc.tt_cross(tlc.open_volume(masked), rank=2, random_state=0)
    with pytest.raises(ChunkReadError, match=r"chunk \[.*masked"):  # filled: asarray'd first
        tlc.tt_cross(tlc.open_volume(masked, fill_nan=0.0), rank=2, random_state=0)


def _random_volume():
    return np.random.default_rng(0).random((6, 7, 8))


def test_a_jax_cross_in_a_worker_thread_leaves_it_following_the_process_backend():
    # The search runs in NumPy in this thread only, and set JAX back as this thread's own
    # backend: a pool thread that had followed the process-wide one stayed on JAX after
    # tl.set_backend("numpy"), which every other thread followed.
    pytest.importorskip("jax")
    from concurrent.futures import ThreadPoolExecutor

    volume = _random_volume()
    previous = tl.get_backend()
    try:
        tl.set_backend("jax")
        with ThreadPoolExecutor(1) as pool:
            assert pool.submit(tl.get_backend).result() == "jax"
            tt = pool.submit(lambda: tlc.tt_cross(volume, rank=2, random_state=0)).result()
            assert tl.get_backend() == "jax" and "jax" in type(tt[0]).__module__
            tl.set_backend("numpy")
            assert pool.submit(tl.get_backend).result() == "numpy"
    finally:
        tl.set_backend(previous)


def test_entries_read_back_in_a_batch_that_max_time_stopped_are_not_counted_restored(tmp_path):
    # A batch read back in part, whose other part max_time refused, was counted in
    # n_restored though n_evals dropped it with its batch: a resumed run stopped by
    # max_time reported n_restored > n_evals, "the function ran n_evals - n_restored"
    # times a negative number.
    settings = dict(tol=1e-10, random_state=0, checkpoint=tmp_path / "run.ckpt")
    _, whole = tlc.tt_cross(_chunked(Failing()), tol=1e-10, random_state=0, return_info=True)
    # Failed in the second sweep, part way through a batch.
    first = Failing(fail_after=(whole.evals_per_sweep[0] + whole.evals_per_sweep[1]) // 2)
    with pytest.raises(RuntimeError, match="transient"):
        tlc.tt_cross(_chunked(first), **settings)
    # Replayed at once, then stopped at the batch that failed: no time left for the rest.
    rerun = Failing()
    with pytest.warns(tlc.ToleranceNotMetWarning, match="max_time"):
        _, info = tlc.tt_cross(_chunked(rerun), max_time=1e-9, return_info=True, **settings)
    assert info.stop_reason == "max_time"
    assert rerun.computed == 0
    assert info.n_restored <= info.n_evals
    assert info.n_evals - info.n_restored == rerun.computed


class SlowAfter:
    """Failing's function that sleeps ``seconds`` once, on the first call after it has
    computed ``after`` entries: a run under a shorter max_time stops at the next batch."""

    def __init__(self, after, seconds):
        self.function, self.after, self.seconds = Failing(), after, seconds

    def __call__(self, indices):
        if self.after is not None and self.function.computed >= self.after:
            self.after = None
            time.sleep(self.seconds)
        return self.function(indices)


@pytest.mark.filterwarnings("ignore::tensorly_cross.ToleranceNotMetWarning")
def test_the_fresh_read_of_differentiable_past_max_time_is_warned_of():
    # max_time "no new batch of evaluations starts" once past; differentiable=True read
    # every core's entries again after a search that max_time had stopped (a run with
    # max_time=1.2 took 1.75 s, 2720 entries read past it) without a word, where the same
    # read past max_evals is warned of.
    _, whole = tlc.tt_cross(Failing(), shape=FAILING_SHAPE, tol=1e-10, random_state=0,
                            return_info=True)
    function = SlowAfter(whole.evals_per_sweep[0], seconds=1.1)
    with pytest.warns(RuntimeWarning, match=r"max_time=1.0 bounds the index search") as seen:
        _, info = tlc.tt_cross(function, shape=FAILING_SHAPE, tol=1e-10, random_state=0,
                               max_time=1.0, differentiable=True, return_info=True)
    # Its 1.1 s batch took the search itself past max_time: the advice says so, rather
    # than "lower max_time by that read", which would not have sufficed.
    message = next(str(w.message) for w in seen if "bounds the index search" in str(w.message))
    assert "The search itself ended" in message and "Lower max_time" not in message
    assert info.stop_reason == "max_time"
    assert function.function.computed == info.n_evals


def test_a_differentiable_search_within_max_time_is_not_warned_of():
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        _, info = tlc.tt_cross(Failing(), shape=FAILING_SHAPE, tol=1e-6, random_state=0,
                               max_time=600, differentiable=True, return_info=True)
    assert info.stop_reason == "tol"


def _cosine_wave(indices):
    return 1.0 + np.cos(indices @ np.array([0.3, 0.5, 0.7]))


def _masked_or_list(indices):
    """A chunk's values as a masked array (every entry masked), or as a list."""
    values = _cosine_wave(indices)
    if indices[0, 0] % 2:
        return np.ma.masked_array(values, mask=np.ones(values.shape, dtype=bool))
    return values.tolist()


@pytest.mark.parametrize("executor", [False, True])
def test_a_masked_chunk_beside_a_list_is_refused_by_name(backend, executor):
    # One call's masked array is refused (a cross would read its masked entries); a chunk's
    # beside a list went through np.asarray, which drops the mask: under PyTorch and JAX
    # the masked entries were read as values without a word.
    from concurrent.futures import ThreadPoolExecutor

    indices = np.stack(np.unravel_index(np.arange(0, 216, 5), SHAPE), axis=1)
    with ThreadPoolExecutor(2) as pool:
        tensor = tlc.FunctionTensor(_masked_or_list, SHAPE, chunk_size=4,
                                    executor=pool if executor else None)
        with pytest.raises(TypeError, match="_masked_or_list returned a masked array"):
            tensor.evaluate(indices)


CHUNKED_SHAPE = (5, 6, 7)


def _values(indices):
    return 1.0 + np.sin(indices @ np.array([0.3, 0.5, 0.7]))


def _big_endian_or_list(indices):
    """A chunk's values as a big-endian array (a FITS or foreign ``.npy`` buffer), or as a
    list: not every chunk is an ndarray, so the chunks are joined in the backend."""
    values = _values(indices)
    return values.astype(">f8") if indices[0, 0] % 2 else values.tolist()


def _bfloat16(indices):
    """A JAX bfloat16 array, which NumPy reads as ml_dtypes' bfloat16."""
    import jax.numpy as jnp

    return jnp.asarray(_values(indices)).astype(jnp.bfloat16)


def _unsigned_or_list(indices):
    values = np.round(_values(indices) * 100)
    return values.astype(np.uint64) if indices[0, 0] % 2 else values.astype(int).tolist()


@pytest.mark.parametrize("function", [_big_endian_or_list, _bfloat16, _unsigned_or_list])
def test_a_chunked_read_gives_the_values_of_one_call(backend, function):
    # Under PyTorch the chunks that were not ndarrays went to tl.tensor as they came:
    # torch's "given numpy array has byte order different from the native byte order",
    # "can't convert np.ndarray of type ml_dtypes.bfloat16", "Promotion for uint16,
    # uint32, uint64 types is not supported"; one call's values are read (widened,
    # byte-swapped) before they reach the backend.
    if function is _bfloat16:
        pytest.importorskip("jax")
    indices = np.stack(np.unravel_index(np.arange(0, 210, 3), CHUNKED_SHAPE), axis=1)
    whole = tlc.FunctionTensor(function, CHUNKED_SHAPE).evaluate(indices)
    chunked = tlc.FunctionTensor(function, CHUNKED_SHAPE, chunk_size=4).evaluate(indices)
    assert str(chunked.dtype) == str(whole.dtype)
    np.testing.assert_array_equal(host(chunked), host(whole))
