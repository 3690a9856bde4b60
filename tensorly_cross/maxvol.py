"""Maximum-volume row selection: ``maxvol`` (square) and ``rect_maxvol`` (rectangular)."""

import warnings

import numpy as np
import tensorly as tl

from ._backend import (
    argmax_abs,
    backend_name,
    carries_gradient,
    check_concrete,
    dtype_kind,
    host_svd,
    lu_pivot_rows,
    stop_gradient,
    subtract_outer_and_argmax_,
    svd,
    take_rows,
    to_host,
)
from ._validation import check_float, check_int, check_tall_matrix
from .errors import RankDeficiencyWarning


def maxvol(matrix, tol=1.05, max_iter=100):
    """Rows of a tall matrix whose square submatrix has (locally) maximal volume.

    Parameters
    ----------
    matrix : tensor of shape (n, r), n >= r
        Any TensorLy-backend tensor (real or complex); the coefficients live on its backend,
        device and dtype (float64 for an integer or bool matrix, on every backend). On
        PyTorch, the coefficients of a matrix that requires grad are differentiable.
    tol : float, default 1.05
        Stop when every coefficient satisfies ``|B[i, j]| <= tol``; must be >= 1.
    max_iter : int, default 100
        Upper bound on row swaps after the LU start (0 returns the LU pivots).

    Returns
    -------
    rows : ndarray of int64, shape (r,)
        Distinct row indices.
    coefficients : tensor of shape (n, r)
        ``B`` with ``matrix ~= B @ matrix[rows]`` and ``B[rows]`` the identity.

    Raises
    ------
    TypeError
        If ``matrix`` is not a tensor of the active backend, is half precision or a masked
        array, or is a traced JAX value (under ``jax.grad``/``jax.jit``: the rows are
        chosen on the host).
    ValueError
        If ``matrix`` is not 2-D, has fewer rows than columns, holds NaN/inf or is on
        PyTorch's ``meta`` device, or if ``tol < 1`` or ``max_iter < 0``.

    Warns
    -----
    RankDeficiencyWarning
        If ``matrix`` has numerical rank ``k < r``. The rows are then the LU pivots (the
        first ``k`` of them span the row space), no swaps are made, and
        ``B = matrix @ pinv(matrix[rows])``: ``matrix ~= B @ matrix[rows]`` still holds but
        ``B[rows]`` is a projector of rank ``k`` rather than the identity.

    Notes
    -----
    The start is LU with partial pivoting (``O(n r^2)``, LAPACK through the backend). Each
    swap of row ``rows[j]`` for row ``i`` multiplies the volume by ``|B[i, j]| > tol`` and
    updates ``B`` by one rank-1 correction (``O(n r)``), so no ``n x n`` matrix is ever
    formed and the loop ends after finitely many swaps. When the LU pivots reveal an
    ill-conditioned matrix (ratio above ``1e3``) the rows are chosen on an orthonormal basis
    of its columns (one QR), which selects by the same volume criterion and keeps
    ``B`` accurate to working precision whatever ``cond(matrix)``.

    References
    ----------
    Goreinov, Oseledets, Savostyanov, Tyrtyshnikov, Zamarashkin (2010),
    "How to find a good submatrix".

    Examples
    --------
    >>> import numpy as np
    >>> from tensorly_cross import maxvol
    >>> matrix = np.random.default_rng(0).standard_normal((1000, 8))
    >>> rows, coefficients = maxvol(matrix, tol=1.05)
    >>> rows.shape, bool(np.abs(coefficients).max() <= 1.05)
    ((8,), True)
    >>> bool(np.allclose(coefficients @ matrix[rows], matrix))
    True
    """
    matrix = as_floating(matrix, "matrix")
    n_rows, n_cols = check_tall_matrix(matrix, "matrix")
    tol = check_float(tol, "tol", minimum=1.0)
    max_iter = check_int(max_iter, "max_iter", minimum=0)
    if n_cols == 0:
        return np.zeros(0, dtype=np.int64), matrix[:, :0]
    if not (carries_gradient(matrix) and backend_name() == "pytorch"):
        rows, coefficients, _ = _select_rows(matrix, tol, max_iter)
        return rows, coefficients
    # Swaps update B in place (rank-1 corrections autograd cannot replay; their graph would
    # also hold O(max_iter n r) memory): pick the rows without gradient, then redo the
    # final B = A inv(A[rows]) by the same route, in autograd-visible operations.
    rows, _, route = _select_rows(stop_gradient(matrix), tol, max_iter)
    return rows, _route_coefficients(matrix, rows, route)


