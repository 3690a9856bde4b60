"""Tests of the evaluation cache and the chunk cache: what is cached, served and counted."""

import copy
import pickle
import threading

import numpy as np
import pytest
import tensorly as tl
from hypothesis import given, settings
from hypothesis import strategies as st

import tensorly_cross as tlc
from tensorly_cross import EvaluationCache, FunctionTensor
from tensorly_cross._backend import to_host
from tensorly_cross.lazy import ArrayTensor
from tensorly_cross.lazy.chunk_cache import ChunkCache

from ._helpers_shared import (
    LOW_RANK_SHAPE,
    VIEWS,
    Calls,
    FailingFunction,
    _backend,
    _function_for,
    _inverse_sum,
    _low_rank,
    _numpy_of,
    _rank_one,
    _rank_one_cross,
    _run_child,
    ones_with,
)


class _ReusedBuffer:
    """A function that writes each batch's values into one buffer it keeps, and returns a
    view of it (a common way to avoid allocations)."""

    def __init__(self):
        self.buffer = np.empty(64)

    def __call__(self, indices):
        out = self.buffer[: indices.shape[0]]
        out[:] = indices.sum(axis=1)
        return out


def test_a_function_that_reuses_its_output_buffer_does_not_change_cached_values():
    # The cache kept the first batch's array itself: the function's next batch, written
    # into the same buffer, overwrote entries already cached.
    cache = EvaluationCache(FunctionTensor(_ReusedBuffer(), (10, 10)))
    cache.evaluate([[1, 1], [2, 2]])
    cache.evaluate([[5, 5]])
    np.testing.assert_array_equal(np.asarray(cache.evaluate([[1, 1], [2, 2]])), [2.0, 4.0])


def test_values_returned_by_the_cache_can_be_modified_without_changing_the_cache():
    # The first batch's values were returned and kept as the cache's own buffer.
    cache = EvaluationCache(ArrayTensor(np.arange(100.0).reshape(10, 10)))
    values = cache.evaluate([[0, 1], [0, 2]])
    values *= 0
    np.testing.assert_array_equal(np.asarray(cache.evaluate([[0, 1], [0, 2]])), [1.0, 2.0])


@settings(max_examples=60, deadline=None)
@given(max_entries=st.integers(1, 12), seed=st.integers(0, 2**16),
       hashed=st.booleans())
def test_cached_values_are_the_functions_values_whatever_max_entries(max_entries, seed,
                                                                      hashed):
    shape = (16,) * 16 if hashed else (3, 4, 2)  # 2**64 entries: hashed keys
    weights = np.arange(1, len(shape) + 1)
    cache = EvaluationCache(FunctionTensor(lambda idx: idx @ weights + 0.5, shape),
                            max_entries=max_entries)
    rng = np.random.default_rng(seed)
    for _ in range(8):
        m = int(rng.integers(0, 10))  # few distinct entries: repeats and hits are common
        indices = np.stack([rng.integers(0, min(n, 3), m) for n in shape], axis=1)
        np.testing.assert_array_equal(np.asarray(cache.evaluate(indices)),
                                      indices @ weights + 0.5)
        counters = cache.counters
        assert counters.requested == counters.unique + counters.cache_hits


def test_the_exact_error_asks_the_cache_for_every_entry_once():
    # Each check asked the cache for the whole tensor again: the least-squares trim, which
    # checks every rounding candidate, inflated info.n_requested (18,928 -> 33,392 on a
    # 12^3 run, the same evaluations).
    from tensorly_cross.cross.stopping import Validation
    from tensorly_cross.lazy.cache import EvaluationCache

    dense = np.random.default_rng(0).standard_normal((6, 5, 4))
    cache = EvaluationCache(tlc.lazy_tensor(dense))
    cache.evaluate(np.indices(dense.shape).reshape(3, -1).T)
    validation = Validation(cache, 50, np.random.default_rng(0))
    cores = tl.tt_tensor.TTTensor(tl.decomposition.tensor_train(dense, [1, 6, 4, 1])).factors
    before = cache.counters.requested
    first = validation.exact_error(cores)
    asked = cache.counters.requested - before
    assert asked == dense.size and first < 1e-10
    assert validation.exact_error(cores) == first
    assert cache.counters.requested - before == asked


