"""Interior size-one modes: TCI runs on the tensor without them (cross/size_one.py)."""

import numpy as np
import pytest
import tensorly as tl
from hypothesis import given
from hypothesis import strategies as st

import tensorly_cross as tlc
from tensorly_cross.cross.indices import check_cross_indices
from tensorly_cross.cross.size_one import SizeOneModes
from tensorly_cross.lazy.squeezed import SqueezedTensor

from .conftest import host


def _inverse_sum(indices):
    return 1.0 / (1.0 + indices.sum(axis=1) / 10.0)


@st.composite
def shapes_with_inner_ones(draw):
    """A shape of 2-4 larger modes with size-one modes between (and maybe around) them."""
    larger = draw(st.lists(st.integers(2, 9), min_size=2, max_size=4))
    shape = []
    for position, size in enumerate(larger):
        ones = draw(st.integers(1 if 0 < position else 0, 2))
        shape += [1] * ones + [size]
    return tuple(shape + [1] * draw(st.integers(0, 1))), larger


def _on_larger(shape):
    kept = [mode for mode, size in enumerate(shape) if size > 1]
    return lambda indices: _inverse_sum(indices[:, kept])


@given(shapes_with_inner_ones(), st.integers(0, 2**16))
def test_same_cross_as_without_the_modes(case, seed):
    """The run is the one of the tensor without its size-one modes, evaluation for
    evaluation; the TT holds the same entries and has the tensor's shape. Before: on
    (32, 1, 32, 32), 1.47x the evaluations, 11 sweeps against 2, and ranks (11, 11, 13)."""
    shape, larger = case
    tt, info = tlc.tt_cross(_on_larger(shape), shape=shape, tol=1e-10, random_state=seed,
                            return_info=True)
    ref, ref_info = tlc.tt_cross(_inverse_sum, shape=tuple(larger), tol=1e-10,
                                 random_state=seed, return_info=True)
    assert info.n_evals == ref_info.n_evals
    assert info.n_sweeps == ref_info.n_sweeps
    assert tuple(int(n) for n in tl.tt_to_tensor(tt).shape) == shape
    assert len(info.ranks[-1]) == len(shape) + 1 == len(tt.rank)
    assert max(info.ranks[-1]) == max(ref_info.ranks[-1])
    # Equal up to the round-off of contracting the identity cores.
    np.testing.assert_allclose(host(tl.tt_to_tensor(tt)).reshape(larger),
                               host(tl.tt_to_tensor(ref)), rtol=1e-13, atol=0)


@given(shapes_with_inner_ones(), st.integers(0, 2**16))
def test_indices_rebuild_the_tt(case, seed):
    """select_indices gives the tensor's sets (a 0 at each dropped mode), nested, and
    cross_interpolate on them rebuilds tt_cross's TT."""
    shape, _ = case
    function = _on_larger(shape)
    indices = tlc.select_indices(function, shape=shape, tol=1e-10, random_state=seed)
    check_cross_indices(indices)
    assert indices.tensor_shape == shape
    for k in range(len(shape) - 1):  # left sets nested: left[k+1] within left[k] x [n_k]
        extended = {tuple(row) for row in indices.left[k + 1][:, :k]}
        assert extended <= {tuple(row) for row in indices.left[k]}
    rebuilt = tlc.cross_interpolate(function, indices, shape=shape)
    tt = tlc.tt_cross(function, shape=shape, tol=1e-10, random_state=seed)
    np.testing.assert_allclose(host(tl.tt_to_tensor(rebuilt)), host(tl.tt_to_tensor(tt)),
                               rtol=1e-9, atol=1e-12)


def test_rank_list_caps_the_bonds():
    """A rank list of the tensor caps the bonds of the run without the modes (each by the
    lowest of the bonds it stands for)."""
    shape = (8, 1, 9, 1, 1, 7)
    tt = tlc.tt_cross(_on_larger(shape), shape=shape, method="tci", tol=1e-12,
                      rank=[1, 5, 3, 4, 4, 2, 1], random_state=0)
    assert tt.rank == (1, 3, 3, 2, 2, 2, 1)


