"""method="auto" on a callable: TCI hands over to the least-squares cross where it stalls
short of its tolerance (real data), on the same cache and budget."""

import os

import numpy as np
import pytest
import tensorly as tl

import tensorly_cross as tlc

from .conftest import host

nibabel = pytest.importorskip("nibabel")


def _anatomical():
    """A real T1 volume that nibabel ships (33 x 41 x 25)."""
    from nibabel.testing import data_path

    image = nibabel.load(os.path.join(data_path, "anatomical.nii"))
    return np.asarray(image.dataobj, dtype=np.float64)


class _Counting:
    """A callable over ``data`` that records every multi-index it was asked for."""

    def __init__(self, data):
        self.data, self.seen = data, set()

    def __call__(self, indices):
        indices = np.asarray(indices)
        self.seen.update(map(tuple, indices.tolist()))
        return tl.tensor(self.data[tuple(indices.T)])


def _error(tt, data):
    return np.linalg.norm(host(tt.to_tensor()) - data) / np.linalg.norm(data)


def test_auto_meets_a_tolerance_where_tci_stalls_on_a_real_volume(backend):
    data = _anatomical()
    settings = dict(shape=data.shape, tol=0.1, max_rank=16, random_state=0, return_info=True)
    tci, tci_info = tlc.tt_cross(_Counting(data), method="tci", **settings)
    assert tci_info.stop_reason == "stalled" and tci_info.val_error > 0.1
    counting = _Counting(data)
    tt, info = tlc.tt_cross(counting, **settings)
    assert info.method == "tci+lsq" and info.stop_reason == "tol"
    assert info.val_error <= 0.1 and _error(tt, data) < 0.11 < _error(tci, data)
    # Both runs' sweeps are in the record, and every entry read once is counted once.
    assert info.n_sweeps == tci_info.n_sweeps + len(info.ranks) - len(tci_info.ranks)
    assert info.ranks[:tci_info.n_sweeps] == tci_info.ranks
    assert info.n_evals == len(counting.seen)


def test_select_indices_returns_the_least_squares_sets_that_cross_interpolate_rebuilds(backend):
    data = _anatomical()
    settings = dict(shape=data.shape, tol=0.1, max_rank=16, random_state=0)
    indices = tlc.select_indices(_Counting(data), **settings)
    assert indices.ranks is not None  # a least-squares cross's sets
    rebuilt = tlc.cross_interpolate(_Counting(data), indices, shape=data.shape)
    tci = tlc.tt_cross(_Counting(data), method="tci", **settings)
    # Without the final refinement over every sweep's fibers (not in the sets), still far
    # better than TCI's interpolation.
    assert _error(rebuilt, data) < 0.8 * _error(tci, data)


def test_the_handover_keeps_to_the_evaluation_budget(backend):
    data = _anatomical()
    settings = dict(shape=data.shape, tol=0.1, max_rank=16, random_state=0, return_info=True)
    _, tci_info = tlc.tt_cross(_Counting(data), method="tci", **settings)
    budget = tci_info.n_evals + 500  # too few for a least-squares sweep
    counting = _Counting(data)
    tt, info = tlc.tt_cross(counting, max_evals=budget, **settings)
    assert len(counting.seen) <= budget and info.n_evals == len(counting.seen)
    assert info.method == "tci" and info.ranks == tci_info.ranks[:len(info.ranks)]
    assert info.stop_reason == "max_evals"  # the budget ended the call
    np.testing.assert_allclose(
        host(tt.to_tensor()),
        host(tlc.tt_cross(_Counting(data), method="tci", **settings)[0].to_tensor()))


@pytest.mark.parametrize("method", ["tci", "als"])
def test_an_explicit_method_or_a_fixed_rank_does_not_hand_over(method):
    data = _anatomical()
    rank = None if method == "tci" else 8
    _, info = tlc.tt_cross(_Counting(data), shape=data.shape, tol=0.1, max_rank=16,
                           method=method, rank=rank, random_state=0, return_info=True)
    assert info.method == method


def test_a_smooth_function_that_meets_tol_stays_with_tci():
    grid = np.linspace(0, 1, 32)
    f = tlc.FunctionTensor.on_grid(lambda x: np.exp(-x.sum(axis=1)), [grid] * 5)
    _, info = tlc.tt_cross(f, tol=1e-8, random_state=0, return_info=True)
    assert info.method == "tci" and info.stop_reason == "tol"


def test_a_non_finite_value_read_after_the_handover_is_raised_not_absorbed():
    data = _anatomical()
    seen = _Counting(data)
    tlc.tt_cross(seen, shape=data.shape, tol=0.1, max_rank=16, method="tci", random_state=0)
    poisoned = data.copy()
    unread = np.ones(data.shape, dtype=bool)
    unread[tuple(np.array(sorted(seen.seen)).T)] = False
    poisoned[unread] = np.nan  # only what TCI did not read
    with pytest.raises(tlc.NonFiniteValueError):
        tlc.tt_cross(_Counting(poisoned), shape=data.shape, tol=0.1, max_rank=16,
                     random_state=0)


def test_n_iter_max_counts_the_sweeps_of_both_runs():
    data = _anatomical()
    settings = dict(shape=data.shape, tol=0.1, max_rank=16, random_state=0, return_info=True)
    _, tci_info = tlc.tt_cross(_Counting(data), method="tci", **settings)
    for n_iter_max in (tci_info.n_sweeps, tci_info.n_sweeps + 2):
        _, info = tlc.tt_cross(_Counting(data), n_iter_max=n_iter_max, **settings)
        assert info.n_sweeps <= n_iter_max
