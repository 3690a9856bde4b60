"""Tests of the tensorly_cross.nn module: embeddings, encoders, heads, datasets and training."""

import numpy as np
import pytest
import tensorly as tl

import tensorly_cross as tlc

from .nn_helpers import crops_manifest


def test_patches_of_an_object_volume_are_refused_by_name():
    pytest.importorskip("torch")
    from tensorly_cross.nn import PatchGrid

    with pytest.raises(TypeError, match="volume has dtype object"):
        PatchGrid(np.zeros((4, 4, 4), object), 3)


# -- nn/lockstep.py ---------------------------------------------------------------------


# Mutant: the jobs' threads run with gradients on whatever the caller's mode (the index
# searches, run under no_grad, then encoded afresh and cached nothing).
@pytest.mark.usefixtures("pytorch_backend")
@pytest.mark.parametrize("grad", [False, True])
def test_lockstep_jobs_run_in_the_callers_gradient_mode(grad):
    torch = pytest.importorskip("torch")
    from tensorly_cross.nn import LockstepEncoder, default_encoder

    lockstep = LockstepEncoder(default_encoder(3, 2), n_features=2, max_batch=64)
    patches = torch.rand(3, 1, 3, 3, 3)

    def job():
        features = lockstep.encode(patches)
        return torch.is_grad_enabled(), features.requires_grad

    with torch.set_grad_enabled(grad):
        results = lockstep.run([job, job])
    assert results == [(grad, grad), (grad, grad)]
    assert lockstep.n_calls == 1 and lockstep.n_patches == 6


# -- nn/encoded.py ----------------------------------------------------------------------


# Mutant: the cache's encoder state without each module's train/eval mode: features cached
# with dropout on (train mode) were served after ``encoder.eval()``.
@pytest.mark.usefixtures("pytorch_backend")
def test_cached_features_are_dropped_when_the_encoder_switches_to_eval_mode():
    torch = pytest.importorskip("torch")
    from torch import nn

    from tensorly_cross.nn import EncodedTensor

    torch.manual_seed(0)
    encoder = nn.Sequential(nn.Conv3d(1, 4, kernel_size=3), nn.Dropout(0.5), nn.Flatten())
    volume = torch.rand(5, 4, 6)
    field = EncodedTensor(volume, encoder, patch_size=3, n_features=4)
    positions = np.array([[0, 0, 0], [1, 2, 3], [4, 3, 5]])
    with torch.no_grad():
        encoder.train()
        field.features(positions)  # cached, with dropout
        encoder.eval()
        features = field.features(positions)
        expected = encoder(field.patches.patches(positions))
    torch.testing.assert_close(features, expected)


def _small_field(torch, **options):
    from tensorly_cross.nn import EncodedTensor, default_encoder

    torch.manual_seed(0)
    encoder = default_encoder(3, 2)
    volume = torch.rand(6, 5, 7)
    return EncodedTensor(volume, encoder, patch_size=3, n_features=2, **options), encoder


# Mutant: a batch of patches stored when the store was under its budget before it, though
# over it after (``nbytes > max_bytes``).
@pytest.mark.usefixtures("pytorch_backend")
def test_cut_patches_stay_within_patch_cache_bytes():
    torch = pytest.importorskip("torch")
    field, _ = _small_field(torch, patch_cache_bytes=1000)  # a patch: 27 float32, 108 bytes
    with torch.no_grad():
        field.features(np.array([[0, 0, k] for k in range(7)]))  # 756 bytes: kept
        field.features(np.array([[1, 0, k] for k in range(7)]))  # 1512 in all: not kept
    assert field.cut_patches.nbytes == 756


# Mutant: adopted patches keep the budget of the tensor that cut them, not this one's.
@pytest.mark.usefixtures("pytorch_backend")
def test_adopted_patches_grow_within_the_adopting_tensors_budget():
    torch = pytest.importorskip("torch")
    first, _ = _small_field(torch, patch_cache_bytes=0)
    second, _ = _small_field(torch, patch_cache_bytes=10_000)
    second.adopt_patches(first.cut_patches)
    with torch.no_grad():
        second.features(np.array([[0, 0, k] for k in range(5)]))
    assert second.cut_patches is first.cut_patches  # shared, not copied
    assert second.cut_patches.nbytes == 5 * 108


