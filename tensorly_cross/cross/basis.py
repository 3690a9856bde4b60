"""Orthonormal bases of fiber blocks, robust to (numerical) rank deficiency.

A fiber block of ``r`` columns may span fewer than ``r`` dimensions: the requested rank
is too high, or the column multi-indices happen to be degenerate. An orthonormal basis
from QR would then carry columns of pure rounding noise, which differs between backends
and BLAS builds. Here the basis is the numerical column space only, so the pivots and
cores it leads to are the same on every backend.
"""

import numpy as np
import tensorly as tl

from .._backend import host_svd, svd, take_rows, to_host
from ..maxvol import maxvol

# Singular values below this fraction of the largest count as rounding noise.
RANK_RTOL = 1e-12
# Above this condition number a pivot block is inverted by a truncated pseudo-inverse.
_MAX_PIVOT_CONDITION = 1e12


def column_rank(matrix):
    """Numerical rank of a small (m, r) block, from its singular values (on the host)."""
    singular = host_svd(to_host(matrix), compute_uv=False)
    if singular.size == 0 or singular[0] == 0:
        return 0
    return int(np.count_nonzero(singular > singular[0] * RANK_RTOL))


def column_basis(matrix, rank=None):
    """An orthonormal (m, rank) basis of the numerical column space (autograd-visible)."""
    n_cols = tl.shape(matrix)[1]
    rank = column_rank(matrix) if rank is None else rank
    if rank == n_cols:
        return tl.qr(matrix)[0]
    left = svd(matrix, full_matrices=False)[0]
    return left[:, :rank]


def pivot_rows(matrix, rng):
    """``r`` distinct rows of an (m, r) block: maxvol rows of its column space, then, if the
    block is rank-deficient, random further rows (exploration for the next sweep)."""
    n_rows, n_cols = tl.shape(matrix)
    rank = column_rank(matrix)
    rows = np.zeros(0, dtype=np.int64)
    if rank:
        rows, _ = maxvol(column_basis(matrix, rank), tol=1.05, max_iter=100)
    if rank < n_cols:
        others = np.setdiff1d(np.arange(n_rows), rows)
        rows = np.concatenate([rows, rng.choice(others, size=n_cols - rank, replace=False)])
    return rows.astype(np.int64)


def interpolation_matrix(matrix, pos):
    """``B`` with ``B[pos] ~ I`` and ``matrix = B @ matrix[pos]``: ``matrix @ pinv(matrix[pos])``.

    Computed on an orthonormal basis of the column space (``basis @ pinv(basis[pos])``),
    which is as well conditioned as the pivots allow and well defined for rank-deficient
    blocks; zero for a zero block.
    """
    n_rows, n_cols = tl.shape(matrix)
    # The matrix and the R of its QR share their singular values: the rank comes from the
    # small R, and a full-rank matrix's basis is the Q already computed.
    q_factor, r_factor = tl.qr(matrix)
    rank = column_rank(r_factor)
    if rank == 0:
        return tl.zeros((n_rows, n_cols), **tl.context(matrix))
    basis = q_factor if rank == n_cols else column_basis(matrix, rank)
    block = take_rows(basis, pos)
    if np.linalg.cond(to_host(block)) >= _MAX_PIVOT_CONDITION:
        # The pivots do not span the basis (degenerate values): a truncated pseudo-inverse.
        return tl.dot(basis, _truncated_pinv(block))
    if rank == n_cols:
        # Solve against the pivot block instead of inverting it: one differentiable op.
        return tl.transpose(tl.solve(tl.transpose(block), tl.transpose(basis)))
    # pinv of the (r, rank) block through the normal equations of a well-conditioned basis.
    gram = tl.dot(tl.transpose(tl.conj(block)), block)
    return tl.dot(basis, tl.solve(gram, tl.transpose(tl.conj(block))))


def _truncated_pinv(block):
    """The pseudo-inverse of ``block`` without its singular values below the largest over
    ``_MAX_PIVOT_CONDITION`` (zero for a zero block)."""
    left, singular, right = svd(block, full_matrices=False)
    host = to_host(singular)
    kept = int(np.count_nonzero(host > (host[0] if host.size else 0) / _MAX_PIVOT_CONDITION))
    if kept == 0:
        return tl.zeros(tuple(reversed(tl.shape(block))), **tl.context(block))
    return tl.dot(tl.transpose(tl.conj(right[:kept])) / singular[:kept],
                  tl.transpose(tl.conj(left[:, :kept])))


def right_divide(matrix, block, out_shape):
    """``matrix @ inv(block)`` by a solve; a guarded pseudo-inverse if ``block`` is singular."""
    if np.linalg.cond(to_host(block)) < _MAX_PIVOT_CONDITION:
        result = tl.transpose(tl.solve(tl.transpose(block), tl.transpose(matrix)))
    else:
        result = tl.dot(matrix, _truncated_pinv(block))
    return tl.reshape(result, tuple(out_shape))
