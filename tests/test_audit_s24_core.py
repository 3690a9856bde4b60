"""Audit s24 of the core API: a 1-D tensor with a mode above 2**26 allocated gigabytes
before its refusal, the least-squares and block crosses returned NaN cores on data near
float64's ends, the held-out bound judged complex values by their real parts, and a bool
inside a saved multi-index was read as an integer. Each test failed before its fix."""

import tracemalloc
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tensorly_cross as tlc
from tensorly_cross.cross.confidence import upper_bound
from tensorly_cross.cross.scaling import exponent_of, times_power_of_two


def _never_called(indices):
    raise AssertionError("the function was called before the shape was checked")


@pytest.mark.parametrize("shape", [(2**26 + 1,), (3, 2**26 + 1), (2**31 - 1,)])
def test_a_mode_too_large_is_refused_before_anything_is_allocated(shape):
    tensor = tlc.FunctionTensor(_never_called, shape)
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match="too large for a cross.*QuanticsTensor"):
            tlc.tt_cross(tensor, random_state=0)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2**24  # 16 MiB; the 1-D case took 3.8 GB before the check ran


def test_a_prime_mode_left_whole_by_quantics_digits_is_refused_at_once():
    tensor = tlc.QuanticsTensor(tlc.FunctionTensor(_never_called, (2**31 - 1,)))
    with pytest.raises(ValueError, match="prime size stays one digit"):
        tlc.tt_cross(tensor, random_state=0)


def test_cross_interpolate_checks_the_mode_sizes_first():
    indices = tlc.select_indices(np.ones((4, 5)), rank=1, method="als", random_state=0)
    with pytest.raises(ValueError, match="too large for a cross"):
        tlc.cross_interpolate(_never_called, indices.to_dict() | {"shape": [4, 2**26 + 1]},
                              shape=(4, 2**26 + 1))


def _rank_three(seed):
    rng = np.random.default_rng(seed)
    array = np.einsum("ia,ja,ka->ijk", *(rng.standard_normal((n, 3)) for n in (5, 6, 7)))
    return array / np.abs(array).max()


@pytest.mark.parametrize("exponent", [-1040, -1025, -1022, 1021])
@pytest.mark.parametrize("method, rank", [("lsq", None), ("lsq", 3), ("block", 3)])
def test_data_near_float64s_ends_gives_finite_cores(exponent, method, rank):
    array = _rank_three(0)
    scale = 1.9 * 2.0**exponent
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # subnormal values are warned of, as documented
        tt, info = tlc.tt_cross(array * scale, method=method, rank=rank, random_state=0,
                                return_info=True)
    assert all(np.isfinite(core).all() for core in tt)
    error = np.linalg.norm(np.asarray(tt.to_tensor()) / scale - array) / np.linalg.norm(array)
    # Subnormal data keeps fewer digits: 2**-1040 times values near 1 keeps about 11.
    assert error < (1e-8 if exponent < -1022 else 1e-12)
    assert np.isfinite(info.val_error)


@given(exponent=st.integers(-2200, 2200), seed=st.integers(0, 2**32 - 1))
@settings(max_examples=60, deadline=None)
def test_powers_of_two_are_applied_exactly(exponent, seed):
    values = np.random.default_rng(seed).standard_normal(5)
    with np.errstate(over="ignore", under="ignore"):  # beyond float64's range either way
        scaled = times_power_of_two(values, exponent)
        back = times_power_of_two(scaled, -exponent)
    if -1000 <= exponent <= 1000:  # no subnormal or infinite intermediate: exact both ways
        np.testing.assert_array_equal(back, values)
    assert exponent_of(values) == int(np.frexp(np.abs(values).max())[1])


def test_the_block_cross_does_not_depend_on_the_datas_scale():
    array = _rank_three(1)
    reference = np.asarray(tlc.tt_cross(array, method="block", rank=3,
                                        random_state=0).to_tensor())
    for exponent in (-700, 700):
        tt = tlc.tt_cross(array * 2.0**exponent, method="block", rank=3, random_state=0)
        np.testing.assert_array_equal(np.asarray(tt.to_tensor()) * 2.0**-exponent, reference)


def test_the_bound_takes_the_modulus_of_complex_values():
    rng = np.random.default_rng(0)
    values = np.where(rng.random(200) < 0.95, 0.0, rng.standard_normal(200) + 1)
    residuals = 0.05 * np.abs(rng.standard_normal(200))
    error = np.linalg.norm(residuals) / np.linalg.norm(values)
    real = upper_bound(error, residuals, values)
    for phase in (1j, np.exp(0.7j)):
        assert upper_bound(error, residuals, phase * values) == pytest.approx(real, rel=1e-12)


def test_a_complex_least_squares_cross_warns_of_no_cast():
    grids = [np.linspace(-1, 1, n) for n in (10, 11, 12)]

    def function(indices):
        x = np.stack([grids[k][indices[:, k]] for k in range(3)], 1)
        return (1 + 2j) * np.exp(x.sum(1)) + 1j * x[:, 0]

    with warnings.catch_warnings():
        warnings.simplefilter("error", np.exceptions.ComplexWarning)
        tlc.tt_cross(function, shape=(10, 11, 12), method="lsq", random_state=0)


@pytest.mark.parametrize("flag", [True, False])
def test_a_bool_inside_a_saved_multi_index_is_refused(flag):
    data = tlc.select_indices(np.random.default_rng(0).standard_normal((6, 7, 8)), rank=2,
                              method="als", random_state=0).to_dict()
    data["left"][2][0][0] = flag
    with pytest.raises(ValueError, match=r"left\[2\].*bool"):
        tlc.CrossIndices.from_dict(data)