def test_callback_sees_the_tensor():
    shape = (6, 1, 7, 5)
    seen = []
    tlc.tt_cross(_on_larger(shape), shape=shape, tol=1e-10, random_state=0,
                 callback=lambda tt, info: seen.append((tt.shape, info.ranks[-1])))
    assert seen and all(tuple(s) == shape and len(r) == 5 for s, r in seen)


def test_checkpoint_resumes_without_evaluations(tmp_path):
    shape = (9, 1, 8, 1, 7)
    path = tmp_path / "run.ckpt"
    first, first_info = tlc.tt_cross(_on_larger(shape), shape=shape, tol=1e-10,
                                     random_state=3, checkpoint=path, return_info=True)
    again, info = tlc.tt_cross(_on_larger(shape), shape=shape, tol=1e-10, random_state=3,
                               checkpoint=path, return_info=True)
    # Every entry came back from the checkpoint: the function ran n_evals - n_restored times.
    assert info.n_restored == info.n_evals == first_info.n_evals
    np.testing.assert_array_equal(host(tl.tt_to_tensor(again)), host(tl.tt_to_tensor(first)))


def test_differentiable_read_on_the_tensor(pytorch_backend):
    """differentiable=True rebuilds the cores from the tensor's own sets, through autograd."""
    import torch

    shape = (5, 1, 6, 4)
    data = torch.tensor(_on_larger(shape)(np.indices(shape).reshape(4, -1).T).reshape(shape),
                        requires_grad=True)
    tt = tlc.tt_cross(data, method="tci", tol=1e-10, random_state=0, differentiable=True)
    full = tl.tt_to_tensor(tt)
    assert torch.allclose(full, data, atol=1e-9)
    full.sum().backward()
    assert data.grad is not None and int((data.grad != 0).sum()) > 0


def test_stored_data_with_inner_ones(tmp_path):
    """A .npy volume with a size-one mode between larger ones (a stack of single slices)."""
    shape = (12, 1, 10, 9)
    volume = _on_larger(shape)(np.indices(shape).reshape(4, -1).T).reshape(shape)
    np.save(tmp_path / "v.npy", volume)
    tt = tlc.tt_cross(tlc.open_volume(tmp_path / "v.npy"), method="tci", tol=1e-8,
                      random_state=0)
    np.testing.assert_allclose(host(tl.tt_to_tensor(tt)), volume, rtol=1e-6)


def test_only_inner_modes_and_only_tci():
    assert SizeOneModes((1, 4, 1, 5, 1)).dropped == [2]
    assert SizeOneModes((1, 1, 4)).dropped == []
    assert SizeOneModes.for_method((4, 1, 5), "als") is None
    assert SizeOneModes.for_method((4, 1, 5), "tci").kept == [0, 2]


def test_squeezed_view_refuses_a_larger_mode():
    with pytest.raises(ValueError, match="only modes of size 1"):
        SqueezedTensor(tlc.lazy_tensor(np.zeros((3, 2, 4))), [0, 2])


def test_handover_to_least_squares_with_inner_ones():
    """TCI that stalls on a real volume hands over to the least-squares cross on the
    smaller tensor; its sets (with ranks) come back for the tensor and rebuild its TT."""
    nibabel = pytest.importorskip("nibabel")
    import os

    from nibabel.testing import data_path

    image = nibabel.load(os.path.join(data_path, "anatomical.nii"))
    volume = np.asarray(image.dataobj, dtype=np.float64)[:, None]  # (33, 1, 41, 25)
    function = lambda indices: volume[tuple(indices.T)]  # noqa: E731
    settings = dict(shape=volume.shape, tol=0.1, max_rank=16, random_state=0)
    tt, info = tlc.tt_cross(function, return_info=True, **settings)
    assert info.method == "tci+lsq" and len(tt.rank) == 5 and tt.rank[1] == tt.rank[2]
    error = np.linalg.norm(host(tl.tt_to_tensor(tt)) - volume) / np.linalg.norm(volume)
    assert error < 0.11
    indices = tlc.select_indices(function, **settings)
    assert indices.ranks is not None and len(indices.ranks) == 5
    rebuilt = tlc.cross_interpolate(function, indices, shape=volume.shape)
    rebuilt_error = (np.linalg.norm(host(tl.tt_to_tensor(rebuilt)) - volume)
                     / np.linalg.norm(volume))
    assert rebuilt_error < 0.2
