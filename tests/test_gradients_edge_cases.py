"""Tests of differentiable crosses: gradients, torch.compile and graphs kept through reads."""

import warnings

import numpy as np
import pytest
import tensorly as tl

import tensorly_cross as tlc
from tensorly_cross import tt_entries

from ._helpers_shared import TENSOR, TimedFunction, _backend, _jax, _rank_one, _rank_three, _torch
from .conftest import host


def test_cross_interpolate_under_jax_grad_says_why():
    jax = _jax()
    dense = np.random.default_rng(0).standard_normal((4, 5, 3))
    indices = tlc.select_indices(dense, rank=2, method="als", random_state=0)
    with tl.backend_context("jax"), pytest.raises(TypeError, match="traced JAX value"):
        jax.grad(lambda x: tl.tt_to_tensor(tlc.cross_interpolate(x, indices)).sum())(
            jax.numpy.asarray(dense)
        )


# tt_entries --------------------------------------------------------------------------------


def _random_tt(shape, rank, seed):
    rng = np.random.default_rng(seed)
    ranks = [1] + [rank] * (len(shape) - 1) + [1]
    return [rng.standard_normal((ranks[k], n, ranks[k + 1])) for k, n in enumerate(shape)]


def test_tt_entries_refuses_float_indices_that_require_grad(backend):
    torch = _torch()
    cores = [tl.tensor(core) for core in _random_tt((4, 5, 3), 2, 0)]
    indices = torch.zeros((2, 3), dtype=torch.float64, requires_grad=True)
    # NumPy's conversion raised RuntimeError before the integer check could speak.
    with pytest.raises(ValueError, match="indices must be integers"):
        tt_entries(cores, indices)


def test_tt_cross_under_jax_grad_is_refused_by_name():
    jax = pytest.importorskip("jax")
    jnp = pytest.importorskip("jax.numpy")

    def loss(x):
        return tlc.tt_cross(x, rank=2, random_state=0)[0].sum()

    with pytest.raises(TypeError, match="tensor is a traced JAX value"):
        jax.grad(loss)(jnp.ones((4, 5, 6)))


# The SVD fallback ----------------------------------------------------------------------


def test_svd_fallback_makes_no_leaves_that_take_the_gradient(monkeypatch):
    """The host (gesvd) fallback carries no gradient; its factors were created as leaves
    that require grad, so a backward through them ran and left the matrix's gradient
    None without a word. As constants, such a backward now refuses."""
    torch = _torch()
    from tensorly_cross._backend import svd

    def unconverged(*args, **kwargs):
        raise RuntimeError("linalg.svd: The algorithm failed to converge")

    matrix = torch.tensor(TENSOR.reshape(6, 4), requires_grad=True)
    with tl.backend_context("pytorch"):
        monkeypatch.setattr(tl, "svd", unconverged)
        factors = svd(matrix)
    np.testing.assert_allclose(host(factors[1]), np.linalg.svd(TENSOR.reshape(6, 4))[1])
    assert [factor.dtype for factor in factors] == [torch.float64] * 3
    assert not any(factor.requires_grad for factor in factors)


def test_a_torch_grid_that_requires_grad_is_read_as_points():
    torch = pytest.importorskip("torch")
    grid = torch.linspace(0, 1, 5, requires_grad=True)
    tensor = tlc.FunctionTensor.on_grid(lambda points: points.sum(axis=1), [grid, grid])
    np.testing.assert_allclose(tl.to_numpy(tensor.evaluate([[1, 2]])), [0.75])


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


class OwnLazyTensor(tlc.LazyTensor):
    """A user's lazy tensor (not a FunctionTensor): its function_seconds are its waits."""

    def __init__(self, function, shape):
        super().__init__(shape)
        self.function = function

    def _evaluate(self, indices):
        return self.function(indices)


@pytest.mark.parametrize("wrap", [False, True])
def test_differentiable_read_is_timed_as_function_and_wait(wrap):
    # Before: differentiable=True read the cores again after the search (counted in
    # n_evals), but that read's time was in neither function_seconds nor wait_seconds:
    # overhead_seconds, "the cross itself", held it (0.215 s of 0.634 against 0.036 s
    # without the read).
    function = TimedFunction()
    tensor = (OwnLazyTensor(function, (6, 6, 6)) if wrap
              else tlc.FunctionTensor(function, (6, 6, 6)))
    _, info = tlc.tt_cross(tensor, random_state=0, differentiable=True, return_info=True)
    assert info.function_seconds >= 0.999 * function.spent
    assert info.wait_seconds >= 0.999 * function.spent
    assert info.overhead_seconds < info.total_seconds - function.spent + 1e-3


def _cosine(shape):
    """An exact TT of rank 2: crosses recover it to round-off."""
    return tlc.FunctionTensor(lambda idx: np.cos(idx.sum(axis=1) / 9.0), shape)


# Mutants (api._assemble_counted): the warning given only past max_evals plus the fresh
# read itself (a differentiable run that read past max_evals said nothing), and the fresh
# read left out of n_evals.
def test_a_differentiable_read_past_max_evals_warns():
    settings = dict(tol=1e-8, val_size=300, random_state=0, return_info=True)
    _, search = tlc.select_indices(_cosine((16,) * 4), **settings)
    with pytest.warns(RuntimeWarning, match=f"max_evals={search.n_evals} bounds the index"):
        _, info = tlc.tt_cross(_cosine((16,) * 4), differentiable=True,
                               max_evals=search.n_evals, **settings)
    assert info.n_evals > search.n_evals  # the search, then the cores' fresh read


