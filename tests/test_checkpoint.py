"""Checkpoints and max_time: every entry appended as it is computed, a torn tail dropped, a
killed or timed-out run resumed without re-evaluating what is stored."""

import contextlib
import json
import multiprocessing
import os
import re
import signal
import struct
import subprocess
import sys
import time
import warnings
import zlib
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tensorly_cross as tlc
from tensorly_cross import CheckpointError, CheckpointMismatchError, MaxTimeReached
from tensorly_cross.lazy.checkpoint import MAGIC, CheckpointStore

from .conftest import host
from .strategies import seeds

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GRID = np.linspace(1.0, 2.0, 64)
SHAPE = (64,) * 8  # bench_cross's P4: 1/sum, ~10k evaluations in ~90 batches


class Counting:
    """1/sum(x) on [1, 2]^d that counts its evaluations; kills its process past a count."""

    def __init__(self, kill_after=None):
        self.computed, self.kill_after = 0, kill_after

    def __call__(self, indices):
        self.computed += indices.shape[0]
        if self.kill_after is not None and self.computed > self.kill_after:
            os.kill(os.getpid(), signal.SIGKILL)  # a crash in the middle of a batch
        return 1.0 / GRID[indices].sum(axis=1)


def run(function, shape=SHAPE, **kwargs):
    kwargs = dict(dict(tol=1e-6, random_state=0, return_info=True), **kwargs)
    return tlc.tt_cross(tlc.FunctionTensor(function, shape), **kwargs)


def killed_run(path, kill_after):
    """The child process of the crash test: runs until its function kills it."""
    run(Counting(kill_after), checkpoint=path)


def assert_same_tt(first, second, rtol=0.0):
    for a, b in zip(first, second, strict=True):
        a, b = host(a), host(b)
        assert np.abs(a - b).max() <= rtol * np.abs(b).max()


def test_a_rerun_evaluates_nothing_and_returns_the_same_tt(backend, tmp_path):
    path = tmp_path / "run.ckpt"
    first_function, second_function = Counting(), Counting()
    first, first_info = run(first_function, checkpoint=path)
    second, second_info = run(second_function, checkpoint=str(path))
    assert first_function.computed == first_info.n_evals and first_info.n_restored == 0
    assert second_function.computed == 0
    assert second_info.n_restored == second_info.n_evals == first_info.n_evals
    assert_same_tt(second, first)
    assert path.read_bytes()[: len(MAGIC)] == MAGIC


def test_a_run_killed_mid_way_resumes_from_its_checkpoint(tmp_path):
    reference_function = Counting()
    reference, _ = run(reference_function)
    uninterrupted = reference_function.computed
    path = tmp_path / "killed.ckpt"
    child = (f"import sys; sys.path.insert(0, {ROOT!r}); from tests.test_checkpoint import "
             f"killed_run; killed_run({str(path)!r}, {int(0.6 * uninterrupted)})")
    result = subprocess.run([sys.executable, "-c", child], cwd=ROOT, capture_output=True,
                            timeout=300)
    assert result.returncode == -signal.SIGKILL, result.stderr.decode()[-2000:]
    resumed_function = Counting()
    resumed, info = run(resumed_function, checkpoint=path)
    # The batch in flight at the kill is lost; everything before it is read back.
    assert resumed_function.computed <= 0.45 * uninterrupted
    assert info.n_restored + resumed_function.computed == info.n_evals
    assert_same_tt(resumed, reference, rtol=1e-10)


class KillsItsParent:
    """1/sum(x) in a process pool's worker, which records its pid and kills the process
    that runs the cross (SIGKILL, as the OOM killer does) once the workers have made
    ``calls`` calls."""

    def __init__(self, pids, calls=4):
        self.pids, self.calls = pids, calls

    def __call__(self, indices):
        with open(self.pids, "a") as stream:
            stream.write(f"{os.getpid()}\n")
        with open(self.pids) as stream:
            if len(stream.readlines()) > self.calls:
                os.kill(os.getppid(), signal.SIGKILL)
        return 1.0 / GRID[indices].sum(axis=1)


def killed_from_a_worker(path, pids):
    """The child process of the orphaned-workers test: a run on a forked process pool."""
    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(2, mp_context=context) as executor:
        tlc.tt_cross(tlc.FunctionTensor(KillsItsParent(pids), SHAPE, executor=executor),
                     tol=1e-6, random_state=0, checkpoint=path)


