"""Rank-deficient data (a constant or all-zero volume, a field of lower rank than asked):
finite gradients that match finite differences along directions that keep the rank, and
float32 as accurate as its precision allows."""

import numpy as np
import pytest
import tensorly as tl
from hypothesis import given, settings
from hypothesis import strategies as st

import tensorly_cross as tlc
from tensorly_cross.cross.basis import max_condition, truncated_pinv

from .strategies import seeds

torch = pytest.importorskip("torch")


def _rank_one(shape, seed, dtype):
    rng = np.random.default_rng(seed)
    factors = [rng.uniform(0.5, 1.5, size=n) for n in shape]
    return torch.tensor(np.einsum("i,j,k,l->ijkl", *factors), dtype=dtype)


@settings(max_examples=12, deadline=None)
@given(method=st.sampled_from(["lsq", "als", "tci", "block"]), rank=st.integers(2, 3),
       dtype=st.sampled_from([torch.float32, torch.float64]), seed=seeds)
def test_a_field_of_lower_rank_than_asked_has_finite_exact_gradients(pytorch_backend, method,
                                                                     rank, dtype, seed):
    # A rank-1 field read at rank 2-3: the fiber blocks are singular. QR and SVD gradients
    # divided by their zero pivots and singular values, and every encoder weight got NaN.
    dense = _rank_one((5, 4, 6, 3), seed, dtype)
    ranks = [1, rank, rank, 1] if method == "block" else [1, rank, rank, rank, 1]
    indices = tlc.select_indices(dense, rank=ranks, method=method, tol=0.0, n_iter_max=2,
                                 val_size=0, random_state=seed)
    probe = torch.tensor(np.random.default_rng(seed + 1).standard_normal(dense.shape),
                         dtype=dtype)
    scale = torch.tensor(1.0, dtype=dtype, requires_grad=True)

    def loss(factor):
        return (tlc.cross_interpolate(dense * factor, indices).to_tensor() * probe).sum()

    value = loss(scale)
    value.backward()
    assert torch.isfinite(scale.grad)
    tolerance = 1e-4 if dtype == torch.float32 else 1e-10
    # Scaling keeps the rank: d loss / d scale is the loss itself (the cross is linear).
    expected = float((dense * probe).sum())
    assert float(value) == pytest.approx(expected, rel=tolerance, abs=tolerance)
    assert float(scale.grad) == pytest.approx(expected, rel=tolerance, abs=tolerance)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("method", ["block", "als"])
def test_an_all_zero_or_constant_volume_gives_finite_encoder_gradients(pytorch_backend, dtype,
                                                                      method):
    nn = pytest.importorskip("tensorly_cross.nn")
    for fill in (0.0, 1.0):
        torch.manual_seed(0)
        model = nn.CrossEmbedding(nn.default_encoder(3, 4), patch_size=3, n_features=4,
                                  rank=2, n_outputs=3, method=method).to(dtype)
        features = model(torch.full((1, 1, 12, 12, 12), fill, dtype=dtype))
        features.sum().backward()
        for parameter in model.parameters():
            if parameter.grad is not None:
                assert torch.isfinite(parameter.grad).all()


def test_float32_als_agrees_with_float64_on_a_ramp(pytorch_backend):
    # A ramp volume gives a field of rank 1-2 at rank 3: float32 used to return 1e5-1e6
    # instead of O(1) (round-off singular values taken as rank).
    nn = pytest.importorskip("tensorly_cross.nn")
    torch.manual_seed(0)
    encoder = torch.nn.Sequential(torch.nn.Conv3d(1, 4, 3), torch.nn.GELU(),
                                  torch.nn.Conv3d(4, 2, 1), torch.nn.Flatten())
    model = nn.CrossEmbedding(encoder, patch_size=3, n_features=2, rank=3, n_outputs=2,
                              n_iter_max=2, method="als")
    ramp = torch.arange(8.0).reshape(8, 1, 1).expand(8, 8, 8)[None, None]
    single = model(ramp)
    double = model.double()(ramp.double())
    np.testing.assert_allclose(single.detach().numpy(), double.detach().numpy(),
                               rtol=1e-4, atol=1e-5)


@given(seed=seeds, rank=st.integers(0, 4), dtype=st.sampled_from([np.float32, np.float64]))
def test_truncated_pinv_is_numpy_pinv_at_the_same_cut(seed, rank, dtype):
    rng = np.random.default_rng(seed)
    block = (rng.standard_normal((6, rank)) @ rng.standard_normal((rank, 5))).astype(dtype)
    singular = np.linalg.svd(block, compute_uv=False)
    cut = singular[0] / max_condition(dtype) if singular[0] > 0 else 0.0
    expected = np.linalg.pinv(block.astype(np.float64), rcond=cut / max(singular[0], 1e-300))
    with tl.backend_context("numpy"):
        result = truncated_pinv(block)
    precision = 1e-3 if dtype == np.float32 else 1e-9
    np.testing.assert_allclose(result, expected, atol=precision * max(1.0, np.abs(expected).max()))
