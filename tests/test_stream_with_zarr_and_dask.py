"""Tests of the streaming TT-SVD: sketches, blocks, tolerances and its messages (needing zarr and
dask)."""

import numpy as np
import pytest

import tensorly_cross as tlc
from tensorly_cross.cost import _Geometry, cross_share

from .test_dask import loopback_cluster

zarr = pytest.importorskip("zarr")


def test_a_computed_dask_array_is_costed_by_its_chunks_as_when_opened():
    dask_array = pytest.importorskip("dask.array")
    values = np.random.default_rng(0).standard_normal((64, 64, 64))
    computed = dask_array.from_array(values, chunks=16) + 0
    raw, opened = tlc.choose_path(computed), tlc.choose_path(tlc.open_volume(computed))
    assert (raw.method, raw.cross_share) == (opened.method, opened.cross_share)
    assert raw.method == "stream"  # 64 chunks: a cross decodes them all


def test_the_held_out_entries_count_in_the_share_a_cross_reads(tmp_path):
    # A 64^3 store of 4x4x1 chunks at rank 2: estimated 24% ("lsq") without the 4000
    # held-out entries; the cross then decoded 30% of the chunks.
    geometry = _Geometry((64, 64, 64), (4, 4, 1))
    assert cross_share(geometry, 2, 1.5, heldout=0) < 0.25 < cross_share(geometry, 2, 1.5)
    path = str(tmp_path / "v.zarr")
    array = zarr.create_array(path, shape=(64, 64, 64), chunks=(4, 4, 1), dtype="f8")
    array[:] = 1.0
    assert tlc.choose_path(path, rank=2).method == "stream"


def test_a_gzip_nifti_opened_first_is_still_streamed(tmp_path):
    nibabel = pytest.importorskip("nibabel")
    path = str(tmp_path / "v.nii.gz")
    nibabel.save(nibabel.Nifti1Image(np.ones((8, 8, 8), dtype=np.float32), np.eye(4)), path)
    for volume in (tlc.open_volume(path), tlc.TransposedTensor(tlc.open_volume(path),
                                                                (0, 2, 1))):
        choice = tlc.choose_path(volume)
        assert choice.method == "stream" and "gzip" in choice.reason


def test_a_volume_opened_on_a_cluster_is_streamed_there(tmp_path):
    distributed = pytest.importorskip("distributed")
    path = str(tmp_path / "v.zarr")
    array = zarr.create_array(path, shape=(40, 36, 44), chunks=(7, 9, 11), dtype="f8")
    array[:] = np.random.default_rng(0).random((40, 36, 44))
    with loopback_cluster() as cluster, distributed.Client(cluster) as client:
        volume = tlc.open_volume(path, client=client)
        with distributed.get_task_stream(client) as tasks:
            here = tlc.streaming_tt_svd(tlc.TransposedTensor(volume, (0, 2, 1)), tol=0.05,
                                        max_width=8, random_state=0, block_bytes=20000)
        assert len(tasks.data) > 0  # 0: every block was read in this process
    alone = tlc.streaming_tt_svd(tlc.TransposedTensor(tlc.open_volume(path), (0, 2, 1)),
                                 tol=0.05, max_width=8, random_state=0, block_bytes=20000)
    assert np.allclose(tlc.tt_entries(here, [[1, 2, 3]]), tlc.tt_entries(alone, [[1, 2, 3]]))


def test_a_closed_client_is_refused_with_the_documented_value_error(tmp_path):
    distributed = pytest.importorskip("distributed")
    with loopback_cluster() as cluster:
        client = distributed.Client(cluster)
        client.close()
    with pytest.raises(ValueError, match="has no workers"):
        tlc.streaming_tt_svd(np.ones((4, 4, 4)), tol=0.1, client=client)


@pytest.mark.parametrize("shape", [(8, 2000), (3, 4, 200), (2, 3, 500)])
def test_a_tall_volume_within_the_budget_is_read_once(shape):
    volume = np.random.default_rng(0).random(shape)
    _, info = tlc.streaming_tt_svd(volume, tol=1e-3, random_state=0, return_info=True)
    assert info.n_passes == 1 and info.widths == shape
