"""The read-everything path: streaming_tt_svd on arrays and files, locally and on a cluster."""

import os
import warnings

import numpy as np
import pytest
import tensorly as tl
from hypothesis import given
from hypothesis import strategies as st

import tensorly_cross as tlc
from tensorly_cross.stream import streaming_tt_svd
from tensorly_cross.stream.blocks import plan_blocks, volume_source

from .strategies import random_tt_cores, seeds
from .test_dask import loopback_cluster

zarr = pytest.importorskip("zarr")
h5py = pytest.importorskip("h5py")


def _noisy_low_rank(shape, rank, seed, noise=0.05):
    cores = random_tt_cores(shape, (1, rank, rank, 1), seed)
    dense = np.asarray(tl.tt_to_tensor([tl.tensor(c) for c in cores]))
    rng = np.random.default_rng(seed)
    return dense + noise * np.linalg.norm(dense) / np.sqrt(dense.size) * \
        rng.standard_normal(shape)


def _relative_error(tt, dense):
    return float(np.linalg.norm(np.asarray(tt.to_tensor()) - dense) / np.linalg.norm(dense))


@given(shape=st.tuples(*[st.integers(3, 12)] * 3), rank=st.integers(1, 3), seed=seeds)
def test_an_exact_low_rank_volume_is_recovered(shape, rank, seed):
    cores = random_tt_cores(shape, [1, min(rank, shape[0]), min(rank, shape[2]), 1], seed)
    dense = np.asarray(tl.tt_to_tensor([tl.tensor(c) for c in cores]))
    tt, info = streaming_tt_svd(dense, tol=1e-9, random_state=seed, return_info=True)
    assert _relative_error(tt, dense) < 1e-8
    # The reported error is a difference of squared norms: it resolves down to about the
    # square root of round-off (StreamInfo.error), and read 1.35e-8 once (a flaky < 1e-8).
    assert info.error < 1e-7


@pytest.mark.parametrize("tol", [0.1, 0.3])
def test_the_reported_error_is_the_true_error_and_meets_tol(tol):
    dense = _noisy_low_rank((20, 18, 16), 4, 0, noise=0.05)
    tt, info = streaming_tt_svd(dense, tol=tol, max_width=12, return_info=True)
    assert info.error <= tol
    np.testing.assert_allclose(info.error, _relative_error(tt, dense), rtol=1e-6)
    assert info.n_passes == 2


def test_a_tolerance_the_sketches_cannot_reach_is_reported():
    dense = _noisy_low_rank((20, 18, 16), 4, 0, noise=0.5)
    with pytest.warns(UserWarning, match="max_width"):
        tt, info = streaming_tt_svd(dense, tol=0.05, max_width=6, return_info=True)
    assert info.error > 0.05
    np.testing.assert_allclose(info.error, _relative_error(tt, dense), rtol=1e-6)


def test_uncompressed_modes_give_tensorlys_tt_svd_at_the_same_rank():
    dense = _noisy_low_rank((15, 14, 13), 3, 1)
    tt = streaming_tt_svd(dense, rank=[1, 3, 3, 1])
    reference = tl.decomposition.tensor_train(tl.tensor(dense), [1, 3, 3, 1])
    np.testing.assert_allclose(_relative_error(tt, dense), _relative_error(reference, dense),
                               rtol=1e-8)


def test_a_fixed_rank_gives_that_rank():
    dense = _noisy_low_rank((20, 18, 16), 4, 2)
    tt = streaming_tt_svd(dense, rank=3)
    assert tt.rank == (1, 3, 3, 1)


