"""Audit (session 30) of the torch path: datasets given bad arguments.

* ``mni152_crops(..., directory=d)`` where ``d/targets.json`` is not a manifest it wrote (a
  JSON list, or no JSON at all) crashed with a bare ``AttributeError`` (``'list' object has
  no attribute 'get'``) or ``JSONDecodeError``, naming neither the file nor the directory.
* ``VolumeDataset(..., in_memory="no")`` read every volume whole (``bool("no")`` is True),
  and a bad ``cache_bytes`` (a str, a negative number) was accepted, to fail only when a
  volume was first read (an in-memory volume never: it was silently ignored).
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from tensorly_cross.nn import VolumeDataset, mni152_crops  # noqa: E402


@pytest.mark.parametrize("content", ["[1, 2]", "{not json", '"crops"'],
                         ids=["list", "not-json", "string"])
def test_a_targets_file_that_is_not_a_manifest_is_refused_by_name(tmp_path, content):
    path = tmp_path / "targets.json"
    path.write_text(content)
    with pytest.raises(ValueError, match="targets.json.*not a manifest"):
        mni152_crops(1, 4, directory=tmp_path)
    assert path.read_text() == content  # the file is left as it was


@pytest.mark.parametrize("in_memory", ["no", 0.0, None])
def test_in_memory_must_be_a_bool(tmp_path, in_memory):
    path = tmp_path / "v.npy"
    np.save(path, np.zeros((3, 3, 3), dtype=np.float32))
    with pytest.raises(TypeError, match="in_memory must be True or False"):
        VolumeDataset([str(path)], [0.0], in_memory=in_memory)


@pytest.mark.parametrize("cache_bytes, error", [("big", TypeError), (-1, ValueError),
                                                (1.5, TypeError)])
def test_cache_bytes_is_checked_when_the_dataset_is_made(cache_bytes, error):
    with pytest.raises(error, match="cache_bytes"):
        VolumeDataset([np.zeros((3, 3, 3))], [0.0], cache_bytes=cache_bytes)


@pytest.mark.parametrize("shuffle", ["no", 1, None])
def test_batches_shuffle_must_be_a_bool(shuffle):
    # "no" is truthy: the items came back shuffled
    data = VolumeDataset([np.zeros((3, 3, 3))] * 4, [0.0, 1.0, 2.0, 3.0])
    with pytest.raises(TypeError, match="shuffle must be True or False"):
        next(data.batches(2, shuffle=shuffle))


@pytest.mark.parametrize("volumes", [None, 5])
def test_volumes_that_are_not_a_sequence_are_refused_by_name(volumes):
    # list(None) raised "'NoneType' object is not iterable", naming no argument
    with pytest.raises(TypeError, match="volumes must be a sequence"):
        VolumeDataset(volumes, [0.0])
