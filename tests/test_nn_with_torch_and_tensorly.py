"""Tests of the tensorly_cross.nn module: embeddings, encoders, heads, datasets and training
(needing PyTorch and TensorLy)."""

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
from tensorly_cross.nn.keyed import key_value, volume_fingerprint  # noqa: E402
from tensorly_cross.nn.training import Regressor, fit  # noqa: E402

from .nn_helpers import crops_manifest  # noqa: E402

_POSITIONS = np.array([[0, 0, 0], [1, 2, 3], [3, 1, 0]])


def _field(volume=None, **options):
    torch.manual_seed(0)
    volume = torch.rand(4, 4, 4) if volume is None else volume
    return EncodedTensor(volume, default_encoder(3, 2), patch_size=3, n_features=2, **options)


def test_an_encoder_that_scales_its_input_in_place_leaves_the_cached_patches_alone():
    # Mutant: ``_patches_of`` returns the freshly cut (and cached) patches themselves,
    # not a clone; an encoder's ``x.mul_(3)`` then changed the cached patches.
    def scaling_encode(patches):
        patches.mul_(3)
        return patches.reshape(len(patches), -1)[:, :2]

    with tl.backend_context("pytorch"):
        field = _field(encode=scaling_encode)
        first = field.features(_POSITIONS)  # grad on: cut, cached, encoded
        second = field.features(_POSITIONS)  # grad on: from the patch cache
    torch.testing.assert_close(second, first)


def test_patches_that_fill_the_budget_exactly_are_kept():
    # Mutant: ``_KeyedRows.add`` skips rows when ``nbytes + size >= max_bytes``; the
    # docstring keeps every row that does not exceed the budget.
    with tl.backend_context("pytorch"):
        unlimited = _field()
        with torch.no_grad():
            unlimited.features(_POSITIONS)
        size = unlimited.cut_patches.nbytes
        assert size > 0
        exact = _field(patch_cache_bytes=size)
        with torch.no_grad():
            exact.features(_POSITIONS)
    assert exact.cut_patches.nbytes == size


def test_an_encode_callable_counts_its_calls():
    # Mutant: ``_encode`` leaves ``n_encoder_calls`` alone when ``encode`` is given.
    with tl.backend_context("pytorch"):
        field = _field(encode=lambda patches: patches.reshape(len(patches), -1)[:, :2])
        with torch.no_grad():
            field.features(_POSITIONS)
    assert (field.n_encoded, field.n_encoder_calls) == (3, 1)


def test_patches_of_another_dtype_are_not_adopted():
    # Mutant: ``adopt_patches`` compares only the device; float64 patches then reached a
    # float32 encoder (the docstring: nothing changes for another dtype).
    with tl.backend_context("pytorch"):
        donor = _field()
        donor.encoder.double()
        with torch.no_grad():
            donor.features(_POSITIONS)
        assert donor.cut_patches.nbytes > 0
        field = _field()
        field.adopt_patches(donor.cut_patches)
        assert field.cut_patches is not donor.cut_patches
        with torch.no_grad():
            assert field.features(_POSITIONS).dtype == torch.float32


def test_a_volume_that_requires_grad_fills_the_patch_cache_without_grad():
    # Mutant: ``_patches_of`` cuts afresh whenever the volume requires grad, grad on or
    # off; the docstring cuts afresh only "whenever grad is on".
    volume = torch.rand(4, 4, 4, requires_grad=True)
    with tl.backend_context("pytorch"):
        field = _field(volume)
        with torch.no_grad():
            field.features(_POSITIONS)
    assert field.cut_patches.nbytes > 0


def _memmap(tmp_path, shape=(4, 4, 4)):
    path = tmp_path / "v.npy"
    np.save(path, np.arange(np.prod(shape), dtype=np.float32).reshape(shape))
    return np.load(path, mmap_mode="r")


