"""Batched column search: the pivots of a bond in rounds, one batched read per round.

Column search (adaptive cross approximation, :func:`prrlu`) reads one column, pivots on its
largest residual, reads that row and chains to the row's largest residual: two reads per
pivot, each waiting on the one before. Over a cheap function every read costs more in
bookkeeping than in the function, and over an executor every read is a round of chunks.

Batched search reads a round of columns at once, takes their pivots by partial pivoting
on the round's residual columns (the rows column search would take for those columns),
reads those rows at once, and ranks the next round's columns by the largest residual of
the rows just read (column search's chain, widened). After the first round (one column),
a round reads all the columns the bond still lacks to reach the rank it is expected to
reach, plus one: a rank-8 block whose hint is right takes 4 reads (ranks 1, 8) where
column search takes 17. The price is the columns read past the rank: the search ends, as
column search does, at the first column below the cut, and the columns read after it
are wasted; a hint above the rank wastes the columns it lacks, once per bond and sweep.
"""

from dataclasses import dataclass

import numpy as np
import tensorly as tl

from .._backend import take_cols, to_host
from .prrlu import (
    ROOK_MOVES,
    _accept_pivot,
    _inconclusive,
    _keep_pivots,
    _next_start,
    _poor_pivot,
    _Residual,
)


def batched_search(matrix, cut, max_rank, rng, start_cols, kept=None, max_kept_growth=None,
                   rank_hint=1):
    """Pivot rows and columns of ``matrix`` in rounds (the arguments of ``_pivot_search``).

    ``rank_hint`` is the rank the bond is expected to reach (its own in the last sweep, or
    the bond's just before it in this sweep): once the first round has shown where the
    residual points, the next reads all the columns the hint still lacks, plus one that
    ends the search where the hint is right.

    Returns
    -------
    rows, cols : ndarray of int64
    """
    residual = _Residual(matrix)
    rows, cols = [], []
    drawn = []
    if kept is not None:
        drawn = _column_ahead(kept, max_rank, matrix.shape[1], rng)
        _keep_pivots(residual, kept, cut, max_rank, rows, cols, max_kept_growth, drawn)
    # The first round is one column, as column search starts: a wide first round of
    # random columns took 1.6-1.9x the evaluations on bench_cross's P4 (10 starts).
    scores, width = None, 1
    probed = set()  # columns too small to tell, whose rows were read: not candidates again
    poor_moves = 0  # rook moves since the last pivot taken (column search allows 4)
    # Bounded: a round takes a pivot, ends the search, probes new columns, or makes one
    # of at most ROOK_MOVES rook moves per pivot.
    for _ in range(3 * max_rank + ROOK_MOVES):
        room = max_rank - len(rows)
        candidates = _candidates(start_cols, scores, drawn, set(cols) | probed,
                                 min(width, room), matrix.shape[1], rng)
        if not candidates:
            break
        n_before = len(rows)
        outcome = _round(residual, candidates, rows, cols, cut, max_kept_growth,
                         accept_poor=poor_moves >= ROOK_MOVES)
        if outcome.ended:
            break
        probed.update(outcome.probed)
        poor_moves = 0 if len(rows) > n_before else poor_moves + outcome.moved
        scores, width = outcome.scores, _next_width(len(rows), rank_hint)
    return np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64)


def _next_width(rank, hint):
    """Columns of the next round: what the hint still lacks, and one more (the column that
    ends the search); past the hint, twice the pivots taken beyond it.

    Not capped at twice the rank so far (rounds of ranks 1, 4, 13, ...): at d=80 (random
    rank-8 TT, n=16, bench_scale large-d) the cap took 427 batches where this takes 270,
    for 85573 evaluations against 84773, and on bench_scale's counts (P1-P5a, quantics;
    10 and 8 starts) it changed no median by more than 1% but one, 14% lower. A hint
    above the rank (a bond of rank 1 between bonds of rank 7) wastes the columns it lacks
    once per sweep: on a product of two 5-mode functions, -18% to +2% evaluations."""
    if rank < hint:
        # No pivot yet (a rook move from the first column): one column, as column search.
        return hint - rank + 1 if rank else 1
    return max(2 * (rank - hint), 1)


