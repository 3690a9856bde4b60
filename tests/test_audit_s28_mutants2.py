"""Mutation audit (s28, second round): the argument checks (``_validation``), the value
checks of a lazy tensor (``lazy/base``) and the held-out stopping and rollback rules of the
sweep loop, each test written to kill a hand-made mutant that the existing tests let
survive (the comment above each test names it)."""

import numpy as np
import pytest

import tensorly_cross as tlc


def _cosine(indices):
    return np.cos(indices.sum(axis=1) / 9.0)


# Mutant (_validation.check_int): the bool test dropped, so that True passed as 1.
@pytest.mark.parametrize("flag", [True, np.True_])
def test_a_bool_count_is_refused_by_name(flag):
    with pytest.raises(TypeError, match="n_iter_max must be an integer, got .*bool"):
        tlc.tt_cross(_cosine, rank=2, shape=(5, 5, 5), n_iter_max=flag)


# Mutant (_validation.check_float): ``value != value`` dropped, so that a NaN tolerance
# passed every comparison with its minimum and was taken.
@pytest.mark.parametrize("name", ["tol", "max_time"])
def test_a_nan_tolerance_or_time_is_refused_as_not_finite(name):
    with pytest.raises(ValueError, match=f"{name} must be finite, got nan"):
        tlc.tt_cross(_cosine, rank=2, shape=(5, 5, 5), **{name: float("nan")})


# Mutant (_validation.check_random_state): ``random_state < -1``: a seed of -1 reached
# NumPy, whose message names no argument.
def test_a_negative_seed_is_refused_by_name():
    with pytest.raises(ValueError, match="random_state must be a non-negative int, got -1"):
        tlc.tt_cross(_cosine, rank=2, shape=(5, 5, 5), random_state=-1)


# Mutant (driver._diverged): ``error >= DIVERGENCE * lowest``: a sweep exactly at the
# factor was undone, though only one that *exceeds* it has diverged (see DIVERGENCE).
def test_a_sweep_exactly_at_the_divergence_factor_is_kept():
    from tensorly_cross.cross.driver import DIVERGENCE, _diverged

    assert not _diverged(DIVERGENCE * 0.5, [0.5, float("nan")])
    assert _diverged(np.nextafter(DIVERGENCE * 0.5, np.inf), [0.5, float("nan")])


# Mutant (driver._diverged): ``min(finite) > 0`` dropped: after an exact sweep (held-out
# error 0) every later sweep with a round-off error was undone as diverged.
def test_a_round_off_error_after_an_exact_sweep_is_no_divergence():
    from tensorly_cross.cross.driver import _diverged

    assert not _diverged(1e-16, [0.0])


# Mutant (_validation.check_bool): NumPy's bool refused (``isinstance(value, bool)`` only),
# though a flag read from an array is one.
def test_a_numpy_bool_flag_is_taken():
    tt, info = tlc.tt_cross(_cosine, rank=2, shape=(5, 5, 5), random_state=0,
                            return_info=np.True_)
    assert info.n_sweeps >= 1
    with pytest.raises(TypeError, match="return_info must be True or False, got str"):
        tlc.tt_cross(_cosine, rank=2, shape=(5, 5, 5), return_info="yes")


# Mutant (lazy.base.check_values): the last non-finite value named, not the first, as
# ``evaluate`` documents ("the exception names the first such multi-index").
def test_of_several_non_finite_values_the_first_is_named():
    def function(indices):
        values = indices.sum(axis=1).astype(float)
        values[indices[:, 0] == 3] = np.inf
        values[indices[:, 0] == 1] = np.nan
        return values

    tensor = tlc.FunctionTensor(function, (4, 5))
    with pytest.raises(tlc.NonFiniteValueError, match=r"inf at multi-index \(3, 2\)") as error:
        tensor.evaluate(np.array([[0, 0], [3, 2], [1, 1], [2, 2]]))
    assert error.value.index == (3, 2) and error.value.value == np.inf


