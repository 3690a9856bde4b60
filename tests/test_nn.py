"""tensorly_cross.nn: patches, encoded tensors, gradients to the encoder, heads, training."""

import numpy as np
import pytest
import tensorly as tl
from hypothesis import given
from hypothesis import strategies as st

torch = pytest.importorskip("torch")

import tensorly_cross as tlc  # noqa: E402
from tensorly_cross.nn import (  # noqa: E402
    CrossEmbedding,
    EncodedTensor,
    PatchGrid,
    TTPCAHead,
    default_encoder,
    tt_inner,
)

from .strategies import seeds  # noqa: E402

pytestmark = pytest.mark.usefixtures("pytorch_backend")


def _volume(shape=(12, 10, 9), seed=0):
    return torch.as_tensor(np.random.default_rng(seed).standard_normal(shape))


@given(padding=st.sampled_from(["reflect", "edge", "zeros"]), stride=st.integers(1, 3),
       size=st.sampled_from([1, 3, 4, 5]), seed=seeds)
def test_patches_equal_numpy_pad_then_slice(padding, stride, size, seed):
    volume = _volume(seed=seed % 100)
    grid = PatchGrid(volume, size, stride, padding)
    rng = np.random.default_rng(seed)
    positions = np.stack([rng.integers(n, size=6) for n in grid.grid_shape], axis=1)
    half = (size - 1) // 2
    mode = {"reflect": "reflect", "edge": "edge", "zeros": "constant"}[padding]
    padded = np.pad(volume.numpy(), size, mode=mode)
    patches = grid.patches(positions, dtype=torch.float64).numpy()
    for patch, position in zip(patches, positions, strict=True):
        start = position * stride - half + size
        expected = padded[tuple(slice(s, s + size) for s in start)]
        np.testing.assert_array_equal(patch[0], expected)


def test_out_of_core_patches_equal_in_memory_patches(tmp_path):
    volume = _volume()
    np.save(tmp_path / "v.npy", volume.numpy())
    positions = np.array([[0, 0, 0], [11, 9, 8], [5, 4, 3]])
    lazy = PatchGrid(tlc.open_volume(tmp_path / "v.npy"), 5).patches(positions, dtype=torch.float64)
    memory = PatchGrid(volume, 5).patches(positions, dtype=torch.float64)
    torch.testing.assert_close(lazy, memory)


@given(seed=seeds)
def test_encoded_entries_are_the_encoder_on_the_patch(seed):
    torch.manual_seed(seed % 1000)
    volume = _volume(seed=seed % 100)
    encoder = default_encoder(5, 3).double()
    lazy = EncodedTensor(volume, encoder, 5, 3)
    rng = np.random.default_rng(seed)
    indices = np.stack([rng.integers(n, size=20) for n in lazy.shape], axis=1)
    with torch.no_grad():
        values = lazy.evaluate(indices)
        patches = PatchGrid(volume, 5).patches(indices[:, :3], dtype=torch.float64)
        expected = encoder(patches)[torch.arange(20), torch.as_tensor(indices[:, 3])]
    torch.testing.assert_close(values, expected)
    assert lazy.n_encoded == len(np.unique(indices[:, :3], axis=0))


def test_feature_axis_first_holds_the_same_entries():
    encoder = default_encoder(3, 4).double()
    volume = _volume()
    last = EncodedTensor(volume, encoder, 3, 4)
    first = EncodedTensor(volume, encoder, 3, 4, feature_axis="first")
    assert first.shape == (4,) + last.shape[:3]
    indices = np.array([[1, 2, 3, 0], [11, 9, 8, 3], [0, 0, 0, 2]])
    with torch.no_grad():
        torch.testing.assert_close(first.evaluate(indices[:, [3, 0, 1, 2]]),
                                   last.evaluate(indices))
    with pytest.raises(ValueError, match="feature_axis"):
        EncodedTensor(volume, encoder, 3, 4, feature_axis="middle")


@given(order=st.sampled_from(["grouped", "interleaved"]), seed=seeds)
def test_quantics_layout_holds_the_same_entries(order, seed):
    encoder = default_encoder(3, 4).double()
    volume = _volume((12, 8, 6))
    plain = EncodedTensor(volume, encoder, 3, 4)
    quantics = EncodedTensor(volume, encoder, 3, 4, layout="quantics", order=order)
    assert quantics.shape == (2, 2, 3, 2, 2, 2, 2, 3, 4) or order == "interleaved"
    assert quantics.shape[-1] == 4 and np.prod(quantics.shape) == np.prod(plain.shape)
    rng = np.random.default_rng(seed)
    indices = np.stack([rng.integers(n, size=30) for n in plain.shape], axis=1)
    with torch.no_grad():
        torch.testing.assert_close(quantics.evaluate(quantics.layout.to_quantics(indices)),
                                   plain.evaluate(indices))
    with pytest.raises(ValueError, match="feature_axis='last'"):
        EncodedTensor(volume, encoder, 3, 4, layout="quantics", feature_axis="first")


