"""Tests of numerical precision: subnormal, huge, complex and low-precision data."""

import warnings

import numpy as np
import pytest
import tensorly as tl
from hypothesis import given, settings
from hypothesis import strategies as st

import tensorly_cross as tlc
from tensorly_cross import FunctionTensor, ToleranceNotMetWarning
from tensorly_cross.cross.confidence import upper_bound
from tensorly_cross.cross.scaling import exponent_of, max_exponent, times_power_of_two
from tensorly_cross.cross.stopping import Validation
from tensorly_cross.errors import UnseenStructureWarning
from tensorly_cross.lazy.cache import EvaluationCache

from ._helpers_shared import (
    VALIDATION_SHAPE,
    _ones_cores,
    _peak_bytes,
    _rank_two_plus_detail,
    _unseen_warnings,
    _validation,
    ones_with,
)


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


def test_upper_bound_weighs_complex_values_by_their_moduli():
    from tensorly_cross.cross.confidence import upper_bound

    residuals = np.array([0.1, 0.2, 0.1, 0.9, 0.3, 0.2, 0.1, 0.15])
    values = np.array([5.0, 5.0, 5.0, 0.1, 5.0, 5.0, 5.0, 5.0])
    error = 0.2
    bound = upper_bound(error, residuals, values)
    assert bound != upper_bound(error, residuals)  # the values' spread counts
    for phase in (1j, np.exp(0.7j)):
        assert np.isclose(upper_bound(error, residuals * phase, values * phase), bound)


# Mutant (stopping._scaled_parts): the ``isfinite`` test dropped: a TT that overflowed to
# inf on a held-out entry had an error of nan (read as "no held-out entries"), not inf.
def test_an_overflowed_tt_has_an_infinite_held_out_error():
    from tensorly_cross.cross.stopping import _scaled_parts, relative_norm

    assert relative_norm(np.array([np.inf, 1.0]), _scaled_parts(np.array([1.0, 2.0]))) \
        == np.inf


@pytest.mark.parametrize("dtype", [np.float32, np.complex64, np.float64])
def test_a_power_of_two_of_a_single_precision_array_is_applied_exactly(dtype):
    from tensorly_cross.cross.scaling import exponent_of, times_power_of_two

    values = np.array([1e-40, 3e-41, -2e-44], dtype=np.float32).astype(dtype)
    exponent = exponent_of(values)
    scaled = times_power_of_two(values, -exponent)
    assert np.isfinite(scaled).all() and 0.5 <= np.abs(scaled).max() < 1
    np.testing.assert_array_equal(times_power_of_two(scaled, exponent), values)


@pytest.mark.filterwarnings("ignore::tensorly_cross.SubnormalValuesWarning")
@pytest.mark.parametrize("method", ["tci", "als"])
def test_interpolating_cross_with_gradient_of_subnormal_data_of_lower_rank(pytorch_backend,
                                                                          method):
    """A field of rank 1 read at rank 3, in the subnormals: without gradient the TT was
    right; with gradient the basis of its singular fiber blocks divided by subnormal
    singular values (inf), and the TT came back NaN (a rank-2 field: "SVD did not
    converge"). Now the same TT, with finite gradients."""
    torch = pytest.importorskip("torch")
    from tensorly_cross.cross.scaling import times_power_of_two

    grids = [torch.linspace(0.5, 1.5, n, dtype=torch.float64) for n in (5, 4, 6, 3)]
    field = times_power_of_two(torch.einsum("i,j,k,l->ijkl", *grids), -1030)
    expected = tlc.tt_cross(field, rank=3, method=method, random_state=0).to_tensor()
    variable = field.clone().requires_grad_(True)
    values = tlc.tt_cross(variable, rank=3, method=method, random_state=0,
                          differentiable=True).to_tensor()
    np.testing.assert_allclose(times_power_of_two(values.detach(), 1030).numpy(),
                               times_power_of_two(expected, 1030).numpy(), rtol=1e-10)
    values.sum().backward()
    assert torch.isfinite(variable.grad).all()


def test_a_tttensor_with_a_nan_core_is_named_as_a_tt_not_by_an_internal_class():
    # Its entries are read through a FunctionTensor of a private wrapper: naming the
    # function must not show that wrapper's class ("FunctionTensor of _TTEntries").
    from tensorly.tt_tensor import TTTensor

    cores = [np.ones((1, 3, 2)), np.ones((2, 4, 1))]
    cores[1][0, 2, 0] = np.nan
    with pytest.raises(tlc.NonFiniteValueError, match="TTTensor's entries returned nan") as raised:
        tlc.tt_cross(TTTensor(cores), random_state=0)
    assert "_TTEntries" not in str(raised.value)