def _blowing_up_at(call, factor=1e3):
    """The real ALS sweep whose ``call``-th assembly is scaled by ``factor`` (near-singular
    pivot blocks would do that)."""
    from tensorly_cross.cross.als import ALSSweeper
    from tensorly_cross.cross.assemble import assemble_cores

    class BlowsUp(ALSSweeper):
        calls = 0

        def assemble(self, cache, indices, result):
            self.calls += 1
            cores = assemble_cores(cache, indices, result)
            return [cores[0] * factor] + cores[1:] if self.calls == call else cores

    return BlowsUp


def _run_als(sweeper_class, n_iter_max, patience=None):
    import tensorly as tl

    from tensorly_cross.cross.driver import run_sweeps
    from tensorly_cross.cross.init import random_indices
    from tensorly_cross.cross.stopping import CrossInfo, Validation
    from tensorly_cross.lazy.cache import EvaluationCache
    from tensorly_cross.options import cross_options

    rng = np.random.default_rng(0)
    dense = rng.standard_normal((6, 7, 8)) + 5.0
    lazy = tlc.lazy_tensor(tl.tensor(dense))
    options = cross_options(lazy.shape, rank=3, method="als", tol=0.0, n_iter_max=n_iter_max,
                            patience=patience)
    cache = EvaluationCache(lazy)
    info = CrossInfo(method="als")
    _, cores = run_sweeps(cache, random_indices(lazy.shape, [1, 3, 3, 1], rng),
                          sweeper_class(rng), Validation(cache, 200, rng), info, options)
    error = np.linalg.norm(tl.to_numpy(tl.tt_to_tensor(cores)) - dense) / np.linalg.norm(dense)
    return info, error


# Mutant (driver): the rollback's ``indices, cores = previous`` dropped: a diverged last
# sweep, with no eligible sweep to return instead, was returned (the docstring: "is
# discarded"), its error 1e3 times the one reported.
def test_a_diverged_last_sweep_is_not_returned_when_no_sweep_is_eligible():
    info, error = _run_als(_blowing_up_at(2), n_iter_max=2)
    assert info.rolled_back == [2]
    assert info.best_sweep == 1
    assert error < 2 * info.val_error


# Mutant (_validation.outside_stacklevel): the level not counted up the frames, so that a
# warning named the library's line instead of the caller's ("the caller's line, at any
# call depth").
def test_a_clipped_rank_warning_names_the_callers_line():
    with pytest.warns(UserWarning, match="exceeds what the unfoldings") as record:
        tlc.tt_cross(_cosine, rank=[1, 9, 9, 1], shape=(3, 3, 3), random_state=0)
    assert record[0].filename == __file__


# Mutant (_validation.check_tall_matrix): dates and durations (kinds "M", "m") taken for
# numbers; maxvol then failed inside NumPy, naming no argument.
@pytest.mark.parametrize("dtype", ["datetime64[s]", "timedelta64[s]"])
def test_maxvol_refuses_a_matrix_of_dates_by_name(dtype):
    matrix = np.arange(12).reshape(4, 3).astype(dtype)
    with pytest.raises(TypeError, match="matrix has dtype .*maxvol needs numbers"):
        tlc.maxvol(matrix)


# Mutant (driver._ranks_changed): the last ranks compared with the first sweep's, not the
# sweep before: a rank-adaptive cross whose ranks grew once never stalled again.
def test_ranks_that_grew_once_and_then_held_are_unchanged():
    from tensorly_cross.cross.driver import _ranks_changed

    assert _ranks_changed(object(), [(1, 2, 1), (1, 3, 1)])
    assert not _ranks_changed(object(), [(1, 2, 1), (1, 3, 1), (1, 3, 1)])


# Mutant (driver._settled): ``any`` set of a family unchanged for ``all``: without held-out
# entries a sweep that still moved one bond's sets counted as a fixed point (stalled).
def test_a_sweep_that_moved_one_bonds_sets_is_not_settled():
    from tensorly_cross.cross.driver import _settled

    left = [np.array([[0], [1]]), np.array([[0, 1], [1, 2]])]
    right = [np.array([[2], [3]]), np.array([[1, 1], [2, 0]])]
    moved = [right[0], np.array([[1, 1], [2, 1]])]  # the second bond's set moved
    assert _settled([(left, right), (left, right)])
    assert not _settled([(left, right), (left, moved)])