@pytest.fixture
def files(tmp_path):
    dense = _noisy_low_rank((24, 20, 18), 3, 3)
    paths = {"zarr": str(tmp_path / "v.zarr"), "hdf5": str(tmp_path / "v.h5"),
             "npy": str(tmp_path / "v.npy")}
    array = zarr.create_array(paths["zarr"], shape=dense.shape, chunks=(8, 8, 8), dtype="f8")
    array[:] = dense
    with h5py.File(paths["hdf5"], "w") as handle:
        handle.create_dataset("volume", data=dense, chunks=(5, 7, 6))
    np.save(paths["npy"], dense)
    paths["NPY"] = str(tmp_path / "UPPER.NPY")  # open_volume takes any case: so must this
    with open(paths["NPY"], "wb") as stream:  # np.save would append ".npy" to the name
        np.save(stream, dense)
    return dense, paths


def test_files_read_in_small_blocks_give_the_in_memory_result(files):
    dense, paths = files
    expected = streaming_tt_svd(dense, tol=0.1, max_width=10, random_state=0)
    for path in [*paths.values(), *(tlc.open_volume(path) for path in paths.values())]:
        tt = streaming_tt_svd(path, tol=0.1, max_width=10, random_state=0, block_bytes=4096)
        np.testing.assert_allclose(np.asarray(tt.to_tensor()), np.asarray(expected.to_tensor()),
                                   atol=1e-9)


def test_blocks_cover_the_volume_once_and_follow_the_chunks(files):
    _, paths = files
    source = volume_source(paths["zarr"])
    blocks = plan_blocks(source, block_bytes=8 * 8 * 8 * 20 * 8)
    covered = np.zeros(source.shape, dtype=int)
    for block in blocks:
        covered[block] += 1
        assert all(s.start % 8 == 0 for s in block)
    assert (covered == 1).all()


def test_a_dask_cluster_gives_the_local_result(files):
    distributed = pytest.importorskip("distributed")
    dense, paths = files
    local = streaming_tt_svd(paths["zarr"], tol=0.1, max_width=10, random_state=0,
                             block_bytes=8192)
    with loopback_cluster() as cluster, distributed.Client(cluster) as client:
        for path in (paths["zarr"], paths["hdf5"], paths["npy"]):
            remote = streaming_tt_svd(path, tol=0.1, max_width=10, random_state=0,
                                      block_bytes=8192, client=client)
            np.testing.assert_allclose(np.asarray(remote.to_tensor()),
                                       np.asarray(local.to_tensor()), atol=1e-9)


def test_tol_and_rank_together_are_refused():
    with pytest.raises(ValueError, match="tol or rank"):
        streaming_tt_svd(np.ones((3, 3, 3)), tol=0.1, rank=2)


def test_a_nan_voxel_is_reported_with_its_multi_index(files):
    from tensorly_cross import NonFiniteValueError

    dense, _ = files
    broken = dense.copy()
    broken[17, 3, 9] = np.nan
    with pytest.raises(NonFiniteValueError, match=r"\(17, 3, 9\)") as caught:
        streaming_tt_svd(broken, tol=0.1, block_bytes=4096)
    assert caught.value.index == (17, 3, 9)


def test_max_rank_caps_a_tolerance_driven_run_and_says_so():
    dense = _noisy_low_rank((20, 18, 16), 4, 0, noise=0.05)
    with pytest.warns(UserWarning, match="max_rank"):
        tt, info = streaming_tt_svd(dense, tol=1e-3, max_rank=2, return_info=True)
    assert max(tt.rank) == 2 and info.limited_by == "max_rank" and info.error > 1e-3


@pytest.mark.parametrize("options", [dict(rank=1), dict(tol=1e-3, max_width=2)])
def test_a_vector_is_its_own_one_core_tt(options):
    vector = np.sin(np.arange(50.0))  # crashed with AttributeError in the sketch before
    tt, info = streaming_tt_svd(vector, return_info=True, **options)
    np.testing.assert_array_equal(np.asarray(tt.to_tensor()), vector)
    assert info.error == 0.0


