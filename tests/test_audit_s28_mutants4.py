"""Mutation audit 28 (4) of the nn module: tests that kill hand-made mutants of
``tensorly_cross/nn/encoded.py`` and ``keyed.py`` that the earlier tests let through.

Each test names the mutant it kills; each asserts documented behaviour (docstrings).
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
tl = pytest.importorskip("tensorly")

from tensorly_cross.nn import EncodedTensor, default_encoder  # noqa: E402
from tensorly_cross.nn.keyed import key_value, volume_fingerprint  # noqa: E402

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
