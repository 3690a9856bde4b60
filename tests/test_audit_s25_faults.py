"""Audit s25 (faults during long runs): checkpoints under real write failures, signals and
executors, run in real processes."""

import os
import subprocess
import sys
import threading

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A child process: a run whose checkpoint may grow to ``limit`` bytes only (RLIMIT_FSIZE,
# the disk filling up), then, in the same process with the limit lifted, the rerun a user
# makes after freeing space (in a notebook, say).
DISK_FULL = """
import resource, sys
import numpy as np
import tensorly_cross as tlc
GRID = np.linspace(1.0, 2.0, 16)
def run(path):
    function = tlc.FunctionTensor(lambda idx: 1.0 / GRID[idx].sum(axis=1), (16,) * 6)
    return tlc.tt_cross(function, tol=1e-8, random_state=0, checkpoint=path,
                        return_info=True)
path, limit = sys.argv[1], int(sys.argv[2])
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
try:
    run(path)
except OSError as error:  # kept: a notebook keeps the last traceback
    first = error
    print("FIRST", type(error).__name__, error)
resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY,) * 2)
import warnings
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    tt, info = run(path)
print("TORN", sum("torn" in str(w.message) for w in caught))
print("RESTORED", info.n_restored, info.n_evals)
np.savez(path + ".npz", *tt.factors)
"""


def _reference_cores():
    import tensorly_cross as tlc

    grid = np.linspace(1.0, 2.0, 16)
    function = tlc.FunctionTensor(lambda idx: 1.0 / grid[idx].sum(axis=1), (16,) * 6)
    return tlc.tt_cross(function, tol=1e-8, random_state=0).factors


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX resource limits")
def test_a_checkpoint_that_fills_the_disk_is_named_and_released_for_a_rerun(tmp_path):
    """A write that failed (disk full) left the checkpoint locked by the failed run's open
    file, which its traceback keeps alive: the rerun after freeing space, in the same
    process, was refused as "in use by another run"; and the OSError ("File too large")
    did not say which file."""
    path = str(tmp_path / "full.ckpt")
    result = subprocess.run([sys.executable, "-c", DISK_FULL, path, "20000"], cwd=ROOT,
                            capture_output=True, text=True, timeout=120,
                            env=dict(os.environ, PYTHONPATH=ROOT))
    assert result.returncode == 0, result.stderr[-2000:]
    first = next(line for line in result.stdout.splitlines() if line.startswith("FIRST"))
    assert "checkpoint=" in first and path in first
    # The failed write was cut back to the last whole frame: nothing torn for the rerun.
    assert "TORN 0" in result.stdout.splitlines()
    restored = next(line for line in result.stdout.splitlines() if line.startswith("RESTORED"))
    n_restored, n_evals = map(int, restored.split()[1:])
    assert 0 < n_restored < n_evals
    with np.load(path + ".npz") as resumed:
        for k, core in enumerate(_reference_cores()):
            np.testing.assert_allclose(resumed[f"arr_{k}"], core, rtol=0, atol=1e-12)


class RemovesItsCheckpoint:
    """1/sum(x) that deletes the run's checkpoint on its ``at``-th call (a temporary-file
    cleaner, or a user tidying up what they take for a finished run's file)."""

    def __init__(self, path, at=5):
        self.path, self.at, self.calls = path, at, 0

    def __call__(self, indices):
        self.calls += 1
        if self.calls == self.at:
            os.remove(self.path)
        return 1.0 / np.linspace(1.0, 2.0, 16)[indices].sum(axis=1)


def test_a_checkpoint_removed_during_the_run_is_warned_about(tmp_path):
    """The store appended on to its open file after the file had been deleted: every
    entry went to a file no name reached, lost at the end of the run, and nothing said so
    (a rerun after a kill started afresh, hours later)."""
    import tensorly_cross as tlc

    path = str(tmp_path / "removed.ckpt")
    function = tlc.FunctionTensor(RemovesItsCheckpoint(path), (16,) * 6)
    with pytest.warns(UserWarning, match="removed") as record:
        tlc.tt_cross(function, tol=1e-8, random_state=0, checkpoint=path)
    removed = [str(w.message) for w in record if "removed" in str(w.message)]
    assert len(removed) == 1 and path in removed[0]


@pytest.mark.parametrize("name", ["max_time", "tol"])
def test_an_int_too_large_for_a_float_is_refused_by_name(name):
    """max_time=10**400 (an int past float's range) raised a bare OverflowError, "int too
    large to convert to float", naming no argument."""
    import tensorly_cross as tlc

    with pytest.raises(ValueError, match=name):
        tlc.tt_cross(np.ones((4, 4)), random_state=0, **{name: 10**400})


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


class NaNOnce:
    """1/sum(x) that returns NaN once, at the first entry of the first call after
    ``after`` entries, while ``broken`` (a flaky sensor, a solver that failed to converge
    once); it counts the entries it evaluates and the NaN it returns."""

    def __init__(self, after=1500):
        self.after, self.broken, self.entries, self.nans = after, True, 0, 0
        self.lock = threading.Lock()

    def __call__(self, indices):
        values = 1.0 / np.linspace(1.0, 2.0, 16)[indices].sum(axis=1)
        with self.lock:
            self.entries += indices.shape[0]
            if self.broken and self.nans == 0 and self.entries > self.after:
                self.nans += 1
                values[0] = np.nan
        return values


@pytest.mark.parametrize("threads", [None, 2])
def test_the_finite_entries_of_a_batch_that_met_a_nan_are_kept(tmp_path, threads):
    """A NaN in a batch lost the whole batch's entries from the checkpoint, the finished
    chunks of an executor included (which a raising chunk keeps): after hours of chunks,
    one NaN cost them all, and the rerun evaluated them again."""
    from concurrent.futures import ThreadPoolExecutor

    import tensorly_cross as tlc

    reference = _reference_cores()
    path = str(tmp_path / "nan.ckpt")
    function = NaNOnce()
    executor = ThreadPoolExecutor(threads) if threads else None
    try:
        tensor = tlc.FunctionTensor(function, (16,) * 6, executor=executor, chunk_size=10)
        with pytest.raises(tlc.NonFiniteValueError):
            tlc.tt_cross(tensor, tol=1e-8, random_state=0, checkpoint=path,
                         val_size=1000)
        assert function.nans == 1
        evaluated, function.broken, function.entries = function.entries, False, 0
        tt, info = tlc.tt_cross(tensor, tol=1e-8, random_state=0, checkpoint=path,
                                val_size=1000, return_info=True)
    finally:
        if executor is not None:
            executor.shutdown()
    assert info.n_restored == evaluated - 1  # all but the NaN entry
    for core, expected in zip(tt.factors, reference, strict=True):
        np.testing.assert_allclose(core, expected, rtol=0, atol=1e-12)