def _relative_error(tt, array):
    dense = np.asarray(tl.to_numpy(tl.tt_to_tensor(tt)), dtype=np.float64)
    return np.linalg.norm(dense - array) / np.linalg.norm(array)


@pytest.mark.parametrize("kwargs", [dict(method="lsq"), dict(method="tci"),
                                    dict(method="tci", differentiable=True)])
def test_a_jax_x32_cross_that_float32_cores_take_past_tol_warns(jax_x32, kwargs):
    # The search runs in NumPy (float64) and met tol=1e-10 there; JAX without x64 hands
    # back float32 cores, 1e-7 away: the TT returned missed tol with stop reason "tol" and
    # val_error 1e-15, and nothing said so.
    array = _rank_two_plus_detail()
    with pytest.warns(ToleranceNotMetWarning, match="jax_enable_x64") as caught:
        tt, info = tlc.tt_cross(array, tol=1e-10, random_state=0, return_info=True, **kwargs)
    assert tt[0].dtype == np.float32
    assert _relative_error(tt, array) > 1e-10  # the miss the warning reports
    missed = [w.message for w in caught if isinstance(w.message, ToleranceNotMetWarning)]
    assert missed[0].tol == 1e-10 and missed[0].error > 1e-10


def test_a_jax_x32_cross_whose_tol_float32_holds_does_not_warn(jax_x32):
    array = _rank_two_plus_detail()
    with warnings.catch_warnings():
        warnings.simplefilter("error", ToleranceNotMetWarning)
        tt = tlc.tt_cross(array, tol=1e-4, random_state=0)
    assert _relative_error(tt, array) < 1e-4


def test_a_few_entries_of_a_tt_with_one_huge_mode_do_not_copy_its_core(numpy_backend):
    # A (4, 400000, 4) middle core is 51 MB: every call copied it whole (moved to C order
    # for the gather), so 10 entries cost 51 MB and O(n r^2) time, once per chunk of a
    # larger batch, and each held-out check of a cross on such a mode did the same.
    rng = np.random.default_rng(0)
    rank, size = 4, 400_000
    cores = [rng.standard_normal((1, 3, rank)), rng.standard_normal((rank, size, rank)),
             rng.standard_normal((rank, 5, 1))]
    indices = np.stack([rng.integers(0, n, 10) for n in (3, size, 5)], axis=1)
    values, peak = _peak_bytes(tlc.tt_entries, cores, indices)
    assert peak < cores[1].nbytes / 8, f"peak {peak / 2**20:.1f} MiB"
    expected = [cores[0][0, i] @ cores[1][:, j] @ cores[2][:, k, 0] for i, j, k in indices]
    np.testing.assert_allclose(values, expected, rtol=1e-12)


def test_an_interpolating_cross_with_non_finite_cores_says_its_arithmetic_overflowed():
    from tensorly_cross.cross.scaling import refuse_non_finite
    from tensorly_cross.lazy.cache import EvaluationCache

    cache = EvaluationCache(tlc.lazy_tensor(np.full((3, 4), 3.0)))
    cache.evaluate(np.array([[0, 0]]))
    with pytest.raises(OverflowError, match=r"method='tci'.*up to 3: its arithmetic"):
        refuse_non_finite([np.full((1, 3, 1), np.inf), np.ones((1, 4, 1))], cache, "tci")


