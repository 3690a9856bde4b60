"""Audit s27 of the public API as a new user meets it: a LazyTensor subclass written the
way the user guide describes the interface (a ``shape`` and ``evaluate``) failed with a
bare NotImplementedError from inside the cache; one that set its ``shape`` to an array
crashed in the ALS cross's start, and one that set None or nothing failed deep in the
cross; one with an attribute of its own named ``lazy`` failed every cross; ``load_tt`` and
``FunctionTensor.on_grid`` answered a wrong argument with Python's message, and
``QuanticsTensor`` an array ``order`` with NumPy's, naming neither it nor what is allowed;
an array without entries (0-d, an empty mode) was refused naming a ``shape`` argument the
caller had not given, and the TensorLy drop-in told to convert a path with ``tl.tensor``;
``maxvol`` made twice ``max_iter`` swaps on tall matrices; four errors and warnings with
attributes could not be unpickled, so one raised in a process pool's worker broke the pool;
``==`` of two equal QuanticsLayouts or CrossIndices raised NumPy's ambiguous-truth error;
an EvaluationCache could be neither pickled nor deep-copied (its lock). Each test failed
before its fix."""

import copy
import multiprocessing
import pickle
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pytest

import tensorly_cross as tlc


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


@pytest.mark.parametrize("path", [None, 5, 2.5])
def test_load_tt_names_its_path_argument(path):
    # Before: os.fsdecode's "expected str, bytes or os.PathLike object, not NoneType".
    with pytest.raises(TypeError, match="path must be a str, bytes or os.PathLike"):
        tlc.load_tt(path)


@pytest.mark.parametrize("grids", [None, 3.0])
def test_on_grid_names_its_grids_argument(grids):
    # Before: "'NoneType' object is not iterable" from the loop over the grids.
    with pytest.raises(TypeError, match="grids must be a sequence of 1-D arrays"):
        tlc.FunctionTensor.on_grid(lambda points: points.sum(axis=1), grids)


class _HoldsAnAttributeNamedLazy(tlc.LazyTensor):
    """A subclass whose own attribute is called ``lazy`` (the views' name for their
    tensor): here the array it reads."""

    def __init__(self, array):
        super().__init__(array.shape)
        self.lazy = array

    def _evaluate(self, indices):
        return self.lazy[tuple(indices.T)]


@pytest.mark.parametrize("rank", [None, 2])
def test_a_subclass_attribute_named_lazy_is_not_taken_for_a_view(rank):
    # Before: every cross failed with "'numpy.ndarray' object has no attribute 'stored'".
    array = _rank_two(np.indices((6, 7, 8)).reshape(3, -1).T).reshape(6, 7, 8)
    lazy = _HoldsAnAttributeNamedLazy(array)
    assert lazy.stored is False
    tt = tlc.tt_cross(lazy, rank=rank, tol=1e-10, random_state=0)
    np.testing.assert_allclose(tt.to_tensor(), array, atol=1e-9)


@pytest.mark.parametrize("seed", [0, 3, 4])
@pytest.mark.parametrize("max_iter", [1, 2])
def test_maxvol_makes_at_most_max_iter_swaps_on_a_tall_matrix(seed, max_iter):
    # Before: above about 2**17 / r rows the LU pivots come from a tournament, whose
    # finalists were polished with up to max_iter swaps and the whole matrix then with
    # max_iter more: 2 rows changed for max_iter=1, where the docstring bounds the swaps.
    matrix = np.random.default_rng(seed).standard_normal((50000, 6))
    lu_rows, _ = tlc.maxvol(matrix, max_iter=0)
    rows, coefficients = tlc.maxvol(matrix, tol=1.0001, max_iter=max_iter)
    assert len(set(rows.tolist()) - set(lu_rows.tolist())) <= max_iter
    np.testing.assert_allclose(coefficients @ matrix[rows], matrix, atol=1e-10)


@pytest.mark.parametrize("order", [np.array(["grouped", "interleaved"]), ["grouped"], 0])
def test_a_quantics_order_that_is_not_a_string_is_refused_by_name(order):
    # Before: an array failed with NumPy's "truth value of an array ... is ambiguous".
    with pytest.raises(ValueError, match="order must be one of 'grouped', 'interleaved'"):
        tlc.QuanticsTensor(np.ones((4, 6)), order=order)


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


def _reads_past_its_budget(indices):
    """A function whose entries come from a lazy tensor of its own, read past a budget."""
    cache = tlc.EvaluationCache(tlc.lazy_tensor(np.ones((4, 4))), max_evals=1)
    return cache.evaluate([[0, 0], [1, 1]])


def test_a_worker_s_budget_error_reaches_the_caller_of_a_process_pool():
    # Before: the worker's EvaluationBudgetExceeded could not be unpickled, and the pool
    # broke ("BrokenProcessPool: a process ... terminated abruptly"), the error lost.
    context = multiprocessing.get_context("spawn")  # no fork of a threaded test process
    with ProcessPoolExecutor(1, mp_context=context) as executor:
        lazy = tlc.FunctionTensor(_reads_past_its_budget, (4, 4), executor=executor)
        with pytest.raises(tlc.EvaluationBudgetExceeded, match="max_evals=1") as caught:
            lazy.evaluate([[0, 0], [1, 1]])
    assert caught.value.needed == 2



def test_equal_quantics_layouts_compare_equal():
    # Before: == raised NumPy's "truth value of an array ... is ambiguous".
    layout = tlc.QuanticsLayout.create((8, 12))
    assert layout == tlc.QuanticsLayout.create((8, 12))
    assert layout == tlc.QuanticsTensor(np.ones((8, 12))).layout
    assert layout != tlc.QuanticsLayout.create((8, 12), order="interleaved")
    assert layout != tlc.QuanticsLayout.create((12, 8))
    assert layout != tlc.QuanticsLayout.with_channels((8, 12), 1)
    assert layout != (8, 12)


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



@pytest.mark.parametrize("copy_of", [lambda cache: pickle.loads(pickle.dumps(cache)),
                                     copy.deepcopy])
def test_an_evaluation_cache_copies_with_its_entries(copy_of):
    # Before: TypeError "cannot pickle '_thread.RLock' object".
    cache = tlc.EvaluationCache(tlc.FunctionTensor(_rank_two, (6, 7, 8)))
    cache.evaluate([[1, 2, 3], [4, 5, 6]])
    copied = copy_of(cache)
    np.testing.assert_array_equal(copied.evaluate([[4, 5, 6], [0, 0, 1]]),
                                  _rank_two([[4, 5, 6], [0, 0, 1]]))
    assert copied.counters.unique == 3 and copied.counters.cache_hits == 1
    assert cache.counters.unique == 2 and len(cache) == 2
