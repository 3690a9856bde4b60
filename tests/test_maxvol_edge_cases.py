"""Tests of maxvol and rect_maxvol: pivots, rank deficiency and gradients."""

import warnings

import numpy as np
import pytest
import tensorly as tl
from hypothesis import example, given, settings
from hypothesis import strategies as st

import tensorly_cross as tlc
from tensorly_cross import RankDeficiencyWarning, maxvol, rect_maxvol
from tensorly_cross._backend import TOURNAMENT_BYTES, lu_pivot_rows

from ._helpers_shared import _backend, _jax, _torch
from .conftest import host, to_backend
from .strategies import matrix_with_condition, seeds, tall_shapes

SEEDS = st.integers(0, 2**16)


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


@pytest.mark.parametrize("function", [tlc.maxvol, tlc.rect_maxvol])
def test_maxvol_of_an_object_matrix_names_its_dtype(function):
    with pytest.raises(TypeError, match="matrix has dtype object"):
        function(np.eye(4, 2).astype(object))


EPS = np.finfo(np.float64).eps


# -- maxvol.py ---------------------------------------------------------------------------


# Mutant: every ill-conditioned full-rank matrix taken as rank deficient (``rank <= n_cols``):
# LU pivots without swaps, a RankDeficiencyWarning, coefficients far above tol.
@given(shape=tall_shapes(max_rows=300, max_cols=12), log10_condition=st.floats(4, 10),
       seed=seeds)
@example(shape=(200, 6), log10_condition=8.0, seed=0)
def test_ill_conditioned_full_rank_matrix_is_dominant_without_warning(shape, log10_condition,
                                                                     seed):
    matrix = matrix_with_condition((max(shape[0], 2), max(shape[1], 2)), log10_condition, seed)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RankDeficiencyWarning)
        rows, coefficients = maxvol(matrix, tol=1.05, max_iter=10_000)
    assert np.abs(coefficients).max() <= 1.05 + 1e-9
    np.testing.assert_allclose(coefficients[rows], np.eye(matrix.shape[1]), atol=1e-9)


# Mutant: numerical rank counted above ``eps * s_1`` instead of ``max(n, r) * eps * s_1``.
@given(n_rows=st.integers(20, 300), n_cols=st.integers(2, 8), seed=seeds)
def test_singular_values_below_n_eps_count_as_rank_deficiency(n_rows, n_cols, seed):
    rng = np.random.default_rng(seed)
    left, _ = np.linalg.qr(rng.standard_normal((n_rows, n_cols)))
    right, _ = np.linalg.qr(rng.standard_normal((n_cols, n_cols)))
    singular = np.ones(n_cols)
    singular[-1] = 4 * EPS  # above eps * s_1, below max(n, r) * eps * s_1 (n >= 20)
    matrix = (left * singular) @ right
    with pytest.warns(RankDeficiencyWarning) as record:
        maxvol(matrix)
    assert record[0].message.rank == n_cols - 1


# Mutant: the tournament's finalists indexed without their sort order
# (``np.searchsorted(candidates, rows, sorter=order)`` not mapped back through ``order``):
# the swaps then start from other rows than the LU pivots.
def test_max_iter_zero_returns_the_tournament_lu_pivots():
    n_cols = 8
    n_rows = 3 * TOURNAMENT_BYTES // (8 * n_cols) + 5
    matrix = np.random.default_rng(1).standard_normal((n_rows, n_cols))
    pivots, _, candidates = lu_pivot_rows(matrix)
    assert candidates is not None  # the tournament ran
    rows, coefficients = maxvol(matrix, max_iter=0)
    np.testing.assert_array_equal(rows, pivots)
    np.testing.assert_allclose(coefficients[rows], np.eye(n_cols), atol=1e-10)


# -- rect_maxvol.py ------------------------------------------------------------------------


# Mutants: stopping at ``||B_i||^2 <= tol`` instead of ``tol**2``; ``min_add`` off by one
# (in the loop or in the call); row norms updated upwards (``+=``): each added rows that
# were not needed, and the coefficients still passed every earlier check.
@given(shape=tall_shapes(max_rows=300, max_cols=12), tol=st.floats(1.0, 2.0),
       min_add=st.integers(0, 3), seed=seeds)
@example(shape=(200, 6), tol=1.5, min_add=0, seed=0)
@example(shape=(200, 6), tol=1.5, min_add=2, seed=0)
def test_rect_maxvol_adds_a_row_only_while_some_row_is_too_long(backend, shape, tol, min_add,
                                                                seed):
    matrix = matrix_with_condition(shape, 1, seed)
    min_add = min(min_add, shape[0] - shape[1])
    rows, _ = rect_maxvol(to_backend(matrix), tol=tol, min_add=min_add)
    n_added = len(rows) - shape[1]
    assert n_added >= min_add
    if n_added == min_add:
        return
    # Greedy: the last row added was the longest row of the coefficients before it, and
    # that row was longer than tol (else the selection would have stopped there).
    before = rows[:-1]
    previous = matrix @ np.linalg.pinv(matrix[before])
    norms = np.linalg.norm(previous, axis=1)
    norms[before] = -np.inf
    assert norms.max() > tol
    assert rows[-1] == int(np.argmax(norms))


