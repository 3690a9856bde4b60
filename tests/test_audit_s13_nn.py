"""Audit of tensorly_cross.nn (session 13): gradients against finite differences, and the
behaviours found wrong (a silently stripped pooling, a volume read twice, an unclear error
for an unbatched volume)."""

import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from tensorly_cross.nn import (  # noqa: E402
    CrossEmbedding,
    DenseEmbedding,
    VolumeDataset,
    default_encoder,
)

pytestmark = pytest.mark.usefixtures("pytorch_backend")


def _volumes(count, shape=(12, 12, 12)):
    return [torch.rand(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(k))
            for k in range(count)]


@pytest.mark.parametrize("layout", ["tt", "quantics"])
@pytest.mark.parametrize("head", ["probes", "pca"])
def test_encoder_gradients_match_central_differences(layout, head):
    # Keys with a long refresh keep the indices fixed, so the features are a smooth
    # function of the encoder's weights that central differences can check.
    torch.manual_seed(0)
    model = CrossEmbedding(default_encoder(3, 2), patch_size=3, n_features=2, rank=2,
                           n_outputs=3, n_iter_max=1, stride=2, layout=layout, head=head,
                           refresh_every=1000, max_batch=4096).double()
    volumes = _volumes(3)
    if head == "pca":
        model.fit_pca(volumes, keys=[0, 1, 2])
    weights = torch.randn(2, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(9))

    def loss():
        return (model(volumes[:2], keys=[0, 1]) * weights).sum()

    loss().backward()
    parameter = model.encoder[0].weight
    for entry in [(0, 0, 0, 0, 0), (3, 0, 2, 1, 0)]:
        with torch.no_grad():
            parameter[entry] += 1e-6
            plus = loss()
            parameter[entry] -= 2e-6
            minus = loss()
            parameter[entry] += 1e-6
        difference = float((plus - minus) / 2e-6)
        assert float(parameter.grad[entry]) == pytest.approx(difference, rel=1e-5, abs=1e-8)


def test_voxels_outside_the_patches_read_get_zero_gradient_and_the_others_theirs():
    torch.manual_seed(0)
    model = CrossEmbedding(patch_size=3, n_features=2, rank=2, n_outputs=3, n_iter_max=1,
                           stride=2, refresh_every=100).double()
    volume = _volumes(1)[0].requires_grad_(True)
    weights = torch.randn(1, 3, dtype=torch.float64)
    (model([volume], keys=[0]) * weights).sum().backward()
    gradient = volume.grad
    assert 0 < int((gradient != 0).sum()) < gradient.numel()  # only the patches read
    for voxel in [tuple(torch.nonzero(gradient)[0].tolist()),
                  tuple(torch.nonzero(gradient == 0)[0].tolist())]:
        with torch.no_grad():
            moved = volume.detach().clone()
            moved[voxel] += 1e-6
            plus = (model([moved], keys=[0]) * weights).sum()
            moved[voxel] -= 2e-6
            minus = (model([moved], keys=[0]) * weights).sum()
        difference = float((plus - minus) / 2e-6)
        assert float(gradient[voxel]) == pytest.approx(difference, rel=1e-5, abs=1e-9)


def test_the_dense_embedding_refuses_a_final_pooling_to_more_than_one_position():
    # AdaptiveAvgPool3d(2) then Flatten: 8 positions x 3 channels per patch. It was
    # stripped as if it were AdaptiveAvgPool3d(1): 3 features, silently not the encoder's.
    encoder = torch.nn.Sequential(torch.nn.Conv3d(1, 3, 3), torch.nn.GELU(),
                                  torch.nn.AdaptiveAvgPool3d(2), torch.nn.Flatten())
    assert encoder(torch.rand(1, 1, 3, 3, 3)).shape == (1, 24)
    with pytest.raises(ValueError, match="AdaptiveAvgPool3d"):
        DenseEmbedding(encoder)


@pytest.mark.parametrize("size", [1, (1, 1, 1)])
def test_the_dense_embedding_still_takes_a_final_pooling_to_one_position(size):
    encoder = torch.nn.Sequential(torch.nn.Conv3d(1, 3, 3), torch.nn.GELU(),
                                  torch.nn.AdaptiveAvgPool3d(size), torch.nn.Flatten())
    assert DenseEmbedding(encoder)(torch.rand(2, 1, 5, 5, 5)).shape == (2, 3)


def test_a_volume_read_whole_is_kept_once_whatever_the_sign_of_its_index(tmp_path):
    paths = []
    for k in range(3):
        paths.append(os.path.join(tmp_path, f"v{k}.npy"))
        np.save(paths[-1], np.full((4, 4, 4), k, dtype=np.float32))
    data = VolumeDataset(paths, [0.0, 1.0, 2.0], in_memory=True)
    # data[-1] was kept under -1: data[2] read the file again, into a second tensor,
    # and subsets did not share it.
    assert data[-1][0] is data[2][0]
    assert data.subset([2]).volume(0) is data.volume(-1)
    with pytest.raises(IndexError, match="out of range"):
        data.volume(3)


@pytest.mark.parametrize("volume", [torch.rand(8, 8, 8), np.zeros((8, 8, 8))])
def test_one_unbatched_volume_is_refused_as_such(volume):
    # It was taken as a batch of 8 slices: "each volume must be 3-D ..., got shape (8, 8)"
    # for a volume that is 3-D.
    model = CrossEmbedding(patch_size=3, n_features=2, rank=2, n_outputs=3, n_iter_max=1)
    with pytest.raises(ValueError, match=r"a batch.*\[volume\]"):
        model(volume)


def test_a_loaded_pca_state_keeps_its_number_of_components_through_refits():
    # A fresh head="pca" module with another n_outputs took the saved 3 components, then
    # its next fit_pca (every epoch of fit) gave 5: features changed width mid-training.
    volumes = [volume.float() for volume in _volumes(4)]

    def embedding(n_outputs):
        return CrossEmbedding(patch_size=3, n_features=2, rank=2, n_outputs=n_outputs,
                              n_iter_max=1, stride=3, head="pca")

    fitted = embedding(3).fit_pca(volumes)
    loaded = embedding(5)
    loaded.load_state_dict(fitted.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(loaded(volumes[:2]), fitted(volumes[:2]))
        loaded.fit_pca(volumes)
        assert loaded(volumes[:2]).shape == (2, 3)
    assert loaded.n_outputs == loaded.head.n_components == 3


def test_a_loaded_probe_state_sets_the_number_of_outputs():
    volumes = [volume.float() for volume in _volumes(2)]
    torch.manual_seed(0)
    trained = CrossEmbedding(patch_size=3, n_features=2, rank=2, n_outputs=3, n_iter_max=1,
                             stride=3)
    trained(volumes)
    loaded = CrossEmbedding(patch_size=3, n_features=2, rank=2, n_iter_max=1, stride=3)
    loaded.load_state_dict(trained.state_dict())
    assert loaded(volumes).shape == (2, loaded.n_outputs) == (2, 3)


def test_an_unfitted_pca_head_is_refused_before_any_search():
    # The RuntimeError came only after every volume's search and differentiable read: on
    # large volumes, minutes of encoder calls for nothing.
    model = CrossEmbedding(patch_size=3, n_features=2, rank=2, n_outputs=3, n_iter_max=1,
                           head="pca")
    with pytest.raises(RuntimeError, match="fit"):
        model([torch.rand(8, 8, 8)])
    assert model.counters["encoder_calls"] == model.counters["searches"] == 0