# Mutant (lazy.base.check_values): bools kept as bools ("biu" -> "iu"), though "bool and
# integer values become float64: the cores interpolate between them".
def test_bool_values_become_float64():
    tensor = tlc.FunctionTensor(lambda indices: indices.sum(axis=1) % 2 == 0, (3, 4))
    values = tensor.evaluate(np.array([[0, 0], [0, 1]]))
    assert values.dtype == np.float64
    np.testing.assert_array_equal(values, [1.0, 0.0])


# Mutant (_validation): the "float4" prefix dropped from what LAPACK lacks: a 4-bit float
# matrix reached maxvol's LU and failed there, naming no argument.
def test_maxvol_refuses_a_four_bit_float_matrix_by_name():
    ml_dtypes = pytest.importorskip("ml_dtypes")
    matrix = np.eye(4, 3).astype(ml_dtypes.float4_e2m1fn)
    with pytest.raises(TypeError, match="matrix has dtype float4_e2m1fn, which LAPACK"):
        tlc.maxvol(matrix)


# Mutant (lazy.base.check_values): a backend tensor of bools kept as bools ("biu" -> "iu"
# for backend tensors), where integers became float64.
def test_a_torch_bool_tensor_of_values_becomes_float64():
    torch = pytest.importorskip("torch")
    import tensorly as tl

    with tl.backend_context("pytorch"):
        tensor = tlc.FunctionTensor(
            lambda indices: torch.as_tensor(indices.sum(axis=1) % 2 == 0), (3, 4))
        values = tensor.evaluate(np.array([[0, 0], [0, 1]]))
        assert values.dtype == torch.float64
        assert values.tolist() == [1.0, 0.0]


# Mutant (lazy.base.check_indices): the quick range test ``max >= bound`` as ``>``: an
# index equal to its mode's size, the others in range, reached the tensor unchecked.
def test_an_index_equal_to_its_modes_size_is_out_of_range():
    tensor = tlc.FunctionTensor(lambda indices: indices.sum(axis=1).astype(float), (4, 5))
    with pytest.raises(ValueError, match=r"multi-index \(1, 5\) is out of range"):
        tensor.evaluate([[0, 0], [1, 5]])


# Mutant (lazy.base.check_shape): ``size >= 2**63 - 1`` refused, though the message allows
# "at most 2**63 - 1 per mode" (the largest int64 index is 2**63 - 2).
def test_a_mode_of_the_largest_int64_size_is_taken():
    tensor = tlc.FunctionTensor(lambda indices: indices[:, 0] * 0.0, (2**63 - 1, 2))
    assert tensor.shape == (2**63 - 1, 2)
    with pytest.raises(ValueError, match="exceeds the int64 range"):
        tlc.FunctionTensor(lambda indices: indices[:, 0] * 0.0, (2**63, 2))


# Mutant (lazy.base.check_indices): ``indices.size and`` dropped from the dtype test: an
# empty batch (NumPy's default float64, np.empty((0, d))) was refused as not integers.
def test_an_empty_float_batch_reads_nothing():
    tensor = tlc.FunctionTensor(lambda indices: indices.sum(axis=1).astype(float), (4, 5))
    assert tensor.evaluate(np.empty((0, 2))).shape == (0,)


# Mutant (lazy.base._is_size): the test of a bool dtype dropped: PyTorch's bool scalar,
# whose __index__ gives 1, was taken for a mode of size 1.
def test_a_torch_bool_mode_size_is_refused_by_name():
    torch = pytest.importorskip("torch")
    with pytest.raises(TypeError, match=r"shape\[0\] must be an int, got tensor\(True\)"):
        tlc.FunctionTensor(lambda indices: indices[:, 0] * 0.0, (torch.tensor(True), 3))