# Mutant: repeated positions in increasing order taken for distinct ones (``diff >= 0``):
# each repeat encoded again ("the encoder runs once per unique position").
@pytest.mark.usefixtures("pytorch_backend")
@pytest.mark.parametrize("grad", [False, True])
def test_repeated_positions_get_their_patches_features(grad):
    torch = pytest.importorskip("torch")
    field, encoder = _small_field(torch)
    positions = np.array([[1, 1, 1], [1, 1, 1], [2, 3, 4], [2, 3, 4], [2, 3, 4]])
    with torch.set_grad_enabled(grad):
        for _ in range(2):  # the second time from the caches
            features = field.features(positions)
            torch.testing.assert_close(features, encoder(field.patches.patches(positions)))
    assert field.n_encoded == (4 if grad else 2)  # with gradient each call encodes afresh


# -- nn/heads.py ------------------------------------------------------------------------


# Mutant: eigenvectors scaled by ``1/eigenvalue``, not ``1/sqrt(eigenvalue)``: the
# coordinates were not the PCA scores (projections on unit principal axes) of the tensors.
@pytest.mark.usefixtures("pytorch_backend")
def test_tt_pca_coordinates_are_the_dense_pca_scores():
    torch = pytest.importorskip("torch")
    from tensorly_cross.nn import TTPCAHead

    generator = torch.Generator().manual_seed(0)

    def random_tt():
        return [torch.randn(1, 4, 2, generator=generator, dtype=torch.float64),
                torch.randn(2, 3, 2, generator=generator, dtype=torch.float64),
                torch.randn(2, 2, 1, generator=generator, dtype=torch.float64)]

    def dense(tt):
        return np.einsum("aib,bjc,ckd->ijk", *(core.numpy() for core in tt)).ravel()

    tts = [random_tt() for _ in range(6)]
    head = TTPCAHead(n_components=3).fit(tts)
    vectors = np.stack([dense(tt) for tt in tts])
    mean = vectors.mean(axis=0)
    _, _, axes = np.linalg.svd(vectors - mean, full_matrices=False)
    new = random_tt()
    for tt in tts + [new]:
        coordinates = head(tt).numpy()
        scores = (dense(tt) - mean) @ axes[:3].T
        np.testing.assert_allclose(np.abs(coordinates), np.abs(scores), rtol=1e-8, atol=1e-10)


# Mutant: the refit's Procrustes rotation transposed (``V^T U``, not ``U V^T``): the refit
# coordinates were not the closest rotation of the new ones to the previous ones, whose
# optimality condition is ``R^T P`` symmetric positive semi-definite.
@pytest.mark.usefixtures("pytorch_backend")
def test_a_tt_pca_refit_rotates_its_coordinates_closest_to_the_previous_ones():
    torch = pytest.importorskip("torch")
    from tensorly_cross.nn import TTPCAHead

    generator = torch.Generator().manual_seed(1)

    def random_tt():
        return [torch.randn(1, 5, 2, generator=generator, dtype=torch.float64),
                torch.randn(2, 4, 1, generator=generator, dtype=torch.float64)]

    tts = [random_tt() for _ in range(7)]
    moved = [[core + 0.3 * torch.randn(core.shape, generator=generator, dtype=torch.float64)
              for core in tt] for tt in tts]
    head = TTPCAHead(n_components=3).fit(tts)
    previous = torch.stack([head(tt) for tt in moved])
    head.fit(moved)
    refit = torch.stack([head(tt) for tt in moved])
    fresh = torch.stack([TTPCAHead(n_components=3).fit(moved)(tt) for tt in moved])
    cross = (refit.T @ previous).numpy()
    np.testing.assert_allclose(cross, cross.T, atol=1e-9 * np.abs(cross).max())
    assert np.linalg.eigvalsh((cross + cross.T) / 2).min() >= -1e-9 * np.abs(cross).max()
    assert torch.linalg.norm(refit - previous) <= torch.linalg.norm(fresh - previous) + 1e-12


# -- nn/keyed.py ------------------------------------------------------------------------


