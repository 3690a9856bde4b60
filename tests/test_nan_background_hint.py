"""A NaN read from stored data (an array, a file) says how to read a NaN background: a
masked scan or statistical map held in memory gave only "values must be finite", while
``open_volume(array, fill_nan=0.0)`` reads it. A function's NaN gets no such note."""

import numpy as np
import pytest

import tensorly_cross as tlc


def _masked():
    volume = np.ones((5, 5, 5))
    volume[0, 0, 0] = np.nan
    return volume


@pytest.mark.parametrize("make", [lambda v: v, tlc.ArrayTensor,
                                  lambda v: tlc.open_volume(v, cache_bytes=0)])
def test_a_nan_in_stored_data_names_fill_nan(make):
    with pytest.raises(tlc.NonFiniteValueError) as raised:
        tlc.tt_cross(make(_masked()), tol=0.1, random_state=0)
    assert raised.value.index == (0, 0, 0)
    assert any("fill_nan=0.0" in note for note in raised.value.__notes__)
    tt = tlc.tt_cross(tlc.open_volume(_masked(), fill_nan=0.0), tol=0.1, random_state=0)
    assert np.isfinite(np.asarray(tt[0])).all()


def test_a_nan_from_a_function_or_an_inf_gets_no_such_note():
    nan = tlc.FunctionTensor(lambda idx: np.where(idx[:, 0] == 1, np.nan, 1.0), (4, 4))
    stored_inf = np.ones((4, 4))
    stored_inf[1, 1] = np.inf
    for lazy in (nan, tlc.ArrayTensor(stored_inf)):
        with pytest.raises(tlc.NonFiniteValueError) as raised:
            lazy.evaluate(np.array([[1, 1]]))
        assert not any("fill_nan" in note for note in getattr(raised.value, "__notes__", []))
