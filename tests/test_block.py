"""Block (vector-valued) cross: exact recovery, interpolation, one read per position, gradients."""

import numpy as np
import pytest
import tensorly as tl
from hypothesis import given
from hypothesis import strategies as st

import tensorly_cross as tlc
from tensorly_cross import CrossIndices
from tensorly_cross.cross.block import block_fiber_indices
from tensorly_cross.cross.indices import cartesian_join, mode_column, positions_in

from .conftest import host
from .strategies import random_tt_cores, seeds, tt_problems


def _with_channels(problem, channels):
    """A random TT problem whose last mode (``channels`` values) is the block."""
    shape, rank, seed = problem
    full_shape = tuple(shape) + (channels,)
    full_rank = tuple(rank[:-1]) + (min(channels, rank[-2] * shape[-1]), 1)
    return full_shape, full_rank, seed


def _dense_tt(shape, rank, seed):
    """A random TT as a dense NumPy array (built on the active backend)."""
    return host(tl.tt_to_tensor([tl.tensor(core) for core in random_tt_cores(shape, rank, seed)]))


@given(problem=tt_problems(max_modes=5, max_size=10, max_rank=4), channels=st.integers(1, 6))
def test_block_cross_recovers_an_exact_rank_tt(backend, problem, channels):
    shape, rank, seed = _with_channels(problem, channels)
    dense = _dense_tt(shape, rank, seed)
    tt = tlc.tt_cross(tl.tensor(dense), rank=[*rank[:-2], 1], method="block", tol=1e-12,
                      random_state=seed)
    assert tt.rank[-2] == channels
    error = np.linalg.norm(host(tl.tt_to_tensor(tt)) - dense) / np.linalg.norm(dense)
    assert error < 1e-10


@pytest.mark.filterwarnings("ignore:rank")
@given(shape=st.lists(st.integers(2, 5), min_size=1, max_size=3), channels=st.integers(1, 4),
       rank=st.integers(1, 3), sweeps=st.integers(1, 4), seed=seeds)
def test_block_cross_interpolates_at_its_pivots(backend, shape, channels, rank, sweeps, seed):
    dense = np.random.default_rng(seed).standard_normal((*shape, channels))
    indices = tlc.select_indices(tl.tensor(dense), rank=rank, method="block", tol=0.0,
                                 n_iter_max=sweeps, val_size=0, random_state=seed)
    tt = tlc.cross_interpolate(tl.tensor(dense), indices)
    # Each core is the identity on its pivot rows ...
    for k in range(len(shape) - 1):
        rows = cartesian_join(indices.left[k], mode_column(shape[k]))
        pivots = positions_in(indices.left[k + 1], rows)
        core = host(tt[k]).reshape(len(rows), -1)
        np.testing.assert_allclose(core[pivots], np.eye(len(pivots)), atol=1e-9)
    # ... so the TT reproduces the last fibers, read whole for every channel.
    last = block_fiber_indices(indices, len(shape) - 1)
    full = host(tl.tt_to_tensor(tt))
    np.testing.assert_allclose(full[tuple(last.T)], dense[tuple(last.T)], atol=1e-9)


@given(problem=tt_problems(max_modes=4, max_size=8, max_rank=3), channels=st.integers(2, 5))
def test_block_numpy_and_pytorch_agree(problem, channels):
    pytest.importorskip("torch")
    shape, rank, seed = _with_channels(problem, channels)
    dense = tl.tt_to_tensor(random_tt_cores(shape, rank, seed))
    results = {}
    for name in ("numpy", "pytorch"):
        with tl.backend_context(name):
            indices = tlc.select_indices(tl.tensor(dense), rank=[*rank[:-2], 1], method="block",
                                         tol=1e-12, random_state=seed)
            tt = tlc.cross_interpolate(tl.tensor(dense), indices)
            results[name] = indices.to_dict(), host(tl.tt_to_tensor(tt))
    assert results["numpy"][0] == results["pytorch"][0]
    np.testing.assert_allclose(results["numpy"][1], results["pytorch"][1], atol=1e-9)


