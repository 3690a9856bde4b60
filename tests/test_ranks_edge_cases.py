"""Tests of ranks: fixed, clipped and maximal ranks and the warnings about them."""

import warnings

import numpy as np
import pytest
import tensorly as tl
from hypothesis import given, settings
from hypothesis import strategies as st

import tensorly_cross as tlc
from tensorly_cross import CrossIndices, QuanticsLayout, qtt_to_tt

from ._helpers_shared import _blowing_up_at, _low_rank_tensor, _random_tt_array, _run_als
from .strategies import seeds

# B6 ---------------------------------------------------------------------------------------


def test_qtt_to_tt_names_cores_whose_ranks_do_not_chain():
    layout = tlc.QuanticsLayout.create((8,))
    cores = [np.ones((1, 2, 2)), np.ones((3, 2, 1)), np.ones((1, 2, 1))]
    with pytest.raises(ValueError, match=r"tt_q's ranks do not chain: core 0 has right rank 2 "
                                         r"but core 1 has left rank 3"):
        tlc.qtt_to_tt(cores, layout)
    with pytest.raises(ValueError, match=r"tt_q's core 1 has shape \(3, 2\)"):
        tlc.qtt_to_tt([np.ones((1, 2, 3)), np.ones((3, 2)), np.ones((1, 2, 1))], layout)
    with pytest.raises(ValueError, match="tt_q's first core has left rank 2"):
        tlc.qtt_to_tt([np.ones((2, 2, 1)), np.ones((1, 2, 1)), np.ones((1, 2, 1))], layout)


SHAPE = (12, 10, 8)


def smooth(idx):
    """A function of TT ranks (1, 10, 2, 1) on ``SHAPE``."""
    return np.exp(-idx.sum(axis=1) / 10.0) + np.sin(idx[:, 0] * idx[:, 1] / 3.0)


def _lsq_dict():
    return tlc.select_indices(smooth, shape=SHAPE, method="lsq", random_state=0).to_dict()


@pytest.mark.parametrize("middle", [2.5, None, "2"])
def test_from_dict_refuses_ranks_that_are_not_integers(middle):
    # ranks=[1, 2.5, 2, 1] was read as (1, 2, 2, 1), and None failed inside int().
    data = _lsq_dict()
    ranks = list(data["ranks"])
    ranks[1] = middle
    with pytest.raises(ValueError, match="ranks"):
        CrossIndices.from_dict(dict(data, ranks=ranks))


@settings(max_examples=10)
@given(seed=seeds, method=st.sampled_from(["als", "lsq", "block"]), extra=st.integers(0, 3))
def test_fixed_rank_methods_agree_across_backends(backend, seed, method, extra):
    rng = np.random.default_rng(seed)
    shape = tuple(int(n) for n in rng.integers(1, 6, size=int(rng.integers(2, 5))))
    rank = [1] + [int(r) for r in rng.integers(1, 4, size=len(shape) - 1)] + [1]
    dense = _low_rank_tensor(shape, rank, seed)
    options = dict(rank=max(rank) + extra, method=method, random_state=seed, tol=1e-10)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with tl.backend_context("numpy"):
            reference = tl.tt_to_tensor(tlc.tt_cross(dense, **options)).reshape(shape)
        result = tl.to_numpy(tl.tt_to_tensor(tlc.tt_cross(tl.tensor(dense), **options)))
    np.testing.assert_allclose(result.reshape(shape), reference, atol=1e-9)
    assert np.linalg.norm(reference - dense) <= 1e-8 * max(np.linalg.norm(dense), 1e-300)


def _separable(indices):
    return np.exp(-indices.sum(axis=1) / 20.0)


def test_a_fixed_rank_above_an_explicit_max_rank_is_refused():
    with pytest.raises(ValueError, match="rank=8 exceeds max_rank=3"):
        tlc.tt_cross(_separable, shape=(10,) * 4, method="tci", rank=8, max_rank=3)
    with pytest.raises(ValueError, match=r"exceeds max_rank=2"):
        tlc.select_indices(_separable, shape=(10,) * 4, rank=[1, 3, 3, 3, 1], max_rank=2)
    tt = tlc.tt_cross(_separable, shape=(10,) * 4, rank=3, max_rank=8, random_state=0)
    assert max(tt.rank) == 3  # within the cap: nothing to refuse


@pytest.mark.parametrize("method", ["auto", "als", "lsq"])
def test_a_clipped_rank_is_warned_of_at_the_callers_line(method):
    # It pointed inside the library (api.py), one frame short of the user's call.
    volume = np.random.default_rng(0).random((4, 5, 6))
    with pytest.warns(UserWarning, match="exceeds what the unfoldings") as record:
        tlc.tt_cross(volume, rank=20, method=method, random_state=0)
    assert record[0].filename == __file__


# Mutant: a last core of right rank above 1 accepted (its first column read as the entry).
def test_tt_entries_refuses_a_last_core_of_rank_above_one():
    from tensorly_cross.cross.tt_entries import tt_entries

    cores = [np.ones((1, 3, 2)), np.ones((2, 4, 2))]
    with pytest.raises(ValueError, match="do not form a TT"):
        tt_entries(cores, [[0, 0]])


# Mutant: the boundary ranks not checked (``ends != (1, 1)`` dropped): cores of boundary
# rank 2 were merged into a TT that is not one.
def test_qtt_to_tt_refuses_boundary_ranks_other_than_one():
    layout = QuanticsLayout.create((4,))
    cores = [np.ones((2, 2, 3)), np.ones((3, 2, 2))]
    with pytest.raises(ValueError, match="both must be 1"):
        qtt_to_tt(cores, layout)


