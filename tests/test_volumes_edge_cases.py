"""Tests of opening stored volumes (npy, HDF5, zarr, NIfTI, Dask arrays) and reading them safely."""

import os
import re

import h5py
import numpy as np
import pytest
import tensorly as tl
import zarr
from hypothesis import given, settings
from hypothesis import strategies as st

import tensorly_cross as tlc
from tensorly_cross import ArrayTensor, open_volume
from tensorly_cross.errors import NonFiniteValueError
from tensorly_cross.lazy import DaskTensor
from tensorly_cross.lazy.npy import NpyTensor
from tensorly_cross.lazy.sources import (
    READ_ATTEMPTS,
    ChunkReadError,
    ChunkSource,
    MissingChunksError,
    read_retrying,
)

from ._helpers_shared import (
    Failing,
    _chunked,
    _dense,
    _noisy_smooth,
    _random_tt,
    _same_cross_result,
    _same_tt,
    astype_view,
)
from .conftest import host


def _sum_volume():
    """A rank-2 volume of 6 x 7 values: i + j."""
    return np.add.outer(np.arange(6.0), np.arange(7.0))


# B1 ---------------------------------------------------------------------------------------


def test_an_h5py_dataset_passed_directly_is_read_as_open_volume_reads_it(tmp_path):
    h5py = pytest.importorskip("h5py")
    data = _sum_volume()
    path = tmp_path / "volume.h5"
    with h5py.File(path, "w") as handle:
        handle.create_dataset("x", data=data, chunks=(3, 4))
    # Unsorted and repeated multi-indices: h5py itself refuses them.
    points = np.array([[5, 6], [1, 2], [0, 0], [1, 2], [3, 0]])
    with h5py.File(path, "r") as handle:
        dataset = handle["x"]
        values = tlc.lazy_tensor(dataset).evaluate(points)
        direct = tlc.tt_cross(dataset, random_state=0)
        opened = tlc.tt_cross(tlc.open_volume(dataset), random_state=0)
        with pytest.raises(TypeError, match="open_volume"):
            ArrayTensor(dataset).evaluate(points)
    np.testing.assert_array_equal(host(values), data[tuple(points.T)])
    _same_tt(direct, opened)
    np.testing.assert_allclose(host(direct.to_tensor()), data, atol=1e-12)


def test_write_volume_does_not_return_another_shapes_volume_at_its_path(tmp_path):
    # A second write to the same path with another shape returned the path of the first
    # volume, silently: the caller then read data of the wrong shape.
    zarr = pytest.importorskip("zarr")
    from tensorly_cross.datasets import blob_phantom, write_volume

    path = str(tmp_path / "v.zarr")
    write_volume(path, blob_phantom((8, 8, 8), n_blobs=2), (8, 8, 8), chunks=(4, 4, 4))
    with pytest.raises(FileExistsError, match="shape"):
        write_volume(path, blob_phantom((6, 8, 8), n_blobs=2), (6, 8, 8), chunks=(4, 4, 4))
    assert zarr.open_array(path, mode="r").shape == (8, 8, 8)
    # The same shape again is another writer's copy of it: kept, as before.
    write_volume(path, blob_phantom((8, 8, 8), n_blobs=2), (8, 8, 8), chunks=(4, 4, 4))


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


def _zarr_volume(shape=(10, 10), chunks=(3, 3)):
    """An in-memory zarr array of distinct float64 entries, and those entries."""
    data = np.arange(float(np.prod(shape))).reshape(shape)
    array = zarr.create_array(store={}, shape=shape, chunks=chunks, dtype="f8")
    array[:] = data
    return array, data


@pytest.fixture
def nifti_path(tmp_path):
    """A small scaled NIfTI file."""
    nibabel = pytest.importorskip("nibabel")
    image = nibabel.Nifti1Image(np.arange(60, dtype=np.int16).reshape(3, 4, 5), np.eye(4))
    image.header.set_slope_inter(0.5, 1.0)
    path = tmp_path / "volume.nii"
    nibabel.save(image, path)
    return path


@pytest.mark.parametrize("part", ["image", "dataobj"])
def test_a_nibabel_image_or_proxy_is_refused_pointing_at_open_volume(nifti_path, part):
    # Both were wrapped as arrays and failed at the first read with nibabel's messages
    # ("Cannot slice image objects; consider using img.slicer", "Cannot handle fancy
    # indexing"), which name neither the argument nor a way that works.
    import nibabel

    from tensorly_cross import open_volume, tt_cross
    from tensorly_cross.lazy import lazy_tensor

    image = nibabel.load(nifti_path)
    obj = image if part == "image" else image.dataobj
    with pytest.raises(TypeError, match=r"obj is a nibabel .*open_volume.*volume\.nii"):
        lazy_tensor(obj)
    with pytest.raises(TypeError, match=r"tensor is a nibabel .*open_volume"):
        tt_cross(obj, tol=1e-6, random_state=0)
    volume = open_volume(nifti_path)  # the way the message names reads the scaled values
    assert float(volume.evaluate([[2, 3, 4]])[0]) == 59 * 0.5 + 1.0


def _tenfold(block):
    return np.asarray(block[...]) * 10.0


def test_a_dask_array_computed_from_a_zarr_array_reads_the_computed_values():
    # A graph of one store and one task per chunk was taken for a plain view of the
    # store whatever the task computed: this array of 10 * z read as z.
    da = pytest.importorskip("dask.array")
    store, data = _zarr_volume((8, 8), (4, 4))
    computed = da.Array({"store": store, ("tenfold", 0, 0): (_tenfold, "store")}, "tenfold",
                        chunks=((8,), (8,)), dtype="f8")
    lazy = DaskTensor(computed)
    indices = np.array([[1, 1], [7, 0], [1, 1]])
    np.testing.assert_array_equal(np.asarray(lazy.evaluate(indices)),
                                  10.0 * data[tuple(indices.T)])
    # A plain view of the store is still read from the store itself.
    assert type(DaskTensor(da.from_array(store, chunks=4)).source).__name__ == "ZarrSource"