# Mutant (driver): the last sweep's state returned instead of the best one's: a last sweep
# worse than an earlier one (but not diverged) was returned, with the best one's error
# reported as ``val_error``.
def test_the_best_sweep_is_returned_when_a_later_one_is_worse():
    info, error = _run_als(_blowing_up_at(4, factor=1.5), n_iter_max=4)
    assert not info.rolled_back and info.val_errors[3] > info.val_errors[2]
    assert info.best_sweep < 4
    assert error < 1.5 * info.val_error


# Mutants (lazy.base.check_values): half precision kept (the float16 branch dropped), and
# ml_dtypes' bfloat16 (NumPy kind "V") not widened (its branch dropped, or only an exact
# "float16" taken for low precision): LAPACK has neither; both become float32, exactly.
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_low_precision_values_become_float32(dtype):
    if dtype == "bfloat16":
        dtype = pytest.importorskip("ml_dtypes").bfloat16
    tensor = tlc.FunctionTensor(
        lambda indices: (indices.sum(axis=1) / 4).astype(dtype), (3, 4))
    values = tensor.evaluate(np.array([[0, 1], [2, 3]]))
    assert values.dtype == np.float32
    np.testing.assert_array_equal(values, [0.25, 1.25])


# Mutant (lazy.base.check_values): a masked array of values read as its raw data.
def test_masked_values_are_refused_by_name():
    tensor = tlc.FunctionTensor(
        lambda indices: np.ma.masked_less(indices.sum(axis=1).astype(float), 1), (3, 4))
    with pytest.raises(TypeError, match="FunctionTensor .*returned a masked array"):
        tensor.evaluate(np.array([[0, 0], [2, 3]]))


# Mutant (lazy.base.LazyTensor.stored): any ``lazy`` attribute taken for a view's tensor: a
# subclass's own flag of that name failed ("'bool' object has no attribute 'stored'").
def test_a_subclass_flag_named_lazy_is_not_a_view():
    class Flagged(tlc.LazyTensor):
        lazy = True

        def _evaluate(self, indices):
            return indices.sum(axis=1).astype(float)

    assert Flagged((3, 4)).stored is False


# Mutant (lazy.base.check_indices): a masked array of indices read with its masked rows.
def test_masked_indices_are_refused_by_name():
    tensor = tlc.FunctionTensor(lambda indices: indices.sum(axis=1).astype(float), (4, 5))
    indices = np.ma.masked_array([[0, 0], [3, 9]], mask=[[False, False], [True, True]])
    with pytest.raises(TypeError, match="indices is a masked array"):
        tensor.evaluate(indices)


# Mutant (lazy.base.check_values): PyTorch's complex32 kept (its branch dropped), which no
# LAPACK takes: it becomes complex64.
@pytest.mark.filterwarnings("ignore:ComplexHalf support is experimental")
def test_torch_complex_half_values_are_widened():
    torch = pytest.importorskip("torch")
    import tensorly as tl

    with tl.backend_context("pytorch"):
        tensor = tlc.FunctionTensor(
            lambda indices: torch.as_tensor(indices.sum(axis=1) / 4, dtype=torch.complex32),
            (3, 4))
        values = tensor.evaluate(np.array([[0, 1], [2, 3]]))
        assert values.dtype == torch.complex64
        assert values.tolist() == [0.25 + 0j, 1.25 + 0j]


# Mutant (lazy.base.evaluate_checked): the ``_keep_finite`` hook not called: a function's
# batch that met one NaN lost its finite entries, which a checkpoint keeps.
def test_a_batch_with_a_nan_carries_its_finite_entries():
    from tensorly_cross.lazy.chunk_result import FINISHED

    def function(indices):
        values = indices.sum(axis=1).astype(float)
        values[indices[:, 0] == 2] = np.nan
        return values

    tensor = tlc.FunctionTensor(function, (4, 5))
    with pytest.raises(tlc.NonFiniteValueError) as error:
        tensor.evaluate(np.array([[0, 1], [2, 2], [3, 4]]))
    finished = getattr(error.value, FINISHED)
    np.testing.assert_array_equal(finished.indices, [[0, 1], [3, 4]])
    np.testing.assert_array_equal(np.concatenate(finished.values), [1.0, 7.0])
    assert finished.source is tensor