# Mutant: a file's stamp without its modification time: a file rewritten with other voxels
# of the same size kept the fingerprint, and the old file's patches were reused.
def test_a_file_rewritten_with_the_same_size_gets_another_fingerprint(tmp_path):
    pytest.importorskip("torch")
    import os

    import tensorly_cross as tlc
    from tensorly_cross.nn.keyed import volume_fingerprint

    path = str(tmp_path / "volume.npy")
    np.save(path, np.zeros((4, 4, 4)))
    os.utime(path, ns=(1_000_000_000, 1_000_000_000))
    before = volume_fingerprint(tlc.open_volume(path))
    assert volume_fingerprint(tlc.open_volume(path)) == before
    np.save(path, np.ones((4, 4, 4)))
    os.utime(path, ns=(2_000_000_000, 2_000_000_000))
    assert volume_fingerprint(tlc.open_volume(path)) != before


# -- nn/dataset.py, nn/training.py ------------------------------------------------------


# Mutant: ``batches(shuffle=True, seed=...)`` ignored its seed (one fixed order).
def test_shuffled_batches_follow_their_seed():
    pytest.importorskip("torch")
    from tensorly_cross.nn import VolumeDataset

    data = VolumeDataset([np.full((3, 3, 3), k, dtype=np.float32) for k in range(8)],
                         np.arange(8.0))
    for seed in (1, 2):
        order = [i for indices, _, _ in data.batches(3, shuffle=True, seed=seed)
                 for i in indices]
        assert order == np.random.default_rng(seed).permutation(8).tolist()


# Mutant: predictions ``mean + readout`` (the target scale dropped): a Regressor must predict
# ``mean + scale * readout`` in target units, so targets ``3 t + 5`` give ``3 p + 5``.
@pytest.mark.usefixtures("pytorch_backend")
def test_regressor_predictions_follow_the_targets_mean_and_scale():
    torch = pytest.importorskip("torch")
    from tensorly_cross.nn import DenseEmbedding, default_encoder
    from tensorly_cross.nn.training import Regressor

    torch.manual_seed(0)
    model = Regressor(DenseEmbedding(default_encoder(3, 2)), n_inputs=2, normalize=False)
    volumes = torch.rand(3, 1, 5, 5, 5)
    targets = torch.tensor([1.0, 2.0, 4.0])
    with torch.no_grad():
        model.set_target_scale(targets)
        first = model(volumes)
        model.set_target_scale(3 * targets + 5)
        second = model(volumes)
    assert float((first - targets.mean()).abs().max()) > 1e-3  # a readout away from the mean
    torch.testing.assert_close(second, 3 * first + 5)


def _dense_regressor(torch, normalize):
    from tensorly_cross.nn import DenseEmbedding, default_encoder
    from tensorly_cross.nn.training import Regressor

    torch.manual_seed(0)
    return Regressor(DenseEmbedding(default_encoder(3, 2)), n_inputs=2, normalize=normalize)


def _dataset(n, seed=0):
    from tensorly_cross.nn import VolumeDataset

    rng = np.random.default_rng(seed)
    volumes = [rng.random((5, 5, 5)).astype(np.float32) for _ in range(n)]
    return VolumeDataset(volumes, 10.0 * rng.standard_normal(n) + 50.0)


# Mutant: the training loss not divided by the target scale (the log's losses are in
# standardised units). With lr=0 the model stays put: the epoch's loss is computable.
@pytest.mark.usefixtures("pytorch_backend")
def test_the_training_loss_is_in_standardised_target_units():
    torch = pytest.importorskip("torch")
    from tensorly_cross.nn.training import fit

    model, train = _dense_regressor(torch, normalize=False), _dataset(4)
    log = fit(model, train, epochs=1, batch_size=4, lr=0.0)
    volumes = [train.volume(k) for k in range(4)]
    with torch.no_grad():
        predictions = model(volumes)
    expected = torch.mean(((predictions - train.targets) / train.targets.std()) ** 2)
    np.testing.assert_allclose(log.losses[0], float(expected), rtol=1e-5)


# Mutant: every epoch shuffled in the same order (its seed without the epoch).
@pytest.mark.usefixtures("pytorch_backend")
def test_each_epoch_visits_the_training_volumes_in_its_own_order():
    torch = pytest.importorskip("torch")
    from tensorly_cross.nn.training import fit

    model, train = _dense_regressor(torch, normalize=False), _dataset(6)
    seen = []
    model.embedding.register_forward_pre_hook(
        lambda module, args, kwargs: seen.extend(kwargs["keys"]), with_kwargs=True)
    fit(model, train, epochs=2, batch_size=2, lr=1e-3, seed=3)
    expected = [np.random.default_rng(3 * 100_003 + epoch).permutation(6).tolist()
                for epoch in range(2)]
    assert expected[0] != expected[1]
    assert seen == expected[0] + expected[1]