def test_a_switched_backend_is_restored_for_new_threads_too():
    import threading

    pytest.importorskip("torch")
    seen = []
    with tl.backend_context("numpy"):
        with pytest.raises(RuntimeError, match="switched TensorLy's backend"):
            tlc.tt_cross(lambda i: 1.0 / (1.0 + i.sum(axis=1)), shape=(5, 6, 7), tol=1e-10,
                         random_state=0, callback=lambda *a: tl.set_backend("pytorch"))
        thread = threading.Thread(target=lambda: seen.append(tl.get_backend()))
        thread.start()
        thread.join()
    assert seen == ["numpy"]


# --- 5. messages that name the file -------------------------------------------------------


def test_a_nan_read_from_a_npy_volume_names_the_file(tmp_path):
    path = tmp_path / "masked.npy"
    np.save(path, np.full((4, 4, 4), np.nan))
    with pytest.raises(NonFiniteValueError, match=r"masked\.npy' returned nan"):
        tlc.open_volume(path).evaluate([[1, 2, 3]])


def test_a_nan_read_from_a_zarr_volume_names_the_store(tmp_path):
    zarr = pytest.importorskip("zarr")
    path = tmp_path / "masked.zarr"
    array = zarr.create_array(str(path), shape=(4, 4, 4), chunks=(2, 2, 2), dtype="f8")
    array[...] = np.nan
    with pytest.raises(NonFiniteValueError, match=r"masked\.zarr.* returned nan"):
        tlc.open_volume(path).evaluate([[1, 2, 3]])


def test_an_hdf5_file_whose_one_dataset_is_a_broken_link_says_so(tmp_path):
    h5py = pytest.importorskip("h5py")
    path = tmp_path / "linked.h5"
    with h5py.File(path, "w") as handle:
        handle["volume"] = h5py.ExternalLink("elsewhere.h5", "/volume")
    with pytest.raises(KeyError, match=r"could not be resolved: /volume -> '/volume' in "
                                       r"'elsewhere\.h5'"):
        tlc.open_volume(path)


def test_open_volume_refuses_a_dataset_for_a_volume_that_is_not_hdf5(noisy):
    with pytest.raises(ValueError, match="dataset='vol' names an HDF5 dataset"):
        tlc.open_volume(str(noisy), dataset="vol")
    with pytest.raises(ValueError, match="names an HDF5 dataset"):
        tlc.open_volume(np.ones((3, 3)), dataset="vol")


# Mutant: a file cut one byte short taken for a changed file (``size < end - 1``): the
# message no longer said that it is shorter than its header declares.
def test_a_npy_cut_one_byte_short_is_reported_as_truncated(tmp_path):
    path = tmp_path / "cut.npy"
    np.save(path, np.arange(3000.0).reshape(30, 100))
    volume = NpyTensor(path)
    with open(path, "r+b") as handle:
        handle.truncate(path.stat().st_size - 1)
    with pytest.raises(ChunkReadError, match=r"shorter than its header declares: \d+ of"):
        volume.evaluate([[0, 0]])


# -- lazy/sources.py ---------------------------------------------------------------------


class Flaky(ChunkSource):
    """A 4 x 4 source whose first ``failures`` reads raise ``error``."""

    def __init__(self, error, failures):
        super().__init__((4, 4), np.float64, (2, 2), "flaky")
        self.error, self.failures, self.reads = error, failures, 0

    def _read(self, slices):
        self.reads += 1
        if self.reads <= self.failures:
            raise self.error
        return np.ones((2, 2))


# Mutant: every failed read retried (the ``OSError`` cause check dropped): a chunk that
# is corrupt (a ValueError, not an I/O error) was read READ_ATTEMPTS times for nothing.
def test_only_a_read_that_failed_with_an_io_error_is_tried_again():
    chunk = (slice(0, 2), slice(0, 2))
    hiccup = Flaky(OSError(5, "Input/output error"), READ_ATTEMPTS - 1)
    np.testing.assert_array_equal(read_retrying(hiccup, chunk), np.ones((2, 2)))
    assert hiccup.reads == READ_ATTEMPTS
    corrupt = Flaky(ValueError("bad chunk"), 1)
    with pytest.raises(ChunkReadError, match="ValueError: bad chunk"):
        read_retrying(corrupt, chunk)
    assert corrupt.reads == 1


# Mutant: zarr and dask arrays indexed with ``array[columns]`` instead of ``vindex``.
@pytest.mark.parametrize("kind", ["zarr", "dask"])
def test_array_tensor_reads_zarr_and_dask_arrays_point_by_point(kind):
    data = np.arange(24.0).reshape(4, 6)
    if kind == "zarr":
        zarr = pytest.importorskip("zarr")
        array = zarr.zeros((4, 6), chunks=(2, 3), dtype="f8")
        array[:] = data
    else:
        array = pytest.importorskip("dask.array").from_array(data, chunks=(2, 3))
    batch = np.array([[0, 1], [3, 5], [2, 0], [0, 1]])
    np.testing.assert_array_equal(np.asarray(ArrayTensor(array).evaluate(batch)),
                                  data[batch[:, 0], batch[:, 1]])


# -- io.py -------------------------------------------------------------------------------


# Mutant: ``file.h5:/name`` split at its first colon, not its last: a folder whose name
# holds a colon made the path not found.
def test_an_hdf5_dataset_path_is_split_at_the_last_colon(tmp_path):
    h5py = pytest.importorskip("h5py")
    folder = tmp_path / "run:2"
    folder.mkdir()
    with h5py.File(folder / "v.h5", "w") as handle:
        handle["one"] = np.zeros((3, 4))
        handle["two"] = np.arange(12.0).reshape(3, 4)
    volume = open_volume(f"{folder}/v.h5:/two")
    np.testing.assert_array_equal(volume.evaluate([[2, 3], [0, 1]]), [11.0, 1.0])


# Mutant: a file of several datasets opened without naming one (``len(names) < 1``):
# the first dataset was read silently.
def test_an_hdf5_file_of_several_datasets_needs_one_named(tmp_path):
    h5py = pytest.importorskip("h5py")
    path = tmp_path / "two.h5"
    with h5py.File(path, "w") as handle:
        handle["a"] = np.zeros((3, 4))
        handle["b"] = np.ones((3, 4))
    with pytest.raises(KeyError, match=r"holds 2 datasets \['a', 'b'\]"):
        open_volume(str(path))


