"""The two-site block of one bond, seen as a matrix whose entries are read on demand."""

import numpy as np
import tensorly as tl

from .._backend import to_host
from .indices import cartesian_join, mode_column, positions_found


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
            self._strides = (strides[:row_modes], strides[row_modes:])
        self.shape = (self.row_multi.shape[0], self.col_multi.shape[0])
        self.max_abs = 0.0

    def entries(self, rows, cols):
        """The submatrix ``[rows][:, cols]`` (host int arrays) as a backend tensor."""
        return tl.reshape(self._read([(rows, cols)])[0], (len(rows), len(cols)))

    def column(self, col):
        return self._read([(np.arange(self.shape[0]), np.array([col]))])[0]

    def row(self, row):
        return self._read([(np.array([row]), np.arange(self.shape[1]))])[0]

    def full(self):
        return self.entries(np.arange(self.shape[0]), np.arange(self.shape[1]))

    def crosses(self, rows, cols):
        """``(M[:, cols], M[rows, :])`` in one batched evaluation."""
        every_row, every_col = np.arange(self.shape[0]), np.arange(self.shape[1])
        columns, row_block = self._read([(every_row, cols), (rows, every_col)])
        return (tl.reshape(columns, (self.shape[0], len(cols))),
                tl.reshape(row_block, (len(rows), self.shape[1])))

    def _read(self, blocks):
        """Flat values of each ``(rows, cols)`` block (C order), in one evaluation."""
        sizes = [len(rows) * len(cols) for rows, cols in blocks]
        # The index sets were checked when made: skip the per-read range check.
        if self._keys is None or not sum(sizes):
            values = self.lazy.evaluate_checked(np.concatenate(
                [cartesian_join(self.row_multi[rows], self.col_multi[cols])
                 for rows, cols in blocks]))
        else:
            row_keys, col_keys = self._keys
            keys = np.concatenate([(row_keys[rows][:, None] + col_keys[cols]).reshape(-1)
                                   for rows, cols in blocks])
            values = self.lazy.evaluate_keys(keys, self._multi_indices(blocks, sizes))
        if sum(sizes):
            self.max_abs = max(self.max_abs, float(np.abs(to_host(values)).max()))
        if len(blocks) == 1:
            return [values]
        offsets = np.cumsum([0] + sizes)
        return [values[offsets[i] : offsets[i + 1]] for i in range(len(blocks))]

    def _multi_indices(self, blocks, sizes):
        """``positions -> multi-indices`` of the entries of the concatenated blocks."""

        def at(positions):
            if len(blocks) == 1:
                return self._block_multi_indices(*blocks[0], positions)
            multi = np.empty((positions.shape[0], self._n_modes()), dtype=np.int64)
            start = 0
            for (rows, cols), size in zip(blocks, sizes, strict=True):
                inside = (positions >= start) & (positions < start + size)
                multi[inside] = self._block_multi_indices(rows, cols, positions[inside] - start)
                start += size
            return multi

        return at

    def _block_multi_indices(self, rows, cols, positions):
        row, col = np.divmod(positions, len(cols))
        return np.concatenate([self.row_multi[rows[row]], self.col_multi[cols[col]]], axis=1)

    def row_positions(self, multi):
        """Positions among the rows of the row multi-indices in ``multi`` that are rows here
        (in the order given)."""
        return self._positions(multi, self.row_multi, 0)

    def col_positions(self, multi):
        """Positions among the columns of the column multi-indices in ``multi``."""
        return self._positions(multi, self.col_multi, 1)

    def _positions(self, multi, candidates, side):
        if self._keys is None:
            return positions_found(multi, candidates)
        # Sorted keys: one binary search, no sort.
        sorted_keys = self._keys[side]
        keys = multi @ self._strides[side]
        where = np.minimum(np.searchsorted(sorted_keys, keys), sorted_keys.shape[0] - 1)
        return where[sorted_keys[where] == keys]

    def _n_modes(self):
        return self.row_multi.shape[1] + self.col_multi.shape[1]


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

    def crosses(self, rows, cols):
        columns, row_block = self.matrix.crosses(cols, rows)
        return tl.transpose(row_block), tl.transpose(columns)
