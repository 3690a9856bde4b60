"""Choosing between a cross and the streaming TT-SVD for a stored volume."""

import numpy as np
import pytest

import tensorly_cross as tlc
from tensorly_cross.cost import _Geometry, choose_path, cross_share, storage_geometry

zarr = pytest.importorskip("zarr")


def test_gzip_files_are_always_streamed(tmp_path):
    choice = choose_path(tlc.lazy_tensor(np.ones((4, 4, 4))), path=str(tmp_path / "a.nii.gz"))
    assert choice.method == "stream" and "gzip" in choice.reason


def test_arrays_in_memory_are_streamed_functions_crossed():
    # An array in memory: the stream reads it at no storage cost, exactly, and was faster
    # (docs/real_volumes.rst); it was "lsq", against what docs/choosing.rst says.
    assert choose_path(tlc.lazy_tensor(np.ones((8, 8, 8)))).method == "stream"
    assert choose_path(np.ones((8, 8, 8))).method == "stream"
    function = tlc.FunctionTensor(lambda idx: idx.sum(axis=1) * 1.0, (8, 8, 8))
    assert choose_path(function).method == "lsq"


def test_small_chunks_of_a_large_volume_favour_the_cross_large_ones_the_stream():
    fine = _Geometry((4096,) * 3, (8, 8, 8))
    coarse = _Geometry((1024,) * 3, (64, 64, 64))
    assert cross_share(fine, 8, 1.5) < 0.25 < cross_share(coarse, 8, 1.5)


def test_the_share_grows_with_the_rank():
    geometry = _Geometry((2048,) * 3, (16, 16, 16))
    shares = [cross_share(geometry, rank, 1.5) for rank in (4, 16, 64)]
    assert shares == sorted(shares) and 0.0 < shares[0] < shares[-1] <= 1.0


def test_a_chunked_store_and_its_transposed_view_are_measured(tmp_path):
    path = str(tmp_path / "v.zarr")
    array = zarr.create_array(path, shape=(30, 40, 50), chunks=(10, 20, 25), dtype="f8")
    array[:] = 1.0
    volume = tlc.open_volume(path)
    assert storage_geometry(volume).unit_shape == (10, 20, 25)
    view = tlc.TransposedTensor(volume, (0, 2, 1))
    geometry = storage_geometry(view)
    assert geometry.shape == (30, 50, 40) and geometry.unit_shape == (10, 25, 20)
    choice = choose_path(volume)
    assert choice.method == "stream" and choice.cross_share > 0.25


def test_a_npy_page_spans_rows_of_a_short_last_mode(tmp_path):
    # A 4 KiB page holds 64 rows of a last mode of 8 float64s: modelled as a run of 8
    # voxels, the cross was estimated at 19% of the file and read all of it.
    from tensorly_cross.cost import _page_block

    assert _page_block((400, 400, 8), 512) == (1, 64, 8)
    assert _page_block((10, 4, 8), 512) == (10, 4, 8)
    assert _page_block((5, 6, 1000), 512) == (1, 1, 512)
    path = tmp_path / "short.npy"
    np.save(path, np.random.default_rng(0).random((400, 400, 8)))
    choice = tlc.choose_path(tlc.open_volume(path), rank=2)
    assert choice.method == "stream" and choice.cross_share > 0.9



@pytest.mark.parametrize(("dtype", "order", "unit"), [
    (np.uint8, "C", (2, 48, 40)), (np.float64, "C", (1, 12, 40)),
    (np.uint8, "F", (64, 48, 1)), (np.float32, "F", (64, 16, 1))])
def test_a_npy_page_holds_entries_of_the_file_s_own_size_and_order(tmp_path, dtype, order,
                                                                   unit):
    # Every .npy was costed as 8 bytes per entry in C order: a uint8 file's pages hold 8x
    # more voxels than modelled (estimated 15% of the file, read 33%).
    path = tmp_path / "volume.npy"
    array = np.lib.format.open_memmap(path, "w+", dtype, (64, 48, 40),
                                      fortran_order=order == "F")
    del array
    assert storage_geometry(tlc.open_volume(path)).unit_shape == unit


@pytest.mark.parametrize("shape", [(), (0, 4), (3, 0, 2)])
def test_a_volume_with_no_mode_or_an_empty_one_is_refused(tmp_path, shape):
    # A 0-d array, or an empty zarr array, got a "lsq" choice ("entries are read one by
    # one at no storage cost") for a volume that neither path can compress.
    store = zarr.open_array(str(tmp_path / "v.zarr"), mode="w", shape=shape or (1,),
                            chunks=tuple(max(n, 1) for n in shape) or (1,), dtype="f8")
    for volume in ((np.ones(shape), store) if shape else (np.array(1.0),)):
        with pytest.raises(ValueError, match=r"volume has shape .*at least one mode and "
                                             r"every mode size >= 1"):
            choose_path(volume)
