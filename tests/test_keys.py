"""Cache keys at any number of modes: flat positions below 2**63 entries, checked 64-bit
hashes beyond, both linear in the multi-index so that bonds read by key."""

import numpy as np
import pytest
import tensorly as tl
from hypothesis import given, settings
from hypothesis import strategies as st

import tensorly_cross as tlc
from tensorly_cross import FunctionTensor
from tensorly_cross.cross import indices as indices_module
from tensorly_cross.cross.assemble import assemble_cores
from tensorly_cross.cross.bond import BondMatrix
from tensorly_cross.cross.indices import cartesian_join
from tensorly_cross.cross.init import random_distinct_multi_indices
from tensorly_cross.errors import KeyCollisionError
from tensorly_cross.lazy.cache import EvaluationCache, _distinct
from tensorly_cross.lazy.keys import KeyScheme

from .conftest import host
from .strategies import seeds
from .test_keyed_reads import nested_sets

HUGE = (16,) * 20  # 2**80 entries


class Counted:
    """Pseudo-random entries (full rank), a function of the multi-index; counts them."""

    def __init__(self):
        self.computed = 0

    def __call__(self, indices):
        self.computed += indices.shape[0]
        # Integer arithmetic (a splitmix64 finaliser): the same value in any batch.
        weights = np.random.default_rng(11).integers(2**63, size=indices.shape[1],
                                                     dtype=np.uint64)
        mixed = (indices.astype(np.uint64) * (weights | np.uint64(1))).sum(axis=1)
        for shift, factor in ((30, 0xBF58476D1CE4E5B9), (27, 0x94D049BB133111EB)):
            mixed = (mixed ^ (mixed >> np.uint64(shift))) * np.uint64(factor)
        mixed = mixed ^ (mixed >> np.uint64(31))
        return tl.tensor((mixed >> np.uint64(11)).astype(np.float64) / 2.0**53)


@given(shape=st.lists(st.integers(1, 50), min_size=1, max_size=6).map(tuple), seed=seeds)
def test_keys_are_flat_positions_below_two_to_the_63_entries(shape, seed):
    indices = np.stack([np.random.default_rng(seed).integers(n, size=30) for n in shape], 1)
    scheme = KeyScheme(shape)
    assert scheme.exact and scheme.checks(indices) is None
    np.testing.assert_array_equal(scheme.keys(indices), np.ravel_multi_index(indices.T, shape))


def test_hashed_keys_are_fixed_odd_and_linear():
    first, second = KeyScheme(HUGE), KeyScheme(HUGE)
    assert not first.exact
    np.testing.assert_array_equal(first.weights, second.weights)  # same keys, same run
    assert (first.weights % 2 != 0).all() and (first.check_weights % 2 != 0).all()
    rng = np.random.default_rng(0)
    a, b = rng.integers(8, size=(2, 50, 20))
    # Linear modulo 2**64: a bond adds a row part and a column part.
    np.testing.assert_array_equal(first.keys(a + b), first.keys(a) + first.keys(b))


@given(n_distinct=st.integers(1, 60), repeats=st.integers(1, 3), seed=seeds)
def test_cache_beyond_two_to_the_63_gives_each_value_and_computes_it_once(
        backend, n_distinct, repeats, seed):
    rng = np.random.default_rng(seed)
    distinct = np.unique(rng.integers(16, size=(n_distinct, 20)), axis=0)
    batch = np.concatenate([distinct] * repeats)[rng.permutation(len(distinct) * repeats)]
    function = Counted()
    cache = EvaluationCache(FunctionTensor(function, HUGE))
    first = host(cache.evaluate(batch))
    second = host(cache.evaluate(batch[::-1]))
    np.testing.assert_array_equal(first, host(Counted()(batch)))
    np.testing.assert_array_equal(second, first[::-1])
    assert function.computed == cache.counters.unique == len(distinct)


@given(size=st.integers(1, 200), spread=st.integers(1, 80), seed=seeds)
def test_distinct_keys_agree_with_numpy_unique(size, spread, seed):
    # Hashed keys come unordered and repeated: the one-sort path must give np.unique's
    # sorted keys, first occurrences and inverse.
    rng = np.random.default_rng(seed)
    keys = (rng.integers(-spread, spread, size=size) * 2**56).astype(np.int64)
    new_keys, first, inverse = _distinct(keys)
    expected = np.unique(keys, return_index=True, return_inverse=True)
    np.testing.assert_array_equal(new_keys, expected[0])
    np.testing.assert_array_equal(first, expected[1])
    if inverse is None:  # only for keys already strictly increasing
        np.testing.assert_array_equal(keys, new_keys)
    else:
        np.testing.assert_array_equal(inverse, expected[2].reshape(-1))


