"""Audit of the backend-agnostic and differentiable API under NumPy, PyTorch and JAX.

Each test pins a problem the audit found: a gradient that was wrong or crashed in
``backward``, a dtype that differed between backends, or a deep crash where a clear error
naming the argument belongs. Torch and JAX are imported inside the tests, so that the
module is collected (and skips) without them.
"""

import warnings

import numpy as np
import pytest
import tensorly as tl
from hypothesis import given
from hypothesis import strategies as st

import tensorly_cross as tlc
from tensorly_cross import maxvol, rect_maxvol, tt_entries

from .conftest import host

SEEDS = st.integers(0, 2**16)


def _torch():
    torch = pytest.importorskip("torch")
    return torch


def _jax():
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    return jax


def _swapping_matrix(complex_valued=False):
    """A (10, 3) matrix whose LU pivots are not dominant: maxvol swaps at least one row."""
    rng = np.random.default_rng(1 if complex_valued else 6)
    matrix = rng.standard_normal((10, 3))
    if complex_valued:
        matrix = matrix + 1j * rng.standard_normal((10, 3))
    with tl.backend_context("numpy"):
        assert maxvol(matrix, max_iter=0)[0].tolist() != maxvol(matrix)[0].tolist()
    return matrix


# maxvol / rect_maxvol: gradients ------------------------------------------------------


def test_maxvol_gradient_after_row_swaps_matches_finite_differences():
    torch = _torch()
    with tl.backend_context("pytorch"):
        matrix = torch.tensor(_swapping_matrix(), requires_grad=True)
        # The swaps' in-place rank-1 updates made backward raise a RuntimeError.
        assert torch.autograd.gradcheck(lambda a: maxvol(a)[1], (matrix,))


def test_complex_maxvol_gradient_after_row_swaps_matches_finite_differences():
    torch = _torch()
    with tl.backend_context("pytorch"):
        tensor = torch.tensor(_swapping_matrix(complex_valued=True), requires_grad=True)
        assert torch.autograd.gradcheck(lambda a: maxvol(a)[1], (tensor,))


@given(n_rows=st.integers(3, 40), n_cols=st.integers(1, 5), seed=SEEDS)
def test_maxvol_gradient_is_that_of_its_interpolation_formula(n_rows, n_cols, seed):
    """``B = A inv(A[rows])`` for the rows chosen: the same gradient, swaps or not."""
    torch = _torch()
    n_cols = min(n_cols, n_rows)
    rng = np.random.default_rng(seed)
    matrix = torch.tensor(rng.standard_normal((n_rows, n_cols)), requires_grad=True)
    probe = torch.tensor(rng.standard_normal((n_rows, n_cols)))
    with tl.backend_context("pytorch"):
        rows, coefficients = maxvol(matrix)
    (gradient,) = torch.autograd.grad((coefficients * probe).sum(), matrix)
    formula = matrix @ torch.linalg.inv(matrix[torch.as_tensor(rows)])
    (expected,) = torch.autograd.grad((formula * probe).sum(), matrix)
    torch.testing.assert_close(gradient, expected, rtol=1e-8, atol=1e-10)


@given(n_rows=st.integers(6, 40), n_cols=st.integers(1, 4), seed=SEEDS)
def test_rect_maxvol_gradient_is_that_of_the_pseudo_inverse(n_rows, n_cols, seed):
    """``B = A pinv(A[rows])``: the Sherman-Morrison denominators, host floats, left part
    of its dependence on ``A`` out of the gradient."""
    torch = _torch()
    rng = np.random.default_rng(seed)
    matrix = torch.tensor(rng.standard_normal((n_rows, n_cols)), requires_grad=True)
    probe = torch.tensor(rng.standard_normal((n_rows, n_rows)))
    with tl.backend_context("pytorch"):
        rows, coefficients = rect_maxvol(matrix, tol=1.0, min_add=1)
    probe = probe[:, : len(rows)]
    (gradient,) = torch.autograd.grad((coefficients * probe).sum(), matrix)
    formula = matrix @ torch.linalg.pinv(matrix[torch.as_tensor(rows)])
    torch.testing.assert_close(coefficients.detach(), formula.detach(), rtol=1e-8, atol=1e-10)
    (expected,) = torch.autograd.grad((formula * probe).sum(), matrix)
    torch.testing.assert_close(gradient, expected, rtol=1e-7, atol=1e-9)


def test_rect_maxvol_gradient_matches_finite_differences():
    torch = _torch()
    matrix = np.random.default_rng(1).standard_normal((12, 3))
    with tl.backend_context("pytorch"):
        tensor = torch.tensor(matrix, requires_grad=True)
        assert torch.autograd.gradcheck(lambda a: rect_maxvol(a)[1], (tensor,))


# maxvol / rect_maxvol: dtypes and values without data ----------------------------------