def _column_ahead(kept, max_rank, n_cols, rng):
    """A random column read with the kept pivots' crosses: where every kept pivot stays
    and the rank has settled (most bonds after a few sweeps), it is the column that ends
    the search, and the bond takes one read. Returns ``[col]`` or ``[]``."""
    kept_cols = np.unique(np.asarray(kept[1], dtype=np.int64))
    if not kept_cols.size or kept_cols.size >= min(max_rank, n_cols):
        return []
    return [_next_start([], kept_cols, n_cols, rng)]


def _candidates(start_cols, scores, drawn, excluded, count, n_cols, rng):
    """The round's columns (none of ``excluded``): the starts not pivoted yet, then the
    columns of largest ``scores`` (the residual rows of the last round), then random."""
    chosen, taken = [], set(excluded)

    def choose(col):
        if col not in taken and len(chosen) < count:
            chosen.append(col)
            taken.add(col)

    while start_cols and len(chosen) < count:
        choose(int(start_cols.pop(0)))
    if scores is not None:
        for col in np.argsort(-scores, kind="stable")[: count + len(taken)]:
            if scores[col] >= 0:
                choose(int(col))
    while len(chosen) < count and len(taken) < n_cols:
        choose(_next_start([], sorted(taken), n_cols, rng, drawn))
    return chosen


@dataclass
class _Outcome:
    """What a round did: the column scores for the next round (the largest residual of
    each column over the rows read), whether the search ends, whether it made a rook
    move (a poor pivot), and the columns it probed."""

    scores: np.ndarray
    ended: bool
    moved: bool = False
    probed: tuple = ()


def _round(residual, candidates, rows, cols, cut, max_growth, accept_poor):
    """Read ``candidates`` and their pivots' rows (one batch each); take the pivots."""
    matrix = residual.matrix
    block = _residual_columns(residual, candidates)
    picks, probes, ended = _column_pivots(matrix, block, candidates, rows, cut)
    if picks or probes:
        matrix.rows([row for row, _ in picks + probes])
    outcome = _Outcome(np.full(matrix.shape[1], -1.0), ended,
                       probed=tuple(c for _, c in probes))
    for row, col in picks:
        col_abs, column = residual.column(col, rows)
        row_abs, row_values = residual.row(row, cols)
        if not accept_poor and _poor_pivot(col_abs[row], row_abs.max(), max_growth):
            # A pivot far below its row's largest residual: that row alone points the
            # next round (the rook move of column search).
            return _Outcome(row_abs.copy(), False, moved=True, probed=outcome.probed)
        if rows and col_abs[row] <= cut():
            # Above the cut when picked, below it now that this round's rows have raised
            # the largest modulus read (and the cut with it): the next round judges again.
            outcome.ended = False
            break
        if not _accept_pivot(column[row], row, col, rows, cols, cut()):
            return _Outcome(outcome.scores, True)  # a zero first pivot: rank 1, no more
        np.maximum(outcome.scores, row_abs, out=outcome.scores)
        residual.add(column, row_values, column[row])
    for row, _ in probes:  # columns too small to tell: their rows point the next round
        np.maximum(outcome.scores, residual.row(row, cols)[0], out=outcome.scores)
    outcome.scores[cols] = -1.0
    return outcome


def _residual_columns(residual, cols):
    """The residual of the columns ``cols`` (read in one batch) as a host array."""
    values = residual.matrix.columns(cols)
    if residual.left is not None:
        values = values - tl.dot(residual.left, take_cols(residual.right, np.asarray(cols)))
    host = to_host(values)
    return np.array(host, dtype=np.promote_types(host.dtype, np.float64))


def _column_pivots(matrix, block, candidates, rows, cut):
    """Partial pivoting through the residual columns ``block``, in order: the pivots
    ``(row, col)``, the ``(row, col)`` of columns too small to tell (their rows are read),
    and whether a column below the cut ended the search (column search's stop)."""
    picks, probes, excluded = [], [], list(rows)
    for j, col in enumerate(candidates):
        moduli = np.abs(block[:, j])
        moduli[excluded] = -1.0
        row = int(np.argmax(moduli))
        if excluded and moduli[row] <= cut():
            if _inconclusive(matrix, col, moduli[row], cut()):
                probes.append((row, col))
                continue
            return picks, probes, True
        picks.append((row, col))
        excluded.append(row)
        if moduli[row] == 0:  # a zero first column: its row decides (a rook move or the end)
            return picks, probes, False
        block -= np.outer(block[:, j] / block[row, j], block[row])
    return picks, probes, False
