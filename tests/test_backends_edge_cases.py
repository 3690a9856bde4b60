"""Tests of the array backends (NumPy, PyTorch, JAX): dtypes, devices and values of another
backend."""

import threading
import warnings

import numpy as np
import pytest
import tensorly as tl
from hypothesis import given
from hypothesis import strategies as st

import tensorly_cross as tlc
from tensorly_cross import tt_entries
from tensorly_cross._backend import subtract_outer_
from tensorly_cross.lazy import ArrayTensor, FunctionTensor

from ._helpers_shared import (
    _as_kind,
    _backend,
    _jax,
    _numpy_of,
    _rank_one,
    _rank_one_cross,
    _rank_three,
    _scimath_sqrt,
    _torch,
)
from .conftest import host
from .strategies import random_tt_cores

SEEDS = st.integers(0, 2**16)


# tt_entries --------------------------------------------------------------------------------


def _random_tt(shape, rank, seed):
    rng = np.random.default_rng(seed)
    ranks = [1] + [rank] * (len(shape) - 1) + [1]
    return [rng.standard_normal((ranks[k], n, ranks[k + 1])) for k, n in enumerate(shape)]


def _dense_entries(cores, indices):
    with tl.backend_context("numpy"):
        return tl.tt_to_tensor(cores)[tuple(np.asarray(indices).T)]


@given(
    shape=st.lists(st.integers(1, 5), min_size=1, max_size=4),
    rank=st.integers(1, 3),
    seed=SEEDS,
    kind=st.sampled_from(["numpy", "torch", "jax"]),
)
def test_tt_entries_reads_cores_of_another_backend(backend, shape, rank, seed, kind):
    cores = _random_tt(shape, rank, seed)
    indices = np.random.default_rng(seed).integers(0, shape, size=(7, len(shape)))
    # Torch cores under NumPy or JAX, NumPy cores under PyTorch: deep TypeError or
    # AttributeError in the products.
    values = tt_entries([_as_kind(core, kind) for core in cores], indices)
    assert tl.is_tensor(values)
    np.testing.assert_allclose(host(values), _dense_entries(cores, indices), rtol=1e-12)


def test_tt_entries_promotes_cores_of_mixed_dtypes(backend):
    cores = _random_tt((4, 5, 3), 2, 0)
    mixed = [
        tl.tensor(core.astype(np.float32 if k == 1 else np.float64)) for k, core in enumerate(cores)
    ]
    indices = np.array([[0, 0, 0], [3, 4, 2], [1, 2, 1]])
    # PyTorch's matmul refused float64 @ float32 (NumPy and JAX promote).
    values = host(tt_entries(mixed, indices))
    assert values.dtype == np.float64
    expected = _dense_entries([m.astype(np.float64) for m in map(host, mixed)], indices)
    np.testing.assert_allclose(values, expected, rtol=1e-12)


def test_tt_entries_refuses_meta_indices_by_name(backend):
    torch = _torch()
    cores = [tl.tensor(core) for core in _random_tt((4, 5, 3), 2, 0)]
    meta = torch.empty((2, 3), dtype=torch.int64, device="meta")
    with pytest.raises(ValueError, match="meta") as error:
        tt_entries(cores, meta)
    assert "indices" in str(error.value)


def test_tt_entries_refuses_meta_cores_of_another_backend_by_name():
    torch = _torch()
    meta = [
        torch.empty(core.shape, dtype=torch.float64, device="meta")
        for core in _random_tt((4, 5, 3), 2, 0)
    ]
    with tl.backend_context("numpy"), pytest.raises(ValueError, match="meta") as error:
        tt_entries(meta, [[0, 0, 0]])
    assert "cores[0]" in str(error.value)


def test_tt_entries_with_jax_indices_under_pytorch_does_not_warn():
    torch = _torch()
    jax = _jax()
    cores = _random_tt((4, 5, 3), 2, 0)
    indices = jax.numpy.asarray([[0, 0, 0], [3, 4, 2]])
    with tl.backend_context("pytorch"), warnings.catch_warnings():
        # np.asarray of a JAX array is read-only: torch warned on every gather.
        warnings.simplefilter("error")
        values = tt_entries([torch.tensor(core) for core in cores], indices)
    np.testing.assert_allclose(host(values), _dense_entries(cores, np.asarray(indices)))