def as_floating(matrix, name):
    """``matrix`` itself if floating point, else as float64 on its device (one dtype on
    every backend: PyTorch's LU refused integers, JAX made float32 of a bool matrix).

    Raises
    ------
    TypeError
        If ``matrix`` is not a tensor of the active backend, or is a traced JAX value.
    ValueError
        If ``matrix`` is a PyTorch tensor on the ``meta`` device.
    """
    if not tl.is_tensor(matrix):
        raise TypeError(
            f"{name} must be a tensor of the active TensorLy backend ({tl.get_backend()}), "
            f"got {type(matrix).__name__}."
        )
    check_concrete(matrix, name)
    if isinstance(matrix, np.matrix):
        # Its rows index as (1, r) matrices: the swaps failed with an IndexError.
        matrix = np.asarray(matrix)
    if dtype_kind(matrix) not in "biu":
        return matrix
    context = {
        key: value
        for key, value in tl.context(matrix).items()
        if key not in ("dtype", "requires_grad")
    }
    return tl.tensor(to_host(matrix).astype(np.float64), **context)


def _select_rows(matrix, tol, max_iter):
    """The maxvol rows, their coefficients, and the route ``(shift, kind)`` that computed
    them (see :func:`_route_coefficients`)."""
    n_rows, n_cols = tl.shape(matrix)
    shift, kind = 0, "direct"
    rows, pivot_sizes, candidates = lu_pivot_rows(matrix)
    largest = float(pivot_sizes.max())
    if not np.isfinite(largest):
        # LU itself overflowed (entries near float64's largest: its eliminations passed
        # it, and its later pivots came out inf or NaN). The entries are finite (checked):
        # their largest part sets the scale instead, and LU runs again on the rescaled
        # matrix (a part, not the modulus: |1.5e308 + 1.5e308j| is inf too).
        largest = _largest_part(matrix)
    low, high = safe_scale(pivot_sizes.dtype)
    if largest > 0 and not low < largest < high:
        # The coefficients do not depend on the matrix's scale: bring it near 1 by a power
        # of two (exact), since subnormal entries (1e-310) gave NaN coefficients.
        shift = -int(np.frexp(largest)[1])
        matrix = _rescale(matrix, shift)
        rows, pivot_sizes, candidates = lu_pivot_rows(matrix)
    if pivot_sizes.max() == 0 or pivot_sizes.max() > ILL_CONDITIONED * pivot_sizes.min():
        # Ill-conditioned or rank-deficient. maxvol only depends on the column space: with
        # A = QR, A inv(A[rows]) = Q inv(Q[rows]) and Q carries none of cond(A) into the
        # coefficients; R's singular values give A's numerical rank reliably.
        basis, triangular = tl.qr(matrix)
        rank = numerical_rank(triangular, n_rows)
        if rank < n_cols:
            _warn_rank_deficient(n_rows, n_cols, rank)
            return rows, _pinv_coefficients(matrix, rows), (shift, "pinv")
        matrix, kind = basis, "basis"
        rows, _, candidates = lu_pivot_rows(matrix)
    polish_swaps = 0
    if candidates is not None:
        rows, polish_swaps = _polish_on_candidates(matrix, rows, candidates, tol, max_iter)
    coefficients = _coefficients(matrix, rows)
    # One budget for both stages: each had max_iter swaps, twice the bound documented.
    rows, coefficients, n_swaps = _swap_until_dominant(coefficients, rows, tol,
                                                       max_iter - polish_swaps)
    if n_swaps > n_cols:
        # Many rank-1 updates accumulate rounding error; one fresh solve removes it.
        coefficients = _coefficients(matrix, rows)
    return rows, coefficients, (shift, kind)


def _largest_part(matrix):
    """The largest modulus among the real and imaginary parts of a finite matrix's
    entries (finite, where an entry's own modulus can overflow)."""
    host = to_host(matrix)
    return float(max(np.abs(host.real).max(), np.abs(host.imag).max()))


