"""Audit (session 13) of the backend helpers: tensors of one backend read under another,
PyTorch's lazy views, and NumPy arrays that BLAS cannot update in place.

Each test pins a problem found: a crash or a silently stale result under one backend or
for one kind of tensor where NumPy's arrays worked. Torch and JAX are imported inside the
tests, so that the module is collected (and skips) without them.
"""

import numpy as np
import pytest
import tensorly as tl

import tensorly_cross as tlc
from tensorly_cross._backend import subtract_outer_

from .conftest import host

# A small rank-2 tensor, its complex companion, and the TT cores of a complex TT.
_RNG = np.random.default_rng(13)
TENSOR = sum(np.einsum("i,j,k->ijk", *(_RNG.standard_normal(n) for n in (3, 4, 2)))
             for _ in range(2))
COMPLEX = TENSOR + 1j * TENSOR[::-1]
CORE_SHAPES = [(1, 2, 2), (2, 3, 2), (2, 2, 1)]
COMPLEX_CORES = [_RNG.standard_normal(s) + 1j * _RNG.standard_normal(s) for s in CORE_SHAPES]


def _torch():
    return pytest.importorskip("torch")


def _jax():
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    return jax


def _full(tt):
    """The dense NumPy tensor of a TT (of any backend), from its host cores."""
    with tl.backend_context("numpy"):
        return tl.tt_to_tensor([host(core) for core in tt])


def _saved_and_loaded(tmp_path, cores):
    """``cores`` written with save_tt under the active backend, read back under NumPy."""
    path = tlc.save_tt(tmp_path / "tt.npz", cores)
    with tl.backend_context("numpy"):
        return tlc.load_tt(path)[0]


# PyTorch's lazy views: the negative bit ------------------------------------------------


@pytest.mark.parametrize("name", ["numpy", "pytorch"])
def test_save_tt_reads_torch_cores_with_the_negative_bit(tmp_path, name):
    """``c.conj().imag`` is a view with the negative bit set, which ``.numpy()`` refused."""
    torch = _torch()
    cores = [torch.tensor(core).conj().imag for core in COMPLEX_CORES]
    assert cores[0].is_neg()  # the kind of view this test is about
    with tl.backend_context(name):
        loaded = _saved_and_loaded(tmp_path, cores)
    for core, expected in zip(loaded, COMPLEX_CORES, strict=True):
        np.testing.assert_array_equal(core, -expected.imag)


@pytest.mark.parametrize("name", ["numpy", "pytorch"])
def test_streaming_tt_svd_reads_a_torch_view_with_the_negative_bit(name):
    torch = _torch()
    view = torch.tensor(COMPLEX).conj().imag
    with tl.backend_context(name):
        tt = tlc.streaming_tt_svd(view, rank=[1, 3, 2, 1])
    np.testing.assert_allclose(_full(tt), -COMPLEX.imag, atol=1e-12)


# Tensors of another backend ------------------------------------------------------------


def test_save_tt_of_jax_cores_under_pytorch_jax(tmp_path):
    """Under PyTorch every tensor went down the torch path: a JAX core has no .detach()."""
    _torch()
    _jax()
    import jax.numpy as jnp

    cores = [jnp.asarray(core.real) for core in COMPLEX_CORES]
    with tl.backend_context("pytorch"):
        loaded = _saved_and_loaded(tmp_path, cores)
    for core, expected in zip(loaded, COMPLEX_CORES, strict=True):
        np.testing.assert_array_equal(core, expected.real)


def test_save_tt_of_a_torch_subclass_that_requires_grad_under_numpy(tmp_path):
    """A subclass of torch.Tensor defined outside torch was told from other tensors by its
    module name, and NumPy's to_numpy refused it for requiring grad."""
    torch = _torch()

    class Tagged(torch.Tensor):
        pass

    cores = [torch.tensor(core.real).as_subclass(Tagged).requires_grad_()
             for core in COMPLEX_CORES]
    with tl.backend_context("numpy"):
        loaded = _saved_and_loaded(tmp_path, cores)
    for core, expected in zip(loaded, COMPLEX_CORES, strict=True):
        np.testing.assert_array_equal(core, expected.real)


# lazy/base.py and cross/tt_entries.py read torch by hand (no resolve_neg, no meta check):
# both now read through _backend.to_host --------------------------------------------------


@pytest.mark.parametrize("view", ["conj", "neg"])
def test_function_tensor_of_torch_views_under_numpy(view):
    """The same FunctionTensor worked under PyTorch (and dense views under every backend)."""
    torch = _torch()
    source = torch.tensor(COMPLEX)
    expected = np.conj(COMPLEX) if view == "conj" else -COMPLEX.imag

    def entries(indices):
        values = source[tuple(torch.as_tensor(indices).T)].conj()
        return values if view == "conj" else values.imag

    function = tlc.FunctionTensor(entries, COMPLEX.shape)
    with tl.backend_context("numpy"):
        tt = tlc.tt_cross(function, rank=2, random_state=0)
    np.testing.assert_allclose(_full(tt), expected, atol=1e-10)


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
