"""Reliability audit of the out-of-core and streaming paths: each test pins one defect found.

Bad input gets a clear exception that names the argument; a file that changed after it was
opened is refused rather than read as a mix of two versions; a reader that returns the wrong
block is caught; nothing lists the chunks of a virtual array; memory is checked up front.
"""

import os
import pickle
import warnings

import numpy as np
import pytest
import tensorly as tl
from hypothesis import given
from hypothesis import strategies as st

import tensorly_cross as tlc
from tensorly_cross import DaskTensor, open_volume, streaming_tt_svd
from tensorly_cross.lazy import dask as lazy_dask
from tensorly_cross.lazy import npy as lazy_npy
from tensorly_cross.lazy.quantics import QuanticsLayout, QuanticsTensor
from tensorly_cross.lazy.sources import ChunkReadError, H5Source
from tensorly_cross.lazy.transpose import TransposedTensor
from tensorly_cross.stream import blocks, streaming

from .strategies import seeds

zarr = pytest.importorskip("zarr")
h5py = pytest.importorskip("h5py")
da = pytest.importorskip("dask.array")


def save_npy(path, array):
    np.save(path, array)
    return str(path)


def dense(tt):
    return np.asarray(tl.to_numpy(tl.tt_to_tensor(tt)))


# --- dask arrays --------------------------------------------------------------------------


def test_a_virtual_dask_array_is_wrapped_without_listing_its_chunks(monkeypatch):
    from dask.blockwise import Blockwise

    def refuse(self):
        raise AssertionError("a lazy layer was materialized")

    monkeypatch.setattr(Blockwise, "_dict", property(refuse))
    lazy = DaskTensor(da.zeros((2**20,) * 3, chunks=64))  # 2**42 chunks
    assert lazy.shape == (2**20,) * 3


def test_a_virtual_dask_array_reads_only_the_chunks_it_is_asked_for():
    # 4,096 chunks, not 2**42: dask 2024.12 (the floor) materialises the whole graph to
    # compute one block of it (24 GB and the OOM killer); newer dask does not.
    lazy = DaskTensor(da.zeros((2**10,) * 3, chunks=64))
    values = lazy.evaluate(np.array([[2**10 - 1] * 3, [5, 6, 7]]))
    assert np.array_equal(np.asarray(values), [0.0, 0.0]) and lazy.chunks_read == 2


def test_a_dask_array_made_from_a_zarr_array_is_still_read_from_the_store(tmp_path):
    array = zarr.create_array(str(tmp_path / "a.zarr"), shape=(8, 8), chunks=(4, 4), dtype="f8")
    array[...] = np.arange(64.0).reshape(8, 8)
    lazy = DaskTensor(da.from_zarr(array))
    assert type(lazy.source).__name__ == "ZarrSource"
    assert np.asarray(lazy.evaluate(np.array([[7, 6]])))[0] == 62.0


def test_a_dask_block_of_the_wrong_shape_raises_naming_the_chunk():
    array = da.ones((10, 10), chunks=5).map_blocks(lambda block: block[:1], dtype=float)
    with pytest.raises(
        ChunkReadError,
        match=r"chunk \[5:10, 5:10\].*shape \(1, 5\).*"
        r"expected shape \(5, 5\)",
    ):
        DaskTensor(array).evaluate(np.array([[9, 9]]))


@pytest.mark.parametrize(
    "make", [lambda block: block + 1j, lambda block: np.full(block.shape, "a")]
)
def test_a_dask_block_of_a_non_real_dtype_is_refused_not_cast(make):
    array = da.ones((10, 10), chunks=5).map_blocks(make, dtype=float)  # dtype declared: a lie
    with pytest.raises(ChunkReadError, match="dtype .*expected .*real floating-point"):
        DaskTensor(array).evaluate(np.array([[9, 9]]))


