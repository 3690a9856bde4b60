"""Tests of checkpoints: writing, resuming, refusing and repairing checkpoint files."""

import os
import stat
import subprocess
import sys
import tempfile
import time
import warnings

import numpy as np
import pytest
import tensorly as tl

import tensorly_cross as tlc
from tensorly_cross import CheckpointError, FunctionTensor, QuanticsTensor, TransposedTensor
from tensorly_cross.errors import CheckpointMismatchError
from tensorly_cross.lazy import keys as keys_module
from tensorly_cross.lazy.checkpoint import CheckpointedTensor, CheckpointStore
from tensorly_cross.lazy.keys import KeyScheme

from ._helpers_shared import (
    LOW_RANK_SHAPE,
    SMOOTH_SHAPE,
    VIEWS,
    Calls,
    Failing,
    FailingFunction,
    _chunked,
    _function_for,
    _function_tensor,
    _low_rank,
    _reference_cores,
    _run_child,
    smooth,
)


@pytest.mark.parametrize("function", [tlc.tt_cross, tlc.select_indices])
def test_an_empty_checkpoint_path_is_refused_by_name(function):
    # checkpoint="" failed with FileNotFoundError on a temporary file's rename, after
    # the search had started.
    with pytest.raises(ValueError, match="checkpoint"):
        function(smooth, shape=SMOOTH_SHAPE, random_state=0, checkpoint="")


GRID = np.linspace(1.0, 2.0, 8)


def inverse_sum(indices):
    return 1.0 / GRID[indices].sum(axis=1)


# --- checkpoints ---------------------------------------------------------------------------


@pytest.mark.skipif(sys.platform == "win32", reason="advisory locks are POSIX")
def test_a_checkpoint_in_use_by_another_run_is_refused_and_nothing_is_lost(tmp_path):
    # Two stores on one file each wrote at their own offset: the second overwrote the
    # first's frames, and a rerun silently lost the first run's entries.
    path = tmp_path / "shared.ckpt"
    first = CheckpointStore(path, (5, 5), {})
    try:
        with pytest.raises(CheckpointError, match=r"shared\.ckpt.*in use by another run"):
            CheckpointStore(path, (5, 5), {})
        first.append(np.array([[1, 1]]), np.array([1.0]))
    finally:
        first.close()
    holder = CheckpointStore(path, (5, 5), {})
    try:  # a run on a checkpoint another one holds
        with pytest.raises(CheckpointError, match="in use by another run"):
            tlc.tt_cross(tlc.FunctionTensor(inverse_sum, (5, 5)), checkpoint=path,
                         random_state=0)
    finally:
        holder.close()
    reopened = CheckpointStore(path, (5, 5), {})  # the lock went with close
    np.testing.assert_array_equal(reopened.indices, [[1, 1]])
    np.testing.assert_array_equal(reopened.values, [1.0])
    reopened.close()


def test_a_new_checkpoint_leaves_no_temporary_file(tmp_path):
    store = CheckpointStore(tmp_path / "run.ckpt", (4, 4), {})
    store.close()
    assert sorted(os.listdir(tmp_path)) == ["run.ckpt"]


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX modes")
def test_a_new_checkpoint_gets_the_default_file_mode(tmp_path):
    path = tmp_path / "run.ckpt"
    CheckpointStore(path, (4, 4), {}).close()
    mask = os.umask(0)
    os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask


def test_a_checkpoint_path_that_is_a_dangling_link_is_created(tmp_path):
    link = tmp_path / "run.ckpt"
    link.symlink_to(tmp_path / "gone.ckpt")
    store = CheckpointStore(link, (4, 4), {})
    store.append(np.array([[1, 2]]), np.array([0.5]))
    store.close()
    reopened = CheckpointStore(link, (4, 4), {})
    np.testing.assert_array_equal(reopened.values, [0.5])
    reopened.close()


