"""Tests of opening stored volumes (npy, HDF5, zarr, NIfTI, Dask arrays) and reading them safely
(needing nibabel)."""

import os
import pickle
import re

import numpy as np
import pytest

import tensorly_cross as tlc
from tensorly_cross.lazy.sources import ChunkReadError

nibabel = pytest.importorskip("nibabel")

from nibabel.testing import data_path  # noqa: E402


def _write_nifti(path, data):
    nibabel.save(nibabel.Nifti1Image(data, np.eye(4)), path)


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_a_nifti_replaced_after_opening_raises_instead_of_mixing_versions(tmp_path, suffix):
    path = str(tmp_path / f"v{suffix}")
    _write_nifti(path, np.ones((6, 5, 4), dtype=np.float32))
    volume = tlc.open_volume(path)
    other = str(tmp_path / f"other{suffix}")
    _write_nifti(other, np.zeros((6, 5, 4), dtype=np.float32))
    os.replace(other, path)
    with pytest.raises(ChunkReadError, match="changed after it was opened"):
        volume.evaluate(np.array([[0, 0, 0]]))


def test_a_nifti_source_sent_to_a_worker_checks_the_file_it_reopens(tmp_path):
    path = str(tmp_path / "v.nii")
    _write_nifti(path, np.arange(120, dtype=np.float32).reshape(6, 5, 4))
    source = tlc.open_volume(path).source
    on_worker = pickle.loads(pickle.dumps(source))
    assert np.array_equal(on_worker.read((slice(0, 2), slice(0, 5), slice(0, 4))),
                          np.arange(40, dtype=np.float32).reshape(2, 5, 4))
    with open(path, "r+b") as handle:  # rewritten in place: same inode, new contents
        handle.seek(-4, os.SEEK_END)
        handle.write(np.float32(-1).tobytes())
    os.utime(path, ns=(0, 0))
    with pytest.raises(ChunkReadError, match="changed after it was opened"):
        on_worker.read((slice(0, 2), slice(0, 5), slice(0, 4)))


def test_an_unchanged_nifti_reads_as_written(tmp_path):
    path = str(tmp_path / "v.nii.gz")
    data = np.random.default_rng(0).random((6, 5, 4)).astype(np.float32)
    _write_nifti(path, data)
    volume = tlc.open_volume(path)
    indices = np.array([[0, 0, 0], [5, 4, 3], [2, 1, 3]])
    assert np.array_equal(np.asarray(volume.evaluate(indices)), data[tuple(indices.T)])


MGZ = os.path.join(data_path, "test.mgz")


PARREC = os.path.join(data_path, "phantom_varscale.PAR")


def _all_entries(volume):
    """Every entry of a lazy tensor, read through ``evaluate``, in its shape."""
    grid = np.meshgrid(*[np.arange(n) for n in volume.shape], indexing="ij")
    indices = np.stack(grid, axis=-1).reshape(-1, len(volume.shape))
    return np.asarray(volume.evaluate(indices)).reshape(volume.shape)


@pytest.mark.parametrize("path", [MGZ, PARREC])
@pytest.mark.parametrize("call", [tlc.tt_cross, tlc.open_volume, tlc.streaming_tt_svd])
def test_a_non_nifti_image_is_refused_with_a_remedy_that_works(path, call):
    """An MGH or PAR/REC image was refused with 'pass open_volume(path) for its file
    (test.mgz)', which open_volume refuses in turn (unsupported suffix); its proxy opens."""
    image = nibabel.load(path)
    with pytest.raises(TypeError) as error:
        call(image)
    message = str(error.value)
    assert "open_volume(path)" not in message
    assert "open_volume(image.dataobj)" in message
    with pytest.raises(ValueError, match="unsupported suffix"):
        tlc.open_volume(path)  # what the message no longer advises
    np.testing.assert_array_equal(_all_entries(tlc.open_volume(image.dataobj)),
                                  image.get_fdata())


def test_a_non_nifti_proxy_crossed_directly_names_open_volume_of_itself():
    proxy = nibabel.load(MGZ).dataobj
    with pytest.raises(TypeError) as error:
        tlc.tt_cross(proxy, rank=2)
    message = str(error.value)
    assert "open_volume(path)" not in message
    assert "open_volume(tensor)" in message


