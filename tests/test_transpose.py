"""TransposedTensor: a lazy view with its modes permuted."""

import numpy as np
import pytest
import tensorly as tl
from hypothesis import given
from hypothesis import strategies as st

import tensorly_cross as tlc
from tensorly_cross import NonFiniteValueError, TransposedTensor

from .conftest import host
from .strategies import seeds


@st.composite
def permuted_shapes(draw, max_modes=5, max_size=6):
    shape = tuple(draw(st.lists(st.integers(1, max_size), min_size=1, max_size=max_modes)))
    axes = draw(st.permutations(range(len(shape))))
    return shape, tuple(axes)


@given(case=permuted_shapes(), seed=seeds)
def test_view_reads_the_transposed_entries(backend, case, seed):
    shape, axes = case
    rng = np.random.default_rng(seed)
    dense = rng.standard_normal(shape)
    view = TransposedTensor(tl.tensor(dense), axes)
    transposed = np.transpose(dense, axes)
    assert view.shape == transposed.shape
    batch = np.stack([rng.integers(n, size=20) for n in view.shape], axis=1)
    np.testing.assert_array_equal(host(view.evaluate(batch)), transposed[tuple(batch.T)])
    original = np.stack([rng.integers(n, size=20) for n in shape], axis=1)
    np.testing.assert_array_equal(host(view.evaluate(view.from_original(original))),
                                  dense[tuple(original.T)])


@given(seed=seeds, axes=st.permutations(range(4)))
def test_cross_of_the_view_recovers_the_transposed_tensor(backend, seed, axes):
    # A CP tensor of rank 3 has TT ranks <= 3 in every mode order.
    shape = (5, 6, 7, 4)
    factors = [np.random.default_rng(seed + mode).standard_normal((n, 3))
               for mode, n in enumerate(shape)]
    dense = np.einsum("ir,jr,kr,lr->ijkl", *factors)
    view = TransposedTensor(tl.tensor(dense), axes)
    tt = tlc.tt_cross(view, rank=3, random_state=seed, method="als")
    np.testing.assert_allclose(host(tl.tt_to_tensor(tt)), np.transpose(dense, axes),
                               atol=1e-9 * np.abs(dense).max())


def test_non_finite_entry_names_the_original_multi_index(backend):
    dense = np.ones((3, 4, 5))
    dense[2, 1, 3] = np.nan
    view = TransposedTensor(dense, (2, 0, 1))
    with pytest.raises(NonFiniteValueError, match=r"\(2, 1, 3\)"):
        view.evaluate(np.array([[3, 2, 1]]))


@pytest.mark.parametrize("axes", [(0, 1), (0, 1, 1), (0, 1, 3), [[0, 1, 2]]])
def test_axes_must_be_a_permutation(axes):
    with pytest.raises(ValueError, match=r"axes must be a permutation of range\(3\)"):
        TransposedTensor(np.zeros((2, 3, 4)), axes)
