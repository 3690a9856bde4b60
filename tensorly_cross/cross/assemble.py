"""TT cores from index sets: one batched evaluation, then interpolation.

With pivot blocks ``P_k = A[left[k+1], right[k]]`` and fibers ``C_k = A[left[k], :, right[k]]``
the cross interpolation is ``A ~= C_0 P_0^{-1} C_1 P_1^{-1} ... C_{d-1}``. For left-nested
sets, ``P_k`` is a set of rows of the unfolded ``C_k``; with ``C_k = Q R`` the core
``C_k P_k^{-1} = Q Q[pos]^{-1}``, which stays well defined even when ``C_k`` is rank
deficient (an over-estimated rank) and is as well conditioned as maxvol/prrLU made it.
"""

import numpy as np
import tensorly as tl

from .._backend import to_host
from .basis import interpolation_matrix
from .indices import cartesian_join, fiber_indices, mode_column, positions_in

# Above this condition number the pivot block is inverted by a truncated pseudo-inverse.
_MAX_PIVOT_CONDITION = 1e12


def assemble_cores(lazy, indices):
    """The TT cores interpolating ``lazy`` on ``indices`` (a :class:`CrossIndices`).

    All fibers (and, for non-nested sets, all pivot blocks) are read in ONE call to
    ``lazy.evaluate``; every operation after it is autograd-visible on PyTorch.
    """
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
        _right_divide(tl.reshape(fibers[k], (-1, rank[k + 1])), pivots[k], fibers[k].shape)
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


def _right_divide(matrix, block, out_shape):
    """``matrix @ inv(block)`` by a solve; a guarded pseudo-inverse if ``block`` is singular."""
    host_block = to_host(block)
    if np.linalg.cond(host_block) < _MAX_PIVOT_CONDITION:
        result = tl.transpose(tl.solve(tl.transpose(block), tl.transpose(matrix)))
    else:
        left, singular, right = tl.svd(block, full_matrices=False)
        host_singular = to_host(singular)
        kept = int(np.count_nonzero(host_singular > host_singular[0] / _MAX_PIVOT_CONDITION))
        if kept == 0:
            return tl.zeros(tuple(out_shape), **tl.context(matrix))
        inverse = tl.dot(tl.transpose(tl.conj(right[:kept])) / singular[:kept],
                         tl.transpose(tl.conj(left[:, :kept])))
        result = tl.dot(matrix, inverse)
    return tl.reshape(result, tuple(out_shape))
