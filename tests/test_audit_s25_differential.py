"""Audit s25: differential and property-based checks of the public API.

The same problem handed over in different forms (kinds of storage, views, backends) must
give the same TT; exact low-rank data must come back at its ranks.
"""

import re

import numpy as np
import pytest
import tensorly as tl
from hypothesis import given, settings
from hypothesis import strategies as st

import tensorly_cross as tlc

from .strategies import seeds


def _random_tt_array(shape, ranks, seed, dtype=np.float64):
    rng = np.random.default_rng(seed)
    cores = [rng.standard_normal((ranks[k], n, ranks[k + 1])) for k, n in enumerate(shape)]
    if np.issubdtype(dtype, np.complexfloating):
        cores = [core + 1j * rng.standard_normal(core.shape) for core in cores]
    dense = cores[0].reshape(shape[0], -1)
    for core in cores[1:]:
        dense = (dense @ core.reshape(core.shape[0], -1)).reshape(-1, core.shape[2])
    return dense.reshape(shape).astype(dtype)


def _relative_error(tt, dense):
    approx = tl.to_numpy(tl.tt_to_tensor(tt)).astype(np.complex128)
    return np.linalg.norm(approx - dense) / np.linalg.norm(dense)


# Before: the least-squares cross (the default on stored data) kept the round-off singular
# values of its fits as rank whenever tol was below the data's precision: a rank-1 array
# crossed at tol=0 came back at ranks (1, 7, 42, 6, 1), no more accurate than at rank 1
# (TCI, on the same array: rank 1).
@pytest.mark.parametrize("dtype", [np.float64, np.complex128])
def test_a_least_squares_cross_below_the_datas_precision_keeps_the_datas_ranks(dtype):
    tensor = _random_tt_array((7, 7, 7, 6), [1, 1, 1, 1, 1], seed=0, dtype=dtype)
    tt, info = tlc.tt_cross(tensor, tol=0.0, random_state=0, return_info=True)
    assert info.method == "lsq"
    assert tt.rank == (1, 1, 1, 1, 1)
    assert _relative_error(tt, tensor) < 1e-13


def test_a_faint_component_that_float32_data_stores_is_kept():
    """The round-off cut is in float64 epsilons: in float32's (4.8e-7 of the largest), a
    component stored exactly at 2e-7 of the largest, on its own support, was dropped at
    tol=1e-7 (ranks (1, 1), that region's error 100%)."""
    rng = np.random.default_rng(0)
    bright, faint = np.zeros(16), np.zeros(16)
    bright[:8], faint[8:] = rng.random(8) + 0.5, rng.random(8) + 0.5
    tensor = (np.einsum("i,j,k->ijk", bright, bright, bright)
              + 2e-7 * np.einsum("i,j,k->ijk", faint, faint, faint)).astype(np.float32)
    tt = tlc.tt_cross(tensor, tol=1e-7, method="lsq", random_state=0)
    approx = tl.to_numpy(tl.tt_to_tensor(tt)).astype(np.float64)
    region = (slice(8, None),) * 3
    assert tt.rank == (1, 2, 2, 1)
    assert (np.linalg.norm(approx[region] - tensor[region])
            < 1e-3 * np.linalg.norm(tensor[region]))


@settings(max_examples=15, deadline=None)
@given(shape=st.lists(st.integers(2, 7), min_size=3, max_size=4),
       inner=st.lists(st.integers(1, 3), min_size=3, max_size=3), seed=seeds,
       dtype=st.sampled_from([np.float64, np.complex128]))
def test_exact_low_rank_data_at_tol_zero_is_recovered_at_most_at_its_ranks(shape, inner, seed,
                                                                          dtype):
    d = len(shape)
    ranks = [1] + [min(r, int(np.prod(shape[:k + 1])), int(np.prod(shape[k + 1:])))
                   for k, r in enumerate(inner[: d - 1])] + [1]
    tensor = _random_tt_array(tuple(shape), ranks, seed % 2**16, dtype)
    for method in ("lsq", "tci"):
        tt = tlc.tt_cross(tensor, tol=0.0, method=method, random_state=seed)
        assert all(got <= true for got, true in zip(tt.rank, ranks, strict=True)), (
            method, tt.rank, ranks)
        assert _relative_error(tt, tensor) < 1e-10


def _same_tt(first, second):
    (tt, info), (other, other_info) = first, second
    assert tt.rank == other.rank
    for core, other_core in zip(tt.factors, other.factors, strict=True):
        np.testing.assert_array_equal(tl.to_numpy(core), tl.to_numpy(other_core))
    assert (info.n_evals, info.n_sweeps, info.stop_reason) == (
        other_info.n_evals, other_info.n_sweeps, other_info.stop_reason)


def _noisy_smooth(shape, seed):
    grid = np.indices(shape)
    noise = np.random.default_rng(seed).standard_normal(shape)
    return np.sin(grid.sum(0) / 3.0) + 1.0 / (1.0 + grid[0] * grid[-1]) + 1e-3 * noise


@settings(max_examples=6, deadline=None)
@given(shape=st.lists(st.integers(3, 9), min_size=3, max_size=3), seed=st.integers(0, 2**16),
       method=st.sampled_from(["lsq", "tci", "als"]))