def test_tt_cross_refuses_a_meta_tensor_by_name_under_any_backend():
    # Under NumPy or JAX a meta tensor failed deep in the first read (NotImplementedError).
    torch = pytest.importorskip("torch")
    with pytest.raises(ValueError, match="tensor is a PyTorch tensor on the 'meta' device"):
        tlc.tt_cross(torch.empty((4, 5, 6), device="meta"), rank=2)


# A small rank-2 tensor, its complex companion, and the TT cores of a complex TT.
_RNG = np.random.default_rng(13)


CORE_SHAPES = [(1, 2, 2), (2, 3, 2), (2, 2, 1)]


COMPLEX_CORES = [_RNG.standard_normal(s) + 1j * _RNG.standard_normal(s) for s in CORE_SHAPES]


def test_function_tensor_of_meta_values_under_numpy_is_refused_by_name():
    """Under PyTorch: ValueError naming the meta device; under NumPy: NotImplementedError
    from deep inside torch."""
    torch = _torch()
    function = tlc.FunctionTensor(lambda i: torch.empty(len(i), device="meta"), (3, 3))
    with tl.backend_context("numpy"), pytest.raises(ValueError, match="meta"):
        tlc.tt_cross(function, rank=2, random_state=0)


def test_tt_entries_of_torch_cores_with_the_negative_bit_under_numpy():
    torch = _torch()
    cores = [torch.tensor(core).conj().imag for core in COMPLEX_CORES]
    indices = np.array([[0, 0, 0], [1, 2, 1]])
    with tl.backend_context("numpy"):
        values = tlc.tt_entries(cores, indices)
        expected = tl.tt_to_tensor([-core.imag for core in COMPLEX_CORES])
    np.testing.assert_allclose(values, expected[tuple(indices.T)], atol=1e-12)


# NumPy arrays BLAS cannot update in place ----------------------------------------------


def _outer_update_operands():
    rng = np.random.default_rng(5)
    return rng.standard_normal((5, 3)), rng.standard_normal(5), rng.standard_normal(3)


@pytest.mark.parametrize("order", ["C", "F"])
def test_subtract_outer_of_a_big_endian_matrix_is_not_stale(order):
    """f2py handed ger a native-order copy: the update went to the copy, and the stale
    matrix came back as the result."""
    matrix, column, row = _outer_update_operands()
    foreign = np.asarray(matrix.astype(matrix.dtype.newbyteorder(">")), order=order)
    with tl.backend_context("numpy"):
        updated = subtract_outer_(foreign, column, row)
    np.testing.assert_allclose(updated, matrix - np.outer(column, row), atol=1e-14)


def test_subtract_outer_leaves_a_read_only_matrix_untouched():
    """ger wrote into an array marked read-only (a read-only memmap's pages fault)."""
    matrix, column, row = _outer_update_operands()
    frozen = matrix.copy()
    frozen.setflags(write=False)
    with tl.backend_context("numpy"):
        updated = subtract_outer_(frozen, column, row)
    np.testing.assert_array_equal(frozen, matrix)
    np.testing.assert_allclose(updated, matrix - np.outer(column, row), atol=1e-14)


@pytest.mark.parametrize("method, extra", [("tci", {}), ("als", {"rank": 2}),
                                           ("tci", {"pivot_search": "batched"})])
def test_pytorch_gives_the_numpy_tensor_with_a_mode_of_size_one(method, extra):
    torch = pytest.importorskip("torch")
    shape = (3, 1, 4, 2, 3)
    dense = tl.tt_to_tensor(random_tt_cores(shape, [1, 2, 2, 2, 2, 1], 3))
    dense = dense + 0.5j * dense**2  # complex, of TT rank at most 2 + 4
    options = dict(method=method, random_state=3, tol=1e-8, **extra)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = tl.tt_to_tensor(tlc.tt_cross(dense, **options))
        with tl.backend_context("pytorch"):
            result = tl.to_numpy(tl.tt_to_tensor(tlc.tt_cross(torch.tensor(dense), **options)))
    assert result.dtype == reference.dtype
    np.testing.assert_allclose(result, reference, atol=1e-9 * np.abs(reference).max())


