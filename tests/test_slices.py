"""max_slices: index sets that extend few multi-indices of their neighbours."""

import numpy as np
import pytest
import tensorly as tl
from hypothesis import given
from hypothesis import strategies as st

import tensorly_cross as tlc
from tensorly_cross.lazy.npy import NpyTensor

from .conftest import host
from .strategies import random_tt_cores, seeds, tt_problems


@given(problem=tt_problems(max_modes=5, max_size=10, max_rank=4), max_slices=st.integers(1, 3))
def test_sliced_cross_recovers_an_exact_rank_tt(backend, problem, max_slices):
    shape, rank, seed = problem
    cores = [tl.tensor(core) for core in random_tt_cores(shape, rank, seed)]
    dense = host(tl.tt_to_tensor(cores))
    tt = tlc.tt_cross(tl.tensor(dense), rank=list(rank), max_slices=max_slices, tol=1e-12,
                      random_state=seed)
    error = np.linalg.norm(host(tl.tt_to_tensor(tt)) - dense) / np.linalg.norm(dense)
    assert error < 1e-10


def _parents(child, n_parent_modes, from_left):
    """Distinct multi-indices of the neighbour set that the rows of ``child`` extend."""
    part = child[:, :n_parent_modes] if from_left else child[:, child.shape[1] - n_parent_modes:]
    return np.unique(part, axis=0).shape[0]


@given(shape=st.lists(st.integers(3, 6), min_size=3, max_size=5), rank=st.integers(1, 3),
       max_slices=st.integers(1, 3), sweeps=st.integers(1, 4), seed=seeds)
def test_every_set_extends_at_most_max_slices_parents(backend, shape, rank, max_slices,
                                                      sweeps, seed):
    dense = np.random.default_rng(seed).standard_normal(shape)
    indices = tlc.select_indices(tl.tensor(dense), rank=rank, max_slices=max_slices, tol=0.0,
                                 n_iter_max=sweeps, val_size=0, random_state=seed)
    d = len(shape)
    for k in range(1, d - 1):  # left[k + 1] extends rows of left[k] (k modes)
        assert _parents(indices.left[k + 1], k, from_left=True) <= max_slices
    for k in range(1, d - 1):  # right[k - 1] extends rows of right[k] (d - k - 1 modes)
        assert _parents(indices.right[k - 1], d - k - 1, from_left=False) <= max_slices


@given(problem=tt_problems(max_modes=4, max_size=8, max_rank=3), max_slices=st.integers(1, 3))
def test_sliced_oversampled_cross_recovers_an_exact_rank_tt(backend, problem, max_slices):
    shape, rank, seed = problem
    cores = [tl.tensor(core) for core in random_tt_cores(shape, rank, seed)]
    dense = host(tl.tt_to_tensor(cores))
    tt = tlc.tt_cross(tl.tensor(dense), rank=list(rank), max_slices=max_slices, oversample=2.0,
                      tol=1e-12, random_state=seed)
    error = np.linalg.norm(host(tl.tt_to_tensor(tt)) - dense) / np.linalg.norm(dense)
    assert error < 1e-10


@given(shape=st.lists(st.integers(4, 6), min_size=3, max_size=5), rank=st.integers(2, 4),
       max_slices=st.integers(2, 3), sweeps=st.integers(1, 4), seed=seeds)
def test_oversampled_sets_extend_at_most_max_slices_parents(backend, shape, rank, max_slices,
                                                            sweeps, seed):
    dense = np.random.default_rng(seed).standard_normal(shape)
    indices = tlc.select_indices(tl.tensor(dense), rank=rank, max_slices=max_slices,
                                 oversample=2.0, tol=0.0, n_iter_max=sweeps, val_size=0,
                                 random_state=seed)
    d = len(shape)
    assert indices.block == 1  # the block cross of one channel
    for k in range(1, d - 1):
        assert _parents(indices.left[k + 1], k, from_left=True) <= max_slices
        assert _parents(indices.right[k - 1], d - k - 1, from_left=False) <= max_slices


def test_a_sliced_sweep_reads_few_pages_of_a_npy_file(tmp_path):
    """C-ordered (X, Y, Z) with rows of one 4 KiB page, crossed in the order (X, Z, Y): a
    sweep reads <= 2 (c X + r^2 + c Y) pages (a row may straddle two), not ~2 r (X + Y)."""
    X, Y, Z, rank, slices = 32, 32, 1024, 4, 1
    x, y, z = np.meshgrid(*(np.linspace(0, 1, n) for n in (X, Y, Z)), indexing="ij")
    volume = (np.sin(3 * x + y) * np.cos(2 * z) + np.exp(-x * z) + y * z**2).astype("f4")
    path = tmp_path / "volume.npy"
    np.save(path, volume)
    results = {}
    for max_slices in (slices, None):
        lazy = NpyTensor(path)
        view = tlc.TransposedTensor(lazy, (0, 2, 1))
        tt = tlc.tt_cross(view, rank=rank, max_slices=max_slices, n_iter_max=1, val_size=0,
                          random_state=0)
        results[max_slices] = lazy.pages_read, tt
    bound = 2 * (slices * X + rank**2 + slices * Y)
    assert results[slices][0] <= bound < results[None][0], (results, bound)
    in_memory = tlc.TransposedTensor(volume.astype(np.float64), (0, 2, 1))
    in_memory = tlc.tt_cross(in_memory, rank=rank, max_slices=slices, n_iter_max=1,
                             val_size=0, random_state=0)
    for on_disk, in_ram in zip(results[slices][1], in_memory, strict=True):
        np.testing.assert_array_equal(host(on_disk), host(in_ram))


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(rank=2, max_slices=0), ValueError, "max_slices must be >= 1"),
        (dict(rank=2, max_slices=1.5), TypeError, "max_slices must be an integer"),
        (dict(rank=None, max_slices=2), ValueError,
         r"max_slices=2 needs method 'als' or 'block', not 'tci' \(method='auto' chose it "
         r"without a rank: pass rank= for the ALS cross\): TCI chooses"),
        (dict(rank=2, method="lsq", max_slices=2), ValueError,
         "not 'lsq': the least-squares cross draws"),
    ],
)
def test_max_slices_is_validated(kwargs, error, message):
    with pytest.raises(error, match=message):
        tlc.tt_cross(tl.tensor(np.ones((3, 4, 5))), **kwargs)