# Mutant: a NIfTI scaled by an intercept only (slope 1) not taken as scaled: its volume
# was declared int16, the dtype of its stored integers, though it reads them plus 0.5.
def test_a_nifti_scaled_by_an_intercept_only_reads_as_float64(tmp_path):
    nibabel = pytest.importorskip("nibabel")
    data = np.arange(24, dtype=np.int16).reshape(2, 3, 4)
    image = nibabel.Nifti1Image(data, np.eye(4))
    image.header.set_data_dtype(np.int16)
    image.header.set_slope_inter(1.0, 0.5)
    path = str(tmp_path / "intercept.nii")
    nibabel.save(image, path)
    volume = open_volume(path)
    assert volume.source.dtype == np.float64
    np.testing.assert_array_equal(volume.evaluate([[1, 2, 3], [0, 0, 0]]), [23.5, 0.5])


# Mutant: an array inside a zarr group not recognised by its path (``_inside_zarr``
# dropped): ``group.zarr/name`` was refused for its suffix.
def test_an_array_of_a_zarr_group_opens_by_its_path(tmp_path):
    zarr = pytest.importorskip("zarr")
    group = zarr.open_group(str(tmp_path / "group.zarr"), mode="w")
    array = group.create_array("scan", shape=(4, 6), chunks=(2, 3), dtype="f8")
    array[:] = np.arange(24.0).reshape(4, 6)
    volume = open_volume(str(tmp_path / "group.zarr" / "scan"))
    np.testing.assert_array_equal(volume.evaluate([[3, 5], [1, 0]]), [23.0, 6.0])


# -- _reconstruct.py --------------------------------------------------------------------


def _kept_nifti(shape, affine, code=4):
    """What a TT file keeps of a NIfTI input: its affine and base64 header (sform and qform
    code ``code``: 4 is MNI152)."""
    import base64

    nibabel = pytest.importorskip("nibabel")
    image = nibabel.Nifti1Image(np.zeros(shape, dtype=np.float32), affine)
    image.header.set_sform(affine, code=code)
    image.header.set_qform(affine, code=code)
    return dict(affine=np.asarray(affine).tolist(),
                header=base64.b64encode(image.header.binaryblock).decode("ascii"))


# Mutants: a slab's affine moved by its voxel offset in voxels, not through the affine's
# voxel sizes; and the input's sform/qform codes kept only when every axis is offset.
@pytest.mark.parametrize("fixed", [{2: 3}, {0: 1}])
def test_a_nifti_slab_lies_where_it_lay_in_the_volume_in_the_inputs_space(tmp_path, fixed):
    nibabel = pytest.importorskip("nibabel")
    from tensorly_cross._reconstruct import write_nifti

    shape = (4, 5, 6)
    affine = np.array([[2.0, 0, 0, -10], [0, 3.0, 0, 5], [0, 0, 1.5, 7], [0, 0, 0, 1]])
    cores = _random_tt(shape)
    metadata = {"shape": list(shape), "nifti": _kept_nifti(shape, affine)}
    path = str(tmp_path / "slab.nii.gz")
    write_nifti(path, cores, metadata, fixed=fixed)
    written = nibabel.load(path)
    (axis, index), = fixed.items()
    offset = np.zeros(3)
    offset[axis] = index
    np.testing.assert_allclose(written.affine[:3, 3], affine[:3, 3] + affine[:3, :3] @ offset)
    np.testing.assert_allclose(written.affine[:3, :3], affine[:3, :3])
    assert int(written.header["sform_code"]) == 4 and int(written.header["qform_code"]) == 4
    np.testing.assert_allclose(np.asarray(written.dataobj),
                               np.take(_dense(cores), [index], axis=axis), rtol=1e-6)


# Mutant: NIfTI-2 from an axis of 32767 voxels, which NIfTI-1's 16-bit fields hold.
def test_an_axis_of_32767_voxels_is_written_as_nifti_1(tmp_path):
    nibabel = pytest.importorskip("nibabel")
    from tensorly_cross._reconstruct import write_nifti

    cores = _random_tt((32767, 1), rank=1)
    path = str(tmp_path / "long.nii")
    shape, _ = write_nifti(path, cores, {})
    written = nibabel.load(path)
    assert shape == (32767, 1) and int(written.header["sizeof_hdr"]) == 348
    np.testing.assert_allclose(np.asarray(written.dataobj), _dense(cores), rtol=1e-6)


# Mutant: voxels written as float64 by default whatever the cores' dtype.
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_nifti_voxels_default_to_the_cores_floating_dtype(tmp_path, dtype):
    nibabel = pytest.importorskip("nibabel")
    from tensorly_cross._reconstruct import write_nifti

    cores = [core.astype(dtype) for core in _random_tt((4, 3, 5))]
    path = str(tmp_path / "v.nii")
    _, written_dtype = write_nifti(path, cores, {})
    assert written_dtype == np.dtype(dtype)
    assert nibabel.load(path).get_data_dtype() == np.dtype(dtype)


# Mutants: the slower axes of a block cut inside the first axis iterated in C order, not
# NIfTI's Fortran order; and each run cut one voxel short.
@pytest.mark.parametrize("budget", [4, 10, 50])
def test_a_nifti_written_in_blocks_smaller_than_an_axis_holds_the_volume(tmp_path, monkeypatch,
                                                                       budget):
    nibabel = pytest.importorskip("nibabel")
    from tensorly_cross import _reconstruct

    monkeypatch.setattr(_reconstruct, "BLOCK_ENTRIES", budget)
    cores = _random_tt((6, 7, 5, 2), rank=3)
    path = str(tmp_path / "v.nii")
    _reconstruct.write_nifti(path, cores, {})
    np.testing.assert_allclose(np.asarray(nibabel.load(path).dataobj), _dense(cores),
                               rtol=1e-5, atol=1e-5)


def test_a_faint_component_that_float32_data_stores_is_kept():
    """The round-off cut is in float64 epsilons: in float32's (4.8e-7 of the largest), a
    component stored exactly at 2e-7 of the largest, on its own support, was dropped at
    tol=1e-7 (ranks (1, 1), that region's error 100%)."""
    rng = np.random.default_rng(0)
    bright, faint = np.zeros(16), np.zeros(16)
    bright[:8], faint[8:] = rng.random(8) + 0.5, rng.random(8) + 0.5
    tensor = (np.einsum("i,j,k->ijk", bright, bright, bright)
              + 2e-7 * np.einsum("i,j,k->ijk", faint, faint, faint)).astype(np.float32)
    tt = tlc.tt_cross(tensor, tol=1e-7, method="lsq", random_state=0)
    approx = tl.to_numpy(tl.tt_to_tensor(tt)).astype(np.float64)
    region = (slice(8, None),) * 3
    assert tt.rank == (1, 2, 2, 1)
    assert (np.linalg.norm(approx[region] - tensor[region])
            < 1e-3 * np.linalg.norm(tensor[region]))


