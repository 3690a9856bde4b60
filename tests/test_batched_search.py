"""Batched pivot search: the pivots of column search in rounds, one read per round."""

import math

import numpy as np
import tensorly as tl
from hypothesis import given
from hypothesis import strategies as st

import tensorly_cross as tlc
from tensorly_cross import FunctionTensor
from tensorly_cross.cross.prrlu import prrlu

from .strategies import random_tt_cores, relative_error_on_samples, seeds, tt_function
from .test_prrlu import cross_error, low_rank_block

blocks = st.tuples(st.integers(8, 40), st.integers(8, 40), st.integers(1, 8), seeds)


def _search(block, search, **kwargs):
    n_rows, n_cols, rank, seed = block
    dense, cache, matrix = low_rank_block(n_rows, n_cols, rank, seed)
    rows, cols = prrlu(matrix, 1e-10 * np.abs(dense).max(), 64, np.random.default_rng(seed),
                       search, **kwargs)
    return dense, cache, rows, cols


@given(block=blocks)
def test_batched_search_needs_a_logarithmic_number_of_reads(block):
    rank = block[2]
    dense, cache, rows, cols = _search(block, "batched")
    assert len(rows) == rank and cross_error(dense, rows, cols) < 1e-9
    # Round widths 1, 1, 2, 4, ...: a column and a row per round, and the column that ends
    # the search; column search reads a column and a row per pivot.
    assert cache.counters.calls <= 2 * (math.ceil(math.log2(rank)) + 1) + 1
    _, column_cache, _, _ = _search(block, "column")
    assert cache.counters.calls <= column_cache.counters.calls


@given(block=blocks)
def test_a_right_rank_hint_takes_four_reads(backend, block):
    rank = block[2]
    dense, cache, rows, cols = _search(block, "batched", rank_hint=rank)
    assert len(rows) == rank and cross_error(dense, rows, cols) < 1e-9
    # The first column and its row, then the rest of the hint and one more column, then
    # their rows (two reads fewer for rank 1: its second column ends the search).
    assert cache.counters.calls <= (3 if rank == 1 else 4)


@given(block=blocks, hint=st.integers(1, 12))
def test_any_rank_hint_finds_the_rank(backend, block, hint):
    dense, _, rows, cols = _search(block, "batched", rank_hint=hint)
    assert len(rows) == block[2] and cross_error(dense, rows, cols) < 1e-9


def test_batched_search_stops_at_the_rank_cap(backend):
    dense, cache, matrix = low_rank_block(30, 30, 8, 1)
    rows, cols = prrlu(matrix, 1e-12, 5, np.random.default_rng(0), "batched", rank_hint=8)
    assert len(rows) == len(cols) == 5
    assert len(set(rows.tolist())) == 5 and len(set(cols.tolist())) == 5


@given(seed=seeds, d=st.integers(3, 7))
def test_batched_tci_reads_fewer_batches_than_column_search(d, seed):
    shape, rank = (6,) * d, (1,) + (4,) * (d - 1) + (1,)
    function = tt_function(random_tt_cores(shape, rank, seed))
    calls = {}
    for search in ("column", "batched"):
        lazy = FunctionTensor(function, shape)
        tt, info = tlc.tt_cross(lazy, tol=1e-12, random_state=seed, pivot_search=search,
                                return_info=True)
        assert relative_error_on_samples(tt, function, shape, seed) < 1e-10
        calls[search] = info.n_calls
    assert calls["batched"] <= calls["column"]


def test_batched_search_recovers_a_complex_block(backend):
    rng = np.random.default_rng(3)
    dense = (rng.standard_normal((12, 3)) + 1j * rng.standard_normal((12, 3))) @ (
        rng.standard_normal((3, 10)) + 1j * rng.standard_normal((3, 10)))
    tt = tlc.tt_cross(tl.tensor(dense.reshape(3, 4, 10)), method="tci", tol=1e-12,
                      pivot_search="batched", random_state=0)
    approx = np.asarray(tl.to_numpy(tl.tt_to_tensor(tt))).reshape(12, 10)
    assert np.linalg.norm(approx - dense) < 1e-9 * np.linalg.norm(dense)