def test_a_memmap_viewed_as_another_dtype_is_another_volume(tmp_path):
    # Mutant: the memmap fingerprint drops the dtype (same file, window and shape).
    volume = _memmap(tmp_path)
    assert volume_fingerprint(volume) != volume_fingerprint(volume.view(np.int32))


def test_a_transposed_memmap_is_another_volume(tmp_path):
    # Mutant: the memmap window drops the strides; a transposed cube has the same start,
    # shape and file.
    volume = _memmap(tmp_path)
    assert volume_fingerprint(volume) != volume_fingerprint(volume.transpose(2, 1, 0))


def test_an_empty_array_key_is_refused_as_not_one_value():
    # Mutant: ``key_value`` refuses only arrays of more than one element; an empty one then
    # fell through to ``.item()`` with NumPy's bare ValueError.
    with pytest.raises(TypeError, match="each key must be one value"):
        key_value(np.array([], dtype=np.int64))
    with pytest.raises(TypeError, match="each key must be one value"):
        key_value(torch.zeros(0, dtype=torch.int64))


def test_one_lockstep_round_serves_every_waiting_job():
    # Mutant: ``_encode_all`` no longer counts ``n_rounds``.
    from tensorly_cross.nn import LockstepEncoder

    lockstep = LockstepEncoder(default_encoder(3, 2), n_features=2, max_batch=1024)
    patches = torch.rand(4, 1, 3, 3, 3)
    with torch.no_grad():
        lockstep.run([lambda: lockstep.encode(patches[:1]), lambda: lockstep.encode(patches[1:])])
    assert (lockstep.n_rounds, lockstep.n_calls, lockstep.n_patches) == (1, 1, 4)


def test_lockstep_raises_the_error_of_the_first_failing_job_in_order():
    # Mutant: ``run`` raises the last job's error; the docstring says the first, in the
    # order of ``jobs``.
    from tensorly_cross.nn import LockstepEncoder

    lockstep = LockstepEncoder(default_encoder(3, 2), n_features=2, max_batch=1024)

    def failing(message):
        def job():
            raise KeyError(message)
        return job

    with pytest.raises(KeyError, match="first"):
        lockstep.run([lambda: 1, failing("first"), failing("second")])


def test_a_rank_is_clipped_from_the_left_as_well_as_from_the_right():
    # Mutant: ``_clip_rank`` drops its left-to-right pass (``r_{k+1} <= r_k n_k``); a
    # first mode of 2 then allowed r_1 = 10.
    from tensorly_cross.nn.embedding import _clip_rank

    shape = (2, 50, 50, 2)
    rank = _clip_rank(shape, [1, 10, 10, 10, 1], block=False)
    assert rank == [1, 2, 10, 2, 1]
    for k, n in enumerate(shape):
        assert rank[k + 1] <= rank[k] * n and rank[k] <= n * rank[k + 1]


def _volumes_dataset(count, size=6, seed=0):
    from tensorly_cross.nn import VolumeDataset

    rng = np.random.default_rng(seed)
    volumes = [rng.standard_normal((size,) * 3).astype(np.float32) for _ in range(count)]
    return VolumeDataset(volumes, rng.uniform(-1, 1, size=count).astype(np.float32))


def _dense_regressor(n_targets=1):
    from tensorly_cross.nn import DenseEmbedding
    from tensorly_cross.nn.training import Regressor

    torch.manual_seed(0)
    return Regressor(DenseEmbedding(default_encoder(3, 2, pooled=True)), 2, n_targets)


def test_two_targets_set_their_standard_deviation_as_scale():
    # Mutant: ``set_target_scale`` keeps the scale at 1 unless more than two targets.
    model = _dense_regressor()
    model.set_target_scale([0.0, 4.0])
    torch.testing.assert_close(model.target_scale, torch.tensor([float(np.sqrt(8.0))]))
    torch.testing.assert_close(model.target_mean, torch.tensor([2.0]))


