"""Tests of the command line (compress, reconstruct, demo, info): flags, outputs, messages and exit
codes (needing dask)."""

import os
import re
import warnings

import h5py
import numpy as np
import pytest

from tensorly_cross import cli

from ._helpers_shared import _zarr_volume

da = pytest.importorskip("dask.array")


# --- command line ------------------------------------------------------------------------


@pytest.fixture
def hdf5_volume(tmp_path):
    grid = np.linspace(0.0, 1.0, 12)
    path = tmp_path / "scan.h5"
    with h5py.File(path, "w") as handle:
        handle["group/data"] = np.add.outer(np.add.outer(grid, grid), grid)
    return path


def test_compress_names_the_default_output_after_the_hdf5_file_not_its_dataset(
        hdf5_volume, tmp_path, monkeypatch):
    # "scan.h5:/group/data" became data.tt.npz (the last part of the dataset's path), as
    # "other.h5:/group/data" did; the default is the INPUT stem.
    monkeypatch.chdir(tmp_path)
    assert cli.main(["compress", f"{hdf5_volume}:/group/data", "--method", "stream",
                     "-q"]) == cli.EXIT_OK
    assert (tmp_path / "scan.tt.npz").is_file()
    assert not (tmp_path / "data.tt.npz").exists()


def test_compress_on_a_cluster_does_not_report_zero_bytes_read(tmp_path, loopback_cluster,
                                                               capsys):
    # The workers read the chunks, the summary said "bytes read 0.0 MiB in 0 chunks".
    _zarr_volume(tmp_path / "v.zarr", (12, 12, 12), (6, 6, 6))
    output = tmp_path / "v.tt.npz"
    assert cli.main(["compress", str(tmp_path / "v.zarr"), "-o", str(output), "--method",
                     "lsq", "--scheduler", loopback_cluster.scheduler_address]) == cli.EXIT_OK
    printed = capsys.readouterr().out
    assert "in 0 chunks" not in printed
    assert re.search(r"bytes read +on the cluster's workers", printed)


def _compressed_ramp(folder):
    """A 10^3 ramp saved as .npy and compressed exactly (stream): (volume path, TT path)."""
    grid = np.linspace(0.0, 1.0, 10)
    volume = folder / "v.npy"
    np.save(volume, np.add.outer(np.add.outer(grid, grid), grid))
    tt_file = folder / "v.tt.npz"
    assert cli.main(["compress", str(volume), "-o", str(tt_file), "--method", "stream",
                     "--tol", "1e-6", "-q"]) == cli.EXIT_OK
    return volume, tt_file


@pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")
def test_reconstruct_outputs_follow_the_umask(tmp_path, capsys):
    # The slice (.npy) and the PNG were made world-readable (0o644) whatever the umask: a
    # user keeping scans private (umask 077) published slices of them.
    _, tt_file = _compressed_ramp(tmp_path)
    previous = os.umask(0o077)
    try:
        assert cli.main(["reconstruct", str(tt_file), "-o", str(tmp_path / "s.npy"),
                         "--png", str(tmp_path / "s.png")]) == cli.EXIT_OK
    finally:
        os.umask(previous)
    for name in ("s.npy", "s.png"):
        assert os.stat(tmp_path / name).st_mode & 0o777 == 0o600, name


@pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")
@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_reconstruct_nifti_follows_the_umask(tmp_path, suffix):
    # write_nifti made its output 0o644 whatever the umask, as the slices were.
    volume, tt_file = _compressed_ramp(tmp_path)
    out = tmp_path / f"r{suffix}"
    previous = os.umask(0o077)
    try:
        assert cli.main(["reconstruct", str(tt_file), "-o", str(out)]) == cli.EXIT_OK
    finally:
        os.umask(previous)
    assert os.stat(out).st_mode & 0o777 == 0o600
    import nibabel

    np.testing.assert_allclose(np.asarray(nibabel.load(out).get_fdata()),
                               np.load(volume), atol=1e-5)
    assert [name for name in os.listdir(tmp_path) if name.endswith(".tmp")] == []


# -- the command line's client --------------------------------------------------------------


def _npy(folder):
    grid = np.linspace(0.0, 1.0, 10)
    path = folder / "v.npy"
    np.save(path, np.add.outer(np.add.outer(grid, grid), grid))
    return path


def test_compress_streams_an_npy_on_the_workers_without_a_false_warning(
        tmp_path, loopback_cluster, capsys):
    # open_volume warned "client is not used ... read in this process", then the stream
    # sent the .npy's blocks to the workers.
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        assert cli.main(["compress", str(_npy(tmp_path)), "-o", str(tmp_path / "s.tt.npz"),
                         "--method", "stream", "--scheduler", loopback_cluster.scheduler_address,
                         "-q"]) == cli.EXIT_OK
    assert not any("not used" in str(w.message) for w in record)
    assert "not used" not in capsys.readouterr().err


def test_compress_says_the_cross_of_an_npy_does_not_use_the_scheduler(
        tmp_path, loopback_cluster, capsys):
    assert cli.main(["compress", str(_npy(tmp_path)), "-o", str(tmp_path / "c.tt.npz"),
                     "--method", "lsq", "--scheduler", loopback_cluster.scheduler_address,
                     "--tol", "1e-6"]) == cli.EXIT_OK
    err = capsys.readouterr().err
    assert "warning: --scheduler is not used by the cross for 'v.npy'" in err
