"""Tests of opening stored volumes (npy, HDF5, zarr, NIfTI, Dask arrays) and reading them safely
(needing zarr)."""

import json
import os
import pickle
import shutil
import time
import tracemalloc

import numpy as np
import pytest

from tensorly_cross import TTFileError, lazy_tensor, load_tt, open_volume
from tensorly_cross.lazy.npy import NpyTensor
from tensorly_cross.lazy.sources import ChunkReadError

zarr = pytest.importorskip("zarr")


def _zarr_volume(path, values, zarr_format):
    array = zarr.create_array(str(path), shape=values.shape, chunks=(3, 3, 3),
                              dtype=values.dtype, zarr_format=zarr_format, overwrite=True)
    array[:] = values
    return path


@pytest.mark.parametrize("zarr_format", [2, 3])
@pytest.mark.parametrize("strict", [False, True])
def test_a_zarr_store_deleted_after_opening_raises_instead_of_reading_fill_values(
        tmp_path, zarr_format, strict):
    # Before: every read of a store removed after open_volume returned the fill value
    # (zeros here), strict or not: a cross of it gave a TT of zeros, no error.
    values = np.arange(1.0, 217.0).reshape(6, 6, 6)
    path = _zarr_volume(tmp_path / "volume.zarr", values, zarr_format)
    volume = open_volume(path, strict=strict, cache_bytes=0)
    assert volume.evaluate([[5, 5, 5]])[0] == 216.0
    shutil.rmtree(path)
    with pytest.raises(ChunkReadError, match="volume.zarr"):
        volume.evaluate([[0, 0, 0]])


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_a_zarr_store_rewritten_after_opening_raises_instead_of_mixing_versions(
        tmp_path, zarr_format):
    # Before: an array rewritten in place (same shape and chunks, other values) was read
    # chunk by chunk from the new version after chunks of the old one: a TT of both.
    values = np.arange(1.0, 217.0).reshape(6, 6, 6)
    path = _zarr_volume(tmp_path / "volume.zarr", values, zarr_format)
    volume = open_volume(path, cache_bytes=0)
    assert volume.evaluate([[0, 0, 0]])[0] == 1.0
    time.sleep(0.01)  # a new modification time, even on a coarse clock
    _zarr_volume(path, -values, zarr_format)
    with pytest.raises(ChunkReadError, match="changed after it was opened"):
        volume.evaluate([[5, 5, 5]])


def test_a_zarr_store_left_alone_reads_as_in_memory(tmp_path):
    values = np.arange(1.0, 217.0).reshape(6, 6, 6).astype(">f4")
    path = _zarr_volume(tmp_path / "dir with space é" / "volume.zarr", values, 2)
    volume = open_volume(path, cache_bytes=0)
    indices = np.array(list(np.ndindex(values.shape)))
    np.testing.assert_array_equal(volume.evaluate(indices), values.ravel().astype(float))
    assert volume.chunks_read == 8


def test_an_hdf5_soft_link_to_an_external_link_is_reopened_as_the_same_dataset(tmp_path):
    # Before: h5py names such a dataset by the soft link's path ("/alias") in the external
    # file; reopened there by that name (a pickled copy, as a dask worker or a process
    # pool gets it) it read the external file's own "/alias", another dataset, silently.
    h5py = pytest.importorskip("h5py")
    with h5py.File(tmp_path / "data.h5", "w") as handle:
        handle["group/values"] = np.arange(6.0)
        handle["alias"] = -np.ones(6)
    with h5py.File(tmp_path / "index.h5", "w") as handle:
        handle["external"] = h5py.ExternalLink("data.h5", "/group/values")
        handle["alias"] = h5py.SoftLink("/external")
    volume = open_volume(tmp_path / "index.h5", dataset="alias", cache_bytes=0)
    np.testing.assert_array_equal(volume.evaluate([[0], [5]]), [0.0, 5.0])
    copy = pickle.loads(pickle.dumps(volume))
    np.testing.assert_array_equal(copy.evaluate([[0], [5]]), [0.0, 5.0])


def test_an_hdf5_dataset_with_a_null_dataspace_is_refused_naming_it(tmp_path):
    # Before: TypeError "'NoneType' object is not iterable", naming nothing.
    h5py = pytest.importorskip("h5py")
    with h5py.File(tmp_path / "null.h5", "w") as handle:
        handle.create_dataset("nothing", data=h5py.Empty("f4"))
    with pytest.raises(ValueError, match="nothing.*no shape"):
        open_volume(tmp_path / "null.h5")


@pytest.mark.parametrize("field, value", [("datatype", 1234), ("vox_offset", -1000.0),
                                          ("scl_inter", np.nan)])