def test_each_target_column_is_standardised_by_its_own_scale():
    # Mutant: ``_standardised_loss`` divides every column by the first target's scale.
    from tensorly_cross.nn.training import _standardised_loss

    model = _dense_regressor(n_targets=2)
    model.set_target_scale([[0.0, 0.0], [2.0, 20.0]])
    predictions = torch.tensor([[1.0, 10.0]])
    loss = _standardised_loss(model, predictions, torch.zeros(1, 2))
    scale = float(model.target_scale[0])
    torch.testing.assert_close(loss, torch.tensor((1.0 / scale) ** 2))


def test_fit_skips_a_lone_remainder_batch_under_batch_norm():
    # Mutant: ``fit`` skips only empty batches; a batch of one volume then reached
    # BatchNorm1d in training mode, which refuses it.
    from tensorly_cross.nn.training import fit

    model = _dense_regressor()
    log = fit(model, _volumes_dataset(3), epochs=1, batch_size=2)
    assert log.steps == 1


def test_fit_forgets_the_indices_kept_under_keys_of_other_data():
    # Mutant: ``fit`` no longer clears the embedding's cache; keys are positions in the
    # training set, so indices kept for another data set's volume 0 served this one's.
    from tensorly_cross.nn import CrossEmbedding
    from tensorly_cross.nn.training import Regressor, fit

    torch.manual_seed(0)
    embedding = CrossEmbedding(default_encoder(3, 2), patch_size=3, n_features=2, rank=2,
                               n_outputs=2, n_iter_max=1, refresh_every=5)
    model = Regressor(embedding, 2)
    other = _volumes_dataset(2, seed=1)
    with tl.backend_context("pytorch"), torch.no_grad():
        model.eval()
        model([other.volume(0), other.volume(1)], keys=[0, 1])
    assert len(embedding._indices) == 2
    with tl.backend_context("pytorch"):
        fit(model, _volumes_dataset(2), epochs=0)
    assert len(embedding._indices) == 0


def test_cross_validate_lets_folds_share_a_frozen_parameter():
    # Mutant: ``_check_fresh`` refuses every shared parameter, frozen ones too (its
    # docstring and cross_validate's allow a frozen, ``requires_grad_(False)``, one).
    from tensorly_cross.nn.training import _check_fresh

    shared = torch.nn.Linear(2, 2).requires_grad_(False)
    trained = {}
    _check_fresh(torch.nn.Sequential(shared, torch.nn.Linear(2, 1)), 0, trained)
    _check_fresh(torch.nn.Sequential(shared, torch.nn.Linear(2, 1)), 1, trained)


def test_a_split_that_leaves_no_training_item_is_refused():
    # Mutant: ``split`` accepts a cut of 0 (``0 <= cut``): 0.1 of 3 items gave an empty
    # training set without a word.
    with pytest.raises(ValueError, match="both need at"):
        _volumes_dataset(3, size=3).split(0.1)


def test_a_target_beyond_float32_range_is_refused():
    # Mutant: the target check keeps only ``isfinite``; 1e39 then became inf in float32.
    from tensorly_cross.nn import VolumeDataset

    volume = np.zeros((3, 3, 3), dtype=np.float32)
    with pytest.raises(ValueError, match=r"targets\[1\] must be finite and within float32"):
        VolumeDataset([volume, volume], np.array([0.0, 1e39]))


@pytest.mark.parametrize("seed", range(6))
def test_grouped_folds_place_the_largest_group_first_and_count_items(seed):
    # Mutants: ``_grouped_parts`` visits groups unsorted, or counts groups instead of
    # items; groups of sizes 3, 1, 1, 1, 1, 1 then gave test sets of 5 and 3 items, where
    # the largest first, each to the fold with the fewest items, gives 4 and 4.
    data = _volumes_dataset(8, size=3)
    groups = [0, 0, 0, 1, 2, 3, 4, 5]
    sizes = sorted(len(test) for _, test in data.folds(2, seed=seed, groups=groups))
    assert sizes == [4, 4]


