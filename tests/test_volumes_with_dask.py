"""Tests of opening stored volumes (npy, HDF5, zarr, NIfTI, Dask arrays) and reading them safely
(needing dask)."""

import os
import sys
import warnings

import h5py
import numpy as np
import pytest
import zarr

import tensorly_cross as tlc
from tensorly_cross.datasets import blob_phantom, write_volume
from tensorly_cross.lazy.sources import MissingChunksError, as_chunk_source

from ._helpers_shared import _binary_blobs, _nan_volume, _open_as, _zarr_volume

da = pytest.importorskip("dask.array")


def _all_entries(lazy):
    indices = np.indices(lazy.shape).reshape(len(lazy.shape), -1).T
    return np.asarray(lazy.evaluate(indices)).reshape(lazy.shape)


# --- dask arrays over a store ------------------------------------------------------------


def test_a_dask_array_whose_reads_swap_regions_of_its_store_reads_its_own_values(tmp_path):
    # One store and one getter per chunk was taken for a plain view of the store, whatever
    # region each getter read: this array of the store's halves swapped (what older dask's
    # slice fusion makes of x[::-1]) read as the store itself.
    from dask.array.core import getter

    store, data = _zarr_volume(tmp_path / "a.zarr", (8,), (4,))
    graph = {"store": store, ("swapped", 0): (getter, "store", (slice(4, 8),)),
             ("swapped", 1): (getter, "store", (slice(0, 4),))}
    swapped = da.Array(graph, "swapped", chunks=((4, 4),), dtype="f8")
    expected = swapped.compute()
    assert np.array_equal(expected, np.concatenate([data[4:], data[:4]]))
    np.testing.assert_array_equal(_all_entries(tlc.DaskTensor(swapped)), expected)
    # A getter per chunk that reads its own chunk is still read from the store itself.
    plain = {"store": store, ("plain", 0): (getter, "store", (slice(0, 4),)),
             ("plain", 1): (getter, "store", (slice(4, 8),))}
    view = da.Array(plain, "plain", chunks=((4, 4),), dtype="f8")
    assert type(as_chunk_source(view)).__name__ == "ZarrSource"
    assert type(as_chunk_source(da.from_zarr(store))).__name__ == "ZarrSource"


@pytest.mark.parametrize("kind", ["zarr group", "hdf5 file", "hdf5 group"])
def test_a_group_given_for_an_array_is_refused_naming_what_to_pass(tmp_path, kind):
    # DaskTensor(group) failed with "AttributeError: 'Group' object has no attribute
    # 'shape'", deep in the chunk source.
    if kind == "zarr group":
        group = zarr.open_group(str(tmp_path / "g.zarr"), mode="w")
        group.create_array("volume", shape=(3, 3), dtype="f8")
    else:
        handle = h5py.File(tmp_path / "g.h5", "w")
        handle.create_dataset("inner/volume", data=np.ones((3, 3)))
        group = handle if kind == "hdf5 file" else handle["inner"]
    with pytest.raises(TypeError, match=r"a group.*not an array.*one of its arrays"):
        tlc.DaskTensor(group)


@pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")
def test_an_array_tensor_of_a_matrix_reads_its_entries():
    # np.matrix indexed by two index arrays gives a (1, m) matrix: "ArrayTensor returned
    # values of shape (1, 2) for 2 multi-indices"; lazy_tensor reads it as its array.
    matrix = np.matrix(np.arange(6.0).reshape(2, 3))
    lazy = tlc.ArrayTensor(matrix)
    np.testing.assert_array_equal(np.asarray(lazy.evaluate([[1, 2], [0, 1]])), [5.0, 1.0])


def test_an_array_tensor_of_a_sparse_matrix_is_refused_with_the_conversion():
    # A scipy.sparse matrix (np.matrix semantics) failed at the first read with a shape
    # error; lazy_tensor refuses it by name, and so does ArrayTensor now.
    sparse = pytest.importorskip("scipy.sparse")
    with pytest.raises(TypeError, match=r"array is a scipy.sparse csr_matrix: pass "
                                        r"array.toarray\(\)"):
        tlc.ArrayTensor(sparse.csr_matrix(np.eye(3)))


