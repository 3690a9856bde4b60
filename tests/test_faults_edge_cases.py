"""Tests of faults during a run: a full disk, a removed checkpoint, a dead worker."""

import threading

import numpy as np
import pytest

from ._helpers_shared import _reference_cores


@pytest.mark.parametrize("name", ["max_time", "tol"])
def test_an_int_too_large_for_a_float_is_refused_by_name(name):
    """max_time=10**400 (an int past float's range) raised a bare OverflowError, "int too
    large to convert to float", naming no argument."""
    import tensorly_cross as tlc

    with pytest.raises(ValueError, match=name):
        tlc.tt_cross(np.ones((4, 4)), random_state=0, **{name: 10**400})


@pytest.mark.parametrize("name", ["max_time", "tol"])
def test_a_long_double_too_large_for_a_float_is_refused_as_such_not_as_inf(name):
    """A finite long double past float64 (1e400) was cast first and refused as "must be
    finite, got inf", a value not given; it is refused as 10**400 is."""
    import tensorly_cross as tlc

    if np.finfo(np.longdouble).max <= np.finfo(np.float64).max:
        pytest.skip("long double is double on this platform")
    with pytest.raises(ValueError, match=f"{name} must be finite, got a number beyond the "
                                         r"range of a float \(about 1.8e308\)"):
        tlc.tt_cross(np.ones((4, 4)), random_state=0, **{name: np.longdouble("1e400")})


@pytest.mark.parametrize("tiny", [np.longdouble("1e-400"), "fraction"])
def test_a_positive_number_below_a_float_s_range_is_not_refused_as_the_zero_it_rounds_to(
        tiny):
    """max_time (> 0) of a long double 1e-400, or Fraction(1, 10**400), is 0.0 as a float:
    refused as "max_time must be > 0, got 0.0", a value not given, which is > 0."""
    from fractions import Fraction

    import tensorly_cross as tlc

    if tiny == "fraction":
        tiny = Fraction(1, 10**400)
    elif np.finfo(np.longdouble).tiny >= np.finfo(np.float64).tiny:
        pytest.skip("long double is double on this platform")
    with pytest.raises(ValueError, match=r"max_time must be > 0\.0, got 1(e-400|/10*), which is "
                                         r"0\.0 as a float") as error:
        tlc.tt_cross(np.ones((4, 4)), random_state=0, max_time=tiny)
    assert "got 0.0" not in str(error.value)


class NaNOnce:
    """1/sum(x) that returns NaN once, at the first entry of the first call after
    ``after`` entries, while ``broken`` (a flaky sensor, a solver that failed to converge
    once); it counts the entries it evaluates and the NaN it returns."""

    def __init__(self, after=1500):
        self.after, self.broken, self.entries, self.nans = after, True, 0, 0
        self.lock = threading.Lock()

    def __call__(self, indices):
        values = 1.0 / np.linspace(1.0, 2.0, 16)[indices].sum(axis=1)
        with self.lock:
            self.entries += indices.shape[0]
            if self.broken and self.nans == 0 and self.entries > self.after:
                self.nans += 1
                values[0] = np.nan
        return values


@pytest.mark.parametrize("threads", [None, 2])
def test_the_finite_entries_of_a_batch_that_met_a_nan_are_kept(tmp_path, threads):
    """A NaN in a batch lost the whole batch's entries from the checkpoint, the finished
    chunks of an executor included (which a raising chunk keeps): after hours of chunks,
    one NaN cost them all, and the rerun evaluated them again."""
    from concurrent.futures import ThreadPoolExecutor

    import tensorly_cross as tlc

    reference = _reference_cores()
    path = str(tmp_path / "nan.ckpt")
    function = NaNOnce()
    executor = ThreadPoolExecutor(threads) if threads else None
    try:
        tensor = tlc.FunctionTensor(function, (16,) * 6, executor=executor, chunk_size=10)
        with pytest.raises(tlc.NonFiniteValueError):
            tlc.tt_cross(tensor, tol=1e-8, random_state=0, checkpoint=path,
                         val_size=1000)
        assert function.nans == 1
        evaluated, function.broken, function.entries = function.entries, False, 0
        tt, info = tlc.tt_cross(tensor, tol=1e-8, random_state=0, checkpoint=path,
                                val_size=1000, return_info=True)
    finally:
        if executor is not None:
            executor.shutdown()
    assert info.n_restored == evaluated - 1  # all but the NaN entry
    for core, expected in zip(tt.factors, reference, strict=True):
        np.testing.assert_allclose(core, expected, rtol=0, atol=1e-12)