@pytest.mark.skipif(sys.platform != "linux", reason="fork start method")
def test_a_checkpoint_is_free_again_after_a_run_whose_process_pool_forked(tmp_path):
    # Workers forked while the store was open share its locked file description: closing
    # the parent's file alone would leave the lock held as long as the pool lives.
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    path = tmp_path / "forked.ckpt"
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("fork")) as pool:
        function = tlc.FunctionTensor(inverse_sum, (8, 8, 8), executor=pool)
        first = tlc.tt_cross(function, tol=1e-8, random_state=0, checkpoint=path)
        second, info = tlc.tt_cross(function, tol=1e-8, random_state=0, checkpoint=path,
                                    return_info=True)
    assert info.n_restored == info.n_evals > 0
    for a, b in zip(first.factors, second.factors, strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_checkpoint_that_cannot_be_created_is_named(tmp_path):
    # A guard: errors name the checkpoint asked for, never the temporary file the header
    # is written to first. (A missing folder: as root, a read-only one does not refuse.)
    with pytest.raises(CheckpointError, match=r"checkpoint=.*run\.ckpt': its folder"):
        CheckpointStore(tmp_path / "missing" / "run.ckpt", (4, 4), {})
    assert not (tmp_path / "missing").exists()


def test_a_differentiable_run_does_not_resume_a_plain_runs_checkpoint(tmp_path):
    # Its search neither refines nor rounds (its TT is rebuilt with gradient), so it reads
    # other entries; a plain run's checkpoint binds no "refine" key, as those written
    # before the setting existed, which stay readable.
    from tensorly_cross.errors import CheckpointMismatchError
    from tensorly_cross.options import checkpoint_arguments, cross_options

    grid = np.linspace(0, 1, 10)
    volume = np.exp(-np.add.outer(np.add.outer(grid, grid), grid))
    path = tmp_path / "run.ckpt"
    tlc.tt_cross(volume, tol=1e-3, random_state=0, checkpoint=path)
    tlc.tt_cross(volume, tol=1e-3, random_state=0, checkpoint=path)  # resumes
    with pytest.raises(CheckpointMismatchError, match="differentiable=False there, True here"):
        tlc.tt_cross(volume, tol=1e-3, random_state=0, checkpoint=path, differentiable=True)
    plain = cross_options(volume.shape, True, checkpoint=path)
    assert "refine" not in checkpoint_arguments(plain, 0, tlc.ArrayTensor(volume))


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _reciprocal_sum(n=8, d=3):
    grid = np.linspace(1.0, 2.0, n)
    return tlc.FunctionTensor.on_grid(lambda x: 1.0 / x.sum(axis=1), [grid] * d)


# --- 3. links and FIFOs as destinations ---------------------------------------------------


def test_a_checkpoint_path_that_is_a_link_stays_a_link_and_its_target_gets_the_entries(
        tmp_path):
    target = tmp_path / "shared" / "run.ckpt"
    target.parent.mkdir()
    target.touch()  # an empty file: what a user creates on shared storage
    link = tmp_path / "run.ckpt"
    link.symlink_to(target)
    first = tlc.tt_cross(_reciprocal_sum(), tol=1e-8, random_state=0, checkpoint=link)
    assert link.is_symlink() and target.stat().st_size > 0
    again, info = tlc.tt_cross(_reciprocal_sum(), tol=1e-8, random_state=0, checkpoint=link,
                               return_info=True)
    assert info.n_restored > 0 and link.is_symlink()
    for core, core_again in zip(first, again, strict=True):
        np.testing.assert_array_equal(tl.to_numpy(core), tl.to_numpy(core_again))


def test_a_checkpoint_link_to_a_missing_file_creates_its_target(tmp_path):
    target, link = tmp_path / "target.ckpt", tmp_path / "run.ckpt"
    link.symlink_to(target)
    tlc.tt_cross(_reciprocal_sum(), tol=1e-8, random_state=0, checkpoint=link)
    assert link.is_symlink() and target.is_file() and target.stat().st_size > 0


def test_a_fifo_checkpoint_is_refused_and_left_a_fifo(tmp_path):
    fifo = tmp_path / "pipe.ckpt"
    os.mkfifo(fifo)
    with pytest.raises(CheckpointError, match=r"pipe\.ckpt.*not a regular file"):
        tlc.tt_cross(_reciprocal_sum(), tol=1e-8, random_state=0, checkpoint=fifo)
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)


# --- 4. a read-only checkpoint ------------------------------------------------------------

READ_ONLY_CHECKPOINT = """
    import sys
    import numpy as np
    import tensorly_cross as tlc
    grid = np.linspace(1.0, 2.0, 8)
    tensor = tlc.FunctionTensor.on_grid(lambda x: 1.0 / x.sum(axis=1), [grid] * 3)
    try:
        tlc.tt_cross(tensor, tol=1e-8, random_state=0, checkpoint=sys.argv[1])
    except OSError as error:
        print(type(error).__name__, error)
"""


def test_a_read_only_checkpoint_says_why_it_must_be_writable(tmp_path):
    path = tmp_path / "run.ckpt"
    tlc.tt_cross(_reciprocal_sum(), tol=1e-8, random_state=0, checkpoint=path)
    os.chmod(path, 0o444)
    child = _run_child(READ_ONLY_CHECKPOINT, path, bound_by_modes=True)
    assert child.returncode == 0, child.stderr[-2000:]
    assert child.stdout.startswith("PermissionError") and str(path) in child.stdout
    assert "reading and writing" in child.stdout and "appends" in child.stdout


