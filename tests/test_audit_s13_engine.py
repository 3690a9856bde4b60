"""Audit of the maxvol engine, the TensorLy drop-in and the ALS/LSQ/block cross internals.

The bug tests failed before their fix; the property tests guard the paths audited.
"""

import warnings

import numpy as np
import pytest
import tensorly as tl
from hypothesis import given, settings
from hypothesis import strategies as st

import tensorly_cross as tlc
from tensorly_cross import RankDeficiencyWarning, maxvol, rect_maxvol, tensor_train_cross
from tensorly_cross.cross.init import clip_ranks

from .strategies import random_tt_cores, seeds


def _low_rank_tensor(shape, rank, seed):
    """A NumPy tensor of TT rank at most ``rank`` (whatever the active backend)."""
    with tl.backend_context("numpy"):
        return tl.tt_to_tensor(random_tt_cores(shape, clip_ranks(shape, rank), seed))


# -- refine.py: the ridge of the least-squares refinement follows the dtype ---------------


@pytest.mark.parametrize("seed, shape, rank", [
    (0, (4, 4, 2, 2), [1, 1, 1, 1, 1]),
    (2, (2, 1, 2, 3), [1, 2, 2, 1, 1]),
    (12, (2, 6, 6), [1, 1, 1, 1]),
])
def test_float32_als_above_the_data_rank_refines_without_a_singular_solve(seed, shape, rank):
    # ALS asked for one more rank than the data has misses tol=1e-12 in float32 and ends with
    # the least-squares refinement; its ridge (1e-13 of the mean diagonal) vanished below
    # float32's resolution and PyTorch's solve raised "the input matrix is singular".
    torch = pytest.importorskip("torch")
    dense = _low_rank_tensor(shape, rank, seed).astype(np.float32)
    with tl.backend_context("pytorch"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tt = tlc.tt_cross(torch.tensor(dense), rank=max(rank) + 1, method="als",
                          random_state=seed, tol=1e-12)
        result = tl.to_numpy(tl.tt_to_tensor(tt))
    assert result.dtype == np.float32
    assert np.linalg.norm(result - dense) <= 1e-4 * np.linalg.norm(dense)


def test_refinement_of_float32_cores_over_rank_deficient_fibers_is_finite():
    # The same solve on NumPy: a float32 normal matrix that the ridge must keep invertible.
    from tensorly_cross.cross.refine import refine_cores
    from tensorly_cross.lazy.array import ArrayTensor

    rng = np.random.default_rng(0)
    dense = np.einsum("i,j,k->ijk", *(rng.standard_normal(n) for n in (4, 5, 6)))
    lazy = ArrayTensor(dense.astype(np.float32))
    cores = [rng.standard_normal(s).astype(np.float32) for s in [(1, 4, 2), (2, 5, 2), (2, 6, 1)]]
    left = [np.zeros((1, 0), np.int64), np.array([[0], [1]]), np.array([[0, 0], [1, 1]])]
    right = [np.array([[0, 0], [1, 1]]), np.array([[0], [1]]), np.zeros((1, 0), np.int64)]
    refined = refine_cores(lazy, cores, [(left, right)])
    assert all(core.dtype == np.float32 and np.isfinite(core).all() for core in refined)


# -- maxvol.py / lsq.py: a zero matrix stays in the autograd graph -------------------------


@pytest.mark.parametrize("select", [maxvol, rect_maxvol], ids=["maxvol", "rect_maxvol"])
def test_coefficients_of_a_zero_matrix_that_requires_grad_stay_in_its_graph(select):
    # B = 0 was a fresh tl.zeros with the matrix's context: a detached leaf that required
    # grad, so a loss built on it never reached the matrix (matrix.grad stayed None).
    torch = pytest.importorskip("torch")
    with tl.backend_context("pytorch"):
        matrix = torch.zeros((6, 2), dtype=torch.float64, requires_grad=True)
        with pytest.warns(RankDeficiencyWarning):
            rows, coefficients = select(matrix)
        assert coefficients.grad_fn is not None
        (coefficients * torch.ones_like(coefficients)).sum().backward()
    assert rows.shape == (2,) and len(set(rows.tolist())) == 2
    assert matrix.grad is not None and float(matrix.grad.abs().sum()) == 0.0


def test_lsq_pseudo_inverse_of_a_zero_interface_stays_in_the_graph():
    torch = pytest.importorskip("torch")
    from tensorly_cross.cross.lsq import _pinv_times

    with tl.backend_context("pytorch"):
        matrix = torch.zeros((5, 2), dtype=torch.float64, requires_grad=True)
        rhs = torch.ones((5, 3), dtype=torch.float64, requires_grad=True)
        solution = _pinv_times(matrix, rhs)
        assert tuple(solution.shape) == (2, 3) and solution.grad_fn is not None
        solution.sum().backward()
    assert rhs.grad is not None and float(rhs.grad.abs().sum()) == 0.0


# -- decomposition.py: refusals name the drop-in's own arguments ---------------------------


@pytest.mark.parametrize("make", [
    lambda m: np.ma.masked_array(m),
    lambda m: pytest.importorskip("pandas").DataFrame(m),
    lambda m: pytest.importorskip("scipy.sparse").csr_matrix(m),
], ids=["masked", "dataframe", "sparse"])
def test_dropin_refusals_name_input_tensor(make):
    # The messages came from tt_cross and named its argument, "tensor".
    matrix = np.arange(12.0).reshape(4, 3)
    with pytest.raises(TypeError, match="^input_tensor is"):
        tensor_train_cross(make(matrix), rank=2)


def test_dropin_refuses_an_empty_mode_by_its_argument_name():
    # Was: "shape[0]=0 must be >= 1", naming a "shape" the drop-in does not take.
    with pytest.raises(ValueError, match=r"input_tensor has shape \(0, 3\).*>= 1"):
        tensor_train_cross(np.zeros((0, 3)), rank=1)


def test_dropin_points_a_callable_to_tt_cross():
    # Was: "convert it with tl.tensor(...)", which a function cannot be.
    with pytest.raises(TypeError, match=r"input_tensor .*function.*tt_cross\(f, shape"):
        tensor_train_cross(lambda idx: idx.sum(axis=1), rank=1)


@pytest.mark.parametrize("decompose", [
    lambda tensor: tensor_train_cross(tensor, rank=2),
    lambda tensor: tlc.TensorTrainCross(rank=2).fit_transform(tensor),
], ids=["function", "estimator"])
def test_dropin_random_state_none_follows_numpys_global_seed(decompose):
    # TensorLy's None is NumPy's global RandomState (tl.check_random_state): code that calls
    # np.random.seed for reproducibility got different TTs from the drop-in (fresh entropy).
    tensor = np.random.default_rng(1).standard_normal((6, 7, 8))
    runs = []
    for _ in range(2):
        np.random.seed(0)  # noqa: NPY002 (the legacy global state is what is tested)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            runs.append(decompose(tensor))
    for first, second in zip(*runs, strict=True):
        np.testing.assert_array_equal(first, second)


# -- properties that hold (regression guards for the paths audited) -------------------------


@settings(max_examples=6)  # JAX compiles each new shape: about 1 s an example
@given(seed=seeds, extra=st.integers(0, 3))
def test_dropin_recovers_a_low_rank_tensor_on_every_backend(backend, seed, extra):
    # Ranks above the data's (and above the mode sizes, clipped) still give the tensor.
    rng = np.random.default_rng(seed)
    shape = tuple(int(n) for n in rng.integers(1, 6, size=int(rng.integers(1, 5))))
    rank = [1] + [int(r) for r in rng.integers(1, 4, size=len(shape) - 1)] + [1]
    dense = _low_rank_tensor(shape, rank, seed)
    asked = [1] + [min(r + extra, int(np.prod(shape[k + 1:]))) for k, r in
                   enumerate(rank[1:-1])] + [1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tt = tensor_train_cross(tl.tensor(dense), asked, random_state=seed)
    result = tl.to_numpy(tl.tt_to_tensor(tt))
    assert np.linalg.norm(result - dense) <= 1e-8 * max(np.linalg.norm(dense), 1e-300)


@settings(max_examples=10)
@given(seed=seeds, method=st.sampled_from(["als", "lsq", "block"]), extra=st.integers(0, 3))
def test_fixed_rank_methods_agree_across_backends(backend, seed, method, extra):
    rng = np.random.default_rng(seed)
    shape = tuple(int(n) for n in rng.integers(1, 6, size=int(rng.integers(2, 5))))
    rank = [1] + [int(r) for r in rng.integers(1, 4, size=len(shape) - 1)] + [1]
    dense = _low_rank_tensor(shape, rank, seed)
    options = dict(rank=max(rank) + extra, method=method, random_state=seed, tol=1e-10)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with tl.backend_context("numpy"):
            reference = tl.tt_to_tensor(tlc.tt_cross(dense, **options)).reshape(shape)
        result = tl.to_numpy(tl.tt_to_tensor(tlc.tt_cross(tl.tensor(dense), **options)))
    np.testing.assert_allclose(result.reshape(shape), reference, atol=1e-9)
    assert np.linalg.norm(reference - dense) <= 1e-8 * max(np.linalg.norm(dense), 1e-300)


# -- api.py (outside this audit's files): differentiable=True returns another TT -----------


def _smooth_noisy():
    grid = np.linspace(0, 1, 12)
    dense = 1 / (1 + np.add.outer(np.add.outer(grid, grid), grid)[..., None] + grid)
    return dense + 0.01 * np.random.default_rng(0).standard_normal(dense.shape)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_differentiable_lsq_returns_the_tt_its_info_describes(seed):
    # tol=0.05: the search's refined and rounded TT passed (held-out 0.046), and the
    # differentiable assembly, which repeats neither, returned a TT at the rounded ranks
    # with true error 0.088, reported as 0.046 and "tol". Now the search judges the fits
    # it returns.
    dense = _smooth_noisy()
    tt, info = tlc.tt_cross(dense, method="lsq", tol=0.05, max_rank=8, random_state=seed,
                            return_info=True, differentiable=True)
    true_error = np.linalg.norm(tl.tt_to_tensor(tt) - dense) / np.linalg.norm(dense)
    assert info.stop_reason == "tol" and not info.refined
    assert true_error <= 0.05
    assert abs(true_error - info.val_error) <= 0.1 * true_error  # its own, not another TT's


def test_differentiable_als_does_not_report_a_refinement_it_dropped():
    # The final least-squares refinement (info.refined, its lower error) cannot be rebuilt
    # with gradient: a differentiable run does not take it, and reports what it returns.
    dense = _smooth_noisy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tt, info = tlc.tt_cross(dense, rank=4, method="als", tol=1e-8, random_state=0,
                                val_size=20000, return_info=True, differentiable=True)
        plain, plain_info = tlc.tt_cross(dense, rank=4, method="als", tol=1e-8,
                                         random_state=0, val_size=20000, return_info=True)
    assert plain_info.refined and not info.refined
    true_error = np.linalg.norm(tl.tt_to_tensor(tt) - dense) / np.linalg.norm(dense)
    assert abs(true_error - info.val_error) <= 0.1 * true_error
