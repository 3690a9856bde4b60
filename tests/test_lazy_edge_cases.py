"""Tests of lazy tensors: function, array and view tensors and how they are read."""

from dataclasses import dataclass

import numpy as np
import pytest
import zarr
from hypothesis import given, settings
from hypothesis import strategies as st

import tensorly_cross as tlc
from tensorly_cross.lazy import ArrayTensor, DaskTensor, EvaluationCache


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


class _Reshaped(tlc.LazyTensor):
    """An array read under another shape; ``_shape`` is the array's own."""

    def __init__(self, array, shape):
        super().__init__(shape)
        self.array, self._shape = array, array.shape

    def _evaluate(self, indices):
        return self.array.reshape(-1)[np.ravel_multi_index(indices.T, self.shape)]


def test_a_subclass_attribute_named_underscore_shape_leaves_the_shape_alone():
    # Before: shape (4, 6), the subclass's _shape, in place of the (2, 3, 4) it set.
    lazy = _Reshaped(np.arange(1.0, 25.0).reshape(4, 6), (2, 3, 4))
    assert lazy.shape == (2, 3, 4)
    assert lazy.evaluate([[1, 2, 3]]) == 24.0


@pytest.mark.parametrize("frozen", [False, True])
def test_a_dataclass_subclass_with_a_shape_field_is_made_and_checked(frozen):
    # Before: TypeError "non-default argument 'scale' follows default argument" where the
    # class was defined; frozen, FrozenInstanceError "cannot assign to field '_shape'"
    # where an instance was made.
    @dataclass(frozen=frozen)
    class Scaled(tlc.LazyTensor):
        shape: tuple
        scale: float

        def _evaluate(self, indices):
            return self.scale * np.cos(indices.sum(axis=1) / 5.0)

    lazy = Scaled(np.array([6, 7, 8]), 2.0)
    assert lazy.shape == (6, 7, 8) and all(type(size) is int for size in lazy.shape)
    tt = tlc.tt_cross(lazy, rank=2, tol=1e-10, random_state=0)
    indices = np.indices((6, 7, 8)).reshape(3, -1).T
    np.testing.assert_allclose(tlc.tt_entries(tt, indices), lazy.evaluate(indices),
                               atol=1e-9)
