"""Paths and disk space: HDF5 datasets whose names hold ':' in VolumeDataset and in the
patch cache's fingerprints, the demo's disk check naming the right flag, and where the
stream's error is resolved only to its Gram floor (as the docs say)."""

import os

import numpy as np
import pytest

import tensorly_cross as tlc


def _rank3_volume(shape):
    rng = np.random.default_rng(0)
    factors = [rng.standard_normal((3, n)) for n in shape]
    letters = "ijkl"[: len(shape)]
    return np.einsum(",".join(f"r{a}" for a in letters) + "->" + letters, *factors)


@pytest.mark.parametrize("shape, tol, gram", [
    ((40, 50, 60), 1e-6, False), ((40, 50, 60), 1.5e-6, True),
    ((10, 12, 14, 16), 1.6e-6, False), ((10, 12, 14, 16), 1.8e-6, True)])
def test_the_stream_doc_says_where_the_gram_route_and_its_error_floor_begin(shape, tol, gram):
    """StreamInfo.error said a volume read once goes through Gram matrices (error floor
    about 1e-8) 'from tol=1e-6 up'; the route is taken where the per-bond threshold
    tol / sqrt(d - 1) reaches 1e-6 of the norm: at tol=1e-6 (and up to 1.4e-6 in 3-D) an
    SVD, no floor. The docs now give the bound the code uses."""
    volume = _rank3_volume(shape)
    _, info = tlc.streaming_tt_svd(volume, tol=tol, return_info=True)
    assert info.n_passes == 1
    assert (info.error > 1e-10) == gram  # the Gram floor is ~1e-8, an SVD's ~1e-15
    doc = " ".join(tlc.StreamInfo.__doc__.split())
    assert "From ``tol=1e-6`` up" not in doc and "tol / sqrt(d - 1)" in doc
    with open(os.path.join(os.path.dirname(__file__), "..", "docs", "real_volumes.rst")) as f:
        rst = " ".join(f.read().split())
    assert "from ``tol=1e-6`` up" not in rst and "tol / sqrt(d - 1)" in rst


def test_a_demo_volume_that_does_not_fit_names_size_only_where_size_sets_it(tmp_path):
    """The demo's disk check said '--size 197: ... give a smaller --size' of the MNI152
    template too (a disk with under 33 MB free), whose shape --size does not set (and
    which refuses --size). It names --size only for the procedural volume now."""
    from tensorly_cross.cli import demo

    huge = (10**6,) * 3  # 4 EB of float32: no disk holds it
    with pytest.raises(OSError) as template:
        demo._check_room(str(tmp_path), huge, procedural=False)
    assert "--size" not in str(template.value) and "--workdir" in str(template.value)
    assert "MNI152" in str(template.value)
    with pytest.raises(OSError) as procedural:
        demo._check_room(str(tmp_path), huge, procedural=True)
    assert str(procedural.value).startswith("--size 1000000:")
    assert "give a smaller --size" in str(procedural.value)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("spelling", ["scan.h5:/a:b", "SCAN.H5:/c", "run.h5:1/v.npy"])
def test_volume_dataset_takes_the_paths_open_volume_opens(tmp_path, monkeypatch, spelling):
    """VolumeDataset checked a path by splitting it at its last ':' where it held '.h5:'
    (lower case only): an HDF5 dataset whose name holds ':' ('scan.h5:/a:b'), an upper-case
    'SCAN.H5:/c' and a file in a folder named 'run.h5:1' were refused (unsupported
    suffix; does not exist), all of which open_volume opens. It splits as open_volume
    does now (as the command line does since session 35)."""
    pytest.importorskip("torch")
    h5py = pytest.importorskip("h5py")
    from tensorly_cross.nn import VolumeDataset

    monkeypatch.chdir(tmp_path)
    volume = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)
    for name in ("scan.h5", "SCAN.H5"):
        with h5py.File(name, "w") as file:
            file["a:b"] = volume
            file["c"] = volume
    os.mkdir("run.h5:1")
    np.save("run.h5:1/v.npy", volume)
    item, target = VolumeDataset([spelling], [1.0])[0]
    assert tuple(item.shape) == volume.shape
    np.testing.assert_array_equal(item.evaluate(np.array([[1, 2, 3], [3, 4, 5]])),
                                  volume[[1, 3], [2, 4], [3, 5]])
    assert float(target) == 1.0
    with pytest.raises(FileNotFoundError):  # a dataset path whose file does not exist
        VolumeDataset(["gone.h5:/a:b"], [1.0])
    with pytest.raises(ValueError, match="unsupported suffix"):
        VolumeDataset(["scan.h5.txt"], [1.0])


def test_a_rewritten_hdf5_file_of_a_dataset_named_with_a_colon_changes_its_fingerprint(
        tmp_path, monkeypatch):
    """The patch cache's fingerprint stamps a volume's file (size, mtime), so a rewritten
    file is not served the old file's patches; for 'v.h5:/a:b' it stat'ed 'v.h5:/a' (the
    last ':'), found no file, and stamped None before and after the rewrite."""
    pytest.importorskip("torch")
    h5py = pytest.importorskip("h5py")
    from tensorly_cross.nn import VolumeDataset
    from tensorly_cross.nn.keyed import volume_fingerprint

    monkeypatch.chdir(tmp_path)
    with h5py.File("v.h5", "w") as file:
        file["a:b"] = np.zeros((4, 5, 6), dtype=np.float32)
    volume, _ = VolumeDataset(["v.h5:/a:b"], [0.0])[0]
    before = volume_fingerprint(volume)
    with h5py.File("new.h5", "w") as file:  # rewritten as tools do: a new file renamed
        file["a:b"] = np.ones((4, 5, 6), dtype=np.float32)
        file["pad"] = np.ones(1000)  # another size: mtime alone may not move
    os.replace("new.h5", "v.h5")
    after = volume_fingerprint(VolumeDataset(["v.h5:/a:b"], [0.0])[0][0])
    assert before != after


def test_reconstructing_a_slice_its_disk_cannot_hold_as_npy_is_refused_before_writing(
        tmp_path, monkeypatch, capsys):
    """reconstruct -o OUT.nii checked the free space of the output's folder first; -o
    OUT.npy did not: a slice of a 10^6 x 10^6 TT (7.3 TiB of float64) was evaluated
    before anything asked whether its file would fit. Now refused as the NIfTI is."""
    import shutil

    from tensorly_cross import cli

    size = 1_000_000
    if shutil.disk_usage(tmp_path).free >= size**2 * 8:
        pytest.skip("this disk holds the slice")
    monkeypatch.chdir(tmp_path)
    tlc.save_tt("huge.tt.npz", [np.ones((1, size, 1), dtype=np.float32)] * 2,
                {"shape": [size] * 2})
    assert cli.main(["reconstruct", "huge.tt.npz", "-o", "huge.npy"]) == 1
    err = capsys.readouterr().err
    assert "'huge.npy': the slice (1000000, 1000000) as float64 .npy takes" in err
    assert "GiB free" in err
    assert sorted(os.listdir(tmp_path)) == ["huge.tt.npz"]  # nothing written, no temporary
