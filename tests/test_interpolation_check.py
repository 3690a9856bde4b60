"""cross_interpolate says when its pivots do not span the fibers of the tensor it reads."""

import warnings

import numpy as np
import pytest
from hypothesis import given

import tensorly_cross as tlc

from .strategies import seeds

# Left-nested sets whose bond-0 pivots (rows 0-2 of mode 0) and bond-1 pivots lie mostly
# in the slice A[0] = 0 below.
SETS = {"shape": [6, 7, 8], "nested": "left",
        "left": [[[]], [[0], [1], [2]], [[0, 0], [0, 1], [1, 0]]],
        "right": [[[1, 1], [2, 2], [3, 3]], [[4], [5], [6]], [[]]]}


def _rank_three(seed, zero_slice=False):
    rng = np.random.default_rng(seed)
    tensor = np.einsum("ia,ja,ka->ijk", *(rng.standard_normal((n, 3)) for n in (6, 7, 8)))
    if zero_slice:
        tensor[0] = 0.0
    return tensor


@given(seed=seeds)
def test_sets_whose_pivots_miss_the_tensor_are_named(seed):
    # The TT came back off by about the tensor's largest entry, without a word.
    tensor = _rank_three(seed, zero_slice=True)
    with pytest.warns(tlc.RankDeficiencyWarning, match="at bonds 0, 1 the pivots do not span"
                      ) as caught:
        tt = tlc.cross_interpolate(tensor, SETS)
    assert np.abs(tt.to_tensor() - tensor).max() > 1e-3 * np.abs(tensor).max()
    assert caught[0].message.rank == 2


@given(seed=seeds)
def test_sets_that_span_the_tensor_interpolate_it_without_a_warning(seed):
    tensor = _rank_three(seed)
    for sets in (SETS, tlc.select_indices(tensor, rank=5, method="als", random_state=seed)):
        with warnings.catch_warnings():
            warnings.simplefilter("error", tlc.RankDeficiencyWarning)
            tt = tlc.cross_interpolate(tensor, sets)
        np.testing.assert_allclose(tt.to_tensor(), tensor, atol=1e-8 * np.abs(tensor).max())


@pytest.mark.parametrize("backend", ["numpy", "pytorch"])
def test_sets_chosen_on_a_flat_tensor_warn_on_a_slightly_edited_one(backend):
    # One voxel of a flat (rank-1) region moved a little: the pivot rows of the basis then
    # had condition ~7e10, whose square made the normal equations raise "Singular matrix".
    if backend == "pytorch":
        pytest.importorskip("torch")
    import tensorly as tl

    flat = np.ones((6, 6, 6))
    sets = tlc.select_indices(flat, rank=3, method="als", random_state=9)
    edited = flat.copy()
    edited[5, 5, 5] += 7.611638267134142e-05
    with tl.backend_context(backend):
        with pytest.warns(tlc.RankDeficiencyWarning, match="pivot rank 1, fiber rank 2"):
            tt = tlc.cross_interpolate(tl.tensor(edited), sets)
        error = np.abs(tl.to_numpy(tl.tt_to_tensor(tt)) - edited).max()
    assert error < 1e-3  # bounded cores: off by about the edit, not by the pivots' noise