def _relative_error(tt, dense):
    approx = tl.to_numpy(tl.tt_to_tensor(tt)).astype(np.complex128)
    return np.linalg.norm(approx - dense) / np.linalg.norm(dense)


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


# Mutants (options._check_rank_within): the default max_rank enforced on a fixed rank (it
# is allowed to exceed it without a word), and a rank equal to an explicit max_rank refused.
def test_a_fixed_rank_may_exceed_the_default_max_rank_and_equal_an_explicit_one():
    from tensorly_cross.options import DEFAULT_MAX_RANK, cross_options

    shape = (200, 200, 200)
    assert cross_options(shape, rank=DEFAULT_MAX_RANK + 16).rank == DEFAULT_MAX_RANK + 16
    assert cross_options(shape, rank=[1, 8, 8, 1], max_rank=8).max_rank == 8
    with pytest.raises(ValueError, match="exceeds max_rank=8"):
        cross_options(shape, rank=9, max_rank=8)


def _cosine(indices):
    return np.cos(indices.sum(axis=1) / 9.0)


# Mutant (_validation.outside_stacklevel): the level not counted up the frames, so that a
# warning named the library's line instead of the caller's ("the caller's line, at any
# call depth").
def test_a_clipped_rank_warning_names_the_callers_line():
    with pytest.warns(UserWarning, match="exceeds what the unfoldings") as record:
        tlc.tt_cross(_cosine, rank=[1, 9, 9, 1], shape=(3, 3, 3), random_state=0)
    assert record[0].filename == __file__


# Mutant (driver._ranks_changed): the last ranks compared with the first sweep's, not the
# sweep before: a rank-adaptive cross whose ranks grew once never stalled again.
def test_ranks_that_grew_once_and_then_held_are_unchanged():
    from tensorly_cross.cross.driver import _ranks_changed

    assert _ranks_changed(object(), [(1, 2, 1), (1, 3, 1)])
    assert not _ranks_changed(object(), [(1, 2, 1), (1, 3, 1), (1, 3, 1)])


# Mutant (driver): ``ranks_changed`` taken from a diverged sweep too (``not diverged and``
# dropped): a sweep that was undone, its ranks with it, reset the count of stalled sweeps,
# and ``patience`` did not stop the run.
def test_a_diverged_sweeps_ranks_do_not_reset_the_stall_count():
    class RanksOnDivergence(_blowing_up_at(3)):
        """Its third sweep diverges, and reports ranks that progressed."""

        def ranks_progressed(self, ranks):
            return self.calls == 3

    info, _ = _run_als(RanksOnDivergence, n_iter_max=6, patience=2)
    assert info.rolled_back == [3]
    assert info.stop_reason == "stalled" and info.n_sweeps == 3


# --- the drop-in: an int rank caps every bond, on either side ------------------------------


@pytest.mark.parametrize("shape", [(3, 8, 8), (8, 8, 3)])
def test_an_int_rank_above_a_short_mode_is_clipped_on_either_side(shape):
    # rank=5 on a (3, 8, 8) tensor was clipped at the first bond (3 rows) with a warning,
    # but on an (8, 8, 3) tensor (an RGB image) refused: "rank[2]=5 exceeds the number of
    # available column indices (3)". An int is a cap (TensorLy's tensor_train clips it on
    # both sides, and TensorLy's cross refuses every int but 1): clipped alike now.
    rng = np.random.default_rng(0)
    tensor = np.einsum("i,j,k->ijk", *(rng.random(n) for n in shape))
    with pytest.warns(UserWarning, match="exceeds what the unfoldings"):
        tt = tlc.tensor_train_cross(tensor, rank=5, random_state=0)
    assert max(tt.rank[1:-1]) <= 5 and min(tt.rank[1], tt.rank[-2]) == 3
    import tensorly as tl

    np.testing.assert_allclose(tl.tt_to_tensor(tt), tensor, atol=1e-10)
    with pytest.warns(UserWarning, match="exceeds what the unfoldings"):
        estimator = tlc.TensorTrainCross(rank=5, random_state=0).fit(tensor)
    np.testing.assert_allclose(estimator.to_tensor(), tensor, atol=1e-10)


def test_a_list_rank_above_the_columns_keeps_tensorly_s_refusal():
    with pytest.raises(ValueError, match="exceeds the number of available column indices"):
        tlc.tensor_train_cross(np.ones((8, 8, 3)), rank=[1, 5, 5, 1])


@settings(max_examples=25, deadline=None)
@given(seed=seeds, sizes=st.lists(st.sampled_from([1, 1, 2, 3, 5, 7]), min_size=1, max_size=5),
       method=st.sampled_from(["tci", "als", "lsq"]))
@pytest.mark.filterwarnings("ignore:rank.*exceeds what the unfoldings:UserWarning")
def test_an_exactly_low_rank_tensor_with_size_one_modes_is_recovered(seed, sizes, method):
    # The angle of this audit: modes of size one anywhere, d = 1, ranks capped by the
    # unfoldings at some bonds only. The reported error must be the true one (every entry
    # of these small tensors is read or held out).
    if method == "lsq" and len(sizes) < 2:
        method = "tci"
    rng = np.random.default_rng(seed)
    ranks = [1] + [int(rng.integers(1, 4)) for _ in sizes[1:]] + [1]
    tensor = tl.to_numpy(tl.tt_to_tensor(tl.random.random_tt(sizes, rank=ranks,
                                                             random_state=seed % 2**31)))
    rank = max(ranks) if method == "als" else None
    tt, info = tlc.tt_cross(tensor, method=method, rank=rank, tol=1e-10,
                            random_state=seed, return_info=True)
    error = np.linalg.norm(tl.to_numpy(tt.to_tensor()) - tensor) / np.linalg.norm(tensor)
    assert error < 1e-8
    assert info.val_error < 1e-8
