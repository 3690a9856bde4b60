"""Partial rank-revealing LU of a lazily read matrix: which rows and columns to pivot on.

``M ~= M[:, J] M[I, J]^{-1} M[I, :]``: pivots are added one at a time, each the largest
entry of the current residual (full search), of one column of it (column search: partial
pivoting, as in adaptive cross approximation) or an entry largest in its row and its
column (rook search), until the next pivot is below an absolute tolerance or the rank cap.
References: Dolgov & Savostyanov (2020), "Parallel cross interpolation..."; Fernandez et
al. (2025), SciPost Phys. 18, 104, sec. 3.
"""

import functools

import numpy as np
import tensorly as tl

from .._backend import argmax_abs, take_cols, take_rows, to_host
from .scaling import exponent_of, times_power_of_two

# Rook moves per pivot: each reads one more column and row; four settle almost every search.
ROOK_MOVES = 4
# A pivot within this many round-offs (machine epsilons) of the largest entry read is noise,
# whatever ``abs_tol`` says: with ``tol=0`` the cut would be 0, round-off pivots would be
# taken, and the pivot blocks they make are singular (LinAlgError in the solves).
ROUND_OFF_PIVOT = 100


def prrlu(matrix, abs_tol, max_rank, rng, search="column", start_cols=(), kept=None,
          max_kept_growth=None, rank_hint=1):
    """Pivot rows and columns of a :class:`BondMatrix` (at least one pivot).

    Parameters
    ----------
    matrix : BondMatrix
    abs_tol : float or callable
        Stop when the next pivot's modulus is ``<= abs_tol``. A callable is a cut that
        follows the block: ``abs_tol(matrix.max_abs)``, the largest modulus read in it so far.
    max_rank : int
    rng : numpy.random.Generator
        Picks starting columns after ``start_cols`` run out.
    search : {"column", "rook", "full", "batched"}
        ``"full"`` reads the whole matrix. ``"column"`` reads one column, pivots on its
        largest residual and reads that row (partial pivoting, as in adaptive cross
        approximation); the search stops at a column whose residual is below
        ``abs_tol``, unless the column is too small to tell (see :func:`_inconclusive`).
        ``"rook"`` goes on alternating column and row maxima until an entry
        is the largest of both (up to :data:`ROOK_MOVES` moves). ``"batched"``: column
        search in rounds of columns and rows read in one batch each (``batched_search.py``).
    start_cols : sequence of int
        Columns tried first as starts (the previous sweep's pivots).
    kept : (rows, cols) of int arrays, optional
        Pivot positions to keep (not with ``"full"``): the previous sweep's pivots that
        lie in this matrix. Their rows and columns are read in one batched call (usually
        from the cache), eliminated largest residual first while above ``abs_tol``, and
        the search only looks for pivots beyond them.
    max_kept_growth : float or None
        A kept pivot must also be at least ``1 / max_kept_growth`` of the largest residual
        of its column (the factor by which it can grow the interpolation coefficients and
        round-off with them); the first that is not ends the kept ones.

    Returns
    -------
    rows, cols : ndarray of int64
    """
    max_rank = min(max_rank, *matrix.shape)
    cut = _block_cut(abs_tol, matrix)
    if search == "full":
        block = matrix.full()
        return _full_search(block, cut(), max_rank)
    if search == "batched":
        # Imported here: the batched search is built from this module's parts.
        from .batched_search import batched_search

        return batched_search(matrix, cut, max_rank, rng, list(start_cols), kept,
                              max_kept_growth, rank_hint)
    moves = ROOK_MOVES if search == "rook" else 0
    return _pivot_search(matrix, cut, max_rank, rng, list(start_cols), moves, kept,
                         max_kept_growth)


def _block_cut(abs_tol, matrix):
    """The pivot cut as a function of what has been read: fixed, or following the block;
    never below the round-off of the largest modulus read (``_cut``)."""
    # max_abs is a Python float: the round-off level is that of the values read.
    if callable(abs_tol):
        return lambda: _cut(float(abs_tol(matrix.max_abs)), matrix.max_abs, matrix.dtype)
    return lambda: _cut(abs_tol, matrix.max_abs, matrix.dtype)


def _full_search(block, abs_tol, max_rank):
    # abs_tol is the cut taken after the block was read: already at the round-off level of
    # its largest modulus, which is the first pivot.
    residual = tl.copy(block)
    rows, cols = [], []
    for _ in range(max_rank):
        row, col = argmax_abs(residual)
        pivot = residual[row, col]
        if not _accept_pivot(pivot, row, col, rows, cols, abs_tol):
            break
        residual = residual - tl.reshape(residual[:, col], (-1, 1)) * tl.reshape(
            residual[row] / pivot, (1, -1)
        )
    return np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64)