@settings(max_examples=6, deadline=None)
@given(shape=st.lists(st.integers(3, 9), min_size=3, max_size=3), seed=st.integers(0, 2**16),
       method=st.sampled_from(["lsq", "tci", "als"]))
def test_every_kind_of_stored_volume_gives_the_tt_of_its_float64_array(tmp_path_factory, shape,
                                                                      seed, method):
    """A .npy, zarr or HDF5 file opened by path, and the h5py dataset itself, are read as
    float64: bit for bit the cross of the array in memory (docs/guarantees.rst)."""
    import h5py
    import zarr

    folder = tmp_path_factory.mktemp("volumes")
    array = _noisy_smooth(tuple(shape), seed).astype(np.float32)
    np.save(folder / "v.npy", array)
    store = zarr.open(str(folder / "v.zarr"), mode="w", shape=array.shape, dtype="f4",
                      chunks=(2, 3, 4))
    store[...] = array
    with h5py.File(folder / "v.h5", "w") as handle:
        handle.create_dataset("x", data=array, chunks=(3, 2, 2))
    options = dict(method=method, tol=1e-5, random_state=seed, return_info=True,
                   rank=3 if method == "als" else None)
    expected = tlc.tt_cross(array.astype(np.float64), **options)
    for path in ("v.npy", "v.zarr", "v.h5:x"):
        _same_cross_result(tlc.tt_cross(tlc.open_volume(str(folder / path)), **options), expected)
    with h5py.File(folder / "v.h5", "r") as handle:
        _same_cross_result(tlc.tt_cross(handle["x"], **options), expected)


class _CountedArray(tlc.ArrayTensor):
    """An array that records every multi-index a cross asks it for."""

    def __init__(self, array):
        super().__init__(array)
        self.read = []

    def _evaluate(self, indices):
        self.read.append(np.array(indices, copy=True))
        return super()._evaluate(indices)


@settings(max_examples=12, deadline=None)
@given(shape=st.lists(st.integers(2, 10), min_size=2, max_size=4), seed=st.integers(0, 2**16),
       method=st.sampled_from(["lsq", "auto", "tci", "als"]), share=st.floats(0.02, 1.2),
       val_size=st.sampled_from([None, 0, 20]), view=st.sampled_from([None, "quantics"]))
def test_stored_data_is_read_within_max_evals_each_entry_once(shape, seed, method, share,
                                                             val_size, view):
    """tests/test_fuzz_api.py counts a function's reads, not the least-squares cross's
    (the default on stored data) nor those through a view."""
    counted = _CountedArray(_noisy_smooth(tuple(shape), seed))
    tensor = counted if view is None else tlc.QuanticsTensor(counted)
    max_evals = max(1, int(share * min(counted.size, 3000)))
    try:
        tt, info = tlc.tt_cross(tensor, method=method, tol=1e-6, max_evals=max_evals,
                                val_size=val_size, random_state=seed, return_info=True,
                                rank=2 if method == "als" else None)
    except ValueError as error:  # max_evals too small for a sweep, or not above val_size
        assert re.match(r"max_evals=\d+ (is too small for one sweep|must exceed val_size)",
                        str(error)), error
        tt = info = None
    read = np.concatenate(counted.read) if counted.read else np.zeros((0, len(shape)))
    assert read.shape[0] <= max_evals
    assert np.unique(read, axis=0).shape[0] == read.shape[0]
    if info is not None:
        assert info.n_evals == read.shape[0]
        assert all(np.isfinite(tl.to_numpy(core)).all() for core in tt.factors)


# Mutant (stopping.Validation.confirm): ``and not self.guarded`` dropped from a clear pass:
# on stored data an exact-looking pass was no longer confirmed on fresh entries ("on
# stored data a clear pass is confirmed too").
def test_a_clear_pass_on_stored_data_is_confirmed_on_fresh_entries():
    rng = np.random.default_rng(0)
    array = sum(np.einsum("i,j,k->ijk", *(rng.standard_normal(n) for n in (30, 31, 32)))
                for _ in range(2))
    _, info = tlc.tt_cross(tlc.lazy_tensor(array), method="tci", tol=1e-6, random_state=0,
                           return_info=True)
    assert info.stop_reason == "tol" and info.val_error < 1e-10
    assert info.n_fresh > 0


def test_a_quantics_view_of_a_function_is_not_called_stored_data():
    # Mutant: `and volume.stored` dropped from choose_path's quantics-view branch (a view of
    # entries computed one by one was "a QuanticsTensor of stored data").
    import tensorly_cross as tlc

    function = tlc.FunctionTensor(lambda idx: np.exp(-idx.sum(axis=1) / 8.0), (8, 8, 8))
    choice = tlc.choose_path(tlc.QuanticsTensor(function))
    assert choice.method == "lsq"
    assert "computed one by one" in choice.reason and "stored data" not in choice.reason


def _temporary_files(folder):
    return [name for name in os.listdir(folder) if name.startswith(".tensorly-cross-")]


# --- Windows: a read-only file is not copied onto the temporary file ----------------------


@pytest.mark.skipif(os.name != "nt", reason="Windows' read-only attribute")
def test_replacing_a_read_only_file_on_windows_leaves_no_temporary_file(tmp_path):
    # Python >= 3.13 has os.fchmod on Windows, where it sets the read-only attribute: the
    # temporary file became read-only, the replace onto the read-only file failed, and
    # removing the temporary file failed too (Windows refuses to delete a read-only file).
    path = tmp_path / "a.tt.npz"
    tlc.save_tt(path, [np.ones((1, 3, 1))])
    os.chmod(path, 0o444)
    try:
        with pytest.raises(PermissionError):
            tlc.save_tt(path, [np.full((1, 3, 1), 2.0)], overwrite=True)
        assert _temporary_files(tmp_path) == []
    finally:
        os.chmod(path, 0o666)