# --- open_volume -------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".H5", ".Hdf5"])
def test_an_upper_case_hdf5_suffix_names_its_dataset_after_a_colon(tmp_path, suffix):
    # "VOL.H5:/b" was taken for a file name (the suffix test was case-sensitive there, and
    # nowhere else): FileNotFoundError of a file that exists.
    path = tmp_path / f"VOL{suffix}"
    with h5py.File(path, "w") as handle:
        handle["a"] = np.zeros((2, 3))
        handle["b"] = np.arange(6.0).reshape(2, 3)
    volume = tlc.open_volume(f"{path}:/b")
    np.testing.assert_array_equal(_all_entries(volume), np.arange(6.0).reshape(2, 3))


@pytest.mark.parametrize("kind", ["zarr", "hdf5"])
def test_strict_checks_the_store_behind_a_dask_array(tmp_path, kind):
    # open_volume(da.from_zarr(z), strict=True) read a partly written store without a
    # word, as its missing chunks' fill values (the zarr array itself was refused).
    if kind == "zarr":
        store = zarr.create_array(str(tmp_path / "a.zarr"), shape=(8,), chunks=(4,),
                                  dtype="f8", fill_value=0.0)
    else:
        handle = h5py.File(tmp_path / "a.h5", "w")
        store = handle.create_dataset("x", shape=(8,), chunks=(4,), dtype="f8")
    store[:4] = 1.0
    volume = da.from_array(store, chunks=4)
    with pytest.raises(MissingChunksError, match=r"stores 1 of its 2 chunks"):
        tlc.open_volume(volume, strict=True)
    assert tlc.open_volume(volume).shape == (8,)  # without strict: read as it is
    if kind == "hdf5":
        handle.close()


# --- TT files ----------------------------------------------------------------------------


def test_save_tt_refuses_cp_and_tucker_tensors_by_name(tmp_path):
    # Both have .factors: a CPTensor failed in NumPy ("setting an array element with a
    # sequence"), a TuckerTensor was called cores that "do not chain into a TT".
    from tensorly.cp_tensor import CPTensor
    from tensorly.tucker_tensor import TuckerTensor

    cp = CPTensor((np.ones(2), [np.ones((3, 2)), np.ones((4, 2))]))
    tucker = TuckerTensor((np.ones((2, 2)), [np.ones((3, 2)), np.ones((4, 2))]))
    for tensor in (cp, tucker):
        with pytest.raises(TypeError, match=rf"tt is a TensorLy {type(tensor).__name__}"):
            tlc.save_tt(tmp_path / "x.tt.npz", tensor)
    assert not os.listdir(tmp_path)


