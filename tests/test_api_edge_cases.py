"""Tests of the public API: argument checks, options, callbacks and the results of tt_cross and
cross_interpolate."""

import pickle
import warnings

import numpy as np
import pytest
import tensorly as tl

import tensorly_cross as tlc
from tensorly_cross import ArrayTensor, CrossIndices, EvaluationBudgetExceeded, FunctionTensor
from tensorly_cross.errors import KeyCollisionError, UnseenStructureWarning
from tensorly_cross.lazy.cache import _KEY_SENTINEL, EvaluationCache, SortedKeys, _distinct

from ._helpers_shared import (
    SMOOTH_SHAPE,
    VALIDATION_SHAPE,
    Calls,
    _anatomical_callable,
    _dense,
    _function_tensor,
    _inverse_sum,
    _masked_cores,
    _nibabel_image,
    _ones,
    _ones_cores,
    _random_tt,
    _unseen_warnings,
    _validation,
    ones_with,
    smooth,
)
from .conftest import host
from .test_reliability import HiddenSpike


def _block_dict():
    indices = tlc.select_indices(smooth, shape=SMOOTH_SHAPE, rank=2, method="block", random_state=0)
    return indices.to_dict()


@pytest.mark.parametrize("block", [2.7, 8.5, True, "8"])
def test_from_dict_refuses_a_block_size_that_is_not_an_integer(block):
    # block=2.7 was read as 2 (and True as 1): the sets then described a tensor whose last
    # mode has 2 channels, and cross_interpolate refused the real one with a shape message.
    with pytest.raises(ValueError, match="block"):
        CrossIndices.from_dict(dict(_block_dict(), block=block))


def test_from_dict_keeps_an_integral_float_block_size():
    # JSON writers that emit 8.0 for 8 are still read (as shape entries are).
    assert CrossIndices.from_dict(dict(_block_dict(), block=8.0)).block == 8


# -- lazy/cache.py -------------------------------------------------------------------------


# Mutant: ``>=`` in the budget check: a batch that brings the count exactly to max_evals
# was refused (the docstring: refused when it would push the count *above* max_evals).
def test_a_batch_that_reaches_max_evals_exactly_is_evaluated(backend):
    cache = EvaluationCache(FunctionTensor(lambda idx: tl.tensor(idx.sum(axis=1) * 1.0),
                                           (4, 4)), max_evals=3)
    values = cache.evaluate([[0, 1], [1, 1], [0, 1], [2, 3]])
    np.testing.assert_array_equal(host(values), [1.0, 2.0, 1.0, 5.0])
    assert cache.counters.unique == 3
    np.testing.assert_array_equal(host(cache.evaluate([[2, 3]])), [5.0])  # cached: free
    with pytest.raises(EvaluationBudgetExceeded):
        cache.evaluate([[3, 3]])


# -- cross/indices.py --------------------------------------------------------------------


def _als_dict(rank=3):
    rng = np.random.default_rng(0)
    dense = tl.tt_to_tensor([rng.standard_normal(shape) for shape in
                             ((1, 8, rank), (rank, 9, rank), (rank, 10, 1))])
    return dense, tlc.select_indices(dense, rank=rank, method="als", random_state=0).to_dict()


# Mutants: a set of two equal multi-indices let through (only sets of more than two rows
# checked); an index equal to its mode's size let through (``>`` for ``>=``); a left set
# whose size is not its bond's rank let through; an index of 2.5 read as 2; two empty
# multi-indices in left[0] (or right[-1]) let through.
@pytest.mark.parametrize(("edit", "message"), [
    (lambda d: d["right"].__setitem__(0, [d["right"][0][0]] * 2), "holds a multi-index twice"),
    (lambda d: d["left"].__setitem__(2, [d["left"][2][0]] * 2), "holds a multi-index twice"),
    (lambda d: d["left"][1].__setitem__(0, [8]), "out of range"),
    (lambda d: d["right"][1].__setitem__(0, [10]), "out of range"),
    (lambda d: d["left"].__setitem__(1, d["left"][1][:1]), "must match"),
    (lambda d: d["left"][1].__setitem__(0, [2.5]), "integers"),
    (lambda d: d["left"].__setitem__(0, [[], []]), "must each hold one"),
    (lambda d: d["right"].__setitem__(2, [[], []]), "must each hold one"),
])
def test_edited_small_index_sets_are_refused(edit, message):
    dense, data = _als_dict(rank=2)
    edit(data)
    with pytest.raises(ValueError, match=message):
        tlc.CrossIndices.from_dict(data)  # refused by the sets' own check, before any read
    with pytest.raises(ValueError, match=message):
        tlc.cross_interpolate(dense, data)


def _cache(shape, **options):
    calls = Calls()
    return EvaluationCache(FunctionTensor(calls, shape), **options), calls