def _random_tts(count, shape, seed=0, rank=2):
    generator = torch.Generator().manual_seed(seed)
    ranks = [1] + [rank] * (len(shape) - 1) + [1]
    return [[torch.randn(ranks[k], n, ranks[k + 1], generator=generator, dtype=torch.float64)
             for k, n in enumerate(shape)] for _ in range(count)]


def test_tt_inner_of_a_complex_tt_with_itself_is_its_squared_norm():
    # Mutant: ``tt_inner`` no longer conjugates the first TT (``sum conj(A) * B``).
    from tensorly_cross.nn import tt_inner

    generator = torch.Generator().manual_seed(0)
    tt = [torch.randn(1, 3, 2, dtype=torch.complex128, generator=generator),
          torch.randn(2, 4, 1, dtype=torch.complex128, generator=generator)]
    dense = torch.einsum("aib,bjc->ij", *tt)
    torch.testing.assert_close(tt_inner(tt, tt), dense.abs().pow(2).sum().to(torch.complex128))


def test_a_pca_refit_on_tts_of_other_mode_sizes_starts_afresh():
    # Mutant: ``_continues`` ignores the mode sizes; the refit then asked the old
    # components for coordinates of TTs of another shape and failed.
    from tensorly_cross.nn import TTPCAHead

    head = TTPCAHead(2).fit(_random_tts(4, (3, 4)))
    other = _random_tts(4, (5, 2), seed=1)
    refit = head.fit(other)
    fresh = TTPCAHead(2).fit(other)
    torch.testing.assert_close(refit(other[0]), fresh(other[0]))


def test_a_pca_refit_on_another_number_of_tts_starts_afresh():
    # Mutant: ``_continues`` ignores the projection's shape (number of TTs); the refit
    # then rotated the new components towards coordinates of other training TTs.
    from tensorly_cross.nn import TTPCAHead

    head = TTPCAHead(2).fit(_random_tts(3, (3, 4)))
    other = _random_tts(5, (3, 4), seed=1)
    refit = head.fit(other)
    fresh = TTPCAHead(2).fit(other)
    for tt in other:
        torch.testing.assert_close(refit(tt), fresh(tt))


def test_a_rewritten_hdf5_file_gives_its_dataset_another_fingerprint(tmp_path):
    # Mutant: ``_file_stamp`` stats only the whole path; an HDF5 ``"file.h5:/dataset"``
    # path is no file, so the stamp was None before and after the file was rewritten.
    from types import SimpleNamespace

    path = tmp_path / "v.h5"
    path.write_bytes(b"0" * 10)
    volume = SimpleNamespace(shape=(2, 2, 2), source_path=f"{path}:/data")
    before = volume_fingerprint(volume)
    path.write_bytes(b"0" * 20)
    assert volume_fingerprint(volume) != before


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


def _callable_volume_gradient(patch_cache_bytes):
    torch.manual_seed(0)
    x = torch.rand(8, 8, 8)
    weight = torch.tensor(2.0, requires_grad=True)

    def values(indices):
        index = torch.as_tensor(np.asarray(indices))
        return weight * x[index[:, 0], index[:, 1], index[:, 2]]

    model = CrossEmbedding(default_encoder(3, 2), patch_size=3, n_features=2, rank=3,
                           n_outputs=2, patch_cache_bytes=patch_cache_bytes)
    with tl.backend_context("pytorch"):
        model([tlc.lazy_tensor(values, shape=(8, 8, 8))]).sum().backward()
    return weight.grad


def test_the_gradient_of_a_callable_volume_does_not_depend_on_the_patch_cache():
    without_cache, with_cache = _callable_volume_gradient(0), _callable_volume_gradient(2**20)
    if with_cache is None:
        assert without_cache is None
    else:
        torch.testing.assert_close(without_cache, with_cache)
