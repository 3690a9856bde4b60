"""Audit 32, the encoder pipeline (tensorly_cross.nn) as a product: a researcher trains on
their own files (NIfTI, zarr, npy), with the dataset, fit and cross_validate.

* fit promises to refuse, before training, a training or test volume whose shape is not
  the others' (a volume not resampled to the dataset's grid), but checked only the grid of
  patch positions, ``ceil(shape / stride)``: at the recipe's stride 4, volumes of 91 and
  89 voxels along an axis have one grid, and a dataset holding both trained silently, the
  voxels of one misregistered against the others'. Every volume's shape is now compared.
* A checkpoint loaded into a CrossEmbedding rebuilt with another patch size loaded without
  a word and gave other features (a pooled encoder's weights fit every patch size); one
  rebuilt with another stride loaded too, and its first forward pass blamed the volumes'
  shape ("crop or resample the volumes"). The state now keeps the settings that say what
  the weights were trained on (patch size, stride, features, layout), and a load into a
  module built otherwise is refused, naming them. States saved before still load.
* The note on a NaN voxel advised ``VolumeDataset(..., fill_nan=0.0)`` to a researcher
  whose dataset held arrays and already had it: the dataset fills only the volumes it reads
  from paths (as documented), so the advice repeated the run that failed. The note now
  says so, and how to fill an array.
* docs/pipeline.rst advises an encoder with BatchNorm to be put in eval mode (its features,
  and the lockstep's indices, otherwise depend on the batch; its running statistics drift).
  ``predict`` and ``fit_pca`` restored the mode with ``model.train(was_training)``, which
  set every part to the top module's mode: the encoder came back in train mode; and ``fit``
  called ``model.train()`` every epoch. The advice was undone by the recipe without a word,
  and the BatchNorm's statistics moved. Each part now keeps the mode it had.
* ``max_batch="auto"`` on CUDA measured the encoder's memory with one call on 256 zero
  patches, in whatever mode the encoder was: a BatchNorm in train mode took those zeros
  into its running statistics (its running variance fell by a tenth before any volume was
  read), and a Dropout drew from the generator, so a seeded run's draws depended on the
  device. The probe call now leaves the encoder's buffers and the random state as they
  were.
* ``VolumeDataset(..., in_memory=True)`` shared with a subset only the volumes read before
  the subset was made: ``folds(k)`` makes every subset at once, so k-fold evaluation read
  each file k times and, the folds being alive for the whole of ``cross_validate``, held k
  copies of the dataset in memory (for a dataset that fits once). A dataset and its
  subsets now share one store of volumes read whole.
* ``Regressor.set_target_scale`` (public, for a training loop of one's own) copied the
  targets' statistics with broadcasting: one column of targets for a model of three gave
  all three its mean and scale, and a NaN target made every prediction NaN, without a word.
  Targets of another width, empty or not finite are now refused by name.
* ``fit`` of a DenseEmbedding model on volumes of several shapes with ``batch_size > 1``
  (which ``normalize=True`` needs) failed when a shuffled batch first mixed two shapes,
  epochs into a run, with "the volumes of a batch must have one shape" naming no file. It
  is refused before training, naming the volume.
* DenseEmbedding, the documented baseline, failed on a flipped array (``np.flip``,
  ``volume[::-1]``: a flip augmentation, or nibabel's reorientation), torch refusing
  negative strides; CrossEmbedding took it. It now reads it as the copy it equals.
"""

import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from tensorly_cross.errors import NonFiniteValueError  # noqa: E402
from tensorly_cross.nn import (  # noqa: E402
    CrossEmbedding,
    DenseEmbedding,
    VolumeDataset,
    default_encoder,
)
from tensorly_cross.nn.training import Regressor, fit  # noqa: E402

pytestmark = pytest.mark.usefixtures("pytorch_backend")


