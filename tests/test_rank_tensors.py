"""Ranks given as a backend's integer tensor (``tl.tensor([1, 4, 4, 1])`` under PyTorch,
or a 0-d one) are ranks: before, they were refused with a TypeError, while a NumPy
array of the same ranks was taken. Float and bool tensors are still refused."""

import numpy as np
import pytest

import tensorly_cross as tlc

torch = pytest.importorskip("torch")


def _lazy():
    return tlc.FunctionTensor(lambda idx: 1.0 / (1.0 + idx.sum(axis=1)), (6, 6, 6))


@pytest.mark.parametrize("rank", [torch.tensor([1, 2, 3, 1]), [1, torch.tensor(2), 3, 1],
                                  torch.tensor([1, 2, 3, 1], dtype=torch.int32)])
def test_an_integer_tensor_of_ranks_gives_the_same_tt_as_a_list(rank):
    got = tlc.tt_cross(_lazy(), rank=rank, random_state=0)
    expected = tlc.tt_cross(_lazy(), rank=[1, 2, 3, 1], random_state=0)
    assert tuple(got.rank) == (1, 2, 3, 1)
    for a, b in zip(got, expected, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_a_zero_dimensional_integer_tensor_is_one_rank_for_every_bond():
    assert tuple(tlc.tt_cross(_lazy(), rank=torch.tensor(2), random_state=0).rank) == (1, 2, 2, 1)


@pytest.mark.parametrize("rank", [torch.tensor([1.0, 2.0, 2.0, 1.0]), torch.tensor(2.5),
                                  torch.tensor([True, True, True, True])])
def test_float_and_bool_tensors_are_still_refused(rank):
    with pytest.raises(TypeError, match="rank must be an int or a list of 4 ints"):
        tlc.tt_cross(_lazy(), rank=rank, random_state=0)