@pytest.mark.parametrize("seed", [0, 3, 4])
@pytest.mark.parametrize("max_iter", [1, 2])
def test_maxvol_makes_at_most_max_iter_swaps_on_a_tall_matrix(seed, max_iter):
    # Before: above about 2**17 / r rows the LU pivots come from a tournament, whose
    # finalists were polished with up to max_iter swaps and the whole matrix then with
    # max_iter more: 2 rows changed for max_iter=1, where the docstring bounds the swaps.
    matrix = np.random.default_rng(seed).standard_normal((50000, 6))
    lu_rows, _ = tlc.maxvol(matrix, max_iter=0)
    rows, coefficients = tlc.maxvol(matrix, tol=1.0001, max_iter=max_iter)
    assert len(set(rows.tolist()) - set(lu_rows.tolist())) <= max_iter
    np.testing.assert_allclose(coefficients @ matrix[rows], matrix, atol=1e-10)


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


# Mutant (_validation.check_tall_matrix): dates and durations (kinds "M", "m") taken for
# numbers; maxvol then failed inside NumPy, naming no argument.
@pytest.mark.parametrize("dtype", ["datetime64[s]", "timedelta64[s]"])
def test_maxvol_refuses_a_matrix_of_dates_by_name(dtype):
    matrix = np.arange(12).reshape(4, 3).astype(dtype)
    with pytest.raises(TypeError, match="matrix has dtype .*maxvol needs numbers"):
        tlc.maxvol(matrix)


# Mutant (_validation): the "float4" prefix dropped from what LAPACK lacks: a 4-bit float
# matrix reached maxvol's LU and failed there, naming no argument.
def test_maxvol_refuses_a_four_bit_float_matrix_by_name():
    ml_dtypes = pytest.importorskip("ml_dtypes")
    matrix = np.eye(4, 3).astype(ml_dtypes.float4_e2m1fn)
    with pytest.raises(TypeError, match="matrix has dtype float4_e2m1fn, which LAPACK"):
        tlc.maxvol(matrix)


@settings(max_examples=40)
@given(n_cols=st.integers(1, 8), extra_rows=st.integers(0, 60),
       log_condition=st.floats(0, 4), deficiency=st.integers(0, 2),
       dtype=st.sampled_from([np.float32, np.float64]), tol=st.sampled_from([1.01, 1.05, 1.5]),
       seed=st.integers(0, 2**16))
def test_maxvol_and_rect_maxvol_bounds_hold_or_the_deficiency_is_warned(
        n_cols, extra_rows, log_condition, deficiency, dtype, tol, seed):
    matrix = matrix_with_condition((n_cols + extra_rows, n_cols), log_condition, seed)
    if deficiency and n_cols > deficiency:  # exact rank n_cols - deficiency
        matrix[:, :deficiency] = matrix[:, deficiency:2 * deficiency] if (
            2 * deficiency <= n_cols) else 0.0
    matrix = matrix.astype(dtype)
    eps = np.finfo(dtype).eps
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rows, coefficients = tlc.maxvol(matrix, tol=tol)
        wide_rows, wide = tlc.rect_maxvol(matrix, tol=tol)
    warned = any(issubclass(w.category, tlc.RankDeficiencyWarning) for w in caught)
    assert len(set(rows.tolist())) == n_cols
    assert len(set(wide_rows.tolist())) == len(wide_rows) >= n_cols
    assert np.isfinite(coefficients).all() and np.isfinite(wide).all()
    # Both reproduce the matrix from their rows, deficient or not.
    scale = np.abs(matrix).max()
    for chosen, weights in ((rows, coefficients), (wide_rows, wide)):
        residual = np.abs(weights.astype(np.float64) @ matrix[chosen].astype(np.float64)
                          - matrix).max()
        assert residual <= 1e4 * eps * scale * 10**log_condition
    if warned:
        return
    assert np.abs(coefficients).max() <= tol * (1 + 100 * eps)
    np.testing.assert_allclose(coefficients[rows], np.eye(n_cols), atol=1e3 * eps)
    if len(wide_rows) < matrix.shape[0]:  # stopped by its bound, not by running out of rows
        assert np.linalg.norm(wide.astype(np.float64), axis=1).max() <= tol * (1 + 100 * eps)


@settings(max_examples=40, deadline=None)
@given(seed=seeds, n_cols=st.integers(1, 20), extra_rows=st.integers(0, 12),
       exponent=st.integers(1000, 1023))
