"""Partial rank-revealing LU of a lazily read matrix: which rows and columns to pivot on.

``M ~= M[:, J] M[I, J]^{-1} M[I, :]``: pivots are added one at a time, each the largest
entry (full search) or a rook-optimal entry (largest in its row and its column) of the
current residual, until the next pivot is below an absolute tolerance or the rank cap.
References: Dolgov & Savostyanov (2020), "Parallel cross interpolation..."; Fernandez et
al. (2025), SciPost Phys. 18, 104, sec. 3.
"""

import numpy as np
import tensorly as tl

from .._backend import argmax_abs, to_host


def prrlu(matrix, abs_tol, max_rank, rng, search="rook", start_cols=(), max_moves=4):
    """Pivot rows and columns of a :class:`BondMatrix` (at least one pivot).

    Parameters
    ----------
    matrix : BondMatrix
    abs_tol : float
        Stop when the next pivot's modulus is ``<= abs_tol``.
    max_rank : int
    rng : numpy.random.Generator
        Picks rook starting columns after ``start_cols`` run out.
    search : {"rook", "full"}
        ``"full"`` reads the whole matrix; ``"rook"`` reads one column and one row per
        rook move.
    start_cols : sequence of int
        Columns tried first as rook starts (the previous sweep's pivots).

    Returns
    -------
    rows, cols : ndarray of int64
    """
    max_rank = min(max_rank, *matrix.shape)
    if search == "full":
        return _full_search(matrix.full(), abs_tol, max_rank)
    return _rook_search(matrix, abs_tol, max_rank, rng, list(start_cols), max_moves)


def _full_search(block, abs_tol, max_rank):
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
    moduli = np.abs(to_host(values)).astype(np.float64)
    moduli[excluded] = -1.0
    return moduli


def _rook_search(matrix, abs_tol, max_rank, rng, start_cols, max_moves):
    residual = _Residual(matrix)
    rows, cols = [], []
    n_cols = matrix.shape[1]
    for _ in range(max_rank):
        col = _next_start(start_cols, cols, n_cols, rng)
        row, col, column, row_values = _rook_moves(residual, col, rows, cols, max_moves)
        pivot = column[row]
        if not _accept_pivot(pivot, row, col, rows, cols, abs_tol):
            break
        residual.add(column, row_values, pivot)
    return np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64)


def _next_start(start_cols, cols, n_cols, rng):
    while start_cols:
        col = int(start_cols.pop(0))
        if col not in cols:
            return col
    free = np.setdiff1d(np.arange(n_cols), cols)
    return int(free[rng.integers(free.size)])


def _rook_moves(residual, col, rows, cols, max_moves):
    """Alternate column and row maxima until an entry is the largest in both."""
    col_abs, column = residual.column(col, rows)
    row = int(np.argmax(col_abs))
    row_abs, row_values = residual.row(row, cols)
    for _ in range(max_moves):
        best_col = int(np.argmax(row_abs))
        if row_abs[best_col] <= col_abs[row] or best_col == col:
            break
        col = best_col
        col_abs, column = residual.column(col, rows)
        best_row = int(np.argmax(col_abs))
        if col_abs[best_row] <= row_abs[col] or best_row == row:
            break
        row = best_row
        row_abs, row_values = residual.row(row, cols)
    return row, col, column, row_values
