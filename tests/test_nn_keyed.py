"""Keyed reuse: kept patches serve a later pass only while the volume under the key is the
same (by content for volumes in memory, by file for volumes on disk), cached features only
while the encoder is, and caches made under inference mode still serve training."""

import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import tensorly_cross as tlc  # noqa: E402
from tensorly_cross.lazy.base import LazyTensor  # noqa: E402
from tensorly_cross.nn import EncodedTensor, default_encoder  # noqa: E402
from tensorly_cross.nn.keyed import volume_fingerprint  # noqa: E402

from .nn_helpers import small_embedding  # noqa: E402

pytestmark = pytest.mark.usefixtures("pytorch_backend")


def _embedding(**options):
    return small_embedding(**dict(dict(n_iter_max=2), **options))


def _fresh_features(volume):
    with torch.no_grad():
        return _embedding()([volume])


def test_an_array_edited_in_place_under_a_key_is_cut_afresh():
    volume = np.random.default_rng(0).random((8, 8, 8)).astype(np.float32)
    model = _embedding()
    with torch.no_grad():
        model([volume], keys=[0])
        volume *= 3.0
        volume += 1.0
        torch.testing.assert_close(model([volume], keys=[0]), _fresh_features(volume))


def test_a_new_array_per_step_under_one_key_is_its_own_volume():
    # An augmentation makes a new array every step; freed, its id is often reused at once:
    # the first volume's patches were taken for every later one before.
    model = _embedding()
    for step in range(4):
        volume = np.random.default_rng(step).random((8, 8, 8)).astype(np.float32)
        with torch.no_grad():
            torch.testing.assert_close(model([volume], keys=[0]), _fresh_features(volume))
        del volume


@pytest.mark.parametrize("change", ["through numpy", "new tensor"])
def test_a_tensor_changed_between_sampled_voxels_is_cut_afresh(change):
    # Voxels at odd positions only: a strided subsample of the volume never looked there.
    array = np.random.default_rng(1).random((24, 24, 24)).astype(np.float32)
    volume = torch.from_numpy(array)
    model = _embedding()
    with torch.no_grad():
        model([volume], keys=[0])
        if change == "through numpy":  # no in-place version bump on the tensor
            array[1::2, 1::2, 1::2] += 5.0
        else:  # a masking augmentation: a new tensor, at version 0
            mask = torch.zeros(24, 24, 24, dtype=torch.bool)
            mask[1::2, 1::2, 1::2] = True
            volume = torch.where(mask, torch.zeros(()), volume)
        torch.testing.assert_close(model([volume], keys=[0]), _fresh_features(volume))


def test_a_file_rewritten_with_its_old_modification_time_is_another_volume(tmp_path):
    path = tmp_path / "v.npy"
    np.save(path, np.zeros((4, 4, 4), dtype=np.float32))
    before = volume_fingerprint(tlc.open_volume(str(path)))
    stamp = os.stat(path).st_mtime_ns
    np.save(path, np.zeros((4, 4, 4), dtype=np.float64))  # same shape, twice the bytes
    os.utime(path, ns=(stamp, stamp))
    assert volume_fingerprint(tlc.open_volume(str(path))) != before


def _memmap(tmp_path, mode="r"):
    path = tmp_path / "v.npy"
    if not path.exists():
        np.save(path, np.random.default_rng(2).random((12, 12, 12)).astype(np.float32))
    return np.load(path, mmap_mode=mode)


@pytest.mark.parametrize("view", ["crop", "flip"])
def test_a_view_of_a_memmap_under_a_key_is_cut_from_itself(tmp_path, view):
    # Views of one memmap share its file and shape: the first view's patches served all.
    volume = _memmap(tmp_path)
    if view == "crop":
        first, second = volume[0:8, 0:8, 0:8], volume[4:12, 4:12, 4:12]
    else:
        first, second = volume, np.flip(volume, axis=0)
    model = _embedding()
    with torch.no_grad():
        model([first], keys=[0])
        torch.testing.assert_close(model([second], keys=[0]),
                                   _fresh_features(np.array(second)))


@pytest.mark.parametrize("mode", ["c", "r+"])
def test_a_writable_memmap_edited_in_place_under_a_key_is_cut_afresh(tmp_path, mode):
    # Mode "c" never writes the file; a second "r+" edit leaves its modification time.
    volume = _memmap(tmp_path, mode)
    model = _embedding()
    with torch.no_grad():
        model([volume], keys=[0])
        volume *= 3.0
        model([volume], keys=[0])
        volume *= 2.0
        torch.testing.assert_close(model([volume], keys=[0]),
                                   _fresh_features(np.array(volume)))


def test_a_read_only_memmap_is_fingerprinted_by_its_file_not_its_voxels(tmp_path):
    first, again = _memmap(tmp_path), _memmap(tmp_path)
    assert volume_fingerprint(first) == volume_fingerprint(again)
    assert volume_fingerprint(first)[2] == os.fspath(tmp_path / "v.npy")
    assert volume_fingerprint(first[1:]) != volume_fingerprint(first[:-1])


class _Lazy(LazyTensor):
    def __init__(self, values):
        super().__init__(values.shape)
        self.values = values

    def _evaluate(self, indices):
        return self.values[tuple(indices.T)]


def test_a_lazy_volume_without_a_path_matches_only_itself():
    values = torch.rand(4, 4, 4)
    first = _Lazy(values)
    fingerprint = volume_fingerprint(first)
    assert volume_fingerprint(first) == fingerprint
    assert volume_fingerprint(_Lazy(values)) != fingerprint  # another object
    del first  # the fingerprint keeps it alive: no new object can take over its id
    assert fingerprint[-1].value.shape == (4, 4, 4)


def test_cached_features_follow_an_edit_through_data():
    # weight.data.mul_ bumps no version counter: the cached features outlived it before.
    torch.manual_seed(0)
    encoder = default_encoder(3, 2)
    lazy = EncodedTensor(torch.rand(6, 6, 6), encoder, 3, 2)
    positions = np.array([[1, 2, 3]])
    with torch.no_grad():
        lazy.features(positions)
        encoder[0].weight.data.mul_(2.0)
        torch.testing.assert_close(lazy.features(positions),
                                   encoder(lazy.patches.patches(positions)))
        encoder[0].bias.data.copy_(torch.randn(8))
        torch.testing.assert_close(lazy.features(positions),
                                   encoder(lazy.patches.patches(positions)))


def test_keyed_caches_made_under_inference_mode_serve_training():
    model = _embedding(refresh_every=3)
    volumes = torch.rand(2, 1, 8, 8, 8)
    with torch.inference_mode():
        expected = model(volumes, keys=[0, 1])
    features = model(volumes, keys=[0, 1])  # indices and patches kept, head built above
    features.sum().backward()
    torch.testing.assert_close(features.detach(), expected.clone())
    assert model.encoder[0].weight.grad is not None


def test_a_pca_head_fitted_under_inference_mode_serves_training():
    model = _embedding(head="pca", n_outputs=2)
    volumes = torch.rand(3, 1, 8, 8, 8)
    with torch.inference_mode():
        model.fit_pca(list(volumes))
    model(volumes[:2]).sum().backward()
    assert model.encoder[0].weight.grad is not None


def test_a_key_held_twice_in_one_batch_is_refused():
    model = _embedding(refresh_every=5)
    volumes = [torch.rand(8, 8, 8), torch.rand(8, 8, 8)]
    with pytest.raises(ValueError, match="keys holds 0 twice"):
        model(volumes, keys=[0, 0])
    model(volumes, keys=[None, None])  # unkept volumes need no distinct keys
