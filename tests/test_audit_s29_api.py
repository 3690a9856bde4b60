"""Audit s29 of the user-facing surfaces: the TensorLy drop-in and its scikit-learn style
class, TT files, the cost model, the procedural volumes and the CLI's ``info`` and
``reconstruct`` on files of ``compress``.

Each test failed before its fix.
"""

import os

import numpy as np
import pytest

import tensorly_cross as tlc
from tensorly_cross import cli


def _compressed_ramp(folder):
    """A 6^3 ramp saved as .npy and compressed exactly (stream): the TT file's path."""
    grid = np.arange(6.0)
    volume = folder / "v.npy"
    np.save(volume, np.add.outer(np.add.outer(grid, grid), grid))
    tt_file = folder / "v.tt.npz"
    assert cli.main(["compress", str(volume), "-o", str(tt_file), "--method", "stream",
                     "--tol", "1e-6", "-q"]) == cli.EXIT_OK
    return tt_file


# --- replacing a file keeps its permissions ----------------------------------------------


@pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")
def test_save_tt_over_a_private_file_keeps_it_private(tmp_path):
    # overwrite=True published a new file whose mode came from the umask: a TT file made
    # private (chmod 600) became world-readable (0o644) once replaced.
    path = tmp_path / "a.tt.npz"
    tlc.save_tt(path, [np.ones((1, 3, 1))])
    os.chmod(path, 0o600)
    previous = os.umask(0o022)
    try:
        tlc.save_tt(path, [np.full((1, 3, 1), 2.0)], overwrite=True)
    finally:
        os.umask(previous)
    assert os.stat(path).st_mode & 0o777 == 0o600
    np.testing.assert_array_equal(np.asarray(tlc.load_tt(path)[0][0]), 2.0)


@pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")
def test_reconstruct_force_over_a_private_slice_keeps_it_private(tmp_path, capsys):
    tt_file = _compressed_ramp(tmp_path)
    out = tmp_path / "s.npy"
    out.write_bytes(b"old")
    os.chmod(out, 0o600)
    previous = os.umask(0o022)
    try:
        assert cli.main(["reconstruct", str(tt_file), "-o", str(out), "--force"]) == cli.EXIT_OK
    finally:
        os.umask(previous)
    assert os.stat(out).st_mode & 0o777 == 0o600
    assert np.load(out).shape == (6, 6)


# --- the procedural phantom's arguments --------------------------------------------------


@pytest.mark.parametrize("kwargs, error, name", [
    (dict(n_blobs=-1), ValueError, "n_blobs"),  # "negative dimensions are not allowed"
    (dict(n_blobs=2.5), TypeError, "n_blobs"),  # "'float' object cannot be interpreted..."
    (dict(n_blobs=None), TypeError, "n_blobs"),
    (dict(seed=-1), ValueError, "seed"),  # "expected non-negative integer"
    (dict(seed=1.5), TypeError, "seed"),  # "SeedSequence expects int or sequence of ints"
])
def test_blob_phantom_names_a_bad_count_or_seed(kwargs, error, name):
    from tensorly_cross.datasets import blob_phantom

    with pytest.raises(error, match=f"^{name} must be"):
        blob_phantom((4, 4, 4), **kwargs)
