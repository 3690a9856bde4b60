"""Block (vector-valued) ALS cross: the last mode is read whole at every position.

For a tensor ``A[i_0, ..., i_{d-1}, f]`` whose last mode indexes the channels of one
vector-valued function (the features of an encoder at a grid position), the index sets
live on the position modes only and every fiber is read for all ``F`` channels at once
(Dolgov & Savostyanov's block TT-cross). The channel index travels with the core being
updated: a left-to-right step keeps the ``r`` leading rows of the
``(r_k n_k, r_{k+1} F)`` unfolding, a right-to-left step the ``r`` leading columns of the
``(r_k F, n_k r_{k+1})`` one. One read of a position serves ``F`` entries, so an encoder
runs once per position where an entry-wise cross would run it once per channel.

The TT is assembled with the channels in the last core, ``(r_{d-1}, n_{d-1}, F)``, followed by
an identity ``(F, F, 1)`` core: a TTTensor of shape ``(n_0, ..., n_{d-1}, F)``.
"""

import numpy as np
import tensorly as tl

from .._backend import take_rows
from .basis import pivot_rows, right_divide
from .indices import cartesian_join, fiber_indices, mode_column, positions_in


def block_fiber_indices(indices, k):
    """Multi-indices of ``A[left[k], :, right[k], :]``, ordered ``(r_k, n_k, r_{k+1}, F)``."""
    positions = fiber_indices(indices.left[k], indices.shape[k], indices.right[k])
    return cartesian_join(positions, mode_column(indices.block))


def block_half_sweep(lazy, indices, direction, rng):
    """Update the position index sets in place by one block-ALS half sweep."""
    shape, rank, n_channels = indices.shape, indices.rank, indices.block
    if direction == "lr":
        for k in range(indices.ndim - 1):
            fibers = _read(lazy, indices, k)
            unfolded = tl.reshape(fibers, (rank[k] * shape[k], rank[k + 1] * n_channels))
            rows = _leading_rows(unfolded, rank[k + 1], rng)
            indices.left[k + 1] = cartesian_join(indices.left[k], mode_column(shape[k]))[rows]
    else:
        for k in range(indices.ndim - 1, 0, -1):
            fibers = tl.transpose(_read(lazy, indices, k), (1, 2, 0, 3))  # (n, r', r, F)
            unfolded = tl.reshape(fibers, (shape[k] * rank[k + 1], rank[k] * n_channels))
            cols = _leading_rows(unfolded, rank[k], rng)
            indices.right[k - 1] = cartesian_join(mode_column(shape[k]), indices.right[k])[cols]
    # The assembly interpolates on the left sets, nested since the first "lr" half sweep.
    indices.nested = "left"
    return indices


def assemble_block_cores(lazy, indices):
    """TT cores of shape ``(*indices.shape, F)`` from ONE batched read (autograd-visible).

    Core ``k < d - 1`` is ``M_k pinv(M_k[pivots])`` for the ``(r_k n_k, r_{k+1} F)``
    unfolding ``M_k`` of its fibers: every row of ``M_k`` written, in least squares over all
    channels, as a combination of the pivot rows; exact when ``M_k`` has rank ``r_{k+1}``
    and equal to the identity on the pivots (the TT interpolates there).
    """
    shape, d, rank, n_channels = indices.shape, indices.ndim, indices.rank, indices.block
    batches = [block_fiber_indices(indices, k) for k in range(d)]
    offsets = np.cumsum([0] + [batch.shape[0] for batch in batches])
    values = lazy.evaluate(np.concatenate(batches, axis=0))
    cores = []
    for k in range(d - 1):
        unfolded = tl.reshape(values[offsets[k] : offsets[k + 1]],
                              (rank[k] * shape[k], rank[k + 1] * n_channels))
        pivots = positions_in(indices.left[k + 1],
                              cartesian_join(indices.left[k], mode_column(shape[k])))
        core = _row_interpolation(unfolded, pivots, rank[k + 1])
        cores.append(tl.reshape(core, (rank[k], shape[k], rank[k + 1])))
    last = values[offsets[d - 1] : offsets[d]]
    cores.append(tl.reshape(last, (rank[d - 1], shape[d - 1], n_channels)))
    identity = tl.eye(n_channels, **tl.context(last))
    return cores + [tl.reshape(identity, (n_channels, n_channels, 1))]


def _read(lazy, indices, k):
    values = lazy.evaluate(block_fiber_indices(indices, k))
    rank = indices.rank
    return tl.reshape(values, (rank[k], indices.shape[k], rank[k + 1], indices.block))


def _leading_rows(matrix, count, rng):
    """``count`` rows spanning the ``count`` leading left singular directions of ``matrix``."""
    left, singular, _ = tl.svd(matrix, full_matrices=False)
    return pivot_rows(left[:, :count] * singular[:count], rng)


def _row_interpolation(matrix, pivots, count):
    """``matrix @ pinv(matrix[pivots])`` through a QR of the (count, m) pivot rows' transpose."""
    q, r = tl.qr(tl.transpose(take_rows(matrix, pivots)))
    return right_divide(tl.dot(matrix, q), tl.transpose(r), (tl.shape(matrix)[0], count))


class BlockSweeper:
    """The block-ALS sweep in the driver's calling convention."""

    def __init__(self, rng):
        self.rng = rng

    def __call__(self, lazy, indices, direction, cores):
        block_half_sweep(lazy, indices, direction, self.rng)