# --- TT files ------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [">f8", ">c16", ">i4", ">f4"])
def test_big_endian_cores_load_in_native_byte_order(tmp_path, dtype):
    # PyTorch refused them ("byte order different from the native byte order"), a
    # ValueError that named no file.
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    cores = [(rng.standard_normal(shape) * 10).astype(dtype)
             for shape in ((1, 3, 2), (2, 4, 1))]
    path = tlc.save_tt(tmp_path / "big.tt.npz", cores)
    for backend in ("numpy", "pytorch"):
        with tl.backend_context(backend):
            tt, _ = tlc.load_tt(path)
            for core, original in zip(tt.factors, cores, strict=True):
                host = core.numpy() if isinstance(core, torch.Tensor) else core
                assert host.dtype.isnative
                np.testing.assert_array_equal(host, original)


@pytest.mark.parametrize("dtype", [">f8", ">f4", ">c16", ">i4"])
def test_big_endian_values_are_read_in_every_backend(backend, dtype):
    # FITS data and .npy files written on big-endian machines hold big-endian arrays:
    # under PyTorch their values failed with "given numpy array has byte order different
    # from the native byte order".
    import tensorly as tl

    from tests.conftest import host

    data = (np.arange(12.0).reshape(3, 4) * (1 + 1j if dtype == ">c16" else 1)).astype(dtype)
    indices = np.array([[1, 1], [2, 3], [1, 1]])
    expected = data[tuple(indices.T)].astype(data.dtype.newbyteorder("="))
    for lazy in (ArrayTensor(data), FunctionTensor(lambda idx: data[tuple(idx.T)], (3, 4))):
        values = lazy.evaluate(indices)
        assert tl.is_tensor(values)
        np.testing.assert_array_equal(host(values), expected)
        assert host(values).dtype.isnative


@pytest.mark.parametrize("where", ["callback", "function"])
def test_switching_the_backend_mid_run_is_refused_and_undone(where):
    pytest.importorskip("torch")
    switch = lambda *args: tl.set_backend("pytorch")  # noqa: E731
    function = lambda indices: 1.0 / (1.0 + indices.sum(axis=1))  # noqa: E731
    if where == "function":
        function = lambda indices: switch() or 1.0 / (1.0 + indices.sum(axis=1))  # noqa: E731
    with tl.backend_context("numpy"):
        with pytest.raises(RuntimeError, match=f"the {where} switched TensorLy's backend"):
            tlc.tt_cross(function, shape=(6, 7, 8), tol=1e-10, random_state=0,
                         callback=switch if where == "callback" else None)
        assert tl.get_backend() == "numpy"


@pytest.mark.parametrize("settings", [dict(oversample=2.0), dict(method="block")])
def test_block_and_oversampled_crosses_recover_a_complex_tt(settings):
    rng = np.random.default_rng(1)
    shapes = [(1, 6, 3), (3, 7, 3), (3, 5, 1)]
    dense = tl.tt_to_tensor([rng.standard_normal(s) + 1j * rng.standard_normal(s)
                             for s in shapes])
    if settings.get("method") == "block":
        dense = dense[..., None] * np.array([1.0, 2.0 - 1.0j])
    tt = tlc.tt_cross(tlc.lazy_tensor(dense), rank=3, random_state=0, tol=0.0, n_iter_max=4,
                      **settings)
    approx = np.asarray(tl.tt_to_tensor([tl.to_numpy(core) for core in tt]))
    assert np.linalg.norm(approx - dense) <= 1e-8 * np.linalg.norm(dense)


BACKENDS = ["numpy", "pytorch", "jax"]


