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


# --- TT files: cores of extended precision ------------------------------------------------


@pytest.mark.parametrize("dtype", [np.longdouble, np.clongdouble])
def test_save_tt_refuses_extended_precision_cores_as_not_portable(tmp_path, dtype):
    # A long double's bytes mean an 80-bit x86 float on one machine and an IEEE quad on
    # another (both "<f16"): a file of them was read elsewhere as other numbers, without a
    # word, and the PyTorch backend failed on it with a bare TypeError.
    if np.dtype(dtype).itemsize <= np.dtype(np.complex128 if dtype is np.clongdouble
                                            else np.float64).itemsize:
        pytest.skip("long double is double here")
    with pytest.raises(tlc.TTFileError, match="core 0 has dtype .*float64"):
        tlc.save_tt(tmp_path / "a.tt.npz", [np.ones((1, 3, 1), dtype=dtype)])
    assert os.listdir(tmp_path) == []


def test_load_tt_refuses_a_file_of_extended_precision_cores(tmp_path):
    from .test_ttfile_safety import valid_meta, write_npz

    path = write_npz(tmp_path / "a.npz", valid_meta(n_cores=1),
                     [np.ones((1, 3, 1), dtype=np.longdouble)])
    if np.dtype(np.longdouble).itemsize <= 8:
        pytest.skip("long double is double here")
    with pytest.raises(tlc.TTFileError, match="core 0 has dtype"):
        tlc.load_tt(path)


# --- the drop-in: an int rank caps every bond, on either side ------------------------------


@pytest.mark.parametrize("shape", [(3, 8, 8), (8, 8, 3)])
def test_an_int_rank_above_a_short_mode_is_clipped_on_either_side(shape):
    # rank=5 on a (3, 8, 8) tensor was clipped at the first bond (3 rows) with a warning,
    # but on an (8, 8, 3) tensor (an RGB image) refused: "rank[2]=5 exceeds the number of
    # available column indices (3)". An int is a cap (TensorLy's tensor_train clips it on
    # both sides, and TensorLy's cross refuses every int but 1): clipped alike now.
    rng = np.random.default_rng(0)
    tensor = np.einsum("i,j,k->ijk", *(rng.random(n) for n in shape))
    with pytest.warns(UserWarning, match="exceeds what the unfoldings"):
        tt = tlc.tensor_train_cross(tensor, rank=5, random_state=0)
    assert max(tt.rank[1:-1]) <= 5 and min(tt.rank[1], tt.rank[-2]) == 3
    import tensorly as tl

    np.testing.assert_allclose(tl.tt_to_tensor(tt), tensor, atol=1e-10)
    with pytest.warns(UserWarning, match="exceeds what the unfoldings"):
        estimator = tlc.TensorTrainCross(rank=5, random_state=0).fit(tensor)
    np.testing.assert_allclose(estimator.to_tensor(), tensor, atol=1e-10)


def test_a_list_rank_above_the_columns_keeps_tensorly_s_refusal():
    with pytest.raises(ValueError, match="exceeds the number of available column indices"):
        tlc.tensor_train_cross(np.ones((8, 8, 3)), rank=[1, 5, 5, 1])


# --- the scikit-learn style class: fit(X, y=None) ------------------------------------------


def test_the_estimator_takes_scikit_learn_s_ignored_y():
    # scikit-learn calls fit(X, y) and fit_transform(X, y) with y=None for unsupervised
    # estimators (Pipeline, its estimator checks): both failed with "fit() takes 2
    # positional arguments but 3 were given".
    tensor = np.add.outer(np.arange(4.0), np.arange(5.0))[:, :, None] * np.ones(3)
    estimator = tlc.TensorTrainCross(rank=[1, 2, 2, 1], random_state=0)
    assert estimator.fit(tensor, None) is estimator
    factors = estimator.fit_transform(tensor, None)
    assert factors is estimator.decomposition_
    np.testing.assert_allclose(estimator.to_tensor(), tensor, atol=1e-10)
    pipeline = pytest.importorskip("sklearn.pipeline")
    fitted = pipeline.make_pipeline(tlc.TensorTrainCross(rank=2, random_state=0)).fit(tensor)
    np.testing.assert_allclose(fitted[-1].to_tensor(), tensor, atol=1e-10)


def test_save_tt_names_the_core_on_the_meta_device(tmp_path):
    # It said "a tensor is a PyTorch tensor on the 'meta' device": which one, of which
    # argument, went unsaid.
    torch = pytest.importorskip("torch")
    cores = [torch.ones((1, 3, 2)), torch.ones((2, 4, 1), device="meta")]
    with pytest.raises(ValueError, match="^tt core 1 is a PyTorch tensor on the 'meta'"):
        tlc.save_tt(tmp_path / "a.tt.npz", cores)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("name", ["bfloat16", "float8_e4m3fn"])
def test_save_tt_widens_low_precision_floats_as_it_does_pytorch_s(tmp_path, name):
    # A PyTorch bfloat16 TT was saved (widened to float32), a JAX one (ml_dtypes' bfloat16,
    # NumPy kind "V") refused: "dtype bfloat16; cores must be numbers (integer, real or
    # complex floating point)", which it is.
    ml_dtypes = pytest.importorskip("ml_dtypes")
    values = [np.array([[[0.5, -1.5], [2.0, 0.25], [3.0, -0.125]]]), np.ones((2, 4, 1))]
    cores = [core.astype(getattr(ml_dtypes, name)) for core in values]
    tlc.save_tt(tmp_path / "a.tt.npz", cores)
    tt, _ = tlc.load_tt(tmp_path / "a.tt.npz")
    assert [core.dtype for core in tt] == [np.float32, np.float32]
    for loaded, core in zip(tt, values, strict=True):
        np.testing.assert_array_equal(np.asarray(loaded), core)
