"""Tests of the tensorly_cross.nn module: embeddings, encoders, heads, datasets and training
(needing PyTorch, run under the PyTorch backend)."""

import os

import numpy as np
import pytest
import tensorly as tl

torch = pytest.importorskip("torch")

import tensorly_cross as tlc  # noqa: E402
from tensorly_cross.errors import NonFiniteValueError  # noqa: E402
from tensorly_cross.nn import (  # noqa: E402
    CrossEmbedding,
    DenseEmbedding,
    VolumeDataset,
    default_encoder,
    tt_inner,
    tt_inner_many,
)
from tensorly_cross.nn.training import Regressor, cross_validate, fit  # noqa: E402

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


def _volume_batch(count, size=12, seed=1):
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
    volumes = _volume_batch(4)
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
    volumes = list(_volume_batch(6))
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

    volumes = _volume_batch(count)
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
    module(_volume_batch(1, size=12))
    with pytest.raises(ValueError, match="one module takes one volume shape"):
        module(_volume_batch(1, size=10))


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


def _constant_volumes(count, shape=(4, 4, 4)):
    return [np.full(shape, k, dtype=np.float32) for k in range(count)]


def test_subset_takes_a_boolean_mask_as_the_items_it_selects():
    data = VolumeDataset(_constant_volumes(5), [0.0, 1.0, 2.0, 3.0, 4.0])
    for mask in (data.targets > 1.5, (data.targets > 1.5).numpy(), [False, False, True,
                                                                      True, True]):
        chosen = data.subset(mask)
        # before: the mask was read as the ints 0 and 1, items [0, 0, 1, 1, 1]
        assert chosen.targets.tolist() == [2.0, 3.0, 4.0]
        assert [float(volume[0, 0, 0]) for volume in chosen.volumes] == [2.0, 3.0, 4.0]


def test_subset_refuses_a_mask_of_another_length_and_fractional_indices_by_name():
    data = VolumeDataset(_constant_volumes(5), [0.0, 1.0, 2.0, 3.0, 4.0])
    with pytest.raises(IndexError, match="mask.*5 items.*3"):
        data.subset([True, False, True])
    with pytest.raises(TypeError, match="indices.*1.7"):
        data.subset([1.7, 2.2])  # before: items 1 and 2, truncated without a word
    with pytest.raises(TypeError, match="indices"):
        data.subset(["a"])


def test_subset_still_takes_ints_tensors_ranges_and_slices():
    data = VolumeDataset(_constant_volumes(5), [0.0, 1.0, 2.0, 3.0, 4.0])
    assert data.subset([3, -1, 3]).targets.tolist() == [3.0, 4.0, 3.0]
    assert data.subset(torch.tensor([2, 0])).targets.tolist() == [2.0, 0.0]
    assert data.subset(np.int64(1)).targets.tolist() == [1.0]
    assert data.subset(range(1, 3)).targets.tolist() == [1.0, 2.0]
    assert data.subset(slice(None, None, 2)).targets.tolist() == [0.0, 2.0, 4.0]
    assert len(data.subset([])) == 0


def _cross_regressor(encoder):
    embedding = CrossEmbedding(encoder, patch_size=3, n_features=2, rank=2, stride=2,
                               n_iter_max=1, n_outputs=2, volume_shape=(6, 6, 6))
    return Regressor(embedding, 2, normalize=False)


def test_cross_validate_refuses_models_that_share_trainable_parameters_across_folds():
    rng = np.random.default_rng(0)
    data = VolumeDataset(list(rng.random((6, 6, 6, 6), dtype=np.float32)), rng.random(6))
    torch.manual_seed(0)
    shared = default_encoder(3, 2, width=2, pooled=True)
    # before: fold 2's model started from fold 1's trained encoder, which had trained on
    # fold 2's test volumes: a test score with its test set seen
    with pytest.raises(ValueError, match="build_model.*fold 1.*fold 0"):
        cross_validate(lambda: _cross_regressor(shared), data, n_folds=3, epochs=1,
                       batch_size=2)


def test_cross_validate_still_takes_a_frozen_shared_encoder():
    rng = np.random.default_rng(0)
    data = VolumeDataset(list(rng.random((6, 6, 6, 6), dtype=np.float32)), rng.random(6))
    torch.manual_seed(0)
    frozen = default_encoder(3, 2, width=2, pooled=True).requires_grad_(False)
    before = [p.clone() for p in frozen.parameters()]
    scores = cross_validate(lambda: _cross_regressor(frozen), data, n_folds=3, epochs=1,
                            batch_size=2)
    assert len(scores) == 3 and all(np.isfinite(scores))
    assert all(torch.equal(a, b) for a, b in zip(before, frozen.parameters(), strict=True))


def test_a_volume_of_another_shape_in_a_shuffled_batch_is_named_by_its_file(tmp_path):
    paths = []
    for k, shape in enumerate([(6, 6, 6)] * 3 + [(6, 8, 6)]):
        paths.append(str(tmp_path / f"subject_{k}.npy"))
        np.save(paths[-1], np.random.default_rng(k).random(shape, dtype=np.float32))
    data = VolumeDataset(paths, [0.0, 1.0, 2.0, 3.0])
    torch.manual_seed(0)
    model = _cross_regressor(default_encoder(3, 2, width=2, pooled=True))
    # before: "volume 1 of the batch, shape (6, 8, 6), ...": which of the files, the
    # shuffled batch did not say
    with pytest.raises(ValueError, match="subject_3.npy"):
        fit(model, data, epochs=1, batch_size=4)
    assert tl.get_backend() == "pytorch"