def _volume():
    grid = np.linspace(0.0, 1.0, 9)
    return np.add.outer(np.add.outer(grid, np.arange(8.0)), np.arange(7.0) ** 2) + 1.0


def _assert_crossed_as_in_memory(volume):
    """The rank-3 cross of ``volume`` (a stored ``_volume()``) is, to the bit, the one of
    ``_volume()`` in memory."""
    lazy = tlc.tt_cross(volume, rank=3, random_state=0)
    dense = tlc.tt_cross(_volume(), rank=3, random_state=0)
    for ours, theirs in zip(lazy.factors, dense.factors, strict=True):
        np.testing.assert_array_equal(ours, theirs)


def test_strict_refuses_a_sharded_zarr_array_missing_a_whole_shard(tmp_path):
    # zarr counts every inner chunk of a stored shard, those past the array's edge too:
    # 8 of the 12 shards stored counted 96 "chunks" against the 80 of the grid, and
    # strict=True opened an array whose last rows read as the fill value.
    zarr = pytest.importorskip("zarr")
    path = tmp_path / "sharded.zarr"
    array = zarr.create_array(path, shape=(9, 8, 7), chunks=(2, 2, 2), shards=(4, 4, 6),
                              dtype="f8", fill_value=0.0)
    array[:8] = _volume()[:8]  # the shards of rows 8:12 never written
    with pytest.raises(MissingChunksError, match=r"stores 8 of its 12 shards"):
        tlc.open_volume(str(path), strict=True)


def test_strict_opens_a_sharded_zarr_array_with_every_shard_stored(tmp_path):
    zarr = pytest.importorskip("zarr")
    path = tmp_path / "sharded.zarr"
    array = zarr.create_array(path, shape=(9, 8, 7), chunks=(2, 2, 2), shards=(4, 4, 6),
                              dtype="f8", fill_value=0.0)
    array[:] = _volume()
    volume = tlc.open_volume(str(path), strict=True)
    assert volume.evaluate([[8, 7, 6]])[0] == _volume()[8, 7, 6]


def test_a_truncated_nifti_is_refused_when_opened_naming_the_file(tmp_path):
    # Before: it opened, and the first chunk read past the end failed, once a cross or the
    # streaming TT-SVD had read every chunk before it (as .npy files, refused at once).
    nibabel = pytest.importorskip("nibabel")
    path = tmp_path / "cut.nii"
    nibabel.save(nibabel.Nifti1Image(_volume().astype(np.float32), np.eye(4)), path)
    with open(path, "r+b") as handle:
        handle.truncate(path.stat().st_size - 100)
    with pytest.raises(ValueError, match=r"cut\.nii.*shorter than its header declares"):
        tlc.open_volume(str(path))
    with pytest.raises(ValueError, match=r"cut\.nii.*shorter than its header declares"):
        tlc.streaming_tt_svd(str(path), rank=1)


def test_a_nifti_longer_than_its_header_declares_reads_as_in_memory(tmp_path):
    nibabel = pytest.importorskip("nibabel")
    path = tmp_path / "long.nii"
    nibabel.save(nibabel.Nifti1Image(_volume().astype(np.float32), np.eye(4)), path)
    with open(path, "ab") as handle:
        handle.write(b"\0" * 100)
    expected = nibabel.load(path).get_fdata()
    lazy = tlc.tt_cross(tlc.open_volume(str(path)), rank=3, random_state=0)
    dense = tlc.tt_cross(expected, rank=3, random_state=0)
    for ours, theirs in zip(lazy.factors, dense.factors, strict=True):
        np.testing.assert_array_equal(ours, theirs)


def _hdf5_with_filter(path, filter_id):
    """A gzip-compressed HDF5 dataset whose pipeline names filter ``filter_id`` instead
    (its 2-byte id patched in the file): how a file compressed with a plugin (blosc, zstd,
    ...) looks to an HDF5 library without that plugin."""
    h5py = pytest.importorskip("h5py")
    with h5py.File(path, "w") as handle:
        handle.create_dataset("x", data=_volume(), chunks=(3, 4, 7), compression="gzip")
    data = bytearray(path.read_bytes())
    name = data.find(b"deflate\x00")
    assert data[name - 8:name - 6] == (1).to_bytes(2, "little")  # the filter id of gzip
    data[name - 8:name - 6] = filter_id.to_bytes(2, "little")
    path.write_bytes(bytes(data))


def test_an_hdf5_dataset_needing_a_missing_filter_plugin_is_refused_when_opened(tmp_path):
    # Before: it opened, and the first chunk read raised h5py's "can't open directory
    # (/usr/local/lib/plugin)", naming neither the filter nor a cure.
    h5py = pytest.importorskip("h5py")
    if h5py.h5z.filter_avail(32001):
        pytest.skip("the blosc filter is registered here")
    path = tmp_path / "blosc.h5"
    _hdf5_with_filter(path, 32001)
    with pytest.raises(ValueError, match=r"blosc\.h5.*filter 32001.*not available"):
        tlc.open_volume(str(path))
    with pytest.raises(ValueError, match=r"filter 32001.*hdf5plugin"):
        tlc.streaming_tt_svd(str(path), rank=1)
    with h5py.File(path, "r") as handle, pytest.raises(ValueError, match="filter 32001"):
        tlc.tt_cross(handle["x"], rank=2)


def test_an_hdf5_dataset_whose_filters_are_available_reads_as_in_memory(tmp_path):
    h5py = pytest.importorskip("h5py")
    path = tmp_path / "gzip.h5"
    with h5py.File(path, "w") as handle:
        handle.create_dataset("x", data=_volume(), chunks=(3, 4, 7), compression="gzip",
                              shuffle=True, fletcher32=True)
    _assert_crossed_as_in_memory(tlc.open_volume(str(path)))


def _hdf5_with_raw_file(folder):
    """An HDF5 dataset kept in an external raw file (``external=``), named relatively."""
    h5py = pytest.importorskip("h5py")
    path = folder / "outer.h5"
    with h5py.File(path, "w") as handle:
        handle.create_dataset("x", shape=(9, 8, 7), dtype="f8",
                              external=[("raw.bin", 0, _volume().nbytes)])
        handle["x"][...] = _volume()
    return path, folder / "raw.bin"


