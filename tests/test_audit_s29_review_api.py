"""Review of audit s29's API changes (atomic writes keep the replaced file's mode, TT files
of low-precision floats): holes those changes left.

Each test failed before its fix (the Windows one on Python >= 3.13 under Windows only).
"""

import os
import tempfile

import numpy as np
import pytest

import tensorly_cross as tlc


def _temporary_files(folder):
    return [name for name in os.listdir(folder) if name.startswith(".tensorly-cross-")]


# --- TT files of ml_dtypes' floats: JAX's float8_e5m2 ------------------------------------


def test_save_tt_widens_float8_e5m2_which_ml_dtypes_gives_numpy_s_float_kind(tmp_path):
    # ml_dtypes registers float8_e5m2 with kind "f" (the other float8 types: "V"), so it
    # was not widened: save_tt wrote a file of "<f1" cores that load_tt (and np.load)
    # then refused, "descr is not a valid dtype descriptor".
    ml_dtypes = pytest.importorskip("ml_dtypes")
    values = np.array([[[0.5, -1.5], [2.0, 0.25], [3.0, -0.125]]])
    path = tmp_path / "a.tt.npz"
    tlc.save_tt(path, [values.astype(ml_dtypes.float8_e5m2), np.ones((2, 4, 1))])
    tt, _ = tlc.load_tt(path)
    assert tt[0].dtype == np.float32
    np.testing.assert_array_equal(np.asarray(tt[0]), values)


@pytest.mark.parametrize("name", ["complex32", "int4"])
def test_save_tt_refuses_other_ml_dtypes_types_by_name(tmp_path, name):
    # ml_dtypes' complex32 (kind "c") was written into a file load_tt refused; its int4 was
    # refused as "not numbers". Neither has a .npy description: refused, naming the dtype.
    ml_dtypes = pytest.importorskip("ml_dtypes")
    core = np.ones((1, 3, 1)).astype(getattr(ml_dtypes, name))
    with pytest.raises(tlc.TTFileError, match=f"core 0 has dtype {name}, .*not one of NumPy"):
        tlc.save_tt(tmp_path / "a.tt.npz", [core])
    assert os.listdir(tmp_path) == []


# --- a checkpoint given as a private empty file (tempfile.mkstemp) -----------------------


@pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")
def test_a_checkpoint_in_a_mkstemp_file_stays_private(tmp_path):
    # mkstemp creates the file with mode 0o600; the checkpoint's header replaced it with a
    # file of the umask's mode (0o644): the entries of the tensor became world-readable.
    descriptor, path = tempfile.mkstemp(dir=tmp_path, suffix=".ckpt")
    os.close(descriptor)
    previous = os.umask(0o022)
    try:
        tlc.tt_cross(lambda index: np.sum(index, axis=1).astype(float), shape=(4, 4, 4),
                     rank=2, random_state=0, checkpoint=path)
    finally:
        os.umask(previous)
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert os.path.getsize(path) > 0
    assert _temporary_files(tmp_path) == []


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
