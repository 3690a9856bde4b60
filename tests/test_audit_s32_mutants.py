"""Audit s32, mutants: behaviour of the last sessions' guards that no test pinned (a
mutant of each constant or comparison survived every test that covers it)."""

import warnings

import numpy as np
import pytest

from tensorly_cross import FunctionTensor
from tensorly_cross.cross.confidence import residual_carriers
from tensorly_cross.cross.stopping import Validation
from tensorly_cross.errors import UnseenStructureWarning
from tensorly_cross.lazy.cache import EvaluationCache

SHAPE = (40, 40, 40)


def _validation(function, tol=0.1, size=1000, seed=0):
    cache = EvaluationCache(FunctionTensor(function, SHAPE))
    return cache, Validation(cache, size, np.random.default_rng(seed), tol=tol)


def _unseen_warnings(validation, error, residuals=None):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        validation.warn_if_unseen(error, residuals=residuals)
    return [w for w in caught if issubclass(w.category, UnseenStructureWarning)]


def _ones(indices):
    return np.ones(indices.shape[0])


def ones_with(bright, scale=1.0):
    """A function of ones but ``value`` at ``(i, i, i)`` for each ``i: value`` of
    ``bright``, all times ``scale``: a tensor with a few bright entries."""

    def function(indices):
        values = np.ones(indices.shape[0])
        for index, value in bright.items():
            values[np.all(indices == index, axis=1)] = value
        return values * scale

    return function


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


def _corner_cores(value):
    """Rank-2 TT: 1 everywhere plus ``value - 1`` at (39, 39, 39)."""
    n = SHAPE[0]
    first, middle, last = np.zeros((1, n, 2)), np.zeros((2, n, 2)), np.zeros((2, n, 1))
    first[0, :, 0], first[0, -1, 1] = 1.0, value - 1.0
    middle[0, :, 0], middle[1, -1, 1] = 1.0, 1.0
    last[0, :, 0], last[1, -1, 0] = 1.0, 1.0
    return [first, middle, last]


def test_the_missed_read_entry_is_sought_among_the_largest_read_not_the_largest_alone():
    # MISSED_CANDIDATES: the TT is exact at the largest entry read (1000) and misses the
    # second (500, TT 1) by 0.4 of the tensor's norm. Checking the largest alone (a mutant
    # at 1) fell through to the generic 'read an entry 1000x' sign, naming no missed entry.
    two_bright = ones_with({39: 1000.0, 38: 500.0})
    cache, validation = _validation(two_bright)
    assert validation.max_abs == 1.0
    cache.evaluate(np.array([[39, 39, 39], [38, 38, 38]]))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        validation.warn_if_unseen(0.0, cores=_corner_cores(1000.0))
    messages = [str(w.message) for w in caught if w.category is UnseenStructureWarning]
    assert len(messages) == 1
    assert "entry at (38, 38, 38), 500" in messages[0]


def _ones_cores(scale=1.0):
    return [np.full((1, n, 1), scale if k == 0 else 1.0) for k, n in enumerate(SHAPE)]


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


def test_a_read_entry_off_by_round_off_is_no_sign_below_machine_precision():
    # At a tol below float64's precision a TT off by round-off on every entry (4 eps)
    # misses no read entry: the miss must pass 100 eps too. Without that floor a mutant
    # warned of a miss of 2e-18 'of the tensor's norm, above tol'.
    cache, validation = _validation(_ones, tol=1e-20)
    cache.evaluate(np.array([[39, 39, 39]]))
    cores = _ones_cores(1.0 + 4 * np.finfo(np.float64).eps)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        validation.warn_if_unseen(1e-20, cores=cores)
    assert not [w for w in caught if w.category is UnseenStructureWarning]


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


def test_a_missed_read_entry_is_named_at_the_data_s_own_scale():
    # Data near 2**700 is crossed shrunk (ShrunkTensor): the missed-entry sign named the
    # entry and the TT's miss at the shrunk scale ('20', 'missed by 19.5' for an entry of
    # 40 * 2**700), where the other signs name the data's own moduli.
    from tensorly_cross.cross.scaling import ShrunkTensor

    corner = ones_with({39: 40.0}, scale=2.0**700)
    cache = EvaluationCache(ShrunkTensor(FunctionTensor(corner, SHAPE)))
    validation = Validation(cache, 1000, np.random.default_rng(0), tol=0.1)
    cache.evaluate(np.array([[39, 39, 39]]))
    shrunk_one = validation.max_abs  # the TT of ones, at the scale the cross ran at
    cores = [np.full((1, n, 1), shrunk_one if k == 0 else 1.0) for k, n in enumerate(SHAPE)]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        validation.warn_if_unseen(0.0, cores=cores)
    messages = [str(w.message) for w in caught if w.category is UnseenStructureWarning]
    assert len(messages) == 1
    assert f"(39, 39, 39), {40 * 2.0**700:.3g}," in messages[0]
    assert f"missed by {39 * 2.0**700:.3g} there" in messages[0]
    assert "0.152 of the tensor's norm" in messages[0]  # a ratio: the same at any scale