def test_every_kind_of_stored_volume_gives_the_tt_of_its_float64_array(tmp_path_factory, shape,
                                                                      seed, method):
    """A .npy, zarr or HDF5 file opened by path, and the h5py dataset itself, are read as
    float64: bit for bit the cross of the array in memory (docs/guarantees.rst)."""
    import h5py
    import zarr

    folder = tmp_path_factory.mktemp("volumes")
    array = _noisy_smooth(tuple(shape), seed).astype(np.float32)
    np.save(folder / "v.npy", array)
    store = zarr.open(str(folder / "v.zarr"), mode="w", shape=array.shape, dtype="f4",
                      chunks=(2, 3, 4))
    store[...] = array
    with h5py.File(folder / "v.h5", "w") as handle:
        handle.create_dataset("x", data=array, chunks=(3, 2, 2))
    options = dict(method=method, tol=1e-5, random_state=seed, return_info=True,
                   rank=3 if method == "als" else None)
    expected = tlc.tt_cross(array.astype(np.float64), **options)
    for path in ("v.npy", "v.zarr", "v.h5:x"):
        _same_tt(tlc.tt_cross(tlc.open_volume(str(folder / path)), **options), expected)
    with h5py.File(folder / "v.h5", "r") as handle:
        _same_tt(tlc.tt_cross(handle["x"], **options), expected)


@settings(max_examples=6, deadline=None)
@given(shape=st.lists(st.sampled_from([2, 3, 4, 6, 8]), min_size=2, max_size=3),
       seed=st.integers(0, 2**16), method=st.sampled_from(["lsq", "tci", "als"]),
       order=st.sampled_from(["grouped", "interleaved"]))
def test_views_give_the_tt_of_the_data_permuted_by_hand(shape, seed, method, order):
    array = _noisy_smooth(tuple(shape), seed)
    options = dict(method=method, tol=1e-6, random_state=seed, return_info=True,
                   rank=2 if method == "als" else None)
    axes = tuple(np.random.default_rng(seed).permutation(len(shape)).tolist())
    _same_tt(tlc.tt_cross(tlc.TransposedTensor(array, axes), **options),
             tlc.tt_cross(np.ascontiguousarray(array.transpose(axes)), **options))
    view = tlc.QuanticsTensor(array, order=order)
    digits = np.stack(np.unravel_index(np.arange(array.size), view.shape), axis=1)
    by_hand = array[tuple(view.layout.to_original(digits).T)].reshape(view.shape)
    _same_tt(tlc.tt_cross(view, **options), tlc.tt_cross(by_hand, **options))


# Before: a set emptied in a saved dict (a bond of rank 0) was taken: interpolating methods
# rebuilt the zero TT, of ranks (1, 3, 0, 1), without a word; a block cross's failed in
# NumPy ("LinAlgError: cond is not defined on empty arrays").
@pytest.mark.parametrize("method", ["als", "tci", "block", "lsq"])
def test_an_empty_index_set_is_refused_by_name(method):
    tensor = np.sin(np.indices((5, 6, 7)).sum(0) / 3.0)
    indices = tlc.select_indices(tensor, method=method, random_state=0,
                                 rank=3 if method in ("als", "block") else None)
    saved = indices.to_dict()
    saved["right"][1] = np.zeros((0, 1), dtype=np.int64)
    if method in ("als", "tci"):  # the bond's two sets agree, as its rank
        saved["left"][2] = np.zeros((0, 2), dtype=np.int64)
    if method == "block":
        saved["right"][0] = np.zeros((0, 1), dtype=np.int64)
    with pytest.raises(ValueError, match=r"(left|right)\[\d\] holds no multi-index"):
        tlc.cross_interpolate(tensor, saved)


class _CountedArray(tlc.ArrayTensor):
    """An array that records every multi-index a cross asks it for."""

    def __init__(self, array):
        super().__init__(array)
        self.read = []

    def _evaluate(self, indices):
        self.read.append(np.array(indices, copy=True))
        return super()._evaluate(indices)


@settings(max_examples=12, deadline=None)
@given(shape=st.lists(st.integers(2, 10), min_size=2, max_size=4), seed=st.integers(0, 2**16),
       method=st.sampled_from(["lsq", "auto", "tci", "als"]), share=st.floats(0.02, 1.2),
       val_size=st.sampled_from([None, 0, 20]), view=st.sampled_from([None, "quantics"]))
def test_stored_data_is_read_within_max_evals_each_entry_once(shape, seed, method, share,
                                                             val_size, view):
    """tests/test_fuzz_api.py counts a function's reads, not the least-squares cross's
    (the default on stored data) nor those through a view."""
    counted = _CountedArray(_noisy_smooth(tuple(shape), seed))
    tensor = counted if view is None else tlc.QuanticsTensor(counted)
    max_evals = max(1, int(share * min(counted.size, 3000)))
    try:
        tt, info = tlc.tt_cross(tensor, method=method, tol=1e-6, max_evals=max_evals,
                                val_size=val_size, random_state=seed, return_info=True,
                                rank=2 if method == "als" else None)
    except ValueError as error:  # max_evals too small for a sweep, or not above val_size
        assert re.match(r"max_evals=\d+ (is too small for one sweep|must exceed val_size)",
                        str(error)), error
        tt = info = None
    read = np.concatenate(counted.read) if counted.read else np.zeros((0, len(shape)))
    assert read.shape[0] <= max_evals
    assert np.unique(read, axis=0).shape[0] == read.shape[0]
    if info is not None:
        assert info.n_evals == read.shape[0]
        assert all(np.isfinite(tl.to_numpy(core)).all() for core in tt.factors)