def test_the_refusal_leaves_complex64_beyond_float32s_largest_to_the_shrinking():
    from tensorly_cross.cross.stopping import refuse_beyond_limit

    values = np.array([1.0, 3e38 + 3e38j], dtype=np.complex64)
    refuse_beyond_limit(values, np.array([[0], [1]]))  # 4.2e38: far below 2**1022


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.complex128])
def test_data_in_the_usual_range_is_read_as_it_is_and_beyond_it_by_a_power_of_two(dtype):
    # The guarantee the shrinking rests on: up to 2**(maxexp / 2) the values a cross reads
    # are the tensor's own, bit for bit; beyond, the first nonzero read sets an exact power
    # of two that every later read shares (no test held either).
    from tensorly_cross.cross.scaling import ShrunkTensor

    half = np.finfo(dtype).maxexp // 2
    indices = np.array([[0, 0], [1, 2], [2, 3]])
    for top, exponent in ((2.0 ** (half - 1), 0), (2.0**half, -half - 1)):
        array = np.zeros((3, 4), dtype=dtype)
        array[1, 2], array[2, 3] = top, top / 8
        shrunk = ShrunkTensor(tlc.lazy_tensor(array))
        assert not np.any(shrunk.evaluate(indices[:1]))  # zeros decide nothing
        values = shrunk.evaluate(indices)
        assert shrunk.exponent == exponent
        assert values.dtype == dtype
        np.testing.assert_array_equal(values, array[tuple(indices.T)] * 2.0**exponent)
        if not exponent:
            read = tlc.lazy_tensor(array).evaluate(indices)
            assert values.tobytes() == read.tobytes()
        # Later reads, however large, keep the factor the first nonzero one set.
        assert shrunk.evaluate(indices[2:])[0] == array[2, 3] * 2.0**exponent


def test_a_sweep_of_nan_cores_after_a_finite_one_is_not_the_best_state():
    # A NaN held-out error counted as "lower" (meant for runs without held-out entries,
    # whose errors are all NaN): a sweep of NaN cores after finite ones became the state
    # returned, and the result check (9ef399f) then refused a run that had a finite TT.
    from tensorly_cross.cross.stopping import BestSweep

    best = BestSweep()
    best.offer(2, 0.1, "finite")
    best.offer(3, float("nan"), "nan cores")
    assert (best.state, best.sweep, best.error) == ("finite", 2, 0.1)
    best.offer(4, 0.2, "worse")  # a NaN did not reset what later sweeps must beat
    assert best.state == "finite"
    best.offer(5, 0.05, "better")
    assert (best.state, best.sweep) == ("better", 5)
    # Without held-out entries every error is NaN: the latest sweep stays the best.
    unheld = BestSweep()
    for sweep in (2, 3):
        unheld.offer(sweep, float("nan"), sweep)
    assert unheld.state == 3


def test_a_finite_error_after_nan_ones_becomes_the_best_state():
    # val_size=0: NaN errors until the tensor is read whole, then exact ones.
    from tensorly_cross.cross.stopping import BestSweep

    best = BestSweep()
    best.offer(2, float("nan"), "unheld")
    best.offer(3, 0.3, "exact")
    assert best.state == "exact"


@pytest.mark.parametrize("ratio, warned", [(30.0, False), (150.0, True)])
def test_a_read_entry_warns_from_100_times_the_largest_held_out_one(ratio, warned):
    # UNSEEN_FACTOR: an entry read 30x the held-out ones is not a sign (a bright voxel the
    # TT recovers); 150x is. A factor 10 warned of the first.
    bright = ones_with({39: ratio})
    cache, validation = _validation(bright)
    assert validation.max_abs == 1.0  # the held-out draws missed the corner
    cache.evaluate(np.array([[39, 39, 39]]))
    assert cache.max_abs() == ratio
    assert bool(_unseen_warnings(validation, 0.0)) == warned


def test_a_missed_read_entry_is_named_at_the_data_s_own_scale():
    # Data near 2**700 is crossed shrunk (ShrunkTensor): the missed-entry sign named the
    # entry and the TT's miss at the shrunk scale ('20', 'missed by 19.5' for an entry of
    # 40 * 2**700), where the other signs name the data's own moduli.
    from tensorly_cross.cross.scaling import ShrunkTensor

    corner = ones_with({39: 40.0}, scale=2.0**700)
    cache = EvaluationCache(ShrunkTensor(FunctionTensor(corner, VALIDATION_SHAPE)))
    validation = Validation(cache, 1000, np.random.default_rng(0), tol=0.1)
    cache.evaluate(np.array([[39, 39, 39]]))
    shrunk_one = validation.max_abs  # the TT of ones, at the scale the cross ran at
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        validation.warn_if_unseen(0.0, cores=_ones_cores(shrunk_one))
    messages = [str(w.message) for w in caught if w.category is UnseenStructureWarning]
    assert len(messages) == 1
    assert f"(39, 39, 39), {40 * 2.0**700:.3g}," in messages[0]
    assert f"missed by {39 * 2.0**700:.3g} there" in messages[0]
    assert "0.152 of the tensor's norm" in messages[0]  # a ratio: the same at any scale