@pytest.mark.parametrize("method, extra", [("tci", {}), ("als", {"rank": 2}),
                                           ("lsq", {}), ("block", {"rank": 2})])
def test_the_differentiable_read_is_counted_as_asked_for_and_as_a_call(method, extra):
    # The fresh read after the search was added to n_evals only: n_requested stayed the
    # search's, so n_requested - n_cached (entries computed, CacheCounters' definition) no
    # longer gave n_evals, and n_calls missed the batched call that made the read.
    def function(indices):
        return 1.0 / (1.0 + indices.sum(axis=1))

    shape = (6, 5, 4)
    _, search = tlc.select_indices(function, shape=shape, method=method, random_state=0,
                                   return_info=True, **extra)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", tlc.ToleranceNotMetWarning)
        _, info = tlc.tt_cross(function, shape=shape, method=method, random_state=0,
                               return_info=True, differentiable=True, **extra)
    read = info.n_evals - search.n_evals
    assert read > 0
    assert info.n_cached == search.n_cached
    assert info.n_requested == search.n_requested + read
    assert info.n_requested - info.n_cached == info.n_evals
    assert info.n_calls == search.n_calls + 1  # the cores come from ONE batched read


def _field(torch):
    rng = np.random.default_rng(0)
    return torch.tensor(rng.standard_normal((6, 5, 7)))


@pytest.mark.parametrize("backend", ["pytorch", "numpy"])
@pytest.mark.parametrize("fill_nan", [None, 0.0])
def test_an_opened_tensor_that_requires_grad_is_refused_where_its_gradient_is_lost(
        backend, fill_nan):
    """``open_volume(x)`` of a PyTorch tensor that requires grad reads it chunk by chunk,
    detached on the host. ``tt_cross(..., differentiable=True)``, ``cross_interpolate`` and
    the drop-in returned a TT without gradient (under PyTorch too), without a word, where
    ``x`` itself or ``lazy_tensor(x)`` carries it."""
    torch = pytest.importorskip("torch")
    volume = _field(torch).requires_grad_(True)
    with tl.backend_context(backend):
        opened = tlc.open_volume(volume, fill_nan=fill_nan)
        for wrapped in (opened, tlc.TransposedTensor(opened, (2, 0, 1))):
            with pytest.raises(ValueError, match="reads it detached"):
                tlc.tt_cross(wrapped, rank=2, method="als", random_state=0,
                             differentiable=True)
            with pytest.raises(ValueError, match="reads it detached"):
                tlc.tensor_train_cross(wrapped, rank=2, random_state=0)
            indices = tlc.select_indices(wrapped, rank=2, method="als", random_state=0)
            with pytest.raises(ValueError, match="reads it detached"):
                tlc.cross_interpolate(wrapped, indices)
        # Without gradient asked for, the opened tensor is read as before.
        tt = tlc.tt_cross(opened, rank=2, method="als", random_state=0)
        assert not any(getattr(core, "requires_grad", False) for core in tt.factors)


def test_torch_compile_runs_the_cross_eagerly_with_its_gradient(pytorch_backend):
    """``torch.compile`` of a loss that calls the cross traced into its index search (host
    NumPy): every entry point failed inside TorchDynamo ("cumsum_out_cpu" not implemented
    for 'Bool', "Cannot interpret 'torch.float64' as a data type"). The cross now runs
    eagerly there (a graph break), with the value and gradient it has without compile."""
    torch = pytest.importorskip("torch")
    torch._dynamo.reset()
    dense = _field(torch)
    indices = tlc.select_indices(dense, rank=2, method="als", random_state=0)
    calls = {
        "tt_cross": lambda x: tlc.tt_cross(x, rank=2, method="als", random_state=0,
                                           differentiable=True),
        "cross_interpolate": lambda x: tlc.cross_interpolate(x, indices),
    }
    for name, call in calls.items():
        def loss(x, call=call):
            return call(x).factors[1].sum()

        compiled = torch.compile(loss, backend="eager")  # TorchDynamo only: fast
        variable = dense.clone().requires_grad_(True)
        value = compiled(variable)
        value.backward()
        eager = dense.clone().requires_grad_(True)
        loss(eager).backward()
        assert float(value.detach()) == pytest.approx(float(loss(dense)), rel=1e-12), name
        np.testing.assert_allclose(variable.grad.numpy(), eager.grad.numpy(), rtol=1e-12)
    compiled = torch.compile(lambda x: x.sum() + len(tlc.select_indices(
        x, rank=2, method="als", random_state=0).left), backend="eager")
    assert float(compiled(dense)) == pytest.approx(float(dense.sum()) + 3)


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


def test_the_strided_gather_of_a_large_mode_carries_gradients():
    torch = pytest.importorskip("torch")
    with tl.backend_context("pytorch"):
        generator = torch.Generator().manual_seed(0)
        cores = [torch.randn(shape, dtype=torch.float64, generator=generator,
                             requires_grad=True) for shape in [(1, 3, 2), (2, 50, 3), (3, 4, 1)]]
        indices = np.array([[0, 7, 1], [2, 49, 3], [1, 7, 0]])  # 3 entries of a mode of 50
        values = tlc.tt_entries(cores, indices)
        dense = tl.tt_to_tensor(cores)[tuple(torch.as_tensor(indices).T)]
        torch.testing.assert_close(values, dense)
        weights = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
        got = torch.autograd.grad((values * weights).sum(), cores)
        expected = torch.autograd.grad((dense * weights).sum(), cores)
        for first, second in zip(got, expected, strict=True):
            torch.testing.assert_close(first, second)
