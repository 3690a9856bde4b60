"""Orthonormal bases of fiber blocks, robust to (numerical) rank deficiency.

A fiber block of ``r`` columns may span fewer than ``r`` dimensions: the requested rank
is too high, or the column multi-indices happen to be degenerate. An orthonormal basis
from QR would then carry columns of pure rounding noise, which differs between backends
and BLAS builds. Here the basis is the numerical column space only, so the pivots and
cores it leads to are the same on every backend.
"""

import numpy as np
import tensorly as tl

from .._backend import carries_gradient, host_svd, svd, take_rows, to_host
from ..maxvol import maxvol
from .scaling import exponent_of, times_power_of_two

# Singular values below this fraction of the largest count as rounding noise (float64;
# lower precisions use ROUND_OFF_RANK machine epsilons, see ``rank_rtol``).
RANK_RTOL = 1e-12
ROUND_OFF_RANK = 100
# Above this condition number a pivot block is inverted by a truncated pseudo-inverse
# (float64; lower precisions keep about three digits, see ``max_condition``).
_MAX_PIVOT_CONDITION = 1e12


def rank_rtol(dtype):
    """The relative singular-value cut of :func:`column_rank` for data of ``dtype``: a
    float32 block of exact rank 1 has round-off singular values near 1e-7, far above the
    float64 cut, and taken as rank they made the solves blow up and autograd return NaN."""
    return max(RANK_RTOL, ROUND_OFF_RANK * _eps(dtype))


def max_condition(dtype):
    """The largest condition number of a pivot block solved as is, for data of ``dtype``."""
    return min(_MAX_PIVOT_CONDITION, 1e-3 / _eps(dtype))


def _eps(dtype):
    return float(np.finfo(np.promote_types(np.dtype(dtype), np.float32)).eps)


def column_rank(matrix):
    """Numerical rank of a small (m, r) block, from its singular values (on the host)."""
    host = to_host(matrix)
    singular = host_svd(host, compute_uv=False)
    if singular.size == 0 or singular[0] == 0:
        return 0
    return int(np.count_nonzero(singular > singular[0] * rank_rtol(host.dtype)))


def column_basis(matrix, rank=None):
    """An orthonormal (m, rank) basis of the numerical column space (autograd-visible)."""
    n_cols = tl.shape(matrix)[1]
    rank = column_rank(matrix) if rank is None else rank
    if rank == n_cols:
        return tl.qr(matrix)[0]
    if carries_gradient(matrix):
        return _differentiable_basis(matrix, rank)
    left = svd(matrix, full_matrices=False)[0]
    return left[:, :rank]


def _differentiable_basis(matrix, rank):
    """``matrix @ V_k / s_k`` with the leading right singular vectors and values held fixed:
    the same basis as the SVD's ``U_k`` (to round-off), whose span moves with ``matrix``
    to first order; the gradient of a rank-deficient SVD divides by differences of its
    repeated zero singular values (NaN, which reached every encoder weight). Formed on
    ``matrix`` scaled by a power of two (exact): ``1 / s_k`` of subnormal data overflowed."""
    _, singular, right = host_svd(to_host(matrix), full_matrices=False)
    exponent = -exponent_of(singular)  # brings the largest singular value near 1
    fixed = np.conj(right[:rank]).T / np.ldexp(singular[:rank], exponent)
    scaled = times_power_of_two(matrix, exponent)
    return tl.dot(scaled, tl.tensor(fixed, **tl.context(matrix)))


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