# --- JAX's bfloat16 and float8 (ml_dtypes, NumPy kind "V") --------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", ["bfloat16", "float8_e4m3fn"])
@pytest.mark.parametrize("how", ["array", "function"])
def test_jax_low_precision_values_are_read_as_float32(backend, dtype, how):
    """JAX's bfloat16 (its usual half precision) was refused, under every backend, the JAX
    backend included, as "values of dtype bfloat16; values must be numbers (bool, integer,
    real or complex floating point)": NumPy sees ml_dtypes' types as kind "V"."""
    jnp = pytest.importorskip("jax.numpy")
    data = _rank_one()
    with _backend(backend):
        stored = jnp.asarray(data, dtype=getattr(jnp, dtype))
        if how == "array":
            tt = _rank_one_cross(stored)
        else:
            tt = _rank_one_cross(lambda idx: stored[tuple(np.asarray(idx).T)], shape=data.shape)
        assert {str(core.dtype).rsplit(".", 1)[-1] for core in tt.factors} == {"float32"}
        exact = np.asarray(stored.astype(jnp.float32), dtype=np.float64)
        # The rounded values are of rank 1 no more: within their own precision.
        assert np.allclose(_numpy_of(tt.to_tensor()), exact,
                           rtol=0.05 if dtype == "bfloat16" else 0.3)


@pytest.mark.parametrize("dtype, torch_dtype", [("bfloat16", "bfloat16"),
                                                 ("float8_e4m3fn", "float8_e4m3fn"),
                                                 ("float8_e5m2", "float8_e5m2"),
                                                 ("float8_e4m3b11fnuz", None)])
def test_tt_entries_of_ml_dtypes_cores_under_pytorch_are_their_products(dtype, torch_dtype):
    # NumPy cores of ml_dtypes' floats (JAX's cores, through the host) failed in PyTorch's
    # terms ("can't convert np.ndarray of type ml_dtypes.bfloat16"), though cores of
    # another backend are copied to the active one; now in PyTorch's dtype of that name,
    # float32 where it has none. ml_dtypes' float8_e5m2 is of NumPy kind "f", not "V" as
    # the others: it still failed so.
    ml_dtypes = pytest.importorskip("ml_dtypes")
    torch = _torch()
    kind = getattr(ml_dtypes, dtype, None)
    if kind is None:
        pytest.skip(f"ml_dtypes {ml_dtypes.__version__} has no {dtype}")
    cores = [np.full((1, 2, 1), 1.5).astype(kind), np.full((1, 3, 1), 2.0).astype(kind)]
    with _backend("pytorch"):
        values = tlc.tt_entries(cores, [[0, 2], [1, 0]])
    assert values.dtype == getattr(torch, torch_dtype or "float32")
    assert values.float().tolist() == [3.0, 3.0]


# float8_e5m3fnu (newer ml_dtypes): JAX does not name it at all ("Error interpreting
# argument to stage as a JAX value", a TypeError).
@pytest.mark.parametrize("dtype", ["float6_e2m3fn", "float6_e3m2fn", "float8_e5m3fnu"])
def test_tt_entries_of_ml_dtypes_cores_jax_cannot_hold_are_their_products_under_jax(dtype):
    # JAX names ml_dtypes' 6-bit floats, but XLA on the CPU holds none ("Invalid XLA
    # PrimitiveType: 36 (F6E2M3FN)"): NumPy cores of them failed so under the JAX backend.
    # Now multiplied in float32, as PyTorch's backend does with the floats it lacks.
    ml_dtypes = pytest.importorskip("ml_dtypes")
    _jax()
    kind = getattr(ml_dtypes, dtype, None)
    if kind is None:
        pytest.skip(f"ml_dtypes {ml_dtypes.__version__} has no {dtype}")
    cores = [np.full((1, 2, 1), 1.5).astype(kind), np.full((1, 3, 1), 2.0).astype(kind)]
    with _backend("jax"):
        values = tlc.tt_entries(cores, [[0, 2], [1, 0]])
    assert str(values.dtype) == "float32"
    assert _numpy_of(values).tolist() == [3.0, 3.0]