# Mutant: predict in train mode (BatchNorm on the batch's statistics): a batch of one
# volume then failed, and predictions depended on the batch.
@pytest.mark.usefixtures("pytorch_backend")
def test_predict_runs_in_eval_mode_and_restores_the_mode():
    torch = pytest.importorskip("torch")
    from tensorly_cross.nn.training import predict

    model, data = _dense_regressor(torch, normalize=True), _dataset(3)
    model.train()
    one_at_a_time = predict(model, data, batch_size=1)
    assert model.training
    torch.testing.assert_close(one_at_a_time, predict(model, data, batch_size=3))


# Mutant: a Regressor with BatchNorm and one training volume not refused when the batch
# size is larger: every step was skipped and nothing was trained, without a word.
@pytest.mark.usefixtures("pytorch_backend")
def test_fit_refuses_a_single_training_volume_with_batchnorm():
    torch = pytest.importorskip("torch")
    from tensorly_cross.nn.training import fit

    with pytest.raises(ValueError, match="steps of one volume"):
        fit(_dense_regressor(torch, normalize=True), _dataset(1), epochs=1, batch_size=8)


# Mutant: the PCA head not refitted at the start of each epoch (never fitted: the first
# step failed).
@pytest.mark.usefixtures("pytorch_backend")
def test_fit_fits_a_pca_head_before_training():
    torch = pytest.importorskip("torch")
    from tensorly_cross.nn import CrossEmbedding
    from tensorly_cross.nn.training import Regressor, fit

    torch.manual_seed(0)
    embedding = CrossEmbedding(patch_size=3, n_features=2, rank=2, head="pca", n_outputs=2,
                               n_iter_max=1, max_batch=4096)
    model = Regressor(embedding, n_inputs=2, normalize=False)
    log = fit(model, _dataset(3), epochs=1, batch_size=3)
    assert embedding.head.fitted and log.steps == 1 and np.isfinite(log.losses[0])


# -- nn/dense.py ------------------------------------------------------------------------


