"""Audit 28 of the encoder module (tensorly_cross.nn), as a machine-learning user drives it.

* An encoder that returns something other than a tensor (a tuple of features and an
  auxiliary output, a dict, None: a forward that forgot its ``return``) failed deep in the
  shape check with a bare ``AttributeError: 'tuple' object has no attribute 'shape'``; it is
  now a TypeError that says what the encoder returned and what it must return.
* ``mni152_crops`` read its ``seed`` with ``int()``: ``seed=1.5`` and ``seed=True`` gave
  seed 1's crops without a word, and NumPy refused a negative seed with "expected
  non-negative integer", naming no argument. The seed is now checked by name (a whole
  number >= 0, as ``n_volumes`` and ``size`` are).
* An encoder with a BatchNorm after its last convolution (one value per channel and patch)
  failed in train mode, on some volume shapes only, with torch's bare "Expected more than 1
  value per channel when training": the cross asks the encoder for the patches a step
  needs, often one. The error now says so, and what to do (BatchNorm in eval mode, or
  GroupNorm), as docs/pipeline.rst advises.
* An encoder that returned its features on another device than its patches (``.cpu()`` at
  the end of a CUDA encoder) failed in the head with torch's bare "Expected all tensors to be
  on the same device" (on CPU, a meta output failed in ``.item()``); it is now a ValueError
  naming both devices.
* With an encoder without parameters (fixed filters: a pooling), the probe head built by the
  first pass went to the CPU in float32 whatever the volumes: on CUDA volumes the pass
  failed with a device error that ``model.cuda()`` could not prevent (the head did not
  exist yet); ``fit``, which builds the head before its first step, did the same. Such a
  head now follows the TT it reads (or, in ``fit``, the first training volume's device).
* ``mni152_crops(..., directory=d)`` with another seed or size than the crops already in
  ``d`` wrote its crops over theirs (the same ``crop_XXX.npy`` names): a training set made
  there with seed 0 then read, under its own targets, the test set's crops of seed 1 (the
  test crops leaked into training with wrong targets, silently). Such a directory is now
  refused; another ``n_volumes`` (the same crops, more or fewer) is still rewritten.
* ``fit`` of a Regressor whose ``n_inputs`` is not its CrossEmbedding's ``n_outputs``
  failed only in the first step, after the index searches of the PCA fit over every
  training volume (minutes on large volumes); it is now refused before any search.
* A lazy view of a volume that requires grad (``lazy_tensor(x)``, ``TransposedTensor``: a
  learnable layer in front, then a view) lost its gradient without a word: its patches were
  read through the host, and the differentiable read took the search's cached patches,
  which have no history. Its patches now carry the gradient, as the volume's own do.
* DenseEmbedding reported a finite voxel beyond its encoder's dtype (100000.0 for a float16
  encoder, 1e300 for float32) as the volume holding inf; it now names the value and the
  dtype. CrossEmbedding blamed the same voxel on the encoder ("the encoder itself
  overflows"); it now names the voxel's value and the dtype patches are cut in.
* ``fit(..., test=<an empty dataset>)`` trained a whole epoch before ``rmse`` refused the
  empty test set; it is now refused before training.
"""

import json
import re

import numpy as np
import pytest

torch = pytest.importorskip("torch")
tl = pytest.importorskip("tensorly")

from torch import nn  # noqa: E402

import tensorly_cross as tlc  # noqa: E402
from tensorly_cross.errors import NonFiniteValueError  # noqa: E402
from tensorly_cross.nn import (  # noqa: E402
    CrossEmbedding,
    DenseEmbedding,
    EncodedTensor,
    VolumeDataset,
    default_encoder,
    mni152_crops,
)
from tensorly_cross.nn.training import Regressor, fit  # noqa: E402

from .nn_helpers import crops_manifest  # noqa: E402


class _Returns(nn.Module):
    """The default encoder, whose output ``wrap`` turns into something else."""

    def __init__(self, wrap):
        super().__init__()
        self.body, self.wrap = default_encoder(3, 2), wrap

    def forward(self, patches):
        return self.wrap(self.body(patches))


