"""The settings object: one validation for tt_cross and select_indices, one docstring."""

import inspect

import numpy as np
import pytest

import tensorly_cross as tlc
from tensorly_cross.options import CrossOptions, cross_options


@pytest.mark.parametrize("function", [tlc.tt_cross, tlc.select_indices])
def test_every_parameter_is_documented(function):
    doc = function.__doc__
    assert "{cross_parameters}" not in doc
    for name in inspect.signature(function).parameters:
        assert f"\n    {name} : " in doc, name


@pytest.mark.parametrize("function", [tlc.tt_cross, tlc.select_indices])
def test_a_callback_that_is_not_callable_is_refused(function):
    with pytest.raises(TypeError, match="callback"):
        function(np.ones((3, 3)), rank=1, callback=3)


def test_options_are_frozen_and_auto_is_resolved():
    options = cross_options((4, 4), rank=None, tol=1e-3)
    assert options.method == "tci"
    assert cross_options((4, 4), rank=2).method == "als"
    with pytest.raises(AttributeError):
        options.tol = 1.0  # frozen


def test_an_unknown_setting_is_refused():
    with pytest.raises(TypeError):
        CrossOptions(rnak=3)