def test_a_npy_path_is_read_in_blocks_of_block_bytes_and_a_fifo_refused(files, tmp_path):
    dense, paths = files  # 24 x 20 x 18 float64: 2880 bytes per slab of the first axis
    _, info = streaming_tt_svd(paths["npy"], rank=3, block_bytes=9000, return_info=True)
    assert info.n_blocks == 8  # 3 slabs each (one 32 MiB block before: the bound ignored)
    fifo = tmp_path / "pipe.npy"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match="not a regular file"):  # it blocked forever
        streaming_tt_svd(fifo, rank=2)


def test_without_sched_getaffinity_the_local_pool_uses_cpu_count(files, monkeypatch):
    dense, _ = files  # macOS has no os.sched_getaffinity
    expected = streaming_tt_svd(dense, rank=3, random_state=0)
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)
    got = streaming_tt_svd(dense, rank=3, random_state=0, block_bytes=4096)
    np.testing.assert_allclose(np.asarray(got.to_tensor()), np.asarray(expected.to_tensor()),
                               atol=1e-9)


def test_a_lowered_fixed_rank_and_unknown_chunks_are_said():
    dask_array = pytest.importorskip("dask.array")
    volume = np.random.default_rng(0).standard_normal((17, 13, 11))
    with pytest.warns(UserWarning, match=r"rank \(1, 5, 5, 1\) was asked for"):
        streaming_tt_svd(volume, rank=5, max_rank=2)
    masked = dask_array.from_array(volume, chunks=5)
    masked = masked[masked[:, 0, 0] > 0]  # chunk sizes unknown (NaN)
    with pytest.raises(ValueError, match="compute_chunk_sizes"):
        streaming_tt_svd(masked, rank=2)


def test_a_fixed_rank_on_a_volume_within_the_budget_is_tensorlys_tt_svd(files):
    # It was sketched to 2 r + 10 columns anyway: 7-9% above TT-SVD's error on MNI152.
    from tensorly.decomposition import tensor_train

    dense, _ = files
    tt, info = streaming_tt_svd(dense, rank=3, return_info=True)
    reference = tl.tt_to_tensor(tensor_train(tl.tensor(dense), rank=[1, 3, 3, 1]))
    assert info.widths == dense.shape and info.n_passes == 1
    assert info.error == pytest.approx(_relative_error(tt, dense), rel=1e-6)
    assert info.error == pytest.approx(
        float(np.linalg.norm(np.asarray(reference) - dense) / np.linalg.norm(dense)), rel=1e-6)


def test_a_masked_array_is_refused_not_read_with_its_masked_entries():
    # Its raw data was read, masked entries included: the TT held 1e6 where the mask hid
    # it, without a word (tt_cross refuses masked arrays).
    data = np.random.default_rng(0).random((6, 5, 4))
    data[0, 0, 0] = 1e6
    masked = np.ma.masked_array(data, mask=np.zeros(data.shape, dtype=bool))
    masked[0, 0, 0] = np.ma.masked
    with pytest.raises(TypeError, match=r"volume is a masked array.*volume.filled"):
        streaming_tt_svd(masked, tol=1e-6)


@given(block=st.lists(st.integers(1, 9), min_size=2, max_size=4), width=st.integers(1, 6),
       seed=seeds)
