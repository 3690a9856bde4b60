"""Block (vector-valued) ALS cross: the last mode is read whole at every position.

For a tensor ``A[i_0, ..., i_{d-1}, f]`` whose last mode indexes the channels of one
vector-valued function (the features of an encoder at a grid position), the index sets
live on the position modes only and every fiber is read for all ``F`` channels at once
(after Dolgov & Savostyanov's block TT-cross): a left-to-right step keeps the maxvol rows of
the ``r`` leading singular directions of the ``(r_k n_k, r_{k+1} F)`` unfolding, so the
channel index travels with the core being updated. One read of a position serves ``F``
entries, so an encoder runs once per position where an entry-wise cross would run it once
per channel.

The left sets fix the bonds (``r_{k+1}`` rows each); a right set only probes the columns of a
fiber block, each of its rows bringing ``F`` columns, so it holds ``r_{k+1}`` positions (or
``oversample`` times as many) or all there are to its right if fewer: a bond can exceed the
number of positions to its right, as a TT of ``(..., F)`` allows. A right-to-left step picks
the positions of the maxvol columns of the ``(r_k, n_k r_{k+1} F)`` unfolding, then random
others up to the count. More probes make each core a least-squares fit over more columns
rather than an interpolation of few: with one channel (``oversample.py``) this is how a
scalar tensor's fixed-rank cross is oversampled.

The TT is assembled with the channels in the last core, ``(r_{d-1}, n_{d-1}, F)``, followed by
an identity ``(F, F, 1)`` core: a TTTensor of shape ``(n_0, ..., n_{d-1}, F)``.
"""

import math
import warnings

import numpy as np
import tensorly as tl

from .._backend import svd, take_rows, to_host
from .._validation import outside_stacklevel
from .basis import max_condition, pivot_rows, right_divide, truncated_pinv
from .indices import CrossIndices, cartesian_join, fiber_indices, mode_column, positions_in
from .init import clip_ranks, random_distinct_multi_indices
from .ranks import expand_rank
from .scaling import exponent_of, times_power_of_two
from .slices import in_few_slices, sliced_right_sets


def block_ranks(rank, positions, channels, shown_shape=None):
    """Bond ranks ``(1, r_1, ..., r_{d-1}, 1)`` over the position modes, clipped (with a
    warning) to what the unfoldings of the ``(*positions, channels)`` tensor can hold;
    ``shown_shape``: the shape the warning names (the user's, for a one-channel view)."""
    requested = expand_rank(rank, positions, clip=False)
    clipped = clip_ranks(tuple(positions) + (channels,), requested[:-1] + [channels, 1])
    clipped = clipped[:-2] + [1]
    if clipped != requested:
        warnings.warn(f"rank {tuple(requested)} exceeds what the unfoldings of a tensor of "
                      f"shape {shown_shape or (*positions, channels)} can hold; using rank "
                      f"{tuple(clipped)}.",
                      stacklevel=outside_stacklevel())
    return clipped


def probe_count(bond, oversample):
    """Positions in a right set: ``oversample`` times its bond, rounded up."""
    return math.ceil(bond * oversample)


def block_random_indices(positions, rank, channels, rng, oversample=1.0, max_slices=None):
    """Random starting sets: left sets of the bonds' sizes, right sets ``oversample`` times
    as large or as large as the positions to their right allow (with ``max_slices``, each
    extending at most that many rows of the next)."""
    d = len(positions)
    left = [random_distinct_multi_indices(positions[:k], rank[k], rng) for k in range(d)]
    sizes = [min(probe_count(rank[k + 1], oversample), math.prod(positions[k + 1 :]))
             for k in range(d)]
    if max_slices is None:
        right = [random_distinct_multi_indices(positions[k + 1 :], sizes[k], rng)
                 for k in range(d)]
    else:
        right = sliced_right_sets(positions, sizes[:-1], max_slices, rng)
    return CrossIndices(tuple(positions), left, right, nested=None, block=int(channels))


def block_fiber_indices(indices, k):
    """Multi-indices of ``A[left[k], :, right[k], :]``, ordered ``(r_k, n_k, r_{k+1}, F)``."""
    positions = fiber_indices(indices.left[k], indices.shape[k], indices.right[k])
    return cartesian_join(positions, mode_column(indices.block))