def test_a_nifti_header_nibabel_rejects_is_a_value_error_naming_the_file(
        tmp_path, field, value):
    # Before: nibabel's HeaderDataError ("data code 1234 not recognized"), naming no file.
    nibabel = pytest.importorskip("nibabel")
    image = nibabel.Nifti1Image(np.ones((4, 4, 4), dtype=np.int16), np.eye(4))
    image.header.set_slope_inter(2.0, 1.0)
    path = tmp_path / "damaged.nii"
    nibabel.save(image, path)
    image.header[field] = value  # written raw: nibabel would refuse to save it
    with open(path, "r+b") as stream:
        stream.write(image.header.binaryblock)
    with pytest.raises(ValueError, match="damaged.nii"):
        open_volume(path)


def test_a_npy_of_objects_is_refused_with_the_documented_type_error(tmp_path):
    # Before: a ValueError "Array can't be memory-mapped: Python objects in dtype"; the
    # docstring promises a TypeError naming the dtype (objects are never unpickled).
    path = tmp_path / "objects.npy"
    np.save(path, np.array([{"a": 1}, 2], dtype=object), allow_pickle=True)
    with pytest.raises(TypeError, match="object"):
        NpyTensor(path)
    with pytest.raises(TypeError, match="object"):
        open_volume(path)


