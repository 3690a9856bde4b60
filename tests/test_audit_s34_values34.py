"""Audit session 34, the values a tensor or a function may produce, through every entry
point: chunked reads, crosses of functions whose batches change dtype, masked TT cores,
and ml_dtypes' low-precision floats in the stream and open_volume."""

import numpy as np
import pytest
import tensorly as tl

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
    import jax.numpy as jnp

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
    if function is _bfloat16:
        pytest.importorskip("jax")
    indices = np.stack(np.unravel_index(np.arange(0, 210, 3), SHAPE), axis=1)
    whole = tlc.FunctionTensor(function, SHAPE).evaluate(indices)
    chunked = tlc.FunctionTensor(function, SHAPE, chunk_size=4).evaluate(indices)
    assert str(chunked.dtype) == str(whole.dtype)
    np.testing.assert_array_equal(host(chunked), host(whole))


# sqrt(c - (i + j + k)) is real below the corner and imaginary at (15, 15, 15) only.
BRANCH = 43.5


def _scimath_sqrt(indices):
    """Real batches, and a complex one for a batch that holds the corner (as
    ``np.emath.sqrt`` returns them)."""
    return np.emath.sqrt(BRANCH - indices.sum(axis=1))


@pytest.mark.parametrize("method", ["lsq", "tci"])
def test_a_pytorch_cross_of_a_function_that_turns_complex_is_the_complex_cross(method):
    # NumPy promotes a real array times a complex one; PyTorch's products do not: the
    # cross met "expected m1 and m2 to have the same dtype, but got: double !=
    # c10::complex<double>" (lsq) or "addmv input tensors must have the same dtype" (TCI)
    # where the first complex batch came in mid-sweep.
    pytest.importorskip("torch")
    with tl.backend_context("pytorch"):
        mixed, info = tlc.tt_cross(_scimath_sqrt, shape=(16, 16, 16), method=method,
                                   tol=1e-8, random_state=0, return_info=True)
        always, expected = tlc.tt_cross(
            lambda indices: _scimath_sqrt(indices).astype(complex), shape=(16, 16, 16),
            method=method, tol=1e-8, random_state=0, return_info=True)
        corner = host(tlc.tt_entries(mixed, [[15, 15, 15]]))
    assert mixed.rank == always.rank
    for core, other in zip(mixed, always, strict=True):
        np.testing.assert_array_equal(host(core), host(other))
    np.testing.assert_allclose(corner, [1j * np.sqrt(1.5)], atol=1e-6)
    # The search read no entry twice, and says what it did as the complex one does.
    assert info.n_evals == expected.n_evals and info.n_sweeps == expected.n_sweeps


def _masked_cores():
    rng = np.random.default_rng(0)
    cores = [rng.standard_normal(shape) for shape in [(1, 2, 2), (2, 2, 2), (2, 2, 1)]]
    cores[1] = np.ma.masked_array(cores[1], mask=cores[1] > 0)
    return cores


@pytest.mark.parametrize("entry", ["tt_entries", "qtt_to_tt"])
def test_masked_cores_are_refused_by_name(entry):
    # tt_entries failed in NumPy's masked matmul ("cannot reshape array of size 2 into
    # shape (1,1)"); a cross refuses a masked tensor, whose masked entries it would read.
    cores = _masked_cores()
    with pytest.raises(TypeError, match=rf"{entry}: cores\[1\] is a masked array"):
        if entry == "tt_entries":
            tlc.tt_entries(cores, [[0, 1, 0]])
        else:
            tlc.qtt_to_tt(cores, tlc.QuanticsTensor(np.zeros((4, 2))).layout)


def test_save_tt_refuses_a_masked_core_by_name(tmp_path):
    # It stored the raw data, masked entries included, and load_tt gave them back as
    # entries of the TT without a word.
    path = tmp_path / "masked.tt"
    with pytest.raises(TypeError, match=r"tt core 1 is a masked array"):
        tlc.save_tt(path, _masked_cores())
    assert not path.exists()


@pytest.mark.parametrize("dtype", ["bfloat16", "float8_e4m3fn", "float8_e5m2"])
@pytest.mark.parametrize("read", ["stream", "open_volume"])
@pytest.mark.parametrize("container", ["numpy", "dask"])
def test_ml_dtypes_floats_are_streamed_and_opened_as_tt_cross_reads_them(dtype, read,
                                                                        container):
    # JAX's bfloat16 and float8 arrays (ml_dtypes', NumPy kind "V") were refused as not
    # "bool, integer and real floating-point arrays", though tt_cross reads them (as
    # float32, exactly), as the stream reads PyTorch's bfloat16.
    ml_dtypes = pytest.importorskip("ml_dtypes")
    rng = np.random.default_rng(0)
    narrow = np.einsum("i,j,k->ijk", *[rng.random(n) + 0.5 for n in (5, 6, 7)]).astype(
        getattr(ml_dtypes, dtype))
    exact = narrow.astype(np.float32)  # every value of those types is a float32
    if container == "dask":
        da = pytest.importorskip("dask.array")
        narrow, exact = (da.from_array(array, chunks=(2, 3, 4)) for array in (narrow, exact))
    if read == "stream":
        got, expected = (tlc.streaming_tt_svd(volume, rank=2) for volume in (narrow, exact))
    else:
        got, expected = (tlc.tt_cross(tlc.open_volume(volume), rank=2, method="lsq",
                                      random_state=0) for volume in (narrow, exact))
    for core, other in zip(got, expected, strict=True):
        assert core.dtype == other.dtype
        np.testing.assert_array_equal(core, other)