def _rescale(matrix, shift):
    """``matrix * 2**shift``, exact, in two factors (``2**1029`` overflows as one)."""
    for part in (shift // 2, shift - shift // 2):
        if part:
            matrix = matrix * float(np.ldexp(1.0, part))
    return matrix


def _route_coefficients(matrix, rows, route):
    """The coefficients of ``rows`` computed as :func:`_select_rows` did, without its
    in-place swaps: ``route = (shift, kind)``, ``kind`` one of ``"direct"`` (a solve against
    the pivot block), ``"basis"`` (the same on the Q of a QR) or ``"pinv"`` (rank-deficient)."""
    shift, kind = route
    matrix = _rescale(matrix, shift)
    if kind == "pinv":
        return _pinv_coefficients(matrix, rows)
    if kind == "basis":
        matrix = tl.qr(matrix)[0]
    return _coefficients(matrix, rows)


# Largest LU pivot outside this range: the matrix is rescaled first (round-off would
# leave the normal range in the solves).
SAFE_SCALE = (2.0**-500, 2.0**500)


def safe_scale(dtype):
    """:data:`SAFE_SCALE` for float64; for a narrower real ``dtype`` (float32) the same
    share of its exponent range, 2**-52 to 2**52: float64's bounds never rescaled a
    float32 matrix, whose entries near its subnormal range (below 2**-126) gave NaN
    coefficients, other rows or a LinAlgError."""
    max_exponent = np.finfo(dtype).maxexp
    if max_exponent >= np.finfo(np.float64).maxexp:
        return SAFE_SCALE
    bound = max_exponent // 2 - 12  # 500 for float64, as SAFE_SCALE
    return 2.0**-bound, 2.0**bound


# Ratio of LU pivot sizes above which maxvol works on an orthonormal basis instead.
ILL_CONDITIONED = 1e3


def numerical_rank(triangular, n_rows):
    """Rank of ``A = QR`` from the singular values of ``R``: those above ``max(n, r) eps s_1``."""
    singular = host_svd(to_host(triangular), compute_uv=False)
    if singular.size == 0 or singular[0] == 0:
        return 0
    threshold = singular[0] * max(n_rows, singular.size) * np.finfo(singular.dtype).eps
    return int(np.count_nonzero(singular > threshold))


def _warn_rank_deficient(n_rows, n_cols, rank):
    warnings.warn(
        RankDeficiencyWarning(
            f"matrix of shape {(n_rows, n_cols)} has numerical rank {rank} < {n_cols}; "
            "returning the LU pivots without swaps.",
            rank,
        ),
        stacklevel=3,
    )


def _coefficients(matrix, rows):
    """``B = matrix @ inv(matrix[rows])``, by one solve against the (r, r) pivot block."""
    pivot_block = take_rows(matrix, rows)
    # Invert the small (r, r) block by a solve, then one GEMM: BLAS-3 on the n rows is
    # several times faster than a triangular solve with n right-hand sides, and the
    # block is LU/maxvol-pivoted, so its inverse is as well conditioned as it gets.
    identity = tl.eye(tl.shape(pivot_block)[0], **tl.context(matrix))
    return tl.dot(matrix, tl.solve(pivot_block, identity))


def _pinv_coefficients(matrix, rows):
    """``B = matrix @ pinv(matrix[rows])`` through an SVD of the small pivot block."""
    pivot_block = take_rows(matrix, rows)
    left, singular, right = svd(pivot_block, full_matrices=False)
    cutoff = tl.max(singular) * max(tl.shape(matrix)) * np.finfo(to_host(singular).dtype).eps
    kept = int(np.count_nonzero(to_host(singular) > to_host(cutoff)))
    if kept == 0:
        # A zero matrix: B = 0, derived from the matrix so that it stays in its autograd
        # graph (tl.zeros with its context made a detached leaf that required grad).
        return matrix * 0
    # pinv(P) = V_k diag(1/s_k) U_k^H
    projected = tl.dot(matrix, tl.transpose(tl.conj(right[:kept])))
    return tl.dot(projected / singular[:kept], tl.transpose(tl.conj(left[:, :kept])))


def _polish_on_candidates(matrix, rows, candidates, tol, max_iter):
    """Swap rows within the tournament's finalists first.

    The finalists hold most of the maxvol rows; swaps among them cost
    ``O(len(candidates) r)`` instead of ``O(n r)`` and leave few for the full matrix.
    Returns the rows and the number of swaps made (at most ``max_iter``).
    """
    finalists = take_rows(matrix, candidates)
    order = np.argsort(candidates)
    local = order[np.searchsorted(candidates, rows, sorter=order)]
    local, _, n_swaps = _swap_until_dominant(_coefficients(finalists, local), local, tol,
                                             max_iter)
    return candidates[local], n_swaps


def _swap_until_dominant(coefficients, rows, tol, max_iter):
    """Swap rows while some ``|B[i, j]| > tol``; ``O(n r)`` per swap."""
    rows = rows.copy()
    n_swaps = 0
    row, col = argmax_abs(coefficients)
    for n_swaps in range(max_iter + 1):
        pivot = coefficients[row, col]
        if n_swaps == max_iter or float(to_host(tl.abs(pivot))) <= tol:
            break
        # Replacing rows[col] by row: B <- B - B[:, col] (B[row] - e_col) / B[row, col]
        # keeps B = A inv(A[rows]) and makes B[rows] the identity again.
        column = tl.copy(coefficients[:, col])
        update = tl.copy(coefficients[row])
        update = tl.index_update(update, tl.index[col], update[col] - 1)
        rows[col] = row
        coefficients, (row, col) = subtract_outer_and_argmax_(coefficients, column,
                                                              update / pivot)
    return rows, coefficients, n_swaps