def _cut(abs_tol, scale, dtype=None):
    """``abs_tol``, raised to the round-off level of ``scale`` (the largest modulus read),
    in ``dtype`` (default: the scale's own)."""
    if isinstance(scale, float):  # max_abs, on every cut: no NumPy scalar needed
        return max(abs_tol, ROUND_OFF_PIVOT * _round_off(abs(scale), dtype or np.float64))
    host = np.abs(np.asarray(scale) if isinstance(scale, np.generic) else to_host(scale))
    return max(abs_tol, ROUND_OFF_PIVOT * _round_off(float(host), dtype or host.dtype))


def _round_off(scale, dtype):
    """The rounding error of a value of modulus ``scale`` in ``dtype``: its epsilon times
    it, and never below the smallest subnormal. Below the smallest normal number rounding
    is absolute: a cut of 100 epsilons of data of a few subnormal units underflowed to 0,
    and pivots of a unit or two of rounding made singular pivot blocks (LinAlgError)."""
    return max(_eps(dtype) * scale, _smallest_subnormal(dtype))


@functools.lru_cache(maxsize=16)
def _eps(dtype):
    """Machine epsilon of ``dtype`` (float32 at least), as a Python float: ``np.finfo`` on
    every pivot cut was 2% of a cheap cross's time."""
    return float(np.finfo(np.promote_types(dtype, np.float32)).eps)


@functools.lru_cache(maxsize=16)
def _smallest_subnormal(dtype):
    """The smallest positive value of ``dtype`` (float32 at least), as a Python float."""
    return float(np.finfo(np.promote_types(dtype, np.float32)).smallest_subnormal)


def _accept_pivot(pivot, row, col, rows, cols, abs_tol):
    """Record a pivot unless it is below the tolerance (the first always counts, so the rank
    is at least 1). Returns whether the search goes on: not after a zero pivot."""
    size = float(to_host(tl.abs(pivot)))
    if rows and size <= abs_tol:
        return False
    rows.append(row)
    cols.append(col)
    return size > 0


class _Residual:
    """``M - L R`` read one column or row at a time (adaptive cross approximation).

    ``L`` (m, p) holds the residual columns divided by their pivots, ``R`` (p, n) the residual
    rows; each read is corrected by one matrix-vector product.
    """

    def __init__(self, matrix):
        self.matrix = matrix
        self.left = None
        self.right = None

    def column(self, col, pivot_rows):
        values = self.matrix.column(col)
        if self.left is not None:
            values = values - tl.dot(self.left, self.right[:, col])
        return _masked_abs(values, pivot_rows), values

    def row(self, row, pivot_cols):
        values = self.matrix.row(row)
        if self.left is not None:
            values = values - tl.dot(self.left[row], self.right)
        return _masked_abs(values, pivot_cols), values

    def add(self, column, row, pivot):
        column = tl.reshape(column / pivot, (-1, 1))
        row = tl.reshape(row, (1, -1))
        if self.left is None:
            self.left, self.right = column, row
        else:
            self.left = tl.concatenate([self.left, column], axis=1)
            self.right = tl.concatenate([self.right, row], axis=0)


def _masked_abs(values, excluded):
    """Host moduli with already-pivoted positions set to -1 (never chosen again)."""
    moduli = np.abs(to_host(values)).astype(np.float64, copy=False)  # np.abs made a copy
    moduli[excluded] = -1.0
    return moduli


