"""Audit of checkpoints, executors, TT files and open_volume: each test failed before its fix."""

import os
import sys
import threading
from concurrent.futures import CancelledError, ThreadPoolExecutor

import h5py
import numpy as np
import pytest
import tensorly as tl

import tensorly_cross as tlc
from tensorly_cross import CheckpointError
from tensorly_cross.lazy.checkpoint import CheckpointStore
from tensorly_cross.lazy.parallel import evaluate_in_chunks

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
        evaluate_in_chunks(inverse_sum, np.zeros((6, 2), dtype=np.int64), executor,
                           chunk_size=chunk_size)


def test_a_submit_that_returns_no_future_is_named():
    class NoFuture:
        _max_workers = 2

        def submit(self, function, *args):
            return None

    with pytest.raises(TypeError, match=r"executor\.submit returned NoneType"):
        evaluate_in_chunks(inverse_sum, np.zeros((6, 2), dtype=np.int64), NoFuture())


# --- TT files ------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [">f8", ">c16", ">i4", ">f4"])
def test_big_endian_cores_load_in_native_byte_order(tmp_path, dtype):
    # PyTorch refused them ("byte order different from the native byte order"), a
    # ValueError that named no file.
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    cores = [(rng.standard_normal(shape) * 10).astype(dtype)
             for shape in ((1, 3, 2), (2, 4, 1))]
    path = tlc.save_tt(tmp_path / "big.tt.npz", cores)
    for backend in ("numpy", "pytorch"):
        with tl.backend_context(backend):
            tt, _ = tlc.load_tt(path)
            for core, original in zip(tt.factors, cores, strict=True):
                host = core.numpy() if isinstance(core, torch.Tensor) else core
                assert host.dtype.isnative
                np.testing.assert_array_equal(host, original)


def test_save_tt_syncs_the_file_before_publishing_it(tmp_path, monkeypatch):
    # Without fsync before the rename/link, a power loss can publish an empty file under
    # the name: the old file is gone and the new one was never on disk.
    from tensorly_cross import ttfile

    events = []
    real_fsync, real_publish = os.fsync, ttfile._publish
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append("fsync"), real_fsync(fd)))
    monkeypatch.setattr(ttfile, "_publish",
                        lambda *args: (events.append("publish"), real_publish(*args)))
    tlc.save_tt(tmp_path / "a.tt.npz", [np.ones((1, 3, 1))])
    assert "publish" in events and "fsync" in events[: events.index("publish")]
    tt, _ = tlc.load_tt(tmp_path / "a.tt.npz")
    assert tt.rank == (1, 1)


# --- open_volume ---------------------------------------------------------------------------


def test_an_existing_path_with_h5_colon_in_a_folder_name_is_opened(tmp_path):
    # "run.h5:v2/volume.npy" was split at the colon into file "run.h5", dataset "v2/..."
    folder = tmp_path / "run.h5:v2"
    folder.mkdir()
    np.save(folder / "volume.npy", np.arange(12.0).reshape(3, 4))
    volume = tlc.open_volume(str(folder / "volume.npy"))
    assert volume.shape == (3, 4)
    np.testing.assert_array_equal(np.asarray(volume.evaluate(np.array([[2, 3]]))), [11.0])


def test_an_hdf5_dataset_whose_name_holds_a_colon_is_opened_by_its_path(tmp_path):
    # "n.h5:/a:b" was split at the last colon: "path 'n.h5:/a' does not exist".
    path = tmp_path / "n.h5"
    with h5py.File(path, "w") as handle:
        handle["a:b"] = np.arange(6.0).reshape(2, 3)
        handle["a"] = np.zeros((2, 3))
    volume = tlc.open_volume(f"{path}:/a:b")
    np.testing.assert_array_equal(np.asarray(volume.evaluate(np.array([[1, 2]]))), [5.0])
    # A folder named like an HDF5 file with a colon: the file that exists is split at.
    folder = tmp_path / "x.h5:y"
    folder.mkdir()
    with h5py.File(folder / "m.hdf5", "w") as handle:
        handle["v"] = np.arange(6.0).reshape(3, 2)
    volume = tlc.open_volume(f"{folder / 'm.hdf5'}:/v")
    np.testing.assert_array_equal(np.asarray(volume.evaluate(np.array([[2, 1]]))), [5.0])


def test_a_zarr_array_at_the_store_root_is_named_by_its_store_alone(tmp_path):
    # Messages read "zarr array '/x/b.zarr' / returned nan": a stray "/" for the root.
    zarr = pytest.importorskip("zarr")
    from tensorly_cross.lazy.sources import _zarr_name

    root = zarr.create_array(str(tmp_path / "b.zarr"), shape=(4,), dtype="f8")
    assert _zarr_name(root) == f"'{tmp_path / 'b.zarr'}'"
    group = zarr.open_group(str(tmp_path / "g.zarr"), mode="w")
    inner = group.create_array("v", shape=(4,), dtype="f8")
    assert _zarr_name(inner) == f"'{tmp_path / 'g.zarr'}' v"


def test_an_hdf5_dataset_reached_by_a_soft_link_is_opened(tmp_path):
    path = tmp_path / "linked.h5"
    with h5py.File(path, "w") as handle:
        handle["data/real"] = np.arange(6.0).reshape(2, 3)
        handle["alias"] = h5py.SoftLink("/data/real")
    volume = tlc.open_volume(path, dataset="alias")
    np.testing.assert_array_equal(np.asarray(volume.evaluate(np.array([[1, 2]]))), [5.0])
    with pytest.raises(KeyError, match=r"dataset 'data' not found.*linked\.h5"):
        tlc.open_volume(path, dataset="data")  # a group, not a dataset


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


def _rewrite_headers(data, local_offset, central_offset, value, mask=None):
    """``data`` with a 2-byte field of every zip header set (or, with mask, or-ed)."""
    data = bytearray(data)
    for signature, offset in ((b"PK\x03\x04", local_offset), (b"PK\x01\x02", central_offset)):
        start = data.find(signature)
        while start != -1:
            old = int.from_bytes(data[start + offset : start + offset + 2], "little")
            new = old | value if mask else value
            data[start + offset : start + offset + 2] = new.to_bytes(2, "little")
            start = data.find(signature, start + 4)
    return bytes(data)


@pytest.mark.parametrize("what, fields, match", [
    ("encrypted", (6, 8, 0x1, True), "is encrypted"),
    ("deflate64", (8, 10, 9, False), "compressed with zip method 9"),
    ("unknown", (8, 10, 99, False), "compressed with zip method 99"),
])
def test_an_unreadable_zip_member_is_a_tt_file_error_naming_the_file(tmp_path, what, fields,
                                                                     match):
    # zipfile raised RuntimeError ("password required") or NotImplementedError, which
    # load_tt let through without naming the file.
    path = tlc.save_tt(tmp_path / "base.tt.npz", [np.ones((1, 3, 1))])
    forged = tmp_path / f"{what}.tt.npz"
    with open(path, "rb") as stream:
        forged.write_bytes(_rewrite_headers(stream.read(), *fields))
    with pytest.raises(tlc.TTFileError, match=rf"{what}\.tt\.npz.*{match}"):
        tlc.load_tt(forged)


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