@pytest.mark.filterwarnings("ignore:rank.*exceeds what the unfoldings")  # rank 16 caps every bond
def test_block_cross_on_the_quantics_layout_merges_back_to_the_grid():
    # A linear encoder of a separable volume: the feature field's QTT ranks are at most 13
    # (zero padding puts part of it on the borders only: found through the probe choice).
    torch.manual_seed(0)
    grid = np.arange(16.0)
    volume = torch.as_tensor(np.exp(-grid[:, None, None] / 7) * np.cos(grid[None, :, None] / 5)
                             * (1 + grid[None, None, :] / 9))
    encoder = torch.nn.Sequential(torch.nn.Conv3d(1, 3, 3), torch.nn.Flatten()).double()
    lazy = EncodedTensor(volume, encoder, 3, 3, padding="zeros", layout="quantics")
    with torch.no_grad():
        tt = tlc.tt_cross(lazy, rank=16, method="block", tol=1e-10, random_state=0)
        merged = tl.tt_to_tensor(tlc.qtt_to_tt(tt, lazy.layout))
        plain = EncodedTensor(volume, encoder, 3, 3, padding="zeros")
        positions = np.stack(np.unravel_index(np.arange(16**3), (16,) * 3), axis=1)
        exact = plain.features(positions).reshape(16, 16, 16, 3)
    assert merged.shape == (16, 16, 16, 3)
    assert float(torch.linalg.norm(merged - exact) / torch.linalg.norm(exact)) < 1e-8
    assert lazy.n_encoded < 0.7 * 16**3


def test_encoder_runs_once_per_position_for_all_features():
    encoder = default_encoder(3, 16).double()
    lazy = EncodedTensor(_volume(), encoder, 3, 16)
    seen = tlc.EvaluationCache(lazy)
    with torch.no_grad():
        _, info = tlc.tt_cross(seen, rank=4, tol=0.0, n_iter_max=3, val_size=0,
                               random_state=0, return_info=True)
    entries = np.stack(np.unravel_index(seen.keys(), lazy.shape), axis=1)
    assert lazy.n_encoded == len(np.unique(entries[:, :3], axis=0))
    assert lazy.n_encoded < info.n_evals < info.n_requested


def test_block_cross_encodes_each_position_once_for_all_features():
    encoder = default_encoder(3, 8).double()
    lazy = EncodedTensor(_volume(), encoder, 3, 8)
    with torch.no_grad():
        indices, info = tlc.select_indices(lazy, rank=3, method="block", tol=0.0,
                                           n_iter_max=3, random_state=0, return_info=True)
    # Every distinct entry read belongs to a position read for all 8 features, once.
    assert info.n_evals == 8 * lazy.n_encoded
    assert info.n_requested >= 8 * lazy.n_encoded
    encoded = lazy.n_encoded
    tt = tlc.cross_interpolate(lazy, indices)
    assert tt.rank == (1, 3, 3, 8, 1)
    from tensorly_cross.cross.indices import fiber_indices

    read = np.concatenate([fiber_indices(indices.left[k], n, indices.right[k])
                           for k, n in enumerate(indices.shape)])
    assert lazy.n_encoded - encoded == len(np.unique(read, axis=0))


@pytest.mark.parametrize("method", ["block", "als"])
def test_oversampled_embedding_probes_more_positions(method):
    volume = _volume()
    sizes = {}
    for oversample in (1.0, 2.0):
        embedding = CrossEmbedding(patch_size=3, n_features=4, rank=2, method=method,
                                   n_iter_max=2, oversample=oversample).double()
        tt, lazy = embedding.tt(volume, key="v")
        assert tuple(tl.shape(tl.tt_to_tensor(tt))) == lazy.shape
        indices = embedding._indices["v"][0]
        sizes[oversample] = [block.shape[0] for block in indices.right[:-1]]
    # rank 2 and every right set can hold 4 here (the smallest holds the 4 features)
    assert sizes[2.0] == [2 * size for size in sizes[1.0]]