@pytest.mark.parametrize("client", ["tcp://127.0.0.1:8786", 3, object()])
def test_a_client_that_is_not_a_client_is_refused_by_name(client):
    with pytest.raises(TypeError, match="client must be a dask.distributed.Client or None"):
        DaskTensor(np.ones((4, 4)), client=client)
    with pytest.raises(TypeError, match="client must be"):
        open_volume(np.ones((4, 4)), client=client)
    with pytest.raises(TypeError, match="client must be"):
        streaming_tt_svd(np.ones((4, 4)), client=client)


@pytest.fixture(scope="module")
def cluster():
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(
        n_workers=1,
        threads_per_worker=1,
        processes=False,
        dashboard_address="127.0.0.1:0",
        worker_dashboard_address="127.0.0.1:0",
    ) as local:
        yield local


@pytest.fixture
def client(cluster):
    import distributed

    with distributed.Client(cluster) as connected:
        yield connected


def test_a_closed_client_raises_naming_the_client(cluster):
    import distributed

    closed = distributed.Client(cluster)
    lazy = DaskTensor(da.ones((8, 8), chunks=4), client=closed)
    closed.close()
    with pytest.raises(ValueError, match="client .* has no workers"):
        lazy.evaluate(np.array([[7, 7]]))
    with pytest.raises(ValueError, match="client .* has no workers"):
        streaming_tt_svd(np.ones((4, 4)), client=closed)


def test_a_new_tensor_is_never_served_an_old_tensors_cached_chunks(tmp_path, client, monkeypatch):
    # CPython reuses the id() of a collected object: make every id collide, as they may.
    monkeypatch.setattr(lazy_dask, "id", lambda obj: 0, raising=False)
    path = str(tmp_path / "a.zarr")
    for version in range(3):
        array = zarr.create_array(path, shape=(4, 4), chunks=(2, 2), dtype="f8", overwrite=True)
        array[...] = version
        lazy = open_volume(path, client=client)
        assert np.asarray(lazy.evaluate(np.array([[0, 0]])))[0] == version


def test_worker_chunk_caches_are_bounded_in_number(client):
    for _ in range(3 * lazy_dask._MAX_WORKER_CACHES):
        DaskTensor(da.ones((8, 8), chunks=4), client=client).evaluate(np.array([[0, 0]]))
    assert len(lazy_dask._WORKER_CACHES) <= lazy_dask._MAX_WORKER_CACHES


# --- .npy files ---------------------------------------------------------------------------


@pytest.mark.parametrize("array", [np.array(2.0), np.zeros((3, 0, 4))], ids=["0-d", "empty"])
def test_a_npy_with_no_entries_is_refused_naming_the_file(tmp_path, array):
    path = save_npy(tmp_path / "v.npy", array)
    with pytest.raises(ValueError, match=r"v\.npy' holds an array of shape"):
        lazy_npy.NpyTensor(path)
    with pytest.raises(ValueError, match=r"v\.npy' holds an array of shape"):
        streaming_tt_svd(path)


def test_a_npy_rewritten_with_another_header_after_opening_raises(tmp_path):
    path = save_npy(tmp_path / "v.npy", np.arange(1000.0).reshape(10, 10, 10))
    lazy = open_volume(path)
    np.save(path, np.zeros((10, 10, 10), dtype=np.float32))  # other dtype, other bytes
    with pytest.raises(ChunkReadError, match="rewritten after it was opened"):
        lazy.evaluate(np.array([[1, 1, 1]]))


def test_a_npy_rewritten_with_the_same_header_raises_instead_of_mixing_versions(tmp_path):
    path = save_npy(tmp_path / "v.npy", np.arange(1000.0).reshape(10, 10, 10))
    lazy = open_volume(path)
    assert np.asarray(lazy.evaluate(np.array([[1, 1, 1]])))[0] == 111.0  # its page is cached
    np.save(path, -np.arange(1000.0).reshape(10, 10, 10))
    os.utime(path, ns=(0, 0))  # another modification time, whatever the clock's resolution
    # Entries read before (cached, or in a TT under construction) are of the old version.
    with pytest.raises(ChunkReadError, match="changed after it was opened"):
        lazy.evaluate(np.array([[2, 2, 2]]))