@settings(max_examples=8)
@given(seed=seeds)
def test_bond_reads_and_assembly_by_hashed_key_give_the_entries(backend, seed):
    rng = np.random.default_rng(seed)
    shape = (16,) * 18
    cache = EvaluationCache(FunctionTensor(Counted(), shape))
    direct = FunctionTensor(Counted(), shape)
    left = random_distinct_multi_indices(shape[:8], 3, rng)
    right = random_distinct_multi_indices(shape[10:], 2, rng)
    matrix = BondMatrix(cache, left, 16, 16, right)
    cache.evaluate(cartesian_join(matrix.row_multi[:3], matrix.col_multi[:4]))  # some hits
    rows, cols = rng.permutation(matrix.shape[0])[:7], rng.permutation(matrix.shape[1])[:5]
    expected = host(direct.evaluate(cartesian_join(matrix.row_multi[rows],
                                                   matrix.col_multi[cols])))
    np.testing.assert_array_equal(host(matrix.entries(rows, cols)).reshape(-1), expected)
    indices = nested_sets((5,) * 4 + (16,) * 14, rng, "left")
    big = FunctionTensor(Counted(), indices.shape)
    for by_key, expected in zip(assemble_cores(EvaluationCache(big), indices),
                                assemble_cores(big, indices), strict=True):
        np.testing.assert_array_equal(host(by_key), host(expected))


def test_a_shared_hashed_key_is_detected_not_served(backend):
    cache = EvaluationCache(FunctionTensor(Counted(), HUGE))
    cache._scheme.weights = np.zeros(20, dtype=np.int64)  # every key collides
    first, second = np.zeros((1, 20), dtype=np.int64), np.ones((1, 20), dtype=np.int64)
    cache.evaluate(first)
    with pytest.raises(KeyCollisionError, match=r"multi-index \(1, 1, 1"):
        cache.evaluate(second)  # found under first's key
    fresh = EvaluationCache(FunctionTensor(Counted(), HUGE))
    fresh._scheme.weights = np.zeros(20, dtype=np.int64)
    with pytest.raises(KeyCollisionError, match="shared by another entry"):
        fresh.evaluate(np.concatenate([first, second]))  # two in one batch


def test_tci_recovers_a_tt_of_two_to_the_80_entries(backend):
    rng = np.random.default_rng(4)
    cores = [rng.standard_normal((1 if k == 0 else 3, 16, 1 if k == 19 else 3)) / 2
             for k in range(20)]

    def function(indices):
        result = np.ones((indices.shape[0], 1))
        for k, core in enumerate(cores):
            result = np.einsum("ma,amb->mb", result, core[:, indices[:, k], :])
        return result[:, 0]

    tt, info = tlc.tt_cross(FunctionTensor(function, HUGE), tol=1e-10, random_state=0,
                            return_info=True)
    test = rng.integers(16, size=(2000, 20))
    approx = host(tlc.tt_entries(tt, test))
    assert np.linalg.norm(approx - function(test)) <= 1e-9 * np.linalg.norm(function(test))
    assert info.n_sweeps == 1


@given(n_rows=st.integers(1, 40), seed=seeds, shared_hash=st.booleans())
def test_rows_are_found_among_huge_candidates_even_when_hashes_are_shared(
        monkeypatch, n_rows, seed, shared_hash):
    rng = np.random.default_rng(seed)
    candidates = np.unique(rng.integers(2**40, size=(n_rows, 3)), axis=0)
    queries = np.concatenate([candidates[rng.permutation(len(candidates))[:3]],
                              rng.integers(2**40, size=(2, 3))])
    expected = [i for query in queries for i, row in enumerate(candidates)
                if (row == query).all()]
    with monkeypatch.context() as patch:
        if shared_hash:  # every row under one hash: the structured keys must decide
            patch.setattr(indices_module, "_hashed_keys",
                          lambda first, second: (np.zeros(len(first), dtype=np.int64),
                                                 np.zeros(len(second), dtype=np.int64)))
        found = indices_module.positions_found(queries, candidates)
    np.testing.assert_array_equal(found, expected)


@given(n_old=st.integers(0, 30), n_new=st.integers(1, 30), seed=seeds)
def test_a_hashed_batch_in_any_order_asks_its_new_entries_once_in_key_order(
        backend, n_old, n_new, seed):
    # Hashed keys come in no order; the cache sorts a batch once (lookup, distinct and
    # insertion in key order) and gives the values back in the batch's order.
    rng = np.random.default_rng(seed)
    distinct = np.unique(rng.integers(16, size=(n_old + n_new, 20)), axis=0)
    distinct = distinct[rng.permutation(len(distinct))]
    old, new = distinct[:n_old], distinct[n_old:]
    calls = []
    function = Counted()
    cache = EvaluationCache(FunctionTensor(lambda idx: calls.append(idx) or function(idx),
                                           HUGE))
    if len(old):
        cache.evaluate(old)
    calls.clear()
    batch = np.concatenate([distinct, new])[rng.permutation(len(distinct) + len(new))]
    values = host(cache.evaluate(batch))
    np.testing.assert_array_equal(values, host(Counted()(batch)))
    assert len(calls) == 1 and len(calls[0]) == len(new)
    keys = cache.pack(calls[0])
    # New entries, each once, by increasing key (compared, not differenced: np.diff of
    # 64-bit hashes overflows).
    assert (keys[1:] > keys[:-1]).all()
