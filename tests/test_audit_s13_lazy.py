"""Audit of the lazy-tensor layer (session 13): out-of-core readers, caches, views."""

import numpy as np
import pytest
import zarr
from hypothesis import given, settings
from hypothesis import strategies as st

from tensorly_cross.lazy import ArrayTensor, DaskTensor, EvaluationCache, FunctionTensor


@pytest.fixture
def client(loopback_cluster):
    import distributed

    with distributed.Client(loopback_cluster) as connected:
        yield connected


def _zarr_volume(shape=(10, 10), chunks=(3, 3)):
    """An in-memory zarr array of distinct float64 entries, and those entries."""
    data = np.arange(float(np.prod(shape))).reshape(shape)
    array = zarr.create_array(store={}, shape=shape, chunks=chunks, dtype="f8")
    array[:] = data
    return array, data


def test_an_empty_batch_on_a_cluster_gives_no_values_like_a_local_read(client):
    # Grouping an empty batch by chunk gave one (empty) group for no chunk: the cluster
    # path zipped them strictly and raised "zip() argument 2 is longer than argument 1".
    array, _ = _zarr_volume()
    lazy = DaskTensor(array, client=client)
    values = np.asarray(lazy.evaluate(np.zeros((0, 2), dtype=np.int64)))
    assert values.shape == (0,)
    assert lazy.evaluate([[9, 9]])[0] == 99.0  # the tensor still reads afterwards


class _ReusedBuffer:
    """A function that writes each batch's values into one buffer it keeps, and returns a
    view of it (a common way to avoid allocations)."""

    def __init__(self):
        self.buffer = np.empty(64)

    def __call__(self, indices):
        out = self.buffer[: indices.shape[0]]
        out[:] = indices.sum(axis=1)
        return out


def test_a_function_that_reuses_its_output_buffer_does_not_change_cached_values():
    # The cache kept the first batch's array itself: the function's next batch, written
    # into the same buffer, overwrote entries already cached.
    cache = EvaluationCache(FunctionTensor(_ReusedBuffer(), (10, 10)))
    cache.evaluate([[1, 1], [2, 2]])
    cache.evaluate([[5, 5]])
    np.testing.assert_array_equal(np.asarray(cache.evaluate([[1, 1], [2, 2]])), [2.0, 4.0])


def test_values_returned_by_the_cache_can_be_modified_without_changing_the_cache():
    # The first batch's values were returned and kept as the cache's own buffer.
    cache = EvaluationCache(ArrayTensor(np.arange(100.0).reshape(10, 10)))
    values = cache.evaluate([[0, 1], [0, 2]])
    values *= 0
    np.testing.assert_array_equal(np.asarray(cache.evaluate([[0, 1], [0, 2]])), [1.0, 2.0])


def test_a_dask_array_of_more_than_2_63_chunks_is_refused_naming_its_chunks():
    # A virtual array of 2**64 one-entry chunks failed in len() of its graph with
    # "OverflowError: cannot fit 'int' into an index-sized integer", naming nothing.
    da = pytest.importorskip("dask.array")
    # Four modes (NumPy 1.x, the floor CI tests, holds at most 32): 2**16 chunks each.
    virtual = da.ones((2**16,) * 4, chunks=1)
    with pytest.raises(ValueError, match=r"about 2\*\*64.*rechunk"):
        DaskTensor(virtual)


def test_a_dask_array_of_unknown_chunk_sizes_read_in_memory_says_what_to_call():
    # lazy_tensor made an ArrayTensor, whose shape check said "shape[0] must be an int,
    # got nan": the user passed no shape, and nothing said compute_chunk_sizes().
    da = pytest.importorskip("dask.array")
    from tensorly_cross.lazy import lazy_tensor

    data = da.from_array(np.arange(12.0).reshape(4, 3), chunks=2)
    masked = data[data[:, 0] > 2]
    with pytest.raises(ValueError, match=r"unknown size.*compute_chunk_sizes"):
        lazy_tensor(masked)
    with pytest.raises(ValueError, match=r"unknown size.*compute_chunk_sizes"):
        ArrayTensor(masked)