def _umask_now():
    """The process's umask, read without changing it (Linux's /proc)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    pytest.skip("no Umask line in /proc/self/status")


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads /proc")
def test_save_tt_never_changes_the_process_umask(tmp_path):
    # save_tt read the umask by setting it to 0 and back: any file another thread created
    # meanwhile was world-writable. Watched after every builtin call save_tt makes.
    seen = set()

    def watch(frame, event, arg):
        if event == "c_return":
            seen.add(_umask_now())

    previous = os.umask(0o027)
    try:
        sys.setprofile(watch)
        try:
            tlc.save_tt(tmp_path / "a.tt.npz", [np.ones((1, 3, 1))])
        finally:
            sys.setprofile(None)
    finally:
        os.umask(previous)
    assert seen == {0o027}
    assert os.stat(tmp_path / "a.tt.npz").st_mode & 0o777 == 0o640
    assert os.listdir(tmp_path) == ["a.tt.npz"]


# --- procedural volumes ------------------------------------------------------------------


def _index_sum(indices):
    return indices.sum(axis=1).astype(float)


@pytest.mark.parametrize(("shape", "chunks", "says"), [
    ((4, 4), (2, 2), r"shape must be 3 ints"),
    ((2, 2, 2, 2), (2, 2, 2, 2), r"shape must be 3 ints"),
    ((4, 0, 4), (2, 2, 2), r"shape must be 3 ints >= 1"),
    ((4, 4, 4), (2, 2), r"chunks must be 3 ints"),
    ((4, 4, 4), (0, 2, 2), r"chunks must be 3 ints >= 1"),
    ((4.0, 4, 4), (2, 2, 2), r"shape must be 3 ints"),
])
def test_write_volume_refuses_what_is_not_a_3d_volume_by_name(tmp_path, shape, chunks, says):
    # A 2-D shape raised IndexError, a 4-D one an IndexError deep in zarr, chunks of 0
    # "range() arg 3 must not be zero".
    with pytest.raises((TypeError, ValueError), match=says):
        write_volume(str(tmp_path / "v.zarr"), _index_sum, shape, chunks=chunks)
    assert not os.listdir(tmp_path)


def test_blob_phantom_refuses_a_shape_that_is_not_3d_by_name():
    # It returned a function that failed at its first call ("operands could not be
    # broadcast together with shapes (2,2) (3,)").
    with pytest.raises(ValueError, match=r"shape must be 3 ints"):
        blob_phantom((8, 8))


def test_write_volume_does_not_hand_back_another_functions_volume(tmp_path):
    # A path already holding a volume of the same shape was returned as the new volume,
    # whatever values it held: the caller read the other function's data.
    path = str(tmp_path / "v.zarr")
    write_volume(path, _index_sum, (4, 4, 4), chunks=(2, 2, 2))
    with pytest.raises(FileExistsError, match=r"v\.zarr.*other values"):
        write_volume(path, lambda indices: np.zeros(len(indices)), (4, 4, 4), chunks=(2, 2, 2))
    # The same function again (a second demo writing the same volume) keeps it.
    assert write_volume(path, _index_sum, (4, 4, 4), chunks=(4, 4, 4)) == path
    np.testing.assert_array_equal(zarr.open_array(path, mode="r")[...],
                                  np.indices((4, 4, 4)).sum(axis=0))
    assert os.listdir(tmp_path) == ["v.zarr"]


# -- fill_nan in a dtype that cannot hold the value ----------------------------------------


def test_fill_nan_keeps_the_stored_dtype_where_it_holds_the_value(tmp_path):
    volume = _nan_volume(np.float32)
    lazy = _open_as("zarr", volume, tmp_path, 0.5)
    assert lazy.source.dtype == np.float32
    assert _open_as("zarr", volume, tmp_path, 0.1).source.dtype == np.float64


# -- a closed HDF5 file ---------------------------------------------------------------------


@pytest.fixture
def closed_dataset(tmp_path):
    with h5py.File(tmp_path / "a.h5", "w") as handle:
        handle["x"] = np.ones((8, 8, 8))
    handle = h5py.File(tmp_path / "a.h5", "r")
    dataset = handle["x"]
    handle.close()
    return dataset


@pytest.mark.parametrize("entry", [
    lambda d: tlc.open_volume(d),
    lambda d: tlc.streaming_tt_svd(d),
    lambda d: tlc.tt_cross(d),
    lambda d: tlc.choose_path(d),
    lambda d: tlc.tensor_train_cross(d, 2),
    lambda d: tlc.lazy_tensor(d),
])
def test_a_dataset_of_a_closed_hdf5_file_is_named(closed_dataset, entry):
    # h5py's bare "RuntimeError: Unable to synchronously get dataspace" from hasattr(shape).
    with pytest.raises(ValueError, match="h5py Dataset of a closed file"):
        entry(closed_dataset)


# -- interpolating crosses of stored piecewise-constant data --------------------------------


def test_a_clear_pass_on_stored_data_is_confirmed_on_fresh_entries():
    # Which starts of TCI pass on a binary mask depends on ties between pivots, so on the
    # BLAS build (seed 8 did on one machine and stalled on another): the first start of
    # twelve that passes is the one checked.
    mask = _binary_blobs(0)
    for seed in range(12):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", tlc.ToleranceNotMetWarning)
            _, info = tlc.tt_cross(mask, tol=0.05, method="tci", random_state=seed,
                                   return_info=True)
        if info.stop_reason == "tol":
            break
    assert info.stop_reason == "tol" and info.val_error < 1e-10
    assert info.n_heldout >= 1900  # 999 held out, then as many fresh
