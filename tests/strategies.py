"""Hypothesis strategies and generators shared by the tests."""

import numpy as np
from hypothesis import strategies as st

seeds = st.integers(0, 2**32 - 1)


@st.composite
def tall_shapes(draw, max_rows=3000, max_cols=64):
    """(n, r) with 1 <= r <= n, skewed towards small sizes."""
    n_cols = draw(st.integers(1, max_cols))
    n_rows = draw(st.integers(n_cols, max(n_cols, max_rows)))
    return n_rows, n_cols


def matrix_with_condition(shape, log10_condition, seed, complex_values=False):
    """A random (n, r) matrix with singular values log-spaced from 1 to 10**-log10_condition."""
    rng = np.random.default_rng(seed)
    n_rows, n_cols = shape
    left = rng.standard_normal((n_rows, n_cols))
    right = rng.standard_normal((n_cols, n_cols))
    if complex_values:
        left = left + 1j * rng.standard_normal((n_rows, n_cols))
        right = right + 1j * rng.standard_normal((n_cols, n_cols))
    left, _ = np.linalg.qr(left)
    right, _ = np.linalg.qr(right)
    singular_values = np.logspace(0, -log10_condition, n_cols)
    return (left * singular_values) @ right


def low_rank_matrix(shape, rank, seed):
    """A random (n, r) matrix of exact rank ``rank``."""
    rng = np.random.default_rng(seed)
    n_rows, n_cols = shape
    return rng.standard_normal((n_rows, rank)) @ rng.standard_normal((rank, n_cols))
