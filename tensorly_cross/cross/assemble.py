"""TT cores from index sets: one batched evaluation, then interpolation.

With pivot blocks ``P_k = A[left[k+1], right[k]]`` and fibers ``C_k = A[left[k], :, right[k]]``
the cross interpolation is ``A ~= C_0 P_0^{-1} C_1 P_1^{-1} ... C_{d-1}``. For left-nested
sets, ``P_k`` is a set of rows of the unfolded ``C_k``; with ``C_k = Q R`` the core
``C_k P_k^{-1} = Q Q[pos]^{-1}``, which stays well defined even when ``C_k`` is rank
deficient (an over-estimated rank) and is as well conditioned as maxvol/prrLU made it.
"""

import numpy as np
import tensorly as tl

from .basis import interpolation_matrix, right_divide
from .block import assemble_block_cores
from .indices import cartesian_join, fiber_indices, mode_column, positions_in


def assemble_cores(lazy, indices):
    """The TT cores interpolating ``lazy`` on ``indices`` (a :class:`CrossIndices`).

    All fibers (and, for non-nested sets, all pivot blocks) are read in ONE call to
    ``lazy.evaluate``; every operation after it is autograd-visible on PyTorch.
    """
    if indices.block:
        return assemble_block_cores(lazy, indices)
    shape, d = indices.shape, indices.ndim
    batches = [fiber_indices(indices.left[k], shape[k], indices.right[k]) for k in range(d)]
    if indices.nested is None:
        batches += [cartesian_join(indices.left[k + 1], indices.right[k]) for k in range(d - 1)]
    sizes = [batch.shape[0] for batch in batches]
    values = lazy.evaluate(np.concatenate(batches, axis=0))
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    pieces = [values[offsets[i] : offsets[i + 1]] for i in range(len(sizes))]
    rank = indices.rank
    fibers = [tl.reshape(pieces[k], (rank[k], shape[k], rank[k + 1])) for k in range(d)]
    if indices.nested == "left":
        return _left_nested_cores(fibers, indices)
    if indices.nested == "right":
        return _right_nested_cores(fibers, indices)
    pivots = [tl.reshape(pieces[d + k], (rank[k + 1], rank[k + 1])) for k in range(d - 1)]
    return [
        right_divide(tl.reshape(fibers[k], (-1, rank[k + 1])), pivots[k], fibers[k].shape)
        for k in range(d - 1)
    ] + [fibers[-1]]


def _left_nested_cores(fibers, indices):
    cores = []
    for k, fiber in enumerate(fibers[:-1]):
        r_left, size, r_right = tl.shape(fiber)
        rows = cartesian_join(indices.left[k], mode_column(size))
        pos = positions_in(indices.left[k + 1], rows)
        core = _interpolating_basis(tl.reshape(fiber, (r_left * size, r_right)), pos)
        cores.append(tl.reshape(core, (r_left, size, r_right)))
    return cores + [fibers[-1]]


def _right_nested_cores(fibers, indices):
    cores = [fibers[0]]
    for k in range(1, len(fibers)):
        r_left, size, r_right = tl.shape(fibers[k])
        cols = cartesian_join(mode_column(size), indices.right[k])
        pos = positions_in(indices.right[k - 1], cols)
        unfolded = tl.transpose(tl.reshape(fibers[k], (r_left, size * r_right)))
        core = tl.transpose(_interpolating_basis(unfolded, pos))
        cores.append(tl.reshape(core, (r_left, size, r_right)))
    return cores


def _interpolating_basis(matrix, pos):
    """``matrix @ pinv(matrix[pos])`` through an orthonormal basis of its column space."""
    return interpolation_matrix(matrix, pos)
