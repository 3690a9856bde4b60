"""Properties of maxvol: dominance, interpolation, backend agreement, documented edge cases."""

import warnings

import numpy as np
import pytest
import tensorly as tl
from hypothesis import given
from hypothesis import strategies as st

from tensorly_cross import RankDeficiencyWarning, maxvol, rect_maxvol
from tensorly_cross._backend import TOURNAMENT_BYTES

from .conftest import host, to_backend
from .strategies import low_rank_matrix, matrix_with_condition, seeds, tall_shapes

MANY_SWAPS = 10_000


@given(shape=tall_shapes(), log10_condition=st.floats(0, 10), seed=seeds)
def test_coefficients_are_dominant_and_interpolate(backend, shape, log10_condition, seed):
    matrix = matrix_with_condition(shape, log10_condition, seed)
    rows, coefficients = maxvol(to_backend(matrix), tol=1.05, max_iter=MANY_SWAPS)
    coefficients = host(coefficients)
    assert rows.dtype == np.int64 and len(set(rows.tolist())) == shape[1]
    assert np.abs(coefficients).max() <= 1.05 + 1e-12
    np.testing.assert_allclose(coefficients[rows], np.eye(shape[1]), atol=1e-9)
    np.testing.assert_allclose(coefficients @ matrix[rows], matrix, atol=1e-9)


@given(shape=tall_shapes(max_rows=2000, max_cols=32), seed=seeds)
def test_numpy_and_pytorch_pick_the_same_rows(shape, seed):
    pytest.importorskip("torch")
    matrix = matrix_with_condition(shape, 2, seed)
    with tl.backend_context("numpy"):
        numpy_rows, numpy_coefficients = maxvol(tl.tensor(matrix))
    with tl.backend_context("pytorch"):
        torch_rows, torch_coefficients = maxvol(tl.tensor(matrix))
        torch_coefficients = host(torch_coefficients)
    np.testing.assert_array_equal(numpy_rows, torch_rows)
    np.testing.assert_allclose(numpy_coefficients, torch_coefficients, atol=1e-10)