# --- PyTorch's float8 and complex32 ---------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("how", ["tensor", "function"])
def test_torch_float8_values_are_read_as_float32(backend, how):
    """Under NumPy and JAX: TypeError "Got unsupported ScalarType Float8_e4m3fn" from
    ``.numpy()``; under PyTorch: NotImplementedError '"isfinite" not implemented for
    'Float8_e4m3fn''."""
    torch = pytest.importorskip("torch")
    data = _rank_one()
    with _backend(backend):
        stored = torch.tensor(data).to(torch.float8_e4m3fn)
        if how == "tensor":
            tt = _rank_one_cross(stored)
        else:
            tt = _rank_one_cross(lambda idx: stored[tuple(torch.as_tensor(idx).T)],
                                 shape=data.shape)
        assert {str(core.dtype).rsplit(".", 1)[-1] for core in tt.factors} == {"float32"}
        exact = stored.float().double().numpy()
        assert np.allclose(_numpy_of(tt.to_tensor()), exact, rtol=0.3)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("other", ["float32", "bfloat16", "float8_e5m2", "float64"])
def test_tt_entries_of_float8_cores_among_others_are_promoted(backend, other):
    """Cores of different dtypes are promoted to a common one, as tt_entries says, but
    PyTorch and JAX have no promotion of their 8-bit floats: a float8_e4m3fn core beside
    a float32 one failed ("Promotion for Float8 Types is not supported"; JAX: "no
    available implicit dtype promotion path"). Now as under NumPy: the 8-bit floats taken
    as float32, which holds them exactly, and the gradient of the other cores kept."""
    ml_dtypes = pytest.importorskip("ml_dtypes")
    with _backend(backend):
        if backend == "pytorch":
            torch = _torch()
            low = torch.full((1, 2, 1), 1.5).to(torch.float8_e4m3fn)
            high = torch.full((1, 3, 1), 2.0).to(getattr(torch, other)).requires_grad_(
                other in ("float32", "float64"))
        else:
            low = tl.tensor(np.full((1, 2, 1), 1.5).astype(ml_dtypes.float8_e4m3fn))
            high = tl.tensor(np.full((1, 3, 1), 2.0).astype(
                getattr(ml_dtypes, other, None) or np.dtype(other)))
        values = tt_entries([low, high], [[0, 2], [1, 0]])
        expected = "float64" if other == "float64" else "float32"
        assert str(values.dtype).rsplit(".", 1)[-1] == expected
        assert _numpy_of(values).tolist() == [3.0, 3.0]
        if backend == "pytorch" and high.requires_grad:
            values.sum().backward()
            assert high.grad[0, :, 0].tolist() == [1.5, 0.0, 1.5]


@pytest.mark.parametrize("backend", BACKENDS)
def test_torch_complex32_values_keep_their_imaginary_part(backend):
    """Under NumPy and JAX: TypeError "Got unsupported ScalarType ComplexHalf"; now
    complex64 cores, the imaginary part kept."""
    torch = pytest.importorskip("torch")
    data = _rank_one(complex_valued=True)
    with _backend(backend), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torch: "ComplexHalf is experimental"
        stored = torch.tensor(data).to(torch.complex32)
        tt = _rank_one_cross(stored)
        exact = stored.to(torch.complex128).numpy()
        assert {str(core.dtype).rsplit(".", 1)[-1] for core in tt.factors} == {"complex64"}
        assert np.allclose(_numpy_of(tt.to_tensor()), exact, rtol=0.01)


# --- the process-wide backend after a JAX cross ---------------------------------------


def _backend_of_a_new_thread():
    seen = []
    thread = threading.Thread(target=lambda: seen.append(tl.get_backend()))
    thread.start()
    thread.join()
    return seen[0]