def test_block_indices_round_trip_through_json(backend):
    dense = np.random.default_rng(0).standard_normal((6, 5, 4, 3))
    indices = tlc.select_indices(tl.tensor(dense), rank=2, method="block", n_iter_max=2,
                                 val_size=0, random_state=0)
    again = CrossIndices.from_json(indices.to_json())
    assert again.block == 3 and again.tensor_shape == dense.shape
    np.testing.assert_array_equal(host(tl.tt_to_tensor(tlc.cross_interpolate(dense, again))),
                                  host(tl.tt_to_tensor(tlc.cross_interpolate(dense, indices))))
    with pytest.raises(ValueError, match=r"\(6, 5, 4, 3\)"):
        tlc.cross_interpolate(dense[..., :2], again)


def test_every_position_read_is_read_for_all_channels(backend):
    dense = np.random.default_rng(1).standard_normal((7, 6, 5, 4))
    cache = tlc.EvaluationCache(tlc.lazy_tensor(tl.tensor(dense)))
    tlc.tt_cross(cache, rank=3, method="block", tol=0.0, n_iter_max=3, random_state=0)
    entries = np.stack(np.unravel_index(cache.keys(), dense.shape), axis=1)
    positions, counts = np.unique(entries[:, :3], axis=0, return_counts=True)
    assert np.all(counts == 4)
    assert cache.counters.unique == 4 * len(positions)


@pytest.mark.parametrize(
    "kwargs, message",
    [(dict(method="block"), "rank is required for method='block'"),
     (dict(method="block", rank=2, shape=(5,)), "at least 2 modes")],
)
def test_block_rejects_what_it_cannot_do(kwargs, message):
    shape = kwargs.pop("shape", (4, 3))
    with pytest.raises(ValueError, match=message):
        tlc.tt_cross(np.ones(shape), **kwargs)


def test_gradcheck_through_the_block_assembly():
    torch = pytest.importorskip("torch")
    with tl.backend_context("pytorch"):
        cores = random_tt_cores((5, 4, 3), (1, 2, 2, 1), 3)
        dense = tl.tt_to_tensor([torch.tensor(core) for core in cores])
        dense = dense.clone().requires_grad_(True)
        indices = tlc.select_indices(dense.detach(), rank=2, method="block", random_state=0)
        probe = torch.randn(5, 4, 3, dtype=torch.float64,
                            generator=torch.Generator().manual_seed(2))

        def loss(tensor):
            return (tl.tt_to_tensor(tlc.cross_interpolate(tensor, indices)) * probe).sum()

        assert torch.autograd.gradcheck(loss, (dense,), eps=1e-6, atol=1e-8, rtol=1e-6)
        loss(dense).backward()
        read = np.concatenate([block_fiber_indices(indices, k) for k in range(2)])
        mask = np.zeros(dense.shape, dtype=bool)
        mask[tuple(read.T)] = True
        assert np.all(dense.grad.numpy()[~mask] == 0)
        assert np.any(dense.grad.numpy()[mask] != 0)


def test_the_held_out_bound_of_a_block_cross_counts_positions():
    # Its draws are whole positions: 25 positions of 8 channels bound the off fraction at
    # 11%, not at the 1.5% that 200 independent entries would.
    from tensorly_cross.cross.stopping import heldout_bound

    shape = (6, 7, 5, 8)
    function = tlc.FunctionTensor(lambda i: np.cos(0.3 * i.sum(axis=1)), shape)
    _, info = tlc.tt_cross(function, rank=3, method="block", val_size=200, random_state=0,
                           n_iter_max=2, return_info=True)
    assert info.heldout_group == 8 and info.n_heldout % 8 == 0 and info.n_fresh % 8 == 0
    # After a confirmation, its fresh entries alone are one test (see CrossInfo.n_fresh).
    draws = (info.n_fresh or info.n_heldout) // 8
    assert info.heldout_bound == pytest.approx(heldout_bound(draws))