def test_a_npy_deleted_after_opening_raises_a_chunk_read_error(tmp_path):
    path = save_npy(tmp_path / "v.npy", np.ones((4, 4)))
    lazy = open_volume(path)
    os.remove(path)
    with pytest.raises(ChunkReadError, match="deleted after it was opened"):
        lazy.evaluate(np.array([[1, 1]]))


@given(
    seed=seeds,
    n_points=st.integers(0, 300),
    fortran=st.booleans(),
    dtype=st.sampled_from(["<f8", ">f4", "<i2", "|u1"]),
)
def test_npy_gathers_in_groups_of_pages_give_the_entries(
    tmp_path_factory, seed, n_points, fortran, dtype
):
    rng = np.random.default_rng(seed)
    array = rng.integers(0, 100, size=(9, 70, 33)).astype(dtype)
    array = np.asfortranarray(array) if fortran else array
    path = save_npy(tmp_path_factory.mktemp("npy") / "v.npy", array)
    lazy = lazy_npy.NpyTensor(path, cache_bytes=0)
    lazy_npy.BATCH_PAGES = 3  # many groups in one batch (restored below)
    try:
        indices = np.stack([rng.integers(0, n, n_points) for n in array.shape], axis=1)
        values = np.asarray(lazy.evaluate(indices))
    finally:
        lazy_npy.BATCH_PAGES = 4096
    assert np.array_equal(values, array[tuple(indices.T)].astype(np.float64))


def test_a_npy_batch_over_many_pages_holds_a_bounded_buffer(tmp_path):
    import tracemalloc

    n_pages = 4096  # a 16 MiB file; one point on each of its pages
    path = save_npy(tmp_path / "v.npy", np.arange(n_pages * 512.0))
    lazy = lazy_npy.NpyTensor(path, cache_bytes=0)
    indices = np.arange(0, n_pages * 512, 512)[:, None]
    lazy_npy.BATCH_PAGES = 64  # the bound under test (restored below)
    tracemalloc.start()
    try:
        values = np.asarray(lazy.evaluate(indices))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        lazy_npy.BATCH_PAGES = 4096
    assert np.array_equal(values, indices[:, 0].astype(float))
    assert peak < 4 * 2**20  # not the 16 MiB of all pages at once


# --- HDF5 ---------------------------------------------------------------------------------


def test_h5_source_sent_to_a_worker_after_the_file_was_replaced_raises(tmp_path):
    path = str(tmp_path / "v.h5")
    with h5py.File(path, "w") as handle:
        handle.create_dataset("x", data=np.ones((4, 4)), chunks=(2, 2))
    source = open_volume(path).source
    other = str(tmp_path / "other.h5")
    with h5py.File(other, "w") as handle:
        handle.create_dataset("x", data=np.zeros((4, 4)), chunks=(2, 2))
    os.replace(other, path)
    on_worker = pickle.loads(pickle.dumps(source))  # reopens by name there
    assert isinstance(on_worker, H5Source)
    with pytest.raises(ChunkReadError, match="changed after it was opened"):
        on_worker.read((slice(0, 2), slice(0, 2)))


@pytest.mark.parametrize("dataset", [3, b"/x", ["x"]])
def test_open_volume_refuses_a_dataset_that_is_not_a_str(tmp_path, dataset):
    path = str(tmp_path / "v.h5")
    with h5py.File(path, "w") as handle:
        handle.create_dataset("x", data=np.ones((4, 4)))
    with pytest.raises(TypeError, match="dataset must be a str"):
        open_volume(path, dataset=dataset)


# --- streaming TT-SVD ---------------------------------------------------------------------


@pytest.mark.parametrize("tol", [1.0, 1.5, 1e9])
def test_stream_refuses_a_tolerance_of_one_or_more(tol):
    with pytest.raises(ValueError, match=r"tol must be in \[0, 1\)"):
        streaming_tt_svd(np.ones((4, 4, 4)), tol=tol)