def test_divergence_is_judged_on_the_finite_errors_before_and_never_after_an_exact_one():
    # A first sweep of NaN cores (subnormal data's first least-squares sweep) does not hide
    # a later divergence; after a sweep of error 0 (an exact recovery) a round-off error is
    # not one. Mutants of either guard passed every test.
    from tensorly_cross.cross.driver import DIVERGENCE, _diverged

    assert _diverged(10.0, [float("nan"), 0.1])
    assert not _diverged(0.1 * DIVERGENCE * 0.99, [float("nan"), 0.1])
    assert not _diverged(1e-16, [0.0, 0.2])
    assert not _diverged(1.0, [float("nan")])


def test_a_jax_x32_cross_of_complex_data_that_complex64_takes_past_tol_warns():
    # complex128 cores handed back as complex64 lose precision as float64 ones do: the
    # narrowing is measured for complex dtypes too (a mutant measuring kind "f" alone
    # passed every test).
    jax = pytest.importorskip("jax")
    import tensorly as tl

    from tensorly_cross import tt_cross
    from tensorly_cross.errors import ToleranceNotMetWarning

    low = np.einsum("i,j,k->ijk", np.arange(1.0, 13.0), np.linspace(1, 2, 13),
                    np.exp(1j * np.arange(14.0)))
    detail = np.einsum("i,j,k->ijk", np.sin(np.arange(12)), np.arange(13.0) ** 2 / 100,
                       np.cos(np.arange(14)))
    array = low + 1e-3 * detail
    with tl.backend_context("jax"):
        before = jax.config.jax_enable_x64
        jax.config.update("jax_enable_x64", False)
        try:
            with pytest.warns(ToleranceNotMetWarning, match="jax_enable_x64"):
                tt = tt_cross(array, tol=1e-10, random_state=0)
        finally:
            jax.config.update("jax_enable_x64", before)
    assert str(tt[0].dtype) == "complex64"


# Mutant: ``exponent_of`` deciding "empty" by the number of dimensions, not the number of
# entries: an empty block raised NumPy's "zero-size array" error, and a 0-d one read 0.
def test_exponent_of_an_empty_block_is_zero_and_of_a_scalar_its_own():
    assert exponent_of(np.zeros((0, 3))) == 0
    assert exponent_of(np.zeros((3, 0, 2))) == 0
    assert exponent_of(np.array(3.0)) == 2  # 3 lies in [2**1, 2**2)
    assert exponent_of(np.array([np.inf, 1.0])) == 0
    assert exponent_of(np.array([-0.75])) == 0  # [2**-1, 2**0)


# Mutant: a stale or shared cached ``maxexp``: each dtype keeps its own range, asked in
# any order and again.
def test_max_exponent_is_each_dtypes_own_asked_in_any_order():
    expected = {np.float32: 128, np.complex64: 128, np.float64: 1024, np.complex128: 1024,
                np.float16: 16}
    for _ in range(2):
        for dtype, maxexp in expected.items():
            assert max_exponent(np.zeros(2, dtype=dtype)) == maxexp
    assert max_exponent([1.0]) == 1024  # no dtype: float64's


def test_entries_of_a_float16_tt_are_float16_roundings_of_float32_products(backend):
    # The products ran in float16: each of the 29 matrix products of a long chain rounded
    # (1e-3 off on the whole, a few ulps per entry), and a chain of 300 * 300 / 300 / 300
    # overflowed to inf on its way to 1. Now accumulated in float32, returned in float16.
    from tensorly_cross._backend import to_host

    rng = np.random.default_rng(0)
    d, rank = 30, 8
    cores = [(rng.standard_normal((1 if k == 0 else rank, 4, 1 if k == d - 1 else rank))
              / np.sqrt(rank)).astype(np.float16) for k in range(d)]
    indices = rng.integers(4, size=(500, d))
    exact = np.asarray(tlc.tt_entries([core.astype(np.float64) for core in cores], indices))
    values = tlc.tt_entries([tl.tensor(core) for core in cores], indices)
    assert "float16" in str(values.dtype)
    spacing = np.spacing(np.abs(exact).astype(np.float16)).astype(np.float64)
    assert np.all(np.abs(to_host(values).astype(np.float64) - exact) <= spacing)
    chain = [np.full((1, 1, 1), value, dtype=np.float16) for value in (300, 300, 1 / 300, 1 / 300)]
    assert np.isfinite(to_host(tlc.tt_entries([tl.tensor(core) for core in chain],
                                              [[0, 0, 0, 0]]))).all()