def _pivot_search(matrix, cut, max_rank, rng, start_cols, moves, kept=None,
                  max_kept_growth=None):
    """Column or rook search; ``cut()`` is the pivot cut given what has been read."""
    residual = _Residual(matrix)
    rows, cols = [], []
    n_cols = matrix.shape[1]
    drawn = []
    if kept is not None:
        drawn = _first_random_col(kept, start_cols, max_rank, n_cols, rng)
        _keep_pivots(residual, kept, cut, max_rank, rows, cols, max_kept_growth, drawn)
    for _ in range(max_rank - len(rows)):
        col = _next_start(start_cols, cols, n_cols, rng, drawn)
        col_abs, column = residual.column(col, rows)
        row = int(col_abs.argmax())
        column_moves = moves
        if moves == 0 and rows and col_abs[row] <= cut():
            if not _inconclusive(matrix, col, col_abs[row], cut()):
                break  # partial pivoting: this column decides, its row need not be read
            column_moves = 1  # a column too small to tell: ask its row
        row, col, column, row_values = _rook_moves(residual, row, col, col_abs, column, rows,
                                                   cols, column_moves, max_kept_growth)
        pivot = column[row]
        if not _accept_pivot(pivot, row, col, rows, cols, cut()):
            break
        if moves == 0 and not start_cols:
            # Chain as adaptive cross approximation does: read next the column where this
            # pivot's row has its largest other residual (in development runs of
            # bench_cross's P2 and P4, 10 starts each, fewer evaluations than random next
            # columns, and a narrower spread between starts).
            start_cols.append(int(_masked_abs(row_values, cols).argmax()))
        residual.add(column, row_values, pivot)
    return np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64)


def _inconclusive(matrix, col, residual_max, cut):
    """Whether a column below the cut is too small to end the search.

    The cut is relative to the largest modulus read in the block. A column whose own
    entries are far smaller (a random TT at d=80 spans 13 orders of magnitude, and a
    random column is usually tiny) stays below it whatever the residual's rank: it only
    decides if it is also captured relative to its own magnitude.
    """
    column_max = float(np.abs(to_host(matrix.column(col))).max())
    if matrix.max_abs == 0:
        return False
    # residual_max * max_abs > cut * column_max, without the product that overflows near
    # 1e306 (column_max <= max_abs: the column was read).
    return residual_max > cut * (column_max / matrix.max_abs)


def _first_random_col(kept, start_cols, max_rank, n_cols, rng):
    """The search's first random column, drawn ahead so that it is read with the kept
    pivots' crosses: one batch less per bond (with an executor, a round of chunks less).

    The search draws it only after taking every kept pivot (a kept pivot not taken is
    the next start, and the search chains from there): drawn ahead only for a single
    kept pivot (the first sweep's: its start pivot, the largest of many random
    entries), below ``max_rank`` and with no other start column; drawn among the other
    columns, it is then the very column the search would draw (and a wasted read in the
    rare case that the pivot is dropped). Returns ``[col]`` or ``[]``.
    """
    # Sets, not np.unique: a few positions, on every bond.
    kept_rows, kept_cols = (set(np.asarray(positions, dtype=np.int64).tolist())
                            for positions in kept)
    if not len(kept_rows) == len(kept_cols) == 1 or max_rank < 2 or n_cols < 2:
        return []
    if any(int(col) not in kept_cols for col in start_cols):
        return []
    return [_next_start([], sorted(kept_cols), n_cols, rng)]


def _keep_pivots(residual, kept, cut, max_rank, rows, cols, max_growth=None, more_cols=()):
    """Take the kept pivots that stay above ``cut()``, largest residual first; with
    ``max_growth``, such that their interpolation coefficients stay within it.
    ``more_cols`` are read in the same batch (the search's first column)."""
    # Sorted positions read increasing keys, which the cache finds fastest.
    kept_rows, kept_cols = (np.sort(np.asarray(positions, dtype=np.int64)) for positions in kept)
    if not (kept_rows.size and kept_cols.size):
        return
    matrix = residual.matrix
    columns, row_block = matrix.crosses(kept_rows, kept_cols, more_cols)
    # Which kept pivots survive depends only on the block where they cross: eliminate it
    # on the host, then build the residual's factors for the survivors in one solve.
    host = to_host(columns)
    chosen_rows, chosen_cols = _greedy_lu(host[kept_rows], cut(), max_rank)
    left = _interpolation(columns, kept_rows, chosen_rows, chosen_cols)
    if max_growth is not None and left is not None and _largest(left) > max_growth:
        # Rare: a kept pivot far below its columns' largest residuals (a start pivot at
        # d=80). Choose again, checking each pivot against its whole column.
        chosen_rows, chosen_cols = _greedy_lu(host, cut(), max_rank, kept_rows, max_growth)
        left = _interpolation(columns, kept_rows, chosen_rows, chosen_cols)
    if left is None:
        return
    residual.left = left
    residual.right = take_rows(row_block, chosen_rows)
    rows.extend(int(row) for row in kept_rows[chosen_rows])
    cols.extend(int(col) for col in kept_cols[chosen_cols])


