"""Every warning of a cross names the caller's line, through any entry point.

The entry points gained a wrapper (they run eagerly under ``torch.compile``), one frame
more between the user and the warning: the warnings given with a fixed ``stacklevel``
then named ``_backend.py``, not the user's file.
"""

import warnings

import numpy as np
import pytest

import tensorly_cross as tlc
from tensorly_cross.errors import (
    SubnormalValuesWarning,
    ToleranceNotMetWarning,
    UnseenStructureWarning,
)

from .test_reliability import HiddenSpike


def _caught(run, category):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run()
    return [w for w in caught if issubclass(w.category, category)]


@pytest.mark.parametrize("entry", ["tt_cross", "tensor_train_cross"])
def test_a_missed_tolerance_names_the_callers_line(entry):
    values = np.random.default_rng(0).standard_normal((9, 10, 11))

    def run():
        if entry == "tt_cross":
            tlc.tt_cross(values, tol=1e-3, max_rank=2, random_state=0)
        else:  # noise at a fixed rank: "no approximation" (the other warning of missed.py)
            tlc.tensor_train_cross(values, rank=[1, 2, 2, 1], tol=1e-3, random_state=0)

    caught = _caught(run, ToleranceNotMetWarning)
    assert caught and {w.filename for w in caught} == {__file__}


def test_an_unseen_structure_names_the_callers_line():
    caught = _caught(lambda: tlc.tt_cross(HiddenSpike(200.0), shape=(30, 30, 30),
                                          random_state=0), UnseenStructureWarning)
    assert caught and {w.filename for w in caught} == {__file__}


def test_subnormal_values_name_the_callers_line_through_select_indices():
    values = np.outer(np.arange(1.0, 9.0), np.arange(1.0, 8.0)) * 2.0**-1060
    caught = _caught(lambda: tlc.select_indices(values, rank=1, random_state=0),
                     SubnormalValuesWarning)
    assert caught and {w.filename for w in caught} == {__file__}
