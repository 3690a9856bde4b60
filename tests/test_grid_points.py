"""Grids of :meth:`FunctionTensor.on_grid`: points that are not finite are refused by name."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tensorly_cross import FunctionTensor


@given(mode=st.integers(0, 2), position=st.integers(0, 4),
       bad=st.sampled_from([np.nan, np.inf, -np.inf]))
def test_a_grid_point_that_is_not_finite_is_refused_with_its_mode_and_position(mode, position,
                                                                               bad):
    # A NaN point made every entry on its slice NaN, reported later as the function's own
    # NaN at a multi-index, not as the grid's point.
    grids = [np.linspace(0.0, 1.0, 5) for _ in range(3)]
    grids[mode][position] = bad
    with pytest.raises(ValueError, match=rf"grids\[{mode}\]\[{position}\] is {bad}"):
        FunctionTensor.on_grid(lambda x: x.sum(axis=1), grids)


def test_finite_grids_still_sample_the_function_at_their_points():
    grids = [np.array([0.0, 2.5, -1.0]), np.array([1e300, -1e-300])]
    tensor = FunctionTensor.on_grid(lambda x: x[:, 0] * 2 + x[:, 1], grids)
    values = tensor.evaluate(np.array([[1, 0], [2, 1]]))
    np.testing.assert_array_equal(values, [5.0 + 1e300, -2.0 - 1e-300])


def test_a_long_double_point_beyond_float64_is_reported_as_given_not_as_inf():
    # The grid was cast to float64 before its points were checked: a finite long double
    # point of 1e400 was reported as "grids[1][3] is inf" (with NumPy's overflow warning),
    # a value the user never gave.
    if np.finfo(np.longdouble).max <= np.finfo(np.float64).max:
        pytest.skip("long double is double on this platform")
    grid = np.linspace(0, 1, 5).astype(np.longdouble)
    grid[3] = np.longdouble("1e400")
    with pytest.raises(ValueError, match=r"grids\[1\]\[3\] is 1e\+400, beyond float64's "
                                         r"range") as error:
        FunctionTensor.on_grid(lambda x: x.sum(axis=1), [np.linspace(0, 1, 4), grid])
    assert "inf" not in str(error.value)
