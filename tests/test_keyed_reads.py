"""Reads by packed key (bond blocks, the assembly's fibers) give the entries that reads by
multi-index give, whatever the cache already holds."""

import numpy as np
import tensorly as tl
from hypothesis import given
from hypothesis import strategies as st

from tensorly_cross import ArrayTensor
from tensorly_cross.cross.assemble import assemble_cores
from tensorly_cross.cross.bond import BondMatrix, TransposedBondMatrix
from tensorly_cross.cross.indices import CrossIndices, cartesian_join, mode_column
from tensorly_cross.cross.init import random_distinct_multi_indices, single_pivot_indices
from tensorly_cross.cross.tci import tci_half_sweep
from tensorly_cross.lazy.cache import EvaluationCache

from .conftest import host
from .strategies import seeds

small_shapes = st.lists(st.integers(2, 6), min_size=2, max_size=5).map(tuple)


def nested_sets(shape, rng, nested):
    """Random index sets of ranks up to 3, nested on the ``nested`` side only."""
    d = len(shape)
    ranks = [1] + [int(rng.integers(1, 4)) for _ in range(d - 1)] + [1]
    # A nested set extends the rows of its neighbour by one index: no more rows than that.
    bonds = range(1, d) if nested == "left" else range(d - 1, 0, -1)
    for k in bonds:
        neighbour = ranks[k - 1] * shape[k - 1] if nested == "left" else ranks[k + 1] * shape[k]
        ranks[k] = min(ranks[k], neighbour, int(np.prod(shape[:k])), int(np.prod(shape[k:])))
    left = [np.zeros((1, 0), dtype=np.int64)]
    right = [None] * d
    right[d - 1] = np.zeros((1, 0), dtype=np.int64)
    if nested == "left":
        for k in range(d - 1):
            candidates = cartesian_join(left[k], mode_column(shape[k]))
            left.append(candidates[rng.choice(len(candidates), ranks[k + 1], replace=False)])
        for k in range(d - 1):
            right[k] = random_distinct_multi_indices(shape[k + 1 :], ranks[k + 1], rng)
    else:
        for k in range(d - 2, -1, -1):
            candidates = cartesian_join(mode_column(shape[k + 1]), right[k + 1])
            right[k] = candidates[rng.choice(len(candidates), ranks[k + 1], replace=False)]
        left += [random_distinct_multi_indices(shape[:k], ranks[k], rng) for k in range(1, d)]
    return CrossIndices(shape, left, right, nested=nested)


@given(shape=small_shapes, seed=seeds, nested=st.sampled_from(["left", "right"]))
def test_assembly_by_key_equals_assembly_by_multi_index(backend, shape, seed, nested):
    rng = np.random.default_rng(seed)
    dense = rng.standard_normal(shape)
    indices = nested_sets(shape, rng, nested)
    cache = EvaluationCache(ArrayTensor(tl.tensor(dense)))
    # Some fibers cached beforehand, so that the keyed read mixes hits and misses.
    cache.evaluate(np.stack([rng.integers(n, size=20) for n in shape], axis=1))
    by_key = assemble_cores(cache, indices)
    by_multi_index = assemble_cores(ArrayTensor(tl.tensor(dense)), indices)
    for core, expected in zip(by_key, by_multi_index, strict=True):
        np.testing.assert_allclose(host(core), host(expected), rtol=1e-12, atol=1e-12)


@given(shape=st.tuples(st.integers(1, 4), st.integers(2, 5), st.integers(2, 5),
                       st.integers(1, 4)), seed=seeds)