# Mutant: checks of hashed keys built only when keys are exact (``checks is None and
# self._scheme.exact``): ``evaluate_keys`` without checks served a shared key silently.
def test_a_shared_hashed_key_read_by_key_without_checks_is_detected():
    cache, _ = _cache((16,) * 20)
    cache._scheme.weights = np.zeros(20, dtype=np.int64)  # every key collides
    first, second = np.zeros((1, 20), dtype=np.int64), np.ones((1, 20), dtype=np.int64)
    cache.evaluate_keys(cache.pack(first), first.__getitem__)
    with pytest.raises(KeyCollisionError, match=r"multi-index \(1, 1, 1"):
        cache.evaluate_keys(cache.pack(second), second.__getitem__)


# -- lazy/array.py, lazy/quantics.py -----------------------------------------------------


# Mutant: np.matrix kept as it is (its conversion dropped): two index arrays give a (1, m)
# matrix, not m values.
@pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")
def test_array_tensor_of_a_matrix_reads_one_value_per_multi_index():
    lazy = ArrayTensor(np.matrix(np.arange(6.0).reshape(2, 3)))
    np.testing.assert_array_equal(np.asarray(lazy.evaluate([[0, 1], [1, 2], [1, 0]])),
                                  [1.0, 5.0, 3.0])


# -- _reconstruct.py --------------------------------------------------------------------


# Mutant: an index equal to its axis' size taken (it wrapped around to index 0).
@pytest.mark.parametrize("axis", [0, 1, 2])
def test_an_index_one_past_the_end_of_an_axis_is_refused(axis):
    from tensorly_cross._reconstruct import volume_values

    cores = _random_tt((4, 5, 3))
    selection = [slice(None)] * 3
    selection[axis] = cores[axis].shape[1]
    with pytest.raises(IndexError, match=f"outside axis {axis}"):
        volume_values(cores, {}, tuple(selection))
    selection[axis] = -cores[axis].shape[1]  # the first index, counted from the end
    np.testing.assert_allclose(volume_values(cores, {}, tuple(selection)),
                               np.take(_dense(cores), 0, axis=axis), rtol=1e-12)


# -- _validation.py ---------------------------------------------------------------------


# Mutant: a RandomState turned into a Generator of one fixed seed (neither its seed nor
# its state mattered).
def test_a_random_state_seeds_the_generator_from_its_own_state():
    from tensorly_cross._validation import check_random_state

    def draws(state):
        return check_random_state(state).random(4)

    first, again = np.random.RandomState(1), np.random.RandomState(1)
    np.testing.assert_array_equal(draws(first), draws(again))  # deterministic
    assert not np.array_equal(draws(np.random.RandomState(1)), draws(np.random.RandomState(2)))
    assert not np.array_equal(draws(first), draws(np.random.RandomState(1)))  # consumed


# -- _validation.py ---------------------------------------------------------------------


# Mutant: infinities accepted as real numbers (only NaN refused).
@pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan")])
def test_check_float_refuses_non_finite_values(value):
    from tensorly_cross._validation import check_float

    with pytest.raises(ValueError, match="must be finite"):
        check_float(value, "x")


# -- options.py -------------------------------------------------------------------------


# Mutant: a budget equal to the held-out entries accepted (nothing left for the cross).
def test_max_evals_equal_to_val_size_is_refused():
    from tensorly_cross.options import cross_options

    with pytest.raises(ValueError, match="max_evals=500 must exceed val_size=500"):
        cross_options((20, 20, 20), max_evals=500, val_size=500, method="tci")
    assert cross_options((20, 20, 20), max_evals=501, val_size=500, method="tci").max_evals == 501


# -- datasets.py ------------------------------------------------------------------------


# Mutant: indices scaled by the shape, not by ``shape - 1``: the phantom is one function on
# [0, 1]^3 sampled at any resolution, so voxel i of 9 is voxel 2 i of 17.
def test_the_blob_phantom_is_one_function_at_every_resolution():
    from tensorly_cross.datasets import blob_phantom

    coarse, fine = blob_phantom((9, 9, 9), seed=3), blob_phantom((17, 17, 17), seed=3)
    indices = np.stack(np.meshgrid(*[np.arange(9)] * 3, indexing="ij"), -1).reshape(-1, 3)
    np.testing.assert_allclose(coarse(indices), fine(2 * indices), rtol=1e-6)


# Mutant: the callback handed the run's own cores: one that scaled them in place changed
# the TT returned (and its reported error no longer described it).
def test_a_callback_editing_its_cores_in_place_leaves_the_run_alone():
    import tensorly as tl

    from tensorly_cross import tt_cross

    rng = np.random.default_rng(6)
    dense = np.einsum("ir,jr,kr->ijk", *(rng.standard_normal((n, 2)) for n in (7, 6, 5)))

    def vandal(tt, info):
        for core in tt.factors:
            core *= 3.0

    with tl.backend_context("numpy"):
        plain = tt_cross(dense, rank=2, method="als", n_iter_max=4, random_state=0)
        edited = tt_cross(dense, rank=2, method="als", n_iter_max=4, random_state=0,
                          callback=vandal)
    np.testing.assert_array_equal(tl.tt_to_tensor(edited), tl.tt_to_tensor(plain))


