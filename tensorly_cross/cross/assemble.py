"""TT cores from index sets: one batched evaluation, then interpolation.

With pivot blocks ``P_k = A[left[k+1], right[k]]`` and fibers ``C_k = A[left[k], :, right[k]]``
the cross interpolation is ``A ~= C_0 P_0^{-1} C_1 P_1^{-1} ... C_{d-1}``. For left-nested
sets, ``P_k`` is a set of rows of the unfolded ``C_k``; with ``C_k = Q R`` the core
``C_k P_k^{-1} = Q Q[pos]^{-1}``, which stays well defined even when ``C_k`` is rank
deficient (an over-estimated rank) and is as well conditioned as maxvol/prrLU made it.
"""

import numpy as np
import tensorly as tl

from .._backend import take_cols, take_rows
from .basis import interpolation_matrix, right_divide
from .block import assemble_block_cores
from .indices import cartesian_join, fiber_indices, mode_column, positions_in


def assemble_cores(lazy, indices, fibers=None, singular=None):
    """The TT cores interpolating ``lazy`` on ``indices`` (a :class:`CrossIndices`).

    All fibers (and, for non-nested sets, all pivot blocks) are read in ONE call to
    ``lazy.evaluate``; every operation after it is autograd-visible on PyTorch.
    ``fibers``: the fibers ``A[left[k], :, right[k]]`` as ``(r_k, n_k, r_{k+1})`` tensors,
    when the caller has them already (a TCI sweep reads them whole): no read then.
    ``singular``: a list, appended ``(bond, pivot rank, fiber rank)`` for each bond of
    nested sets whose pivots do not span its fibers (the cores do not interpolate there).
    """
    if indices.block:
        return assemble_block_cores(lazy, indices)
    if indices.nested is None or fibers is None or any(fiber is None for fiber in fibers):
        fibers, pivots = _read(lazy, indices)
    if indices.nested == "left":
        return _left_nested_cores(fibers, indices, singular)
    if indices.nested == "right":
        return _right_nested_cores(fibers, indices, singular)
    rank = indices.rank
    return [
        right_divide(tl.reshape(fibers[k], (-1, rank[k + 1])), pivots[k], fibers[k].shape)
        for k in range(indices.ndim - 1)
    ] + [fibers[-1]]


def _read(lazy, indices):
    """The fibers, and for non-nested sets the pivot blocks, in one batched read."""
    shape, d, rank = indices.shape, indices.ndim, indices.rank
    strides = getattr(lazy, "key_strides", None)
    if indices.nested is not None and strides is not None:
        return _fibers_by_key(lazy, indices, strides), None
    batches = [fiber_indices(indices.left[k], shape[k], indices.right[k]) for k in range(d)]
    if indices.nested is None:
        batches += [cartesian_join(indices.left[k + 1], indices.right[k]) for k in range(d - 1)]
    pieces = _split(lazy.evaluate(np.concatenate(batches, axis=0)),
                    [batch.shape[0] for batch in batches])
    fibers = [tl.reshape(pieces[k], (rank[k], shape[k], rank[k + 1])) for k in range(d)]
    pivots = [tl.reshape(pieces[d + k], (rank[k + 1], rank[k + 1]))
              for k in range(d - 1)] if indices.nested is None else None
    return fibers, pivots


def _split(values, sizes):
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    return [values[offsets[i] : offsets[i + 1]] for i in range(len(sizes))]


def _fibers_by_key(lazy, indices, strides):
    """The fibers ``C_k``, read in one call by packed key from an :class:`EvaluationCache`.

    Each fiber is read with its index sets in increasing key order, so that the cache
    finds the keys without sorting them (here they are usually all cached: a sweep has
    just read them), and is put back in the sets' order after.
    """
    shape, d, rank = indices.shape, indices.ndim, indices.rank
    # ndarray methods, not np.argsort: its Python layers ran 4d times per assembly.
    orders = [((indices.left[k] @ strides[:k]).argsort(),
               (indices.right[k] @ strides[k + 1 :]).argsort()) for k in range(d)]
    sorted_sets = [(indices.left[k][left], indices.right[k][right])
                   for k, (left, right) in enumerate(orders)]
    keys = _fiber_keys(sorted_sets, shape, strides)
    check = getattr(lazy, "check_strides", None)  # hashed keys: their second hash, alike
    checks = None if check is None else np.concatenate(_fiber_keys(sorted_sets, shape, check))

    def multi_indices_at(positions):
        return np.concatenate([fiber_indices(left, shape[k], right)
                               for k, (left, right) in enumerate(sorted_sets)])[positions]

    pieces = _split(lazy.evaluate_keys(np.concatenate(keys), multi_indices_at, checks),
                    [block.shape[0] for block in keys])
    fibers = []
    for k, (left, right) in enumerate(orders):
        unfolded = tl.reshape(pieces[k], (rank[k], shape[k] * rank[k + 1]))
        unfolded = take_rows(unfolded, left.argsort())
        unfolded = take_cols(tl.reshape(unfolded, (rank[k] * shape[k], rank[k + 1])),
                             right.argsort())
        fibers.append(tl.reshape(unfolded, (rank[k], shape[k], rank[k + 1])))
    return fibers


def _fiber_keys(sorted_sets, shape, strides):
    """Linear keys (``multi_index @ strides``) of each fiber's entries, in C order."""
    return [((left @ strides[:k])[:, None, None] + strides[k] * np.arange(shape[k])[:, None]
             + right @ strides[k + 1 :]).reshape(-1) for k, (left, right) in enumerate(sorted_sets)]


def _left_nested_cores(fibers, indices, singular=None):
    cores = []
    for k, fiber in enumerate(fibers[:-1]):
        r_left, size, r_right = tl.shape(fiber)
        rows = cartesian_join(indices.left[k], mode_column(size))
        pos = positions_in(indices.left[k + 1], rows)
        core = _interpolating_basis(tl.reshape(fiber, (r_left * size, r_right)), pos,
                                    k, singular)
        cores.append(tl.reshape(core, (r_left, size, r_right)))
    return cores + [fibers[-1]]


def _right_nested_cores(fibers, indices, singular=None):
    cores = [fibers[0]]
    for k in range(1, len(fibers)):
        r_left, size, r_right = tl.shape(fibers[k])
        cols = cartesian_join(mode_column(size), indices.right[k])
        pos = positions_in(indices.right[k - 1], cols)
        unfolded = tl.transpose(tl.reshape(fibers[k], (r_left, size * r_right)))
        core = tl.transpose(_interpolating_basis(unfolded, pos, k - 1, singular))
        cores.append(tl.reshape(core, (r_left, size, r_right)))
    return cores


def _interpolating_basis(matrix, pos, bond, singular):
    """``matrix @ pinv(matrix[pos])`` through an orthonormal basis of its column space;
    a bond whose pivots do not span it is noted in ``singular`` (a list, or None)."""
    found = None if singular is None else []
    core = interpolation_matrix(matrix, pos, found)
    if found:
        singular.append((bond, *found[0]))
    return core
