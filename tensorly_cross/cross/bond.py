"""The two-site block of one bond, seen as a matrix whose entries are read on demand."""

import numpy as np
import tensorly as tl

from .._backend import to_host
from .indices import cartesian_join, mode_column


class BondMatrix:
    """Unfolding ``(r_k n_k) x (n_{k+1} r_{k+2})`` of ``A[left[k], :, :, right[k+1]]``.

    Rows are the multi-indices ``left[k] x {0..n_k-1}``, columns ``{0..n_{k+1}-1} x
    right[k+1]``, each sorted lexicographically. Every read is one batched evaluation;
    ``max_abs`` tracks the largest modulus read so far (the scale for relative pivot
    tolerances).

    Over an :class:`EvaluationCache` with one-word keys, reads go by packed key: a key is
    linear in the multi-index, so it splits into a row part plus a column part, and a read
    needs neither the joined multi-indices nor their packing. With sorted rows and
    columns, a read of sorted positions asks for increasing keys, which the cache finds
    without sorting them.
    """

    def __init__(self, lazy, left, left_size, right_size, right):
        self.lazy = lazy
        strides = getattr(lazy, "key_strides", None)
        row_multi = cartesian_join(left, mode_column(left_size))
        col_multi = cartesian_join(mode_column(right_size), right)
        if strides is None:
            self.row_multi, self.col_multi = _sorted_rows(row_multi), _sorted_rows(col_multi)
            self._keys = None
        else:
            row_modes = row_multi.shape[1]
            self.row_multi, row_keys = _sorted_by_key(row_multi, strides[:row_modes])
            self.col_multi, col_keys = _sorted_by_key(col_multi, strides[row_modes:])
            self._keys = (row_keys, col_keys)
        self.shape = (self.row_multi.shape[0], self.col_multi.shape[0])
        self.max_abs = 0.0

    def entries(self, rows, cols):
        """The submatrix ``[rows][:, cols]`` (host int arrays) as a backend tensor."""
        if not (len(rows) and len(cols)):
            return tl.reshape(self.lazy.evaluate_checked(np.zeros((0, self._n_modes()),
                                                                  dtype=np.int64)),
                              (len(rows), len(cols)))
        # The index sets were checked when made: skip the per-read range check.
        if self._keys is None:
            values = self.lazy.evaluate_checked(
                cartesian_join(self.row_multi[rows], self.col_multi[cols]))
        else:
            row_keys, col_keys = self._keys
            keys = (row_keys[rows][:, None] + col_keys[cols]).reshape(-1)
            values = self.lazy.evaluate_keys(keys, self._multi_indices(rows, cols))
        self.max_abs = max(self.max_abs, float(np.abs(to_host(values)).max()))
        return tl.reshape(values, (len(rows), len(cols)))

    def _multi_indices(self, rows, cols):
        """``positions -> multi-indices`` of the entries of ``[rows][:, cols]`` (C order)."""

        def at(positions):
            row, col = np.divmod(positions, len(cols))
            return np.concatenate([self.row_multi[rows[row]], self.col_multi[cols[col]]], axis=1)

        return at

    def _n_modes(self):
        return self.row_multi.shape[1] + self.col_multi.shape[1]

    def column(self, col):
        return self.entries(np.arange(self.shape[0]), np.array([col]))[:, 0]

    def row(self, row):
        return self.entries(np.array([row]), np.arange(self.shape[1]))[0]

    def full(self):
        return self.entries(np.arange(self.shape[0]), np.arange(self.shape[1]))


def _sorted_by_key(multi, strides):
    keys = multi @ strides
    order = np.argsort(keys, kind="stable")
    return multi[order], keys[order]


def _sorted_rows(multi):
    return multi[np.lexsort(multi.T[::-1])] if multi.shape[1] else multi


class TransposedBondMatrix:
    """The transpose of a :class:`BondMatrix`, reading from the same cache.

    A right-to-left sweep searches pivots on the transpose, so that its rook starts are
    the previous pivot *rows*, whose entries the previous bond has already read.
    """

    def __init__(self, matrix):
        self.matrix = matrix
        self.shape = matrix.shape[::-1]

    @property
    def max_abs(self):
        return self.matrix.max_abs

    def entries(self, rows, cols):
        return tl.transpose(self.matrix.entries(cols, rows))

    def column(self, col):
        return self.matrix.row(col)

    def row(self, row):
        return self.matrix.column(row)

    def full(self):
        return tl.transpose(self.matrix.full())