def test_an_image_in_memory_is_told_to_save_it_or_load_it_not_to_open_its_file():
    image = nibabel.Nifti1Image(np.ones((3, 4, 5), dtype=np.float32), np.eye(4))
    with pytest.raises(TypeError) as error:
        tlc.tt_cross(image, rank=1)
    message = str(error.value)
    assert "open_volume(path)" not in message
    assert re.search(r"get_fdata\(\)", message) and "nibabel.save" in message


def test_a_nifti_image_still_names_open_volume_of_its_file(tmp_path):
    path = str(tmp_path / "v.nii.gz")
    nibabel.save(nibabel.Nifti1Image(np.ones((3, 4, 5), dtype=np.float32), np.eye(4)), path)
    with pytest.raises(TypeError, match=r"open_volume\(path\) for its file.*v\.nii\.gz"):
        tlc.tt_cross(nibabel.load(path), rank=1)


@pytest.mark.parametrize("name", ["test.mgz", "phantom_varscale.PAR", "tiny.mnc"])
def test_a_file_nibabel_reads_but_open_volume_does_not_is_told_how_to_convert_it(name):
    """FreeSurfer's .mgz, Philips' PAR/REC, MINC: 'unsupported suffix' alone left a user
    with no way in; the message says how to convert the file to NIfTI, which opens."""
    with pytest.raises(ValueError, match="unsupported suffix") as error:
        tlc.open_volume(os.path.join(data_path, name))
    assert "nibabel.save(nibabel.load(" in str(error.value)


def test_a_suffix_nothing_reads_is_not_sent_to_nibabel(tmp_path):
    path = tmp_path / "volume.raw"
    path.write_bytes(b"\0" * 64)
    with pytest.raises(ValueError, match="unsupported suffix") as error:
        tlc.open_volume(str(path))
    assert "nibabel" not in str(error.value)


NIFTI_FILES = ["anatomical.nii", "example4d.nii.gz", "example_nifti2.nii.gz", "functional.nii",
               "reoriented_anat_moved.nii", "resampled_anat_moved.nii", "standard.nii.gz"]


@pytest.mark.parametrize("name", NIFTI_FILES)
def test_every_nifti_nibabel_ships_reads_as_get_fdata(name):
    """Big-endian int16 and float32, a scaled int16 (functional.nii: slope 0.075, intercept
    3100), NIfTI-2, 4-D, NaN background: sampled entries equal ``get_fdata()``'s."""
    path = os.path.join(data_path, name)
    expected = np.nan_to_num(nibabel.load(path).get_fdata())
    volume = tlc.open_volume(path, fill_nan=0.0)
    rng = np.random.default_rng(0)
    indices = np.stack([rng.integers(0, n, 3000) for n in expected.shape], axis=1)
    indices = np.concatenate([indices, [[0] * expected.ndim], [[n - 1 for n in expected.shape]]])
    np.testing.assert_array_equal(np.asarray(volume.evaluate(indices)),
                                  expected[tuple(indices.T)])


def test_a_4d_las_scan_reconstructed_as_nifti_keeps_its_space(tmp_path, monkeypatch):
    """functional.nii (LAS, scaled int16, 4-D, TR 2 s): the volume written by ``reconstruct
    -o`` has the input's affine, zooms and units, float32 values within the TT's error; a
    slab lies where nibabel's slicer puts it."""
    from tensorly_cross import cli

    monkeypatch.chdir(tmp_path)
    source = os.path.join(data_path, "functional.nii")
    image = nibabel.load(source)
    assert cli.main(["compress", source, "-o", "f.tt.npz", "--tol", "0.01", "-q"]) == 0
    assert cli.main(["reconstruct", "f.tt.npz", "-o", "f.nii.gz"]) == 0
    out = nibabel.load("f.nii.gz")
    assert out.shape == image.shape and out.get_data_dtype() == np.float32
    np.testing.assert_allclose(out.affine, image.affine)
    assert out.header.get_zooms() == image.header.get_zooms()
    assert out.header.get_xyzt_units() == image.header.get_xyzt_units()
    original = image.get_fdata()
    assert np.linalg.norm(out.get_fdata() - original) <= 0.011 * np.linalg.norm(original)
    assert cli.main(["reconstruct", "f.tt.npz", "--slice", "0=4,3=7", "-o", "s.nii"]) == 0
    slab, expected = nibabel.load("s.nii"), image.slicer[4:5, :, :, 7:8]
    assert slab.shape == expected.shape
    np.testing.assert_allclose(slab.affine, expected.affine)


