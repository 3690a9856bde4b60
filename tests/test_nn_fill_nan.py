"""VolumeDataset(fill_nan=): masked scans and statistical maps hold NaN outside the brain,
which every read refuses; before, a dataset of such files could not be trained on without
rewriting every file."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from tensorly_cross.errors import NonFiniteValueError  # noqa: E402
from tensorly_cross.nn import CrossEmbedding, VolumeDataset  # noqa: E402

pytestmark = pytest.mark.usefixtures("pytorch_backend")


def _masked_files(tmp_path, count=3, shape=(9, 9, 9), kind="npy"):
    paths, volumes = [], []
    for k in range(count):
        volume = np.random.default_rng(k).uniform(1.0, 2.0, shape).astype(np.float32)
        volume[:2] = np.nan  # the background
        if kind == "npy":
            path = tmp_path / f"map-{k}.npy"
            np.save(path, volume)
        else:
            import nibabel

            path = tmp_path / f"map-{k}.nii.gz"
            nibabel.save(nibabel.Nifti1Image(volume, np.eye(4)), path)
        paths.append(str(path))
        volumes.append(volume)
    return paths, volumes


@pytest.mark.parametrize("kind", ["npy", "nifti"])
@pytest.mark.parametrize("in_memory", [False, True])
def test_nan_voxels_read_as_the_fill_value(tmp_path, in_memory, kind):
    pytest.importorskip("nibabel")
    paths, volumes = _masked_files(tmp_path, kind=kind)
    data = VolumeDataset(paths, [0.0, 1.0, 2.0], in_memory=in_memory, fill_nan=-1.0)
    for k in (0, 2):
        read = data.volume(k)
        whole = (read.numpy() if isinstance(read, torch.Tensor)
                 else np.asarray(read.evaluate(np.indices(read.shape).reshape(3, -1).T))
                 .reshape(read.shape))
        np.testing.assert_array_equal(whole, np.nan_to_num(volumes[k], nan=-1.0))
    # A subset keeps the setting.
    subset = data.subset([2])
    assert subset.fill_nan == -1.0


def test_a_cross_embedding_trains_on_masked_files_only_with_fill_nan(tmp_path):
    paths, _ = _masked_files(tmp_path)
    embedding = CrossEmbedding(patch_size=3, n_features=2, rank=2, n_iter_max=1)
    plain = VolumeDataset(paths, [0.0, 1.0, 2.0])
    with pytest.raises(NonFiniteValueError):
        embedding([plain.volume(0)])
    filled = VolumeDataset(paths, [0.0, 1.0, 2.0], fill_nan=0.0)
    features = embedding([filled.volume(k) for k in range(3)])
    assert torch.isfinite(features).all()


@pytest.mark.parametrize("fill_nan, error", [("0", TypeError), (float("nan"), ValueError)])
def test_a_bad_fill_nan_is_refused_by_name(tmp_path, fill_nan, error):
    paths, _ = _masked_files(tmp_path, count=1)
    with pytest.raises(error, match="fill_nan"):
        VolumeDataset(paths, [0.0], fill_nan=fill_nan)
