"""Audit s30 of the out-of-core formats: real files in tmp_path, read lazily, must give the
in-memory result or be refused clearly, naming the file. Each test failed before its fix."""

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