# --- handover ------------------------------------------------------------------------------


# --- subnormal -----------------------------------------------------------------------------


@pytest.mark.parametrize(("dtype", "scale"), [("complex128", 1e-315), ("float32", 2e-45),
                                              ("float64", 5e-324)])
def test_subnormal_values_are_warned_of_with_a_factor_that_makes_them_normal(dtype, scale):
    import re
    import warnings

    values = np.full((4, 5, 3), scale, dtype=dtype)
    if np.dtype(dtype).kind == "c":
        values = values * (1 + 1j)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tlc.tt_cross(tlc.lazy_tensor(values), rank=1, random_state=0)
    warned = [w for w in caught if issubclass(w.category, tlc.SubnormalValuesWarning)]
    assert len(warned) == 1 and warned[0].filename == __file__  # the caller's line
    factor = float(re.search(r"e\.g\. ([0-9.e+]+)\)", str(warned[0].message)).group(1))
    floats = np.finfo(dtype)
    # The suggested factor is a number of this dtype that makes the values normal.
    assert factor < float(floats.max)
    largest = float(np.abs(values).max())
    assert float(floats.smallest_normal) <= factor * largest < float(floats.max)


# --- block (its scaling of the pivot rows) -------------------------------------------------


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("scale", [1e-300, 1e-310, 1e300])
@pytest.mark.parametrize("settings", [dict(oversample=2.0), dict(method="block")])
def test_block_and_oversampled_crosses_recover_a_tt_at_any_scale(scale, settings):
    rng = np.random.default_rng(0)
    dense = tl.tt_to_tensor([rng.standard_normal(s) for s in [(1, 6, 3), (3, 7, 3), (3, 5, 1)]])
    if settings.get("method") == "block":
        dense = dense[..., None] * np.array([1.0, 2.0])
    tt = tlc.tt_cross(tlc.lazy_tensor(dense * scale), rank=3, random_state=0, tol=0.0,
                      n_iter_max=4, **settings)
    # Compared at unit scale: the TT's entries, divided back.
    approx = np.asarray(tl.tt_to_tensor([tl.to_numpy(core) for core in tt])) / scale
    assert np.linalg.norm(approx - dense) <= 1e-8 * np.linalg.norm(dense)


def test_block_sets_are_left_nested_after_a_cross():
    # The assembly interpolates on the left sets, nested since the first left-to-right half
    # sweep: the sets a block cross returns say so (and keep saying so through JSON).
    rng = np.random.default_rng(0)
    dense = tl.tt_to_tensor([rng.standard_normal(s) for s in [(1, 6, 3), (3, 7, 3), (3, 5, 1)]])
    dense = dense[..., None] * np.array([1.0, 2.0])
    indices = tlc.select_indices(tlc.lazy_tensor(dense), rank=3, method="block", tol=0.0,
                                 n_iter_max=2, random_state=0)
    assert indices.nested == "left"
    assert tlc.CrossIndices.from_json(indices.to_json()).nested == "left"


def test_block_sets_of_several_channels_are_refused_for_a_tensor_without_them():
    rng = np.random.default_rng(0)
    dense = tl.tt_to_tensor([rng.standard_normal(s) for s in [(1, 6, 3), (3, 7, 3), (3, 5, 1)]])
    channels = dense[..., None] * np.array([1.0, 2.0])
    indices = tlc.select_indices(tlc.lazy_tensor(channels), rank=3, method="block", tol=0.0,
                                 n_iter_max=2, random_state=0)
    # Sets over the positions of a 2-channel tensor are not a one-channel view's.
    with pytest.raises(ValueError, match="indices are for shape"):
        tlc.cross_interpolate(tlc.lazy_tensor(dense), indices)


def test_a_one_entry_tensor_read_whole_is_not_warned_of():
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tt, info = tlc.tt_cross(lambda indices: np.full(len(indices), 3.0), shape=(1, 1, 1),
                                tol=1e-6, return_info=True)
    assert not [w for w in caught if w.category is tlc.ToleranceNotMetWarning]
    assert np.isclose(float(np.asarray(tl.tt_to_tensor(list(tt))).ravel()[0]), 3.0)


@pytest.mark.parametrize("max_slices", [None, 2])
def test_oversampled_right_sets_hold_oversample_times_their_bond_with_max_slices(max_slices):
    rng = np.random.default_rng(0)
    dense = tl.tt_to_tensor([rng.standard_normal(s)
                             for s in [(1, 6, 3), (3, 7, 3), (3, 8, 3), (3, 5, 1)]])
    indices = tlc.select_indices(tlc.lazy_tensor(dense), rank=3, method="als", oversample=2.0,
                                 tol=0.0, max_slices=max_slices, n_iter_max=3, random_state=0)
    # Six probes (2 x 3) wherever the positions to the right allow as many.
    assert [block.shape[0] for block in indices.right[:-1]] == [6, 6, 5]