@pytest.mark.skipif(not hasattr(os, "register_at_fork"), reason="POSIX fork")
def test_workers_that_outlive_a_killed_run_do_not_hold_its_checkpoint(tmp_path):
    """A process pool forked during a run shares the checkpoint's open file, and its lock:
    once the run was killed, its orphaned workers (which never exit) held the lock, and
    every rerun was refused as "in use by another run"."""
    path, pids = tmp_path / "orphans.ckpt", tmp_path / "pids"
    child = (f"import sys; sys.path.insert(0, {ROOT!r}); from tests.test_checkpoint import "
             f"killed_from_a_worker; killed_from_a_worker({str(path)!r}, {str(pids)!r})")
    # Its output goes to a file: the orphans keep a pipe open, and reading it would hang.
    with open(tmp_path / "log", "wb") as log:
        result = subprocess.run([sys.executable, "-c", child], cwd=ROOT, stdout=log,
                                stderr=subprocess.STDOUT, timeout=300)
    try:
        assert result.returncode == -signal.SIGKILL, (tmp_path / "log").read_text()[-2000:]
        resumed_function = Counting()
        _, info = run(resumed_function, checkpoint=path)
        assert info.n_restored > 0
        assert info.n_restored + resumed_function.computed == info.n_evals
    finally:  # the orphaned workers
        for pid in {int(line) for line in pids.read_text().split()}:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _frames(store, rng, count, d):
    for _ in range(count):
        n = int(rng.integers(1, 20))
        store.append(rng.integers(5, size=(n, d)), rng.standard_normal(n))


@given(seed=seeds, cut=st.integers(1, 40))
def test_a_torn_last_frame_is_dropped_and_the_file_repaired(tmp_path_factory, seed, cut):
    path = tmp_path_factory.mktemp("torn") / "store.ckpt"
    rng = np.random.default_rng(seed)
    store = CheckpointStore(path, (5, 5, 5), {"tol": 1e-6})
    _frames(store, rng, 3, 3)
    store.close()
    whole = CheckpointStore(path, (5, 5, 5), {"tol": 1e-6})  # what was written, whole
    indices, values = whole.indices, whole.values
    whole.close()
    # The last frame holds at least 16 + 32 bytes: a cut of 1-40 bytes tears it.
    with open(path, "r+b") as handle:
        handle.truncate(path.stat().st_size - cut)
    with pytest.warns(UserWarning, match="dropped a torn last frame"):
        reopened = CheckpointStore(path, (5, 5, 5), {"tol": 1e-6})
    kept = reopened.indices.shape[0]
    assert kept < indices.shape[0]
    np.testing.assert_array_equal(reopened.indices, indices[:kept])
    np.testing.assert_array_equal(reopened.values, values[:kept])
    reopened.append(np.zeros((2, 3), dtype=np.int64), np.array([1.5, -2.5]))
    reopened.close()
    again = CheckpointStore(path, (5, 5, 5), {"tol": 1e-6})  # no warning: repaired
    np.testing.assert_array_equal(again.values, np.concatenate([values[:kept], [1.5, -2.5]]))
    again.close()


def test_a_frame_with_a_bad_checksum_is_dropped(tmp_path):
    path = tmp_path / "flip.ckpt"
    store = CheckpointStore(path, (5, 5), {})
    store.append(np.array([[1, 2]]), np.array([0.5]))
    store.append(np.array([[3, 4]]), np.array([0.25]))
    store.close()
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # the last value's last byte
    path.write_bytes(bytes(data))
    with pytest.warns(UserWarning, match="torn"):
        reopened = CheckpointStore(path, (5, 5), {})
    np.testing.assert_array_equal(reopened.indices, [[1, 2]])
    reopened.close()


def test_damage_before_valid_frames_is_refused_and_the_file_left_alone(tmp_path):
    # A crash tears the last frame only: a bad frame with frames after it is damage, and
    # truncating there (as for a torn tail) destroyed every later entry.
    path = tmp_path / "flip.ckpt"
    store = CheckpointStore(path, (5, 5), {})
    for k in range(3):
        store.append(np.array([[k, k]]), np.array([0.5 + k]))
    store.close()
    data = bytearray(path.read_bytes())
    first_value = len(data) - 2 * (16 + 16 + 8) - 1  # the first frame's last byte
    data[first_value] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="is damaged: the frame at byte"):
        CheckpointStore(path, (5, 5), {})
    assert path.read_bytes() == bytes(data)