def test_a_function_entering_backend_context_leaves_the_process_backend_to_jax():
    """A JAX cross searches in NumPy, set in its own thread only; a function that entered
    ``tl.backend_context`` (as the library's own message advises) restored, on leaving,
    that thread's NumPy as every thread's default: after the cross new threads ran NumPy."""
    pytest.importorskip("jax")

    def function(indices):
        with tl.backend_context("jax"):
            return tl.exp(-tl.tensor(indices.sum(axis=1) / 10.0))

    with _backend("jax"):
        assert _backend_of_a_new_thread() == "jax"
        tt = _rank_one_cross(function, shape=(4, 5, 6))
        assert tl.get_backend() == "jax"
        assert _backend_of_a_new_thread() == "jax"
    assert np.allclose(_numpy_of(tt.to_tensor()), np.exp(-np.indices((4, 5, 6)).sum(axis=0) / 10))


# --- PyTorch tensors without integer-array indexing -----------------------------------


def _torch_without_point_indexing(torch, kind):
    dense = torch.tensor(_rank_one())
    if kind == "sparse_coo":
        return dense.to_sparse()
    if kind == "sparse_csr":
        return dense[:, :, 0].to_sparse_csr()
    return torch.nested.nested_tensor([dense[0], dense[1]])


@pytest.mark.parametrize("backend", ["numpy", "pytorch"])
@pytest.mark.parametrize("kind", ["sparse_coo", "sparse_csr", "nested"])
def test_sparse_and_nested_torch_tensors_are_refused_by_name(backend, kind):
    """A scipy.sparse matrix is refused with the conversion to make; a sparse PyTorch
    tensor failed deep in torch ("Could not run 'aten::index.Tensor' with arguments from
    the 'SparseCPU' backend", "Sparse CSR tensors do not have strides"), a nested one with
    "Internal error: NestedTensorImpl doesn't support sizes. Please file an issue"."""
    torch = pytest.importorskip("torch")
    with _backend(backend), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torch: nested/CSR are "prototype"
        tensor = _torch_without_point_indexing(torch, kind)
        hint = "to_padded_tensor" if kind == "nested" else "to_dense"
        with pytest.raises(TypeError, match=f"tensor is a .*PyTorch tensor.*{hint}"):
            tlc.tt_cross(tensor, rank=1, method="als", random_state=0)
        with pytest.raises(TypeError, match=f"array is a .*PyTorch tensor.*{hint}"):
            tlc.ArrayTensor(tensor)
        if kind != "nested":  # whose shape the drop-in reads first: torch's own error
            with pytest.raises(TypeError, match=f"input_tensor is a .*PyTorch tensor.*{hint}"):
                tlc.tensor_train_cross(tensor, rank=1, random_state=0)


# --- mode sizes given as PyTorch or JAX scalars ---------------------------------------


def _scalars(kind):
    if kind == "torch":
        torch = pytest.importorskip("torch")
        return torch.tensor(True), torch.tensor(4.0), torch.tensor(4)
    jnp = pytest.importorskip("jax.numpy")
    return jnp.array(True), jnp.array(4.0), jnp.array(4)


@pytest.mark.parametrize("kind", ["torch", "jax"])
def test_bool_and_float_scalar_mode_sizes_are_refused_by_name(kind):
    """A PyTorch bool scalar as a mode size was read as 1 (its ``__index__``), where
    ``True`` and ``np.True_`` are refused; float scalars raised torch's or JAX's own
    TypeError ("only integer tensors of a single element can be converted to an index"),
    which named no argument."""
    true, four_float, four = _scalars(kind)

    def function(indices):
        return np.ones(indices.shape[0])

    for bad in (true, four_float):
        with pytest.raises(TypeError, match=r"shape\[0\] must be an int, got"):
            tlc.tt_cross(function, shape=[bad, 5], rank=1, method="als", random_state=0)
    assert tlc.FunctionTensor(function, [four, 5]).shape == (4, 5)


# --- torch.func transforms ------------------------------------------------------------


