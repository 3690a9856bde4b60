"""Audit s30 of the cross engine and the drop-in API: differential and property tests.

The first tests failed before their fix; the property tests hold the engine to what its
docs promise (exact recovery, budgets counted by the function itself, interpolation on
nested sets, maxvol dominance, the drop-in's TensorLy signature and estimator protocol).
"""

import functools

import numpy as np
import pytest

import tensorly_cross as tlc


def energy_of_state(indices):
    """A function whose values are one short: a user's off-by-one."""
    return 1.0 / (1.0 + indices.sum(axis=1))[:-1]


class Model:
    def __call__(self, indices):
        return np.ones((indices.shape[0], 2))  # a column too many

    def predict(self, indices):
        return np.where(indices[:, 0] == 2, np.nan, 1.0)


@pytest.mark.parametrize("function, name, error", [
    (energy_of_state, "energy_of_state", ValueError),
    (Model(), "Model", ValueError),
    (Model().predict, "Model.predict", tlc.NonFiniteValueError),
    (functools.partial(lambda indices, scale: scale * indices[:, :1], scale=2.0), "<lambda>",
     ValueError),
])
def test_a_functions_bad_values_are_refused_naming_the_function(function, name, error):
    # "FunctionTensor returned values of shape (96,) for 97 multi-indices": the message
    # named the wrapper tt_cross made, never the function the caller passed, so a run over
    # several functions (a pipeline, a model's methods) did not say which one was wrong.
    with pytest.raises(error, match=f"FunctionTensor of {name} returned") as raised:
        tlc.tt_cross(function, shape=(4, 5, 6), random_state=0)
    assert "FunctionTensor" in str(raised.value)


def test_a_grid_functions_bad_values_name_the_users_function_not_the_grid_wrapper():
    def potential(points):
        return np.where(points[:, 0] > 0.5, np.inf, points.sum(axis=1))

    grid = np.linspace(0.0, 1.0, 6)
    tensor = tlc.FunctionTensor.on_grid(potential, [grid, grid])
    with pytest.raises(tlc.NonFiniteValueError, match="FunctionTensor of potential returned inf"):
        tlc.tt_cross(tensor, random_state=0)


@pytest.mark.parametrize("chunks", [{"chunk_size": 7}, {"executor": "threads"}])
def test_a_chunked_functions_wrong_shape_names_the_function(chunks):
    # In chunks (serially or on an executor) the message said "the function returned
    # values of shape (8,) for a chunk of 7 multi-indices", which function unsaid.
    from concurrent.futures import ThreadPoolExecutor

    def energy_of_state(indices):
        return np.ones(indices.shape[0] + 1)

    with ThreadPoolExecutor(2) as pool:
        options = {"executor": pool} if "executor" in chunks else chunks
        tensor = tlc.FunctionTensor(energy_of_state, (4, 5, 6), **options)
        with pytest.raises(ValueError, match="function energy_of_state returned values of "
                                             r"shape \(\d+,\) for a chunk"):
            tlc.tt_cross(tensor, random_state=0)