@pytest.mark.parametrize("max_entries", [1, 2])
def test_a_first_batch_larger_than_max_entries_gives_its_values(max_entries):
    # The cache was emptied before storing the batch, and its hits were then taken from
    # the values it did not have yet: AttributeError: 'NoneType' object has no attribute
    # 'take'.
    data = np.arange(16.0).reshape(4, 4)
    cache = EvaluationCache(ArrayTensor(data), max_entries=max_entries)
    indices = np.array([[0, 1], [0, 2], [0, 3], [0, 1]])
    np.testing.assert_array_equal(np.asarray(cache.evaluate(indices)), [1.0, 2.0, 3.0, 1.0])
    np.testing.assert_array_equal(np.asarray(cache.evaluate(indices[::-1])), [1.0, 3.0, 2.0, 1.0])


@pytest.mark.parametrize("dtype", [">f8", ">f4", ">c16", ">i4"])
def test_big_endian_values_are_read_in_every_backend(backend, dtype):
    # FITS data and .npy files written on big-endian machines hold big-endian arrays:
    # under PyTorch their values failed with "given numpy array has byte order different
    # from the native byte order".
    import tensorly as tl

    from tests.conftest import host

    data = (np.arange(12.0).reshape(3, 4) * (1 + 1j if dtype == ">c16" else 1)).astype(dtype)
    indices = np.array([[1, 1], [2, 3], [1, 1]])
    expected = data[tuple(indices.T)].astype(data.dtype.newbyteorder("="))
    for lazy in (ArrayTensor(data), FunctionTensor(lambda idx: data[tuple(idx.T)], (3, 4))):
        values = lazy.evaluate(indices)
        assert tl.is_tensor(values)
        np.testing.assert_array_equal(host(values), expected)
        assert host(values).dtype.isnative


@pytest.fixture
def nifti_path(tmp_path):
    """A small scaled NIfTI file."""
    nibabel = pytest.importorskip("nibabel")
    image = nibabel.Nifti1Image(np.arange(60, dtype=np.int16).reshape(3, 4, 5), np.eye(4))
    image.header.set_slope_inter(0.5, 1.0)
    path = tmp_path / "volume.nii"
    nibabel.save(image, path)
    return path


@pytest.mark.parametrize("part", ["image", "dataobj"])
def test_a_nibabel_image_or_proxy_is_refused_pointing_at_open_volume(nifti_path, part):
    # Both were wrapped as arrays and failed at the first read with nibabel's messages
    # ("Cannot slice image objects; consider using img.slicer", "Cannot handle fancy
    # indexing"), which name neither the argument nor a way that works.
    import nibabel

    from tensorly_cross import open_volume, tt_cross
    from tensorly_cross.lazy import lazy_tensor

    image = nibabel.load(nifti_path)
    obj = image if part == "image" else image.dataobj
    with pytest.raises(TypeError, match=r"obj is a nibabel .*open_volume.*volume\.nii"):
        lazy_tensor(obj)
    with pytest.raises(TypeError, match=r"tensor is a nibabel .*open_volume"):
        tt_cross(obj, tol=1e-6, random_state=0)
    volume = open_volume(nifti_path)  # the way the message names reads the scaled values
    assert float(volume.evaluate([[2, 3, 4]])[0]) == 59 * 0.5 + 1.0


def _tenfold(block):
    return np.asarray(block[...]) * 10.0


def test_a_dask_array_computed_from_a_zarr_array_reads_the_computed_values():
    # A graph of one store and one task per chunk was taken for a plain view of the
    # store whatever the task computed: this array of 10 * z read as z.
    da = pytest.importorskip("dask.array")
    store, data = _zarr_volume((8, 8), (4, 4))
    computed = da.Array({"store": store, ("tenfold", 0, 0): (_tenfold, "store")}, "tenfold",
                        chunks=((8,), (8,)), dtype="f8")
    lazy = DaskTensor(computed)
    indices = np.array([[1, 1], [7, 0], [1, 1]])
    np.testing.assert_array_equal(np.asarray(lazy.evaluate(indices)),
                                  10.0 * data[tuple(indices.T)])
    # A plain view of the store is still read from the store itself.
    assert type(DaskTensor(da.from_array(store, chunks=4)).source).__name__ == "ZarrSource"


# Property tests: what every reader returns is NumPy's value at the same multi-index.

READERS = ("zarr2", "zarr3", "sharded", "h5_chunked", "h5_contiguous", "npy_c", "npy_f",
           "dask_computed")
DTYPES = ("f8", "f2", "i2", "u1", "bool", ">f8", ">i4")