def test_a_blocks_sketch_and_projection_equal_their_dense_definitions(block, width, seed):
    """Both passes' kernels on a block at an offset, whichever contraction order they pick
    (the Khatri-Rao product where the mode sketched is the block's longest, the shrinking
    modes first in the projection): Y_k rows and the core's update, against einsums of the
    whole Gaussian and basis factors."""
    from tensorly_cross.stream.sketch import core_fold, sketch_factors, sketch_fold

    rng = np.random.default_rng(seed)
    shape = tuple(size + 3 for size in block)
    slices = tuple(slice(2, 2 + size) for size in block)
    values = rng.standard_normal(block)
    factors = sketch_factors(shape, [width] * len(shape), rng)
    letters = "abcd"[: len(block)]
    for k, update in [(key, array) for key, _, array in sketch_fold(factors)(slices, values)
                      if key != "squares"]:
        others = [m for m in range(len(block)) if m != k]
        rows = [factors[k][m][slices[m]] for m in others]
        spec = f"{letters},{','.join(letters[m] + 'z' for m in others)}->{letters[k]}z"
        np.testing.assert_allclose(update, np.einsum(spec, values, *rows), atol=1e-10)
    bases = [None if k == 0 else np.linalg.qr(rng.standard_normal((n, min(width, n))))[0]
             for k, n in enumerate(shape)]
    updates = dict((key, (selection, array))
                   for key, selection, array in core_fold(bases)(slices, values))
    selection, core = updates["core"]
    expected = values
    for k in range(1, len(block)):
        expected = np.moveaxis(np.tensordot(expected, bases[k][slices[k]], axes=(k, 0)), -1, k)
    assert selection[0] == slices[0]
    np.testing.assert_allclose(core, expected, atol=1e-10)


def test_a_source_the_workers_cannot_be_sent_is_refused_before_reading(tmp_path):
    # A dask view of an open h5py dataset does not pickle: distributed failed with an
    # unreadable TypeError and chained tracebacks.
    distributed = pytest.importorskip("distributed")
    h5py = pytest.importorskip("h5py")
    dask_array = pytest.importorskip("dask.array")
    import tensorly_cross as tlc

    with h5py.File(tmp_path / "v.h5", "w") as handle:
        handle.create_dataset("vol", data=np.random.default_rng(0).random((8, 8, 8)),
                              chunks=(4, 4, 4))
    with h5py.File(tmp_path / "v.h5", "r") as handle, \
            distributed.LocalCluster(n_workers=1, processes=False,
                                     dashboard_address="127.0.0.1:0",
                                     worker_dashboard_address="127.0.0.1:0") as cluster, \
            distributed.Client(cluster) as client:
        view = dask_array.from_array(handle["vol"], chunks=(4, 4, 4)).T
        with pytest.raises(ValueError, match=r"client: the volume cannot be sent to the "
                                             r"workers .*pass client=None"):
            tlc.streaming_tt_svd(view, tol=0.5, client=client)
        opened = tlc.open_volume(view, client=client)
        with pytest.raises(ValueError, match=r"open it without client"):
            tlc.streaming_tt_svd(opened, tol=0.5)
        assert tlc.streaming_tt_svd(view, tol=0.5).rank[0] == 1  # locally: fine


def test_tol_zero_keeps_no_round_off_as_rank():
    """At tol=0 a rank-1 volume came back at ranks (20, 22): the round-off of its SVDs was
    kept as rank. Round-off is never kept, and tol=0 is then met at the data's precision
    without a warning; a full-rank volume keeps every rank."""
    rng = np.random.default_rng(0)
    rank_one = np.einsum("i,j,k->ijk", rng.random(20), rng.random(21), rng.random(22))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tt, info = streaming_tt_svd(rank_one, tol=0, return_info=True)
    assert tt.rank == (1, 1, 1, 1) and info.error < 1e-14
    full = rng.standard_normal((6, 7, 8))
    tt, info = streaming_tt_svd(full, tol=0, return_info=True)
    assert tt.rank == (1, 6, 8, 1) and info.error < 1e-14


def test_cores_are_float64_for_a_float32_volume_as_documented():
    # The docstring says so; tt_cross keeps float32 (the difference is documented).
    volume = np.random.default_rng(0).random((12, 13, 14)).astype(np.float32)
    tt = tlc.streaming_tt_svd(volume, tol=0.3)
    assert all(np.asarray(core).dtype == np.float64 for core in tt.factors)
    assert all(np.asarray(core).dtype == np.float32
               for core in tlc.tt_cross(volume, tol=0.3, random_state=0).factors)