@pytest.mark.parametrize("function, with_residuals", [(_ones, True), (_spikier, False)])
def test_a_clear_pass_is_no_sign_whatever_carries_its_residual_or_norm(function,
                                                                       with_residuals):
    # A pass by CLEAR_MARGIN (error 5e-4 at tol 0.1: an exact recovery's round-off) is not
    # judged by how many entries carry its residual or the held-out norm (mutants that
    # dropped the margin warned of exact recoveries).
    _, validation = _validation(function)
    residuals = None
    if with_residuals:
        residuals = np.zeros(validation.n_read)
        residuals[0] = 1.0
    assert not _unseen_warnings(validation, 5e-4, residuals)
    validation.warned = False
    assert _unseen_warnings(validation, 5e-2, residuals)  # the same sample, a narrow pass


def _rank_one_with_corner(indices):
    """A rank-1 tensor of distinct values (no levels) plus 40x at (39, 39, 39)."""
    factor = 1.0 + np.linspace(0.0, 1.0, SHAPE[0]) ** 2
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
    factor = 1.0 + np.linspace(0.0, 1.0, SHAPE[0]) ** 2
    cores = [factor.reshape(1, -1, 1) for _ in SHAPE]
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


def test_a_cache_filled_under_numpy_stores_new_values_under_pytorch():
    # A cache outlives tl.set_backend: its buffer moves to the active backend when new
    # values are stored with it (a mutant that never moved it passed every test).
    torch = pytest.importorskip("torch")
    import tensorly as tl

    shape = (5, 6, 7)

    def function(indices):
        return tl.tensor(1.0 + np.asarray(indices, dtype=np.float64).sum(axis=1))

    cache = EvaluationCache(FunctionTensor(function, shape))
    first = np.array([[0, 0, 0], [1, 2, 3]])
    cache.evaluate(first)
    second = np.array([[4, 5, 6], [1, 2, 3], [2, 2, 2]])
    with tl.backend_context("pytorch"):
        values = cache.evaluate(second)
        assert isinstance(values, torch.Tensor)
        assert np.array_equal(values.numpy(), [16.0, 7.0, 7.0])
        again = cache.evaluate(np.concatenate([first, second]))
        assert np.array_equal(again.numpy(), [1.0, 7.0, 16.0, 7.0, 7.0])
    assert len(cache) == 4


def test_cache_largest_ranks_entries_by_modulus():
    # A negative entry of large modulus is among the largest read (a dark artefact, a
    # signed field): ranking by signed value (a mutant) never named it.
    signed = ones_with({3: -1000.0})
    cache = EvaluationCache(FunctionTensor(signed, SHAPE))
    cache.evaluate(np.array([[0, 0, 0], [3, 3, 3], [1, 2, 3]]))
    indices, values = cache.largest(1)
    assert indices.tolist() == [[3, 3, 3]] and values.tolist() == [-1000.0]


def _tightened_sweeper():
    from tensorly_cross.cross.lsq import LSQSweeper

    sweeper = LSQSweeper((8, 8, 8), 0.01, None, [1, 8, 8, 1], 2.0, np.random.default_rng(0))
    for error in (0.5, 0.5):  # a miss that did not lower the error: truncate less
        sweeper.record(error, False)
    sweeper.tighten()
    assert sweeper.tightened
    return sweeper


def test_six_sweeps_at_a_just_lowered_truncation_count_as_progress_a_run():
    # EXCUSED_TIGHTENINGS = 6: the 6th such sweep still counts (a mutant at < counted 5),
    # the 7th does not; growth by 2% of parameters always counts, a bond at its cap never
    # excuses a sweep.
    sweeper = _tightened_sweeper()
    same = [(1, 4, 4, 1), (1, 4, 4, 1)]
    assert [sweeper.ranks_progressed(same) for _ in range(7)] == [True] * 6 + [False]
    assert sweeper.ranks_progressed([(1, 4, 4, 1), (1, 5, 4, 1)])  # grown
    capped = _tightened_sweeper()
    assert not capped.ranks_progressed([(1, 8, 8, 1), (1, 8, 8, 1)])
    untightened = _tightened_sweeper()
    untightened.record(0.1, False)  # a sweep that lowered the error: no tightening
    untightened.tighten()
    assert not untightened.ranks_progressed(same)
    # growth by 4.8% of parameters is progress (a mutant asking 20% passed every test)
    assert untightened.ranks_progressed([(1, 8, 20, 1), (1, 8, 21, 1)])