def block_half_sweep(lazy, indices, direction, rng, oversample=1.0, max_slices=None):
    """Update the position index sets in place by one block-ALS half sweep; right sets get
    ``oversample`` times their bond's positions; ``max_slices`` as in ``slices.py``."""
    shape, rank = indices.shape, indices.rank
    if direction == "lr":
        for k in range(indices.ndim - 1):
            unfolded = tl.reshape(_read(lazy, indices, k), (rank[k] * shape[k], -1))
            parents = np.arange(rank[k] * shape[k]) // shape[k]
            rows = in_few_slices(_leading_rows_among(unfolded, rank[k + 1], rng), parents,
                                 max_slices)
            indices.left[k + 1] = cartesian_join(indices.left[k], mode_column(shape[k]))[rows]
    else:
        for k in range(indices.ndim - 1, 0, -1):
            candidates = cartesian_join(mode_column(shape[k]), indices.right[k])
            parents = np.arange(candidates.shape[0]) % indices.right[k].shape[0]
            choose = _probe_positions_among(_read(lazy, indices, k), parents,
                                            probe_count(rank[k], oversample), rng)
            indices.right[k - 1] = candidates[in_few_slices(choose, parents, max_slices)]
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
        unfolded = tl.reshape(values[offsets[k] : offsets[k + 1]], (rank[k] * shape[k], -1))
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
    probes = indices.right[k].shape[0]
    return tl.reshape(values, (indices.rank[k], indices.shape[k], probes, indices.block))


def _leading_rows_among(unfolded, count, rng):
    """``choose(allowed)`` for :func:`in_few_slices`: leading-direction rows."""

    def choose(allowed):
        matrix = unfolded if allowed is None else take_rows(unfolded, allowed)
        return _leading_rows(matrix, count, rng)

    return choose


def _probe_positions_among(fibers, parents, count, rng):
    """``choose(allowed)`` for :func:`in_few_slices`: probe positions, among the positions
    of the allowed parents (all positions of those probes, so ``allowed`` is all of them)."""

    def choose(allowed):
        if allowed is None:
            return _probe_positions(fibers, count, rng)
        kept = np.unique(parents[allowed])
        return _probe_positions(fibers[:, :, kept, :], count, rng)

    return choose


def _leading_rows(matrix, count, rng):
    """``count`` rows spanning the ``count`` leading left singular directions of ``matrix``."""
    left, singular, _ = svd(matrix, full_matrices=False)
    leading = left[:, :count] * singular[:count]
    missing = count - tl.shape(leading)[1]
    if missing > 0:  # fewer columns than the bond: zero columns, filled by random rows
        zeros = tl.zeros((tl.shape(leading)[0], missing), **tl.context(leading))
        leading = tl.concatenate([leading, zeros], axis=1)
    return pivot_rows(leading, rng)


def _probe_positions(fibers, count, rng):
    """``count`` positions (rows of ``(n_k, probes)``) whose ``F`` columns each keep the
    ``(r_k, n_k probes F)`` unfolding at full rank: the maxvol columns, by position.

    Choosing by the unfolding that the next left-to-right step reads, rather than by its
    leading directions, keeps a direction of the bond that lives on a few positions (an
    edge, a border) in view: the leading-direction choice lost one for good (a plateau at
    2e-2 on a QTT of a padded convolution that this choice recovers to 3e-15).
    """
    r_left, size, n_probes, n_channels = tl.shape(fibers)
    columns = pivot_rows(tl.transpose(tl.reshape(fibers, (r_left, -1))), rng)
    chosen = _unique_in_order(columns // n_channels)
    count = min(count, size * n_probes)
    if len(chosen) < count:  # several channels of one position: explore new positions
        others = np.setdiff1d(np.arange(size * n_probes), chosen)
        extra = rng.choice(others, size=count - len(chosen), replace=False)
        chosen = np.concatenate([chosen, extra])
    return chosen[:count].astype(np.int64)


def _unique_in_order(values):
    _, first = np.unique(values, return_index=True)
    return values[np.sort(first)]


def _row_interpolation(matrix, pivots, count):
    """``matrix @ pinv(matrix[pivots])`` through a QR of the (count, m) pivot rows'
    conjugate transpose: ``P^H = Q R`` gives ``pinv(P) = Q R^-H`` (plain transposes gave
    a wrong TT, error 1.1, on complex data). The result does not change when both are
    scaled alike, so they are brought near 1 first: the QR's R of subnormal rows has an
    inverse beyond float64's range."""
    matrix = times_power_of_two(matrix, -exponent_of(take_rows(matrix, pivots)))
    chosen = take_rows(matrix, pivots)
    host = to_host(chosen)
    if np.linalg.cond(host) >= max_condition(host.dtype):
        # Singular pivot rows (a constant field): QR's gradient would be NaN there.
        return tl.reshape(tl.dot(matrix, truncated_pinv(chosen)), (tl.shape(matrix)[0], count))
    q, r = tl.qr(tl.transpose(tl.conj(chosen)))
    return right_divide(tl.dot(matrix, q), tl.transpose(tl.conj(r)),
                        (tl.shape(matrix)[0], count))


class BlockSweeper:
    """The block-ALS sweep in the driver's calling convention."""

    def __init__(self, rng, oversample=1.0, max_slices=None):
        self.rng, self.oversample, self.max_slices = rng, oversample, max_slices

    def __call__(self, lazy, indices, direction, cores):
        block_half_sweep(lazy, indices, direction, self.rng, self.oversample, self.max_slices)
