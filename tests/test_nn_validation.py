"""Bad input to tensorly_cross.nn is refused up front, by name, with what is allowed."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from tensorly_cross.errors import NonFiniteValueError  # noqa: E402
from tensorly_cross.nn import (  # noqa: E402
    DenseEmbedding,
    EncodedTensor,
    PatchGrid,
    VolumeDataset,
    default_encoder,
)
from tensorly_cross.nn.training import Regressor, fit  # noqa: E402

from .nn_helpers import small_embedding  # noqa: E402

pytestmark = pytest.mark.usefixtures("pytorch_backend")


_embedding = small_embedding


def _data(count=6):
    volumes = [np.random.default_rng(k).random((8, 8, 8)).astype(np.float32)
               for k in range(count)]
    return VolumeDataset(volumes, np.arange(count) * 0.1)


@pytest.mark.parametrize("positions, message", [
    ([[100, 0, 0]], "out of range"),   # folded back in by the padding before
    ([[-1, 0, 0]], "out of range"),
    ([[1.7, 0, 0]], "must be integers"),  # truncated before
    ([1, 2], r"shape \(m, 3\)"),
])
def test_patch_positions_outside_the_grid_or_not_ints_are_refused(positions, message):
    grid = PatchGrid(np.arange(64.0).reshape(4, 4, 4), 3)
    with pytest.raises(ValueError, match=f"positions.*{message}"):
        grid.patches(positions)


@pytest.mark.parametrize("patch_size, stride, error, message", [
    (2.5, 1, TypeError, "patch_size must be an integer"),  # was cut at 2
    (True, 1, TypeError, "patch_size must be an integer"),
    (3, 0, ValueError, "stride must be >= 1"),
    (3, 1.5, TypeError, "stride must be an integer"),
])
def test_patch_size_and_stride_must_be_positive_ints(patch_size, stride, error, message):
    with pytest.raises(error, match=message):
        PatchGrid(np.zeros((4, 4, 4)), patch_size, stride)


def test_a_complex_volume_is_refused_by_name():
    with pytest.raises(TypeError, match="volume is complex"):
        _embedding()(torch.rand(1, 1, 8, 8, 8, dtype=torch.complex64))


def test_nan_in_a_volume_is_named_by_the_dense_embedding():
    volume = torch.rand(4, 4, 4)
    volume[1, 2, 3] = float("nan")
    with pytest.raises(NonFiniteValueError, match=r"volume 1 of the batch .* \(1, 2, 3\)"):
        DenseEmbedding(default_encoder(3, 2))([torch.rand(4, 4, 4), volume])


@pytest.mark.parametrize("encoder, volumes, error, message", [
    (torch.nn.Conv3d(1, 2, 3), None, TypeError, "encoder must be an nn.Sequential"),
    (torch.nn.Sequential(torch.nn.Flatten()), None, ValueError, "encoder has no parameters"),
    (None, torch.rand(6, 6, 6), TypeError, "volumes must be a batch"),
    (None, [torch.rand(6, 6, 6), torch.rand(5, 5, 5)], ValueError, "one shape"),
    (None, [torch.rand(2, 6, 6, 6)], ValueError, r"3-D or \(1, D, H, W\)"),
])
def test_the_dense_embedding_refuses_bad_encoders_and_batches(encoder, volumes, error,
                                                              message):
    with pytest.raises(error, match=message):
        DenseEmbedding(encoder if encoder is not None else default_encoder(3, 2))(volumes)


def test_fit_refuses_steps_of_one_volume_under_batchnorm_up_front():
    # Every step was skipped (BatchNorm needs two samples): 0 steps, nan losses, no word.
    torch.manual_seed(0)
    model = Regressor(_embedding(), n_inputs=3)
    with pytest.raises(ValueError, match="batch_size=1 .* normalize=True"):
        fit(model, _data(), epochs=1, batch_size=1)
    with pytest.raises(ValueError, match="1 training volume"):
        fit(model, _data(1), epochs=1, batch_size=4)


def test_fit_trains_on_steps_of_one_volume_without_batchnorm():
    torch.manual_seed(0)
    model = Regressor(_embedding(), n_inputs=3, normalize=False)
    log = fit(model, _data(2), epochs=1, batch_size=1)
    assert log.steps == 2 and np.isfinite(log.losses).all()


@pytest.mark.parametrize("build, train, error, message", [
    (lambda: Regressor(_embedding(), n_inputs=5), _data, ValueError, "n_inputs=5"),
    (lambda: Regressor(_embedding(), n_inputs=3),
     lambda: VolumeDataset(_data().volumes, np.zeros((6, 2))), ValueError, "n_targets=1"),
    (lambda: Regressor(_embedding(), n_inputs=3), lambda: VolumeDataset([], []),
     ValueError, "train is empty"),
    (lambda: Regressor(_embedding(), n_inputs=3), lambda: _data().volumes,
     TypeError, "train must be a VolumeDataset"),
    (lambda: Regressor(_embedding(), n_inputs=0), _data, ValueError, "n_inputs must be >= 1"),
])
def test_regressor_and_fit_refuse_mismatches_by_name(build, train, error, message):
    with pytest.raises(error, match=message):
        fit(build(), train(), epochs=1, batch_size=2)


@pytest.mark.parametrize("fraction", [0.01, 0.99])
def test_a_split_that_leaves_one_side_empty_is_refused(fraction):
    with pytest.raises(ValueError, match="both need at least one"):
        _data().split(fraction)


def test_a_volume_dataset_refuses_slices_bad_items_and_targets_beyond_float32():
    data = _data(3)
    with pytest.raises(TypeError, match="index must be an int"):
        data[0:2]
    with pytest.raises(TypeError, match="index must be an int"):
        data[1.0]
    with pytest.raises(IndexError, match="out of range"):
        data[3]
    assert float(data[np.int64(1)][1]) == pytest.approx(0.1)
    with pytest.raises(TypeError, match=r"volumes\[0\] must be a path"):
        VolumeDataset([[[[0.0]]]], [0.0])
    with pytest.raises(ValueError, match=r"targets\[0\] must be finite and within float32"):
        VolumeDataset([np.zeros((4, 4, 4))], [1e300])


@pytest.mark.parametrize("call, error, message", [
    (lambda: _embedding(encoder=lambda patches: patches), TypeError,
     "encoder must be a torch.nn.Module"),
    (lambda: _embedding(max_batch=True), TypeError, "max_batch"),
    (lambda: _embedding()(["volume.npy"]), TypeError, r"volumes\[0\] must be a torch.Tensor"),
    (lambda: _embedding()(None), TypeError, "volumes must be a tensor"),
    (lambda: _embedding()(torch.rand(1, 1, 8, 8, 8), keys=0), TypeError,
     "keys must be a sequence"),
    (lambda: _embedding()(torch.rand(2, 1, 8, 8, 8), keys="ab"), TypeError,
     "keys must be a sequence"),
    (lambda: EncodedTensor(torch.rand(4, 4, 4), None, 3, 2), TypeError,
     "encoder must be a torch.nn.Module"),
    (lambda: EncodedTensor(torch.rand(4, 4, 4), default_encoder(3, 2), 3, 2, batch_size=0),
     ValueError, "batch_size must be >= 1"),
    (lambda: EncodedTensor(torch.rand(4, 4, 4), default_encoder(3, 2), 3, 2,
                           patch_cache_bytes=-1), ValueError, "patch_cache_bytes must be >= 0"),
    (lambda: EncodedTensor(torch.rand(4, 4, 4), default_encoder(3, 2), 3, 2).features(
        [[9, 0, 0]]), ValueError, "positions.*out of range"),
])
def test_bad_arguments_to_the_embedding_and_encoded_tensor_are_named(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_a_numpy_int_max_batch_is_an_int():
    assert _embedding(max_batch=np.int64(4)).max_batch == 4


_META = "on the 'meta' device, which holds a shape but no values"


@pytest.mark.parametrize("call, message", [
    (lambda: _embedding()(torch.rand(2, 1, 8, 8, 8, device="meta")), r"volumes\[0\] is"),
    (lambda: _embedding()([torch.rand(8, 8, 8), torch.rand(8, 8, 8, device="meta")],
                          keys=[0, 1]), r"volumes\[1\] is"),
    (lambda: _embedding(encoder=default_encoder(3, 2).to("meta"))(torch.rand(1, 1, 8, 8, 8)),
     "CrossEmbedding's 'encoder.0.weight' is"),
    (lambda: _embedding().to("meta")(torch.rand(1, 1, 8, 8, 8)),
     "CrossEmbedding's 'encoder.0.weight' is"),
    (lambda: DenseEmbedding(default_encoder(3, 2))(torch.rand(2, 1, 6, 6, 6, device="meta")),
     r"volumes\[0\] is"),
    (lambda: DenseEmbedding(default_encoder(3, 2).to("meta"))(torch.rand(1, 1, 6, 6, 6)),
     "DenseEmbedding's 'encoder.0.weight' is"),
    (lambda: EncodedTensor(torch.rand(4, 4, 4, device="meta"), default_encoder(3, 2), 3, 2),
     "volume is"),
    (lambda: EncodedTensor(torch.rand(4, 4, 4), default_encoder(3, 2).to("meta"), 3, 2),
     "encoder's '0.weight' is"),
    (lambda: PatchGrid(torch.rand(4, 4, 4, device="meta"), 3), "volume is"),
])
def test_a_volume_or_module_on_the_meta_device_is_refused_by_name(call, message):
    # torch's bare "Cannot copy out of meta tensor; no data!" came from deep in the search.
    with pytest.raises(ValueError, match=f"{message} a PyTorch tensor {_META}"):
        call()


@pytest.mark.parametrize("fault, message", [
    ("nan bias", r"whose voxels are all finite: the encoder's '0.bias' holds NaN or inf"),
    ("overflow", "whose voxels are all finite: the encoder itself overflows"),
])
def test_non_finite_features_of_a_finite_volume_name_the_encoder(fault, message):
    # A NaN bias after a diverged step was reported as NaN in the volume, at a random voxel.
    model = _embedding()
    with torch.no_grad():
        if fault == "nan bias":
            model.encoder[0].bias[0] = float("nan")
        else:
            model.encoder[0].weight.fill_(3e38)  # finite, but its sums are not
    with pytest.raises(NonFiniteValueError, match=message):
        model(torch.rand(1, 1, 8, 8, 8) + 1.0)


def test_non_finite_features_of_a_nan_voxel_name_the_volume():
    volume = torch.rand(1, 1, 8, 8, 8)
    volume[0, 0, 2:6, 2:6, 2:6] = float("nan")  # a block: the search reads few patches
    with pytest.raises(NonFiniteValueError, match="is there NaN or inf in the volume there"):
        _embedding()(volume)
