"""Audit s32 (review): defects in this session's own fixes, and gaps next to them.

* ``VolumeDataset(in_memory=True)`` and its subsets now share one store of volumes read
  whole (so that k-fold subsets read each file once). A subset pickled (a ``DataLoader``
  worker started by spawn or forkserver, ``copy.deepcopy``) took the whole store with it:
  a test fold of one volume carried every volume any fold had read. A pickled dataset now
  takes the volumes of its own items only.
* ``Regressor.set_target_scale`` (public; its checks are new) failed on integer targets
  (ages in years, class labels 0/1) with torch's "mean(): could not infer output dtype";
  they are read as floats, as ``VolumeDataset`` stores its targets. Complex targets lost
  their imaginary part with a warning; they are refused.
* Once a small tensor was read whole, the driver measured the current and the best states
  over every entry, but kept the best one as such when the current one measured lower: a
  later sweep that merely beat the best was returned, the better TT lost (a TCI of a 7x2x4
  mask: 0.5145 returned where sweep 3 held 0.4851). The lower becomes the best.
"""

import pickle

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from tensorly_cross.nn import CrossEmbedding, VolumeDataset  # noqa: E402
from tensorly_cross.nn.training import Regressor  # noqa: E402


def _dataset_in_memory(tmp_path, count=6, edge=16):
    paths = []
    for k in range(count):
        path = tmp_path / f"sub-{k:02d}.npy"
        np.save(path, np.random.default_rng(k).random((edge,) * 3).astype(np.float32))
        paths.append(str(path))
    return VolumeDataset(paths, np.arange(count, dtype=np.float32), in_memory=True)


def test_a_pickled_subset_takes_the_volumes_of_its_own_items_only(tmp_path):
    data = _dataset_in_memory(tmp_path)
    for k in range(len(data)):
        data.volume(k)  # every volume read whole, into the store the subsets share
    test = data.subset([4])
    copy = pickle.loads(pickle.dumps(test))
    assert list(copy._loaded) == [test.volumes[0]]
    torch.testing.assert_close(copy.volume(0), data.volume(4), rtol=0, atol=0)
    volume_bytes = 16**3 * 4
    assert len(pickle.dumps(test)) < 2 * volume_bytes  # one volume, not six


def test_a_pickled_dataset_still_shares_the_store_among_its_own_copies(tmp_path):
    data = _dataset_in_memory(tmp_path, count=3)
    train, test = data.subset([0, 1]), data.subset([2])
    train.volume(0)
    copy = pickle.loads(pickle.dumps(data))
    assert list(copy._loaded) == [data.volumes[0]]
    assert copy.subset([0])._loaded is copy._loaded  # the copy's subsets share its store
    assert test._loaded is data._loaded  # the original's are untouched


@pytest.mark.parametrize("targets", [np.array([1, 3]), [1, 3], torch.tensor([1, 3])])
def test_set_target_scale_takes_integer_targets(targets):
    model = Regressor(CrossEmbedding(n_outputs=2), 2)
    model.set_target_scale(targets)
    assert model.target_mean.tolist() == [2.0]
    assert model.target_scale.tolist() == pytest.approx([2**0.5])


def test_set_target_scale_refuses_complex_targets():
    model = Regressor(CrossEmbedding(n_outputs=2), 2)
    with pytest.raises(TypeError, match="targets must be real"):
        model.set_target_scale(np.array([1 + 1j, 3.0]))
    assert model.target_mean.tolist() == [0.0]


def _mask_of_seed(seed):
    rng = np.random.default_rng(seed)
    shape = tuple(int(n) for n in rng.integers(2, 9, size=rng.integers(2, 5)))
    return (rng.random(shape) > 0.7).astype(float)


# Before: once a sweep read the last entries of this 3x4x3x8 mask, the best state (sweep 3)
# and the current one (sweep 4) were measured over every entry: the current one was better
# (0.6471 against 0.6536), but only the best one was kept as such, so sweep 5 (0.6517)
# replaced it and was returned, sweep 4's better TT lost.
def test_the_state_measured_better_when_the_tensor_is_read_whole_is_kept_as_the_best():
    import tensorly as tl

    import tensorly_cross as tlc

    dense = _mask_of_seed(152)
    assert dense.shape == (3, 4, 3, 8)
    tt, info = tlc.tt_cross(dense, method="lsq", tol=0.01, val_size=4, max_rank=4,
                            random_state=152, return_info=True)
    assert info.n_evals == dense.size
    exact = info.val_errors[2:]  # sweeps 3 on: the held ones, measured again, and later
    assert info.val_error == min(exact)
    approx = tl.to_numpy(tl.tt_to_tensor(tt))
    true = np.linalg.norm(approx - dense) / np.linalg.norm(dense)
    assert abs(info.val_error - true) <= 1e-12