def test_an_hdf5_raw_file_cut_short_is_refused_not_read_as_zeros(tmp_path, monkeypatch):
    # HDF5 reads the bytes a raw file no longer holds as zeros, without an error: the cross
    # compressed a volume whose last rows were zero.
    monkeypatch.chdir(tmp_path)  # HDF5 finds a relative raw file from the working directory
    path, raw = _hdf5_with_raw_file(tmp_path)
    with open(raw, "r+b") as handle:
        handle.truncate(raw.stat().st_size - 8 * 56)
    with pytest.raises(ValueError, match=r"raw\.bin.*shorter"):
        tlc.open_volume(str(path))


def test_an_hdf5_raw_file_missing_is_refused_when_opened_naming_it(tmp_path, monkeypatch):
    # Before: it opened, and every read failed with "unable to open external raw data
    # file", naming no file.
    monkeypatch.chdir(tmp_path)
    path, raw = _hdf5_with_raw_file(tmp_path)
    raw.unlink()
    with pytest.raises(ValueError, match=r"raw\.bin.*does not exist"):
        tlc.open_volume(str(path))


def test_an_hdf5_raw_file_is_not_looked_for_in_another_working_directory(tmp_path,
                                                                        monkeypatch):
    # HDF5 looks for a relative raw file from the working directory of each read: after a
    # chdir the cross read another file of that name without a word (or failed, "unable to
    # open external raw data file", naming none).
    from tensorly_cross.lazy.sources import ChunkReadError

    monkeypatch.chdir(tmp_path)
    path, _ = _hdf5_with_raw_file(tmp_path)
    volume = tlc.open_volume(str(path))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "raw.bin").write_bytes(np.zeros(9 * 8 * 7).tobytes())  # another of the name
    monkeypatch.chdir(elsewhere)
    with pytest.raises(ChunkReadError, match="working directory"):
        volume.evaluate([[0, 0, 0]])
    monkeypatch.chdir(tmp_path)
    _assert_crossed_as_in_memory(volume)


def test_an_hdf5_raw_file_rewritten_after_opening_is_an_error(tmp_path, monkeypatch):
    # Only the HDF5 file was stamped: a raw file rewritten meanwhile mixed two versions.
    from tensorly_cross.lazy.sources import ChunkReadError

    monkeypatch.chdir(tmp_path)
    path, raw = _hdf5_with_raw_file(tmp_path)
    volume = tlc.open_volume(str(path))
    raw.write_bytes((2.0 * _volume()).tobytes())
    with pytest.raises(ChunkReadError, match=r"raw\.bin.*changed"):
        volume.evaluate([[0, 0, 0]])


def _virtual_dataset(folder):
    """A virtual dataset ``v`` of ``vds.h5`` whose two halves sit in ``src0.h5`` and
    ``src1.h5`` (named relatively: HDF5 finds them next to ``vds.h5``)."""
    h5py = pytest.importorskip("h5py")
    layout = h5py.VirtualLayout(shape=(9, 8, 7), dtype="f8")
    for number, rows in enumerate((slice(0, 4), slice(4, 9))):
        with h5py.File(folder / f"src{number}.h5", "w") as handle:
            handle["d"] = _volume()[rows]
        layout[rows] = h5py.VirtualSource(f"src{number}.h5", "d",
                                          shape=_volume()[rows].shape)
    with h5py.File(folder / "vds.h5", "w") as handle:
        handle.create_virtual_dataset("v", layout, fillvalue=-1.0)
    return folder / "vds.h5"


def test_a_virtual_dataset_whose_source_file_is_missing_is_refused(tmp_path, monkeypatch):
    # HDF5 reads the region of a missing source file as the fill value, without an error:
    # the cross compressed a volume of -1 where the file was gone.
    monkeypatch.chdir(tmp_path)
    path = _virtual_dataset(tmp_path)
    (tmp_path / "src1.h5").unlink()
    with pytest.raises(ValueError, match=r"src1\.h5.*missing"):
        tlc.open_volume(str(path))


def test_a_virtual_dataset_with_its_sources_reads_as_in_memory(tmp_path, monkeypatch):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the sources are found next to the virtual file
    path = _virtual_dataset(tmp_path)
    _assert_crossed_as_in_memory(tlc.open_volume(str(path)))


def test_h5py_views_of_a_dataset_read_as_in_memory(tmp_path):
    # dataset.astype(...) and dataset.fields(...) are h5py's own views: each failed with
    # "'AsTypeView' object has no attribute 'chunks'" (an AttributeError from deep inside).
    h5py = pytest.importorskip("h5py")
    path = tmp_path / "views.h5"
    record = np.zeros(_volume().shape, dtype=[("a", "f8"), ("b", "i4")])
    record["a"] = _volume()
    with h5py.File(path, "w") as handle:
        handle.create_dataset("x", data=_volume(), chunks=(3, 4, 7))
        handle.create_dataset("r", data=record, chunks=(3, 4, 7))
        handle.create_dataset("s", data=["ab", "cd"])
    with h5py.File(path, "r") as handle:
        for view in (astype_view(handle["x"], "f4"), handle["r"].fields("a")):
            expected = np.asarray(view[...], dtype=np.float64)
            dense = tlc.tt_cross(expected, rank=3, random_state=0)
            streamed = tlc.streaming_tt_svd(expected, rank=2, random_state=0)
            for result in (tlc.tt_cross(view, rank=3, random_state=0),
                           tlc.tt_cross(tlc.open_volume(view), rank=3, random_state=0)):
                for ours, theirs in zip(result.factors, dense.factors, strict=True):
                    np.testing.assert_array_equal(ours, theirs)
            ours = tlc.streaming_tt_svd(view, rank=2, random_state=0)
            for core, theirs in zip(ours.factors, streamed.factors, strict=True):
                np.testing.assert_array_equal(core, theirs)
        with pytest.raises(TypeError, match="dtype object"):  # strings: by their dtype
            tlc.open_volume(handle["s"].asstr())


def test_open_volume_refuses_a_numpy_masked_array_as_tt_cross_does():
    # Before: open_volume(masked) read the raw entries, masked or not, without a word.
    masked = np.ma.masked_array(_volume(), mask=_volume() > 40.0)
    with pytest.raises(TypeError, match="masked"):
        tlc.open_volume(masked)


