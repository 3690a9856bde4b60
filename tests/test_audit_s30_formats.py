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
