"""Audit s20: a NIfTI file rewritten while it is read, on real files.

Each test failed before its fix.
"""

import os
import pickle

import numpy as np
import pytest

import tensorly_cross as tlc
from tensorly_cross.lazy.sources import ChunkReadError

nibabel = pytest.importorskip("nibabel")


def _write_nifti(path, data):
    nibabel.save(nibabel.Nifti1Image(data, np.eye(4)), path)


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_a_nifti_replaced_after_opening_raises_instead_of_mixing_versions(tmp_path, suffix):
    path = str(tmp_path / f"v{suffix}")
    _write_nifti(path, np.ones((6, 5, 4), dtype=np.float32))
    volume = tlc.open_volume(path)
    other = str(tmp_path / f"other{suffix}")
    _write_nifti(other, np.zeros((6, 5, 4), dtype=np.float32))
    os.replace(other, path)
    with pytest.raises(ChunkReadError, match="changed after it was opened"):
        volume.evaluate(np.array([[0, 0, 0]]))


def test_a_nifti_source_sent_to_a_worker_checks_the_file_it_reopens(tmp_path):
    path = str(tmp_path / "v.nii")
    _write_nifti(path, np.arange(120, dtype=np.float32).reshape(6, 5, 4))
    source = tlc.open_volume(path).source
    on_worker = pickle.loads(pickle.dumps(source))
    assert np.array_equal(on_worker.read((slice(0, 2), slice(0, 5), slice(0, 4))),
                          np.arange(40, dtype=np.float32).reshape(2, 5, 4))
    with open(path, "r+b") as handle:  # rewritten in place: same inode, new contents
        handle.seek(-4, os.SEEK_END)
        handle.write(np.float32(-1).tobytes())
    os.utime(path, ns=(0, 0))
    with pytest.raises(ChunkReadError, match="changed after it was opened"):
        on_worker.read((slice(0, 2), slice(0, 5), slice(0, 4)))


def test_an_unchanged_nifti_reads_as_written(tmp_path):
    path = str(tmp_path / "v.nii.gz")
    data = np.random.default_rng(0).random((6, 5, 4)).astype(np.float32)
    _write_nifti(path, data)
    volume = tlc.open_volume(path)
    indices = np.array([[0, 0, 0], [5, 4, 3], [2, 1, 3]])
    assert np.array_equal(np.asarray(volume.evaluate(indices)), data[tuple(indices.T)])
