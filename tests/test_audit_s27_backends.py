"""Audit (session 27) of backends and dtypes across the engine: values of the floating types
NumPy lacks (JAX's bfloat16 and float8, PyTorch's float8 and complex32), TensorLy's
backend after a JAX cross whose function enters ``tl.backend_context``, gradients lost
through wrappers under NumPy and JAX, sparse and nested PyTorch tensors, mode sizes given as
PyTorch or JAX scalars, a cache fed batches with and without gradient, and ``torch.func``
transforms. Torch and JAX are skipped where they are not installed.
"""

import threading
import warnings

import numpy as np
import pytest
import tensorly as tl

import tensorly_cross as tlc

BACKENDS = ["numpy", "pytorch", "jax"]


def _rank_one(complex_valued=False):
    rng = np.random.default_rng(0)
    factors = [rng.uniform(0.5, 2.0, n) for n in (4, 5, 6)]
    if complex_valued:
        factors[0] = factors[0] * np.exp(1j * rng.uniform(0, 2 * np.pi, 4))
    return np.einsum("i,j,k->ijk", *factors)


def _backend(name):
    if name != "numpy":
        pytest.importorskip({"pytorch": "torch", "jax": "jax"}[name])
    if name == "jax":
        import jax

        jax.config.update("jax_enable_x64", True)
    return tl.backend_context(name)


def _host(tensor):
    return np.asarray(tl.to_numpy(tensor))


def _cross(tensor, shape=None):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a rank-1 TT of rounded data: no news here
        return tlc.tt_cross(tensor, shape=shape, rank=1, method="als", random_state=0)


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
            tt = _cross(stored)
        else:
            tt = _cross(lambda idx: stored[tuple(np.asarray(idx).T)], shape=data.shape)
        assert {str(core.dtype).rsplit(".", 1)[-1] for core in tt.factors} == {"float32"}
        exact = np.asarray(stored.astype(jnp.float32), dtype=np.float64)
        # The rounded values are of rank 1 no more: within their own precision.
        assert np.allclose(_host(tt.to_tensor()), exact, rtol=0.05 if dtype == "bfloat16" else 0.3)


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
            tt = _cross(stored)
        else:
            tt = _cross(lambda idx: stored[tuple(torch.as_tensor(idx).T)], shape=data.shape)
        assert {str(core.dtype).rsplit(".", 1)[-1] for core in tt.factors} == {"float32"}
        exact = stored.float().double().numpy()
        assert np.allclose(_host(tt.to_tensor()), exact, rtol=0.3)


@pytest.mark.parametrize("backend", BACKENDS)
def test_torch_complex32_values_keep_their_imaginary_part(backend):
    """Under NumPy and JAX: TypeError "Got unsupported ScalarType ComplexHalf"; now
    complex64 cores, the imaginary part kept."""
    torch = pytest.importorskip("torch")
    data = _rank_one(complex_valued=True)
    with _backend(backend), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torch: "ComplexHalf is experimental"
        stored = torch.tensor(data).to(torch.complex32)
        tt = _cross(stored)
        exact = stored.to(torch.complex128).numpy()
        assert {str(core.dtype).rsplit(".", 1)[-1] for core in tt.factors} == {"complex64"}
        assert np.allclose(_host(tt.to_tensor()), exact, rtol=0.01)


@pytest.mark.parametrize("dtype", ["complex32", "float8_e8m0fnu"])
@pytest.mark.parametrize("select", [tlc.maxvol, tlc.rect_maxvol])
def test_maxvol_refuses_torch_dtypes_without_lapack_by_name(dtype, select):
    """NotImplementedError '"lu_cpu" not implemented for 'ComplexHalf'' from deep inside
    the LU: the dtypes without LAPACK were listed one by one, and these were missing."""
    torch = pytest.importorskip("torch")
    matrix = torch.tensor(np.random.default_rng(0).uniform(1, 2, (20, 3)))
    with _backend("pytorch"), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torch: "ComplexHalf is experimental"
        with pytest.raises(TypeError, match=f"matrix has dtype torch.{dtype}, which LAPACK"):
            select(matrix.to(getattr(torch, dtype)))


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
        tt = _cross(function, shape=(4, 5, 6))
        assert tl.get_backend() == "jax"
        assert _backend_of_a_new_thread() == "jax"
    assert np.allclose(_host(tt.to_tensor()), np.exp(-np.indices((4, 5, 6)).sum(axis=0) / 10))


