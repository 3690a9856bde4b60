"""Inputs the CLI (and open_volume under it) cannot read are named; advice given works."""

import numpy as np
import pytest
import tensorly as tl

import tensorly_cross as tlc
from tensorly_cross import cli

zarr = pytest.importorskip("zarr")


def test_a_file_that_is_not_hdf5_is_named(tmp_path, capsys):
    path = tmp_path / "fake.h5"
    path.write_bytes(b"not an HDF5 file at all")
    with pytest.raises(ValueError, match=f"{str(path)!r} is not an HDF5 file"):
        tlc.open_volume(path)
    assert cli.main(["compress", str(path), "-o", str(tmp_path / "x.tt.npz")]) == \
        cli.EXIT_INPUT
    assert f"{str(path)!r} is not an HDF5 file" in capsys.readouterr().err


def test_the_array_a_zarr_group_error_points_to_opens(tmp_path, capsys):
    group_path = tmp_path / "grp.zarr"
    group = zarr.open_group(str(group_path), mode="w")
    values = np.add.outer(np.arange(6.0), np.arange(5.0))
    group.create_array("a", shape=values.shape, dtype="f8")[:] = values
    with pytest.raises(ValueError, match="is a zarr group") as caught:
        tlc.open_volume(group_path)
    advised = str(caught.value).split("e.g. '")[1].split("'")[0]
    volume = tlc.open_volume(advised)
    assert volume.shape == (6, 5)
    np.testing.assert_array_equal(tl.to_numpy(volume.evaluate(np.array([[2, 3]]))), [5.0])
    output = tmp_path / "a.tt.npz"
    assert cli.main(["compress", advised, "-o", str(output), "-q"]) == cli.EXIT_OK
    assert output.exists()


def test_compress_strict_refuses_a_partly_written_volume(tmp_path, capsys):
    h5py = pytest.importorskip("h5py")
    path = tmp_path / "partial.h5"
    with h5py.File(path, "w") as handle:
        handle.create_dataset("v", shape=(16, 16), chunks=(8, 8), dtype="f4")[:8] = 1.0
    output = tmp_path / "partial.tt.npz"
    assert cli.main(["compress", str(path), "-o", str(output), "--strict", "-q"]) == \
        cli.EXIT_INPUT
    assert "stores 2 of its 4 chunks" in capsys.readouterr().err and not output.exists()
    assert cli.main(["compress", str(path), "-o", str(output), "-q"]) == cli.EXIT_OK


@pytest.mark.parametrize("strict", ["no", 1, None])
def test_strict_must_be_a_bool(tmp_path, strict):
    path = tmp_path / "v.zarr"
    zarr.open_array(str(path), mode="w", shape=(4, 4), dtype="f8")[:] = 1.0
    with pytest.raises(TypeError, match="strict must be True or False"):
        tlc.open_volume(path, strict=strict)


def test_a_group_whose_arrays_sit_in_sub_groups_lists_them(tmp_path):
    group = zarr.open_group(str(tmp_path / "grp.zarr"), mode="w")
    group.create_array("sub/vol", shape=(4, 4), dtype="f4")
    path = str(tmp_path / "grp.zarr")
    with pytest.raises(ValueError, match=r"its arrays: \['sub/vol'\]\. Open one of them, "
                                         r"e\.g\. '.*grp\.zarr/sub/vol'"):
        tlc.open_volume(path)


def test_a_group_of_many_arrays_lists_the_first_ten(tmp_path):
    group = zarr.open_group(str(tmp_path / "grp.zarr"), mode="w")
    for k in range(12):
        group.create_array(f"a{k:02d}", shape=(2,), dtype="f4")
    with pytest.raises(ValueError, match=r"'a09', \.\.\. and 2 more\]"):
        tlc.open_volume(str(tmp_path / "grp.zarr"))


def test_an_hdf5_dataset_reached_only_through_a_link_is_opened(tmp_path):
    h5py = pytest.importorskip("h5py")
    values = np.arange(24.0).reshape(2, 3, 4)
    with h5py.File(tmp_path / "data.h5", "w") as handle:
        handle["vol"] = values
    with h5py.File(tmp_path / "index.h5", "w") as handle:
        handle["linked"] = h5py.ExternalLink("data.h5", "/vol")
    volume = tlc.open_volume(str(tmp_path / "index.h5"))
    assert volume.shape == (2, 3, 4)
    assert float(tl.to_numpy(volume.evaluate(np.array([[1, 2, 3]])))[0]) == values[1, 2, 3]