@pytest.mark.parametrize("byte, name", [(0, "tag"), (7, "count")])
def test_a_damaged_frame_head_before_valid_frames_is_refused(tmp_path, byte, name):
    # A flipped bit in a frame's tag or count made the frame unreadable and was taken for
    # a torn tail: every later frame was dropped and the file truncated.
    path = tmp_path / f"{name}.ckpt"
    store = CheckpointStore(path, (5, 5), {})
    for k in range(3):
        store.append(np.array([[k, k]]), np.array([0.5 + k]))
    store.close()
    data = bytearray(path.read_bytes())
    first_frame = len(data) - 3 * (16 + 16 + 8)
    data[first_frame + byte] ^= 0x10
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="is damaged: the frame at byte"):
        CheckpointStore(path, (5, 5), {})
    assert path.read_bytes() == bytes(data)


def test_a_torn_frame_head_at_the_end_is_dropped(tmp_path):
    path = tmp_path / "head.ckpt"
    store = CheckpointStore(path, (5, 5), {})
    store.append(np.array([[1, 2]]), np.array([0.5]))
    store.close()
    with open(path, "ab") as handle:
        handle.write(b"BTC")  # a crash three bytes into the next frame's head
    with pytest.warns(UserWarning, match="dropped a torn last frame"):
        reopened = CheckpointStore(path, (5, 5), {})
    np.testing.assert_array_equal(reopened.indices, [[1, 2]])
    reopened.close()


@pytest.mark.parametrize("text, what", [(b"not json", "not JSON"),
                                        (b"[1, 2]", "a JSON list")])
def test_a_header_that_is_not_a_json_object_is_refused_by_path(tmp_path, text, what):
    path = tmp_path / "header.ckpt"
    path.write_bytes(MAGIC + struct.pack("<I", len(text)) + text
                     + struct.pack("<I", zlib.crc32(text)))
    with pytest.raises(CheckpointError, match=f"header.ckpt.*{what}"):
        CheckpointStore(path, (5, 5), {})


def test_a_checkpoint_in_a_missing_folder_is_named(tmp_path):
    with pytest.raises(CheckpointError, match="its folder .* does not exist"):
        run(Counting(), checkpoint=tmp_path / "no" / "run.ckpt")


@given(dtype=st.sampled_from(["f8", "f4", "c16", "c8", "i4"]), seed=seeds)
def test_values_come_back_exactly(tmp_path_factory, dtype, seed):
    path = tmp_path_factory.mktemp("dtype") / "values.ckpt"
    rng = np.random.default_rng(seed)
    values = (rng.standard_normal(7) * 100).astype(dtype)
    if dtype.startswith("c"):
        values = values + 1j * rng.standard_normal(7).astype(dtype)
    store = CheckpointStore(path, (9, 9), {})
    store.append(rng.integers(9, size=(7, 2)), values)
    store.close()
    back = CheckpointStore(path, (9, 9), {})
    np.testing.assert_array_equal(back.values, values)
    assert back.values.dtype == (values.dtype if dtype != "i4" else np.float64)
    back.close()


def test_another_shape_or_other_arguments_are_refused(tmp_path):
    path = tmp_path / "run.ckpt"
    run(Counting(), checkpoint=path)
    with pytest.raises(CheckpointMismatchError, match=r"tol=1e-06 there, 1e-08 here"):
        run(Counting(), checkpoint=path, tol=1e-8)
    with pytest.raises(CheckpointMismatchError, match=r"random_state=0 there, 1 here"):
        run(Counting(), checkpoint=path, random_state=1)
    with pytest.raises(CheckpointMismatchError, match=r"shape \(64, 64, 64, 64, 64, 64, 64, 64\)"):
        run(Counting(), shape=(64,) * 7, checkpoint=path)
    # Budgets may change: a stopped run continues with a larger one.
    function = Counting()
    run(function, checkpoint=path, n_iter_max=80, max_evals=10**6, max_time=600.0)
    assert function.computed == 0


def test_a_rank_written_out_resumes_a_checkpoint_of_the_same_rank(tmp_path):
    path, shape = tmp_path / "run.ckpt", (12, 12, 12, 12)
    first_function = Counting()
    first, _ = run(first_function, shape=shape, rank=3, checkpoint=path)
    function = Counting()
    second, _ = run(function, shape=shape, rank=(1, 3, 3, 3, 1), checkpoint=path)
    assert first_function.computed > 0 and function.computed == 0
    assert_same_tt(second, first)
    with pytest.raises(CheckpointMismatchError, match="rank"):
        run(Counting(), shape=shape, rank=[1, 3, 4, 3, 1], checkpoint=path)


