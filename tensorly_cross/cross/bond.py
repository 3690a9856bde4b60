"""The two-site block of one bond, seen as a matrix whose entries are read on demand."""

import numpy as np
import tensorly as tl

from .._backend import to_host
from .indices import cartesian_join, mode_column


class BondMatrix:
    """Unfolding ``(r_k n_k) x (n_{k+1} r_{k+2})`` of ``A[left[k], :, :, right[k+1]]``.

    Rows are the multi-indices ``left[k] x {0..n_k-1}``, columns ``{0..n_{k+1}-1} x
    right[k+1]``. Every read is one batched evaluation; ``max_abs`` tracks the largest
    modulus read so far (the scale for relative pivot tolerances).
    """

    def __init__(self, lazy, left, left_size, right_size, right):
        self.lazy = lazy
        self.row_multi = cartesian_join(left, mode_column(left_size))
        self.col_multi = cartesian_join(mode_column(right_size), right)
        self.shape = (self.row_multi.shape[0], self.col_multi.shape[0])
        self.max_abs = 0.0

    def entries(self, rows, cols):
        """The submatrix ``[rows][:, cols]`` (host int arrays) as a backend tensor."""
        multi = cartesian_join(self.row_multi[rows], self.col_multi[cols])
        # The index sets were checked when made: skip the per-read range check.
        values = self.lazy.evaluate_checked(multi)
        if multi.shape[0]:
            self.max_abs = max(self.max_abs, float(np.abs(to_host(values)).max()))
        return tl.reshape(values, (len(rows), len(cols)))

    def column(self, col):
        return self.entries(np.arange(self.shape[0]), np.array([col]))[:, 0]

    def row(self, row):
        return self.entries(np.array([row]), np.arange(self.shape[1]))[0]

    def full(self):
        return self.entries(np.arange(self.shape[0]), np.arange(self.shape[1]))


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