def test_a_virtual_dataset_moved_with_its_absolutely_named_sources_still_opens(tmp_path):
    # HDF5 looks for a source named by an absolute path by its base name next to the
    # virtual file too: the missing-source check must not refuse what HDF5 reads.
    h5py = pytest.importorskip("h5py")
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    layout = h5py.VirtualLayout(shape=(9, 8, 7), dtype="f8")
    for number, rows in enumerate((slice(0, 4), slice(4, 9))):
        with h5py.File(first / f"src{number}.h5", "w") as handle:
            handle["d"] = _volume()[rows]
        layout[rows] = h5py.VirtualSource(str(first / f"src{number}.h5"), "d",
                                          shape=_volume()[rows].shape)
    with h5py.File(first / "vds.h5", "w") as handle:
        handle.create_virtual_dataset("v", layout, fillvalue=-1.0)
    for name in ("vds.h5", "src0.h5", "src1.h5"):
        (first / name).rename(second / name)
    volume = tlc.open_volume(str(second / "vds.h5"))
    np.testing.assert_array_equal(volume.evaluate([[0, 0, 0], [8, 7, 6]]),
                                  _volume()[[0, 8], [0, 7], [0, 6]])


def test_an_h5py_view_notices_its_file_changed_as_a_dataset_does(tmp_path):
    # A dataset's reads check its file's stamp; a view's (dataset.astype) read on.
    h5py = pytest.importorskip("h5py")
    from tensorly_cross.lazy.sources import ChunkReadError

    path = tmp_path / "views.h5"
    with h5py.File(path, "w") as handle:
        handle.create_dataset("x", data=_volume(), chunks=(3, 4, 7))
    with h5py.File(path, "r") as handle:
        volume = tlc.open_volume(astype_view(handle["x"], "f4"))
        volume.evaluate([[0, 0, 0]])
        status = path.stat()
        os.utime(path, ns=(status.st_atime_ns, status.st_mtime_ns + 10**9))  # rewritten
        with pytest.raises(ChunkReadError, match=r"views\.h5.*changed"):
            volume.evaluate([[8, 7, 6]])


def _arange_volume():
    return np.arange(1.0, 1.0 + 6 * 5 * 4).reshape(6, 5, 4)


def _hdf5_with_absolute_raw_file(folder):
    """An HDF5 file whose dataset "x" keeps its data in the raw file ``folder/raw.bin``
    (named by its absolute path, so no working directory is involved)."""
    h5py = pytest.importorskip("h5py")
    path, raw = folder / "external.h5", folder / "raw.bin"
    with h5py.File(path, "w") as handle:
        handle.create_dataset("x", shape=_arange_volume().shape, dtype="f8",
                              external=[(str(raw), 0, _arange_volume().nbytes)])
        handle["x"][...] = _arange_volume()
    return path, raw


