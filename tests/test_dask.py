"""Out of core: chunk-grouped reads from zarr, HDF5, npy, NIfTI and dask; dask.distributed."""

import os

import numpy as np
import pytest
import tensorly as tl
from hypothesis import given
from hypothesis import strategies as st

import tensorly_cross as tlc
from tensorly_cross import DaskTensor, open_volume
from tensorly_cross.lazy.sources import ChunkReadError

from ._helpers_shared import _same_tt
from .conftest import host
from .strategies import seeds

zarr = pytest.importorskip("zarr")
h5py = pytest.importorskip("h5py")
da = pytest.importorskip("dask.array")


def smooth_volume(shape=(40, 36, 30)):
    grids = np.meshgrid(*[np.linspace(0, 1, n) for n in shape], indexing="ij")
    return np.exp(-grids[0]) * np.cos(2 * grids[1]) + grids[2] ** 2


@pytest.fixture
def volume_files(tmp_path):
    volume = smooth_volume()
    paths = {}
    for fmt in (3, 2):
        paths[f"zarr v{fmt}"] = str(tmp_path / f"v{fmt}.zarr")
        array = zarr.create_array(paths[f"zarr v{fmt}"], shape=volume.shape, chunks=(16, 16, 16),
                                  dtype="f8", zarr_format=fmt)
        array[:] = volume
    paths["hdf5"] = str(tmp_path / "v.h5")
    with h5py.File(paths["hdf5"], "w") as handle:
        handle.create_dataset("group/volume", data=volume, chunks=(10, 12, 15))
    paths["npy"] = str(tmp_path / "v.npy")
    np.save(paths["npy"], volume)
    return volume, paths


@pytest.mark.parametrize("fmt", ["zarr v3", "zarr v2", "hdf5", "npy"])
def test_out_of_core_tt_equals_in_memory_tt(backend, volume_files, fmt):
    volume, paths = volume_files
    lazy = open_volume(paths[fmt])
    for method, rank in (("tci", None), ("als", 4)):
        out_of_core = tlc.tt_cross(lazy, rank=rank, method=method, tol=1e-10, random_state=3)
        in_memory = tlc.tt_cross(tl.tensor(volume), rank=rank, method=method, tol=1e-10,
                                 random_state=3)
        _same_tt(out_of_core, in_memory)


def test_nifti_from_nibabel_test_data_matches_in_memory(backend):
    nibabel = pytest.importorskip("nibabel")
    path = os.path.join(os.path.dirname(nibabel.__file__), "tests", "data", "anatomical.nii")
    data = np.asarray(nibabel.load(path).dataobj, dtype=np.float64)
    out_of_core = tlc.tt_cross(open_volume(path), rank=5, random_state=0)
    in_memory = tlc.tt_cross(tl.tensor(data), rank=5, random_state=0)
    _same_tt(out_of_core, in_memory)


def test_a_scaled_nifti_counts_the_bytes_it_stores(tmp_path):
    nibabel = pytest.importorskip("nibabel")
    stored = np.arange(6 * 5 * 4, dtype=np.int16).reshape(6, 5, 4)
    image = nibabel.Nifti1Image(stored, np.eye(4))
    image.header.set_slope_inter(0.5, 3.0)  # read back as float64
    path = str(tmp_path / "scaled.nii")
    nibabel.save(image, path)
    lazy = open_volume(path)
    values = host(lazy.evaluate(np.array([[1, 2, 3]])))
    np.testing.assert_allclose(values, [0.5 * stored[1, 2, 3] + 3.0])
    assert lazy.bytes_read == stored.nbytes  # the whole file is one chunk, of int16
    _, info = tlc.streaming_tt_svd(open_volume(path), rank=2, return_info=True)
    assert info.bytes_read == info.n_passes * stored.nbytes


