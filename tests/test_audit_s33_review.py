"""Audit s33 (review): the session's performance and checkpoint edits, at their edges: a
key table lookup that must find what the two-level search found, and checkpoint paths
that name a folder or come as bytes."""

import os

import numpy as np
import pytest

import tensorly_cross as tlc
from tensorly_cross import CheckpointError
from tensorly_cross.lazy.cache import _KEY_SENTINEL, SortedKeys

SHAPE = (6, 6, 6)


def _function(indices):
    x = 1.0 + indices / 5.0
    return 1.0 / x.sum(axis=1)


def test_a_key_equal_to_the_sentinel_in_the_small_level_is_found():
    # The sentinel (int64's largest) closes each level; a hashed key may equal it. The
    # main level's search stops on the sentinel and read it as a hit of slot -1, and the
    # small level, searched for the main's misses only, was not searched for that key:
    # found before the lookup searched the small level for the misses alone, a miss after
    # it (evaluated again, stored twice).
    keys = SortedKeys()
    keys.insert(np.array([3, 7, 11], dtype=np.int64), np.array([0, 1, 2]))
    keys.insert(np.array([5, _KEY_SENTINEL], dtype=np.int64), np.array([3, 4]))
    assert len(keys.levels) == 2
    found = keys.lookup(np.array([_KEY_SENTINEL, 5, 7, 8], dtype=np.int64))
    np.testing.assert_array_equal(found, [4, 3, 1, -1])


@pytest.mark.parametrize("tail", [".", ".."])
def test_a_checkpoint_path_ending_in_a_dot_component_is_refused_as_a_folder(tmp_path, tail):
    # "runs/." names the folder runs, as "runs/" does (refused): with runs missing, a FILE
    # "runs" was created for the checkpoint ("runs/."), or the message said "a FIFO,
    # socket or device" for the folder above it ("runs/..").
    with pytest.raises(CheckpointError, match="folder") as refused:
        tlc.tt_cross(_function, shape=SHAPE, random_state=0,
                     checkpoint=os.path.join(tmp_path / "runs", tail))
    assert "FIFO" not in str(refused.value)
    assert not (tmp_path / "runs").exists()


class BytesPath:
    """An os.PathLike whose path is bytes (as os.scandir(b"...") entries are)."""

    def __init__(self, path):
        self.path = os.fsencode(path)

    def __fspath__(self):
        return self.path


def test_a_checkpoint_path_like_of_bytes_is_used_as_its_path(tmp_path):
    # The docs take any os.PathLike; one of bytes failed with "a bytes-like object is
    # required, not 'str'" (the NUL check), before it "Can't mix strings and bytes".
    path = tmp_path / "run.ckpt"
    first = tlc.tt_cross(_function, shape=SHAPE, random_state=0, checkpoint=BytesPath(path))
    assert path.exists()
    counted = []

    def counting(indices):
        counted.append(len(indices))
        return _function(indices)

    second, info = tlc.tt_cross(counting, shape=SHAPE, random_state=0,
                                checkpoint=BytesPath(path), return_info=True)
    assert not counted and info.n_restored == info.n_evals > 0
    for a, b in zip(first.factors, second.factors, strict=True):
        np.testing.assert_array_equal(a, b)