def _smooth_2d(indices):
    x, y = indices[:, 0] / 1024, indices[:, 1] / 1024
    return np.exp(-(x - 0.3) ** 2 * 20) * np.cos(3 * y) + 0.1


@pytest.mark.parametrize("first, second", [
    (dict(order="grouped"), dict(order="interleaved")),
])
def test_a_checkpoint_of_another_quantics_view_is_refused(tmp_path, first, second):
    function = tlc.FunctionTensor(_smooth_2d, (1024, 1024))
    path = tmp_path / "q.ckpt"
    tlc.tt_cross(tlc.QuanticsTensor(function, **first), tol=1e-8, random_state=0,
                 checkpoint=path)
    _, info = tlc.tt_cross(tlc.QuanticsTensor(function, **first), tol=1e-8, random_state=0,
                           checkpoint=path, return_info=True)
    assert info.n_restored > 0 and info.n_evals == info.n_restored  # the same view resumes
    with pytest.raises(CheckpointMismatchError, match="views=.*interleaved"):
        tlc.tt_cross(tlc.QuanticsTensor(function, **second), tol=1e-8, random_state=0,
                     checkpoint=path)


def test_a_checkpoint_of_a_quantics_view_of_another_shape_is_refused(tmp_path):
    path = tmp_path / "q.ckpt"
    square = tlc.FunctionTensor(_smooth_2d, (1024, 1024))
    tlc.tt_cross(tlc.QuanticsTensor(square), tol=1e-6, random_state=0, checkpoint=path)
    line = tlc.FunctionTensor(lambda i: _smooth_2d(np.stack(np.divmod(i[:, 0], 1024), 1)),
                              (2**20,))  # the same 20 binary digits
    with pytest.raises(CheckpointMismatchError, match="views="):
        tlc.tt_cross(tlc.QuanticsTensor(line), tol=1e-6, random_state=0, checkpoint=path)


def test_a_checkpoint_of_other_transposed_axes_is_refused(tmp_path):
    volume = np.random.default_rng(0).random((16, 16, 16))
    path = tmp_path / "t.ckpt"
    tlc.tt_cross(tlc.TransposedTensor(tlc.ArrayTensor(volume), (0, 2, 1)), rank=3,
                 random_state=0, checkpoint=path)
    with pytest.raises(CheckpointMismatchError, match="axes"):
        tlc.tt_cross(tlc.TransposedTensor(tlc.ArrayTensor(volume), (2, 1, 0)), rank=3,
                     random_state=0, checkpoint=path)


# -- lazy/checkpoint.py ------------------------------------------------------------------


# Mutant: a frame whose own head says it ends before the file does no longer taken for
# damage (``_frame_end(...) < len(data)`` dropped): with the next frame's tag damaged too,
# the file was taken for a torn tail and truncated, its last frame lost.
def _two_frame_checkpoint(path):
    """The bytes of a checkpoint of two one-entry frames (each 16 + 16 + 8 bytes)."""
    store = CheckpointStore(path, (5, 5), {})
    store.append(np.array([[1, 2]]), np.array([0.5]))
    store.append(np.array([[3, 4]]), np.array([0.25]))
    store.close()
    return bytearray(path.read_bytes())


def test_a_damaged_frame_whose_head_says_more_follows_is_refused(tmp_path):
    path = tmp_path / "two.ckpt"
    data = _two_frame_checkpoint(path)
    frame = 16 + 16 + 8
    first, second = len(data) - 2 * frame, len(data) - frame
    data[first + 16] ^= 0x01  # the first frame's payload: its checksum fails
    data[second] ^= 0x20  # the second frame's tag: b"bTCH"
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="is damaged: the frame at byte"):
        CheckpointStore(path, (5, 5), {})
    assert path.read_bytes() == bytes(data)


# Mutant: the torn tail left in place (no truncate) before appending: a new frame shorter
# than the torn bytes left their end behind it, a torn frame again at the next opening.
def test_a_torn_tail_is_cut_off_before_a_shorter_frame_is_appended(tmp_path):
    path = tmp_path / "torn.ckpt"
    store = CheckpointStore(path, (5, 5), {})
    store.append(np.array([[1, 2]]), np.array([0.5]))
    one_frame = path.stat().st_size  # appended frames are flushed at once
    store.append(np.arange(40).reshape(20, 2) % 5, np.arange(20.0))  # 16 + 480 bytes
    store.close()
    with open(path, "r+b") as handle:
        handle.truncate(path.stat().st_size - 8)  # the big frame torn
    with pytest.warns(UserWarning, match="dropped a torn last frame"):
        reopened = CheckpointStore(path, (5, 5), {})
    reopened.append(np.array([[3, 4]]), np.array([0.25]))  # 16 + 24 bytes
    reopened.close()
    assert path.stat().st_size == one_frame + 16 + 24
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing torn is left
        again = CheckpointStore(path, (5, 5), {})
    np.testing.assert_array_equal(again.indices, [[1, 2], [3, 4]])
    np.testing.assert_array_equal(again.values, [0.5, 0.25])
    again.close()