def _files(tmp_path, shapes):
    paths = []
    for k, shape in enumerate(shapes):
        path = tmp_path / f"sub-{k:02d}.npy"
        np.save(path, np.random.default_rng(k).random(shape).astype(np.float32))
        paths.append(str(path))
    return VolumeDataset(paths, np.arange(len(shapes), dtype=np.float32))


def _strided_model(**options):
    torch.manual_seed(0)
    embedding = CrossEmbedding(default_encoder(3, 2, pooled=True), patch_size=3,
                               n_features=2, rank=2, n_outputs=3, stride=4, n_iter_max=1,
                               **options)
    return Regressor(embedding, 3)


def test_fit_refuses_a_volume_of_another_shape_on_the_same_grid(tmp_path):
    # 12 and 11 voxels give one grid at stride 4 (3 positions), not one volume shape
    train = _files(tmp_path, [(12, 12, 12)] * 3 + [(12, 11, 12)])
    model = _strided_model()
    with pytest.raises(ValueError, match=r"volume 3 of train \(key 3, file .*sub-03.npy.*"
                                         r"\(12, 11, 12\), the first volume of train "
                                         r"\(12, 12, 12\)"):
        fit(model, train, epochs=1, batch_size=2)
    assert model.embedding.counters["volumes"] == 0


def test_fit_refuses_a_test_volume_of_another_shape_on_the_same_grid(tmp_path):
    data = _files(tmp_path, [(12, 12, 12)] * 3 + [(10, 12, 12)])
    with pytest.raises(ValueError, match=r"volume 0 of test .*\(10, 12, 12\)"):
        fit(_strided_model(volume_shape=(12, 12, 12)), data.subset([0, 1, 2]), epochs=1,
            batch_size=2, test=data.subset([3]))


def test_fit_still_trains_volumes_of_one_shape_at_a_stride(tmp_path):
    train = _files(tmp_path, [(12, 11, 10)] * 4)
    log = fit(_strided_model(), train, epochs=1, batch_size=2)
    assert log.steps == 2


def _saved_state(**options):
    torch.manual_seed(0)
    settings = dict(patch_size=4, stride=2, n_features=2, rank=2, n_outputs=3, n_iter_max=1,
                    volume_shape=(8, 8, 8))
    return CrossEmbedding(default_encoder(4, 2, pooled=True), **dict(settings, **options))


@pytest.mark.parametrize("changed", [dict(patch_size=3), dict(stride=4, volume_shape=None),
                                     dict(layout="quantics")])
def test_a_checkpoint_refuses_a_module_built_with_other_settings(changed):
    state = _saved_state().state_dict()
    rebuilt = _saved_state(**changed)
    name = next(iter(changed))
    with pytest.raises(ValueError, match=f"{name}={state['_extra_state'][name]!r}"):
        rebuilt.load_state_dict(state)