def test_a_view_of_a_dataset_whose_raw_file_was_cut_short_is_refused(tmp_path):
    # The dataset was refused, but its view (dataset.astype) read the missing bytes as
    # zeros: the cross compressed a volume whose last rows were zero.
    h5py = pytest.importorskip("h5py")
    path, raw = _hdf5_with_absolute_raw_file(tmp_path)
    os.truncate(raw, _arange_volume().nbytes // 2)
    with h5py.File(path, "r") as handle:
        with pytest.raises(ValueError, match=r"raw\.bin.*shorter"):
            tlc.open_volume(astype_view(handle["x"], "f4"))


def test_a_view_of_a_dataset_notices_its_raw_file_rewritten(tmp_path):
    # Only the HDF5 file's stamp was checked by a view's reads: a raw file rewritten
    # meanwhile mixed two versions of the data.
    h5py = pytest.importorskip("h5py")
    path, raw = _hdf5_with_absolute_raw_file(tmp_path)
    with h5py.File(path, "r") as handle:
        volume = tlc.open_volume(astype_view(handle["x"], "f4"))
        raw.write_bytes((2.0 * _arange_volume()).tobytes())
        with pytest.raises(ChunkReadError, match=r"raw\.bin.*changed"):
            volume.evaluate([[0, 0, 0]])


def test_an_extfile_prefix_of_origin_and_a_folder_name_finds_the_raw_file(tmp_path):
    # HDF5 replaces ${ORIGIN} by the HDF5 file's folder with its trailing separator:
    # "${ORIGIN}raw" is the folder "raw" next to the file. The check joined them as
    # ".../folderraw" and refused a file HDF5 reads. HDF5 reads HDF5_EXTFILE_PREFIX when
    # it starts: set for a fresh interpreter.
    import subprocess
    import sys

    h5py = pytest.importorskip("h5py")
    (tmp_path / "raw").mkdir()
    path = tmp_path / "external.h5"
    with h5py.File(path, "w") as handle:
        handle.create_dataset("x", shape=_arange_volume().shape, dtype="f8",
                              external=[("data.bin", 0, _arange_volume().nbytes)])
    (tmp_path / "raw" / "data.bin").write_bytes(_arange_volume().tobytes())
    script = ("import sys, numpy as np, tensorly_cross as tlc; "
              "print(float(tlc.open_volume(sys.argv[1]).evaluate([[5, 4, 3]])[0]))")
    env = {**os.environ, "HDF5_EXTFILE_PREFIX": "${ORIGIN}raw",
           "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run([sys.executable, "-c", script, str(path)], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-800:]
    assert float(done.stdout) == _arange_volume()[5, 4, 3]


def test_a_prefix_set_in_os_environ_after_start_is_not_where_raw_files_are_checked(
        tmp_path, monkeypatch):
    # HDF5 reads HDF5_EXTFILE_PREFIX once, when it starts: set later (os.environ in a
    # notebook), HDF5 still reads the raw file from the working directory, while the check
    # looked in the prefix. A raw file there cut short read as zeros, unrefused.
    h5py = pytest.importorskip("h5py")
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "external.h5"
    with h5py.File(path, "w") as handle:
        handle.create_dataset("x", shape=_arange_volume().shape, dtype="f8",
                              external=[("raw.bin", 0, _arange_volume().nbytes)])
    (tmp_path / "raw.bin").write_bytes(_arange_volume().tobytes()[: _arange_volume().nbytes // 2])
    (tmp_path / "prefix").mkdir()
    (tmp_path / "prefix" / "raw.bin").write_bytes(_arange_volume().tobytes())
    monkeypatch.setenv("HDF5_EXTFILE_PREFIX", str(tmp_path / "prefix"))
    with pytest.raises(ValueError, match=r"raw\.bin.*shorter"):
        tlc.open_volume(str(path))


def _hdf5_with_a_raw_file_per_frame(folder):
    """An HDF5 dataset "x" of 6 frames of 4 x 3, each frame in its own raw file (a
    detector's layout), the first after a 16-byte header; and those raw files."""
    h5py = pytest.importorskip("h5py")
    frame = 4 * 3 * 8
    raws = [folder / f"frame{number}.bin" for number in range(6)]
    external = [(str(raw), 16 if number == 0 else 0, frame) for number, raw in enumerate(raws)]
    path = folder / "frames.h5"
    with h5py.File(path, "w") as handle:
        handle.create_dataset("x", shape=(6, 4, 3), dtype="f8", external=external)
        handle["x"][...] = np.arange(72.0).reshape(6, 4, 3)
    return path, raws


def test_a_read_checks_the_raw_files_it_reads_and_only_those(tmp_path):
    # Every read checked the stamp of every raw file: with a raw file per frame, a chunk
    # read cost a stat per frame of the whole dataset (400 frames: 20 times slower than
    # before the raw files were checked). A read checks those holding its bytes, which is
    # enough: any of them changed since it was opened raises, and the others' bytes are
    # not read.
    h5py = pytest.importorskip("h5py")
    from tensorly_cross.lazy.sources import as_chunk_source

    path, raws = _hdf5_with_a_raw_file_per_frame(tmp_path)
    with h5py.File(path, "r") as handle:
        source = as_chunk_source(handle["x"])
        status = raws[3].stat()  # frame 3 rewritten
        os.utime(raws[3], ns=(status.st_atime_ns, status.st_mtime_ns + 10**9))
        first = (slice(0, 3), slice(0, 4), slice(0, 3))
        np.testing.assert_array_equal(source.read(first), np.arange(36.0).reshape(3, 4, 3))
        last = (slice(4, 6), slice(1, 2), slice(0, 3))  # frames 4 and 5 only
        np.testing.assert_array_equal(source.read(last),
                                      np.arange(72.0).reshape(6, 4, 3)[4:6, 1:2])
        for touching in [(slice(3, 4), slice(3, 4), slice(2, 3)),  # its last entry
                         (slice(2, 4), slice(3, 4), slice(2, 3)),  # and frame 2's
                         (slice(0, 6), slice(0, 1), slice(0, 1))]:  # every frame's first
            with pytest.raises(ChunkReadError, match=r"frame3\.bin.*changed"):
                source.read(touching)


def test_an_entry_straddling_two_raw_files_checks_both(tmp_path):
    # Raw files of 100 bytes hold 12.5 float64 entries: entry 12 is in both.
    h5py = pytest.importorskip("h5py")
    from tensorly_cross.lazy.sources import as_chunk_source

    raws = [tmp_path / "a.bin", tmp_path / "b.bin"]
    with h5py.File(tmp_path / "halves.h5", "w") as handle:
        handle.create_dataset("x", shape=(25,), dtype="f8",
                              external=[(str(raw), 0, 100) for raw in raws])
        handle["x"][...] = np.arange(25.0)
    with h5py.File(tmp_path / "halves.h5", "r") as handle:
        source = as_chunk_source(handle["x"])
        status = raws[1].stat()
        os.utime(raws[1], ns=(status.st_atime_ns, status.st_mtime_ns + 10**9))
        assert source.read((slice(0, 12),))[-1] == 11.0
        with pytest.raises(ChunkReadError, match=r"b\.bin.*changed"):
            source.read((slice(12, 13),))


def test_write_volume_over_a_file_raises_the_documented_file_exists_error(tmp_path):
    # "FileExistsError: If path already holds something else than this volume": a regular
    # file there raised NotADirectoryError naming the temporary folder, after the whole
    # volume was written.
    pytest.importorskip("zarr")
    from tensorly_cross.datasets import blob_phantom, write_volume

    path = tmp_path / "volume.zarr"
    path.write_text("not a volume")
    calls = []

    def function(points):
        calls.append(len(points))
        return blob_phantom((4, 4, 4))(points)

    with pytest.raises(FileExistsError, match="volume.zarr"):
        write_volume(str(path), function, (4, 4, 4), chunks=(4, 4, 4))
    assert path.read_text() == "not a volume" and not calls
    assert sorted(p.name for p in tmp_path.iterdir()) == ["volume.zarr"]


def test_write_volume_names_a_function_that_returns_the_wrong_number_of_values(tmp_path):
    # "function(indices) -> values for (m, 3) int multi-indices": three values for a slab
    # of 16 failed in NumPy, "cannot reshape array of size 3 into shape (4,4)".
    pytest.importorskip("zarr")
    import numpy as np

    from tensorly_cross.datasets import write_volume

    with pytest.raises(ValueError, match=r"function returned 3 values for 16 multi-indices"):
        write_volume(str(tmp_path / "v.zarr"), lambda points: np.zeros(3), (4, 4, 4),
                     chunks=(4, 4, 4))
    assert list(tmp_path.iterdir()) == []  # its temporary folder removed


def _tt():
    return [np.ones((1, 3, 2)), np.ones((2, 3, 1))]


def test_a_path_without_nul_still_round_trips(tmp_path):
    path = tlc.save_tt(tmp_path / "ok.tt.npz", _tt())
    tt, _ = tlc.load_tt(path)
    assert [np.asarray(core).shape for core in tt] == [(1, 3, 2), (2, 3, 1)]


def test_a_callback_of_a_resumed_run_sees_the_entries_restored_so_far(tmp_path):
    # The callback's info counted the restored entries in n_evals but showed n_restored=0
    # until the run returned: on a replay that evaluated nothing, a callback saw "the
    # function ran n_evals - n_restored" = 1539 times after the first sweep.
    settings = dict(tol=1e-10, random_state=0, n_iter_max=3, checkpoint=tmp_path / "c.ckpt")
    tlc.tt_cross(_chunked(Failing()), **settings)
    seen, rerun = [], Failing()
    _, info = tlc.tt_cross(_chunked(rerun), return_info=True,
                           callback=lambda tt, info: seen.append(info), **settings)
    assert rerun.computed == 0 and len(seen) == info.n_sweeps > 1
    assert [record.n_restored for record in seen] == [record.n_evals for record in seen]
    assert seen[-1].n_restored == info.n_restored
