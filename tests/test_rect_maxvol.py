"""Properties of rect_maxvol: short coefficient rows, pseudo-inverse coefficients, bounds."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tensorly_cross import RankDeficiencyWarning, maxvol, rect_maxvol

from .conftest import host, to_backend
from .strategies import low_rank_matrix, matrix_with_condition, seeds, tall_shapes


@given(shape=tall_shapes(max_rows=2000, max_cols=40), tol=st.floats(1.0, 2.0),
       log10_condition=st.floats(0, 8), seed=seeds)
def test_every_coefficient_row_is_short(backend, shape, tol, log10_condition, seed):
    matrix = matrix_with_condition(shape, log10_condition, seed)
    rows, coefficients = rect_maxvol(to_backend(matrix), tol=tol)
    coefficients = host(coefficients)
    assert len(set(rows.tolist())) == len(rows) >= shape[1]
    assert np.linalg.norm(coefficients, axis=1).max() <= tol + 1e-9
    np.testing.assert_allclose(coefficients @ matrix[rows], matrix, atol=1e-9)


@given(shape=tall_shapes(max_rows=600, max_cols=20), seed=seeds)
def test_coefficients_are_the_pseudo_inverse_solution(backend, shape, seed):
    matrix = matrix_with_condition(shape, 2, seed)
    rows, coefficients = rect_maxvol(to_backend(matrix))
    expected = matrix @ np.linalg.pinv(matrix[rows])
    np.testing.assert_allclose(host(coefficients), expected, atol=1e-9)


@given(shape=tall_shapes(max_rows=600, max_cols=20), data=st.data(), seed=seeds)
def test_min_add_and_max_add_bound_the_growth(backend, shape, data, seed):
    spare = shape[0] - shape[1]
    min_add = data.draw(st.integers(0, spare), label="min_add")
    max_add = data.draw(st.integers(min_add, spare), label="max_add")
    matrix = matrix_with_condition(shape, 1, seed)
    rows, _ = rect_maxvol(to_backend(matrix), min_add=min_add, max_add=max_add)
    assert shape[1] + min_add <= len(rows) <= shape[1] + max_add
    assert len(set(rows.tolist())) == len(rows)


def test_max_add_zero_is_maxvol(backend):
    matrix = np.random.default_rng(4).standard_normal((500, 12))
    rows, coefficients = rect_maxvol(to_backend(matrix), max_add=0)
    square_rows, square_coefficients = maxvol(to_backend(matrix))
    np.testing.assert_array_equal(rows, square_rows)
    np.testing.assert_allclose(host(coefficients), host(square_coefficients), atol=1e-12)


def test_complex_rows_are_short(backend):
    matrix = matrix_with_condition((400, 10), 1, 9, complex_values=True)
    rows, coefficients = rect_maxvol(to_backend(matrix))
    assert np.linalg.norm(host(coefficients), axis=1).max() <= 1.1 + 1e-9
    np.testing.assert_allclose(host(coefficients) @ matrix[rows], matrix, atol=1e-10)


def test_rank_deficient_input_warns_and_adds_nothing(backend):
    matrix = low_rank_matrix((300, 8), 5, 0)
    with pytest.warns(RankDeficiencyWarning):
        rows, coefficients = rect_maxvol(to_backend(matrix))
    assert len(rows) == 8
    np.testing.assert_allclose(host(coefficients) @ matrix[rows], matrix, atol=1e-8)


def test_bounds_are_validated_by_name(backend):
    matrix = to_backend(np.random.default_rng(1).standard_normal((10, 4)))
    with pytest.raises(ValueError, match="min_add must be <= 6"):
        rect_maxvol(matrix, min_add=7)
    with pytest.raises(ValueError, match="max_add must be >= 3"):
        rect_maxvol(matrix, min_add=3, max_add=2)
    with pytest.raises(ValueError, match="tol must be >= 1"):
        rect_maxvol(matrix, tol=0.5)
