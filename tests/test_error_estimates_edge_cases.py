"""Tests of the error estimates: held-out entries, upper bounds and unseen-structure warnings."""

import warnings

import numpy as np
import pytest
import tensorly as tl
from hypothesis import example, given, settings
from hypothesis import strategies as st

import tensorly_cross as tlc
from tensorly_cross import FunctionTensor
from tensorly_cross.cross.confidence import residual_carriers
from tensorly_cross.cross.stopping import BestSweep, Validation
from tensorly_cross.errors import UnseenStructureWarning
from tensorly_cross.lazy.cache import EvaluationCache

from ._helpers_shared import (
    VALIDATION_SHAPE,
    _noisy_ramp,
    _ones,
    _ones_cores,
    _true_error,
    _unseen_warnings,
    _validation,
    ones_with,
)
from .strategies import random_tt_cores
from .test_reliability import HiddenSpike

SHAPE = (12, 10, 8)


def smooth(idx):
    """A function of TT ranks (1, 10, 2, 1) on ``SHAPE``."""
    return np.exp(-idx.sum(axis=1) / 10.0) + np.sin(idx[:, 0] * idx[:, 1] / 3.0)


def test_a_budget_that_stops_the_first_sweep_warns_even_without_held_out_entries():
    # max_evals=30, val_size=0: TCI returns its rank-1 starting TT (n_sweeps=0, best_sweep=0)
    # without a word, while the same stop with held-out entries warns "not checked".
    with pytest.warns(tlc.ToleranceNotMetWarning, match="before its first sweep"):
        _, info = tlc.tt_cross(smooth, shape=SHAPE, max_evals=30, val_size=0,
                               random_state=0, return_info=True)
    assert info.n_sweeps == 0


def _dense(shape, ranks, seed):
    return tl.tt_to_tensor(random_tt_cores(shape, ranks, seed))