def _under_torch_func(torch):
    rng = np.random.default_rng(0)
    dense = torch.tensor(_rank_one())
    with _backend("numpy"):
        indices = tlc.select_indices(_rank_one(), rank=1, method="als", random_state=0)
    return {
        "tt_cross": (lambda x: tlc.tt_cross(x, rank=1, method="als", random_state=0,
                                            differentiable=True).to_tensor().sum(), dense),
        "cross_interpolate": (lambda x: tlc.cross_interpolate(x, indices).to_tensor().sum(),
                              dense),
        "maxvol": (lambda a: tlc.maxvol(a)[1].sum(), torch.tensor(rng.standard_normal((9, 3)))),
    }


@pytest.mark.parametrize("name", ["tt_cross", "cross_interpolate", "maxvol"])
def test_a_torch_func_transform_is_refused_by_name(name):
    """Under ``torch.func.grad`` (or ``vmap``, ``jacrev``) the tensors are functorch
    wrappers without storage: the first host read failed with "Cannot access data pointer
    of Tensor that doesn't have storage", where a traced JAX value is refused by name."""
    torch = pytest.importorskip("torch")
    with _backend("pytorch"):
        function, argument = _under_torch_func(torch)[name]
        with pytest.raises(TypeError, match="torch.func transform .*requires_grad"):
            torch.func.grad(function)(argument)
        function(argument.clone().requires_grad_()).backward()  # autograd: the way that works


# Mutant (lazy.base.check_values): bools kept as bools ("biu" -> "iu"), though "bool and
# integer values become float64: the cores interpolate between them".
def test_bool_values_become_float64():
    tensor = tlc.FunctionTensor(lambda indices: indices.sum(axis=1) % 2 == 0, (3, 4))
    values = tensor.evaluate(np.array([[0, 0], [0, 1]]))
    assert values.dtype == np.float64
    np.testing.assert_array_equal(values, [1.0, 0.0])


# Mutant (lazy.base.check_values): a backend tensor of bools kept as bools ("biu" -> "iu"
# for backend tensors), where integers became float64.
def test_a_torch_bool_tensor_of_values_becomes_float64():
    torch = pytest.importorskip("torch")
    import tensorly as tl

    with tl.backend_context("pytorch"):
        tensor = tlc.FunctionTensor(
            lambda indices: torch.as_tensor(indices.sum(axis=1) % 2 == 0), (3, 4))
        values = tensor.evaluate(np.array([[0, 0], [0, 1]]))
        assert values.dtype == torch.float64
        assert values.tolist() == [1.0, 0.0]


# Mutant (lazy.base._is_size): the test of a bool dtype dropped: PyTorch's bool scalar,
# whose __index__ gives 1, was taken for a mode of size 1.
def test_a_torch_bool_mode_size_is_refused_by_name():
    torch = pytest.importorskip("torch")
    with pytest.raises(TypeError, match=r"shape\[0\] must be an int, got tensor\(True\)"):
        tlc.FunctionTensor(lambda indices: indices[:, 0] * 0.0, (torch.tensor(True), 3))


# Mutants (lazy.base.check_values): half precision kept (the float16 branch dropped), and
# ml_dtypes' bfloat16 (NumPy kind "V") not widened (its branch dropped, or only an exact
# "float16" taken for low precision): LAPACK has neither; both become float32, exactly.
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_low_precision_values_become_float32(dtype):
    if dtype == "bfloat16":
        dtype = pytest.importorskip("ml_dtypes").bfloat16
    tensor = tlc.FunctionTensor(
        lambda indices: (indices.sum(axis=1) / 4).astype(dtype), (3, 4))
    values = tensor.evaluate(np.array([[0, 1], [2, 3]]))
    assert values.dtype == np.float32
    np.testing.assert_array_equal(values, [0.25, 1.25])


# Mutant (lazy.base.check_values): PyTorch's complex32 kept (its branch dropped), which no
# LAPACK takes: it becomes complex64.
@pytest.mark.filterwarnings("ignore:ComplexHalf support is experimental")
def test_torch_complex_half_values_are_widened():
    torch = pytest.importorskip("torch")
    import tensorly as tl

    with tl.backend_context("pytorch"):
        tensor = tlc.FunctionTensor(
            lambda indices: torch.as_tensor(indices.sum(axis=1) / 4, dtype=torch.complex32),
            (3, 4))
        values = tensor.evaluate(np.array([[0, 1], [2, 3]]))
        assert values.dtype == torch.complex64
        assert values.tolist() == [0.25 + 0j, 1.25 + 0j]