def test_after_a_handover_the_val_size_hint_names_the_sample_the_returned_run_drew():
    # The least-squares cross draws max(val_size, 4000) held-out entries: its "not met with
    # confidence" warning named TCI's val_size (1000), and raising val_size to 2000, as that
    # suggested, would not have changed the sample.
    data, function = _anatomical_callable()
    settings = dict(shape=data.shape, tol=0.1, max_rank=16, random_state=0, return_info=True)
    with pytest.warns(tlc.ToleranceNotMetWarning):  # TCI stalls at 0.18
        _, tci_info = tlc.tt_cross(function, method="tci", **settings)
    with pytest.warns(tlc.ToleranceNotMetWarning, match="not met with confidence") as caught:
        _, info = tlc.tt_cross(function, n_iter_max=tci_info.n_sweeps + 1, **settings)
    assert info.method == "tci+lsq"
    message = str(caught[0].message)
    assert "val_size (now 4000" in message and "now 1000" not in message


def _rank_two(indices):
    """cos of the sum of the indices: TT rank 2 everywhere."""
    return np.cos(np.asarray(indices).sum(axis=1) / 5.0)


class _EvaluateOnly(tlc.LazyTensor):
    """The interface as the user guide words it: a shape and ``evaluate(indices)``."""

    def evaluate(self, indices):
        return _rank_two(indices)


class _SetsItsShape(tlc.LazyTensor):
    """A subclass that sets ``shape`` itself, as the class docstring allows."""

    def __init__(self, shape):
        self.shape = shape

    def _evaluate(self, indices):
        return _rank_two(indices)


class _NoShape(tlc.LazyTensor):
    def __init__(self):
        pass

    def _evaluate(self, indices):
        return _rank_two(indices)


def test_a_subclass_that_overrides_evaluate_is_told_to_implement_evaluate_underscore():
    # Before: NotImplementedError() with no message, raised from the cache's first read.
    with pytest.raises(NotImplementedError, match=r"_EvaluateOnly.*_evaluate\(indices\)"):
        tlc.tt_cross(_EvaluateOnly((6, 7, 8)), tol=1e-8, random_state=0)


@pytest.mark.parametrize("method", ["als", "tci", "lsq"])
def test_a_shape_set_as_an_array_is_read_as_a_tuple_of_ints(method):
    # Before: the ALS cross's start failed with NumPy's "truth value of an empty array is
    # ambiguous"; the shape stayed an array for every reader.
    lazy = _SetsItsShape(np.array([6, 7, 8]))
    assert lazy.shape == (6, 7, 8) and all(type(size) is int for size in lazy.shape)
    rank = None if method == "tci" else 2
    tt = tlc.tt_cross(lazy, rank=rank, method=method, tol=1e-10, random_state=0)
    indices = np.indices((6, 7, 8)).reshape(3, -1).T
    np.testing.assert_allclose(tlc.tt_entries(tt, indices), _rank_two(indices), atol=1e-9)


@pytest.mark.parametrize(("shape", "error", "message"), [
    (None, TypeError, "shape must be a sequence of ints"),
    ("abc", TypeError, r"shape\[0\] must be an int"),
    ((6, 0, 8), ValueError, r"shape\[1\]=0 must be >= 1"),
])
def test_a_shape_set_by_a_subclass_is_checked_where_it_is_set(shape, error, message):
    # Before: accepted, then "'NoneType' object is not iterable" (or a str compared with
    # an int) deep in the cross's shape checks.
    with pytest.raises(error, match=message):
        _SetsItsShape(shape)


def test_a_subclass_that_never_sets_its_shape_is_told_how_to():
    with pytest.raises(AttributeError, match=r"_NoShape has no shape.*super\(\).__init__"):
        tlc.tt_cross(_NoShape(), random_state=0)


@pytest.mark.parametrize("grids", [None, 3.0])
def test_on_grid_names_its_grids_argument(grids):
    # Before: "'NoneType' object is not iterable" from the loop over the grids.
    with pytest.raises(TypeError, match="grids must be a sequence of 1-D arrays"):
        tlc.FunctionTensor.on_grid(lambda points: points.sum(axis=1), grids)


@pytest.mark.parametrize(("call", "name"), [
    (lambda array: tlc.tt_cross(array), "tensor"),
    (lambda array: tlc.select_indices(array), "tensor"),
    (lambda array: tlc.lazy_tensor(array), "obj"),
    (lambda array: tlc.QuanticsTensor(array), "lazy"),
])
def test_an_array_without_entries_is_refused_by_the_argument_s_name(call, name):
    # Before: "shape must have at least one mode, got ()" and "shape[1]=0 must be >= 1",
    # naming tt_cross's shape argument (for callables), which the caller had not given.
    with pytest.raises(ValueError, match=f"^{name} is 0-d"):
        call(np.array(3.0))
    with pytest.raises(ValueError, match=rf"^{name} has shape \(3, 0, 2\), with an empty mode"):
        call(np.zeros((3, 0, 2)))


@pytest.mark.parametrize("fit", [lambda path: tlc.tensor_train_cross(path, rank=2),
                                 lambda path: tlc.TensorTrainCross(rank=2).fit(path)])
