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


@st.composite
def tt_problems(draw, max_modes=8, max_size=20, max_rank=6):
    """(shape, rank, seed) of a random TT with valid ranks, d in 2..max_modes."""
    from tensorly_cross.cross.init import clip_ranks

    d = draw(st.integers(2, max_modes))
    shape = tuple(draw(st.lists(st.integers(2, max_size), min_size=d, max_size=d)))
    inner = draw(st.lists(st.integers(1, max_rank), min_size=d - 1, max_size=d - 1))
    rank = tuple(clip_ranks(shape, [1, *inner, 1]))
    return shape, rank, draw(seeds)


def random_tt_cores(shape, rank, seed):
    """NumPy cores of a random TT, scaled so that entries are O(1)."""
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((rank[k], n, rank[k + 1])) / np.sqrt(rank[k])
            for k, n in enumerate(shape)]


def tt_function(cores):
    """A vectorised function of multi-indices that evaluates a NumPy TT."""

    def evaluate(indices):
        result = np.ones((indices.shape[0], 1))
        for mode, core in enumerate(cores):
            result = np.einsum("ma,amb->mb", result, core[:, indices[:, mode], :])
        return result[:, 0]

    return evaluate


def relative_error_on_samples(tt, function, shape, seed, n_samples=2000):
    """Relative 2-norm error of a TTTensor against ``function`` on random entries."""
    from tensorly_cross._backend import to_host
    from tensorly_cross.cross.tt_entries import tt_entries

    rng = np.random.default_rng(seed + 1)
    samples = np.stack([rng.integers(n, size=n_samples) for n in shape], axis=1)
    exact = function(samples)
    approx = to_host(tt_entries(list(tt), samples))
    return np.linalg.norm(approx - exact) / max(np.linalg.norm(exact), 1e-300)