# --- 1a. NIfTI truncated during a cross ---------------------------------------------------

NIFTI_TRUNCATED = """
    import os, sys
    import numpy as np, nibabel
    import tensorly_cross as tlc
    from tensorly_cross.lazy.sources import ChunkReadError
    path = sys.argv[1]
    nibabel.save(nibabel.Nifti1Image(np.full((16, 16, 16), 2.0, np.float32), np.eye(4)), path)
    cached, uncached = tlc.open_volume(path), tlc.open_volume(path, cache_bytes=0)
    cached.evaluate([[0, 0, 0]]), uncached.evaluate([[0, 0, 0]])
    os.truncate(path, 400)  # rewritten or cut short meanwhile
    print("cached", float(cached.evaluate([[15, 15, 15]])[0]), flush=True)
    try:
        uncached.evaluate([[15, 15, 15]])
    except ChunkReadError as error:
        print("uncached ChunkReadError:", error)
"""


def test_a_nifti_truncated_after_a_read_raises_or_reads_its_cached_chunk_never_crashes(
        tmp_path):
    pytest.importorskip("nibabel")
    path = tmp_path / "scan.nii"
    child = _run_child(NIFTI_TRUNCATED, path)
    # Before: the cached chunk was a view into nibabel's memory map; SIGBUS (-7).
    assert child.returncode == 0, child.stderr[-2000:]
    assert "cached 2.0" in child.stdout
    assert "uncached ChunkReadError:" in child.stdout and str(path) in child.stdout


def _cache(shape, **options):
    calls = Calls()
    return EvaluationCache(FunctionTensor(calls, shape), **options), calls


# -- lazy/cache.py -----------------------------------------------------------------------


# Mutant: the cache emptied when a batch brings it to ``max_entries`` exactly
# (``len + n_new >= max_entries``): it is emptied only when it would exceed it.
def test_a_cache_filled_exactly_to_max_entries_keeps_every_entry():
    cache, calls = _cache((4, 4), max_entries=4)
    cache.evaluate([[0, 0], [0, 1]])
    cache.evaluate([[1, 0], [1, 1]])
    assert len(cache) == 4
    values = cache.evaluate([[0, 0], [0, 1], [1, 0], [1, 1]])
    np.testing.assert_array_equal(values, [1.0, 11.0, 2.0, 12.0])
    assert calls.batches == [2, 2]
    assert cache.counters.cache_hits == 4


# Mutant: a third batch replaces the small level of sorted keys instead of merging into
# it (the second batch's keys lost): their entries were computed again.
def test_entries_of_every_earlier_batch_stay_cached():
    cache, calls = _cache((6, 6))
    batches = [[[k, 0], [k, 1], [k, 2]] for k in range(5)]
    for batch in batches:
        cache.evaluate(batch)
    assert len(cache) == 15
    values = cache.evaluate(np.concatenate(batches))
    np.testing.assert_array_equal(values, [1.0 + i + 10 * j for i in range(5) for j in range(3)])
    assert calls.batches == [3] * 5
    assert cache.counters.unique == 15


# -- lazy/chunk_cache.py, lazy/npy.py ----------------------------------------------------