def test_the_drop_in_given_a_path_points_to_open_volume(tmp_path, fit):
    # Before: "convert it with tl.tensor(...)", of a file name.
    path = tmp_path / "scan.npy"
    np.save(path, np.ones((4, 5, 6)))
    for given in (str(path), path):
        with pytest.raises(TypeError, match=r"input_tensor must be a tensor.*open_volume"):
            fit(given)
    tt = tlc.tensor_train_cross(tlc.open_volume(path), rank=1, random_state=0)
    np.testing.assert_allclose(tt.to_tensor(), np.ones((4, 5, 6)))


_ERRORS = [
    tlc.NonFiniteValueError("nan at (1, 2)", (1, 2), float("inf")),
    tlc.EvaluationBudgetExceeded("max_evals=3", needed=5),
    tlc.RankDeficiencyWarning("rank 1 < 2", 1),
    tlc.ToleranceNotMetWarning("0.5 > tol", 0.5, 0.1),
]


@pytest.mark.parametrize("error", _ERRORS, ids=lambda error: type(error).__name__)
def test_errors_with_attributes_survive_pickling(error):
    # Before: unpickling called __init__ with the message alone (a TypeError).
    error.add_note("a note")
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error) and str(copy) == str(error)
    assert vars(copy) == vars(error) and copy.__notes__ == ["a note"]


@pytest.mark.parametrize("kwargs", [{"rank": 2, "method": "als"}, {"rank": 2},
                                    {"tol": 1e-8, "method": "tci"}])
def test_cross_indices_compare_equal_to_their_json_round_trip(kwargs):
    # Before: == raised NumPy's "truth value of an empty array is ambiguous".
    tensor = np.add.outer(np.add.outer(np.arange(6.0), np.arange(7.0)), np.arange(5.0))
    indices = tlc.select_indices(tensor, random_state=0, **kwargs)
    assert indices == indices.copy()
    assert indices == tlc.CrossIndices.from_json(indices.to_json())
    other = tlc.select_indices(tensor, rank=1, method="als", random_state=0)
    assert indices != other and indices != indices.to_dict()


# Mutants (indices._as_size, indices._integral): a fractional mode size read as its integer
# part (7.9 as 7), and a float index of 2**63 or more let through to the int64 cast (which
# wraps it): both from a dict, both refused by name.
def test_a_dict_with_a_fractional_size_or_an_index_beyond_int64_is_refused():
    data = tlc.select_indices(np.add.outer(np.arange(8.0), np.arange(5.0)), rank=1,
                              method="als", random_state=0).to_dict()
    with pytest.raises(ValueError, match="shape entries must be integers >= 1, got 7.9"):
        tlc.CrossIndices.from_dict(dict(data, shape=[7.9, 5]))
    left = list(data["left"])
    left[1] = [[2.0**63]]
    with pytest.raises(ValueError, match=r"left\[1\] must be a list of multi-indices"):
        tlc.CrossIndices.from_dict(dict(data, left=left))


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


# Mutant (lazy.base.check_values): a masked array of values read as its raw data.
def test_masked_values_are_refused_by_name():
    tensor = tlc.FunctionTensor(
        lambda indices: np.ma.masked_less(indices.sum(axis=1).astype(float), 1), (3, 4))
    with pytest.raises(TypeError, match="FunctionTensor .*returned a masked array"):
        tensor.evaluate(np.array([[0, 0], [2, 3]]))


# Mutant (lazy.base.check_indices): a masked array of indices read with its masked rows.
def test_masked_indices_are_refused_by_name():
    tensor = tlc.FunctionTensor(lambda indices: indices.sum(axis=1).astype(float), (4, 5))
    indices = np.ma.masked_array([[0, 0], [3, 9]], mask=[[False, False], [True, True]])
    with pytest.raises(TypeError, match="indices is a masked array"):
        tensor.evaluate(indices)


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


# --- the procedural phantom's arguments --------------------------------------------------


@pytest.mark.parametrize("kwargs, error, name", [
    (dict(n_blobs=-1), ValueError, "n_blobs"),  # "negative dimensions are not allowed"
    (dict(n_blobs=2.5), TypeError, "n_blobs"),  # "'float' object cannot be interpreted..."
    (dict(n_blobs=None), TypeError, "n_blobs"),
    (dict(seed=-1), ValueError, "seed"),  # "expected non-negative integer"
    (dict(seed=1.5), TypeError, "seed"),  # "SeedSequence expects int or sequence of ints"
])
def test_blob_phantom_names_a_bad_count_or_seed(kwargs, error, name):
    from tensorly_cross.datasets import blob_phantom

    with pytest.raises(error, match=f"^{name} must be"):
        blob_phantom((4, 4, 4), **kwargs)


# --- the scikit-learn style class: fit(X, y=None) ------------------------------------------