# Mutant (driver): ``ranks_changed`` taken from a diverged sweep too (``not diverged and``
# dropped): a sweep that was undone, its ranks with it, reset the count of stalled sweeps,
# and ``patience`` did not stop the run.
def test_a_diverged_sweeps_ranks_do_not_reset_the_stall_count():
    class RanksOnDivergence(_blowing_up_at(3)):
        """Its third sweep diverges, and reports ranks that progressed."""

        def ranks_progressed(self, ranks):
            return self.calls == 3

    info, _ = _run_als(RanksOnDivergence, n_iter_max=6, patience=2)
    assert info.rolled_back == [3]
    assert info.stop_reason == "stalled" and info.n_sweeps == 3


# Mutant (stopping.heldout_bound): ``n_heldout < 0``: no held-out entries divided by zero,
# which gave 1.0 only through NumPy's "divide by zero" RuntimeWarning, shown to the user.
def test_the_bound_without_held_out_entries_is_one_without_a_warning():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert tlc.CrossInfo(method="tci").heldout_bound == 1.0


# Mutant (stopping._scaled_parts): the ``isfinite`` test dropped: a TT that overflowed to
# inf on a held-out entry had an error of nan (read as "no held-out entries"), not inf.
def test_an_overflowed_tt_has_an_infinite_held_out_error():
    from tensorly_cross.cross.stopping import _scaled_parts, relative_norm

    assert relative_norm(np.array([np.inf, 1.0]), _scaled_parts(np.array([1.0, 2.0]))) \
        == np.inf


# Mutant (stopping.Validation.confirm): ``and not self.guarded`` dropped from a clear pass:
# on stored data an exact-looking pass was no longer confirmed on fresh entries ("on
# stored data a clear pass is confirmed too").
def test_a_clear_pass_on_stored_data_is_confirmed_on_fresh_entries():
    rng = np.random.default_rng(0)
    array = sum(np.einsum("i,j,k->ijk", *(rng.standard_normal(n) for n in (30, 31, 32)))
                for _ in range(2))
    _, info = tlc.tt_cross(tlc.lazy_tensor(array), method="tci", tol=1e-6, random_state=0,
                           return_info=True)
    assert info.stop_reason == "tol" and info.val_error < 1e-10
    assert info.n_fresh > 0


# Mutant (stopping._on_levels): ``>`` for ``>=``: held-out values of which exactly
# LEVEL_SHARE sit on one level were not taken as levelled.
def test_values_with_exactly_the_level_share_on_one_value_are_levelled():
    from tensorly_cross.cross.stopping import LEVEL_SHARE, LEVELS_MIN, _on_levels

    values = np.arange(1.0, LEVELS_MIN * 2 + 1)
    values[: int(LEVEL_SHARE * values.shape[0])] = 0.0
    assert _on_levels(values)
    values[0] = -1.0
    assert not _on_levels(values)
    # Mutant: ``<=`` for ``< LEVELS_MIN``: exactly LEVELS_MIN values were never levelled.
    values = np.arange(1.0, LEVELS_MIN + 1)
    values[: int(np.ceil(LEVEL_SHARE * LEVELS_MIN))] = 0.0
    assert _on_levels(values)


# Mutant (stopping.Validation.n_independent): every entry read counted after a
# confirmation, where its fresh entries alone are one test of the pass.
def test_after_a_confirmation_only_the_fresh_entries_are_independent():
    from tensorly_cross.cross.stopping import Validation
    from tensorly_cross.lazy.cache import EvaluationCache

    shape = (6, 7, 8)
    tt = tlc.tt_cross(_cosine, rank=2, shape=shape, random_state=0)
    cache = EvaluationCache(tlc.FunctionTensor(_cosine, shape))
    validation = Validation(cache, 300, np.random.default_rng(1), tol=1e-300)
    validation.confirm(tt.factors)
    assert 0 < validation.n_fresh < validation.n_read
    assert validation.n_independent == validation.n_fresh
