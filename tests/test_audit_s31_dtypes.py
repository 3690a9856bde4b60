"""Audit session 31, value dtypes and byte orders through every entry point."""

import warnings

import numpy as np
import pytest
import tensorly as tl

import tensorly_cross as tlc
from tensorly_cross import ToleranceNotMetWarning

from .conftest import host


def _rank_two_plus_detail():
    """A float64 array of rank above 2 whose tail (1e-5 relative) float32 cannot hold to
    1e-10: a TT meets ``tol=1e-10`` in float64, none in float32."""
    rng = np.random.default_rng(0)
    low = np.einsum("ir,jr,kr->ijk", *[rng.random((n, 2)) for n in (12, 13, 14)])
    detail = np.einsum("i,j,k->ijk", np.sin(np.arange(12)), np.arange(13.0) ** 2 / 100,
                       np.cos(np.arange(14)))
    return low + 1e-3 * detail


@pytest.fixture
def jax_x32():
    """The JAX backend with ``jax_enable_x64`` off (JAX's own default), restored after."""
    jax = pytest.importorskip("jax")
    with tl.backend_context("jax"):  # first: loading TensorLy's JAX backend turns x64 on
        before = jax.config.jax_enable_x64
        jax.config.update("jax_enable_x64", False)
        try:
            yield
        finally:
            jax.config.update("jax_enable_x64", before)


def _relative_error(tt, array):
    dense = np.asarray(tl.to_numpy(tl.tt_to_tensor(tt)), dtype=np.float64)
    return np.linalg.norm(dense - array) / np.linalg.norm(array)


@pytest.mark.parametrize("kwargs", [dict(method="lsq"), dict(method="tci"),
                                    dict(method="tci", differentiable=True)])
def test_a_jax_x32_cross_that_float32_cores_take_past_tol_warns(jax_x32, kwargs):
    # The search runs in NumPy (float64) and met tol=1e-10 there; JAX without x64 hands
    # back float32 cores, 1e-7 away: the TT returned missed tol with stop reason "tol" and
    # val_error 1e-15, and nothing said so.
    array = _rank_two_plus_detail()
    with pytest.warns(ToleranceNotMetWarning, match="jax_enable_x64") as caught:
        tt, info = tlc.tt_cross(array, tol=1e-10, random_state=0, return_info=True, **kwargs)
    assert tt[0].dtype == np.float32
    assert _relative_error(tt, array) > 1e-10  # the miss the warning reports
    missed = [w.message for w in caught if isinstance(w.message, ToleranceNotMetWarning)]
    assert missed[0].tol == 1e-10 and missed[0].error > 1e-10


def test_a_jax_x32_cross_whose_tol_float32_holds_does_not_warn(jax_x32):
    array = _rank_two_plus_detail()
    with warnings.catch_warnings():
        warnings.simplefilter("error", ToleranceNotMetWarning)
        tt = tlc.tt_cross(array, tol=1e-4, random_state=0)
    assert _relative_error(tt, array) < 1e-4


def test_a_jax_x32_stream_that_float32_cores_take_past_tol_warns(jax_x32):
    # StreamInfo.error ("exact") was 3e-16 for a returned TT 6e-8 away from the volume.
    array = _rank_two_plus_detail()
    with pytest.warns(ToleranceNotMetWarning, match="jax_enable_x64"):
        tt = tlc.streaming_tt_svd(array, tol=1e-10)
    assert tt[0].dtype == np.float32
    assert _relative_error(tt, array) > 1e-10


@pytest.mark.parametrize("entry", ["tt_entries", "qtt_to_tt"])
def test_big_endian_numpy_cores_are_read_under_every_backend(backend, entry):
    # Under PyTorch: torch's "given numpy array has byte order different from the native
    # byte order"; under JAX: "Error interpreting argument to stage as a JAX value".
    rng = np.random.default_rng(0)
    native = [rng.standard_normal(shape) for shape in [(1, 2, 3), (3, 2, 2), (2, 2, 1)]]
    swapped = [core.astype(">f8") for core in native]
    if entry == "tt_entries":
        indices = [[1, 0, 1], [0, 1, 0]]
        got, expected = tlc.tt_entries(swapped, indices), tlc.tt_entries(native, indices)
    else:
        layout = tlc.QuanticsTensor(np.zeros((4, 2))).layout  # digits 2, 2 | 2
        got, expected = tlc.qtt_to_tt(swapped, layout), tlc.qtt_to_tt(native, layout)
        got, expected = tl.tt_to_tensor(got), tl.tt_to_tensor(expected)
    np.testing.assert_array_equal(host(got), host(expected))