@pytest.mark.parametrize("exponent", [-130, -140])
def test_the_block_cross_of_float32_data_near_its_subnormal_range_is_finite(exponent):
    # Rescaling by a power of two multiplied by a factor up to 2**1000 at once, which
    # float32 holds as inf (NumPy and PyTorch cast the factor to the data's precision):
    # the block cross failed deep in LAPACK ("array must not contain infs or NaNs", "SVD
    # did not converge") on float32 data near 2**-130.
    rng = np.random.default_rng(1)
    array = np.einsum("ia,ja,ka->ijk", *(rng.standard_normal((n, 3)) for n in (5, 6, 7)))
    array /= np.abs(array).max()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", tlc.SubnormalValuesWarning)  # documented, expected
        tt = tlc.tt_cross(np.ldexp(array, exponent).astype(np.float32), method="block",
                          rank=3, random_state=0)
    back = np.ldexp(np.asarray(tt.to_tensor()).astype(np.float64), -exponent)
    assert np.isfinite(back).all()
    # The entry-wise crosses keep 7e-6 at 2**-130 and 8e-3 at 2**-140 (float32's
    # subnormals keep few digits): the block cross keeps as many.
    assert np.linalg.norm(back - array) / np.linalg.norm(array) < 2e-2


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


def test_cross_interpolate_of_float64_data_near_its_largest_has_finite_cores():
    array = _rank_three((20, 21, 22))
    data = array * (1.9 * 2.0**1021)
    indices = tlc.select_indices(data, tol=1e-8, random_state=0)
    tt = tlc.cross_interpolate(data, indices)
    assert all(np.isfinite(core).all() for core in tt)
    dense = np.asarray(tl.tt_to_tensor(tt)) / (1.9 * 2.0**1021)
    assert np.linalg.norm(dense - array) / np.linalg.norm(array) < 1e-8


def _complex64_near_its_largest():
    """A rank-two complex64 array whose largest entry has parts of 3e38 each: a modulus of
    4.2e38, beyond float32's largest (3.4e38), and each part finite."""
    rng = np.random.default_rng(0)
    array = np.einsum("ir,jr,kr->ijk", *[rng.standard_normal((n, 2)) for n in (9, 10, 11)])
    array /= np.abs(array).max()
    return (3e38 * (array + 1j * array)).astype(np.complex64), array


def test_complex64_data_whose_modulus_passes_float32s_largest_is_crossed():
    # Its modulus, taken in single precision, is inf: the cross refused it as "modulus
    # inf, within a factor 4 of float64's largest", and did not shrink it.
    data, array = _complex64_near_its_largest()
    tt, info = tlc.tt_cross(data, tol=1e-4, method="lsq", random_state=0, return_info=True)
    wide = [core.astype(np.complex128) for core in tt]  # its products overflow complex64
    dense = tlc.tt_entries(wide, np.indices(data.shape).reshape(3, -1).T)
    expected = (array + 1j * array).reshape(-1)
    assert np.linalg.norm(dense / 3e38 - expected) / np.linalg.norm(expected) < 1e-4
    assert info.val_error < 1e-4
    assert tt[0].dtype == np.complex64


def _volume():
    return np.random.default_rng(0).random((6, 7, 8))


def test_a_jax_cross_keeps_a_thread_s_own_backend():
    pytest.importorskip("jax")
    volume = _volume()
    previous = tl.get_backend()
    try:
        tl.set_backend("numpy")
        with tl.backend_context("jax", local_threadsafe=True):
            tlc.tt_cross(volume, rank=2, random_state=0)
            assert tl.get_backend() == "jax"
        assert tl.get_backend() == "numpy"
    finally:
        tl.set_backend(previous)


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
