"""Audit s20 of the nn module and of gradients under the NumPy backend: a shared random
generator made features change from run to run, the PCA head was refitted in train mode by
``fit``, an encoder that changes its input in place corrupted the cached patches of a
batch of one, ``differentiable=True`` under NumPy lost the gradient without a word,
``tt_inner`` of complex TTs did not conjugate, and a module given as head took volumes of
any grid. Each test failed before its fix."""

import numpy as np
import pytest
import tensorly as tl

torch = pytest.importorskip("torch")

import tensorly_cross as tlc  # noqa: E402
from tensorly_cross.nn import CrossEmbedding, default_encoder, tt_inner, tt_inner_many  # noqa: E402

pytestmark = pytest.mark.usefixtures("pytorch_backend")


def _volumes(count, size=12, seed=1):
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(count, 1, size, size, size, generator=generator)


def _embedding(random_state, **extra):
    torch.manual_seed(0)
    options = dict(patch_size=3, n_features=2, rank=3, stride=1, n_iter_max=3, n_outputs=3,
                   volume_shape=(12, 12, 12))
    options.update(extra)
    encoder = extra.pop("encoder", None) or default_encoder(3, 2, width=3, pooled=True)
    options["encoder"] = encoder
    return CrossEmbedding(random_state=random_state, **options)


@pytest.mark.parametrize("make", [np.random.default_rng, np.random.RandomState])
def test_a_generator_as_random_state_gives_the_same_features_every_run(make):
    volumes = _volumes(4)
    runs = [_embedding(make(0))(volumes).detach() for _ in range(3)]
    assert all(torch.equal(run, runs[0]) for run in runs)
    module = _embedding(make(0))
    alone = module(volumes[3:4]).detach()
    assert torch.equal(alone, module(volumes[3:4]).detach())  # same volume, same indices
    assert torch.allclose(alone[0], runs[0][3], atol=1e-12)  # alone as in a batch


def test_fit_pca_fits_in_eval_mode_and_restores_the_mode():
    torch.manual_seed(0)
    encoder = torch.nn.Sequential(torch.nn.Conv3d(1, 4, 3), torch.nn.GELU(),
                                  torch.nn.Dropout(0.5), torch.nn.Conv3d(4, 2, 1),
                                  torch.nn.Flatten())
    module = CrossEmbedding(encoder, patch_size=3, n_features=2, rank=2, stride=2,
                            n_iter_max=2, head="pca", n_outputs=2, random_state=0)
    volumes = list(_volumes(6))
    module.train()
    module.fit_pca(volumes)
    assert module.training and encoder.training  # the mode it was in
    module.eval()
    with torch.no_grad():
        coordinates = module(volumes)
    # Centred on the training volumes' mean, as fitted from eval-mode features.
    assert float(coordinates.mean(0).abs().max()) < 1e-6 * float(coordinates.abs().max())


class _Triple(torch.nn.Module):
    def __init__(self, inplace):
        super().__init__()
        self.inplace = inplace

    def forward(self, patches):
        return patches.mul_(3.0) if self.inplace else patches * 3.0


@pytest.mark.parametrize("count", [1, 2])
def test_an_encoder_that_changes_its_input_in_place_gives_the_same_features(count):
    def build(inplace):
        torch.manual_seed(0)
        encoder = torch.nn.Sequential(_Triple(inplace), torch.nn.Conv3d(1, 3, 3),
                                      torch.nn.GELU(), torch.nn.Conv3d(3, 2, 1),
                                      torch.nn.Flatten())
        return CrossEmbedding(encoder, patch_size=3, n_features=2, rank=2, stride=2,
                              n_iter_max=2, n_outputs=3, volume_shape=(12, 12, 12),
                              random_state=0)

    volumes = _volumes(count)
    assert torch.allclose(build(False)(volumes), build(True)(volumes), atol=1e-12)


def test_differentiable_under_the_numpy_backend_refuses_a_tensor_that_requires_grad():
    data = torch.rand(6, 6, 6, dtype=torch.float64, requires_grad=True)
    with tl.backend_context("numpy"):
        with pytest.raises(ValueError, match="requires grad.*backend is 'numpy'"):
            tlc.tt_cross(data, rank=2, method="als", differentiable=True, random_state=0)
        indices = tlc.select_indices(data.detach(), rank=2, method="als", random_state=0)
        with pytest.raises(ValueError, match="cross_interpolate: tensor requires grad"):
            tlc.cross_interpolate(data, indices)
        # Without gradient asked for, the NumPy backend reads it as before.
        assert tlc.tt_cross(data.detach(), rank=2, method="als", random_state=0) is not None


def _complex_tt(shape, rank, seed):
    generator = torch.Generator().manual_seed(seed)
    ranks = (1,) + (rank,) * (len(shape) - 1) + (1,)
    return [torch.randn(ranks[k], n, ranks[k + 1], dtype=torch.complex128,
                        generator=generator) for k, n in enumerate(shape)]


def test_tt_inner_of_complex_tts_conjugates_the_first():
    first, second = _complex_tt((3, 4, 2), 2, 0), _complex_tt((3, 4, 2), 3, 1)
    dense_first = tl.tt_to_tensor(first)
    dense_second = tl.tt_to_tensor(second)
    expected = torch.sum(dense_first.conj() * dense_second)
    assert torch.allclose(tt_inner(first, second), expected)
    norm = tt_inner(first, first)
    assert torch.allclose(norm, torch.linalg.norm(dense_first) ** 2 + 0j)
    stacked = [torch.stack([core, core]) for core in second]
    assert torch.allclose(tt_inner_many(first, stacked), expected.repeat(2))


def test_a_module_as_head_takes_one_grid_as_the_built_in_heads():
    class SumHead(torch.nn.Module):
        def forward(self, tt):
            return torch.stack([core.sum() for core in tt])

    torch.manual_seed(0)
    module = CrossEmbedding(default_encoder(3, 2), patch_size=3, n_features=2, rank=2,
                            stride=2, n_iter_max=2, head=SumHead(), random_state=0)
    module(_volumes(1, size=12))
    with pytest.raises(ValueError, match="one module takes one volume shape"):
        module(_volumes(1, size=10))


def test_the_drop_in_refuses_a_tensor_that_requires_grad_under_another_backend():
    # tensor_train_cross wrapped the tensor before the check: NumPy cores, no word.
    data = torch.rand(5, 6, 7, dtype=torch.float64, requires_grad=True)
    with tl.backend_context("numpy"):
        with pytest.raises(ValueError, match="tensor_train_cross: tensor requires grad"):
            tlc.tensor_train_cross(data, rank=2, random_state=0)


def test_qtt_to_tt_gives_cores_of_the_active_backend_only():
    function = tlc.FunctionTensor(lambda i: np.cos(i[:, 0] / 3.0) + i[:, 1], (2, 16))
    quantics = tlc.QuanticsTensor(function)
    torch_tt = tlc.tt_cross(quantics, tol=1e-10, random_state=0)  # the pytorch fixture
    with tl.backend_context("numpy"):
        numpy_tt = tlc.qtt_to_tt(torch_tt, quantics.layout)
        assert all(isinstance(core, np.ndarray) for core in numpy_tt)  # one was torch
        numpy_dense = tl.tt_to_tensor(numpy_tt)
        numpy_q = tlc.tt_cross(quantics, tol=1e-10, random_state=0)
    back = tlc.qtt_to_tt(list(numpy_q), quantics.layout)  # crashed in tensordot
    assert all(isinstance(core, torch.Tensor) for core in back)
    assert np.allclose(numpy_dense, tl.tt_to_tensor(back).numpy(), atol=1e-8)
