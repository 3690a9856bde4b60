"""Batched pivot search: the pivots of column search in rounds, one read per round."""

import math

import numpy as np
import tensorly as tl
from hypothesis import given
from hypothesis import strategies as st

import tensorly_cross as tlc
from tensorly_cross import FunctionTensor
from tensorly_cross.cross.bond import BondMatrix
from tensorly_cross.cross.prrlu import prrlu
from tensorly_cross.lazy.cache import EvaluationCache

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
def test_a_right_rank_hint_takes_two_rounds(backend, block):
    rank = block[2]
    dense, cache, rows, cols = _search(block, "batched", rank_hint=rank)
    assert len(rows) == rank and cross_error(dense, rows, cols) < 1e-9
    # One column and its row, then every column the hint lacks and their rows: the rank
    # goes 1, rank (a column read and a row read per round), and the extra column of the
    # second round ends the search (rank 1: a third read, of one column, ends it). Capped
    # at twice the rank so far, rank 8 took 6 reads.
    assert cache.counters.calls <= 4
    _, unhinted, _, _ = _search(block, "batched")
    assert cache.counters.calls <= unhinted.counters.calls


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


def _stair(n, base):
    """Full rank, each row pointing right to a larger entry: ``M[k, k] = base**(2k)``,
    ``M[k, k+1] = base**(2k+1)`` (a pivot search meets poor pivots and a growing cut)."""
    dense = np.zeros((n, n))
    for k in range(n):
        dense[k, k] = base ** (2 * k)
        if k + 1 < n:
            dense[k, k + 1] = base ** (2 * k + 1)
    return dense


def _pivots_of(dense, search, rel_tol, max_rank, **kwargs):
    """Pivots of a dense matrix read as a bond, their cross's relative error, and the
    cache's counters."""
    cache = EvaluationCache(FunctionTensor(lambda idx: tl.tensor(dense[idx[:, 0], idx[:, 1]]),
                                           dense.shape))
    empty = np.zeros((1, 0), dtype=np.int64)
    matrix = BondMatrix(cache, empty, *dense.shape, empty)
    rows, cols = prrlu(matrix, lambda largest: rel_tol * largest, max_rank,
                       np.random.default_rng(0), search, **kwargs)
    fit = np.linalg.lstsq(dense[np.ix_(rows, cols)], dense[rows], rcond=None)[0]
    error = np.linalg.norm(dense[:, cols] @ fit - dense) / np.linalg.norm(dense)
    return rows, error, cache.counters


# Found by review: each case ended the batched search far short (errors 0.2-1.0) while
# the column search was exact or at its cap.
def test_a_pivot_below_the_cut_its_own_round_raised_does_not_end_the_search():
    rows, error, _ = _pivots_of(_stair(12, 6.0), "batched", 1e-8, 12, start_cols=[0])
    assert error < 1e-8  # it took 4 pivots, error 1.0


def test_poor_pivots_are_taken_after_as_many_rook_moves_as_column_search_makes():
    for search in ("column", "batched"):
        rows, error, _ = _pivots_of(_stair(6, 20.0), search, 1e-12, 2, start_cols=[0],
                                    max_kept_growth=16.0)
        assert len(rows) == 2 and error < 1e-5  # batched: 1 pivot, error 1.0


def test_a_zero_first_column_moves_on_to_its_row():
    rng = np.random.default_rng(0)
    dense = rng.standard_normal((10, 3)) @ rng.standard_normal((3, 10))
    dense[:, 0] = 0.0
    rows, error, _ = _pivots_of(dense, "batched", 1e-12, 10, start_cols=[0],
                                max_kept_growth=16.0)
    assert len(rows) == 3 and error < 1e-12  # it kept the zero pivot and stopped


def test_after_a_poor_pivot_its_row_alone_points_the_next_round():
    rng = np.random.default_rng(5052)
    dense = rng.standard_normal((12, 4)) @ rng.standard_normal((4, 29))
    dense = dense * (rng.random((12, 29)) < 0.3)
    kept = (rng.integers(12, size=4), rng.integers(29, size=4))
    rows, error, _ = _pivots_of(dense, "batched", 1e-12, 64, kept=kept,
                                max_kept_growth=16.0, rank_hint=3)
    assert error < 1e-12  # stale scores of the round's rows ended it at error 0.21


def test_columns_too_small_to_tell_are_probed_once(monkeypatch):
    from tensorly_cross.cross import batched_search

    rounds = []
    search_round = batched_search._round
    monkeypatch.setattr(batched_search, "_round",
                        lambda *args, **kwargs: rounds.append(1) or search_round(*args, **kwargs))
    dense = _stair(16, 6.0)
    _, column_error, column_reads = _pivots_of(dense, "column", 1e-8, 16, start_cols=[5],
                                               max_kept_growth=16.0)
    rows, error, reads = _pivots_of(dense, "batched", 1e-8, 16, start_cols=[5],
                                    max_kept_growth=16.0)
    assert error <= max(10 * column_error, 1e-8) and reads.calls <= column_reads.calls
    # The same probed columns came back round after round: 32 rounds for 11 pivots.
    assert len(rounds) <= len(rows)
