"""Audit s26 of the nn module, played as a researcher training on their own volumes (NIfTI,
.npy, zarr files of several dtypes): a boolean mask given to ``VolumeDataset.subset`` was
read as the indices 0 and 1, ``cross_validate`` trained every fold's model on from the
last fold's weights when ``build_model`` reused one encoder (each test fold had been
trained on), and a volume of another shape in a shuffled batch was named only by its
place in that batch. Each test failed before its fix."""

import numpy as np
import pytest
import tensorly as tl

torch = pytest.importorskip("torch")

from tensorly_cross.nn import CrossEmbedding, VolumeDataset, default_encoder  # noqa: E402
from tensorly_cross.nn.training import Regressor, cross_validate, fit  # noqa: E402

pytestmark = pytest.mark.usefixtures("pytorch_backend")


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