def test_object_numpy_cores_are_refused_by_name_under_every_backend(backend):
    # Under PyTorch and JAX the backend's own conversion error came first, naming no core.
    cores = [np.ones((1, 3, 2)), np.ones((2, 4, 1)).astype(object)]
    with pytest.raises(TypeError, match=r"tt_entries: cores\[1\] has dtype object"):
        tlc.tt_entries(cores, [[0, 0]])


def _rank_three(shape, seed=0):
    """A rank-3 array of largest modulus 1."""
    rng = np.random.default_rng(seed)
    array = np.einsum("ir,jr,kr->ijk", *[rng.standard_normal((n, 3)) for n in shape])
    return array / np.abs(array).max()


@pytest.mark.parametrize("dtype, scale", [(np.float32, 1.9 * 2.0**125),
                                          (np.float64, 1.9 * 2.0**1021)])
@pytest.mark.parametrize("rank", [None, 3])
def test_a_least_squares_cross_of_data_near_the_dtypes_largest_has_finite_cores(dtype, scale,
                                                                                 rank):
    # The singular values of a fiber block (up to sqrt(its size) times its largest entry)
    # overflowed the dtype: float32 data near 1e38 came back as NaN cores with val_error
    # nan and only NumPy's warnings, float64 near 2**1021 on 20x21x22 raised SciPy's
    # "array must not contain infs or NaNs"; the guarantee is finite cores up to 2**1022.
    array = _rank_three((20, 21, 22))
    data = (array * scale).astype(dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no overflow on the way either
        tt, info = tlc.tt_cross(data, method="lsq", rank=rank, random_state=0,
                                return_info=True)
    assert all(np.isfinite(core).all() for core in tt)
    assert tt[0].dtype == dtype
    dense = np.asarray(tl.tt_to_tensor([core.astype(np.float64) for core in tt]))
    error = np.linalg.norm(dense / scale - array) / np.linalg.norm(array)
    assert error < (1e-5 if dtype == np.float32 else 1e-12)
    assert np.isfinite(info.val_error)


@pytest.mark.parametrize("method, rank", [("tci", None), ("als", 3), ("block", 3)])
def test_every_method_crosses_float32_data_near_its_largest(method, rank):
    # TCI and ALS returned a TT of held-out error 1.0 on float32 data near 1.5e38.
    array = _rank_three((10, 11, 12))
    scale = 1.5e38
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        tt, info = tlc.tt_cross((array * scale).astype(np.float32), method=method,
                                rank=rank, tol=1e-3, random_state=0, return_info=True)
    dense = np.asarray(tl.tt_to_tensor([core.astype(np.float64) for core in tt]))
    assert np.linalg.norm(dense / scale - array) / np.linalg.norm(array) < 1e-4
    assert info.val_error < 1e-4


def test_a_callback_sees_the_tt_at_the_datas_own_scale():
    # The search runs on data brought near 1; what a callback is handed is the TT of the
    # data as given.
    array = _rank_three((10, 11, 12))
    scale = 2.0**1000
    seen = []
    tlc.tt_cross(array * scale, method="lsq", tol=1e-8, random_state=0,
                 callback=lambda tt, info: seen.append(tt.to_tensor()) and False)
    assert seen
    np.testing.assert_allclose(seen[-1] / scale, array, atol=1e-10)


@pytest.mark.parametrize("method", ["lsq", "tci"])
def test_a_differentiable_cross_of_float32_data_near_its_largest_has_finite_cores(method):
    # The search ran on data brought near 1, but the cores read again through autograd
    # were fitted at the data's own scale: SciPy's "array must not contain infs or NaNs".
    torch = pytest.importorskip("torch")
    array = _rank_three((20, 21, 22))
    scale = 1.5e38
    with tl.backend_context("pytorch"):
        data = (torch.tensor(array) * scale).float().requires_grad_(True)
        tt = tlc.tt_cross(data, method=method, tol=1e-4, random_state=0, differentiable=True)
        dense = tt.to_tensor()
        (dense.double() / scale).sum().backward()
    assert all(torch.isfinite(core).all() for core in tt)
    error = np.linalg.norm(dense.detach().double().numpy() / scale - array)
    assert error / np.linalg.norm(array) < 1e-4
    assert torch.isfinite(data.grad).all()


def test_cross_interpolate_of_float64_data_near_its_largest_has_finite_cores():
    array = _rank_three((20, 21, 22))
    data = array * (1.9 * 2.0**1021)
    indices = tlc.select_indices(data, tol=1e-8, random_state=0)
    tt = tlc.cross_interpolate(data, indices)
    assert all(np.isfinite(core).all() for core in tt)
    dense = np.asarray(tl.tt_to_tensor(tt)) / (1.9 * 2.0**1021)
    assert np.linalg.norm(dense - array) / np.linalg.norm(array) < 1e-8