_NOT_TENSORS = {
    "tuple": lambda features: (features, features.mean()),
    "dict": lambda features: {"features": features},
    "None": lambda features: None,
    "ndarray": lambda features: features.detach().numpy(),
}


@pytest.mark.parametrize("kind", sorted(_NOT_TENSORS))
@pytest.mark.parametrize("n_volumes", [1, 2])
def test_an_encoder_that_returns_no_tensor_is_named(kind, n_volumes):
    model = CrossEmbedding(_Returns(_NOT_TENSORS[kind]), patch_size=3, n_features=2, rank=2,
                           n_outputs=3, n_iter_max=1)
    with tl.backend_context("pytorch"), pytest.raises(TypeError, match="the encoder returned a"):
        model(torch.rand(n_volumes, 1, 5, 6, 4))


def test_an_encoded_tensor_whose_encoder_returns_no_tensor_is_named():
    encoder = _Returns(_NOT_TENSORS["tuple"])
    with tl.backend_context("pytorch"):
        field = EncodedTensor(torch.rand(5, 6, 4), encoder, patch_size=3, n_features=2)
        with pytest.raises(TypeError, match=r"returned a tuple .* one torch\.Tensor"):
            field.evaluate(np.array([[0, 1, 2, 1]]))


def test_an_encoder_that_returns_a_tensor_is_still_taken():
    model = CrossEmbedding(_Returns(lambda features: features), patch_size=3, n_features=2,
                           rank=2, n_outputs=3, n_iter_max=1)
    with tl.backend_context("pytorch"):
        assert model(torch.rand(2, 1, 5, 6, 4)).shape == (2, 3)


@pytest.mark.parametrize("seed, error", [(1.5, ValueError), (True, TypeError),
                                         (-1, ValueError), (None, TypeError),
                                         ("1", TypeError), (float("nan"), ValueError)])
def test_mni152_crops_checks_its_seed_by_name(seed, error):
    with pytest.raises(error, match="seed"):
        mni152_crops(1, 4, seed=seed)


@pytest.mark.parametrize("seed", [3, np.int64(3), 3.0])
def test_mni152_crops_still_takes_whole_seeds(tmp_path, seed):
    # A manifest of seed 3's crops: the cache answers before the template is loaded.
    np.save(tmp_path / "crop_000.npy", np.zeros((4, 4, 4), dtype=np.float32))
    manifest = dict(n_volumes=1, size=4, seed=3, version=2, files=["crop_000.npy"],
                    targets=[0.25])
    (tmp_path / "targets.json").write_text(json.dumps(manifest))
    data = mni152_crops(1, 4, seed=seed, directory=tmp_path)
    assert float(data.targets[0]) == 0.25


def _batchnorm_last(train):
    torch.manual_seed(0)
    encoder = nn.Sequential(nn.Conv3d(1, 4, 3), nn.GELU(), nn.Conv3d(4, 2, 3), nn.BatchNorm3d(2),
                            nn.Flatten())
    return CrossEmbedding(encoder.train(train), patch_size=5, n_features=2, rank=2,
                          n_outputs=2, stride=2)


def test_a_batchnorm_given_one_patch_in_train_mode_is_explained():
    # A 6^3 volume at stride 2: a step of the search asks for a single new patch.
    with tl.backend_context("pytorch"), \
            pytest.raises(ValueError, match="BatchNorm.*eval mode.*GroupNorm"):
        _batchnorm_last(train=True)([torch.rand(6, 6, 6)])


def test_a_batchnorm_in_eval_mode_still_reads_one_patch_at_a_time():
    model = _batchnorm_last(train=True).eval()
    with tl.backend_context("pytorch"):
        assert model([torch.rand(6, 6, 6)]).shape == (1, 2)