def test_bond_reads_by_key_give_the_block_entries(backend, shape, seed):
    rng = np.random.default_rng(seed)
    dense = rng.standard_normal((7, 5, 6, 4))
    left = random_distinct_multi_indices((7,), shape[0], rng)
    right = random_distinct_multi_indices((4,), shape[3], rng)
    cache = EvaluationCache(ArrayTensor(tl.tensor(dense)))
    cache.evaluate(np.stack([rng.integers(n, size=30) for n in dense.shape], axis=1))
    matrix = BondMatrix(cache, left, 5, 6, right)
    block = dense[matrix.row_multi[:, 0], matrix.row_multi[:, 1]][
        :, matrix.col_multi[:, 0], matrix.col_multi[:, 1]]
    rows = rng.choice(matrix.shape[0], size=min(3, matrix.shape[0]), replace=False)
    cols = rng.choice(matrix.shape[1], size=min(2, matrix.shape[1]), replace=False)
    calls = cache.counters.calls
    columns, row_block = matrix.crosses(rows, cols)
    assert cache.counters.calls <= calls + 1
    np.testing.assert_array_equal(host(columns), block[:, cols])
    np.testing.assert_array_equal(host(row_block), block[rows])
    np.testing.assert_array_equal(host(matrix.column(int(cols[0]))), block[:, cols[0]])
    transposed = TransposedBondMatrix(matrix)
    columns, row_block = transposed.crosses(cols, rows)
    np.testing.assert_array_equal(host(columns), block.T[:, rows])
    np.testing.assert_array_equal(host(row_block), block.T[cols])
    # Rows and columns are sorted, so that reads in position order ask for increasing keys.
    for multi in (matrix.row_multi, matrix.col_multi):
        keys = np.ravel_multi_index(tuple(multi.T), [n + 1 for n in multi.max(axis=0)])
        assert (np.diff(keys) > 0).all()


@given(seed=seeds, n_queries=st.integers(0, 6))
def test_bond_positions_by_key_equal_a_search_by_multi_index(backend, seed, n_queries):
    rng = np.random.default_rng(seed)
    dense = rng.standard_normal((4, 3, 5, 4))
    left = random_distinct_multi_indices((4,), 2, rng)
    right = random_distinct_multi_indices((4,), 3, rng)
    keyed = BondMatrix(EvaluationCache(ArrayTensor(tl.tensor(dense))), left, 3, 5, right)
    plain = BondMatrix(ArrayTensor(tl.tensor(dense)), left, 3, 5, right)
    # Queries in any order, some of them not among the block's rows or columns.
    row_queries = np.stack([rng.integers(4, size=n_queries), rng.integers(3, size=n_queries)],
                           axis=1)
    col_queries = np.stack([rng.integers(5, size=n_queries), rng.integers(4, size=n_queries)],
                           axis=1)
    for matrix in (keyed, plain):
        for queries, found, candidates in ((row_queries, matrix.row_positions, matrix.row_multi),
                                           (col_queries, matrix.col_positions, matrix.col_multi)):
            expected = [int(np.flatnonzero((candidates == query).all(axis=1))[0])
                        for query in queries if (candidates == query).all(axis=1).any()]
            assert found(queries).tolist() == expected


@given(shape=st.lists(st.integers(2, 5), min_size=2, max_size=5).map(tuple), seed=seeds,
       search=st.sampled_from(["column", "rook", "full", "batched"]))
def test_a_tci_sweep_hands_over_the_fibers_of_its_sets(backend, shape, seed, search):
    rng = np.random.default_rng(seed)
    dense = rng.standard_normal(shape)
    cache = EvaluationCache(ArrayTensor(tl.tensor(dense)))
    indices = single_pivot_indices(shape, [0] * len(shape))
    for direction in ("lr", "rl", "lr"):
        _, fibers = tci_half_sweep(cache, indices, direction, lambda scale: 1e-12 * scale,
                                   [1] + [4] * (len(shape) - 1) + [1], rng, search)
        for k, fiber in enumerate(fibers):
            left, right = indices.left[k], indices.right[k]
            expected = np.stack([dense[tuple(a) + (slice(None),) + tuple(b)] for a in left
                                 for b in right]).reshape(len(left), len(right), shape[k])
            np.testing.assert_array_equal(host(fiber), expected.transpose(0, 2, 1))
