"""VolumeDataset: volumes by path in every supported format, read lazily, with targets;
splits and folds; the MNI152-derived task."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from tensorly_cross.lazy.base import LazyTensor  # noqa: E402
from tensorly_cross.nn import VolumeDataset  # noqa: E402


def _volume(seed, shape=(6, 5, 4)):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _write(tmp_path, kind, array, name="v"):
    if kind == "npy":
        path = tmp_path / f"{name}.npy"
        np.save(path, array)
    elif kind == "zarr":
        import zarr

        path = tmp_path / f"{name}.zarr"
        zarr.create_array(path, shape=array.shape, chunks=(3, 3, 3), dtype="f4")[:] = array
    elif kind == "h5":
        import h5py

        path = tmp_path / f"{name}.h5"
        with h5py.File(path, "w") as handle:
            handle["volume"] = array
    else:
        import nibabel

        path = tmp_path / f"{name}.nii.gz"
        nibabel.save(nibabel.Nifti1Image(array, np.eye(4)), path)
    return path


@pytest.mark.parametrize("kind", ["npy", "zarr", "h5", "nifti"])
def test_items_read_lazily_hold_the_volume_and_its_target(tmp_path, kind):
    arrays = [_volume(0), _volume(1)]
    paths = [_write(tmp_path, kind, array, f"v{k}") for k, array in enumerate(arrays)]
    data = VolumeDataset(paths, [0.25, 0.75])
    volume, target = data[1]
    assert isinstance(volume, LazyTensor) and volume.shape == arrays[1].shape
    indices = np.array([[0, 0, 0], [5, 4, 3], [2, 1, 3]])
    np.testing.assert_allclose(np.asarray(volume.evaluate(indices)), arrays[1][tuple(indices.T)],
                               rtol=1e-6)
    assert float(target) == 0.75
    whole = VolumeDataset(paths, [0.25, 0.75], in_memory=True).volume(0)
    assert isinstance(whole, torch.Tensor)
    np.testing.assert_array_equal(whole.numpy(), arrays[0])


@pytest.mark.parametrize("kind", ["npy", "zarr", "h5", "nifti"])
def test_items_pickle_for_dataloader_workers(tmp_path, kind):
    # A DataLoader with workers pickles every item: a chunk cache's lock did not pickle
    # (the workers raised, the main process waited forever).
    import pickle

    array = _volume(3)
    data = VolumeDataset([_write(tmp_path, kind, array)], [0.5])
    volume, _ = data[0]
    volume.evaluate(np.zeros((1, 3), dtype=np.int64))  # a chunk or page in its cache
    copy = pickle.loads(pickle.dumps(volume))
    indices = np.array([[0, 0, 0], [5, 4, 3], [2, 1, 3]])
    np.testing.assert_allclose(np.asarray(copy.evaluate(indices)), array[tuple(indices.T)],
                               rtol=1e-6)


def test_a_nifti_volume_with_a_trailing_axis_of_one_is_three_dimensional(tmp_path):
    array = _volume(0)
    path = _write(tmp_path, "nifti", array[..., None])
    volume = VolumeDataset([path], [1.0]).volume(0)
    assert volume.shape == array.shape
    np.testing.assert_allclose(np.asarray(volume.evaluate(np.array([[5, 4, 3]]))),
                               [array[5, 4, 3]], rtol=1e-6)
    assert VolumeDataset([path], [1.0], in_memory=True).volume(0).shape == array.shape


def test_folds_cover_every_item_once_and_splits_are_disjoint():
    data = VolumeDataset([_volume(k) for k in range(7)], np.arange(7.0))
    tested = np.concatenate([test.targets.numpy() for _, test in data.folds(3, seed=1)])
    assert sorted(tested.tolist()) == list(range(7))
    for train, test in data.folds(3, seed=1):
        assert not set(train.targets.tolist()) & set(test.targets.tolist())
    train, test = data.split(0.7, seed=0)
    assert len(train) == 5 and len(test) == 2
    assert sorted(train.targets.tolist() + test.targets.tolist()) == list(range(7))


def test_batches_carry_dataset_positions_as_keys():
    data = VolumeDataset([_volume(k) for k in range(5)], np.arange(5.0))
    seen = []
    for keys, volumes, targets in data.batches(2, shuffle=True, seed=0):
        assert targets.tolist() == [float(k) for k in keys] and len(volumes) == len(keys)
        seen += keys
    assert sorted(seen) == list(range(5))


def test_bad_input_is_reported_by_name(tmp_path):
    with pytest.raises(ValueError, match="targets"):
        VolumeDataset([_volume(0)], [1.0, 2.0])
    with pytest.raises(ValueError, match=r"targets\[1\]"):
        VolumeDataset([_volume(0), _volume(1)], [1.0, np.nan])
    with pytest.raises(FileNotFoundError, match="missing.npy"):
        VolumeDataset([tmp_path / "missing.npy"], [1.0])
    (tmp_path / "volume.txt").write_text("")
    with pytest.raises(ValueError, match="suffix"):
        VolumeDataset([tmp_path / "volume.txt"], [1.0])
    with pytest.raises(ValueError, match="3-D"):
        VolumeDataset([np.zeros((2, 3))], [1.0]).volume(0)
    four_d = tmp_path / "rgb.npy"
    np.save(four_d, np.zeros((4, 4, 4, 3), dtype=np.float32))
    with pytest.raises(ValueError, match=r"item 1 \(.*rgb\.npy'\): volumes must be 3-D"):
        VolumeDataset([_volume(0), four_d], [1.0, 2.0])[1]
    data = VolumeDataset([_volume(0), _volume(1)], [1.0, 2.0])
    with pytest.raises(ValueError, match="n_folds"):
        data.folds(3)
    with pytest.raises(ValueError, match="train_fraction"):
        data.split(1.0)
    with pytest.raises(ValueError, match="batch_size"):
        next(data.batches(0))


def test_mni152_crops_are_reproducible_and_cached_on_disk(tmp_path):
    pytest.importorskip("nilearn")
    from tensorly_cross.nn import mni152_crops

    first = mni152_crops(3, 12, seed=4, directory=tmp_path)
    again = mni152_crops(3, 12, seed=4, directory=tmp_path)
    memory = mni152_crops(3, 12, seed=4)
    assert first.volumes == again.volumes
    torch.testing.assert_close(first.targets, memory.targets)
    np.testing.assert_array_equal(np.load(first.volumes[2]), memory.volume(2))
    assert ((memory.targets > 0) & (memory.targets < 1)).all()
    other = mni152_crops(3, 12, seed=5)
    assert not torch.equal(other.targets, memory.targets)
    with pytest.raises(ValueError, match="size"):
        mni152_crops(3, 0)


def test_mni152_crops_write_through_unique_temporary_files(tmp_path):
    """The cache was written through fixed names (crop_000.npy.tmp.npy, targets.json.tmp):
    two processes filling one folder wrote into each other's file, and a leftover at such
    a name (here a folder) made every later run fail. Now the names are unique."""
    pytest.importorskip("nilearn")
    from tensorly_cross.nn import mni152_crops

    (tmp_path / "crop_000.npy.tmp.npy").mkdir()
    (tmp_path / "targets.json.tmp").mkdir()
    cached = mni152_crops(2, 12, seed=4, directory=tmp_path)
    np.testing.assert_array_equal(np.load(cached.volumes[0]),
                                  mni152_crops(2, 12, seed=4).volume(0))
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tensorly-cross-")]


def test_a_volume_read_whole_is_read_once_and_shared_with_subsets(tmp_path):
    arrays = [_volume(0), _volume(1), _volume(2)]
    paths = [_write(tmp_path, "npy", array, f"v{k}") for k, array in enumerate(arrays)]
    data = VolumeDataset(paths, [0.0, 1.0, 2.0], in_memory=True)
    first = data.volume(2)
    subset = data.subset([2, 0])
    paths[2].unlink()  # a second read would now fail
    assert data.volume(2) is first
    assert subset.volume(0) is first
    np.testing.assert_array_equal(subset.volume(1).numpy(), arrays[0])


def test_a_bytes_path_is_read_like_a_str_path(tmp_path):
    path = tmp_path / "v.npy"
    np.save(path, _volume(4))
    volume, _ = VolumeDataset([bytes(path)], [0.5])[0]
    np.testing.assert_allclose(np.asarray(volume.evaluate(np.zeros((1, 3), dtype=np.int64))),
                               _volume(4)[:1, :1, :1].ravel())