@given(seed=seeds, n_points=st.integers(1, 3000))
def test_each_touched_chunk_is_read_once_and_warm_reads_none(volume_files, seed, n_points):
    volume, paths = volume_files
    lazy = DaskTensor(zarr.open_array(paths["zarr v3"], mode="r"))
    rng = np.random.default_rng(seed)
    points = np.stack([rng.integers(n, size=n_points) for n in volume.shape], axis=1)
    values = host(lazy.evaluate(points))
    np.testing.assert_array_equal(values, volume[tuple(points.T)])
    touched = {tuple(p // 16) for p in points}
    assert lazy.chunks_read == len(touched)
    assert lazy.bytes_read == sum(np.prod([min(16, n - 16 * c) for n, c in
                                           zip(volume.shape, chunk, strict=True)]) * 8
                                  for chunk in touched)
    lazy.evaluate(points[::-1])
    assert lazy.chunks_read == len(touched) and lazy.chunk_hits == len(touched)


@given(cached_chunks=st.integers(1, 17), seed=seeds)
def test_a_batch_larger_than_the_cache_serves_every_cached_chunk(volume_files, cached_chunks,
                                                                 seed):
    # Every one of the 18 chunks is touched twice; a plain LRU in ascending chunk order
    # would evict each cached chunk just before the second batch needs it.
    volume, paths = volume_files
    lazy = DaskTensor(zarr.open_array(paths["zarr v3"], mode="r"),
                      cache_bytes=cached_chunks * 16**3 * 8)
    rng = np.random.default_rng(seed)
    points = np.stack([rng.integers(n, size=4000) for n in volume.shape], axis=1)
    lazy.evaluate(points)
    assert lazy.chunks_read == 18
    held = len(lazy.cache)
    values = host(lazy.evaluate(points[rng.permutation(len(points))]))
    assert held >= 1 and lazy.chunk_hits == held and lazy.chunks_read == 36 - held
    np.testing.assert_array_equal(np.sort(values), np.sort(volume[tuple(points.T)]))


def test_a_zero_byte_cache_rereads(volume_files):
    volume, paths = volume_files
    lazy = DaskTensor(zarr.open_array(paths["zarr v3"], mode="r"), cache_bytes=0)
    points = np.array([[0, 0, 0], [1, 1, 1]])
    lazy.evaluate(points)
    lazy.evaluate(points)
    assert lazy.chunks_read == 2 and lazy.chunk_hits == 0


def test_dask_arrays_from_stores_read_the_store_and_others_compute(volume_files):
    volume, paths = volume_files
    from_zarr = DaskTensor(da.from_zarr(paths["zarr v3"]))
    assert type(from_zarr.source).__name__ == "ZarrSource"
    computed = DaskTensor(da.from_array(volume, chunks=12) * 2.0 + 1.0)
    assert type(computed.source).__name__ == "DaskSource"
    points = np.array([[3, 4, 5], [39, 35, 29]])
    np.testing.assert_array_equal(host(computed.evaluate(points)),
                                  2.0 * volume[tuple(points.T)] + 1.0)


def test_failing_read_names_the_file_and_chunk(volume_files):
    _, paths = volume_files
    array = zarr.open_array(paths["zarr v3"], mode="r")
    chunk_file = os.path.join(paths["zarr v3"], "c", "1", "0", "0")
    with open(chunk_file, "wb") as handle:
        handle.write(b"not a chunk")
    lazy = DaskTensor(array)
    with pytest.raises(ChunkReadError, match=r"chunk \[16:32, 0:16, 0:16\].*v3\.zarr"):
        lazy.evaluate(np.array([[20, 3, 3]]))


def test_open_volume_errors_are_clear(tmp_path, volume_files):
    _, paths = volume_files
    with pytest.raises(FileNotFoundError, match="does not exist"):
        open_volume(tmp_path / "missing.zarr")
    with pytest.raises(KeyError, match="not found.*group/volume"):
        open_volume(paths["hdf5"], dataset="nope")
    assert open_volume(paths["hdf5"] + ":/group/volume").shape == (40, 36, 30)
    (tmp_path / "v.tiff").write_bytes(b"")
    with pytest.raises(ValueError, match="unsupported suffix"):
        open_volume(tmp_path / "v.tiff")
    np.save(tmp_path / "c.npy", np.ones(3, dtype=complex))
    with pytest.raises(TypeError, match="dtype complex128"):
        open_volume(tmp_path / "c.npy")


def test_open_volume_bounds_every_reader_cache(volume_files):
    _, paths = volume_files
    for fmt in ("zarr v3", "zarr v2", "hdf5", "npy"):
        assert open_volume(paths[fmt], cache_bytes=12345).cache.max_bytes == 12345
    # Left out, each reader keeps its own default.
    assert open_volume(paths["zarr v3"]).cache.max_bytes == 256 * 2**20
    assert open_volume(paths["npy"]).cache.max_bytes == 64 * 2**20


def loopback_cluster(processes=False):
    """A 2-worker LocalCluster whose every socket is on loopback: ``dashboard_address=None``
    still serves the scheduler's HTTP endpoints on 0.0.0.0:8787, so both HTTP servers get
    an explicit 127.0.0.1 address."""
    distributed = pytest.importorskip("distributed")
    return distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=processes,
                                    host="127.0.0.1" if processes else None,
                                    dashboard_address="127.0.0.1:0",
                                    worker_dashboard_address="127.0.0.1:0")


def _listening_hosts(server):
    return {sock.getsockname()[0] for sock in server.http_server._sockets.values()}


@pytest.fixture(scope="module")
def thread_cluster():
    distributed = pytest.importorskip("distributed")
    with loopback_cluster() as cluster:
        with distributed.Client(cluster) as client:
            yield cluster, client


def test_every_cluster_socket_is_on_loopback(thread_cluster):
    cluster, client = thread_cluster
    assert _listening_hosts(cluster.scheduler) == {"127.0.0.1"}
    hosts = client.run(lambda dask_worker: sorted(_listening_hosts(dask_worker)))
    assert all(found == ["127.0.0.1"] for found in hosts.values())


def test_threaded_cluster_gives_the_local_tt(volume_files, thread_cluster):
    volume, paths = volume_files
    _, client = thread_cluster
    for fmt in ("zarr v3", "hdf5"):
        on_cluster = tlc.tt_cross(open_volume(paths[fmt], client=client), rank=4,
                                  random_state=1)
        local = tlc.tt_cross(open_volume(paths[fmt]), rank=4, random_state=1)
        _same_tt(on_cluster, local)


def test_cli_scheduler_gives_the_local_tt_and_disconnects(volume_files, thread_cluster,
                                                          tmp_path, capsys):
    from tensorly_cross import cli

    _, paths = volume_files
    cluster, _ = thread_cluster
    clients_before = set(cluster.scheduler.clients)
    outputs = {name: str(tmp_path / f"{name}.tt.npz") for name in ("cluster", "local")}
    for name, extra in (("cluster", ["--scheduler", cluster.scheduler_address]),
                        ("local", [])):
        code = cli.main(["compress", paths["zarr v3"], "-o", outputs[name], "--rank", "4",
                         "--method", "als", "--quiet", *extra])
        assert code == cli.EXIT_OK, capsys.readouterr().err
    _same_tt(tlc.load_tt(outputs["cluster"])[0], tlc.load_tt(outputs["local"])[0])
    # The command's client said goodbye: only the fixture's own remain.
    assert set(cluster.scheduler.clients) == clients_before


def test_losing_a_worker_mid_run_gives_the_same_tt(volume_files, tmp_path):
    distributed = pytest.importorskip("distributed")
    volume, paths = volume_files
    local = tlc.tt_cross(open_volume(paths["zarr v3"]), rank=4, tol=0.0, n_iter_max=4,
                         random_state=2)
    with loopback_cluster() as cluster:
        with distributed.Client(cluster) as client:
            def lose_a_worker(tt, info):
                if info.n_sweeps == 1:
                    victim = sorted(client.scheduler_info()["workers"])[0]
                    client.retire_workers([victim], close_workers=True)
                return False

            lazy = open_volume(paths["zarr v3"], client=client)
            on_cluster = tlc.tt_cross(lazy, rank=4, tol=0.0, n_iter_max=4, random_state=2,
                                      callback=lose_a_worker)
            assert len(client.scheduler_info()["workers"]) == 1
    _same_tt(on_cluster, local)


def test_process_cluster_on_loopback_gives_the_local_tt(volume_files):
    distributed = pytest.importorskip("distributed")
    _, paths = volume_files
    with loopback_cluster(processes=True) as cluster:
        with distributed.Client(cluster) as client:
            assert cluster.scheduler_address.startswith("tcp://127.0.0.1:")
            assert _listening_hosts(cluster.scheduler) == {"127.0.0.1"}
            on_cluster = tlc.tt_cross(open_volume(paths["hdf5"], client=client), rank=3,
                                      random_state=4)
    local = tlc.tt_cross(open_volume(paths["hdf5"]), rank=3, random_state=4)
    _same_tt(on_cluster, local)


@given(order=st.sampled_from(["C", "F"]), dtype=st.sampled_from(["f4", "f8", "i2", "u1"]),
       seed=seeds)
def test_npy_pages_give_the_entries_and_count_each_page_once(tmp_path_factory, order, dtype,
                                                            seed):
    from tensorly_cross.lazy.npy import NpyTensor

    folder = tmp_path_factory.mktemp("npy")
    rng = np.random.default_rng(seed)
    array = np.asarray(rng.integers(0, 100, size=(17, 33, 9)), dtype=dtype, order=order)
    np.save(folder / "a.npy", array)
    lazy = NpyTensor(folder / "a.npy")
    points = np.stack([rng.integers(n, size=200) for n in array.shape], axis=1)
    np.testing.assert_array_equal(host(lazy.evaluate(points)), array[tuple(points.T)])
    flat = np.ravel_multi_index(tuple(points.T), array.shape, order=order)
    header = np.load(folder / "a.npy", mmap_mode="r").offset
    pages = np.unique((header + flat * array.itemsize) // 4096)
    assert lazy.pages_read == pages.size
    lazy.evaluate(points)
    assert lazy.pages_read == pages.size and lazy.page_hits == pages.size


@pytest.mark.parametrize("fmt", ["zarr", "hdf5", "npy"])
def test_a_float32_file_gives_the_tt_of_its_array_cast_to_float64(tmp_path, fmt):
    # Files are read as float64 (documented in guarantees.rst); the default method and a
    # volume that is not low-rank, so that the least-squares sweeps decide the result.
    rng = np.random.default_rng(0)
    volume = (smooth_volume((24, 20, 18)) + 0.05 * rng.standard_normal((24, 20, 18)))
    volume = volume.astype(np.float32)
    path = str(tmp_path / {"zarr": "v.zarr", "hdf5": "v.h5", "npy": "v.npy"}[fmt])
    if fmt == "zarr":
        zarr.create_array(path, shape=volume.shape, chunks=(8, 8, 8), dtype="f4")[:] = volume
    elif fmt == "hdf5":
        with h5py.File(path, "w") as handle:
            handle.create_dataset("v", data=volume, chunks=(5, 6, 7))
    else:
        np.save(path, volume)
    out_of_core = tlc.tt_cross(open_volume(path), tol=0.05, random_state=1)
    in_memory = tlc.tt_cross(volume.astype(np.float64), tol=0.05, random_state=1)
    assert all(host(core).dtype == np.float64 for core in out_of_core)
    _same_tt(out_of_core, in_memory)
