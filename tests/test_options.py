"""The settings object: one validation for tt_cross and select_indices, one docstring."""

import inspect
import re

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


@pytest.mark.parametrize("flag", ["verbose", "progress"])
def test_flags_are_bools_not_anything_truthy(flag):
    # verbose="no" printed every sweep.
    with pytest.raises(TypeError, match=f"{flag} must be True or False, got str 'no'"):
        tlc.tt_cross(np.ones((3, 3)), rank=1, **{flag: "no"})
    tlc.tt_cross(np.ones((3, 3)), rank=1, **{flag: np.bool_(False)})


def test_options_are_frozen_and_auto_is_resolved():
    options = cross_options((4, 4), rank=None, tol=1e-3)
    assert options.method == "tci"
    assert cross_options((4, 4), rank=2).method == "als"
    with pytest.raises(AttributeError):
        options.tol = 1.0  # frozen


def test_an_unknown_setting_is_refused():
    with pytest.raises(TypeError):
        CrossOptions(rnak=3)


@pytest.mark.parametrize(("shape", "method", "asked", "expected"), [
    ((2, 2), "tci", 10**9, 1000),          # capped at the default, which exceeds 4 entries
    ((50, 50), "tci", 10**9, 2500),         # capped at the number of entries
    ((50, 50), "tci", 1500, 1500),          # below both: as asked
    ((2, 2), "lsq", None, 4000),            # the default is never capped
])
def test_val_size_is_capped_at_the_entries_or_the_default(shape, method, asked, expected):
    # Held-out entries are drawn with replacement: val_size=10**9 on a 2x2 tensor took
    # minutes and tens of GB.
    options = cross_options(shape, stored=True, method=method, val_size=asked)
    assert options.val_size == expected


def test_a_budget_above_a_small_tensor_s_size_is_not_refused_for_its_held_out_draws():
    # 30 entries: the default 4000 (1000) held-out draws read at most 30 of them.
    full = np.arange(30.0).reshape(5, 6)
    for method in ("auto", "tci"):
        tt = tlc.tt_cross(full, max_evals=100, method=method, random_state=0)
        np.testing.assert_allclose(np.asarray(tt.to_tensor()), full, atol=1e-9)
    with pytest.raises(ValueError, match="max_evals=20 must exceed"):
        tlc.tt_cross(full, max_evals=20)


@pytest.mark.parametrize("rank, shown", [(2.0, "got 2.0 (float)"), (True, "got True (bool)"),
                                         ("2", "got '2'")])
def test_a_rank_of_the_wrong_type_is_shown_as_given(rank, shown):
    with pytest.raises(TypeError, match=re.escape(shown)):
        tlc.tt_cross(np.ones((3, 4, 5)), rank=rank)


@pytest.mark.parametrize("function", [tlc.tt_cross, tlc.select_indices])
@pytest.mark.parametrize("tol", [1.0, 2.5])
def test_a_tolerance_of_one_or_more_is_refused(function, tol):
    # tol is a relative error: 1 is met by the zero tensor, so tol=2.0 "succeeded" at
    # once (streaming_tt_svd already refused it).
    with pytest.raises(ValueError, match=r"tol must be in \[0, 1\)"):
        function(np.ones((3, 3)), tol=tol)