def test_bad_checkpoint_arguments_are_refused_by_name(tmp_path):
    with pytest.raises(ValueError, match="needs an int random_state"):
        run(Counting(), checkpoint=tmp_path / "a.ckpt", random_state=None)
    with pytest.raises(TypeError, match="checkpoint must be a path"):
        run(Counting(), checkpoint=3)
    (tmp_path / "other.bin").write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="not a tensorly-cross checkpoint"):
        run(Counting(), checkpoint=tmp_path / "other.bin")
    with pytest.raises(ValueError, match="max_time must be > 0"):
        run(Counting(), max_time=0)


def test_max_time_stops_with_the_best_sweep_and_a_rerun_resumes(backend, tmp_path):
    path = tmp_path / "timed.ckpt"
    start = time.perf_counter()
    first_sweep = run(Counting(), n_iter_max=1)
    # Time enough for the first sweep whatever the machine; the callback then waits it out.
    max_time = 3 * (time.perf_counter() - start) + 0.5
    start = time.perf_counter()

    def wait_past_the_deadline(tt, info):
        time.sleep(max(0.0, start + max_time - time.perf_counter()) + 0.05)
        return False

    stopped, info = run(Counting(), checkpoint=path, max_time=max_time,
                        callback=wait_past_the_deadline)
    assert info.stop_reason == "max_time" and info.n_sweeps == 1
    assert_same_tt(stopped, first_sweep[0])
    reference_function, resumed_function = Counting(), Counting()
    reference, _ = run(reference_function)
    resumed, resumed_info = run(resumed_function, checkpoint=path)
    assert_same_tt(resumed, reference)
    assert resumed_function.computed == reference_function.computed - resumed_info.n_restored
    assert resumed_info.n_restored >= info.n_evals


def test_max_time_before_the_first_sweep_raises(tmp_path):
    with pytest.raises(MaxTimeReached, match=r"max_time=1e-09 s reached"):
        run(Counting(), max_time=1e-9)


def test_progress_shows_a_bar_over_the_sweeps(capsys):
    run(Counting(), shape=(64,) * 5, progress=True)
    shown = capsys.readouterr().err
    assert "tt_cross" in shown and "sweep" in shown
    assert "evals=" in shown and "val_error=" in shown and "stop=tol" in shown


def test_verbose_lines_clear_the_bar_instead_of_printing_onto_it(capsys):
    """With both on, each sweep's line goes through tqdm, which first clears the bar (a
    carriage return, blanks, a carriage return) so the line is not printed onto it."""
    _, info = run(Counting(), shape=(64,) * 5, progress=True, verbose=True)
    shown = capsys.readouterr()
    assert shown.out.count("sweep ") == info.n_sweeps
    assert len(re.findall(r"\r {20,}\r", shown.err)) >= info.n_sweeps


@pytest.mark.parametrize("settings", [dict(method="tci"), dict(rank=3),
                                      dict(rank=3, oversample=2.0),
                                      dict(rank=3, method="block")])
def test_every_method_and_select_indices_resume(tmp_path, settings):
    path = tmp_path / "method.ckpt"
    first, second = Counting(), Counting()
    shape = (12, 12, 12, 5)
    indices, info = tlc.select_indices(tlc.FunctionTensor(first, shape), tol=1e-10,
                                       random_state=5, checkpoint=path, return_info=True,
                                       n_iter_max=4, **settings)
    again, again_info = tlc.select_indices(tlc.FunctionTensor(second, shape), tol=1e-10,
                                           random_state=5, checkpoint=path, return_info=True,
                                           n_iter_max=4, **settings)
    assert first.computed == info.n_evals > 0 and second.computed == 0
    assert again_info.n_restored == again_info.n_evals == info.n_evals
    assert again.to_dict() == indices.to_dict()


def _asymmetric(indices):
    return 1.0 / (1.0 + indices[:, 0] + 2.0 * indices[:, 1] + 5.0 * indices[:, 2])