def _root_or_real(indices):
    """Real below 2, complex from 2 on (``np.emath.sqrt`` of ``1 - i``)."""
    return np.emath.sqrt(1.0 - indices[:, 0].astype(float)) + indices[:, 1]


# Mutant: restored real values not widened before complex fresh ones are written among
# them (``np.promote_types`` dropped): the fresh entries lost their imaginary parts; and
# mutant: ``n_restored`` counting the whole batch (``found.size``), not the entries found.
def test_a_complex_batch_among_restored_real_entries_keeps_its_imaginary_parts(tmp_path):
    path = tmp_path / "complex.ckpt"
    lazy = FunctionTensor(_root_or_real, (4, 3))
    first = CheckpointedTensor(lazy, CheckpointStore(path, (4, 3), {}))
    first.evaluate([[0, 0], [1, 2]])  # real: stored as float64
    first.store.close()
    second = CheckpointedTensor(lazy, CheckpointStore(path, (4, 3), {}))
    batch = np.array([[0, 0], [3, 1], [1, 2], [2, 0]])
    values = np.asarray(second.evaluate(batch))
    np.testing.assert_allclose(values, [1.0, np.sqrt(2) * 1j + 1, 2.0, 1j], rtol=0, atol=1e-15)
    assert second.n_restored == 2
    second.store.close()


# Mutant: the header's CRC-32 not compared (only its presence checked): a header damaged
# where its JSON stays valid and its fingerprint whole was read as if intact.
def test_a_header_damaged_outside_its_fingerprint_is_refused(tmp_path):
    path = tmp_path / "header.ckpt"
    CheckpointStore(path, (5, 5), {"tol": 0.001}).close()
    data = bytearray(path.read_bytes())
    where = data.index(b'"format": 1') + len(b'"format": ')
    data[where] ^= 0x08  # "format": 9, still JSON
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="its header is damaged"):
        CheckpointStore(path, (5, 5), {"tol": 0.001})


# Mutant: a frame's dtype field not checked against the stored dtypes: a flipped bit there
# (b"<f8" read as b"<b8") raised NumPy's TypeError instead of the checkpoint's refusal.
def test_a_frame_with_a_damaged_dtype_field_is_refused_as_damage(tmp_path):
    path = tmp_path / "dtype.ckpt"
    data = _two_frame_checkpoint(path)
    first = len(data) - 2 * (16 + 16 + 8)
    assert data[first + 8 : first + 11] == b"<f8"
    data[first + 9] ^= 0x04  # b"<b8"
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="is damaged: the frame at byte"):
        CheckpointStore(path, (5, 5), {})


# Mutant: a stored entry served for any multi-index whose key matches (the comparison of
# the multi-indices themselves dropped): with hashed keys that collide (all weights 0
# here), the first stored value was returned for every other entry.
def test_a_checkpoint_serves_an_entry_only_for_its_own_multi_index(tmp_path, monkeypatch):
    monkeypatch.setattr(keys_module, "_odd_weights",
                        lambda rng, n_modes: np.zeros(n_modes, dtype=np.int64))
    shape = (16,) * 16  # 2**64 entries: hashed keys
    path = tmp_path / "hashed.ckpt"
    lazy = FunctionTensor(Calls(), shape)
    first = CheckpointedTensor(lazy, CheckpointStore(path, shape, {}))
    first.evaluate(np.zeros((1, 16), dtype=np.int64))
    first.store.close()
    second = CheckpointedTensor(lazy, CheckpointStore(path, shape, {}))
    batch = np.array([[0] * 16, [1] * 16, [2] + [0] * 15])
    np.testing.assert_array_equal(np.asarray(second.evaluate(batch)),
                                  [1.0, 1.0 + sum(10.0**k for k in range(16)), 3.0])
    assert second.n_restored == 1
    second.store.close()


