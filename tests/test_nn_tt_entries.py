"""tt_entries in bounded memory: the value-by-value contraction of large-rank cores
(test_nn_* because this issue's large-rank case comes from encoder feature fields)."""

import contextlib
import tracemalloc

import numpy as np
import pytest
import tensorly as tl
from hypothesis import given, settings
from hypothesis import strategies as st

import tensorly_cross.cross.tt_entries as tt_entries_module
from tensorly_cross import tt_entries

from .strategies import seeds


@contextlib.contextmanager
def _gather_limit(entries):
    """Contract every mode value by value (``entries=0``) or by the gather."""
    old = tt_entries_module.WORK_ENTRIES
    tt_entries_module.WORK_ENTRIES = entries
    try:
        yield
    finally:
        tt_entries_module.WORK_ENTRIES = old


@settings(max_examples=15, deadline=None)
@given(rank=st.integers(1, 9), seed=seeds, n_entries=st.integers(1, 60))
def test_value_by_value_contraction_equals_the_gather(rank, seed, n_entries):
    shape = (3, 5, 2, 4)
    tt = tl.random.random_tt(shape, rank=[1, rank, rank + 1, rank, 1], random_state=seed % 1000)
    indices = np.stack([np.random.default_rng(seed).integers(0, n, size=n_entries)
                        for n in shape], axis=1)
    gathered = tt_entries(tt, indices)
    with _gather_limit(0):
        grouped = tt_entries(tt, indices)
    dense = tl.tt_to_tensor(tt)[tuple(indices.T)]
    np.testing.assert_allclose(tl.to_numpy(grouped), tl.to_numpy(dense), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(tl.to_numpy(gathered), tl.to_numpy(grouped), rtol=1e-12,
                               atol=1e-12)


def test_large_rank_entries_need_memory_linear_in_the_rank(numpy_backend):
    # 5,000 entries at rank 128: one (m, r, r) gather per core would hold 655 MB.
    m, rank = 5000, 128
    rng = np.random.default_rng(0)
    cores = [rng.standard_normal((1, 4, rank)), rng.standard_normal((rank, 4, rank)) / rank,
             rng.standard_normal((rank, 4, rank)) / rank, rng.standard_normal((rank, 4, 1))]
    indices = rng.integers(0, 4, size=(m, 4))
    tracemalloc.start()
    values = tt_entries(cores, indices)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 64 * 2**20, f"peak {peak / 2**20:.0f} MiB"
    expected = tl.tt_to_tensor(cores)[tuple(indices.T)]
    np.testing.assert_allclose(values, expected, rtol=1e-10, atol=1e-12)


def test_large_rank_entries_carry_gradients():
    torch = pytest.importorskip("torch")
    with tl.backend_context("pytorch"):
        generator = torch.Generator().manual_seed(0)
        cores = [torch.randn(1, 3, 70, dtype=torch.float64, generator=generator),
                 torch.randn(70, 3, 70, dtype=torch.float64, generator=generator),
                 torch.randn(70, 3, 1, dtype=torch.float64, generator=generator)]
        cores = [core.requires_grad_(True) for core in cores]
        indices = np.random.default_rng(0).integers(0, 3, size=(1000, 3))
        with _gather_limit(0):
            grouped = torch.autograd.grad(tt_entries(cores, indices).sum(), cores)
        gathered = torch.autograd.grad(tt_entries(cores, indices).sum(), cores)
        for first, second in zip(grouped, gathered, strict=True):
            torch.testing.assert_close(first, second)