@pytest.mark.parametrize("first, second, differs", [
    (lambda f: tlc.QuanticsTensor(f, "grouped"), lambda f: tlc.QuanticsTensor(f, "interleaved"),
     "views="),
    (lambda f: tlc.TransposedTensor(f, (0, 2, 1)), lambda f: tlc.TransposedTensor(f, (2, 1, 0)),
     "views="),
    (lambda f: f, lambda f: tlc.ArrayTensor(np.zeros(f.shape)), "tensor="),
])
def test_the_oversampled_als_cross_refuses_a_checkpoint_of_another_view(tmp_path, first,
                                                                         second, differs):
    """rank= with oversample > 1 runs the block cross of a one-channel wrapper, which hid
    the views and the kind of tensor behind it from the fingerprint: a checkpoint of the
    grouped digits resumed under the interleaved ones gave a TT with error 0.64 reported
    as 0.039."""
    function = tlc.FunctionTensor(_asymmetric, (16, 16, 16))
    path = tmp_path / "oversampled.ckpt"
    settings = dict(method="als", rank=3, oversample=2.0, tol=1e-12, random_state=0,
                    n_iter_max=4, checkpoint=path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", tlc.ToleranceNotMetWarning)
        tlc.tt_cross(first(function), **settings)
        _, info = tlc.tt_cross(first(function), return_info=True, **settings)
        assert info.n_restored == info.n_evals > 0  # the same view resumes
        with pytest.raises(CheckpointMismatchError, match=differs):
            tlc.tt_cross(second(function), **settings)


def _one_based(indices):
    """1/sum(x) of a model that takes 1-based multi-indices, shifted in place."""
    indices += 1
    return 1.0 / GRID[indices - 1].sum(axis=1)


@pytest.mark.parametrize("executor", [None, "threads"])
def test_a_function_that_changes_its_multi_indices_in_place_is_stored_right(tmp_path,
                                                                             executor):
    """The function was handed the very array whose multi-indices the checkpoint then
    stored its values under: shifted in place, every stored pair was wrong, and the rerun
    returned a TT with error 0.14 (1e-12 uninterrupted)."""
    path, shape = tmp_path / "shifted.ckpt", (64,) * 4
    with ThreadPoolExecutor(3) if executor else contextlib.nullcontext() as pool:
        tensor = tlc.FunctionTensor(_one_based, shape, executor=pool)
        first, _ = run(_one_based, shape, checkpoint=path) if pool is None else (
            tlc.tt_cross(tensor, tol=1e-6, random_state=0, checkpoint=path), None)
    store = CheckpointStore(path, shape, _stored_arguments(path))
    try:
        assert len(store) > 0 and store.indices.max() < 64  # 1-based: 64 appeared
        np.testing.assert_array_equal(store.values, 1.0 / GRID[store.indices].sum(axis=1))
    finally:
        store.close()
    second, info = run(_one_based, shape, checkpoint=path)
    assert info.n_restored == info.n_evals
    assert_same_tt(second, first)


def _stored_arguments(path):
    """The arguments in a checkpoint's header."""
    data = path.read_bytes()
    (size,) = struct.unpack_from("<I", data, len(MAGIC))
    return json.loads(data[len(MAGIC) + 4 : len(MAGIC) + 4 + size])["arguments"]


@pytest.mark.parametrize("second_fill", [None, 5.0])
def test_a_checkpoint_of_another_nan_fill_is_refused(tmp_path, second_fill):
    """The checkpoint stores entries as read, NaN voxels already filled: resumed under
    another ``fill_nan`` it served the first fill's values for the restored voxels and the
    second's for the new ones (a TT of neither volume), or, with no fill, NaN voxels read
    as 0 where the volume itself raises."""
    volume = np.add.outer(np.add.outer(np.arange(12.0), np.arange(12.0)), np.arange(12.0))
    volume[:4, :4, :4] = np.nan
    np.save(tmp_path / "nan.npy", volume)
    path = tmp_path / "filled.ckpt"
    settings = dict(rank=3, tol=1e-12, random_state=0, n_iter_max=3, checkpoint=path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", tlc.ToleranceNotMetWarning)
        tlc.tt_cross(tlc.open_volume(tmp_path / "nan.npy", fill_nan=0.0), **settings)
        _, info = tlc.tt_cross(tlc.open_volume(tmp_path / "nan.npy", fill_nan=0.0),
                               return_info=True, **settings)
        assert info.n_restored == info.n_evals > 0  # the same fill resumes
        with pytest.raises(CheckpointMismatchError, match="fill_nan"):
            tlc.tt_cross(tlc.open_volume(tmp_path / "nan.npy", fill_nan=second_fill),
                         **settings)