@st.composite
def _volumes(draw):
    """A shape, chunk shape, dtype, reader, batch size (0 included) and seed."""
    shape = tuple(draw(st.lists(st.integers(1, 7), min_size=1, max_size=3)))
    chunks = tuple(draw(st.integers(1, size + 1)) for size in shape)
    return (shape, chunks, draw(st.sampled_from(DTYPES)), draw(st.sampled_from(READERS)),
            draw(st.integers(0, 25)), draw(st.integers(0, 2**16)))


def _open(path, reader, data, chunks):
    """``data`` written for ``reader`` under ``path``, opened as a lazy tensor."""
    import h5py

    from tensorly_cross import open_volume

    if reader.startswith(("zarr", "sharded")):
        fmt = 2 if reader == "zarr2" or data.dtype.byteorder == ">" else 3
        sharded = reader == "sharded" and fmt == 3
        shards = {"shards": tuple(2 * c for c in chunks)} if sharded else {}
        array = zarr.create_array(f"{path}.zarr", shape=data.shape, chunks=chunks,
                                  dtype=data.dtype, zarr_format=fmt, **shards)
        array[...] = data
        return open_volume(f"{path}.zarr", cache_bytes=64)  # a cache of one chunk or none
    if reader.startswith("h5"):
        with h5py.File(f"{path}.h5", "w") as handle:
            handle.create_dataset("x", data=data, chunks=(
                tuple(min(c, n) for c, n in zip(chunks, data.shape, strict=True))
                if reader == "h5_chunked" else None))
        return open_volume(f"{path}.h5")
    if reader.startswith("npy"):
        np.save(f"{path}.npy", np.asfortranarray(data) if reader == "npy_f" else data)
        return open_volume(f"{path}.npy", cache_bytes=4096)
    import dask.array as da

    return DaskTensor(da.from_array(data, chunks=chunks) + 0)


@settings(max_examples=40, deadline=None)
@given(volume=_volumes())
def test_out_of_core_values_are_numpys_values_at_the_same_multi_indices(tmp_path_factory,
                                                                         volume):
    shape, chunks, dtype, reader, m, seed = volume
    rng = np.random.default_rng(seed)
    data = (rng.standard_normal(shape) * 40).astype(dtype)
    lazy = _open(tmp_path_factory.mktemp("volume") / "v", reader, data, chunks)
    # Unsorted, with repeats; read twice so that cached chunks or pages serve the second.
    indices = np.stack([rng.integers(0, n, m) for n in shape], axis=1).reshape(m, len(shape))
    for _ in range(2):
        values = np.asarray(lazy.evaluate(indices))
        assert values.dtype == np.float64  # out-of-core readers return float64
        np.testing.assert_array_equal(values, data[tuple(indices.T)].astype(np.float64))


@settings(max_examples=60, deadline=None)
@given(max_entries=st.integers(1, 12), seed=st.integers(0, 2**16),
       hashed=st.booleans())
def test_cached_values_are_the_functions_values_whatever_max_entries(max_entries, seed,
                                                                      hashed):
    shape = (16,) * 16 if hashed else (3, 4, 2)  # 2**64 entries: hashed keys
    weights = np.arange(1, len(shape) + 1)
    cache = EvaluationCache(FunctionTensor(lambda idx: idx @ weights + 0.5, shape),
                            max_entries=max_entries)
    rng = np.random.default_rng(seed)
    for _ in range(8):
        m = int(rng.integers(0, 10))  # few distinct entries: repeats and hits are common
        indices = np.stack([rng.integers(0, min(n, 3), m) for n in shape], axis=1)
        np.testing.assert_array_equal(np.asarray(cache.evaluate(indices)),
                                      indices @ weights + 0.5)
        counters = cache.counters
        assert counters.requested == counters.unique + counters.cache_hits


@pytest.mark.parametrize("view", ["quantics", "transposed"])
def test_views_refuse_what_they_cannot_read_naming_their_lazy_argument(view):
    # QuanticsTensor replaced the reason with "got MaskedArray" (a masked array is an
    # array); TransposedTensor named an argument "obj" it does not have, and asked a
    # callable for a "shape" it cannot take.
    from tensorly_cross.lazy import QuanticsTensor, TransposedTensor

    def make(lazy):
        return QuanticsTensor(lazy) if view == "quantics" else TransposedTensor(lazy, (1, 0))

    with pytest.raises(TypeError, match=r"lazy is a masked array.*filled"):
        make(np.ma.masked_array(np.ones((4, 4))))
    with pytest.raises(TypeError, match=r"wrap it.*FunctionTensor\(function, shape\)"):
        make(lambda indices: indices.sum(axis=1))
