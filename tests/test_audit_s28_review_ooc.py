"""Review of audit s28's out-of-core changes (absolute paths, zarr metadata stamps).

Making a volume's path absolute called ``os.getcwd()`` for every path, an absolute one
too: a process whose working directory was deleted (a scratch folder cleaned up, a
notebook started in a temporary directory) could open no volume at all, a bare
``FileNotFoundError`` naming nothing. ``NpyTensor`` opened by a relative path still
claimed its file deleted after a change of directory, and a zarr array opened by a
relative path (whose store zarr itself reads by that path) was said to be "deleted" when
only the working directory changed.
"""


import numpy as np
import pytest

from tensorly_cross import lazy_tensor, open_volume
from tensorly_cross.lazy.npy import NpyTensor
from tensorly_cross.lazy.sources import ChunkReadError

from .test_audit_s28_ooc import write_volume as _write


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
    _write(path)
    _in_a_deleted_directory(tmp_path, monkeypatch)
    volume = open_volume(path, cache_bytes=0)
    np.testing.assert_array_equal(volume.evaluate([[1, 2, 3]]), [23.0])


def test_an_hdf5_dataset_opens_while_the_working_directory_is_deleted(tmp_path, monkeypatch):
    h5py = pytest.importorskip("h5py")
    _write(tmp_path / "volume.h5")
    _in_a_deleted_directory(tmp_path, monkeypatch)
    with h5py.File(tmp_path / "volume.h5", "r") as handle:
        volume = open_volume(handle["values"], cache_bytes=0)
        np.testing.assert_array_equal(volume.evaluate([[1, 2, 3]]), [23.0])


def test_a_npy_tensor_opened_by_a_relative_path_reads_after_a_change_of_directory(
        tmp_path, monkeypatch):
    # Before: "'volume.npy' was deleted after it was opened", the file still there (the
    # fix for open_volume's relative paths left NpyTensor's own).
    monkeypatch.chdir(tmp_path)
    _write("volume.npy")
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
    _write("volume.zarr")
    lazy = lazy_tensor(zarr.open_array("volume.zarr", mode="r"))
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    if another_store_there:
        _write("volume.zarr")
    moved = "working directory changed.*relative path 'volume.zarr"
    with pytest.raises(ChunkReadError, match=moved):
        lazy.evaluate([[1, 2, 3]])