def test_the_estimator_takes_scikit_learn_s_ignored_y():
    # scikit-learn calls fit(X, y) and fit_transform(X, y) with y=None for unsupervised
    # estimators (Pipeline, its estimator checks): both failed with "fit() takes 2
    # positional arguments but 3 were given".
    tensor = np.add.outer(np.arange(4.0), np.arange(5.0))[:, :, None] * np.ones(3)
    estimator = tlc.TensorTrainCross(rank=[1, 2, 2, 1], random_state=0)
    assert estimator.fit(tensor, None) is estimator
    factors = estimator.fit_transform(tensor, None)
    assert factors is estimator.decomposition_
    np.testing.assert_allclose(estimator.to_tensor(), tensor, atol=1e-10)
    pipeline = pytest.importorskip("sklearn.pipeline")
    fitted = pipeline.make_pipeline(tlc.TensorTrainCross(rank=2, random_state=0)).fit(tensor)
    np.testing.assert_allclose(fitted[-1].to_tensor(), tensor, atol=1e-10)


@pytest.mark.parametrize("call", [
    lambda image: tlc.open_volume(image),
    lambda image: tlc.streaming_tt_svd(image, tol=0.1),
], ids=["open_volume", "streaming_tt_svd"])
def test_a_nibabel_image_is_refused_with_its_remedy(tmp_path, call):
    # open_volume and streaming_tt_svd said only that an image is not a path or an array.
    image, path = _nibabel_image(tmp_path)
    with pytest.raises(TypeError, match=r"nibabel Nifti1Image.*open_volume\(path\)") as error:
        call(image)
    assert "scan.nii.gz" in str(error.value)  # the file it came from


class _ParameterModel:
    """A callable whose attributes are looked up in a dict: an unknown one is a KeyError."""

    def __init__(self):
        self.__dict__["params"] = {"scale": 1.0}

    def __getattr__(self, name):
        return self.params[name]

    def __call__(self, indices):
        return 1.0 / (1.0 + self.scale * np.asarray(indices, dtype=float).sum(1))


@pytest.mark.parametrize("chunk_size", [None, 50])
def test_function_whose_getattr_raises_is_still_evaluated(chunk_size):
    # Naming the function for messages looked up attributes it lacks on every read: a
    # KeyError from its __getattr__ failed a run that worked before.
    tensor = tlc.FunctionTensor(_ParameterModel(), (6,) * 4, chunk_size=chunk_size)
    tt = tlc.tt_cross(tensor, rank=6, random_state=0)
    indices = np.array([[0, 1, 2, 3], [5, 5, 5, 5]])
    np.testing.assert_allclose(tlc.tt_entries(tt, indices), 1.0 / (1.0 + indices.sum(1)),
                               rtol=1e-6)


class _NaNModel(_ParameterModel):
    def __call__(self, indices):
        return np.full(np.asarray(indices).shape[0], np.nan)


def test_function_whose_getattr_raises_is_named_by_its_class():
    tensor = tlc.FunctionTensor(_NaNModel(), (3, 3))
    with pytest.raises(ValueError, match="FunctionTensor of _NaNModel returned"):
        tensor.evaluate(np.array([[0, 0]]))


def _volume():
    return np.arange(1.0, 1.0 + 6 * 5 * 4).reshape(6, 5, 4)


def test_a_vds_prefix_set_in_os_environ_after_start_is_not_where_sources_are_found(
        tmp_path, monkeypatch):
    # Likewise HDF5_VDS_PREFIX: HDF5 did not look there and read the region as the fill
    # value, while the check found the source there.
    h5py = pytest.importorskip("h5py")
    (tmp_path / "sources").mkdir()
    with h5py.File(tmp_path / "sources" / "src.h5", "w") as handle:
        handle["d"] = _volume()
    layout = h5py.VirtualLayout(shape=_volume().shape, dtype="f8")
    layout[...] = h5py.VirtualSource("src.h5", "d", shape=_volume().shape)
    with h5py.File(tmp_path / "vds.h5", "w") as handle:
        handle.create_virtual_dataset("v", layout, fillvalue=-1.0)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HDF5_VDS_PREFIX", str(tmp_path / "sources"))
    with pytest.raises(ValueError, match=r"src\.h5.*missing"):
        tlc.open_volume(str(tmp_path / "vds.h5"))


def test_crossinfo_to_dict_holds_the_error_its_repr_shows():
    # to_dict ("for JSON or a table") had heldout_bound but not val_error, the error of
    # the TT returned, which the repr shows beside it: a table of runs lacked its result.
    import math

    import tensorly_cross as tlc

    _, info = tlc.tt_cross(_function_tensor(), tol=1e-8, random_state=0, return_info=True)
    data = info.to_dict()
    assert data["val_error"] == info.val_error and data["heldout_bound"] == info.heldout_bound
    assert math.isnan(tlc.CrossInfo(method="tci").to_dict()["val_error"])  # no sweep yet