# Mutants: the least-squares cross's default oversampling (1.5) replaced by 1.0; the
# TCI-to-least-squares handover switched on for an explicit method="tci" (only "auto" hands
# over); a checkpoint's arguments holding ``refine`` at its default (checkpoints written
# before it existed were then refused).
def test_method_defaults_handover_and_checkpoint_arguments():
    from tensorly_cross import FunctionTensor
    from tensorly_cross.options import checkpoint_arguments, cross_options

    shape = (8, 8, 8)
    assert cross_options(shape, stored=True).oversample == 1.5  # auto: lsq on stored data
    assert cross_options(shape, method="lsq").oversample == 1.5
    assert cross_options(shape, rank=2, method="als").oversample == 1.0
    assert cross_options(shape, method="auto").handover  # a function: TCI, then lsq
    assert not cross_options(shape, method="tci").handover
    tensor = FunctionTensor(lambda indices: np.ones(len(indices)), shape)
    options = cross_options(shape, method="tci", checkpoint="run.ckpt")
    arguments = checkpoint_arguments(options, 0, tensor)
    assert "refine" not in arguments and arguments["random_state"] == 0
    assert "refine" in checkpoint_arguments(cross_options(shape, method="tci",
                                                          checkpoint="run.ckpt",
                                                          refine=False), 0, tensor)


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


def _smooth(indices):
    return 1.0 / (1.0 + indices.sum(axis=1))


def test_max_time_in_the_first_batch_in_chunks_says_the_checkpoint_resumes(tmp_path):
    """The deadline met inside the run's first batch (its held-out entries), which chunks
    now stop at: the MaxTimeReached that reached the caller spoke only of chunks ('reached
    after 3 of 42 chunks of a batch'), not that no sweep completed nor that the
    checkpoint holds what was read, as it does for a deadline met in a sweep."""

    def slow(indices):
        time.sleep(0.05)
        return _smooth(indices)

    lazy = tlc.FunctionTensor(slow, (8, 8, 8), chunk_size=4)
    with pytest.raises(tlc.MaxTimeReached, match="before the first sweep.*rerun to resume"):
        tlc.tt_cross(lazy, rank=2, random_state=0, max_time=0.12,
                     checkpoint=str(tmp_path / "run.ckpt"))


@pytest.mark.parametrize("as_tensor", ["torch 1-d", "torch 0-d", "list of torch 0-d"])
def test_ranks_as_tensors_with_a_checkpoint_and_a_max_rank(tmp_path, as_tensor):
    """Ranks as a backend's integer tensor, newly taken: with a checkpoint, the run failed
    with a bare 'TypeError: iteration over a 0-d tensor' (the checkpoint's JSON header);
    and a fixed rank above an explicit max_rank, refused for a list, was let through."""
    torch = pytest.importorskip("torch")
    rank = {"torch 1-d": torch.tensor([1, 3, 3, 1]), "torch 0-d": torch.tensor(3),
            "list of torch 0-d": [1, torch.tensor(3), torch.tensor(3), 1]}[as_tensor]
    lazy = tlc.FunctionTensor(_smooth, (6, 6, 6))
    got = tlc.tt_cross(lazy, rank=rank, random_state=0, checkpoint=str(tmp_path / "c"))
    again = tlc.tt_cross(lazy, rank=[1, 3, 3, 1], random_state=0,
                         checkpoint=str(tmp_path / "c"))  # the same run: it resumes
    assert tuple(got.rank) == tuple(again.rank) == (1, 3, 3, 1)
    with pytest.raises(ValueError, match="exceeds max_rank=2"):
        tlc.tt_cross(lazy, rank=rank, max_rank=2, random_state=0)


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


def _cosine(shape):
    """An exact TT of rank 2: crosses recover it to round-off."""
    return tlc.FunctionTensor(lambda idx: np.cos(idx.sum(axis=1) / 9.0), shape)


# Mutant (checkpoint.CheckpointStore): only a missing file is new, not an empty one: an
# empty file (what tempfile.mkstemp leaves) was refused as "not a checkpoint".
def test_an_empty_file_is_a_new_checkpoint_and_resumes(tmp_path):
    path = tmp_path / "run.ckpt"
    path.write_bytes(b"")
    settings = dict(tol=1e-8, random_state=0, return_info=True, checkpoint=path)
    first, info = tlc.tt_cross(_cosine((8,) * 3), **settings)
    assert info.n_restored == 0 and path.stat().st_size > 0
    again, rerun = tlc.tt_cross(_cosine((8,) * 3), **settings)
    assert rerun.n_restored == rerun.n_evals == info.n_evals
    assert all(np.array_equal(a, b) for a, b in zip(first.factors, again.factors, strict=True))


_POISONED = {}  # key -> multi-index that fails once: shared by the copies dask pickles


class _FailsOnce:
    """1 + sum(x), but the chunk holding ``_POISONED[key]`` sleeps, then raises (once)."""

    def __init__(self, key, poison):
        self.key = key
        _POISONED[key] = np.asarray(poison)

    def __call__(self, indices):
        import time

        poison = _POISONED.get(self.key)
        if poison is not None and (indices == poison).all(axis=1).any():
            _POISONED.pop(self.key, None)
            time.sleep(0.5)  # the other worker's group finishes first
            raise RuntimeError("transient failure")
        return 1.0 + indices.sum(axis=1)