def _block(value, n_bytes=8):
    return np.full(n_bytes // 8, float(value))


# Mutant: a hit not moved to the end (``move_to_end`` dropped): first in, first out
# instead of least recently used.
def test_chunk_cache_evicts_the_least_recently_used_chunk():
    cache = ChunkCache(16)
    cache.put("a", _block(1))
    cache.put("b", _block(2))
    assert cache.get("a")[0] == 1.0  # "a" is now the most recent
    cache.put("c", _block(3))
    assert "a" in cache and "c" in cache and "b" not in cache
    assert cache.n_bytes == 16


# Mutant: evicting while ``n_bytes >= max_bytes``: a cache filled exactly to its bound
# dropped a chunk it had room for.
def test_chunk_cache_filled_exactly_to_its_bound_keeps_every_chunk():
    cache = ChunkCache(24)
    for key in range(3):
        cache.put(key, _block(key))
    assert len(cache) == 3 and cache.n_bytes == 24
    assert all(cache.get(key)[0] == key for key in range(3))


# Mutant: a chunk put twice counted twice (the ``key in self._chunks`` check dropped):
# ``n_bytes`` outgrew the chunks held, and the cache evicted chunks it had room for.
def test_chunk_cache_counts_a_chunk_put_twice_once():
    cache = ChunkCache(24)
    cache.put("a", _block(1))
    cache.put("a", _block(1))
    cache.put("b", _block(2))
    assert cache.n_bytes == 16
    cache.put("c", _block(3))
    assert len(cache) == 3 and "a" in cache


# Mutant: a chunk larger than the whole cache inserted all the same (its size check
# dropped): it evicted every cached chunk, then itself.
def test_a_chunk_larger_than_the_cache_leaves_the_cached_chunks_alone():
    cache = ChunkCache(16)
    cache.put("a", _block(1))
    cache.put("big", _block(2, n_bytes=24))
    assert "a" in cache and "big" not in cache and cache.n_bytes == 8


# Mutant: ``keys()`` returning the levels' keys as they lie, not sorted.
def test_cache_keys_are_sorted_across_levels():
    cache, _ = _cache((4, 4))
    cache.evaluate([[3, 0], [3, 1]])
    cache.evaluate([[0, 2], [1, 1]])
    np.testing.assert_array_equal(cache.keys(), [2, 5, 12, 13])


def _rank_two(indices):
    """cos of the sum of the indices: TT rank 2 everywhere."""
    return np.cos(np.asarray(indices).sum(axis=1) / 5.0)


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


# --- a function whose values require grad in some batches only ------------------------


def test_a_batch_without_gradient_after_one_with_it_is_cached():
    """Under PyTorch the cache wrote later batches into its buffer in place; a buffer that
    held values requiring grad grew into ``tl.zeros(..., requires_grad=True)``, a leaf, and
    the write raised "a view of a leaf Variable that requires grad is being used in an
    in-place operation" (a function whose values depend on a parameter in some batches
    only: a background short-cut, a batch served from its own cache)."""
    torch = pytest.importorskip("torch")
    data = _rank_one()
    weight = torch.tensor(2.0, dtype=torch.float64, requires_grad=True)
    calls = []

    def function(indices):
        values = torch.tensor(data[tuple(np.asarray(indices).T)])
        calls.append(len(indices))
        return values * weight if len(calls) == 1 else values * 2.0

    with _backend("pytorch"):
        tt = _rank_one_cross(function, shape=data.shape)
        assert np.allclose(_numpy_of(tt.to_tensor().detach()), 2.0 * data)
    assert len(calls) > 1


def test_a_shallow_copy_of_a_cache_serves_its_batches_one_at_a_time_with_the_cache():
    # Before: copy.copy gave the copy a lock of its own (the one pickling makes) while it
    # shared the cache's keys, values and counters: batches on the cache and on its copy
    # from two threads ran, and were stored, at the same time.
    entered, release = threading.Event(), threading.Event()
    active, most = [0], [0]
    lock = threading.Lock()

    def slow_sum(indices):
        with lock:
            active[0] += 1
            most[0] = max(most[0], active[0])
        entered.set()
        release.wait(0.5)  # the first batch holds the cache until the copy's one waits
        with lock:
            active[0] -= 1
        return indices.sum(axis=1) * 1.0

    cache = tlc.EvaluationCache(tlc.FunctionTensor(slow_sum, (8, 8)))
    shallow = copy.copy(cache)
    first = threading.Thread(target=cache.evaluate, args=([[1, 2]],))
    first.start()
    entered.wait(5)
    second = threading.Thread(target=shallow.evaluate, args=([[3, 4]],))
    second.start()
    first.join(5)
    second.join(5)
    assert most[0] == 1


def test_a_worker_drops_its_least_recently_used_chunk_cache_first(monkeypatch):
    # Mutant: a cache used again is not moved to the end: the worker dropped the oldest
    # cache made (first in, first out), though its tensor was the one in use.
    from collections import OrderedDict

    from tensorly_cross.lazy import dask as lazy_dask

    monkeypatch.setattr(lazy_dask, "_WORKER_CACHES", OrderedDict())
    source = lazy_dask.DaskTensor(np.arange(16.0).reshape(4, 4)).source
    block = (slice(0, 4), slice(0, 4))

    def read(token):
        return lazy_dask._worker_gather(source, token, 0, block, np.array([[1, 2]]), 2**20)

    for token in ("a", "b", "c", "d"):
        read(token)
    assert read("a")[0] == 6.0  # "a" used again: the most recent
    read("e")  # one cache too many: the least recently used ("b") goes
    assert list(lazy_dask._WORKER_CACHES) == ["c", "d", "a", "e"]


@pytest.mark.parametrize("view_name", sorted(VIEWS))
def test_cache_counts_finished_chunks_through_a_view(view_name):
    # A batch in chunks that fails part way: the cache counts the chunks the function
    # finished (they were computed). Through a view they went uncounted: TransposedTensor
    # under max_time reported "after 220 evaluations" when the function had run 235.
    dense = _low_rank()
    function, tensor = _function_for(view_name, dense, fail_at=4)
    view = VIEWS[view_name](tensor)
    cache = EvaluationCache(view)
    rng = np.random.default_rng(1)
    flat = rng.choice(view.size, size=40, replace=False)
    indices = np.stack(np.unravel_index(flat, view.shape), axis=1)
    with pytest.raises(RuntimeError, match="lost a node"):
        cache.evaluate(indices)
    assert function.n_computed == 15
    assert cache.counters.unique == function.n_computed


def test_oversampled_als_cache_counts_finished_chunks():
    from tensorly_cross.cross.oversampled import OneChannel

    function = FailingFunction(_low_rank(), fail_at=4)
    cache = EvaluationCache(OneChannel(FunctionTensor(function, LOW_RANK_SHAPE, chunk_size=5)))
    indices = np.stack(np.unravel_index(np.arange(0, 400, 7), cache.shape), axis=1)
    with pytest.raises(RuntimeError, match="lost a node"):
        cache.evaluate(indices)
    assert cache.counters.unique == function.n_computed == 15


def _counting_function(weight, seen):
    torch = pytest.importorskip("torch")

    def function(indices):
        seen.append(np.asarray(indices).copy())
        x = torch.as_tensor(np.asarray(indices), dtype=torch.float64)
        return torch.sin(weight * x.sum(1) / 10) + 1

    return function


def _weighted_cache():
    """A cache over a function of a parameter ``weight``, recording every batch it sees."""
    torch = pytest.importorskip("torch")
    weight = torch.tensor(1.5, dtype=torch.float64, requires_grad=True)
    seen = []
    cache = tlc.EvaluationCache(tlc.FunctionTensor(_counting_function(weight, seen), (8, 8, 8)))
    return torch, weight, seen, cache


def test_cache_read_with_graph_computes_each_entry_once():
    torch, weight, seen, cache = _weighted_cache()
    with tl.backend_context("pytorch"):
        tt, info = tlc.tt_cross(cache, rank=3, differentiable=True, return_info=True,
                                random_state=0)
        tl.sum(tt.to_tensor()).backward()
    n_seen = sum(rows.shape[0] for rows in seen)
    assert weight.grad is not None and float(weight.grad) != 0.0
    assert n_seen == info.n_evals == cache.counters.unique
    counters = cache.counters
    assert counters.requested - counters.cache_hits == counters.unique


def test_cache_read_with_graph_returns_the_batch_in_order():
    torch, weight, seen, cache = _weighted_cache()
    with tl.backend_context("pytorch"):
        index_sets = tlc.select_indices(cache, rank=2, random_state=0)
        with torch.no_grad():
            cached = tlc.cross_interpolate(cache, index_sets).to_tensor()
        seen.clear()
        before = cache.counters.unique
        fresh = tlc.cross_interpolate(cache, index_sets).to_tensor()
    assert fresh.requires_grad
    assert sum(rows.shape[0] for rows in seen) == cache.counters.unique - before
    np.testing.assert_allclose(fresh.detach().numpy(), cached.numpy(), atol=1e-10)


@pytest.mark.parametrize("budget, stage", [(100, "held-out"), (300, "one sweep")])
def test_the_cache_that_refused_is_named_though_the_run_has_a_larger_budget(budget, stage):
    # The run's own max_evals=10**6 was named ("max_evals=1000000 is too small"): raising
    # it, as the message advised, changes nothing; the caller's cache refused the read.
    cache = tlc.EvaluationCache(_inverse_sum(), max_evals=budget)
    with pytest.raises(ValueError, match=stage) as raised:
        tlc.tt_cross(cache, tol=1e-8, max_evals=10**6, random_state=0)
    message = str(raised.value)
    assert "max_evals=1000000" not in message
    assert f"max_evals={budget} of the EvaluationCache" in message


def _volume():
    return np.random.default_rng(0).random((6, 7, 8))


def test_a_cache_filled_under_numpy_serves_and_grows_under_pytorch():
    pytest.importorskip("torch")
    volume = _volume()
    cache = tlc.EvaluationCache(tlc.lazy_tensor(volume))
    cache.evaluate([[0, 0, 0], [1, 1, 1]])
    with tl.backend_context("pytorch"):
        hits = cache.evaluate([[1, 1, 1], [0, 0, 0]])  # all cached
        assert tl.is_tensor(hits)  # a tensor of the active backend, not the NumPy buffer
        mixed = cache.evaluate([[0, 0, 0], [2, 3, 4]])  # failed in torch.cat
        assert tl.is_tensor(mixed)
        np.testing.assert_array_equal(to_host(mixed), volume[[0, 2], [0, 3], [0, 4]])
        assert cache.max_abs() == pytest.approx(max(volume[0, 0, 0], volume[1, 1, 1],
                                                    volume[2, 3, 4]))
        tt = tlc.tt_cross(cache, rank=2, method="als", random_state=0)
        assert all(tl.is_tensor(core) for core in tt)
    back = cache.evaluate([[2, 3, 4], [5, 6, 7]])  # and back under NumPy
    assert isinstance(back, np.ndarray)
    np.testing.assert_array_equal(back, volume[[2, 5], [3, 6], [4, 7]])
    assert cache.value_dtype() == np.float64


@pytest.mark.parametrize("budget, stage", [(100, "held-out"), (300, "one sweep")])
def test_a_budget_of_the_cache_passed_as_tensor_is_named_with_its_value(budget, stage):
    # The run's own max_evals is None: "max_evals=None is too small" named a budget that
    # does not exist, not the cache's that refused the read.
    cache = tlc.EvaluationCache(_inverse_sum(), max_evals=budget)
    with pytest.raises(ValueError, match=stage) as raised:
        tlc.tt_cross(cache, tol=1e-8, random_state=0)
    message = str(raised.value)
    assert "max_evals=None" not in message
    assert f"max_evals={budget}" in message and "EvaluationCache" in message


def test_a_cache_spent_by_an_earlier_run_is_named_on_the_next():
    cache = tlc.EvaluationCache(_inverse_sum(), max_evals=1500)
    tlc.tt_cross(cache, rank=2, method="als", random_state=0)  # spends most of it
    with pytest.raises(ValueError) as raised:
        tlc.tt_cross(cache, rank=3, method="als", random_state=1)
    message = str(raised.value)
    assert "max_evals=1500" in message and "max_evals=None" not in message
    # the count that ran out is the cache's, earlier runs included
    assert f"{cache.counters.unique} entries evaluated" in message


LARGEST_SHAPE = (40, 40, 40)


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
    cache = EvaluationCache(FunctionTensor(signed, LARGEST_SHAPE))
    cache.evaluate(np.array([[0, 0, 0], [3, 3, 3], [1, 2, 3]]))
    indices, values = cache.largest(1)
    assert indices.tolist() == [[3, 3, 3]] and values.tolist() == [-1000.0]