def test_crossindices_dict_and_its_refusals_are_as_documented():
    # to_dict's docstring listed five keys of six ("ranks" left out), and from_dict's Raises
    # only ValueError, while a non-dict raises TypeError.
    import numpy as np

    import tensorly_cross as tlc

    indices = tlc.select_indices(np.ones((4, 5, 6)), rank=2, random_state=0)
    assert set(indices.to_dict()) == {"shape", "left", "right", "nested", "block", "ranks"}
    for key in indices.to_dict():
        assert f"``{key}``" in tlc.CrossIndices.to_dict.__doc__
    with pytest.raises(TypeError, match="must be a dict"):
        tlc.CrossIndices.from_dict([indices.to_dict()])
    assert "TypeError" in tlc.CrossIndices.from_dict.__doc__


def test_the_non_finite_index_named_is_the_first_as_its_docstring_says():
    # NonFiniteValueError.index was documented as "the first multi-index (in request
    # order)"; through an EvaluationCache (every cross's) it is the first in key order.
    import numpy as np

    import tensorly_cross as tlc

    f = tlc.FunctionTensor(lambda idx: np.where(idx[:, 0] % 3 == 0, np.nan, 1.0), (4, 4))
    request = np.array([[1, 1], [3, 0], [0, 3]])
    with pytest.raises(tlc.NonFiniteValueError) as direct:
        f.evaluate(request)
    assert direct.value.index == (3, 0)  # the request's first
    with pytest.raises(tlc.NonFiniteValueError) as cached:
        tlc.EvaluationCache(f).evaluate(request)
    assert cached.value.index in {(3, 0), (0, 3)}  # an offending entry of the request
    assert "not necessarily its first" in tlc.NonFiniteValueError.__doc__


BIG = 2.0**700  # beyond 2**512: the cross reads such data scaled to 1


def test_an_unseen_structure_warning_names_the_moduli_of_the_data_as_they_are():
    # Data at 2**700 is crossed scaled near 1; the warning named the scaled moduli
    # ("an entry of modulus 100, 201x the largest held-out one (0.5)").
    spike = HiddenSpike(200.0)
    with pytest.warns(UnseenStructureWarning) as record:
        tlc.tt_cross(lambda indices: spike(indices) * BIG, shape=(30, 30, 30), random_state=0)
    (message,) = [str(item.message) for item in record
                  if item.category is UnseenStructureWarning]
    assert f"an entry of modulus {201 * BIG:.3g}, 201x" in message
    assert f"largest held-out one ({BIG:.3g})" in message


def test_the_refusal_of_an_entry_beyond_2_1022_names_it_by_its_full_multi_index():
    # TCI crosses the tensor without its interior size-one modes: the refusal named the
    # entry (4, 0, 5, 0) as (4, 5, 0).
    data = np.ones((6, 1, 7, 1))
    data[4, 0, 5, 0] = 2.0**1023
    with pytest.raises(ValueError, match=r"the entry at \(4, 0, 5, 0\) has modulus 8\.99e\+307"):
        tlc.tt_cross(data, method="tci", random_state=0)


@pytest.mark.filterwarnings("ignore::tensorly_cross.UnseenStructureWarning")
def test_an_int_seed_repeats_a_run_and_a_generator_is_drawn_from_as_documented():
    f = _inverse_sum(d=4, n=8)

    def run(seed):
        return tlc.tt_cross(f, tol=1e-8, random_state=seed, return_info=True)

    (first, info_first), (again, info_again) = run(3), run(3)
    assert info_first.n_evals == info_again.n_evals
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    # An int n runs as np.random.default_rng(n) ...
    fresh, _ = run(np.random.default_rng(3))
    assert all(np.array_equal(a, b) for a, b in zip(first, fresh, strict=True))
    # ... and a Generator (or RandomState) object is drawn from: it moves on, call by call.
    generator = np.random.default_rng(3)
    run(generator)
    assert generator.bit_generator.state != np.random.default_rng(3).bit_generator.state
    state = np.random.RandomState(3)
    run(state)
    assert state.get_state()[2] != np.random.RandomState(3).get_state()[2] or \
        not np.array_equal(state.get_state()[1], np.random.RandomState(3).get_state()[1])
    # documented so where the parameter is
    doc = " ".join(tlc.tt_cross.__doc__.split())
    assert "drawn from" in doc and "default_rng" in doc


def _spikier(indices):
    """As :func:`_spiky`, the bright plane i = 0 alone."""
    return np.where(indices[:, 0] < 1, 40.0, 1.0)


def _corner_cores(value):
    """Rank-2 TT: 1 everywhere plus ``value - 1`` at (39, 39, 39)."""
    n = VALIDATION_SHAPE[0]
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


def test_a_key_equal_to_the_sentinel_in_the_small_level_is_found():
    # The sentinel (int64's largest) closes each level; a hashed key may equal it. The
    # main level's search stops on the sentinel and read it as a hit of slot -1, and the
    # small level, searched for the main's misses only, was not searched for that key:
    # found before the lookup searched the small level for the misses alone, a miss after
    # it (evaluated again, stored twice).
    keys = SortedKeys()
    keys.insert(np.array([3, 7, 11], dtype=np.int64), np.array([0, 1, 2]))
    keys.insert(np.array([5, _KEY_SENTINEL], dtype=np.int64), np.array([3, 4]))
    assert len(keys.levels) == 2
    found = keys.lookup(np.array([_KEY_SENTINEL, 5, 7, 8], dtype=np.int64))
    np.testing.assert_array_equal(found, [4, 3, 1, -1])