def test_a_checkpoint_still_loads_into_a_module_built_alike_and_gives_its_features():
    volumes = [torch.rand(8, 8, 8) for _ in range(2)]
    trained = _saved_state()
    with torch.no_grad():
        trained.encoder[0].weight.mul_(1.5)  # weights the fresh module does not start with
        expected = trained(volumes)
    fresh = _saved_state(volume_shape=None)
    fresh.load_state_dict(trained.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(fresh(volumes), expected, rtol=0, atol=0)


def test_a_state_saved_with_the_grid_alone_still_loads():
    state = _saved_state().state_dict()
    state["_extra_state"] = {"grid_shape": (4, 4, 4)}
    _saved_state(patch_size=3).load_state_dict(state)


def test_the_nan_note_says_that_arrays_are_not_filled_by_the_dataset():
    volumes = [np.random.default_rng(k).random((6, 6, 6)).astype(np.float32) for k in range(2)]
    volumes[1][:2] = np.nan  # a masked map read with nibabel's get_fdata
    data = VolumeDataset(volumes, [0.0, 1.0], fill_nan=0.0)
    model = DenseEmbedding(default_encoder(3, 2))
    with pytest.raises(NonFiniteValueError) as error:
        model([data.volume(1)])
    assert any("paths only" in note and "nan_to_num" in note for note in error.value.__notes__)
    filled = VolumeDataset([np.nan_to_num(v, nan=0.0) for v in volumes], [0.0, 1.0])
    assert torch.isfinite(model([filled.volume(1)])).all()


def _batchnorm_model(head="probes"):
    from torch import nn

    torch.manual_seed(0)
    encoder = nn.Sequential(nn.Conv3d(1, 4, 3), nn.BatchNorm3d(4), nn.GELU(),
                            nn.Conv3d(4, 2, 1), nn.AdaptiveAvgPool3d(1), nn.Flatten())
    embedding = CrossEmbedding(encoder, patch_size=3, n_features=2, rank=2, n_outputs=3,
                               stride=2, n_iter_max=1, head=head)
    model = Regressor(embedding, 3)
    encoder.eval()  # as docs/pipeline.rst advises for BatchNorm
    return model, encoder


def _in_memory(count=4):
    volumes = [np.random.default_rng(k).random((8, 8, 8)).astype(np.float32)
               for k in range(count)]
    return VolumeDataset(volumes, np.arange(count, dtype=np.float32))


def test_predict_and_fit_pca_leave_an_encoder_in_eval_mode_there():
    from tensorly_cross.nn.training import predict

    data = _in_memory()
    model, encoder = _batchnorm_model(head="pca")
    model.embedding.fit_pca([data.volume(k) for k in range(len(data))])
    assert not encoder.training and model.embedding.training
    predict(model, data)
    assert not encoder.training and model.training and model.norm.training


def test_fit_trains_around_an_encoder_in_eval_mode_and_keeps_its_statistics():
    data = _in_memory()
    for head in ("probes", "pca"):
        model, encoder = _batchnorm_model(head)
        statistics = encoder[1].running_mean.clone()
        readout = model.readout.weight.detach().clone()
        fit(model, data, epochs=2, batch_size=2, test=data)
        assert not encoder.training and model.training
        torch.testing.assert_close(encoder[1].running_mean, statistics, rtol=0, atol=0)
        assert not torch.equal(model.readout.weight, readout)  # the rest trained


def test_fit_still_trains_a_model_left_in_eval_mode_in_train_mode():
    model, encoder = _batchnorm_model()
    model.eval()
    fit(model, _in_memory(), epochs=1, batch_size=2)
    assert model.training and encoder.training and model.norm.training


def _noisy_batchnorm_encoder():
    from torch import nn

    torch.manual_seed(0)
    return nn.Sequential(nn.Conv3d(1, 4, 3), nn.BatchNorm3d(4), nn.Dropout(0.5), nn.GELU(),
                         nn.Conv3d(4, 2, 1), nn.AdaptiveAvgPool3d(1), nn.Flatten())


def test_the_memory_probe_leaves_the_encoder_statistics_and_the_random_state():
    from tensorly_cross.nn.lockstep import _leaving_no_trace

    encoder = _noisy_batchnorm_encoder()  # in train mode
    buffers = {name: buffer.clone() for name, buffer in encoder.named_buffers()}
    torch.manual_seed(1)
    expected_draw = torch.rand(3)
    torch.manual_seed(1)
    with _leaving_no_trace(encoder, "cpu"):
        output = encoder(torch.rand(8, 1, 3, 3, 3))  # a draw, and the statistics move
        assert not torch.equal(encoder[1].running_mean, buffers["1.running_mean"])
    assert output.shape == (8, 2)
    torch.testing.assert_close(torch.rand(3), expected_draw, rtol=0, atol=0)
    for name, buffer in encoder.named_buffers():
        torch.testing.assert_close(buffer, buffers[name], rtol=0, atol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_device_batch_size_on_cuda_leaves_a_batchnorm_s_statistics():
    from tensorly_cross.nn import device_batch_size

    encoder = _noisy_batchnorm_encoder().cuda()
    variance = encoder[1].running_var.clone()
    device_batch_size(encoder, 3)
    torch.testing.assert_close(encoder[1].running_var, variance, rtol=0, atol=0)


def test_folds_of_a_dataset_in_memory_read_each_file_once(tmp_path):
    data = _files(tmp_path, [(4, 4, 4)] * 6)
    data = VolumeDataset(data.volumes, data.targets, in_memory=True)
    (first_train, first_test), (second_train, second_test) = data.folds(2, seed=0)
    read = {}
    for subset in (first_train, first_test):
        for k in range(len(subset)):
            read[subset.volumes[k]] = subset.volume(k)
    assert len(read) == 6
    for path in read:  # a second read would now fail
        os.remove(path)
    for subset in (second_train, second_test, data):
        for k in range(len(subset)):
            assert subset.volume(k) is read[subset.volumes[k]]


@pytest.mark.parametrize("targets, message", [
    (np.arange(5.0), "1 target"), (np.ones((5, 2)), "2 target"), (np.zeros((0, 3)), "n >= 1"),
    ([[1.0, np.nan, 2.0], [1.0, 2.0, 3.0]], r"targets\[0\] holds NaN")])
def test_set_target_scale_refuses_targets_that_do_not_fit_the_model(targets, message):
    model = Regressor(CrossEmbedding(n_outputs=2), 2, n_targets=3)
    with pytest.raises(ValueError, match=message):
        model.set_target_scale(targets)
    assert model.target_mean.tolist() == [0.0] * 3  # unchanged


def test_set_target_scale_still_takes_one_target_a_volume_either_way():
    for targets in (np.array([1.0, 3.0]), np.array([[1.0], [3.0]]), torch.tensor([1.0, 3.0])):
        model = Regressor(CrossEmbedding(n_outputs=2), 2)
        model.set_target_scale(targets)
        assert model.target_mean.tolist() == [2.0]
        assert model.target_scale.tolist() == pytest.approx([2**0.5])


def test_fit_of_a_dense_model_refuses_mixed_shapes_in_batches_before_training(tmp_path):
    data = _files(tmp_path, [(8, 8, 8)] * 3 + [(9, 8, 8)])
    data = VolumeDataset(data.volumes, data.targets, in_memory=True)
    steps = []
    model = Regressor(DenseEmbedding(default_encoder(3, 2)), 2)
    with pytest.raises(ValueError, match=r"volume 3 of train \(key 3\) has shape \(9, 8, 8\)"
                                         r".*batch_size=2"):
        fit(model, data, epochs=3, batch_size=2, callback=lambda *a: steps.append(a))
    assert not steps
    # one volume a step still takes any shape
    log = fit(Regressor(DenseEmbedding(default_encoder(3, 2)), 2, normalize=False), data,
              epochs=1, batch_size=1)
    assert log.steps == 4


def test_a_callback_may_change_the_modes_of_parts_for_the_next_epochs():
    model, encoder = _batchnorm_model()
    encoder.train()
    seen = []

    def freeze_statistics(epoch, log):
        seen.append(encoder.training)
        encoder.eval()  # from the second epoch on

    fit(model, _in_memory(), epochs=3, batch_size=2, callback=freeze_statistics)
    assert seen == [True, False, False] and not encoder.training


def test_the_dense_baseline_reads_a_flipped_array_as_its_copy():
    array = np.random.default_rng(0).random((8, 9, 10)).astype(np.float32)
    flipped = np.flip(array, axis=(0, 2))
    model = DenseEmbedding(default_encoder(3, 2, pooled=True))
    with torch.no_grad():
        torch.testing.assert_close(model([flipped, array]),
                                   model([np.ascontiguousarray(flipped), array]),
                                   rtol=0, atol=0)