class _FunctionalEncoder(torch.nn.Module):
    """A conv encoder whose weights are inputs (so gradcheck can perturb them)."""

    def __init__(self, weight, bias):
        super().__init__()
        self.weight, self.bias = weight, bias

    def forward(self, patches):
        return torch.nn.functional.conv3d(patches, self.weight, self.bias).flatten(1)


def test_gradcheck_with_respect_to_encoder_parameters():
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(2, 1, 3, 3, 3, dtype=torch.float64, generator=generator)
    bias = torch.randn(2, dtype=torch.float64, generator=generator)
    volume = _volume((6, 5, 4))
    lazy = EncodedTensor(volume, _FunctionalEncoder(weight, bias), 3, 2)
    with torch.no_grad():
        indices = tlc.select_indices(lazy, rank=2, tol=0.0, n_iter_max=2, val_size=0,
                                     random_state=0)

    def loss(w, b):
        tt = tlc.cross_interpolate(EncodedTensor(volume, _FunctionalEncoder(w, b), 3, 2),
                                   indices)
        return tl.tt_to_tensor(tt).pow(2).sum()

    inputs = (weight.clone().requires_grad_(True), bias.clone().requires_grad_(True))
    assert torch.autograd.gradcheck(loss, inputs, eps=1e-6, atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize("patch_cache_bytes", [0, 2000, 32 * 2**20])
def test_a_volume_that_requires_grad_gets_the_finite_difference_gradient(patch_cache_bytes):
    # A learnable layer in front of the embedding: its gradient comes through the patches
    # read with grad, whatever the patch cache kept from the search (None or partial before).
    raw = torch.as_tensor(np.random.default_rng(0).random((1, 12, 12, 12)))
    torch.manual_seed(1)
    module = CrossEmbedding(patch_size=3, n_features=2, rank=2, n_outputs=2, stride=2,
                            n_iter_max=2, patch_cache_bytes=patch_cache_bytes).double()
    gain = torch.tensor(2.0, dtype=torch.float64, requires_grad=True)
    module([gain * raw], keys=[0]).sum().backward()
    with torch.no_grad():  # the same indices (key 0), so a smooth function of the gain
        step = 1e-6
        difference = (module([(2 + step) * raw], keys=[0]).sum()
                      - module([(2 - step) * raw], keys=[0]).sum()) / (2 * step)
    assert gain.grad is not None
    torch.testing.assert_close(gain.grad, difference, rtol=1e-5, atol=1e-9)


def test_only_voxels_of_sampled_patches_get_gradient():
    volume = _volume().requires_grad_(True)
    encoder = default_encoder(3, 2).double()
    lazy = EncodedTensor(volume, encoder, 3, 2)
    with torch.no_grad():
        indices = tlc.select_indices(lazy, rank=2, tol=0.0, n_iter_max=2, val_size=0,
                                     random_state=0)
    tl.tt_to_tensor(tlc.cross_interpolate(EncodedTensor(volume, encoder, 3, 2), indices)).sum() \
        .backward()
    from tensorly_cross.cross.indices import fiber_indices

    read = np.concatenate([fiber_indices(indices.left[k], n, indices.right[k])[:, :3]
                           for k, n in enumerate(lazy.shape)])
    grid, _ = PatchGrid(volume.detach(), 3).voxel_indices(np.unique(read, axis=0))
    touched = np.zeros(volume.shape, dtype=bool)
    touched[tuple(grid.reshape(-1, 3).T)] = True
    gradient = volume.grad.numpy()
    assert np.all(gradient[~touched] == 0) and np.any(gradient[touched] != 0)
    assert touched.mean() < 1.0


@given(seed=seeds)
def test_tt_inner_is_the_dense_inner_product_and_pca_is_gauge_invariant(seed):
    shape, rank = (4, 3, 5), [1, 2, 3, 1]
    first = tl.random.random_tt(shape, rank=rank, random_state=seed % 1000)
    second = tl.random.random_tt(shape, rank=rank, random_state=seed % 1000 + 1)
    dense = (tl.tt_to_tensor(first) * tl.tt_to_tensor(second)).sum()
    torch.testing.assert_close(tt_inner(list(first), list(second)), dense)
    gauge = torch.as_tensor(np.random.default_rng(seed).standard_normal((2, 2))) + 3 * torch.eye(2,
                                                                                         dtype=torch.float64)
    regauged = [torch.einsum("inj,jk->ink", first[0], gauge),
                torch.einsum("ij,jnk->ink", torch.linalg.inv(gauge), first[1]), first[2]]
    head = TTPCAHead(2).fit([list(tl.random.random_tt(shape, rank=rank, random_state=s))
                             for s in range(5)])
    torch.testing.assert_close(head(list(first)), head(regauged))


@given(seed=seeds)
def test_a_pca_refit_keeps_the_coordinates_a_readout_was_trained_on(seed):
    shape, rank = (4, 3, 5), [1, 2, 2, 1]
    tts = [list(tl.random.random_tt(shape, rank=rank, random_state=seed % 1000 + s))
           for s in range(6)]
    head = TTPCAHead(3).fit(tts)
    before = torch.stack([head(tt) for tt in tts])
    # Flip and rotate the fitted components: a refit on the same TTs must follow them
    # (eigh alone would return its own signs and basis).
    angle = torch.tensor(0.3 + seed % 5, dtype=torch.float64)
    rotation = torch.eye(3, dtype=torch.float64)
    rotation[:2, :2] = torch.stack([torch.stack([angle.cos(), -angle.sin()]),
                                    torch.stack([angle.sin(), angle.cos()])])
    head.projection = head.projection @ (rotation @ torch.diag(torch.tensor([-1.0, 1, -1],
                                                                   dtype=torch.float64)))
    turned = torch.stack([head(tt) for tt in tts])
    head.fit(tts)
    torch.testing.assert_close(torch.stack([head(tt) for tt in tts]), turned)
    # The same principal coordinates up to that rotation: the same Gram as the first fit's.
    torch.testing.assert_close(turned @ turned.T, before @ before.T)


def test_mean_initialised_probes_start_as_channel_means():
    from tensorly_cross.nn import TTProbeHead

    shape, channel_means = (6, 5, 4, 3), torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    constant = [torch.ones(1, 6, 1), torch.ones(1, 5, 1), torch.ones(1, 4, 1),
                channel_means.reshape(1, 3, 1)]
    head = TTProbeHead(shape, 4, generator=torch.Generator().manual_seed(0)).double()
    weights = head.cores[-1][:, 0, :, 0].detach()
    expected = weights @ channel_means / 3**0.5
    torch.testing.assert_close(head([c.double() for c in constant]).detach(), expected,
                               rtol=0.2, atol=0.05)
    with pytest.raises(ValueError, match="init"):
        TTProbeHead(shape, 4, init="zeros")


def test_a_tiny_training_run_lowers_its_loss():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    volumes = [torch.as_tensor(rng.standard_normal((1, 8, 8, 8)) * s + s) for s in
               (0.5, 1.0, 1.5, 2.0)]
    targets = torch.tensor([0.5, 1.0, 1.5, 2.0], dtype=torch.float64)
    model = CrossEmbedding(patch_size=3, n_features=2, rank=2, n_outputs=4,
                           refresh_every=2).double()
    readout = torch.nn.Linear(4, 1).double()
    model(volumes[:1])  # builds the probe head
    optimiser = torch.optim.Adam([*model.parameters(), *readout.parameters()], lr=0.01)
    losses = []
    for _ in range(30):
        optimiser.zero_grad()
        prediction = readout(model(volumes, keys=range(4))).squeeze(1)
        loss = torch.mean((prediction - targets) ** 2)
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert min(losses[-5:]) < 0.5 * losses[0]


def test_features_of_unsorted_repeated_positions_match_their_sorted_features():
    encoder = default_encoder(3, 2).double()
    lazy = EncodedTensor(_volume(), encoder, 3, 2)
    positions = np.array([[5, 4, 3], [0, 0, 0], [5, 4, 3], [11, 9, 8]])
    with torch.no_grad():
        features = lazy.features(positions)
        expected = encoder(PatchGrid(_volume(), 3).patches(positions, dtype=torch.float64))
        torch.testing.assert_close(features, expected)
        torch.testing.assert_close(lazy.features(positions[::-1].copy()), expected.flip(0))
    assert lazy.n_encoded == 3


def test_an_empty_read_of_an_encoded_tensor_is_empty():
    encoder = torch.nn.Sequential(torch.nn.Conv3d(1, 2, 3), torch.nn.Flatten()).double()
    lazy = EncodedTensor(torch.rand(6, 6, 6, dtype=torch.float64), encoder, 3, 2)
    for grad in (False, True):
        with torch.set_grad_enabled(grad):
            assert tuple(lazy.features(np.zeros((0, 3), dtype=np.int64)).shape) == (0, 2)
            assert tuple(lazy.evaluate(np.zeros((0, 4), dtype=np.int64)).shape) == (0,)


def test_cached_features_follow_every_change_of_the_encoder():
    torch.manual_seed(0)
    encoder = torch.nn.Sequential(torch.nn.Conv3d(1, 2, 3), torch.nn.BatchNorm3d(2),
                                  torch.nn.Flatten()).double().eval()
    lazy = EncodedTensor(torch.rand(6, 6, 6, dtype=torch.float64), encoder, 3, 2)
    positions = np.array([[1, 2, 3], [4, 0, 2]])
    changes = [lambda: setattr(encoder[0].weight, "data", torch.randn_like(encoder[0].weight)),
               lambda: encoder[1].running_mean.fill_(0.5),
               lambda: encoder.__setitem__(0, torch.nn.Conv3d(1, 2, 3).double())]
    for change in changes:
        with torch.no_grad():
            lazy.features(positions)  # cached
            change()
            torch.testing.assert_close(lazy.features(positions),
                                       encoder(lazy.patches.patches(positions,
                                                                    dtype=torch.float64)))


@pytest.mark.parametrize("grad", [False, True])
@pytest.mark.parametrize("change", ["in place", "new storage"])
def test_cached_patches_follow_a_change_of_the_torch_volume(grad, change):
    # The patches cut before volume.mul_(5) were served for good, with grad on too.
    torch.manual_seed(0)
    encoder = default_encoder(3, 2).double()
    volume = torch.rand(8, 8, 8, dtype=torch.float64)
    lazy = EncodedTensor(volume, encoder, patch_size=3, n_features=2, stride=2)
    positions = np.array([[1, 2, 0], [3, 3, 3]])
    with torch.no_grad():
        lazy.features(positions)  # patches and features cached
        if change == "in place":
            volume.mul_(5.0)
        else:
            volume.data = torch.rand(8, 8, 8, dtype=torch.float64)
    with torch.set_grad_enabled(grad):
        features = lazy.features(positions)
    expected = encoder(PatchGrid(volume, 3, 2).patches(positions, dtype=torch.float64))
    torch.testing.assert_close(features.detach(), expected.detach())


def test_a_tt_of_an_encoded_tensor_reads_the_volume_as_it_is_now():
    torch.manual_seed(0)
    encoder = default_encoder(3, 2)
    volume = torch.rand(8, 8, 8)
    lazy = EncodedTensor(volume, encoder, patch_size=3, n_features=2, stride=2)
    index = np.array([[1, 2, 0, 1]])
    with torch.no_grad():
        lazy.evaluate(index)
    volume.mul_(5.0)
    tt = tlc.tt_cross(lazy, rank=2, method="als", differentiable=True, random_state=0)
    with torch.no_grad():
        expected = encoder(lazy.patches.patches([[1, 2, 0]]))[0, 1]
    torch.testing.assert_close(tlc.tt_entries(tt, index)[0].detach(), expected)


def test_pca_components_beyond_the_span_of_the_training_tts_are_zero():
    # 4 centred TTs span 3 directions: a 4th component was round-off scaled by 1e6-1e8.
    shape, rank = (4, 3, 5), [1, 2, 2, 1]
    tts = [list(tl.random.random_tt(shape, rank=rank, random_state=s)) for s in range(4)]
    for dtype in (torch.float32, torch.float64):
        head = TTPCAHead(4).fit([[core.to(dtype) for core in tt] for tt in tts])
        coordinates = torch.stack([head([core.to(dtype) for core in tt]) for tt in tts])
        assert torch.all(coordinates[:, 3] == 0)
        # principal coordinates: orthogonal columns (variances = the eigenvalues)
        gram = coordinates[:, :3].T @ coordinates[:, :3]
        off_diagonal = gram - torch.diag(torch.diagonal(gram))
        assert float(off_diagonal.abs().max()) <= 1e-4 * float(gram.diagonal().max())


@pytest.mark.parametrize("patch_size", [3, 4, 6])
def test_the_dense_baseline_averages_every_patch_of_any_size(patch_size):
    # An even patch is off-centre, as PatchGrid cuts it: the dense body dropped the last
    # plane of every axis for it before (2e-4 to 7e-4 off).
    from tensorly_cross.nn import DenseEmbedding

    torch.manual_seed(0)
    encoder = default_encoder(patch_size, 2).double()
    volume = torch.as_tensor(np.random.default_rng(patch_size).random((7, 8, 9)))
    every_patch = PatchGrid(volume, patch_size=patch_size).patches(
        np.array(list(np.ndindex(7, 8, 9))), dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(DenseEmbedding(encoder)([volume])[0],
                                   encoder(every_patch).mean(dim=0))