# Mutant: the small level merged into the main one with its sentinel (``small[0]``, not
# ``small[0][:-1]``): every lookup still answered, but the cache's keys() then listed the
# sentinel as a key, one more than it holds.
def test_merging_the_small_level_keeps_exactly_the_keys_inserted():
    keys = SortedKeys()
    main = np.arange(0, 40, 2, dtype=np.int64)
    keys.insert(main, np.arange(main.size))
    small = np.arange(1, 2 * 5000, 2, dtype=np.int64)  # above 4096: merged at once
    keys.insert(small, np.arange(main.size, main.size + small.size))
    assert len(keys.levels) == 1
    held = keys.all_keys()
    np.testing.assert_array_equal(held, np.sort(np.concatenate([main, small])))
    assert len(keys) == held.size
    assert keys.levels[0][0][-1] == _KEY_SENTINEL
    assert (keys.levels[0][0] == _KEY_SENTINEL).sum() == 1
    found = keys.lookup(np.array([0, 1, 38, 9999, 10001], dtype=np.int64))
    np.testing.assert_array_equal(found, [0, 20, 19, 20 + 4999, -1])


# Mutant: the "already strictly increasing" shortcut of ``_distinct`` taking a sorted batch
# with repeats (``>=``) as distinct: a key read twice in one batch was stored twice.
def test_distinct_of_sorted_keys_with_repeats_merges_them():
    keys = np.array([1, 1, 2, 5, 5, 5], dtype=np.int64)
    distinct, first, inverse = _distinct(keys)
    np.testing.assert_array_equal(distinct, [1, 2, 5])
    np.testing.assert_array_equal(first, [0, 2, 3])
    np.testing.assert_array_equal(distinct[inverse], keys)
    distinct, first, inverse = _distinct(np.array([1, 2, 5], dtype=np.int64))
    assert inverse is None and first.tolist() == [0, 1, 2]


WIDENING_SHAPE = (6, 6, 6)


def _smooth(indices):
    return 1.0 + np.cos(indices @ np.array([0.3, 0.5, 0.7]))


class _RealThenComplex:
    """A function whose first batch is real and whose later ones are complex (the cache's
    dtype widens at the second), and which raises a RuntimeError of its own from call
    ``fail_at`` on (a model that crashed): ``raised`` counts those raises."""

    def __init__(self, fail_at=None):
        self.calls, self.raised, self.fail_at = 0, 0, fail_at

    def __call__(self, indices):
        self.calls += 1
        if self.fail_at is not None and self.calls >= self.fail_at:
            self.raised += 1
            raise RuntimeError("the model crashed")
        values = _smooth(indices)
        return values if self.calls == 1 else values + 0j


def test_a_function_error_after_a_widening_is_raised_without_a_second_search():
    # The search ran again from the start for any plain RuntimeError once the dtype had
    # widened: the function's own error too, and the batch it failed on was asked for a
    # second time (the failed batch is not cached), against "nothing is evaluated twice".
    pytest.importorskip("torch")
    function = _RealThenComplex(fail_at=3)
    with tl.backend_context("pytorch"), pytest.raises(RuntimeError, match="model crashed"):
        tlc.tt_cross(function, shape=WIDENING_SHAPE, method="tci", random_state=0)
    assert function.raised == 1


@pytest.mark.parametrize("method", ["tci", "lsq"])
def test_a_callback_error_after_a_widening_is_raised_without_a_second_search(method):
    # The callback's own RuntimeError, after a sweep that widened the dtype, ran the search
    # again, and the callback was called again for the same sweep (and raised again).
    pytest.importorskip("torch")
    seen = []

    def callback(tt, info):
        seen.append(info.n_sweeps)
        raise RuntimeError("stop here")

    with tl.backend_context("pytorch"), pytest.raises(RuntimeError, match="stop here"):
        tlc.tt_cross(_RealThenComplex(), shape=WIDENING_SHAPE, method=method, random_state=0,
                     callback=callback)
    assert seen == [1]


@pytest.mark.parametrize("entry", ["tt_entries", "qtt_to_tt"])
def test_masked_cores_are_refused_by_name(entry):
    # tt_entries failed in NumPy's masked matmul ("cannot reshape array of size 2 into
    # shape (1,1)"); a cross refuses a masked tensor, whose masked entries it would read.
    cores = _masked_cores()
    with pytest.raises(TypeError, match=rf"{entry}: cores\[1\] is a masked array"):
        if entry == "tt_entries":
            tlc.tt_entries(cores, [[0, 1, 0]])
        else:
            tlc.qtt_to_tt(cores, tlc.QuanticsTensor(np.zeros((4, 2))).layout)