def _quiet_cross(tensor, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return tlc.tt_cross(tensor, return_info=True, **kwargs)


def _relative_error(tt, dense):
    return np.linalg.norm(tl.tt_to_tensor(tt) - dense) / np.linalg.norm(dense)


# -- stopping.py: a tensor read whole is judged on every entry, confirmed passes too ------


@pytest.mark.parametrize("shape, ranks, seed, options", [
    # A block cross whose held-out sample (read first) covers every entry: the pass at
    # 0.298 on the sample was "confirmed" on fresh draws after the exact error over every
    # entry (0.348) had been computed and dropped: stop_reason "tol" for a TT off by 0.348.
    ((5, 5, 3, 3), [1, 1, 3, 1, 1], 794, dict(method="block", rank=2)),
    # The least-squares cross's rounding was chosen and reported on 5 held-out draws
    # (0.015, then 0.0087) of a tensor it had read whole (exact error 0.030).
    ((5, 3), [1, 3, 1], 9, dict(method="lsq", val_size=5)),
    # TCI's second held-out stage completed the tensor: its error on the sample (0.294)
    # was reported instead of the exact 0.251.
    ((5, 5, 1, 3), [1, 2, 2, 2, 1], 738, dict(method="tci")),
])
def test_a_tensor_read_whole_reports_and_stops_on_its_exact_error(shape, ranks, seed,
                                                                  options):
    dense = _dense(shape, ranks, seed)
    tt, info = _quiet_cross(dense, tol=0.3, random_state=seed, **options)
    assert info.n_evals == dense.size  # every entry read: nothing is unknown
    exact = _relative_error(tt, dense)
    assert info.val_error == pytest.approx(exact, rel=1e-9, abs=1e-15)
    assert info.stop_reason != "tol" or exact <= 0.3


def test_without_held_out_entries_only_settled_sweeps_stall():
    best = BestSweep()
    nan = float("nan")
    best.offer(1, nan, state="a", settled=False)
    best.offer(2, nan, state="b", settled=False)
    assert (best.stale, best.sweep) == (0, 2)
    best.offer(3, nan, state="c", settled=True)
    best.offer(4, nan, state="d", settled=True)
    assert (best.stale, best.sweep) == (2, 4)
    best.offer(5, nan, state="e", settled=False)
    assert best.stale == 0


# --- missed --------------------------------------------------------------------------------


def _warnings_of(options, info):
    import warnings

    from tensorly_cross.cross.missed import warn_if_missed

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warn_if_missed(options, info)
    return [str(w.message) for w in caught if w.category is tlc.ToleranceNotMetWarning]


@pytest.mark.parametrize(("error", "stop", "tol", "expected"), [
    (float("nan"), "tol", 1e-3, "not met: held-out error nan"),  # NaN has met nothing
    (5e-4, "n_iter_max", 1e-3, "not met with confidence"),  # below tol, never passed
    (5e-4, "stalled", 1e-3, "not met with confidence"),
    (5e-4, "tol", 1e-3, None),  # passed
    (5e-2, "n_iter_max", 0.0, None),  # tol=0: no target to miss
])
def test_the_missed_tolerance_warning_cases(error, stop, tol, expected):
    from tensorly_cross.cross.stopping import CrossInfo
    from tensorly_cross.options import cross_options

    options = cross_options((8, 8, 8), tol=tol, method="tci")
    info = CrossInfo(method="tci", val_errors=[error], ranks=[(1, 3, 3, 1)], n_sweeps=1,
                     best_sweep=1, stop_reason=stop, n_heldout=500)
    messages = _warnings_of(options, info)
    if expected is None:
        assert messages == []
    else:
        assert len(messages) == 1 and expected in messages[0]


# --- confidence ----------------------------------------------------------------------------


def test_upper_bound_of_one_held_out_entry_is_the_error_without_numpy_warnings():
    import warnings

    from tensorly_cross.cross.confidence import upper_bound

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "degrees of freedom <= 0" from a spread of one
        assert upper_bound(0.5, np.array([0.3]), np.array([0.6])) == 0.5


def test_upper_bound_follows_halls_skewness_corrected_quantile():
    from tensorly_cross.cross.confidence import upper_bound

    residuals = np.array([0.1, 0.2, 0.1, 0.9, 0.3, 0.2, 0.1, 0.15])
    squares = (residuals / residuals.max()) ** 2
    n, z = squares.size, 1.645
    error = np.sqrt(np.mean(residuals**2))  # values' norm taken as known (weights 1)
    linear = squares - squares.mean()
    skew = np.mean(linear**3) / np.std(linear) ** 3
    quantile = z + skew * (2 * z**2 + 1) / (6 * np.sqrt(n))  # the module's formula
    upper = squares.mean() + quantile * np.std(linear, ddof=1) / np.sqrt(n)
    expected = error * np.sqrt(upper / squares.mean())
    assert np.isclose(upper_bound(error, residuals), expected, rtol=1e-12)


def test_upper_bound_is_never_below_the_error_however_skewed():
    from tensorly_cross.cross.confidence import upper_bound

    # One residual far below the others: a strong left skew, whose correction at a high
    # quantile (z = 3) would take the quantile below 0 unless it is floored there.
    residuals = np.ones(100)
    residuals[0] = 0.0
    error = float(np.sqrt(np.mean(residuals**2)))
    assert upper_bound(error, residuals, z=3.0) >= error


def test_residual_carriers_count_the_entries_that_carry_the_residual():
    from tensorly_cross.cross.confidence import residual_carriers

    assert np.isclose(residual_carriers(np.full(7, 0.3)), 7.0)
    assert np.isclose(residual_carriers(np.array([0.0, 2.0, 0.0, 0.0])), 1.0)
    assert np.isclose(residual_carriers(np.array([1.0, 1.0, 1e-9])), 2.0)
    assert residual_carriers(np.zeros(3)) == np.inf


def test_upper_bound_on_all_zero_values_treats_the_error_as_absolute():
    from tensorly_cross.cross.confidence import upper_bound

    residuals = np.array([0.1, 0.2, 0.1, 0.9, 0.3, 0.2, 0.1, 0.15])
    error = float(np.sqrt(np.mean(residuals**2)))
    bound = upper_bound(error, residuals, np.zeros(residuals.size))
    assert np.isfinite(bound) and bound == upper_bound(error, residuals)


def _cosine(shape):
    """An exact TT of rank 2: crosses recover it to round-off."""
    return tlc.FunctionTensor(lambda idx: np.cos(idx.sum(axis=1) / 9.0), shape)


# Mutant (stopping.Validation): the first stage of held-out entries as
# min(FIRST_MIN, ...) instead of max(...): a val_size of 2000 read 200 first, not a fifth.
def test_an_exact_recovery_reads_a_fifth_of_the_held_out_entries():
    _, info = tlc.tt_cross(_cosine((16,) * 4), tol=1e-8, val_size=2000, random_state=0,
                           return_info=True)
    assert info.stop_reason == "tol"
    # A fifth of val_size, less the draws of the start pivot (never held out).
    assert 390 <= info.n_heldout <= 400


# Mutant (stopping.warn_if_unseen): the unseen-entry factor raised from UNSEEN_FACTOR (100)
# to 1000: a read entry 201 times every held-out one passed "tol" without a word.
def test_a_pass_warns_of_an_entry_read_a_hundred_times_the_held_out_ones():
    from tensorly_cross.errors import UnseenStructureWarning

    with pytest.warns(UnseenStructureWarning, match="201x the largest held-out"):
        _, info = tlc.tt_cross(HiddenSpike(200.0), shape=(30, 30, 30), random_state=0,
                               return_info=True)
    assert info.stop_reason == "tol"


# Mutant (driver._stop_reason): the callback's stop taking precedence over a pass: a sweep
# that met tol, after which the callback also asked to stop, reported "callback".
def test_a_pass_stops_on_tol_even_where_the_callback_also_asks_to_stop():
    seen = []

    def stop_always(tt, info):
        seen.append(info.n_sweeps)
        return True

    _, info = tlc.tt_cross(_cosine((16,) * 4), tol=1e-8, random_state=0, return_info=True,
                           callback=stop_always)
    assert seen == [1] and info.n_sweeps == 1
    assert info.stop_reason == "tol" and info.val_error <= 1e-8


def _missed_warnings(info, **settings):
    """The ToleranceNotMetWarning messages ``warn_if_missed`` gives for ``info``."""
    from tensorly_cross.cross.missed import warn_if_missed
    from tensorly_cross.options import cross_options

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warn_if_missed(cross_options((8, 8, 8), **settings), info)
    return [str(w.message) for w in caught if w.category is tlc.ToleranceNotMetWarning]


# Mutant (missed._STOPS_WITHOUT_PASS): "max_time" left out: a run stopped on max_time whose
# sample was below tol, but never passed, was returned without a word.
def test_a_max_time_stop_below_tol_without_a_pass_is_warned_of():
    from tensorly_cross.cross.stopping import CrossInfo

    info = CrossInfo(method="tci", val_errors=[5e-4], ranks=[(1, 3, 3, 1)], n_sweeps=1,
                     best_sweep=1, stop_reason="max_time", n_heldout=500)
    messages = _missed_warnings(info, tol=1e-3, method="tci")
    assert len(messages) == 1 and "not met with confidence" in messages[0]
    assert "raise max_time" in messages[0]


# Mutant (missed.warn_if_missed): the ranks of the last sweep named, not of the sweep
# returned: the message said the largest rank 5 (and to raise max_rank=5) of a TT of rank 3.
def test_the_missed_tolerance_warning_names_the_ranks_of_the_sweep_returned():
    from tensorly_cross.cross.stopping import CrossInfo

    info = CrossInfo(method="tci", val_errors=[0.5, 0.6], ranks=[(1, 3, 3, 1), (1, 5, 5, 1)],
                     n_sweeps=2, best_sweep=1, stop_reason="stalled", n_heldout=500)
    messages = _missed_warnings(info, tol=1e-3, method="tci", max_rank=5)
    assert len(messages) == 1 and "largest rank 3" in messages[0]
    assert "raise max_rank" not in messages[0]


# Mutant (missed.warn_if_missed): "not checked" only with val_size > 0: a run with
# val_size=0 that a budget stopped before its first sweep returned the starting TT silently.
def test_a_budget_stop_before_the_first_sweep_warns_even_without_held_out_entries():
    from tensorly_cross.cross.stopping import CrossInfo

    info = CrossInfo(method="tci", ranks=[], n_sweeps=0, best_sweep=0,
                     stop_reason="max_evals", n_heldout=0, n_evals=150)
    messages = _missed_warnings(info, tol=1e-3, method="tci", val_size=0)
    assert len(messages) == 1 and "before its first sweep" in messages[0]


# Mutant (stopping.heldout_bound): ``n_heldout < 0``: no held-out entries divided by zero,
# which gave 1.0 only through NumPy's "divide by zero" RuntimeWarning, shown to the user.
def test_the_bound_without_held_out_entries_is_one_without_a_warning():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert tlc.CrossInfo(method="tci").heldout_bound == 1.0


# -- cross/stopping.py: Validation.warn_if_unseen --------------------------------------------


def test_the_unseen_structure_warning_of_a_block_cross_bounds_positions_not_channels():
    # Mutant: the bound in the warning counts every held-out channel as a draw, not every
    # position (3 channels: 0.003 claimed where the held-out positions bound 0.009).
    import re
    import warnings

    import tensorly_cross as tlc
    from tensorly_cross.cross.stopping import heldout_bound
    from tensorly_cross.errors import UnseenStructureWarning

    from .test_reliability import HiddenSpike

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _, info = tlc.tt_cross(HiddenSpike(), shape=(30, 30, 3), method="block", rank=2,
                               random_state=0, return_info=True)
    (message,) = [str(w.message) for w in caught if w.category is UnseenStructureWarning]
    claimed = float(re.search(r"at most a fraction (\S+) of the entries", message)[1])
    drawn = info.n_fresh or info.n_heldout  # held-out channel values, 3 per position
    assert claimed == pytest.approx(heldout_bound(drawn // 3), rel=1e-2)


def test_the_unseen_structure_warning_is_given_once_per_validation():
    # Mutant: ``self.warned`` no longer checked: each pass judged (the held-out error's,
    # then the driver's once the pass is decided) warned again ("Warn (once)").
    import warnings

    import tensorly_cross as tlc
    from tensorly_cross.cross.stopping import Validation
    from tensorly_cross.errors import UnseenStructureWarning
    from tensorly_cross.lazy.cache import EvaluationCache

    from .test_reliability import HiddenSpike

    cache = EvaluationCache(tlc.FunctionTensor(HiddenSpike(), (30, 30, 30)))
    validation = Validation(cache, 1000, np.random.default_rng(0), None, 1e-3)
    cache.evaluate(np.indices((30, 30, 2)).reshape(3, -1).T.astype(np.int64))  # the spike
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        validation.warn_if_unseen(1e-4)
        validation.warn_if_unseen(1e-4)
    assert [w.category for w in caught] == [UnseenStructureWarning]


# Before: once a sweep had read the last entries of a small tensor, its error was exact
# (over every entry) while the sweeps before it kept their held-out samples' errors, and
# the two were compared as one: an ALS cross of a 2x2x5 array at val_size=10 took its
# exact errors (0.0032, 0.0042) for divergences from the first sweep's 0.00028 (on 10
# draws), rolled both back and returned the first sweep's TT reporting val_error=0.00028,
# its true error 0.0042, with every entry read.
def test_a_fully_read_tensor_reports_the_exact_error_of_the_tt_returned():
    dense = _noisy_ramp((2, 2, 5), seed=42)
    tt, info = tlc.tt_cross(dense, method="als", rank=3, tol=1e-6, val_size=10,
                            random_state=0, return_info=True)
    assert info.n_evals == dense.size
    assert abs(info.val_error - _true_error(tt, dense)) <= 1e-12


@settings(max_examples=40, deadline=None)
@given(shape=st.lists(st.integers(2, 6), min_size=2, max_size=3),
       seed=st.integers(0, 2**16), method=st.sampled_from(["als", "tci", "lsq"]),
       val_size=st.sampled_from([3, 5, 9, 20]), heavy=st.booleans())
# Before: 0.0079 reported for a true 0.354, and 0.0014 for 0.256 (the last entries read
# after the first sweep, which the rest were then compared with as divergences).
@example(shape=[2, 4, 3], seed=52025, method="als", val_size=5, heavy=True)
@example(shape=[3, 4, 2], seed=18760, method="als", val_size=5, heavy=True)
def test_once_every_entry_is_read_the_reported_error_is_the_true_one(shape, seed, method,
                                                                     val_size, heavy):
    """The held-out error of the state returned, where the cross ended up reading every
    entry (judged exactly, as ``val_size`` documents), is that TT's error on the tensor."""
    rng = np.random.default_rng(seed)
    dense = (np.exp(3 * rng.standard_normal(shape)) if heavy
             else _noisy_ramp(tuple(shape), seed))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # rank clipped, tolerance missed
        tt, info = tlc.tt_cross(dense, method=method, tol=1e-8, val_size=val_size,
                                random_state=seed, return_info=True,
                                rank=2 if method == "als" else None)
    if info.n_evals == dense.size and info.best_sweep:
        assert abs(info.val_error - _true_error(tt, dense)) <= 1e-9 * max(1.0, info.val_error)


@pytest.mark.parametrize("carriers, warned", [(20, True), (40, False)])
def test_a_residual_carried_by_fewer_than_30_held_out_entries_is_a_sign(carriers, warned):
    # FEW_CARRIERS: a pass (error 0.05 at tol 0.1) whose held-out residual about 20
    # entries carry is warned of; about 40 carry one sure enough. Mutants at 10 and 100 of
    # the constant passed every test.
    _, validation = _validation(_ones)
    residuals = np.zeros(validation.n_read)
    residuals[:carriers] = 1.0
    assert residual_carriers(residuals) == pytest.approx(carriers)
    found = _unseen_warnings(validation, 0.05, residuals)
    assert bool(found) == warned
    if warned:
        assert "carry the residual" in str(found[0].message)


def _spiky(indices):
    """1 everywhere, 40 on the planes i = 0 and i = 1: a few held-out entries carry the
    held-out norm."""
    return np.where(indices[:, 0] < 2, 40.0, 1.0)


def _spikier(indices):
    """As :func:`_spiky`, the bright plane i = 0 alone."""
    return np.where(indices[:, 0] < 1, 40.0, 1.0)


@pytest.mark.parametrize("function, low, high, warned",
                         [(_spikier, 3, 10, True), (_spiky, 10, 30, False)])
def test_a_norm_carried_by_fewer_than_10_held_out_entries_is_a_sign(function, low, high,
                                                                     warned):
    # FEW_VALUE_CARRIERS: the held-out norm (the relative error's denominator) carried by
    # 3-10 entries is a sign, by 10-30 is not. Mutants at 3 and 30 passed every test.
    _, validation = _validation(function)
    count = residual_carriers(validation.values)
    assert low < count < high
    found = _unseen_warnings(validation, 0.05)
    assert bool(found) == warned
    if warned:
        assert "carry the held-out norm" in str(found[0].message)


def test_nothing_is_unseen_once_every_entry_was_read():
    # A pass whose residual one held-out entry carries is a sign, unless the cross read
    # the whole tensor: then nothing is unseen (n_read >= size; a mutant at > warned).
    shape = (4, 4, 4)
    cache = EvaluationCache(FunctionTensor(_ones, shape))
    validation = Validation(cache, 100, np.random.default_rng(0), tol=0.1)
    residuals = np.zeros(validation.n_read)
    residuals[0] = 1.0
    cache.evaluate(np.stack(np.unravel_index(np.arange(64), shape), axis=1))
    assert len(cache) == cache.size
    assert not _unseen_warnings(validation, 0.05, residuals)


@pytest.mark.parametrize("bright, warned", [(20.0, False), (40.0, True)])
def test_a_read_entry_missed_by_more_than_tol_of_the_norm_is_named(bright, warned):
    # The TT (1 everywhere) misses a read entry of 40 by 0.15 of the tensor's estimated
    # norm at tol 0.1 (named), one of 20 by 0.075 (silent); both are under UNSEEN_FACTOR.
    # A mutant that asked twice tol passed every test.
    corner = ones_with({39: bright})
    cache, validation = _validation(corner)
    assert validation.max_abs == 1.0
    cache.evaluate(np.array([[39, 39, 39]]))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        validation.warn_if_unseen(0.0, cores=_ones_cores())
    messages = [str(w.message) for w in caught if w.category is UnseenStructureWarning]
    assert len(messages) == int(warned)
    if warned:
        assert "entry at (39, 39, 39)" in messages[0]


def test_the_norm_that_judges_a_missed_entry_counts_the_entries_read():
    # The tensor's norm is estimated from the held-out entries and the large ones read: a
    # TT that misses a read 60 (under UNSEEN_FACTOR) on a 10^3 tensor of ones misses it by
    # 0.87 of that norm, under tol 0.9; from the held-out entries alone (a mutant) 1.87.
    shape = (10, 10, 10)

    corner = ones_with({9: 60.0})
    cache = EvaluationCache(FunctionTensor(corner, shape))
    validation = Validation(cache, 200, np.random.default_rng(2), tol=0.9)
    assert validation.max_abs == 1.0
    cache.evaluate(np.array([[9, 9, 9]]))
    cores = [np.ones((1, n, 1)) for n in shape]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        validation.warn_if_unseen(0.0, cores=cores)
    assert not [w for w in caught if w.category is UnseenStructureWarning]
    validation.warned, validation.tol = False, 0.8  # 0.87 is above this one
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        validation.warn_if_unseen(0.0, cores=cores)
    assert [w for w in caught if w.category is UnseenStructureWarning]


def _rank_one_with_corner(indices):
    """A rank-1 tensor of distinct values (no levels) plus 40x at (39, 39, 39)."""
    factor = 1.0 + np.linspace(0.0, 1.0, VALIDATION_SHAPE[0]) ** 2
    values = np.prod(factor[indices], axis=1)
    values[np.all(indices == 39, axis=1)] *= 40.0
    return values


def test_a_pass_decided_on_the_held_out_error_checks_the_entries_read():
    # Validation.error (the path of an unguarded pass: a callable) checks the largest
    # entries read against the TT, as the driver does for guarded data: a mutant that
    # passed it no cores never named the missed corner.
    cache, validation = _validation(_rank_one_with_corner)
    assert not validation.guarded
    cache.evaluate(np.array([[39, 39, 39]]))
    factor = 1.0 + np.linspace(0.0, 1.0, VALIDATION_SHAPE[0]) ** 2
    cores = [factor.reshape(1, -1, 1) for _ in VALIDATION_SHAPE]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        error = validation.error(cores)
    assert error < 1e-12
    messages = [str(w.message) for w in caught if w.category is UnseenStructureWarning]
    assert len(messages) == 1 and "entry at (39, 39, 39)" in messages[0]


def test_rebasing_on_exact_errors_resets_the_stall_reference_too():
    # Once a sweep reads the last entry of a small tensor, the best state's error is
    # measured again over every entry; the stall rule's reference must move with it, or
    # sweeps near that exact error count as stalled against the lucky sample's error.
    from tensorly_cross.cross.driver import _rebase
    from tensorly_cross.cross.stopping import BestSweep, CrossInfo

    shape = (2, 3, 4)
    cache = EvaluationCache(FunctionTensor(lambda idx: 1.0 + idx.sum(axis=1), shape))
    validation = Validation(cache, 5, np.random.default_rng(0), tol=0.1)
    cache.evaluate(np.stack(np.unravel_index(np.arange(24), shape), axis=1))
    assert validation.reads_every_entry
    cores = [np.ones((1, n, 1)) for n in shape]  # the TT of ones: far off
    best, info = BestSweep(), CrossInfo("tci")
    info.val_errors = [0.5, 1e-3, 0.4]
    best.offer(2, 1e-3, state=(None, cores))
    assert best.reference == 1e-3
    exact = _rebase(validation, info, best, 3, (None, cores))
    assert exact == [2, 3]
    assert best.error == info.val_errors[1] == validation.exact_error(cores) > 0.1
    assert best.reference == best.error
