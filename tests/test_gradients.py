"""Differentiable cross on PyTorch: gradients through cross_interpolate match finite differences."""

import numpy as np
import pytest
import tensorly as tl

import tensorly_cross as tlc

torch = pytest.importorskip("torch")


DEVICES = [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                  reason="no CUDA device on this machine")),
]


@pytest.fixture(params=DEVICES)
def device(request):
    return torch.device(request.param)


def _low_rank_dense(shape, seed, device="cpu"):
    rng = np.random.default_rng(seed)
    cores = [rng.standard_normal((r0, n, r1)) for r0, n, r1 in zip(
        [1, 2, 2], shape, [2, 2, 1], strict=True)]
    return tl.tt_to_tensor([torch.tensor(c, device=device) for c in cores])


def test_gradcheck_through_cross_interpolate_of_a_dense_tensor(pytorch_backend, device):
    dense = _low_rank_dense((4, 5, 3), 0, device).clone().requires_grad_(True)
    indices = tlc.select_indices(dense.detach(), rank=2, random_state=0)
    probe = torch.randn(4, 5, 3, dtype=torch.float64,
                        generator=torch.Generator().manual_seed(1)).to(device)

    def loss(tensor):
        return (tl.tt_to_tensor(tlc.cross_interpolate(tensor, indices)) * probe).sum()

    assert torch.autograd.gradcheck(loss, (dense,), eps=1e-6, atol=1e-8, rtol=1e-6)


def test_only_sampled_entries_receive_gradient(pytorch_backend, device):
    dense = _low_rank_dense((6, 5, 4), 2, device).clone().requires_grad_(True)
    tt = tlc.tt_cross(dense, rank=2, random_state=0, differentiable=True)
    tl.tt_to_tensor(tt).sum().backward()
    indices = tlc.select_indices(dense.detach(), rank=2, random_state=0)
    from tensorly_cross.cross.indices import fiber_indices

    read = np.concatenate([fiber_indices(indices.left[k], n, indices.right[k])
                           for k, n in enumerate(dense.shape)])
    mask = np.zeros(dense.shape, dtype=bool)
    mask[tuple(read.T)] = True
    assert dense.grad.device == dense.device
    gradient = dense.grad.cpu().numpy()
    assert np.all(gradient[~mask] == 0)
    assert np.any(gradient[mask] != 0)


def test_gradcheck_with_respect_to_function_parameters(pytorch_backend, device):
    weights = torch.tensor([0.3, -0.2, 0.5], dtype=torch.float64, device=device,
                           requires_grad=True)
    grid = torch.linspace(0, 1, 8, dtype=torch.float64, device=device)

    def make_tensor(params):
        def function(indices):
            points = grid[torch.as_tensor(indices, device=device)]
            return torch.exp(points @ params[:3])  # separable: TT rank 1

        return tlc.FunctionTensor(function, (8, 8, 8))

    indices = tlc.select_indices(make_tensor(weights.detach()), tol=1e-12, random_state=0)

    def loss(params):
        tt = tlc.cross_interpolate(make_tensor(params), indices)
        return tl.tt_to_tensor(tt).sum()

    assert torch.autograd.gradcheck(loss, (weights,), eps=1e-6, atol=1e-8, rtol=1e-6)


def test_drop_in_gradient_matches_finite_differences(pytorch_backend, device):
    dense = _low_rank_dense((4, 4, 4), 3, device).clone().requires_grad_(True)
    probe = torch.randn(4, 4, 4, dtype=torch.float64,
                        generator=torch.Generator().manual_seed(4)).to(device)

    def loss(tensor):
        tt = tlc.tensor_train_cross(tensor, [1, 2, 2, 1], random_state=0)
        return (tl.tt_to_tensor(tt) * probe).sum()

    loss(dense).backward()
    analytic = dense.grad[1, 2, 3].item()
    step = 1e-6
    bump = torch.zeros_like(dense)
    bump[1, 2, 3] = step
    numeric = (loss(dense.detach() + bump) - loss(dense.detach() - bump)).item() / (2 * step)
    assert analytic == pytest.approx(numeric, rel=1e-6, abs=1e-9)


def test_cross_on_the_device_matches_the_cpu(pytorch_backend, device):
    dense = _low_rank_dense((7, 6, 5), 5)
    on_cpu = tlc.tt_cross(dense, tol=1e-12, random_state=0)
    on_device = tlc.tt_cross(dense.to(device), tol=1e-12, random_state=0)
    for a, b in zip(on_cpu, on_device, strict=True):
        assert b.device.type == device.type
        np.testing.assert_allclose(a.numpy(), b.cpu().numpy(), atol=1e-10)


@pytest.mark.parametrize("method", ["lsq", "als", "tci"])
@pytest.mark.parametrize("imaginary", [False, True], ids=["real", "complex"])
def test_gradients_match_finite_differences_on_data_not_of_low_rank(pytorch_backend, method,
                                                                    imaginary):
    # At rank 3 a smooth function is truncated: the least-squares cross's gradient left out
    # how the kept singular span moves with the data (0.84 against finite differences' 0.64).
    grid = np.linspace(0.0, 1.0, 8)
    base = 1.0 / (1.0 + np.add.outer(np.add.outer(grid, 2 * grid), 3 * grid))
    rng = np.random.default_rng(3)
    if imaginary:
        base = base + 0.3j * np.cos(np.add.outer(np.add.outer(grid, grid), grid))
    dense = torch.tensor(base)
    direction = torch.tensor(rng.standard_normal(base.shape) + 0j * imaginary)
    probe = torch.tensor(rng.standard_normal(base.shape))
    indices = tlc.select_indices(dense, rank=3, method=method, random_state=0)

    def loss(tensor):
        return (tlc.cross_interpolate(tensor, indices).to_tensor() * probe).sum().abs() ** 2

    variable = dense.clone().requires_grad_(True)
    loss(variable).backward()
    step = 1e-6
    finite = (loss(dense + step * direction) - loss(dense - step * direction)) / (2 * step)
    analytic = (torch.conj(variable.grad) * direction).sum().real
    assert float(analytic) == pytest.approx(float(finite), rel=1e-5, abs=1e-8)
