"""Rectangular maxvol: grow a maxvol row set until every coefficient row is short."""

import warnings

import numpy as np
import tensorly as tl

from ._backend import argmax_host, stop_gradient, take_rows, to_host
from ._validation import check_float, check_int, check_tall_matrix
from .errors import RankDeficiencyWarning
from .maxvol import as_floating, maxvol


def rect_maxvol(matrix, tol=1.1, min_add=0, max_add=None, maxvol_tol=1.05, maxvol_iter=100):
    """Rows of a tall matrix whose (k, r) submatrix, k >= r, has large rectangular volume.

    Starts from :func:`maxvol` and adds, one at a time, the row whose coefficient row is
    longest, until every row of ``B`` has Euclidean norm ``<= tol``.

    Parameters
    ----------
    matrix : tensor of shape (n, r), n >= r
        Any TensorLy-backend tensor (real or complex; integer and bool as float64).
    tol : float, default 1.1
        Stop adding rows once ``max_i ||B[i]||_2 <= tol``; must be >= 1.
    min_add : int, default 0
        Add at least this many rows (beyond the ``r`` maxvol rows).
    max_add : int or None, default None
        Add at most this many rows; ``None`` means ``n - r``.
    maxvol_tol, maxvol_iter : float, int
        Passed to :func:`maxvol` for the square start.

    Returns
    -------
    rows : ndarray of int64, shape (k,)
        Distinct rows: the ``r`` maxvol rows first, then the added rows in order.
    coefficients : tensor of shape (n, k)
        ``B = matrix @ pinv(matrix[rows])``, so ``matrix ~= B @ matrix[rows]``; on PyTorch,
        differentiable with respect to a ``matrix`` that requires grad.

    Raises
    ------
    TypeError
        For the inputs :func:`maxvol` refuses by type (not a tensor of the active backend,
        half precision, a masked array, a traced JAX value).
    ValueError
        For the inputs :func:`maxvol` rejects, ``tol < 1``, a negative ``min_add``, or
        ``max_add`` outside ``[min_add, n - r]``.

    Warns
    -----
    RankDeficiencyWarning
        If ``matrix`` is numerically rank-deficient: the maxvol rows are returned with no
        additions (the update below needs a full-column-rank submatrix).

    Notes
    -----
    Adding row ``i`` with ``b = B[i]`` and ``s = ||b||^2`` updates, for every row ``j``,
    ``B[j] <- [B[j] - t_j b / (1 + s), t_j / (1 + s)]`` with ``t_j = B[j] b^H``
    (Sherman-Morrison), and the squared row norms by ``-|t_j|^2 / (1 + s)``: ``O(n k)``
    per added row.

    References
    ----------
    Mikhalev, Oseledets (2018), "Rectangular maximum-volume submatrices and their
    applications", Linear Algebra Appl. 538.

    Examples
    --------
    >>> import numpy as np
    >>> from tensorly_cross import rect_maxvol
    >>> matrix = np.random.default_rng(0).standard_normal((1000, 8))
    >>> rows, coefficients = rect_maxvol(matrix, tol=1.1)
    >>> bool(len(rows) >= 8), bool(np.linalg.norm(coefficients, axis=1).max() <= 1.1)
    (True, True)
    """
    matrix = as_floating(matrix, "matrix")
    n_rows, n_cols = check_tall_matrix(matrix, "matrix")
    tol = check_float(tol, "tol", minimum=1.0)
    min_add = check_int(min_add, "min_add", minimum=0, maximum=n_rows - n_cols)
    max_add = n_rows - n_cols if max_add is None else max_add
    max_add = check_int(max_add, "max_add", minimum=min_add, maximum=n_rows - n_cols)
    # Checked here, by their own names: maxvol's messages said "tol" for them.
    maxvol_tol = check_float(maxvol_tol, "maxvol_tol", minimum=1.0)
    maxvol_iter = check_int(maxvol_iter, "maxvol_iter", minimum=0)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RankDeficiencyWarning)
        rows, coefficients = maxvol(matrix, tol=maxvol_tol, max_iter=maxvol_iter)
    deficiency = [w for w in caught if issubclass(w.category, RankDeficiencyWarning)]
    if deficiency or n_cols == 0:
        for record in deficiency:
            warnings.warn(record.message, stacklevel=2)
        return rows, coefficients
    return _add_rows(coefficients, list(rows), tol, min_add, max_add)


def _add_rows(square_coefficients, rows, tol, min_add, max_add):
    """Greedy row additions in ``O(n r)`` each; see :func:`rect_maxvol`.

    With ``B0`` the square maxvol coefficients (``A = B0 A[rows0]``) and ``S = B0[rows]``,
    the rectangular coefficients are ``B = B0 M^{-1} S^H`` with ``M = S^H S``. ``M`` starts
    as the identity and only grows, so it is well conditioned; we keep ``M^{-1}`` by
    Sherman-Morrison and never touch an ``(n, k)`` array until the end.
    """
    # The selection needs no gradient; the result is recomputed from the tensors below.
    base = stop_gradient(square_coefficients)
    n_cols = tl.shape(base)[1]
    gram_inverse = tl.eye(n_cols, **tl.context(base))
    sq_norms = to_host(tl.sum(tl.abs(base) ** 2, axis=1)).astype(np.float64)
    sq_norms[rows] = -np.inf  # chosen rows are never chosen again
    for n_added in range(max_add):
        row = argmax_host(sq_norms)
        if n_added >= min_add and sq_norms[row] <= tol**2:
            break
        direction = tl.dot(gram_inverse, tl.conj(base[row]))  # M^{-1} b^H
        projections = tl.dot(base, direction)  # t_j = B[j] b^H for the current B
        denominator = 1.0 + float(sq_norms[row])
        sq_norms -= to_host(tl.abs(projections) ** 2).astype(np.float64) / denominator
        sq_norms[row] = -np.inf
        gram_inverse = gram_inverse - (
            tl.reshape(direction, (-1, 1)) * tl.reshape(tl.conj(direction), (1, -1))
        ) / denominator
        rows.append(row)
    rows = np.asarray(rows, dtype=np.int64)
    return rows, _rectangular_coefficients(square_coefficients, rows)


def _rectangular_coefficients(base, rows):
    """``B0 M^{-1} S^H`` with ``S = B0[rows]`` and ``M = S^H S``, by one solve.

    ``M >= I`` (``S`` holds the identity rows of the square start), so the solve is well
    conditioned; unlike the Sherman-Morrison ``M^{-1}`` of the loop, whose denominators are
    host floats, every step is autograd-visible (the gradient missed their dependence on
    the matrix) and free of the updates' accumulated rounding.
    """
    chosen_adjoint = tl.transpose(tl.conj(take_rows(base, rows)))
    gram = tl.dot(chosen_adjoint, take_rows(base, rows))
    return tl.dot(base, tl.solve(gram, chosen_adjoint))
