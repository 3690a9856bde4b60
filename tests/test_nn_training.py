"""The training recipe: the dense baseline, the regressor, fit, rmse and k-fold."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from tensorly_cross.nn import CrossEmbedding, PatchGrid, VolumeDataset, default_encoder  # noqa: E402
from tensorly_cross.nn.dense import DenseEmbedding  # noqa: E402
from tensorly_cross.nn.training import Regressor, cross_validate, fit, rmse  # noqa: E402

pytestmark = pytest.mark.usefixtures("pytorch_backend")


@pytest.mark.parametrize("pooled", [False, True])
def test_dense_features_are_the_mean_of_the_encoder_over_every_patch(pooled):
    torch.manual_seed(0)
    encoder = default_encoder(5, 3, pooled=pooled).double()
    volume = torch.randn(7, 6, 5, dtype=torch.float64)
    grid = PatchGrid(volume, 5)
    positions = np.stack(np.unravel_index(np.arange(7 * 6 * 5), (7, 6, 5)), axis=1)
    with torch.no_grad():
        dense = DenseEmbedding(encoder)([volume])[0]
        if pooled:  # the mean over every voxel of the pointwise features
            interior = PatchGrid(volume, 3).patches(positions, dtype=torch.float64)
            expected = encoder[:3](interior).mean(dim=0).flatten()
        else:
            expected = encoder(grid.patches(positions, dtype=torch.float64)).mean(dim=0)
    torch.testing.assert_close(dense, expected)


def test_dense_embedding_refuses_lazy_volumes_by_name(tmp_path):
    np.save(tmp_path / "v.npy", np.zeros((4, 4, 4), dtype=np.float32))
    lazy = VolumeDataset([tmp_path / "v.npy"], [0.0]).volume(0)
    with pytest.raises(TypeError, match="in_memory"):
        DenseEmbedding(default_encoder(3, 2))([lazy])
    with pytest.raises(ValueError, match="padding"):
        DenseEmbedding(default_encoder(3, 2), padding="wrap")


def _data(count=12, size=8, seed=0):
    """Volumes whose target is their mean intensity (learnable from channel means)."""
    rng = np.random.default_rng(seed)
    levels = rng.uniform(-1, 1, size=count)
    volumes = [(level + 0.3 * rng.standard_normal((size,) * 3)).astype(np.float32)
               for level in levels]
    return VolumeDataset(volumes, levels.astype(np.float32))


@pytest.mark.parametrize("kind", ["dense", "cross"])
def test_fit_learns_a_mean_intensity_target(kind):
    torch.manual_seed(0)
    data = _data()
    train, test = data.subset(range(9)), data.subset(range(9, 12))
    encoder = default_encoder(3, 2, pooled=True)
    embedding = (DenseEmbedding(encoder) if kind == "dense" else
                 CrossEmbedding(encoder, patch_size=3, n_features=2, rank=2, n_outputs=2,
                                stride=1, n_iter_max=2, volume_shape=(8, 8, 8),
                                refresh_every=2))
    model = Regressor(embedding, 2)
    before = rmse(model, test)
    log = fit(model, train, epochs=6, batch_size=3, lr=3e-2, test=test)
    assert len(log.losses) == 6 and log.steps == 18 and len(log.test_rmse) == 6
    assert log.losses[-1] < log.losses[0]
    assert model.training  # evaluating the test set leaves the mode as it was
    assert rmse(model, test) < 0.5 * before
    model.eval()
    rmse(model, test)
    assert not model.training
    assert float(model.target_mean) == pytest.approx(float(train.targets.mean()), rel=1e-6)


def test_cross_validate_scores_every_fold():
    torch.manual_seed(0)
    data = _data(count=6)
    scores = cross_validate(lambda: Regressor(DenseEmbedding(default_encoder(3, 2)), 2), data,
                            n_folds=3, epochs=1, batch_size=2)
    assert len(scores) == 3 and all(np.isfinite(scores))


def test_fit_rejects_a_negative_epoch_count():
    with pytest.raises(ValueError, match="epochs"):
        fit(Regressor(DenseEmbedding(default_encoder(3, 2)), 2), _data(4), epochs=-1)


def test_fit_trains_a_probe_head_that_the_first_forward_pass_would_build():
    # Without volume_shape the head does not exist before training: fit builds it before
    # making its optimiser, so that the optimiser holds the head's parameters.
    torch.manual_seed(0)
    embedding = CrossEmbedding(patch_size=3, n_features=2, rank=2, n_outputs=3, n_iter_max=2)
    model = Regressor(embedding, n_inputs=3, normalize=False)
    data = _data(count=6)
    assert embedding.head is None
    fit(model, data, epochs=0)
    assert embedding.head is not None
    start = [p.detach().clone() for p in embedding.head.parameters()]
    fit(model, data, epochs=1, batch_size=3, lr=0.1)
    assert all(not torch.equal(a, b) for a, b in zip(start, embedding.head.parameters(),
                                                     strict=True))