def _interpolation(columns, kept_rows, chosen_rows, chosen_cols):
    """``C[:, J] C[I, J]^{-1}`` for the chosen kept pivots (None if there are none): the
    residual's left factor, and the interpolation coefficients of its rows.

    The result does not change when ``C`` is scaled, so it is brought near 1 first (by a
    power of two, exactly): the LU of a cross of subnormal values (data near 2**-1040)
    raised LinAlgError ("Singular matrix") on a block that is not singular.
    """
    if not chosen_rows:
        return None
    chosen_columns = take_cols(columns, chosen_cols)
    cross = take_rows(chosen_columns, kept_rows[chosen_rows])
    exponent = exponent_of(cross)
    chosen_columns = times_power_of_two(chosen_columns, -exponent)
    cross = times_power_of_two(cross, -exponent)
    return tl.transpose(tl.solve(tl.transpose(cross), tl.transpose(chosen_columns)))


def _largest(tensor):
    return float(np.abs(to_host(tensor)).max())


def _greedy_lu(block, abs_tol, max_rank, allowed_rows=None, max_growth=None):
    """Full-pivoting LU of a small host matrix: the pivot positions above ``abs_tol``.

    With ``allowed_rows``, pivots are taken among those rows only (returned as positions in
    it), and with ``max_growth`` a pivot must also be at least ``1 / max_growth`` of the
    largest residual of its column over all rows; the elimination stops at the first
    pivot that is not.
    """
    block = np.array(block, dtype=np.promote_types(block.dtype, np.float64))
    allowed = None if allowed_rows is None else np.asarray(allowed_rows)
    n_allowed = block.shape[0] if allowed is None else allowed.size
    rows, cols = [], []
    for _ in range(min(max_rank, n_allowed, block.shape[1])):
        # Every row allowed (the usual case): the block itself, not a copy per pivot.
        candidates = block if allowed is None else block[allowed]
        i, j = divmod(int(np.abs(candidates).argmax()), candidates.shape[1])
        pivot = candidates[i, j]
        if abs(pivot) <= abs_tol or pivot == 0:
            break
        if max_growth is not None and abs(pivot) * max_growth < np.abs(block[:, j]).max():
            break
        rows.append(i)
        cols.append(j)
        # np.outer's product, without its ravel and dispatch (a pivot of a small block).
        block -= block[:, j, None] * (block[i if allowed is None else allowed[i]] / pivot)
    return rows, cols


def _next_start(start_cols, cols, n_cols, rng, drawn=()):
    """The next start column: the first of ``start_cols`` not pivoted yet, else a random
    one (``drawn`` holds one drawn ahead, used once)."""
    while start_cols:
        col = int(start_cols.pop(0))
        if col not in cols:
            return col
    if drawn:
        col = int(drawn.pop())
        if col not in cols:
            return col
    free = np.ones(n_cols, dtype=bool)
    free[cols] = False
    free = free.nonzero()[0]  # what np.setdiff1d gives, without its sorts
    return int(free[rng.integers(free.size)])


def _rook_moves(residual, row, col, col_abs, column, rows, cols, moves, max_growth=None):
    """From the largest entry of a column read, alternate row and column maxima until an
    entry is the largest in both (at most ``moves`` more columns).

    With ``max_growth``, a pivot smaller than its row's largest residual by more than that
    factor moves on even when ``moves`` are spent (up to :data:`ROOK_MOVES` more): such a
    pivot makes the pivot block ill-conditioned and multiplies the residual's round-off by
    the factor. Column search met one on a rank-3 block of singular values 72, 60, 42: a
    third pivot of 6e-5 next to row entries of 10 left a round-off residual of 4e-10, which
    a tolerance of 1e-12 then took as a fourth pivot (a rank above the true one).
    """
    row_abs, row_values = residual.row(row, cols)
    for move in range(moves + ROOK_MOVES):
        best_col = int(row_abs.argmax())
        if row_abs[best_col] <= col_abs[row] or best_col == col:
            break
        if move >= moves and not _poor_pivot(col_abs[row], row_abs[best_col], max_growth):
            break
        col = best_col
        col_abs, column = residual.column(col, rows)
        best_row = int(col_abs.argmax())
        if col_abs[best_row] <= row_abs[col] or best_row == row:
            break
        row = best_row
        row_abs, row_values = residual.row(row, cols)
    return row, col, column, row_values


def _poor_pivot(pivot_abs, row_max, max_growth):
    """Whether a pivot is below its row's largest residual by more than ``max_growth``
    (compared as a ratio: ``max_growth * pivot_abs`` overflows for entries near 1e306)."""
    return max_growth is not None and row_max / max_growth > pivot_abs