def test_a_forged_core_count_is_refused_at_once(tmp_path):
    # Before: load_tt listed every name core_0 .. core_{n_cores-1} to compare with the
    # stored ones: n_cores=10**7 took seconds, 10**9 (a 1 KB file) gigabytes of memory.
    # Measured by the memory the refusal takes, with a count the old listing survives:
    # a forged 10**12 sent a regression into an hour-long, machine-filling run, not a
    # failure.
    meta = {"format": "tensorly-cross-tt", "format_version": 1, "n_cores": 10**6}
    path = tmp_path / "forged.tt.npz"
    np.savez(path, core_0=np.ones((1, 2, 1)),
             meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8))
    tracemalloc.start()
    try:
        with pytest.raises(TTFileError, match="n_cores=1000000 "):
            load_tt(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2**20  # the listing of 10**6 names alone took about 70 MB
    assert os.path.exists(path)


def test_a_zarr_chunk_shape_of_zero_is_refused_naming_the_array(tmp_path):
    # Before: "chunks[0]=0 must be >= 1.", naming neither the array nor its file (zarr
    # itself opens such a zarr.json).
    path = tmp_path / "zero.zarr"
    zarr.create_array(str(path), shape=(4, 4), chunks=(2, 2), dtype="f4")[:] = 1.0
    metadata = json.loads((path / "zarr.json").read_text())
    metadata["chunk_grid"]["configuration"]["chunk_shape"] = [0, 2]
    (path / "zarr.json").write_text(json.dumps(metadata))
    with pytest.raises(ValueError, match=r"zero\.zarr.*chunks\[0\]=0"):
        open_volume(path)


VALUES = np.arange(24.0).reshape(2, 3, 4)


def write_volume(path):
    """Write ``VALUES`` to ``path`` in the format its suffix names."""
    name = os.fspath(path)
    if name.endswith(".npy"):
        np.save(name, VALUES)
    elif name.endswith(".h5"):
        h5py = pytest.importorskip("h5py")
        with h5py.File(name, "w") as handle:
            handle["values"] = VALUES
    elif name.endswith(".zarr"):
        zarr.create_array(name, shape=VALUES.shape, dtype="f8")[:] = VALUES
    else:
        nibabel = pytest.importorskip("nibabel")
        nibabel.save(nibabel.Nifti1Image(VALUES, np.eye(4)), name)


@pytest.mark.parametrize("name", ["volume.npy", "volume.h5", "volume.zarr", "volume.nii"])
def test_a_volume_opened_by_a_relative_path_reads_after_a_change_of_directory(
        tmp_path, monkeypatch, name):
    # Before: the relative path was kept, and after os.chdir (a notebook's %cd) every read
    # raised "'volume.npy' was deleted after it was opened" - the file was still there.
    monkeypatch.chdir(tmp_path)
    write_volume(name)
    volume = open_volume(name, cache_bytes=0)
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    np.testing.assert_array_equal(volume.evaluate([[1, 2, 3], [0, 0, 1]]), [23.0, 1.0])


def test_an_hdf5_dataset_of_a_file_opened_by_a_relative_path_reads_after_a_chdir(
        tmp_path, monkeypatch):
    # Before: H5Source kept h5py's relative file name and checked the file by it before
    # each read: after os.chdir every read raised "was deleted after it was opened", and
    # a pickled copy (a worker's) reopened whatever file had that name in the new folder.
    h5py = pytest.importorskip("h5py")
    monkeypatch.chdir(tmp_path)
    with h5py.File("volume.h5", "w") as handle:
        handle["values"] = np.arange(24.0).reshape(2, 3, 4)
    volume = open_volume(h5py.File("volume.h5", "r")["values"], cache_bytes=0)
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    np.testing.assert_array_equal(volume.evaluate([[1, 2, 3]]), [23.0])
    copy = pickle.loads(pickle.dumps(volume))
    np.testing.assert_array_equal(copy.evaluate([[1, 2, 3]]), [23.0])


def test_an_hdf5_file_refused_for_its_dtype_is_closed_and_can_be_rewritten(tmp_path):
    # Before: only a ValueError closed the file; a refused dtype (TypeError) left it open
    # for as long as the exception lived (a notebook keeps the last one), and rewriting
    # the file failed: "unable to truncate a file which is already open".
    h5py = pytest.importorskip("h5py")
    path = tmp_path / "complex.h5"
    with h5py.File(path, "w") as handle:
        handle["values"] = np.zeros((3, 3), dtype=complex)
    with pytest.raises(TypeError, match="complex128") as refused:
        open_volume(path)
    with h5py.File(path, "w") as handle:  # the fix: real values, written over it
        handle["values"] = np.ones((3, 3))
    assert refused.value is not None  # the exception (and its traceback) still lives
    np.testing.assert_array_equal(open_volume(path).evaluate([[2, 2]]), [1.0])


def test_a_zarr_array_crossed_directly_raises_once_its_store_is_deleted(tmp_path):
    # Before: tt_cross(zarr.open(path)) reads through ArrayTensor (zarr's vindex), which
    # checked nothing: with the store deleted it returned a TT of zeros, rank 1.
    from tensorly_cross import lazy_tensor

    values = np.arange(1.0, 217.0).reshape(6, 6, 6)
    path = _zarr_volume(tmp_path / "volume.zarr", values, 3)
    lazy = lazy_tensor(zarr.open(str(path), mode="r"))
    assert lazy.evaluate([[5, 5, 5]])[0] == 216.0
    shutil.rmtree(path)
    with pytest.raises(ChunkReadError, match="volume.zarr.*deleted"):
        lazy.evaluate([[0, 0, 0]])


def _in_a_deleted_directory(tmp_path, monkeypatch):
    gone = tmp_path / "gone"
    gone.mkdir()
    monkeypatch.chdir(gone)
    gone.rmdir()  # os.getcwd() now raises FileNotFoundError


@pytest.mark.parametrize("name", ["volume.npy", "volume.h5", "volume.zarr", "volume.nii"])
def test_an_absolute_path_opens_while_the_working_directory_is_deleted(
        tmp_path, monkeypatch, name):
    # Before: FileNotFoundError "[Errno 2] No such file or directory" from os.getcwd(),
    # naming nothing, for a path that needs no working directory at all.
    path = tmp_path / name
    write_volume(path)
    _in_a_deleted_directory(tmp_path, monkeypatch)
    volume = open_volume(path, cache_bytes=0)
    np.testing.assert_array_equal(volume.evaluate([[1, 2, 3]]), [23.0])


def test_an_hdf5_dataset_opens_while_the_working_directory_is_deleted(tmp_path, monkeypatch):
    h5py = pytest.importorskip("h5py")
    write_volume(tmp_path / "volume.h5")
    _in_a_deleted_directory(tmp_path, monkeypatch)
    with h5py.File(tmp_path / "volume.h5", "r") as handle:
        volume = open_volume(handle["values"], cache_bytes=0)
        np.testing.assert_array_equal(volume.evaluate([[1, 2, 3]]), [23.0])


def test_a_npy_tensor_opened_by_a_relative_path_reads_after_a_change_of_directory(
        tmp_path, monkeypatch):
    # Before: "'volume.npy' was deleted after it was opened", the file still there (the
    # fix for open_volume's relative paths left NpyTensor's own).
    monkeypatch.chdir(tmp_path)
    write_volume("volume.npy")
    volume = NpyTensor("volume.npy")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    np.testing.assert_array_equal(volume.evaluate([[1, 2, 3]]), [23.0])


@pytest.mark.parametrize("another_store_there", [False, True])
def test_a_zarr_array_opened_by_a_relative_path_names_the_change_of_directory(
        tmp_path, monkeypatch, another_store_there):
    # zarr reads the store by its relative path, in whatever directory is current: the
    # read must fail, but "deleted after it was opened" (the store still there) sent the
    # user looking for who deleted it.
    zarr = pytest.importorskip("zarr")
    monkeypatch.chdir(tmp_path)
    write_volume("volume.zarr")
    lazy = lazy_tensor(zarr.open_array("volume.zarr", mode="r"))
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    if another_store_there:
        write_volume("volume.zarr")
    moved = "working directory changed.*relative path 'volume.zarr"
    with pytest.raises(ChunkReadError, match=moved):
        lazy.evaluate([[1, 2, 3]])
