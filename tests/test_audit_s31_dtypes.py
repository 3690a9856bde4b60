"""Audit session 31, value dtypes and byte orders through every entry point."""

import warnings

import numpy as np
import pytest
import tensorly as tl

import tensorly_cross as tlc
from tensorly_cross import ToleranceNotMetWarning


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
    before = jax.config.jax_enable_x64
    with tl.backend_context("jax"):  # first: loading TensorLy's JAX backend turns x64 on
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