@pytest.mark.parametrize("return_info", ["yes", 1, None])
def test_stream_refuses_a_return_info_that_is_not_a_bool(return_info):
    with pytest.raises(TypeError, match="return_info must be True or False"):
        streaming_tt_svd(np.ones((4, 4)), return_info=return_info)


def test_stream_checks_max_rank_before_reading_anything():
    def unreadable(block):
        raise AssertionError("read before the arguments were checked")

    volume = da.ones((8, 8), chunks=4).map_blocks(unreadable, dtype=float)
    with pytest.raises(ValueError, match="max_rank must be >= 1"):
        streaming_tt_svd(volume, max_rank=0)


def test_stream_of_a_npy_rewritten_between_its_passes_raises(tmp_path, monkeypatch):
    volume = np.random.default_rng(0).standard_normal((40, 40, 40))
    path = save_npy(tmp_path / "v.npy", volume)
    read, calls = blocks.MemmapSource._read, []

    def rewrite_during_the_first_pass(self, slices):
        calls.append(slices)
        if len(calls) == 2:
            np.save(path, np.zeros_like(volume))
            os.utime(path, ns=(0, 0))
        return read(self, slices)

    monkeypatch.setattr(blocks.MemmapSource, "_read", rewrite_during_the_first_pass)
    monkeypatch.setattr(blocks, "_n_workers", lambda client: 1)  # no read races the rewrite
    with pytest.raises(ChunkReadError, match="changed after it was opened"):
        streaming_tt_svd(path, tol=1e-3, max_width=10, block_bytes=40 * 40 * 8 * 10)


def test_stream_sketches_no_wider_than_the_rank_of_each_unfolding():
    assert streaming._widths((2, 2**26), None, None) == (2, 2)
    assert streaming._widths((3, 5, 2**25), None, None) == (3, 5, 15)


def test_stream_of_a_long_last_mode_is_exact_at_the_unfoldings_rank(monkeypatch):
    # The core budget forces a sketch of the last mode; 14 columns (what it was narrowed
    # to) cannot hold the rank-15 range of its unfolding, 15 do.
    monkeypatch.setattr(streaming, "MAX_CORE_ENTRIES", 1000)
    volume = np.random.default_rng(0).standard_normal((3, 5, 4000))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tt, info = streaming_tt_svd(volume, tol=1e-6, random_state=0, return_info=True)
    assert info.widths == (3, 5, 15) and info.error <= 1e-6
    assert np.linalg.norm(dense(tt) - volume) <= 1e-6 * np.linalg.norm(volume)


def test_stream_that_cannot_fit_in_memory_raises_before_reading(monkeypatch):
    monkeypatch.setattr(streaming, "_physical_memory", lambda: 2**20)

    def unreadable(block):
        raise AssertionError("read although memory was known to be short")

    volume = da.ones((200, 200, 200), chunks=100).map_blocks(unreadable, dtype=float)
    with pytest.raises(MemoryError, match="needs about .* GiB.*Lower max_width"):
        streaming_tt_svd(volume, tol=1e-3)


@given(axes=st.permutations([0, 1, 2]), seed=seeds)
def test_stream_of_a_transposed_volume_is_the_transposed_volumes_tt(tmp_path_factory, axes, seed):
    volume = np.random.default_rng(seed).standard_normal((4, 5, 6))
    path = save_npy(tmp_path_factory.mktemp("t") / "v.npy", volume)
    view = TransposedTensor(open_volume(path), axes)
    tt = streaming_tt_svd(view, tol=1e-12)
    assert np.allclose(dense(tt), np.transpose(volume, axes), atol=1e-10)


def test_stream_refuses_a_computed_tensor_naming_the_volume_argument():
    function = tlc.FunctionTensor(lambda idx: idx.sum(axis=1) * 1.0, (3, 4, 5))
    with pytest.raises(TypeError, match="volume is a FunctionTensor, whose entries are computed"):
        streaming_tt_svd(function)
    with pytest.raises(TypeError, match="volume must be a path"):
        streaming_tt_svd([[1.0, 2.0]])


