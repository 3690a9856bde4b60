"""Fixed-rank one-site cross (ALS-cross; Oseledets & Tyrtyshnikov 2010), the paper's variant.

Each step reads the fibers ``A[left[k], :, right[k]]`` in one batch, orthogonalises them
(QR) and lets maxvol pick the ``r`` rows (left-to-right) or columns (right-to-left) that
become the next nested index set. Exact in one sweep on tensors of exact TT rank ``<= r``.
"""

import tensorly as tl

from .basis import pivot_rows
from .indices import cartesian_join, fiber_indices, mode_column


def als_half_sweep(lazy, indices, direction, rng):
    """Update ``indices`` in place by one left-to-right (``"lr"``) or right-to-left sweep."""
    shape, d = indices.shape, indices.ndim
    rank = indices.rank
    if direction == "lr":
        for k in range(d - 1):
            fibers = _read_fibers(lazy, indices, k)
            unfolded = tl.reshape(fibers, (rank[k] * shape[k], rank[k + 1]))
            rows = pivot_rows(unfolded, rng)
            candidates = cartesian_join(indices.left[k], mode_column(shape[k]))
            indices.left[k + 1] = candidates[rows]
        indices.nested = "left"
    else:
        for k in range(d - 1, 0, -1):
            fibers = _read_fibers(lazy, indices, k)
            unfolded = tl.reshape(fibers, (rank[k], shape[k] * rank[k + 1]))
            cols = pivot_rows(tl.transpose(unfolded), rng)
            candidates = cartesian_join(mode_column(shape[k]), indices.right[k])
            indices.right[k - 1] = candidates[cols]
        indices.nested = "right"
    return indices


def _read_fibers(lazy, indices, k):
    values = lazy.evaluate(fiber_indices(indices.left[k], indices.shape[k], indices.right[k]))
    rank = indices.rank
    return tl.reshape(values, (rank[k], indices.shape[k], rank[k + 1]))


class ALSSweeper:
    """The fixed-rank sweep in the driver's calling convention."""

    def __init__(self, rng):
        self.rng = rng

    def __call__(self, lazy, indices, direction, cores):
        als_half_sweep(lazy, indices, direction, self.rng)
