"""Batched column search: the pivots of a bond in rounds, one batched read per round.

Column search (adaptive cross approximation, :func:`prrlu`) reads one column, pivots on its
largest residual, reads that row and chains to the row's largest residual: two reads per
pivot, each waiting on the one before. Over a cheap function every read costs more in
bookkeeping than in the function, and over an executor every read is a round of chunks.

Batched search reads a round of columns at once, takes their pivots by partial pivoting
on the round's residual columns (the rows column search would take for those columns),
reads those rows at once, and ranks the next round's columns by the largest residual of
the rows just read (column search's chain, widened). The round after one in which every
column gave a pivot is twice as wide, so a bond of rank r takes about 2 log2(r) reads
instead of 2r. The price is the last round's columns: the search ends, as column search
does, at the first column below the cut, and the columns read after it are wasted.
"""

import numpy as np
import tensorly as tl

from .._backend import take_cols, to_host
from .prrlu import (
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
    residual points, the next reads as many columns as the hint still lacks, plus one
    that ends the search where the hint is right.

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
    # Bounded: a round takes a pivot, or ends the search, or (a column too small to tell,
    # a poor pivot) moves on to the columns its rows point at.
    for _ in range(2 * max_rank):
        room = max_rank - len(rows)
        if room <= 0:
            break
        candidates = _candidates(start_cols, scores, drawn, cols, min(width, room),
                                 matrix.shape[1], rng)
        scores, ended = _round(residual, candidates, rows, cols, cut, max_kept_growth)
        if ended:
            break
        width = _next_width(len(rows), rank_hint)
    return np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64)


def _next_width(rank, hint):
    """Columns of the next round: what the hint still lacks and one more (the column
    that ends the search), or, past the hint, twice the pivots taken beyond it."""
    return max(hint - rank + 1, 2 * (rank - hint), 1)


def _column_ahead(kept, max_rank, n_cols, rng):
    """A random column read with the kept pivots' crosses: where every kept pivot stays
    and the rank has settled (most bonds after a few sweeps), it is the column that ends
    the search, and the bond takes one read. Returns ``[col]`` or ``[]``."""
    kept_cols = np.unique(np.asarray(kept[1], dtype=np.int64))
    if not kept_cols.size or kept_cols.size >= min(max_rank, n_cols):
        return []
    return [_next_start([], kept_cols, n_cols, rng)]


def _candidates(start_cols, scores, drawn, cols, count, n_cols, rng):
    """The round's columns: the starts not pivoted yet, then the columns of largest
    ``scores`` (the residual rows of the last round), then random ones."""
    chosen, taken = [], set(cols)

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


def _round(residual, candidates, rows, cols, cut, max_growth):
    """Read ``candidates`` and their pivots' rows (one batch each); take the pivots.

    Returns the column scores for the next round (the largest residual of each column
    over the rows read, pivots at -1) and whether the search ends.
    """
    matrix = residual.matrix
    block = _residual_columns(residual, candidates)
    picks, probes, ended = _column_pivots(matrix, block, candidates, rows, cut)
    if picks or probes:
        matrix.rows([row for row, _ in picks] + probes)
    scores = np.full(matrix.shape[1], -1.0)
    for row, col in picks:
        col_abs, column = residual.column(col, rows)
        row_abs, row_values = residual.row(row, cols)
        if rows and _poor_pivot(col_abs[row], row_abs.max(), max_growth):
            # Its row's largest residual is read next (the rook move of column search).
            np.maximum(scores, row_abs, out=scores)
            ended = False
            break
        if not _accept_pivot(column[row], row, col, rows, cols, cut()):
            ended = True
            break
        np.maximum(scores, row_abs, out=scores)
        residual.add(column, row_values, column[row])
    for row in probes:  # columns too small to tell: their rows point the next round
        np.maximum(scores, residual.row(row, cols)[0], out=scores)
    scores[cols] = -1.0
    return scores, ended


def _residual_columns(residual, cols):
    """The residual of the columns ``cols`` (read in one batch) as a host array."""
    values = residual.matrix.columns(cols)
    if residual.left is not None:
        values = values - tl.dot(residual.left, take_cols(residual.right, np.asarray(cols)))
    host = to_host(values)
    return np.array(host, dtype=np.promote_types(host.dtype, np.float64))


def _column_pivots(matrix, block, candidates, rows, cut):
    """Partial pivoting through the residual columns ``block``, in order: the pivots
    ``(row, col)``, the rows to read for columns too small to tell, and whether a column
    below the cut ended the search (column search's stop, at the same column)."""
    picks, probes, excluded = [], [], list(rows)
    for j, col in enumerate(candidates):
        moduli = np.abs(block[:, j])
        moduli[excluded] = -1.0
        row = int(np.argmax(moduli))
        if excluded and moduli[row] <= cut():
            if _inconclusive(matrix, col, moduli[row], cut()):
                probes.append(row)
                continue
            return picks, probes, True
        picks.append((row, col))
        excluded.append(row)
        if moduli[row] == 0:  # the first pivot of a zero block: rank 1, nothing more
            return picks, probes, True
        block -= np.outer(block[:, j] / block[row, j], block[row])
    return picks, probes, False
