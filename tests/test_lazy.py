"""Lazy tensors: dispatch, value checks, and the evaluation cache."""

import numpy as np
import pytest
import tensorly as tl
from hypothesis import given
from hypothesis import strategies as st

from tensorly_cross import (
    ArrayTensor,
    EvaluationBudgetExceeded,
    EvaluationCache,
    FunctionTensor,
    NonFiniteValueError,
    lazy_tensor,
)

from .conftest import host
from .strategies import seeds


@st.composite
def shapes_and_batches(draw, max_modes=6, max_size=9):
    shape = tuple(draw(st.lists(st.integers(1, max_size), min_size=1, max_size=max_modes)))
    seed = draw(seeds)
    rng = np.random.default_rng(seed)
    m = draw(st.integers(0, 60))
    batch = np.stack([rng.integers(n, size=m) for n in shape], axis=1)
    return shape, batch


@given(case=shapes_and_batches())
def test_array_tensor_reads_the_requested_entries(backend, case):
    shape, batch = case
    dense = np.random.default_rng(1).standard_normal(shape)
    values = lazy_tensor(tl.tensor(dense)).evaluate(batch)
    np.testing.assert_array_equal(host(values), dense[tuple(batch.T)])


@given(case=shapes_and_batches(), repeats=st.integers(1, 3))
def test_cache_returns_the_same_values_and_computes_each_entry_once(backend, case, repeats):
    shape, batch = case
    weights = np.arange(1.0, len(shape) + 1)
    computed = []

    def function(indices):
        computed.append(len(indices))
        return np.sin(indices @ weights)

    cache = EvaluationCache(FunctionTensor(function, shape))
    for _ in range(repeats):
        values = cache.evaluate(batch)
        np.testing.assert_allclose(host(values), np.sin(batch @ weights))
    distinct = np.unique(batch, axis=0).shape[0]
    assert sum(computed) == distinct == cache.counters.unique
    assert cache.counters.calls == len(computed) == (1 if distinct else 0)
    assert cache.counters.requested == repeats * batch.shape[0]
    assert cache.counters.cache_hits == cache.counters.requested - cache.counters.unique


def test_cache_keys_beyond_two_to_the_63_entries(backend):
    shape = (2**40, 2**40, 3)
    tensor = FunctionTensor(lambda idx: (idx[:, 0] % 7 + idx[:, 1] % 5 + idx[:, 2]) * 1.0, shape)
    cache = EvaluationCache(tensor)
    batch = np.array([[2**39, 5, 1], [2**39, 5, 2], [2**39, 5, 1], [0, 2**39 + 1, 0]])
    first = host(cache.evaluate(batch))
    second = host(cache.evaluate(batch[::-1]))
    np.testing.assert_array_equal(first[::-1], second)
    assert cache.counters.unique == 3


def test_cache_budget_is_never_exceeded(backend):
    cache = EvaluationCache(FunctionTensor(lambda idx: idx.sum(axis=1) * 1.0, (10, 10)),
                            max_evals=15)
    cache.evaluate(np.array([[i, 0] for i in range(10)]))
    with pytest.raises(EvaluationBudgetExceeded, match="max_evals=15"):
        cache.evaluate(np.array([[i, 1] for i in range(10)]))
    assert cache.counters.unique == 10
    cache.evaluate(np.array([[i, 0] for i in range(10)]))  # cached entries are free
    # The refused batch counts nowhere: requested = computed + served from the cache.
    assert cache.counters.requested == 20
    assert cache.counters.requested == cache.counters.unique + cache.counters.cache_hits


def test_cache_is_emptied_when_full(backend):
    cache = EvaluationCache(FunctionTensor(lambda idx: idx[:, 0] * 1.0, (100, 1)), max_entries=10)
    cache.evaluate(np.arange(8).reshape(-1, 1) * np.array([[1, 0]]))
    cache.evaluate(np.arange(8, 16).reshape(-1, 1) * np.array([[1, 0]]))
    assert len(cache) == 8
    values = cache.evaluate(np.array([[3, 0], [9, 0]]))
    np.testing.assert_array_equal(host(values), [3.0, 9.0])


def test_a_batch_of_hits_and_misses_that_fills_the_cache_keeps_its_values(backend):
    cache = EvaluationCache(FunctionTensor(lambda idx: idx[:, 0] * 1.0, (100, 1)), max_entries=10)
    cache.evaluate(np.arange(8).reshape(-1, 1) * np.array([[1, 0]]))
    batch = np.array([[7, 0], [20, 0], [2, 0], [21, 0], [20, 0], [5, 0], [22, 0], [23, 0]])
    values = cache.evaluate(batch)
    np.testing.assert_array_equal(host(values), batch[:, 0] * 1.0)
    assert len(cache) == 4  # the full cache was emptied; it holds the new entries
    assert cache.counters.unique == 8 + 4
    np.testing.assert_array_equal(host(cache.evaluate(batch[[1, 3]])), [20.0, 21.0])
    assert cache.counters.unique == 12