@pytest.mark.parametrize("targets", [["AD", "CN"], np.array(["1.5", "2"]),
                                     torch.tensor([1 + 1j, 2 + 0j]), [1 + 2j, 3.0],
                                     [np.datetime64("2020-01-01")] * 2, [None, 1.0]])
def test_targets_that_are_not_real_numbers_are_refused_by_name(targets):
    # before: NumPy's "could not convert string to float: 'AD'" (class labels), a complex
    # tensor's imaginary part dropped with only a ComplexWarning, dates read as day counts
    with pytest.raises(TypeError, match="targets must be real numbers"):
        VolumeDataset(_constant_volumes(2), targets)


def test_ragged_targets_are_refused_by_name():
    with pytest.raises(ValueError, match="targets must have shape"):
        VolumeDataset(_constant_volumes(2), [[1.0, 2.0], [3.0]])


def test_targets_in_any_real_dtype_are_still_taken():
    for targets in (torch.tensor([1.0, 2.0], dtype=torch.bfloat16),  # before: a bare TypeError
                    torch.tensor([True, False]), np.array([1, 2], dtype=np.uint8),
                    [torch.tensor(1.0), torch.tensor(2.0)],
                    np.array([1.5, 2], dtype=object)):  # a mixed pandas frame's column
        data = VolumeDataset(_constant_volumes(2), targets)
        assert data.targets.dtype == torch.float32 and data.targets.shape == (2,)


def _tiny_dense_data():
    rng = np.random.default_rng(0)
    return VolumeDataset(list(rng.random((4, 5, 5, 5), dtype=np.float32)), rng.random(4))


@pytest.mark.parametrize("options, error, name", [
    (dict(seed=None), TypeError, "seed"), (dict(seed=1.5), TypeError, "seed"),
    (dict(seed="a"), TypeError, "seed"), (dict(seed=-1), ValueError, "seed"),
    (dict(lr="x"), TypeError, "lr"), (dict(lr=float("nan")), ValueError, "lr")])
def test_fit_names_a_bad_seed_or_learning_rate(options, error, name):
    from tensorly_cross.nn import DenseEmbedding

    model = Regressor(DenseEmbedding(default_encoder(3, 2, width=2, pooled=True)), 2,
                      normalize=False)
    # before: NumPy's and Python's bare errors ("unsupported operand type(s) for *:
    # 'NoneType' and 'int'"), raised once the first epoch began (after a PCA refit)
    with pytest.raises(error, match=name):
        fit(model, _tiny_dense_data(), epochs=1, batch_size=2, **options)


@pytest.mark.parametrize("call, error, name", [
    (lambda data: data.split(0.5, seed="a"), TypeError, "seed"),
    (lambda data: data.split(0.5, seed=1.5), TypeError, "seed"),
    (lambda data: data.split(0.5, seed=-1), ValueError, "seed"),
    (lambda data: data.split("0.5"), TypeError, "train_fraction"),
    (lambda data: data.folds(2, seed="a"), TypeError, "seed"),
    (lambda data: data.folds(2, seed=-1), ValueError, "seed"),
    (lambda data: list(data.batches(2, shuffle=True, seed=1.5)), TypeError, "seed"),
    (lambda data: cross_validate(None, data, n_folds=2, seed=None), TypeError, "seed")])
def test_dataset_splits_name_a_bad_seed_or_fraction(call, error, name):
    # before: "SeedSequence expects int or sequence of ints for entropy not a", "'<' not
    # supported between instances of 'float' and 'str'", "expected non-negative integer"
    with pytest.raises(error, match=name):
        call(_tiny_dense_data())


def test_dataset_splits_still_take_numpy_int_seeds_and_batches_a_fresh_one():
    data = _tiny_dense_data()
    assert len(data.split(np.float32(0.5), seed=np.int64(3))[0]) == 2
    assert len(data.folds(2, seed=np.int64(3))) == 2
    assert sorted(k for keys, _, _ in data.batches(3, shuffle=True) for k in keys) == \
        [0, 1, 2, 3]


def test_a_copy_or_pickle_of_a_trained_embedding_leaves_its_kept_patches_behind():
    import copy
    import io

    rng = np.random.default_rng(0)
    data = VolumeDataset(list(rng.random((4, 12, 12, 12), dtype=np.float32)), rng.random(4))
    torch.manual_seed(0)
    model = Regressor(CrossEmbedding(default_encoder(5, 2, width=2, pooled=True),
                                     patch_size=5, n_features=2, rank=2, stride=1,
                                     n_iter_max=1, n_outputs=2, refresh_every=3,
                                     volume_shape=(12, 12, 12)), 2, normalize=False)
    fit(model, data, epochs=1, batch_size=2)
    kept = sum(entry[2].nbytes for entry in model.embedding._indices.values())
    assert kept > 100_000  # the patches of every training volume
    saved = io.BytesIO()
    torch.save(model, saved)
    # before: a checkpoint of the whole model (and every copy.deepcopy of the best epoch's)
    # held every training volume's kept patches, gigabytes for a large dataset
    assert saved.tell() < kept / 2
    duplicate = copy.deepcopy(model)
    assert duplicate.embedding._indices == {} and len(model.embedding._indices) == 4
    with torch.no_grad():
        volumes = [data.volume(k) for k in range(4)]
        assert torch.equal(duplicate(volumes), model(volumes))
    saved.seek(0)
    restored = torch.load(saved, weights_only=False)
    with torch.no_grad():
        assert torch.equal(restored(volumes), model(volumes))


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