def test_tournament_pivoting_path_is_dominant(backend):
    matrix = np.random.default_rng(7).standard_normal((5 * TOURNAMENT_BYTES // (8 * 24) + 17, 24))
    rows, coefficients = maxvol(to_backend(matrix), max_iter=MANY_SWAPS)
    assert np.abs(host(coefficients)).max() <= 1.05 + 1e-12
    np.testing.assert_allclose(host(coefficients) @ matrix[rows], matrix, atol=1e-10)


@given(shape=tall_shapes(max_rows=500, max_cols=16), seed=seeds)
def test_complex_matrix_is_dominant(backend, shape, seed):
    matrix = matrix_with_condition(shape, 1, seed, complex_values=True)
    rows, coefficients = maxvol(to_backend(matrix), max_iter=MANY_SWAPS)
    coefficients = host(coefficients)
    assert np.iscomplexobj(coefficients)
    assert np.abs(coefficients).max() <= 1.05 + 1e-12
    np.testing.assert_allclose(coefficients @ matrix[rows], matrix, atol=1e-10)


@given(shape=tall_shapes(max_rows=400, max_cols=20), data=st.data(), seed=seeds)
def test_rank_deficient_matrix_warns_and_still_reconstructs(backend, shape, data, seed):
    if shape[1] < 2:
        shape = (max(shape[0], 2), 2)
    rank = data.draw(st.integers(0, shape[1] - 1), label="rank")
    matrix = low_rank_matrix(shape, rank, seed)
    with pytest.warns(RankDeficiencyWarning, match="numerical rank") as record:
        rows, coefficients = maxvol(to_backend(matrix))
    assert record[0].message.rank == rank
    coefficients = host(coefficients)
    assert len(set(rows.tolist())) == shape[1]
    np.testing.assert_allclose(coefficients @ matrix[rows], matrix, atol=1e-8)
    projector = coefficients[rows]
    np.testing.assert_allclose(projector @ projector, projector, atol=1e-8)


def test_square_matrix_selects_every_row(backend):
    matrix = np.random.default_rng(3).standard_normal((9, 9))
    rows, coefficients = maxvol(to_backend(matrix))
    assert sorted(rows.tolist()) == list(range(9))
    np.testing.assert_allclose(host(coefficients)[rows], np.eye(9), atol=1e-12)


def test_one_by_one_matrix(backend):
    rows, coefficients = maxvol(to_backend(np.array([[2.5]])))
    assert rows.tolist() == [0]
    np.testing.assert_allclose(host(coefficients), [[1.0]])


def test_zero_columns_gives_empty_selection(backend):
    rows, coefficients = maxvol(to_backend(np.zeros((4, 0))))
    assert rows.shape == (0,) and tuple(tl.shape(coefficients)) == (4, 0)


def test_max_iter_zero_returns_the_lu_pivots_unpolished(backend):
    matrix = np.random.default_rng(11).standard_normal((3000, 30))
    rows, coefficients = maxvol(to_backend(matrix), max_iter=0)
    np.testing.assert_allclose(host(coefficients)[rows], np.eye(30), atol=1e-10)
    _, polished = maxvol(to_backend(matrix), max_iter=MANY_SWAPS)
    assert np.abs(host(polished)).max() <= np.abs(host(coefficients)).max()


def test_float32_input_keeps_its_dtype(backend):
    matrix = np.random.default_rng(5).standard_normal((200, 8)).astype(np.float32)
    _, coefficients = maxvol(tl.tensor(matrix))
    assert host(coefficients).dtype == np.float32


@pytest.mark.parametrize(
    "matrix, message",
    [
        (np.ones(5), "2-D"),
        (np.ones((2, 3, 4)), "2-D"),
        (np.ones((3, 5)), "n >= r"),
        (np.array([[1.0, 0.0], [np.nan, 1.0], [0.0, 1.0]]), "NaN or infinite"),
        (np.array([[1.0, 0.0], [np.inf, 1.0], [0.0, 1.0]]), "NaN or infinite"),
    ],
)
def test_invalid_matrix_is_rejected_by_name(backend, matrix, message):
    with pytest.raises(ValueError, match=message) as error:
        maxvol(to_backend(matrix))
    assert str(error.value).startswith("matrix")


def test_invalid_tol_and_max_iter_are_rejected(backend):
    matrix = to_backend(np.eye(3))
    with pytest.raises(ValueError, match="tol must be >= 1"):
        maxvol(matrix, tol=0.9)
    with pytest.raises(ValueError, match="max_iter must be >= 0"):
        maxvol(matrix, max_iter=-1)
    with pytest.raises(TypeError, match="max_iter must be an integer"):
        maxvol(matrix, max_iter=2.5)


def test_non_tensor_is_rejected():
    with pytest.raises(TypeError, match="matrix must be a tensor"):
        maxvol([[1.0, 0.0], [0.0, 1.0]])


def test_no_warning_on_full_rank_input(backend):
    matrix = np.random.default_rng(2).standard_normal((100, 10))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        maxvol(to_backend(matrix))


@given(exponent=st.integers(-1040, 1000), seed=seeds)
def test_maxvol_is_scale_invariant_down_to_subnormal_matrices(exponent, seed):
    # Subnormal entries (1e-310) gave NaN coefficients, and rect_maxvol then every row.
    matrix = np.random.default_rng(seed).standard_normal((40, 5)) * 2.0**exponent
    rows, coefficients = maxvol(matrix)
    assert np.isfinite(coefficients).all() and len(set(rows.tolist())) == 5
    assert np.abs(coefficients).max() <= 1.05 + 1e-8
    np.testing.assert_allclose(coefficients[rows], np.eye(5), atol=1e-8)
    rect_rows, rect_coefficients = rect_maxvol(matrix)
    assert np.isfinite(rect_coefficients).all() and len(rect_rows) < 40