# --- a gradient asked for under NumPy or JAX, through a wrapper -----------------------


def _wrapped_tensors_that_require_grad(torch):
    """What a cross reads from a PyTorch tensor that requires grad, by kind of wrapper."""
    rng = np.random.default_rng(0)
    dense = torch.tensor(_rank_one(), requires_grad=True)
    cores = [torch.tensor(rng.standard_normal(shape), requires_grad=True)
             for shape in ((1, 4, 2), (2, 5, 2), (2, 6, 1))]
    from tensorly.tt_tensor import TTTensor

    return {
        "ArrayTensor": tlc.ArrayTensor(dense),
        "QuanticsTensor": tlc.QuanticsTensor(torch.tensor(np.ones((4, 8)), requires_grad=True)),
        "TransposedTensor": tlc.TransposedTensor(dense, (2, 0, 1)),
        "TTTensor": TTTensor(cores),
        "lazy TTTensor": tlc.lazy_tensor(TTTensor(cores)),
    }


WRAPPERS = ["ArrayTensor", "QuanticsTensor", "TransposedTensor", "TTTensor", "lazy TTTensor"]


@pytest.mark.parametrize("backend", ["numpy", "jax"])
@pytest.mark.parametrize("wrapper", WRAPPERS)
def test_a_wrapped_tensor_that_requires_grad_is_refused_where_its_gradient_is_lost(
        backend, wrapper):
    """``tt_cross(x, differentiable=True)`` of a tensor that requires grad raises under NumPy
    and JAX (a NumPy or JAX TT carries no PyTorch gradient); the same tensor in a lazy view,
    or the cores of a TTTensor, returned a TT without gradient, without a word."""
    torch = pytest.importorskip("torch")
    with _backend(backend):
        tensor = _wrapped_tensors_that_require_grad(torch)[wrapper]
        with pytest.raises(ValueError, match="requires grad, but the active TensorLy backend"):
            tlc.tt_cross(tensor, rank=1, method="als", random_state=0, differentiable=True)
        with pytest.raises(ValueError, match="requires grad, but the active TensorLy backend"):
            tlc.tensor_train_cross(tensor, rank=1, random_state=0)
        indices = tlc.select_indices(tensor, rank=1, method="als", random_state=0)
        with pytest.raises(ValueError, match="requires grad, but the active TensorLy backend"):
            tlc.cross_interpolate(tensor, indices)


@pytest.mark.parametrize("wrapper", WRAPPERS)
def test_a_wrapped_tensor_that_requires_grad_gets_its_gradient_under_pytorch(wrapper):
    """The same wrappers under PyTorch: the cores carry the gradient (the refusal above must
    not reach them)."""
    torch = pytest.importorskip("torch")
    with _backend("pytorch"):
        tensor = _wrapped_tensors_that_require_grad(torch)[wrapper]
        tt = tlc.tt_cross(tensor, rank=1, method="als", random_state=0, differentiable=True)
        assert all(core.requires_grad for core in tt.factors)


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


# --- a function whose values require grad in some batches only ------------------------


def test_a_batch_without_gradient_after_one_with_it_is_cached():
    """Under PyTorch the cache wrote later batches into its buffer in place; a buffer that
    held values requiring grad grew into ``tl.zeros(..., requires_grad=True)``, a leaf, and
    the write raised "a view of a leaf Variable that requires grad is being used in an
    in-place operation" (a function whose values depend on a parameter in some batches
    only: a background short-cut, a batch served from its own cache)."""
    torch = pytest.importorskip("torch")
    data = _rank_one()
    weight = torch.tensor(2.0, dtype=torch.float64, requires_grad=True)
    calls = []

    def function(indices):
        values = torch.tensor(data[tuple(np.asarray(indices).T)])
        calls.append(len(indices))
        return values * weight if len(calls) == 1 else values * 2.0

    with _backend("pytorch"):
        tt = _cross(function, shape=data.shape)
        assert np.allclose(_host(tt.to_tensor().detach()), 2.0 * data)
    assert len(calls) > 1


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
