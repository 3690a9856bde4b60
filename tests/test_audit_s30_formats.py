"""Audit s30 of the out-of-core formats: real files in tmp_path, read lazily, must give the
in-memory result or be refused clearly, naming the file. Each test failed before its fix."""

import os

import numpy as np
import pytest

import tensorly_cross as tlc
from tensorly_cross.lazy.sources import MissingChunksError


def _volume():
    grid = np.linspace(0.0, 1.0, 9)
    return np.add.outer(np.add.outer(grid, np.arange(8.0)), np.arange(7.0) ** 2) + 1.0


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
    lazy = tlc.tt_cross(tlc.open_volume(str(path)), rank=3, random_state=0)
    dense = tlc.tt_cross(_volume(), rank=3, random_state=0)
    for ours, theirs in zip(lazy.factors, dense.factors, strict=True):
        np.testing.assert_array_equal(ours, theirs)


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
    lazy = tlc.tt_cross(volume, rank=3, random_state=0)
    dense = tlc.tt_cross(_volume(), rank=3, random_state=0)
    for ours, theirs in zip(lazy.factors, dense.factors, strict=True):
        np.testing.assert_array_equal(ours, theirs)


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
    lazy = tlc.tt_cross(tlc.open_volume(str(path)), rank=3, random_state=0)
    dense = tlc.tt_cross(_volume(), rank=3, random_state=0)
    for ours, theirs in zip(lazy.factors, dense.factors, strict=True):
        np.testing.assert_array_equal(ours, theirs)


def astype_view(dataset, dtype):
    """``dataset.astype(dtype)``, h5py's view; skips where it is h5py 3.8's ``AstypeWrapper``
    (our floor), which has no shape: refused as any object without one."""
    view = dataset.astype(dtype)
    if not hasattr(view, "shape"):
        pytest.skip(f"{type(view).__name__} (h5py < 3.9) is not an array view")
    return view


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


def _npy_with_header(path, header):
    """A .npy file (format 1.0) whose header text is ``header``, padded as NumPy pads it."""
    header += " " * (63 - (10 + len(header)) % 64) + "\n"
    with open(path, "wb") as stream:
        stream.write(b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little"))
        stream.write(header.encode("latin1") + b"\0" * 1024)


@pytest.mark.parametrize("header", [
    "{'descr': '<f8', ",  # cut short: NumPy's tokenizer raised tokenize.TokenError
    "{'descr': '<f8', 'fortran_order': False, 'shape': (2, (3,",
])
def test_a_npy_header_cut_short_is_a_value_error_naming_the_file(tmp_path, header):
    from tensorly_cross.stream.blocks import volume_source

    path = tmp_path / "cut.npy"
    _npy_with_header(path, header)
    for open_it in (tlc.open_volume, volume_source):  # the cross's reader, the stream's
        with pytest.raises(ValueError, match=r"cut\.npy.*cut short or malformed"):
            open_it(str(path))


def test_a_npy_header_declaring_a_size_too_large_says_so(tmp_path):
    # Before: "its header declares a negative size" for a positive one too large to map.
    from tensorly_cross.stream.blocks import volume_source

    path = tmp_path / "huge.npy"
    _npy_with_header(path, "{'descr': '<f8', 'fortran_order': False, "
                           "'shape': (99999999999999999999,), }")
    for open_it in (tlc.open_volume, volume_source):
        with pytest.raises(ValueError, match=r"huge\.npy.*too large") as caught:
            open_it(str(path))
        assert "negative" not in str(caught.value)


def _masked_dask():
    da = pytest.importorskip("dask.array")
    data = da.from_array(_volume(), chunks=(3, 4, 7))
    return da.ma.masked_array(data, mask=data > 40.0)


@pytest.mark.parametrize("read", [
    lambda x: tlc.tt_cross(x, rank=2, random_state=0),
    lambda x: tlc.open_volume(x),
    lambda x: tlc.streaming_tt_svd(x, rank=2, random_state=0),
    lambda x: tlc.DaskTensor(x),
])
def test_a_dask_array_of_masked_chunks_is_refused_as_a_masked_array_is(read):
    # Before: every reader dropped the mask and crossed the masked entries' raw values,
    # where a NumPy masked array is refused.
    with pytest.raises(TypeError, match="masked"):
        read(_masked_dask())


def test_open_volume_refuses_a_numpy_masked_array_as_tt_cross_does():
    # Before: open_volume(masked) read the raw entries, masked or not, without a word.
    masked = np.ma.masked_array(_volume(), mask=_volume() > 40.0)
    with pytest.raises(TypeError, match="masked"):
        tlc.open_volume(masked)


def test_a_chunk_read_as_a_masked_array_is_an_error_naming_the_chunk():
    # A reader whose blocks come back masked (a dask array whose meta says otherwise):
    # the mask was dropped by np.asarray.
    da = pytest.importorskip("dask.array")
    from tensorly_cross.lazy.sources import ChunkReadError

    data = da.from_array(_volume(), chunks=(3, 4, 7))
    masked = data.map_blocks(lambda block: np.ma.masked_greater(block, 40.0),
                             meta=np.empty((0, 0, 0)))
    with pytest.raises(ChunkReadError, match=r"chunk \[.*masked"):
        tlc.tt_cross(tlc.open_volume(masked), rank=2, random_state=0)
    with pytest.raises(ChunkReadError, match=r"chunk \[.*masked"):  # filled: asarray'd first
        tlc.tt_cross(tlc.open_volume(masked, fill_nan=0.0), rank=2, random_state=0)


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
