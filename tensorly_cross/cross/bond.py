"""The two-site block of one bond, seen as a matrix whose entries are read on demand."""

import itertools

import numpy as np
import tensorly as tl

from .._backend import take_cols, take_rows, to_host
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
            self._keys = self._checks = None
            row_order, col_order = _lexicographic_order(row_multi), _lexicographic_order(col_multi)
        else:
            row_modes = row_multi.shape[1]
            self._strides = (strides[:row_modes], strides[row_modes:])
            row_keys, col_keys = row_multi @ self._strides[0], col_multi @ self._strides[1]
            row_order, col_order = row_keys.argsort(), col_keys.argsort()
            self._keys = (row_keys[row_order], col_keys[col_order])
            # Hashed keys (2**63 entries or more) travel with a second hash, built alike.
            check = getattr(lazy, "check_strides", None)
            self._checks = None if check is None else (
                (row_multi @ check[:row_modes])[row_order],
                (col_multi @ check[row_modes:])[col_order])
        self.row_multi, self.col_multi = row_multi[row_order], col_multi[col_order]
        # Back from sorted positions to the joined sets' order, (left x mode) and (mode x right).
        self._unsort = (row_order.argsort(), col_order.argsort())
        self.shape = (self.row_multi.shape[0], self.col_multi.shape[0])
        self.max_abs, self.dtype = 0.0, None  # the largest modulus read, and its dtype
        # Whole columns and rows read so far, by position: a sweep's fibers come from them.
        self._columns, self._rows = {}, {}
        # Read ahead with a crosses batch, not handed out yet (nor counted in max_abs).
        self._ahead_columns, self._ahead_rows = {}, {}

    def entries(self, rows, cols):
        """The submatrix ``[rows][:, cols]`` (host int arrays) as a backend tensor."""
        return tl.reshape(self._read([(rows, cols)])[0], (len(rows), len(cols)))

    def column(self, col):
        # A column read whole before (by crosses) is not looked up in the cache again.
        if col not in self._columns:
            ahead = self._ahead_columns.pop(col, None)
            self._columns[col] = (
                self._read([(np.arange(self.shape[0]), np.array([col]))])[0] if ahead is None
                else self._scaled(ahead))
        return self._columns[col]

    def row(self, row):
        if row not in self._rows:
            ahead = self._ahead_rows.pop(row, None)
            self._rows[row] = (
                self._read([(np.array([row]), np.arange(self.shape[1]))])[0] if ahead is None
                else self._scaled(ahead))
        return self._rows[row]

    def full(self):
        return self.entries(np.arange(self.shape[0]), np.arange(self.shape[1]))

    def columns(self, cols):
        """``M[:, cols]`` as a backend tensor; the columns not read yet come in one batch."""
        unread = sorted({int(c) for c in cols} - self._columns.keys() - self._ahead_columns.keys())
        if unread:
            block = tl.reshape(self._read([(np.arange(self.shape[0]), np.array(unread))])[0],
                               (self.shape[0], len(unread)))
            self._columns.update((col, block[:, i]) for i, col in enumerate(unread))
        return tl.stack([self.column(int(col)) for col in cols], axis=1)

    def rows(self, rows):
        """``M[rows, :]`` as a backend tensor; the rows not read yet come in one batch."""
        unread = sorted({int(r) for r in rows} - self._rows.keys() - self._ahead_rows.keys())
        if unread:
            block = tl.reshape(self._read([(np.array(unread), np.arange(self.shape[1]))])[0],
                               (len(unread), self.shape[1]))
            self._rows.update((row, block[i]) for i, row in enumerate(unread))
        return tl.stack([self.row(int(row)) for row in rows], axis=0)

    def crosses(self, rows, cols, more_cols=(), more_rows=()):
        """``(M[:, cols], M[rows, :])`` in one batched evaluation, which also reads the
        columns ``more_cols`` and rows ``more_rows`` ahead for later :meth:`column` and
        :meth:`row` calls (a search's first column: one batch less). Those count in
        :attr:`max_abs` only when handed out, as if read then: the pivots of ``rows`` and
        ``cols`` are judged by the scale of their own crosses."""
        every_row, every_col = np.arange(self.shape[0]), np.arange(self.shape[1])
        more_cols = np.asarray(more_cols, dtype=np.int64)
        more_rows = np.asarray(more_rows, dtype=np.int64)
        columns, row_block, ahead_columns, ahead_rows = self._read(
            [(every_row, cols), (rows, every_col), (every_row, more_cols),
             (more_rows, every_col)], n_scaled=2)
        columns = tl.reshape(columns, (self.shape[0], len(cols)))
        row_block = tl.reshape(row_block, (len(rows), self.shape[1]))
        self._columns.update((int(col), columns[:, i]) for i, col in enumerate(cols))
        self._rows.update((int(row), row_block[i]) for i, row in enumerate(rows))
        ahead_columns = tl.reshape(ahead_columns, (self.shape[0], len(more_cols)))
        ahead_rows = tl.reshape(ahead_rows, (len(more_rows), self.shape[1]))
        self._ahead_columns.update((int(col), ahead_columns[:, i])
                                   for i, col in enumerate(more_cols))
        self._ahead_rows.update((int(row), ahead_rows[i]) for i, row in enumerate(more_rows))
        return columns, row_block

    def column_fiber(self, cols, left_size):
        """``A[left, :, right]`` as ``(r, left_size, len(cols))`` for the column positions
        ``cols`` (right = their multi-indices), from the columns already read."""
        values = [self._columns.get(int(col)) for col in cols]
        block = (tl.stack(values, axis=1) if all(v is not None for v in values)
                 else self.entries(np.arange(self.shape[0]), np.asarray(cols)))
        block = take_rows(block, self._unsort[0])
        return tl.reshape(block, (self.shape[0] // left_size, left_size, len(cols)))

    def row_fiber(self, rows, right_size):
        """``A[left, :, right]`` as ``(len(rows), right_size, r)`` for the row positions
        ``rows`` (left = their multi-indices), from the rows already read."""
        values = [self._rows.get(int(row)) for row in rows]
        block = (tl.stack(values, axis=0) if all(v is not None for v in values)
                 else self.entries(np.asarray(rows), np.arange(self.shape[1])))
        block = take_cols(block, self._unsort[1])
        return tl.reshape(block, (len(rows), right_size, self.shape[1] // right_size))

    def _read(self, blocks, n_scaled=None):
        """Flat values of each ``(rows, cols)`` block (C order), in one evaluation; the
        first ``n_scaled`` blocks (default: all) count in :attr:`max_abs`."""
        sizes = [len(rows) * len(cols) for rows, cols in blocks]
        # The index sets were checked when made: skip the per-read range check.
        if self._keys is None or not sum(sizes):
            values = self.lazy.evaluate_checked(np.concatenate(
                [cartesian_join(self.row_multi[rows], self.col_multi[cols])
                 for rows, cols in blocks]))
        else:
            # Empty blocks (a crosses read with nothing read ahead) add nothing to the
            # values but a mask each to the lookup of multi-indices: left out.
            filled = [(block, size) for block, size in zip(blocks, sizes, strict=True) if size]
            read, read_sizes = [block for block, _ in filled], [size for _, size in filled]
            keys = _block_sums(self._keys, read)
            checks = None if self._checks is None else _block_sums(self._checks, read)
            values = self.lazy.evaluate_keys(keys, self._multi_indices(read, read_sizes),
                                             checks)
        scaled = sum(sizes[:n_scaled])
        if scaled:
            self._scaled(values if scaled == sum(sizes) else values[:scaled])
        if len(blocks) == 1:
            return [values]
        offsets = list(itertools.accumulate(sizes, initial=0))
        return [values[offsets[i] : offsets[i + 1]] for i in range(len(blocks))]

    def _scaled(self, values):
        """``values``, after counting them in :attr:`max_abs` (and taking their dtype)."""
        host = to_host(values)
        self.max_abs = max(self.max_abs, float(np.abs(host).max()))
        self.dtype = host.dtype
        return values

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
        # Gathered into one array made first, not concatenated from two temporaries: at
        # d=80 a batch's (m, 80) multi-indices are hundreds of KiB, and np.concatenate of
        # two fresh gathers took 10x as long as these writes (3 large allocations, not 1).
        multi = np.empty((positions.shape[0], self._n_modes()), dtype=np.int64)
        n_row_modes = self.row_multi.shape[1]
        multi[:, :n_row_modes] = self.row_multi[rows[row]]
        multi[:, n_row_modes:] = self.col_multi[cols[col]]
        return multi

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
        where = np.minimum(sorted_keys.searchsorted(keys), sorted_keys.shape[0] - 1)
        return where[sorted_keys[where] == keys]

    def _n_modes(self):
        return self.row_multi.shape[1] + self.col_multi.shape[1]


def _block_sums(parts, blocks):
    """``row_part[rows][:, None] + col_part[cols]`` of each block, flattened, concatenated:
    the keys of the blocks' entries from a key's row and column parts."""
    row_part, col_part = parts
    sums = [(row_part[rows][:, None] + col_part[cols]).reshape(-1) for rows, cols in blocks]
    # One block (a column or a row: most reads) is its own sum, not a copy of it.
    return sums[0] if len(sums) == 1 else np.concatenate(sums)


def _lexicographic_order(multi):
    return np.lexsort(multi.T[::-1]) if multi.shape[1] else np.arange(multi.shape[0])


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

    @property
    def dtype(self):
        return self.matrix.dtype

    def entries(self, rows, cols):
        return tl.transpose(self.matrix.entries(cols, rows))

    def column(self, col):
        return self.matrix.row(col)

    def row(self, row):
        return self.matrix.column(row)

    def full(self):
        return tl.transpose(self.matrix.full())

    def columns(self, cols):
        return tl.transpose(self.matrix.rows(cols))

    def rows(self, rows):
        return tl.transpose(self.matrix.columns(rows))

    def crosses(self, rows, cols, more_cols=(), more_rows=()):
        columns, row_block = self.matrix.crosses(cols, rows, more_rows, more_cols)
        return tl.transpose(row_block), tl.transpose(columns)