# Mutants: "edge" padding run as torch's "reflect"; and torch's reflect padding used on an
# axis no longer than the border (torch refuses it): the dense baseline must average the
# border patches PatchGrid (and CrossEmbedding) cut.
@pytest.mark.usefixtures("pytorch_backend")
@pytest.mark.parametrize("padding", ["reflect", "edge", "zeros"])
@pytest.mark.parametrize("shape", [(5, 4, 6), (1, 5, 4)])
def test_the_dense_baseline_pads_as_patch_grid_does(padding, shape):
    torch = pytest.importorskip("torch")
    from tensorly_cross.nn import DenseEmbedding, PatchGrid, default_encoder

    torch.manual_seed(0)
    encoder = default_encoder(patch_size=3, n_features=2).double()
    volume = torch.rand(shape, dtype=torch.float64)
    features = DenseEmbedding(encoder, padding=padding)([volume])[0]
    grid = PatchGrid(volume, patch_size=3, padding=padding)
    every = grid.patches(list(np.ndindex(*volume.shape)), dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(features, encoder(every).mean(dim=0))


# Mutant: an ``AdaptiveAvgPool3d`` to more than one position taken for the final mean when
# one of its sizes is 1: the baseline returned F features where the encoder gives 2 F.
@pytest.mark.usefixtures("pytorch_backend")
def test_the_dense_baseline_refuses_a_pooling_to_several_positions():
    pytest.importorskip("torch")
    from torch import nn

    from tensorly_cross.nn import DenseEmbedding

    encoder = nn.Sequential(nn.Conv3d(1, 2, kernel_size=3), nn.AdaptiveAvgPool3d((1, 2, 1)),
                            nn.Flatten())
    with pytest.raises(ValueError, match="cannot run over the whole volume"):
        DenseEmbedding(encoder)


def test_decimal_targets_are_still_taken():
    """Targets as ``decimal.Decimal`` (pandas' read_sql of a NUMERIC column): taken before
    the real-number check, then refused as 'not real numbers ... encode class labels as
    numbers first' (a Decimal is a number, but not a ``numbers.Real``)."""
    import decimal

    pytest.importorskip("torch")
    from tensorly_cross.nn import VolumeDataset

    volumes = [np.zeros((4, 4, 4)), np.ones((4, 4, 4))]
    data = VolumeDataset(volumes, [decimal.Decimal("1.5"), decimal.Decimal("2")])
    assert data.targets.tolist() == [1.5, 2.0]


def test_subset_takes_an_object_array_of_ints_and_names_a_bad_entry():
    """An object array of ints (a pandas column of mixed types' values): taken before the
    new index check, then refused with a bare AttributeError ("'int' object has no
    attribute 'item'") raised while writing the refusal."""
    pytest.importorskip("torch")
    from tensorly_cross.nn import VolumeDataset

    data = VolumeDataset([np.zeros((4, 4, 4))] * 3, [0.0, 1.0, 2.0])
    assert data.subset(np.array([0, 2], dtype=object)).targets.tolist() == [0.0, 2.0]
    with pytest.raises(TypeError, match="indices must be ints.*such as 'a'"):
        data.subset(np.array([0, "a"], dtype=object))


def test_dense_embedding_names_an_array_given_for_padding():
    # The nn settings were moved to check_choice, but DenseEmbedding's padding kept
    # "padding not in PADDINGS": an array failed with NumPy's "truth value of an array ...
    # is ambiguous", which names neither the argument nor its options.
    pytest.importorskip("torch")
    from tensorly_cross.nn import DenseEmbedding, default_encoder

    with pytest.raises(ValueError, match="padding must be one of 'reflect'"):
        DenseEmbedding(default_encoder(3, 2), padding=np.array(["reflect", "edge"]))


def test_slab_chunks_keep_the_fastest_axes_whole_while_they_fit():
    # Mutant: `chunks[axis] < shape[axis]` -> `<=` in _slab_chunks (every block was cut
    # after the fastest axis: a small .npy was read one row at a time).
    from tensorly_cross.stream.blocks import _slab_chunks

    assert _slab_chunks((3, 4, 5), False, 10**6) == [3, 4, 5]
    assert _slab_chunks((3, 4, 5), True, 10**6) == [3, 4, 5]
    assert _slab_chunks((3, 4, 5), False, 8 * 40) == [2, 4, 5]


def test_the_pca_head_refuses_complex_tts_whose_imaginary_part_it_dropped():
    """``TTPCAHead`` computes its inner products in float64: complex TTs (a complex cross's)
    were cast to real, their imaginary parts dropped with only PyTorch's casting warning,
    and their coordinates silently wrong. They are refused by name now."""
    torch = pytest.importorskip("torch")
    from tensorly_cross.nn import TTPCAHead

    generator = torch.Generator().manual_seed(0)

    def random_tt(dtype):
        return [torch.randn(1, 5, 2, generator=generator, dtype=dtype),
                torch.randn(2, 3, 1, generator=generator, dtype=dtype)]

    with pytest.raises(TypeError, match="complex"):
        TTPCAHead(n_components=2).fit([random_tt(torch.complex128) for _ in range(4)])
    head = TTPCAHead(n_components=2).fit([random_tt(torch.float64) for _ in range(4)])
    with pytest.raises(TypeError, match="complex"):
        head(random_tt(torch.complex128))


# -- nn/dense.py ---------------------------------------------------------------------------


def test_the_dense_baseline_reads_a_boolean_mask_as_its_zeros_and_ones():
    # Mutant: ``_as_tensor`` refuses dtype kind "b" (a mask), which PatchGrid and
    # CrossEmbedding take as 0/1 ("patches need bool, integer or real").
    torch = pytest.importorskip("torch")
    from tensorly_cross.nn import DenseEmbedding, default_encoder

    torch.manual_seed(0)
    embedding = DenseEmbedding(default_encoder(patch_size=3, n_features=2))
    mask = np.random.default_rng(0).random((5, 5, 5)) > 0.5
    with torch.no_grad():
        torch.testing.assert_close(embedding([mask]), embedding([mask.astype(np.float32)]))


def test_the_dense_baseline_refuses_a_block_of_layers_of_its_own():
    # Mutant: a layer with children of its own (a custom block holding a convolution) is
    # run as if pointwise: the border leaves out its kernel, and the mean is taken over
    # fewer positions than voxels without a word.
    pytest.importorskip("torch")
    from torch import nn

    from tensorly_cross.nn import DenseEmbedding

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv3d(1, 2, 3)

        def forward(self, x):
            return self.conv(x)

    encoder = nn.Sequential(Block(), nn.ReLU(), nn.AdaptiveAvgPool3d(1), nn.Flatten())
    with pytest.raises(ValueError, match=r"(?s)encoder\[0\].*cannot run over the whole volume"):
        DenseEmbedding(encoder)


def test_the_dense_baseline_refuses_a_linear_layer_inside_its_body():
    # Mutant: nn.Linear dropped from the layers refused. Run over the padded volume it mixes
    # (and resizes) the last axis: features of positions that are no voxel's, no error.
    pytest.importorskip("torch")
    from torch import nn

    from tensorly_cross.nn import DenseEmbedding

    encoder = nn.Sequential(nn.Conv3d(1, 2, 3), nn.Linear(7, 7), nn.AdaptiveAvgPool3d(1),
                            nn.Flatten())
    with pytest.raises(ValueError, match=r"encoder\[1\] \(Linear.*cannot run over the whole"):
        DenseEmbedding(encoder)


# -- nn/mni152.py --------------------------------------------------------------------------


def test_mni152_crops_rewrites_the_crops_of_an_older_version_whatever_their_seed(tmp_path):
    # Mutant: the version no longer gates the refusal, so a directory of the crops of an
    # older version (documented: "rewritten") but of another seed was refused.
    pytest.importorskip("torch")
    pytest.importorskip("nilearn")
    from tensorly_cross.nn import mni152_crops

    crops_manifest(tmp_path, version=1, seed=3)
    data = mni152_crops(1, 4, seed=0, directory=tmp_path)
    volume = np.load(data.volumes[0])
    assert volume.shape == (4, 4, 4) and not np.all(volume == 7.0)  # written afresh


def test_mni152_crops_writes_again_a_crop_missing_from_its_directory(tmp_path):
    # Mutant: the manifest is trusted without checking that its files are there: the
    # dataset returned named a deleted crop, and failed only when read.
    pytest.importorskip("torch")
    pytest.importorskip("nilearn")
    from tensorly_cross.nn import mni152_crops

    (name,) = crops_manifest(tmp_path)
    (tmp_path / name).unlink()
    data = mni152_crops(1, 4, seed=0, directory=tmp_path)
    volume, target = data[0]
    assert tuple(volume.shape) == (4, 4, 4) and 0.0 <= float(target) <= 1.0
    assert (tmp_path / name).exists()


def test_torch_compile_of_a_cross_embedding_runs_its_crosses_eagerly():
    """``torch.compile`` of a ``CrossEmbedding`` traced into its lockstep searches and reads
    and failed inside TorchDynamo ("Cannot interpret 'torch.float32' as a data type"),
    although the cross entry points it calls run eagerly under ``torch.compile``. Its
    crosses run eagerly now too: the same features and encoder gradient as without it."""
    torch = pytest.importorskip("torch")
    from tensorly_cross.nn import CrossEmbedding

    torch._dynamo.reset()
    torch.manual_seed(0)
    model = CrossEmbedding(patch_size=3, n_features=2, rank=2, n_outputs=3)
    volumes = torch.rand(1, 1, 6, 6, 6)  # one volume: its cross runs in this thread
    with tl.backend_context("pytorch"):
        eager = model(volumes)
        eager.sum().backward()
        expected = model.encoder[0].weight.grad.clone()
        model.zero_grad()
        compiled = torch.compile(model, backend="eager")(volumes)  # TorchDynamo only: fast
        compiled.sum().backward()
    torch.testing.assert_close(compiled, eager, rtol=0, atol=0)
    torch.testing.assert_close(model.encoder[0].weight.grad, expected, rtol=1e-6, atol=0)


def _nan_dataset(tmp_path, in_memory):
    nibabel = pytest.importorskip("nibabel")
    from tensorly_cross.nn import VolumeDataset

    path = tmp_path / "zmap.nii"
    volume = np.random.default_rng(1).random((12, 12, 12)).astype(np.float32)
    volume[:3] = np.nan
    nibabel.save(nibabel.Nifti1Image(volume, np.eye(4)), path)
    return VolumeDataset([str(path)], [0.0], in_memory=in_memory)


def test_a_nan_map_in_a_volume_dataset_names_its_remedy_for_the_cross_model(tmp_path):
    # docs/pipeline.rst: such maps need VolumeDataset(..., fill_nan=0.0); the error's note
    # named open_volume's fill_nan only, which a VolumeDataset user does not call.
    torch = pytest.importorskip("torch")
    import tensorly as tl

    from tensorly_cross.nn import CrossEmbedding, default_encoder

    data = _nan_dataset(tmp_path, in_memory=False)
    torch.manual_seed(0)
    embedding = CrossEmbedding(default_encoder(4, 2, pooled=True), patch_size=4, stride=2,
                               n_features=2, rank=2, layout="tt", n_iter_max=1)
    with tl.backend_context("pytorch"), pytest.raises(tlc.NonFiniteValueError) as error:
        embedding([data[0][0]])
    assert any("VolumeDataset(..., fill_nan=" in note for note in error.value.__notes__)


def test_a_nan_map_in_a_volume_dataset_names_its_remedy_for_the_dense_model(tmp_path):
    torch = pytest.importorskip("torch")
    from tensorly_cross.nn import default_encoder
    from tensorly_cross.nn.dense import DenseEmbedding

    data = _nan_dataset(tmp_path, in_memory=True)
    torch.manual_seed(0)
    with pytest.raises(tlc.NonFiniteValueError, match=r"voxel \(0, 0, 0\)") as error:
        DenseEmbedding(default_encoder(4, 2, pooled=True))([data[0][0]])
    assert any("VolumeDataset(..., fill_nan=" in note
               for note in getattr(error.value, "__notes__", []))


class _IndexedVolumes:
    """Volumes by index (``__getitem__`` and ``__len__``, no ``__iter__``): a sequence to
    ``list()``, through Python's old sequence protocol."""

    def __init__(self, volumes):
        self._volumes = volumes

    def __getitem__(self, k):
        return self._volumes[k]

    def __len__(self):
        return len(self._volumes)


def test_volume_dataset_takes_a_sequence_without_iter():
    pytest.importorskip("torch")
    from tensorly_cross.nn.dataset import VolumeDataset

    volumes = [np.full((4, 4, 4), float(k), dtype=np.float32) for k in range(3)]
    dataset = VolumeDataset(_IndexedVolumes(volumes), [0.0, 1.0, 2.0])
    assert len(dataset) == 3
    np.testing.assert_array_equal(np.asarray(dataset[2][0]), volumes[2])
    with pytest.raises(TypeError, match="volumes must be a sequence"):
        VolumeDataset(None, [])


@pytest.mark.parametrize("flag", ["no", "False", 0, 1, None])
def test_default_encoder_pooled_must_be_a_bool(flag):
    # "Flags must be bools: 'no' is refused, not taken for True" (docs/guarantees.rst):
    # pooled="no" built the pooled encoder, pooled=None the other one, without a word.
    pytest.importorskip("torch")
    from tensorly_cross.nn import default_encoder

    with pytest.raises(TypeError, match="pooled must be True or False"):
        default_encoder(5, 4, pooled=flag)


@pytest.mark.parametrize("flag", ["no", "False", 0, 1, None])
def test_regressor_normalize_must_be_a_bool(flag):
    # normalize="no" added the BatchNorm1d it was meant to leave out.
    torch = pytest.importorskip("torch")
    from tensorly_cross.nn.training import Regressor

    with pytest.raises(TypeError, match="normalize must be True or False"):
        Regressor(torch.nn.Identity(), 4, normalize=flag)


def _small_training(torch):
    import numpy as np

    from tensorly_cross.nn import DenseEmbedding, VolumeDataset, default_encoder
    from tensorly_cross.nn.training import Regressor

    torch.manual_seed(0)
    model = Regressor(DenseEmbedding(default_encoder(3, 2)), n_inputs=2, normalize=False)
    rng = np.random.default_rng(0)
    volumes = [rng.random((5, 5, 5)).astype(np.float32) for _ in range(4)]
    return model, VolumeDataset(volumes, rng.standard_normal(4))


@pytest.mark.usefixtures("pytorch_backend")
def test_fit_refuses_a_callback_that_is_not_callable_before_training():
    # fit(callback=3) trained a whole epoch, then failed with "'int' object is not callable".
    torch = pytest.importorskip("torch")
    from tensorly_cross.nn.training import fit

    model, train = _small_training(torch)
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(TypeError, match="callback must be callable"):
        fit(model, train, epochs=2, batch_size=4, callback=3)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


@pytest.mark.usefixtures("pytorch_backend")
def test_fit_stops_on_true_only_as_its_docstring_says():
    # "callback(epoch, log) after every epoch; True stops training": a callback that
    # returned the log (or a number) stopped after the first epoch without a word.
    torch = pytest.importorskip("torch")
    from tensorly_cross.nn.training import fit

    model, train = _small_training(torch)
    log = fit(model, train, epochs=3, batch_size=4, callback=lambda epoch, log: None)
    assert len(log.losses) == 3
    log = fit(model, train, epochs=3, batch_size=4, callback=lambda epoch, log: epoch == 1)
    assert len(log.losses) == 2
    with pytest.raises(TypeError, match="callback must return True"):
        fit(model, train, epochs=3, batch_size=4, callback=lambda epoch, log: log)


def test_tt_inner_many_of_an_empty_stack_is_an_empty_vector():
    # "inner : torch.Tensor of shape (K,)": a stack of K = 0 TTs raised
    # "IndexError: index 0 is out of bounds for dimension 0 with size 0".
    torch = pytest.importorskip("torch")
    from tensorly_cross.nn import tt_inner_many

    tt = [torch.ones(1, 3, 2, dtype=torch.float64), torch.ones(2, 4, 1, dtype=torch.float64)]
    stacked = [torch.ones(0, 1, 3, 2, dtype=torch.float64),
               torch.ones(0, 2, 4, 1, dtype=torch.float64)]
    inner = tt_inner_many(tt, stacked)
    assert inner.shape == (0,) and inner.dtype == torch.float64
    with pytest.raises(ValueError, match="mode sizes"):  # still checked without a TT
        tt_inner_many(tt, [torch.ones(0, 1, 5, 2, dtype=torch.float64), stacked[1]])


@pytest.mark.parametrize("kwargs, error, name", [
    (dict(cpu_batch=2.7), TypeError, "cpu_batch"),  # was int(2.7): 2, without a word
    (dict(cpu_batch=0), ValueError, "cpu_batch"),  # was 0 patches per call
    (dict(cpu_batch=True), TypeError, "cpu_batch"),
    (dict(memory_fraction=0.0), ValueError, "memory_fraction"),
    (dict(memory_fraction=1.5), ValueError, "memory_fraction"),
    (dict(memory_fraction="half"), TypeError, "memory_fraction"),
    (dict(patch_size=0), ValueError, "patch_size"),
])
def test_device_batch_size_checks_its_arguments_on_every_device(kwargs, error, name):
    # "Every public function validates its arguments first ... nothing is coerced
    # silently" (docs/guarantees.rst): on CPU every argument went unread or through int().
    pytest.importorskip("torch")
    from tensorly_cross.nn import default_encoder, device_batch_size

    arguments = dict(encoder=default_encoder(3, 2), patch_size=3, device="cpu")
    with pytest.raises(error, match=name):
        device_batch_size(**{**arguments, **kwargs})


@pytest.mark.parametrize("generator", [0, 3, "seed", __import__("numpy").random.default_rng(0)])
def test_tt_probe_head_names_a_generator_that_is_not_torch_s(generator):
    # "generator : torch.Generator, optional": an int seed failed in torch.randn with
    # "received an invalid combination of arguments", naming neither the head nor the fix.
    torch = pytest.importorskip("torch")
    from tensorly_cross.nn import TTProbeHead

    with pytest.raises(TypeError, match=r"generator must be a torch\.Generator or None"):
        TTProbeHead((4, 4, 2), 3, generator=generator)
    seeded = torch.Generator().manual_seed(0)  # the remedy the message names
    assert TTProbeHead((4, 4, 2), 3, generator=seeded)(
        [torch.ones(1, 4, 1), torch.ones(1, 4, 1), torch.ones(1, 2, 1)]).shape == (3,)
