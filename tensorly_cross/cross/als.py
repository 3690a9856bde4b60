"""Fixed-rank one-site cross (ALS-cross; Oseledets & Tyrtyshnikov 2010), the paper's variant.

Each step reads the fibers ``A[left[k], :, right[k]]`` in one batch, orthogonalises them
(QR) and lets maxvol pick the ``r`` rows (left-to-right) or columns (right-to-left) that
become the next nested index set. Exact in one sweep on tensors of exact TT rank ``<= r``.
"""

import numpy as np
import tensorly as tl

from .indices import cartesian_join, fiber_indices, mode_column
from .slices import pivots_in_few_slices


def als_half_sweep(lazy, indices, direction, rng, max_slices=None):
    """Update ``indices`` in place by one left-to-right (``"lr"``) or right-to-left sweep;
    with ``max_slices``, each new set extends at most that many of its neighbour's
    multi-indices (see ``slices.py``)."""
    shape, d = indices.shape, indices.ndim
    rank = indices.rank
    if direction == "lr":
        for k in range(d - 1):
            fibers = _read_fibers(lazy, indices, k)
            unfolded = tl.reshape(fibers, (rank[k] * shape[k], rank[k + 1]))
            # candidate row i extends left[k][i // n_k]
            parents = np.arange(rank[k] * shape[k]) // shape[k]
            rows = pivots_in_few_slices(unfolded, parents, max_slices, rng)
            candidates = cartesian_join(indices.left[k], mode_column(shape[k]))
            indices.left[k + 1] = candidates[rows]
        indices.nested = "left"
    else:
        for k in range(d - 1, 0, -1):
            fibers = _read_fibers(lazy, indices, k)
            unfolded = tl.reshape(fibers, (rank[k], shape[k] * rank[k + 1]))
            # candidate column j extends right[k][j % r_{k+1}]
            parents = np.arange(shape[k] * rank[k + 1]) % rank[k + 1]
            cols = pivots_in_few_slices(tl.transpose(unfolded), parents, max_slices, rng)
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

    def __init__(self, rng, max_slices=None):
        self.rng, self.max_slices = rng, max_slices

    def __call__(self, lazy, indices, direction, cores):
        als_half_sweep(lazy, indices, direction, self.rng, self.max_slices)
