"""Tests of opening stored volumes (npy, HDF5, zarr, NIfTI, Dask arrays) and reading them safely
(needing zarr, h5py and dask)."""

import os

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tensorly_cross import DaskTensor, open_volume
from tensorly_cross.lazy import npy as lazy_npy
from tensorly_cross.lazy.sources import ChunkReadError

from ._helpers_shared import save_npy
from .strategies import seeds

zarr = pytest.importorskip("zarr")
h5py = pytest.importorskip("h5py")
da = pytest.importorskip("dask.array")


def test_a_dask_array_made_from_a_zarr_array_is_still_read_from_the_store(tmp_path):
    array = zarr.create_array(str(tmp_path / "a.zarr"), shape=(8, 8), chunks=(4, 4), dtype="f8")
    array[...] = np.arange(64.0).reshape(8, 8)
    lazy = DaskTensor(da.from_zarr(array))
    assert type(lazy.source).__name__ == "ZarrSource"
    assert np.asarray(lazy.evaluate(np.array([[7, 6]])))[0] == 62.0


@pytest.mark.parametrize(
    "make", [lambda block: block + 1j, lambda block: np.full(block.shape, "a")]
)
def test_a_dask_block_of_a_non_real_dtype_is_refused_not_cast(make):
    array = da.ones((10, 10), chunks=5).map_blocks(make, dtype=float)  # dtype declared: a lie
    with pytest.raises(ChunkReadError, match="dtype .*expected .*real floating-point"):
        DaskTensor(array).evaluate(np.array([[9, 9]]))


def test_a_npy_rewritten_with_another_header_after_opening_raises(tmp_path):
    path = save_npy(tmp_path / "v.npy", np.arange(1000.0).reshape(10, 10, 10))
    lazy = open_volume(path)
    np.save(path, np.zeros((10, 10, 10), dtype=np.float32))  # other dtype, other bytes
    with pytest.raises(ChunkReadError, match="rewritten after it was opened"):
        lazy.evaluate(np.array([[1, 1, 1]]))


def test_a_npy_rewritten_with_the_same_header_raises_instead_of_mixing_versions(tmp_path):
    path = save_npy(tmp_path / "v.npy", np.arange(1000.0).reshape(10, 10, 10))
    lazy = open_volume(path)
    assert np.asarray(lazy.evaluate(np.array([[1, 1, 1]])))[0] == 111.0  # its page is cached
    np.save(path, -np.arange(1000.0).reshape(10, 10, 10))
    os.utime(path, ns=(0, 0))  # another modification time, whatever the clock's resolution
    # Entries read before (cached, or in a TT under construction) are of the old version.
    with pytest.raises(ChunkReadError, match="changed after it was opened"):
        lazy.evaluate(np.array([[2, 2, 2]]))


@given(
    seed=seeds,
    n_points=st.integers(0, 300),
    fortran=st.booleans(),
    dtype=st.sampled_from(["<f8", ">f4", "<i2", "|u1"]),
)
def test_npy_gathers_in_groups_of_pages_give_the_entries(
    tmp_path_factory, seed, n_points, fortran, dtype
):
    rng = np.random.default_rng(seed)
    array = rng.integers(0, 100, size=(9, 70, 33)).astype(dtype)
    array = np.asfortranarray(array) if fortran else array
    path = save_npy(tmp_path_factory.mktemp("npy") / "v.npy", array)
    lazy = lazy_npy.NpyTensor(path, cache_bytes=0)
    lazy_npy.BATCH_PAGES = 3  # many groups in one batch (restored below)
    try:
        indices = np.stack([rng.integers(0, n, n_points) for n in array.shape], axis=1)
        values = np.asarray(lazy.evaluate(indices))
    finally:
        lazy_npy.BATCH_PAGES = 4096
    assert np.array_equal(values, array[tuple(indices.T)].astype(np.float64))


def test_a_npy_batch_over_many_pages_holds_a_bounded_buffer(tmp_path):
    import tracemalloc

    n_pages = 4096  # a 16 MiB file; one point on each of its pages
    path = save_npy(tmp_path / "v.npy", np.arange(n_pages * 512.0))
    lazy = lazy_npy.NpyTensor(path, cache_bytes=0)
    indices = np.arange(0, n_pages * 512, 512)[:, None]
    lazy_npy.BATCH_PAGES = 64  # the bound under test (restored below)
    tracemalloc.start()
    try:
        values = np.asarray(lazy.evaluate(indices))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        lazy_npy.BATCH_PAGES = 4096
    assert np.array_equal(values, indices[:, 0].astype(float))
    assert peak < 4 * 2**20  # not the 16 MiB of all pages at once


@pytest.mark.parametrize("dataset", [3, b"/x", ["x"]])
def test_open_volume_refuses_a_dataset_that_is_not_a_str(tmp_path, dataset):
    path = str(tmp_path / "v.h5")
    with h5py.File(path, "w") as handle:
        handle.create_dataset("x", data=np.ones((4, 4)))
    with pytest.raises(TypeError, match="dataset must be a str"):
        open_volume(path, dataset=dataset)


@pytest.mark.parametrize(("shape", "says"), [((), "a 0-d array"),
                                             ((3, 0, 4), r"shape\[1\]=0 must be >= 1")])
@pytest.mark.parametrize("kind", ["zarr", "h5"])
def test_a_stored_array_with_no_entries_is_refused_naming_the_file(tmp_path, kind, shape, says):
    # The messages came from the generic checks ("shape must have at least one mode, got
    # ()"), without the file's name.
    if kind == "zarr":
        path = str(tmp_path / "scan.zarr")
        zarr.create_array(path, shape=shape, dtype="f8")
    else:
        path = str(tmp_path / "scan.h5")
        with h5py.File(path, "w") as handle:
            handle.create_dataset("volume", shape=shape, dtype="f8")
    with pytest.raises(ValueError, match=says) as caught:
        open_volume(path)
    assert "scan." in str(caught.value)