# Mutant (parallel._finished_results): a finished dask group's results put back one chunk
# short (``results[start:stop - 1]``): its last chunk was lost to the checkpoint.
def test_a_finished_dask_group_is_kept_whole_by_the_checkpoint(tmp_path):
    distributed = pytest.importorskip("distributed")
    from tensorly_cross.lazy.checkpoint import CheckpointedTensor, CheckpointStore

    from .test_dask import loopback_cluster  # two workers of one thread, on loopback

    chunk, shape = 4, (8, 8)
    batch = np.stack([np.arange(16) // 8, np.arange(16) % 8], axis=1).astype(np.int64)
    with loopback_cluster() as cluster, distributed.Client(cluster) as client:
        function = _FailsOnce("dask-group", batch[-1])  # in the second worker's group
        lazy = tlc.FunctionTensor(function, shape, executor=client, chunk_size=chunk)
        store = CheckpointStore(tmp_path / "run.ckpt", shape, {})
        try:
            with pytest.raises(RuntimeError, match="transient failure"):
                CheckpointedTensor(lazy, store).evaluate(batch)
        finally:
            store.close()
    kept = CheckpointStore(tmp_path / "run.ckpt", shape, {})  # the entries read back
    kept.close()
    # The first worker's group, chunks 0 and 1, finished: both are kept.
    np.testing.assert_array_equal(kept.indices, batch[: 2 * chunk])
    np.testing.assert_array_equal(kept.values, 1.0 + batch[: 2 * chunk].sum(axis=1))


# Mutant (api._entry_source): the deadline put in front of the checkpoint instead of behind
# it: a rerun past max_time was refused even the entries it only read back.
def test_a_rerun_replays_its_checkpoint_whatever_max_time(tmp_path):
    settings = dict(tol=1e-8, random_state=0, return_info=True, checkpoint=tmp_path / "c")
    first, info = tlc.tt_cross(_cosine((8,) * 3), **settings)
    again, rerun = tlc.tt_cross(_cosine((8,) * 3), max_time=1e-9, **settings)
    assert rerun.stop_reason == info.stop_reason == "tol"
    assert rerun.n_restored == rerun.n_evals == info.n_evals
    assert all(np.array_equal(a, b) for a, b in zip(first.factors, again.factors, strict=True))


# Mutant (options.checkpoint_arguments): the rank bound as given, not written out: a rerun
# of rank=2 as rank=[1, 2, 2, 1] (the same run) was refused.
def test_a_checkpoint_binds_the_written_out_rank(tmp_path):
    settings = dict(method="als", tol=1e-8, random_state=0, return_info=True,
                    checkpoint=tmp_path / "c")
    _, info = tlc.tt_cross(_cosine((8,) * 3), rank=2, **settings)
    _, rerun = tlc.tt_cross(_cosine((8,) * 3), rank=[1, 2, 2, 1], **settings)
    assert rerun.n_restored == rerun.n_evals == info.n_evals


def _temporary_files(folder):
    return [name for name in os.listdir(folder) if name.startswith(".tensorly-cross-")]


# --- a checkpoint given as a private empty file (tempfile.mkstemp) -----------------------


@pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")
def test_a_checkpoint_in_a_mkstemp_file_stays_private(tmp_path):
    # mkstemp creates the file with mode 0o600; the checkpoint's header replaced it with a
    # file of the umask's mode (0o644): the entries of the tensor became world-readable.
    descriptor, path = tempfile.mkstemp(dir=tmp_path, suffix=".ckpt")
    os.close(descriptor)
    previous = os.umask(0o022)
    try:
        tlc.tt_cross(lambda index: np.sum(index, axis=1).astype(float), shape=(4, 4, 4),
                     rank=2, random_state=0, checkpoint=path)
    finally:
        os.umask(previous)
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert os.path.getsize(path) > 0
    assert _temporary_files(tmp_path) == []


@pytest.mark.parametrize("view_name", ["transposed", "quantics_of_transposed"])
def test_checkpoint_keeps_finished_chunks_through_a_view(tmp_path, view_name):
    # The chunks a function finished before a failure are kept by a checkpoint, so that
    # the rerun does not compute them again; through a view they were all lost.
    dense = _low_rank()
    path = tmp_path / "run.ckpt"
    reference = FailingFunction(dense)
    expected = tlc.tt_cross(VIEWS[view_name](FunctionTensor(reference, LOW_RANK_SHAPE)), tol=1e-10,
                            random_state=2)
    function, tensor = _function_for(view_name, dense, fail_at=30)
    with pytest.raises(RuntimeError, match="lost a node"):
        tlc.tt_cross(VIEWS[view_name](tensor), tol=1e-10, random_state=2, checkpoint=path)
    first = {tuple(row) for row in np.concatenate(function.computed)}
    rerun, tensor = _function_for(view_name, dense)
    tt, info = tlc.tt_cross(VIEWS[view_name](tensor), tol=1e-10, random_state=2,
                            checkpoint=path, return_info=True)
    second = {tuple(row) for row in np.concatenate(rerun.computed)}
    assert not first & second  # nothing computed twice
    assert info.n_restored == len(first)
    assert info.n_evals == len(first) + len(second)
    for core, expected_core in zip(tt.factors, expected.factors, strict=True):
        np.testing.assert_array_equal(core, expected_core)


class Doubled(tlc.LazyTensor):
    """A view of the user's own (``.lazy``, as the library's views): twice the entries."""

    def __init__(self, lazy):
        super().__init__(lazy.shape)
        self.lazy = lazy

    def _evaluate(self, indices):
        return 2.0 * np.asarray(self.lazy.evaluate_checked(indices))


@pytest.mark.parametrize("first, second", [
    (lambda x: QuanticsTensor(x, "grouped"), lambda x: QuanticsTensor(x, "interleaved")),
    (lambda x: TransposedTensor(x, (1, 0, 2)), lambda x: TransposedTensor(x, (0, 1, 2))),
])
def test_checkpoint_sees_views_below_a_view_of_the_users(tmp_path, first, second):
    # The views bound into a checkpoint were looked for at the top only: under a view of
    # the user's own, a checkpoint of the grouped digits resumed as interleaved ones gave
    # a TT with error 1.33 reported as 1.6e-15.
    dense = _low_rank((8, 8, 8))
    path = tmp_path / "run.ckpt"
    tlc.tt_cross(Doubled(first(tlc.ArrayTensor(dense))), tol=1e-10, random_state=0,
                 checkpoint=path)
    with pytest.raises(tlc.CheckpointMismatchError, match="views"):
        tlc.tt_cross(Doubled(second(tlc.ArrayTensor(dense))), tol=1e-10, random_state=0,
                     checkpoint=path)


@pytest.mark.parametrize("first, second, named", [
    (dict(), dict(method="tci"), "method='auto' there, 'tci' here"),
    (dict(method="tci"), dict(), "method='tci' there, 'auto' here"),
])
def test_a_checkpoint_mismatch_names_the_arguments_tt_cross_takes(tmp_path, first, second,
                                                                  named):
    # "a checkpoint of ... other arguments raises CheckpointMismatchError, which names what
    # differs" (docs/scale.rst): method="auto" against "tci" was named "handover=True there,
    # False here", an argument tt_cross has not.
    import tensorly_cross as tlc

    path = tmp_path / "run.ckpt"
    tlc.tt_cross(_function_tensor(), tol=1e-8, random_state=0, checkpoint=path, **first)
    with pytest.raises(tlc.CheckpointMismatchError) as caught:
        tlc.tt_cross(_function_tensor(), tol=1e-8, random_state=0, checkpoint=path, **second)
    assert named in str(caught.value) and "handover" not in str(caught.value)


def test_a_checkpoint_mismatch_names_differentiable(tmp_path):
    # differentiable=True is part of the fingerprint (docs/scale.rst); its mismatch was
    # named "refine=None there, False here".
    torch = pytest.importorskip("torch")
    import tensorly as tl

    import tensorly_cross as tlc

    path = tmp_path / "run.ckpt"
    with tl.backend_context("pytorch"):
        f = tlc.FunctionTensor(
            lambda idx: 1.0 / (1.0 + torch.as_tensor(idx, dtype=torch.float64).sum(1)), (8,) * 3)
        tlc.tt_cross(f, tol=1e-8, random_state=0, checkpoint=path, method="tci")
        with pytest.raises(tlc.CheckpointMismatchError) as caught:
            tlc.tt_cross(f, tol=1e-8, random_state=0, checkpoint=path, method="tci",
                         differentiable=True)
    message = str(caught.value)
    assert "differentiable=False there, True here" in message and "refine" not in message


def test_a_checkpoint_of_tt_cross_refused_by_select_indices_says_why(tmp_path):
    # select_indices searches as differentiable=True does (no refinement): a plain
    # tt_cross's checkpoint is another run's; the message named "refine", no argument.
    import tensorly_cross as tlc

    path = tmp_path / "run.ckpt"
    tlc.tt_cross(_function_tensor(), tol=1e-8, random_state=0, checkpoint=path)
    with pytest.raises(tlc.CheckpointMismatchError) as caught:
        tlc.select_indices(_function_tensor(), tol=1e-8, random_state=0, checkpoint=path)
    message = str(caught.value)
    assert "refine" not in message
    assert "select_indices searches as tt_cross(..., differentiable=True) does" in message


def test_a_checkpoint_path_ending_in_a_separator_is_refused_as_a_folder(tmp_path):
    # "runs/" names a folder; it created a FILE "runs" holding the checkpoint (a later
    # mkdir runs failed), where an existing folder is refused and save_tt refuses both.
    with pytest.raises(CheckpointError, match="folder"):
        tlc.tt_cross(_chunked(Failing()), tol=1e-6, random_state=0,
                     checkpoint=f"{tmp_path / 'runs'}/")
    assert not (tmp_path / "runs").exists()


def test_a_checkpoint_interrupted_while_it_is_indexed_is_not_left_locked(tmp_path,
                                                                         monkeypatch):
    # Ctrl-C while a run sorted the keys of a large checkpoint (seconds for 1e8 entries),
    # after the store had taken the file's lock and before the run's try/finally closed
    # it: the store stayed open while the traceback lived (IPython keeps the last one),
    # and every rerun was refused as "in use by another run". The interrupt is injected
    # right after the real key computation, as a handler run there would raise it.
    settings = dict(tol=1e-6, random_state=0, checkpoint=tmp_path / "c.ckpt")
    tlc.tt_cross(_chunked(Failing()), **settings)
    real_keys = KeyScheme.keys

    def keys_then_interrupt(self, indices):
        real_keys(self, indices)
        raise KeyboardInterrupt

    monkeypatch.setattr(KeyScheme, "keys", keys_then_interrupt)
    with pytest.raises(KeyboardInterrupt) as interrupted:  # its traceback kept alive
        tlc.tt_cross(_chunked(Failing()), **settings)
    monkeypatch.undo()
    rerun = Failing()
    _, info = tlc.tt_cross(_chunked(rerun), return_info=True, **settings)
    assert interrupted.tb is not None
    assert rerun.computed == 0 and info.n_restored == info.n_evals


def test_a_checkpoint_path_with_a_nul_character_is_refused_for_it():
    # os's "embedded null byte" was taken for a path that is not a regular file: the
    # message said "a FIFO, socket or device".
    with pytest.raises(ValueError, match="NUL") as refused:
        tlc.tt_cross(_chunked(Failing()), random_state=0, checkpoint="run\0.ckpt")
    assert "FIFO" not in str(refused.value)


def test_a_checkpoint_in_a_file_taken_for_a_folder_is_named_as_such(tmp_path):
    # "run.ckpt/part" under an existing FILE run.ckpt was refused as "its folder ... does
    # not exist", though it does, as a file.
    (tmp_path / "run.ckpt").write_bytes(b"")
    with pytest.raises(CheckpointError, match="is a file, not a folder"):
        tlc.tt_cross(_chunked(Failing()), random_state=0,
                     checkpoint=tmp_path / "run.ckpt" / "part")


PATH_SHAPE = (6, 6, 6)


def _function(indices):
    x = 1.0 + indices / 5.0
    return 1.0 / x.sum(axis=1)


@pytest.mark.parametrize("tail", [".", ".."])
def test_a_checkpoint_path_ending_in_a_dot_component_is_refused_as_a_folder(tmp_path, tail):
    # "runs/." names the folder runs, as "runs/" does (refused): with runs missing, a FILE
    # "runs" was created for the checkpoint ("runs/."), or the message said "a FIFO,
    # socket or device" for the folder above it ("runs/..").
    with pytest.raises(CheckpointError, match="folder") as refused:
        tlc.tt_cross(_function, shape=PATH_SHAPE, random_state=0,
                     checkpoint=os.path.join(tmp_path / "runs", tail))
    assert "FIFO" not in str(refused.value)
    assert not (tmp_path / "runs").exists()


class BytesPath:
    """An os.PathLike whose path is bytes (as os.scandir(b"...") entries are)."""

    def __init__(self, path):
        self.path = os.fsencode(path)

    def __fspath__(self):
        return self.path


def test_a_checkpoint_path_like_of_bytes_is_used_as_its_path(tmp_path):
    # The docs take any os.PathLike; one of bytes failed with "a bytes-like object is
    # required, not 'str'" (the NUL check), before it "Can't mix strings and bytes".
    path = tmp_path / "run.ckpt"
    first = tlc.tt_cross(_function, shape=PATH_SHAPE, random_state=0, checkpoint=BytesPath(path))
    assert path.exists()
    counted = []

    def counting(indices):
        counted.append(len(indices))
        return _function(indices)

    second, info = tlc.tt_cross(counting, shape=PATH_SHAPE, random_state=0,
                                checkpoint=BytesPath(path), return_info=True)
    assert not counted and info.n_restored == info.n_evals > 0
    for a, b in zip(first.factors, second.factors, strict=True):
        np.testing.assert_array_equal(a, b)