def test_the_mni152_template_crossed_from_its_file_equals_the_cross_in_memory(tmp_path):
    """docs/guarantees.rst: ``tt_cross(open_volume(path))`` equals, bit for bit, the cross
    of the array loaded and cast to float64; the stream too (MNI152's uint8 scaled by
    1/255, cropped)."""
    datasets = pytest.importorskip("nilearn.datasets")
    image = datasets.load_mni152_template().slicer[60:100, 70:110, 50:80]
    path = str(tmp_path / "t1.nii")
    nibabel.save(image, path)
    loaded = nibabel.load(path)
    assert loaded.dataobj.slope != 1.0  # stored scaled
    array = loaded.get_fdata()
    for run in (lambda v: tlc.tt_cross(v, tol=0.1, random_state=0),
                lambda v: tlc.streaming_tt_svd(v, tol=0.1, random_state=0)):
        from_file, in_memory = run(tlc.open_volume(path)), run(array)
        for core_file, core_memory in zip(from_file, in_memory, strict=True):
            np.testing.assert_array_equal(np.asarray(core_file), np.asarray(core_memory))


def _stale_demo_volume(workdir, name, values):
    zarr = pytest.importorskip("zarr")
    array = zarr.create_array(os.path.join(workdir, f"{name}.zarr"), shape=values.shape,
                              chunks=(32, 32, 32), dtype="f4")
    array[...] = values


def test_the_demo_refuses_a_stale_volume_of_another_shape_in_its_workdir(tmp_path, capsys):
    """A template of another nilearn (its 2 mm MNI152, 99x117x95) left in the workdir was
    compressed under the name of the 1 mm one: 'shape (197, 233, 189)' announced, the
    stale volume crossed, and '33.1 MiB of float32 (12.7% read)' for a stream that read
    all of its 4.2 MiB."""
    pytest.importorskip("nilearn")
    from tensorly_cross import cli

    _stale_demo_volume(tmp_path, "mni152_t1", np.ones((9, 11, 10), dtype=np.float32))
    code = cli.main(["demo", "--volume", "mni152", "--workdir", str(tmp_path), "-q"])
    assert code == cli.EXIT_INPUT
    err = capsys.readouterr().err
    assert "mni152_t1.zarr" in err and "(9, 11, 10)" in err and "(197, 233, 189)" in err
    assert not os.path.exists(tmp_path / "mni152_t1.tt.npz")


def test_the_demo_refuses_a_stale_volume_of_its_shape_with_other_values(tmp_path, capsys):
    """Same shape, other values (a procedural volume of an older version): not the demo's."""
    from tensorly_cross import cli

    _stale_demo_volume(tmp_path, "blobs16", np.full((16, 16, 16), 0.5, dtype=np.float32))
    code = cli.main(["demo", "--volume", "procedural", "--size", "16",
                     "--workdir", str(tmp_path), "-q"])
    assert code == cli.EXIT_INPUT
    assert "other values" in capsys.readouterr().err


def test_the_demo_reuses_its_own_volume(tmp_path, capsys):
    from tensorly_cross import cli

    common = ["demo", "--volume", "procedural", "--size", "16", "--workdir", str(tmp_path)]
    assert cli.main(common) == cli.EXIT_OK
    assert "writing the demo volume" in capsys.readouterr().out
    assert cli.main(common) == cli.EXIT_OK
    out = capsys.readouterr().out
    assert "writing the demo volume" not in out and "(100.0% read)" in out


def test_a_dataset_named_twice_through_the_api_says_so_not_that_the_file_is_missing(tmp_path):
    """``open_volume('v.h5:/a', dataset='b')`` said "path 'v.h5:/a' does not exist" of a
    file that does; the command line already says to name the dataset once."""
    h5py = pytest.importorskip("h5py")
    path = str(tmp_path / "v.h5")
    with h5py.File(path, "w") as handle:
        handle["a"] = np.ones((2, 3, 4))
        handle["b"] = np.zeros((2, 3, 4))
    with pytest.raises(ValueError, match=r"dataset='b'.*name it once"):
        tlc.open_volume(path + ":/a", dataset="b")
