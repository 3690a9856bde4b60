"""Audit s27: parallel evaluation (executors, chunks) and resumable runs."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import tensorly_cross as tlc

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


def _bump(points):
    return np.exp(-(points**2).sum(axis=1))


def test_checkpoint_of_other_grid_coordinates_is_refused(tmp_path):
    # Before: the fingerprint saw the shape and "FunctionTensor" only, so a rerun on
    # another domain with as many points per mode read the first domain's values back for
    # the entries stored and mixed them with the new domain's, without a word.
    path = tmp_path / "run.ckpt"
    grid = np.linspace(0.0, 1.0, 9)
    first = tlc.FunctionTensor.on_grid(_bump, [grid] * 3)
    tlc.tt_cross(first, tol=1e-6, random_state=0, checkpoint=path)
    wider = tlc.FunctionTensor.on_grid(_bump, [2.0 * grid] * 3)
    with pytest.raises(tlc.CheckpointMismatchError, match="grids"):
        tlc.tt_cross(wider, tol=1e-6, random_state=0, checkpoint=path)
    # The same grids (made anew) resume: every entry is read back.
    same = tlc.FunctionTensor.on_grid(_bump, [np.linspace(0.0, 1.0, 9)] * 3)
    _, info = tlc.tt_cross(same, tol=1e-6, random_state=0, checkpoint=path,
                           return_info=True)
    assert info.n_restored == info.n_evals > 0


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


class TimedFunction:
    """1/(1+sum); sleeps ``seconds_per_entry`` and adds the time it spent to ``spent``."""

    def __init__(self, seconds_per_entry=2e-4):
        self.seconds_per_entry, self.spent = seconds_per_entry, 0.0

    def __call__(self, indices):
        start = time.perf_counter()
        time.sleep(self.seconds_per_entry * indices.shape[0])
        self.spent += time.perf_counter() - start
        return 1.0 / (1.0 + indices.sum(axis=1))


class OwnLazyTensor(tlc.LazyTensor):
    """A user's lazy tensor (not a FunctionTensor): its function_seconds are its waits."""

    def __init__(self, function, shape):
        super().__init__(shape)
        self.function = function

    def _evaluate(self, indices):
        return self.function(indices)


@pytest.mark.parametrize("wrap", [False, True])
def test_differentiable_read_is_timed_as_function_and_wait(wrap):
    # Before: differentiable=True read the cores again after the search (counted in
    # n_evals), but that read's time was in neither function_seconds nor wait_seconds:
    # overhead_seconds, "the cross itself", held it (0.215 s of 0.634 against 0.036 s
    # without the read).
    function = TimedFunction()
    tensor = (OwnLazyTensor(function, (6, 6, 6)) if wrap
              else tlc.FunctionTensor(function, (6, 6, 6)))
    _, info = tlc.tt_cross(tensor, random_state=0, differentiable=True, return_info=True)
    assert info.function_seconds >= 0.999 * function.spent
    assert info.wait_seconds >= 0.999 * function.spent
    assert info.overhead_seconds < info.total_seconds - function.spent + 1e-3


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