def interpolation_matrix(matrix, pos, singular=None):
    """``B`` with ``B[pos] ~ I`` and ``matrix = B @ matrix[pos]``: ``matrix @ pinv(matrix[pos])``.

    Computed on an orthonormal basis of the column space (``basis @ pinv(basis[pos])``),
    which is as well conditioned as the pivots allow and well defined for rank-deficient
    blocks; zero for a zero block. Where the rows ``pos`` do not span that basis, ``B`` is
    a truncated pseudo-inverse's and ``matrix = B @ matrix[pos]`` fails; a list given as
    ``singular`` is then appended ``(rank of the pivot rows, rank of the matrix)``.
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
    condition = np.linalg.cond(to_host(block))
    limit = max_condition(to_host(block).dtype)
    if condition >= limit:
        # The pivots do not span the basis (degenerate values): a truncated pseudo-inverse.
        if singular is not None:
            singular.append((column_rank(block), rank))
        return tl.dot(basis, truncated_pinv(block))
    if rank < n_cols and condition**2 >= limit:
        # The normal equations below would square the condition number: singular.
        return _pivot_pinv_interpolation(matrix, pos, rank, singular)
    if rank == n_cols:
        # Solve against the pivot block instead of inverting it: one differentiable op.
        return tl.transpose(tl.solve(tl.transpose(block), tl.transpose(basis)))
    # pinv of the (r, rank) block through the normal equations of a well-conditioned basis.
    gram = tl.dot(tl.transpose(tl.conj(block)), block)
    return tl.dot(basis, tl.solve(gram, tl.transpose(tl.conj(block))))


def _pivot_pinv_interpolation(matrix, pos, rank, singular):
    """``matrix @ pinv(matrix[pos])``, truncated as :func:`truncated_pinv`, for a
    rank-deficient matrix whose basis rows at ``pos`` are too ill-conditioned for the
    normal equations (which square their condition number).

    Such a basis block comes from indices chosen on slightly other data. The basis is
    accurate only to round-off over the matrix's smallest singular value, so its pivot rows
    can see a direction through that noise alone, and its pseudo-inverse amplifies it; the
    pivot rows of the matrix itself carry no such noise. Where they span fewer than
    ``rank`` directions, ``(kept, rank)`` is appended to ``singular`` (a list, or None).
    """
    pinv, kept = _cut_pinv(take_rows(matrix, pos))
    if kept < rank and singular is not None:
        singular.append((kept, rank))
    return tl.dot(matrix, pinv)


def truncated_pinv(block):
    """The pseudo-inverse of ``block`` without its singular values below the largest over
    :func:`max_condition` (zero for a zero block).

    The singular vectors come from a host SVD and are held fixed: ``V_k (U_k^H B V_k)^-1
    U_k^H`` is the truncated pseudo-inverse (to round-off) and differentiable through the
    small well-conditioned middle block, where a differentiable SVD of a singular block
    gives NaN gradients.
    """
    return _cut_pinv(block)[0]


def _cut_pinv(block):
    """:func:`truncated_pinv`, and how many singular values it kept."""
    host = to_host(block)
    left, singular, right = host_svd(host, full_matrices=False)
    cut = (singular[0] if singular.size else 0) / max_condition(host.dtype)
    kept = int(np.count_nonzero(singular > cut))
    if kept == 0:
        return tl.zeros(tuple(reversed(tl.shape(block))), **tl.context(block)), 0
    context = tl.context(block)
    left_fixed = tl.tensor(np.conj(left[:, :kept]).T, **context)  # U_k^H
    right_fixed = tl.tensor(np.conj(right[:kept]).T, **context)  # V_k
    middle = tl.dot(tl.dot(left_fixed, block), right_fixed)  # ~ diag(s_k)
    return tl.dot(right_fixed, tl.solve(middle, left_fixed)), kept


def right_divide(matrix, block, out_shape):
    """``matrix @ inv(block)`` by a solve; a guarded pseudo-inverse if ``block`` is singular."""
    if np.linalg.cond(to_host(block)) < max_condition(to_host(block).dtype):
        result = tl.transpose(tl.solve(tl.transpose(block), tl.transpose(matrix)))
    else:
        result = tl.dot(matrix, truncated_pinv(block))
    return tl.reshape(result, tuple(out_shape))