def test_on_grid_passes_coordinates(backend):
    grids = [np.linspace(0, 1, 5), np.array([10.0, 20.0])]
    tensor = FunctionTensor.on_grid(lambda x: x[:, 0] + x[:, 1], grids)
    values = tensor.evaluate(np.array([[4, 1], [0, 0]]))
    np.testing.assert_allclose(host(values), [21.0, 10.0])
    assert tensor.shape == (5, 2)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_value_names_the_multi_index(backend, bad):
    def function(indices):
        values = indices.sum(axis=1).astype(float)
        values[(indices == [2, 3]).all(axis=1)] = bad
        return values

    tensor = FunctionTensor(function, (4, 5))
    with pytest.raises(NonFiniteValueError, match=r"multi-index \(2, 3\)") as error:
        tensor.evaluate(np.array([[0, 0], [2, 3], [1, 1]]))
    assert error.value.index == (2, 3)


def test_wrong_value_shape_is_reported(backend):
    tensor = FunctionTensor(lambda idx: np.zeros((len(idx), 2)), (3, 3))
    with pytest.raises(ValueError, match=r"shape \(2, 2\).*expected shape \(2,\)"):
        tensor.evaluate(np.array([[0, 0], [1, 1]]))


@pytest.mark.parametrize(
    "batch, message",
    [
        (np.array([[0, 5]]), r"index \(0, 5\) is out of range"),
        (np.array([[0, -1]]), "out of range"),
        (np.array([0, 1]), r"indices must have shape \(m, 2\)"),
        (np.array([[0.5, 1.0]]), "indices must be integers"),
    ],
)
def test_bad_indices_are_rejected(backend, batch, message):
    with pytest.raises(ValueError, match=message):
        ArrayTensor(np.zeros((3, 4))).evaluate(batch)


def test_dispatch_errors_name_the_argument():
    with pytest.raises(TypeError, match="shape is required"):
        lazy_tensor(lambda idx: idx.sum(axis=1))
    with pytest.raises(TypeError, match="obj must be"):
        lazy_tensor(42)
    with pytest.raises(ValueError, match=r"shape\[1\]=0 must be >= 1"):
        FunctionTensor(lambda idx: idx, (3, 0))


@pytest.mark.parametrize("executor", [None, "threads"])
def test_a_function_of_d_scalars_gets_a_note_on_the_calling_convention(executor):
    # FunctionTensor(lambda i, j, k: ...) failed with "<lambda>() missing 2 required
    # positional arguments" and nothing said how the function is called.
    from concurrent.futures import ThreadPoolExecutor

    pool = ThreadPoolExecutor(2) if executor else None
    try:
        f = FunctionTensor(lambda i, j, k: i + j + k, (4, 4, 4), executor=pool)
        with pytest.raises(TypeError, match="missing 2 required") as caught:
            f.evaluate([[0, 1, 2]])
        assert any("once per batch with one (m, d) array" in note
                   for note in caught.value.__notes__)
        wrapped = FunctionTensor(lambda rows: np.array([sum(row) for row in rows]),
                                     (4, 4, 4), executor=pool)
        np.testing.assert_array_equal(wrapped.evaluate([[0, 1, 2], [3, 3, 3]]), [3.0, 9.0])
    finally:
        if pool is not None:
            pool.shutdown()


def test_an_exception_of_a_serial_function_names_the_batch_it_was_computing():
    # Executors' chunks were noted with their multi-indices; a serial call was not, and
    # nothing said where in the tensor the function failed.
    def fails_on_row_3(indices):
        if (indices[:, 0] == 3).any():
            raise ZeroDivisionError("boom")
        return np.ones(len(indices))

    f = FunctionTensor(fails_on_row_3, (5, 6))
    f.evaluate([[0, 0], [1, 2]])
    with pytest.raises(ZeroDivisionError, match="boom") as caught:
        f.evaluate([[2, 0], [3, 1], [4, 5]])
    assert caught.value.__notes__ == [
        "raised by the function on a batch of 3 multi-indices from (2, 0) to (4, 5)"]


def test_views_of_walks_down_every_view_to_the_source():
    from tensorly_cross import QuanticsTensor
    from tensorly_cross.lazy.base import views_of
    from tensorly_cross.lazy.transpose import TransposedTensor

    source = ArrayTensor(np.zeros((4, 8)))
    transposed = TransposedTensor(source, (1, 0))
    quantics = QuanticsTensor(transposed)
    assert list(views_of(quantics)) == [quantics, transposed, source]
    assert list(views_of(source)) == [source]
    assert list(views_of(None)) == []