@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.bool_])
@pytest.mark.parametrize("select", [maxvol, rect_maxvol])
def test_integer_and_bool_matrices_give_float64_on_every_backend(backend, select, dtype):
    matrix = np.random.default_rng(3).integers(0, 2, size=(9, 3))
    matrix[:3] = np.eye(3, dtype=matrix.dtype)  # full column rank for any draw
    with tl.backend_context("numpy"):
        expected_rows, expected = select(matrix.astype(np.float64))
    # PyTorch's LU refused integers; JAX returned float32 for a bool matrix.
    rows, coefficients = select(tl.tensor(matrix.astype(dtype)))
    assert host(coefficients).dtype == np.float64
    np.testing.assert_array_equal(rows, expected_rows)
    np.testing.assert_allclose(host(coefficients), expected, atol=1e-12)


@pytest.mark.parametrize("select", [maxvol, rect_maxvol])
def test_meta_device_matrix_is_refused_by_name(select):
    torch = _torch()
    with tl.backend_context("pytorch"), pytest.raises(ValueError, match="meta") as error:
        select(torch.empty((6, 2), dtype=torch.float64, device="meta"))
    assert str(error.value).startswith("matrix")


@pytest.mark.parametrize("select", [maxvol, rect_maxvol])
def test_traced_jax_matrix_is_refused_by_name(select):
    jax = _jax()
    matrix = jax.numpy.asarray(np.random.default_rng(0).standard_normal((6, 2)))
    with tl.backend_context("jax"), pytest.raises(TypeError, match="traced JAX") as error:
        jax.grad(lambda a: select(a)[1].sum())(matrix)
    assert str(error.value).startswith("matrix")


# tensor_train_cross ----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["numpy", "pytorch", "jax"])
def test_drop_in_refuses_a_meta_tensor_by_name(name):
    torch = _torch()
    if name == "jax":
        _jax()
    tensor = torch.empty((4, 5, 3), dtype=torch.float64, device="meta")
    with tl.backend_context(name), pytest.raises(ValueError, match="meta") as error:
        tlc.tensor_train_cross(tensor, rank=2, random_state=0)
    assert str(error.value).startswith("input_tensor")


def test_drop_in_under_jax_grad_is_refused_by_name():
    jax = _jax()
    tensor = jax.numpy.asarray(np.random.default_rng(0).standard_normal((4, 5, 3)))
    with tl.backend_context("jax"), pytest.raises(TypeError, match="traced JAX") as error:
        jax.grad(lambda x: tl.tt_to_tensor(tlc.tensor_train_cross(x, rank=2)).sum())(tensor)
    assert str(error.value).startswith("input_tensor")


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


def _dense_entries(cores, indices):
    with tl.backend_context("numpy"):
        return tl.tt_to_tensor(cores)[tuple(np.asarray(indices).T)]


def _as_kind(core, kind):
    if kind == "numpy":
        return core
    if kind == "torch":
        return _torch().tensor(core)
    return _jax().numpy.asarray(core)


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


def test_tt_entries_refuses_float_indices_that_require_grad(backend):
    torch = _torch()
    cores = [tl.tensor(core) for core in _random_tt((4, 5, 3), 2, 0)]
    indices = torch.zeros((2, 3), dtype=torch.float64, requires_grad=True)
    # NumPy's conversion raised RuntimeError before the integer check could speak.
    with pytest.raises(ValueError, match="indices must be integers"):
        tt_entries(cores, indices)


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


@pytest.mark.parametrize("kind", ["numpy", "torch", "jax"])
def test_drop_in_takes_a_rank_array_like_tensorly(kind):
    """TensorLy's ``tensor_train_cross`` takes any rank with ``len`` and ``list``."""
    rank = _as_kind(np.array([1, 2, 2, 1]), kind)
    tensor = tl.tensor(np.random.default_rng(0).standard_normal((4, 4, 4)))
    assert tlc.tensor_train_cross(tensor, rank, random_state=0).rank == (1, 2, 2, 1)


def test_drop_in_refuses_a_float_rank_array_by_name():
    tensor = tl.tensor(np.ones((4, 4, 4)))
    with pytest.raises(TypeError, match=r"rank\[0\] must be an integer, got 1.0"):
        tlc.tensor_train_cross(tensor, np.array([1.0, 2.0, 2.0, 1.0]))


def test_tt_cross_refuses_a_meta_tensor_by_name_under_any_backend():
    # Under NumPy or JAX a meta tensor failed deep in the first read (NotImplementedError).
    torch = pytest.importorskip("torch")
    with pytest.raises(ValueError, match="tensor is a PyTorch tensor on the 'meta' device"):
        tlc.tt_cross(torch.empty((4, 5, 6), device="meta"), rank=2)


def test_tt_cross_under_jax_grad_is_refused_by_name():
    jax = pytest.importorskip("jax")
    jnp = pytest.importorskip("jax.numpy")

    def loss(x):
        return tlc.tt_cross(x, rank=2, random_state=0)[0].sum()

    with pytest.raises(TypeError, match="tensor is a traced JAX value"):
        jax.grad(loss)(jnp.ones((4, 5, 6)))
