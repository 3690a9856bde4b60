"""Audit session 34, the values a tensor or a function may produce, through every entry
point: the chunked reads and the crosses of functions whose batches change dtype."""

import numpy as np
import pytest

import tensorly_cross as tlc

from .conftest import host

SHAPE = (5, 6, 7)


def _values(indices):
    return 1.0 + np.sin(indices @ np.array([0.3, 0.5, 0.7]))


def _big_endian_or_list(indices):
    """A chunk's values as a big-endian array (a FITS or foreign ``.npy`` buffer), or as a
    list: not every chunk is an ndarray, so the chunks are joined in the backend."""
    values = _values(indices)
    return values.astype(">f8") if indices[0, 0] % 2 else values.tolist()


def _bfloat16(indices):
    """A JAX bfloat16 array, which NumPy reads as ml_dtypes' bfloat16."""
    jnp = pytest.importorskip("jax.numpy")
    return jnp.asarray(_values(indices)).astype(jnp.bfloat16)


def _unsigned_or_list(indices):
    values = np.round(_values(indices) * 100)
    return values.astype(np.uint64) if indices[0, 0] % 2 else values.astype(int).tolist()


@pytest.mark.parametrize("function", [_big_endian_or_list, _bfloat16, _unsigned_or_list])
def test_a_chunked_read_gives_the_values_of_one_call(backend, function):
    # Under PyTorch the chunks that were not ndarrays went to tl.tensor as they came:
    # torch's "given numpy array has byte order different from the native byte order",
    # "can't convert np.ndarray of type ml_dtypes.bfloat16", "Promotion for uint16,
    # uint32, uint64 types is not supported"; one call's values are read (widened,
    # byte-swapped) before they reach the backend.
    indices = np.stack(np.unravel_index(np.arange(0, 210, 3), SHAPE), axis=1)
    whole = tlc.FunctionTensor(function, SHAPE).evaluate(indices)
    chunked = tlc.FunctionTensor(function, SHAPE, chunk_size=4).evaluate(indices)
    assert str(chunked.dtype) == str(whole.dtype)
    np.testing.assert_array_equal(host(chunked), host(whole))