# --- cost model and quantics layout ---------------------------------------------------------


@pytest.mark.parametrize("volume", [None, [[1, 2]], 3])
def test_choose_path_refuses_a_volume_without_a_shape_by_name(volume):
    with pytest.raises(TypeError, match="volume must be a lazy tensor"):
        tlc.choose_path(volume)


def test_choose_path_refuses_a_path_that_is_not_a_path():
    with pytest.raises(TypeError, match="path must be a str, bytes or os.PathLike"):
        tlc.choose_path(tlc.lazy_tensor(np.ones((4, 4))), path=3)


@pytest.mark.parametrize("oversample, rank", [(1e300, None), (1.5, 10**200)])
def test_choose_path_with_huge_oversampling_or_rank_reads_everything(tmp_path, oversample, rank):
    path = save_npy(tmp_path / "v.npy", np.ones((64, 64, 64)))
    choice = tlc.choose_path(open_volume(path), oversample=oversample, rank=rank)
    assert choice.method == "stream" and choice.cross_share == 1.0


def test_choose_path_does_not_claim_a_quantics_view_of_a_file_reads_at_no_cost(tmp_path):
    path = save_npy(tmp_path / "v.npy", np.ones((16, 16, 16)))
    choice = tlc.choose_path(QuanticsTensor(open_volume(path)))
    assert choice.method == "lsq" and "no storage cost" not in choice.reason
    assert "not estimated" in choice.reason


@pytest.mark.parametrize("shape", [8, None, 2.5])
def test_quantics_layout_refuses_a_shape_that_is_not_a_sequence(shape):
    with pytest.raises(TypeError, match="shape must be a sequence of ints"):
        QuanticsLayout.create(shape)


@pytest.mark.parametrize(("shape", "says"), [((), "a 0-d array"),
                                             ((3, 0, 4), r"shape\[1\]=0 must be >= 1")])
@pytest.mark.parametrize("kind", ["zarr", "h5"])
def test_a_stored_array_with_no_entries_is_refused_naming_the_file(tmp_path, kind, shape, says):
    # The messages came from the generic checks ("shape must have at least one mode, got
    # ()"), without the file's name.
    if kind == "zarr":
        path = str(tmp_path / "scan.zarr")
        zarr.create_array(path, shape=shape, dtype="f8")
    else:
        path = str(tmp_path / "scan.h5")
        with h5py.File(path, "w") as handle:
            handle.create_dataset("volume", shape=shape, dtype="f8")
    with pytest.raises(ValueError, match=says) as caught:
        open_volume(path)
    assert "scan." in str(caught.value)


@pytest.mark.parametrize(("max_width", "says"), [
    (None, r"budget of 64 entries narrowed the sketches to widths \("),
    (1, r"raise max_width \(now 1\)"),
])
def test_stream_missing_tol_blames_what_narrowed_the_sketches(monkeypatch, max_width, says):
    # With max_width=None the warning said "raise max_width (now 1)": a setting the user
    # never gave, and raising it would not have helped (the core budget had narrowed them).
    monkeypatch.setattr(streaming, "MAX_CORE_ENTRIES", 64)
    volume = np.random.default_rng(0).standard_normal((2,) * 8)
    with pytest.warns(UserWarning, match=says):
        streaming_tt_svd(volume, tol=1e-6, max_width=max_width)


def test_a_client_for_a_npy_file_is_not_dropped_silently(tmp_path, loopback_cluster):
    # open_volume(path.npy, client=...) read in this process without a word.
    distributed = pytest.importorskip("distributed")
    path = save_npy(tmp_path / "v.npy", np.arange(24.0).reshape(2, 3, 4))
    with distributed.Client(loopback_cluster) as client:
        with pytest.warns(UserWarning, match=r"client is not used for 'v.npy'"):
            lazy = open_volume(path, client=client)
    assert np.asarray(lazy.evaluate([[1, 2, 3]]))[0] == 23.0