@example(seed=0, n_cols=16, extra_rows=0, exponent=1023)
@example(seed=2, n_cols=16, extra_rows=2, exponent=1023)
@pytest.mark.filterwarnings("error::RuntimeWarning")
def test_maxvol_of_a_matrix_near_float64s_largest_is_that_of_the_matrix_scaled_down(
        seed, n_cols, extra_rows, exponent, numpy_backend):
    # Its entries scaled by a power of two, a matrix has the same maxvol rows and
    # coefficients. Near float64's largest, LU's own pivots overflowed to inf (or nan)
    # before the rescaling meant for such matrices was decided on them: it was skipped,
    # and maxvol returned repeated rows and NaN coefficients, other rows, or raised
    # LinAlgError("Singular matrix") (the examples).
    rng = np.random.default_rng(seed)
    matrix = rng.standard_normal((n_cols + extra_rows, n_cols))
    matrix /= np.abs(matrix).max()
    rows, coefficients = tlc.maxvol(matrix)
    scaled_rows, scaled_coefficients = tlc.maxvol(matrix * 2.0**exponent)
    np.testing.assert_array_equal(scaled_rows, rows)
    np.testing.assert_allclose(scaled_coefficients, coefficients, rtol=1e-9, atol=1e-12)


def test_maxvol_and_rect_maxvol_of_rows_whose_lu_overflows(numpy_backend):
    # LU of these rows subtracts 1e308 from -1e308: its second pivot was inf, and maxvol
    # returned B[1] = [1, 0] for the chosen row 1 (not the identity); rect_maxvol raised
    # LinAlgError("Singular matrix").
    matrix = np.array([[1e308, 1e308], [1e308, -1e308], [1.0, 2.0]])
    rows, coefficients = tlc.maxvol(matrix)
    np.testing.assert_allclose(coefficients[rows], np.eye(2), atol=1e-12)
    assert np.abs(coefficients).max() <= 1.05
    np.testing.assert_allclose(coefficients @ matrix[rows], matrix, rtol=1e-12, atol=1e295)
    rect_rows, rect_coefficients = tlc.rect_maxvol(matrix)
    np.testing.assert_allclose(rect_coefficients @ matrix[rect_rows], matrix, rtol=1e-12,
                               atol=1e295)
    assert np.linalg.norm(rect_coefficients, axis=1).max() <= 1.1


def test_maxvol_of_complex_entries_whose_modulus_overflows(numpy_backend):
    # |1.5e308 + 1.5e308j| is inf: the scale taken from the entries' moduli was inf too,
    # the rescaling was skipped again, and every coefficient came out 0.
    matrix = np.array([[1.5e308 + 1.5e308j, 1e308], [1e308, -1.5e308 + 1.4e308j],
                       [1.0, 2.0]])
    rows, coefficients = tlc.maxvol(matrix)
    scaled_rows, scaled_coefficients = tlc.maxvol(matrix * 2.0**-1024)
    np.testing.assert_array_equal(rows, scaled_rows)
    np.testing.assert_allclose(coefficients, scaled_coefficients, rtol=1e-12, atol=1e-300)
    np.testing.assert_allclose(coefficients[rows], np.eye(2), atol=1e-12)


@settings(max_examples=30, deadline=None)
@given(seed=seeds, n_cols=st.integers(1, 10), extra_rows=st.integers(0, 8),
       exponent=st.sampled_from([-149 + 24, -130, -126, 100, 126]))
@example(seed=0, n_cols=3, extra_rows=2, exponent=-130)
def test_maxvol_of_float32_near_its_ends_is_that_of_the_matrix_scaled(
        seed, n_cols, extra_rows, exponent, numpy_backend):
    # The rescaling of matrices near the ends of the range (SAFE_SCALE, 2**-500 to 2**500)
    # was float64's: float32 entries near its subnormal range (below 2**-126) were never
    # rescaled, and maxvol returned NaN coefficients, other rows, or raised LinAlgError.
    # A power of two times a float32 matrix (exact, both ways) has the same maxvol.
    rng = np.random.default_rng(seed)
    matrix = rng.standard_normal((n_cols + extra_rows, n_cols))
    scaled = (matrix / np.abs(matrix).max() * 2.0**exponent).astype(np.float32)
    unscaled = (scaled.astype(np.float64) * 2.0**-exponent).astype(np.float32)  # exact
    rows, coefficients = tlc.maxvol(unscaled)
    scaled_rows, scaled_coefficients = tlc.maxvol(scaled)
    assert scaled_coefficients.dtype == np.float32
    np.testing.assert_array_equal(scaled_rows, rows)
    np.testing.assert_allclose(scaled_coefficients, coefficients, rtol=1e-4, atol=1e-5)