class _MetaOutput(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = default_encoder(3, 2)

    def forward(self, patches):
        return self.body(patches).to("meta")


@pytest.mark.parametrize("n_volumes", [1, 2])
def test_features_on_another_device_than_the_patches_are_named(n_volumes):
    model = CrossEmbedding(_MetaOutput(), patch_size=3, n_features=2, rank=2, n_outputs=2,
                           n_iter_max=1)
    with tl.backend_context("pytorch"), \
            pytest.raises(ValueError, match="features on meta for patches on cpu"):
        model(torch.rand(n_volumes, 1, 5, 5, 5))


def _parameter_free(**options):
    encoder = nn.Sequential(nn.AvgPool3d(3), nn.Flatten())
    return CrossEmbedding(encoder, patch_size=3, n_features=1, rank=2, n_outputs=2,
                          n_iter_max=1, **options)


def test_the_head_of_a_parameter_free_encoder_follows_the_tt_it_reads():
    model = _parameter_free()
    with tl.backend_context("pytorch"):
        features = model(torch.rand(2, 1, 5, 5, 5, dtype=torch.float64))
    assert features.dtype == torch.float64
    assert all(core.dtype == torch.float64 for core in model.head.cores)


def test_a_head_built_at_construction_still_follows_the_module():
    model = _parameter_free(volume_shape=(5, 5, 5)).double()
    assert all(core.dtype == torch.float64 for core in model.head.cores)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_parameter_free_encoder_reads_cuda_volumes_into_a_cuda_head():
    model = _parameter_free().cuda()
    volumes = torch.rand(2, 1, 5, 5, 5, device="cuda")
    with tl.backend_context("pytorch"):
        features = model(volumes)
    features.sum().backward()
    assert features.device.type == "cuda"
    assert all(core.grad is not None and core.device.type == "cuda"
               for core in model.head.cores)


@pytest.mark.parametrize("other", [dict(seed=1), dict(size=5), dict(seed=1, n_volumes=2)])
def test_mni152_crops_refuses_a_directory_of_another_seed_or_size(tmp_path, other):
    crops_manifest(tmp_path)
    data = mni152_crops(1, 4, seed=0, directory=tmp_path)  # the cache, as it is
    call = dict(dict(n_volumes=1, size=4, seed=0), **other)
    with pytest.raises(ValueError, match="holds the crops of seed 0 and size 4"):
        mni152_crops(call["n_volumes"], call["size"], seed=call["seed"], directory=tmp_path)
    assert np.all(np.load(data.volumes[0]) == 7.0)  # the crops of seed 0 are still there


def test_mni152_crops_still_rewrites_a_directory_for_another_count(tmp_path):
    pytest.importorskip("nilearn")
    crops_manifest(tmp_path, n_volumes=2)
    data = mni152_crops(1, 4, seed=0, directory=tmp_path)
    assert len(data) == 1 and np.load(data.volumes[0]).shape == (4, 4, 4)
    assert not np.all(np.load(data.volumes[0]) == 7.0)  # written afresh


def _small_dataset():
    rng = np.random.default_rng(0)
    return VolumeDataset([rng.random((6, 6, 6)).astype(np.float32) for _ in range(4)],
                         np.arange(4.0))


@pytest.mark.parametrize("head", ["probes", "pca"])
def test_fit_refuses_a_regressor_of_another_width_before_any_search(head):
    embedding = CrossEmbedding(default_encoder(3, 2), patch_size=3, n_features=2, rank=2,
                               head=head, n_outputs=5, n_iter_max=1)
    with tl.backend_context("pytorch"), \
            pytest.raises(ValueError, match="n_outputs=5 .* n_inputs=4"):
        fit(Regressor(embedding, 4), _small_dataset(), epochs=1, batch_size=2)
    assert embedding.counters["searches"] == 0


def test_fit_still_trains_a_regressor_of_the_embedding_s_width():
    embedding = CrossEmbedding(default_encoder(3, 2), patch_size=3, n_features=2, rank=2,
                               n_outputs=3, n_iter_max=1)
    with tl.backend_context("pytorch"):
        log = fit(Regressor(embedding, 3), _small_dataset(), epochs=1, batch_size=2)
    assert log.steps == 2


def test_fit_trains_a_parameter_free_encoder_on_torch_volumes():
    volumes = [torch.rand(6, 6, 6, dtype=torch.float64) * (1 + k) for k in range(4)]
    model = Regressor(_parameter_free(), 2, normalize=False)
    with tl.backend_context("pytorch"):
        log = fit(model, VolumeDataset(volumes, np.arange(4.0)), epochs=2, batch_size=2)
    assert log.steps == 4 and np.isfinite(log.losses).all()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_fit_builds_the_head_of_a_parameter_free_encoder_on_the_volumes_device():
    volumes = [torch.rand(6, 6, 6, device="cuda") * (1 + k) for k in range(4)]
    model = Regressor(_parameter_free(), 2, normalize=False).cuda()
    with tl.backend_context("pytorch"):
        log = fit(model, VolumeDataset(volumes, np.arange(4.0)), epochs=2, batch_size=2)
    assert log.steps == 4
    assert all(core.device.type == "cuda" for core in model.embedding.head.cores)


def _volume_gradient(make_volume, layout):
    torch.manual_seed(0)
    volume = torch.rand(5, 6, 4, dtype=torch.float64, requires_grad=True)
    model = CrossEmbedding(default_encoder(3, 2), patch_size=3, n_features=2, rank=2,
                           n_outputs=2, layout=layout, n_iter_max=1).double()
    with tl.backend_context("pytorch"):
        model([make_volume(volume)]).sum().backward()
    return volume.grad


@pytest.mark.parametrize("layout", ["tt", "quantics"])
@pytest.mark.parametrize("view, same", [
    (lambda x: tlc.lazy_tensor(x), lambda x: x),
    (lambda x: tlc.TransposedTensor(tlc.lazy_tensor(x), (0, 2, 1)), lambda x: x.permute(0, 2, 1)),
])
def test_a_lazy_view_of_a_volume_that_requires_grad_passes_the_gradient_on(layout, view, same):
    through_view = _volume_gradient(view, layout)
    assert through_view is not None and bool(through_view.abs().sum() > 0)
    torch.testing.assert_close(through_view, _volume_gradient(same, layout))


@pytest.mark.parametrize("dtype, value", [(torch.float16, 1e5), (torch.float32, 1e300)])
def test_the_dense_embedding_names_a_voxel_beyond_its_dtype(dtype, value):
    volume = np.ones((5, 5, 5))
    volume[2, 3, 1] = value
    embedding = DenseEmbedding(default_encoder(3, 2).to(dtype))
    with pytest.raises(NonFiniteValueError, match=rf"holds {re.escape(str(value))} at voxel "
                                                  rf"\(2, 3, 1\), beyond the range of .*{dtype}"):
        embedding([np.ones((5, 5, 5)), volume])


def test_the_dense_embedding_still_names_nan_in_a_volume():
    volume = np.ones((5, 5, 5), dtype=np.float32)
    volume[1, 1, 1] = np.nan
    with pytest.raises(NonFiniteValueError, match=r"volume 0 of the batch holds nan at voxel"):
        DenseEmbedding(default_encoder(3, 2))([volume])


@pytest.mark.parametrize("dtype, value", [(torch.float16, 1e5), (torch.float32, 1e300)])
def test_the_cross_embedding_names_a_voxel_beyond_the_patches_dtype(dtype, value):
    volume = np.ones((6, 6, 6))
    volume[2, 3, 4] = value
    model = CrossEmbedding(default_encoder(3, 2), patch_size=3, n_features=2, rank=2,
                           n_outputs=2, n_iter_max=1).to(dtype)
    with tl.backend_context("pytorch"), pytest.raises(
            NonFiniteValueError, match=rf"a voxel of {re.escape(str(value))} .*{dtype}"):
        model([volume])


def test_fit_refuses_an_empty_test_set_before_training():
    data = _small_dataset()
    model = Regressor(DenseEmbedding(default_encoder(3, 2)), 2)
    before = [parameter.detach().clone() for parameter in model.parameters()]
    with pytest.raises(ValueError, match="test is empty"):
        fit(model, data, epochs=1, batch_size=2, test=data.subset([]))
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
