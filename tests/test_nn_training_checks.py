"""Checks of the training recipe and VolumeDataset: shapes, dtypes, empty data, arguments.

Each test pins one defect of the nn audit (a wrong number with no word, or a bare torch or
Python error) to the clear error, or the working result, that replaced it.
"""

import re

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from tensorly_cross.nn import (  # noqa: E402
    CrossEmbedding,
    DenseEmbedding,
    VolumeDataset,
    default_encoder,
)
from tensorly_cross.nn.training import Regressor, fit, predict, rmse  # noqa: E402

pytestmark = pytest.mark.usefixtures("pytorch_backend")


def _volumes(count, size=8, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.random((size,) * 3).astype(np.float32) for _ in range(count)]


def _dense_model(n_targets=1):
    torch.manual_seed(0)
    return Regressor(DenseEmbedding(default_encoder(3, 2, width=2)), 2, n_targets=n_targets,
                     normalize=False)


# --- 1. predictions and targets of different shapes --------------------------------------


@pytest.mark.parametrize("n_targets, count, width", [
    (1, 2, 2),  # (2,) against (2, 2): broadcast to (2, 2), a wrong RMSE with no error
    (2, 1, 1),  # (1, 2) against (1,): broadcast as well
    (1, 6, 2),  # (6,) against (6, 2): torch's bare size error
])
def test_rmse_refuses_predictions_and_targets_of_different_shapes(n_targets, count, width):
    targets = np.arange(count * width, dtype=np.float32).reshape(count, width)
    data = VolumeDataset(_volumes(count), targets if width > 1 else targets[:, 0])
    predicted = (count,) if n_targets == 1 else (count, n_targets)
    stored = (count, width) if width > 1 else (count,)
    with pytest.raises(ValueError, match=rf"predictions have shape {re.escape(str(predicted))}"
                                         rf" .*targets .* shape {re.escape(str(stored))}"):
        rmse(_dense_model(n_targets), data)


def test_rmse_takes_targets_of_shape_n_by_1_as_one_target():
    # (n, 1) and (n,) are one target per volume: the shape check must not refuse them.
    volumes, targets = _volumes(3), np.array([0.5, -1.0, 2.0], dtype=np.float32)
    model = _dense_model()
    errors = predict(model, VolumeDataset(volumes, targets)) - torch.as_tensor(targets)
    expected = float(errors.double().pow(2).mean().sqrt())
    assert rmse(model, VolumeDataset(volumes, targets[:, None])) == expected


# --- 5. a float16 / bfloat16 Regressor ----------------------------------------------------


def _cross_embedding():
    torch.manual_seed(0)
    return CrossEmbedding(default_encoder(4, 3, width=2, pooled=True), patch_size=4, stride=2,
                          n_features=3, rank=3, n_outputs=3, n_iter_max=1,
                          volume_shape=(12, 12, 12))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("normalize", [True, False])
def test_a_half_precision_regressor_runs_forward_and_backward(dtype, normalize):
    # The half-precision embedding returns float32 features (documented); the Regressor's
    # norm and readout are in ``dtype`` and refused them with torch's mixed-dtype error.
    model = Regressor(_cross_embedding(), 3, normalize=normalize).to(dtype)
    volumes = [torch.rand(12, 12, 12, generator=torch.Generator().manual_seed(k))
               for k in range(2)]
    predictions = model(volumes)
    assert predictions.shape == (2,) and predictions.dtype == dtype
    assert torch.isfinite(predictions).all()
    predictions.float().pow(2).mean().backward()
    assert model.readout.weight.grad is not None


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_a_full_precision_regressor_is_unchanged_by_the_cast(dtype):
    torch.manual_seed(0)
    model = Regressor(DenseEmbedding(default_encoder(3, 2, width=2)), 2, n_targets=2).to(dtype)
    model.eval()
    volumes = [torch.as_tensor(volume, dtype=dtype) for volume in _volumes(3)]
    with torch.no_grad():
        features = model.embedding(volumes)
        expected = model.target_mean + model.target_scale * model.readout(model.norm(features))
        assert torch.equal(model(volumes), expected)


# --- 8. an empty dataset ------------------------------------------------------------------


@pytest.mark.parametrize("function", [predict, rmse])
def test_predict_and_rmse_refuse_an_empty_dataset_by_name(function):
    with pytest.raises(ValueError, match=f"dataset is empty: {function.__name__} needs"):
        function(_dense_model(), VolumeDataset([], []))


# --- minor: argument checks ---------------------------------------------------------------


@pytest.mark.parametrize("arguments, message", [
    (dict(epochs=None), "epochs must be an integer"),
    (dict(epochs=1.5), "epochs must be an integer"),
    (dict(batch_size=None), "batch_size must be an integer"),
])
def test_fit_refuses_epochs_and_batch_sizes_that_are_not_ints_by_name(arguments, message):
    data = VolumeDataset(_volumes(4), np.arange(4.0))
    with pytest.raises(TypeError, match=message):
        fit(_dense_model(), data, **arguments)


def test_rmse_refuses_a_batch_size_that_is_not_an_int_by_name():
    with pytest.raises(TypeError, match="batch_size must be an integer"):
        rmse(_dense_model(), VolumeDataset(_volumes(2), [0.0, 1.0]), batch_size=None)


@pytest.mark.parametrize("as_given", [str, lambda path: path, bytes])
def test_a_single_path_is_refused_not_split_into_characters(tmp_path, as_given):
    path = tmp_path / "one.npy"
    np.save(path, _volumes(1)[0])
    with pytest.raises(TypeError, match=r"volumes .* single path .*one\.npy.*\[path\]"):
        VolumeDataset(as_given(path), [0.5])


@pytest.mark.parametrize("targets", [torch.tensor([0.5, 1.5]),
                                     torch.tensor([[0.5, 1.0], [1.5, 2.0]])])
def test_targets_that_require_grad_are_detached(targets):
    targets = targets.clone().requires_grad_(True)
    data = VolumeDataset(_volumes(2), targets)
    assert not data.targets.requires_grad and data.targets.dtype == torch.float32
    torch.testing.assert_close(data.targets, targets.detach())


@pytest.mark.parametrize("index", [4, 7, -5])
def test_subset_names_an_index_out_of_range_and_the_length(index):
    data = VolumeDataset(_volumes(4), np.arange(4.0))
    with pytest.raises(IndexError, match=rf"index {index} is out of range .* 4 items"):
        data.subset([0, index])


def test_subset_with_negative_indices_shares_volumes_read_whole(tmp_path):
    paths = []
    for k, volume in enumerate(_volumes(3)):
        paths.append(tmp_path / f"v{k}.npy")
        np.save(paths[-1], volume)
    data = VolumeDataset(paths, [0.0, 1.0, 2.0], in_memory=True)
    last = data.volume(2)
    subset = data.subset([-1, 0])
    assert subset.volume(0) is last
    assert float(subset.targets[0]) == 2.0


@pytest.mark.parametrize("n_folds", [None, "3", float("nan"), True])
def test_folds_names_a_fold_count_that_is_not_an_int(n_folds):
    # None, "3" and nan raised bare TypeErrors and ValueErrors from int().
    data = VolumeDataset(_volumes(4), np.arange(4.0))
    with pytest.raises(ValueError, match=r"n_folds must be an int in \[2, 4\]"):
        data.folds(n_folds)
    assert len(data.folds(2.0)) == 2
