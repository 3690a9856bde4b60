"""Mutation audit (s22): the lazy layer, checkpoints, TT files, atomic writes and costs.

Each test below fails on a mutant of the library that the rest of the suite let pass
(the mutant is named in the comment above it); all assert documented behaviour.
"""

import os
import stat
import warnings

import numpy as np
import pytest

from tensorly_cross import (
    ArrayTensor,
    DaskTensor,
    FunctionTensor,
    QuanticsLayout,
    QuanticsTensor,
    TransposedTensor,
    TTFileError,
    choose_path,
    load_tt,
    open_volume,
    qtt_to_tt,
    save_tt,
    ttfile,
)
from tensorly_cross.cost import OUTER_FACTOR, SWEEPS, _Geometry, cross_share, storage_geometry
from tensorly_cross.errors import CheckpointError, KeyCollisionError
from tensorly_cross.lazy import keys as keys_module
from tensorly_cross.lazy.cache import EvaluationCache
from tensorly_cross.lazy.checkpoint import CheckpointedTensor, CheckpointStore
from tensorly_cross.lazy.chunk_cache import ChunkCache
from tensorly_cross.lazy.npy import NpyTensor
from tensorly_cross.lazy.sources import (
    READ_ATTEMPTS,
    ChunkReadError,
    ChunkSource,
    MissingChunksError,
    read_retrying,
)
from tensorly_cross.lazy.squeezed import SqueezedTensor


class Calls:
    """Entries ``1 + sum(i_k * 10**k)`` (distinct, exact); records each batch's size."""

    def __init__(self):
        self.batches = []

    def __call__(self, indices):
        self.batches.append(indices.shape[0])
        return 1.0 + indices @ (10.0 ** np.arange(indices.shape[1]))


def _cache(shape, **options):
    calls = Calls()
    return EvaluationCache(FunctionTensor(calls, shape), **options), calls


# -- lazy/cache.py -----------------------------------------------------------------------


# Mutant: the cache emptied when a batch brings it to ``max_entries`` exactly
# (``len + n_new >= max_entries``): it is emptied only when it would exceed it.
def test_a_cache_filled_exactly_to_max_entries_keeps_every_entry():
    cache, calls = _cache((4, 4), max_entries=4)
    cache.evaluate([[0, 0], [0, 1]])
    cache.evaluate([[1, 0], [1, 1]])
    assert len(cache) == 4
    values = cache.evaluate([[0, 0], [0, 1], [1, 0], [1, 1]])
    np.testing.assert_array_equal(values, [1.0, 11.0, 2.0, 12.0])
    assert calls.batches == [2, 2]
    assert cache.counters.cache_hits == 4


# Mutant: a third batch replaces the small level of sorted keys instead of merging into
# it (the second batch's keys lost): their entries were computed again.
def test_entries_of_every_earlier_batch_stay_cached():
    cache, calls = _cache((6, 6))
    batches = [[[k, 0], [k, 1], [k, 2]] for k in range(5)]
    for batch in batches:
        cache.evaluate(batch)
    assert len(cache) == 15
    values = cache.evaluate(np.concatenate(batches))
    np.testing.assert_array_equal(values, [1.0 + i + 10 * j for i in range(5) for j in range(3)])
    assert calls.batches == [3] * 5
    assert cache.counters.unique == 15


# Mutant: checks of hashed keys built only when keys are exact (``checks is None and
# self._scheme.exact``): ``evaluate_keys`` without checks served a shared key silently.
def test_a_shared_hashed_key_read_by_key_without_checks_is_detected():
    cache, _ = _cache((16,) * 20)
    cache._scheme.weights = np.zeros(20, dtype=np.int64)  # every key collides
    first, second = np.zeros((1, 20), dtype=np.int64), np.ones((1, 20), dtype=np.int64)
    cache.evaluate_keys(cache.pack(first), first.__getitem__)
    with pytest.raises(KeyCollisionError, match=r"multi-index \(1, 1, 1"):
        cache.evaluate_keys(cache.pack(second), second.__getitem__)


# -- lazy/checkpoint.py ------------------------------------------------------------------


# Mutant: a frame whose own head says it ends before the file does no longer taken for
# damage (``_frame_end(...) < len(data)`` dropped): with the next frame's tag damaged too,
# the file was taken for a torn tail and truncated, its last frame lost.
def _two_frame_checkpoint(path):
    """The bytes of a checkpoint of two one-entry frames (each 16 + 16 + 8 bytes)."""
    store = CheckpointStore(path, (5, 5), {})
    store.append(np.array([[1, 2]]), np.array([0.5]))
    store.append(np.array([[3, 4]]), np.array([0.25]))
    store.close()
    return bytearray(path.read_bytes())


def test_a_damaged_frame_whose_head_says_more_follows_is_refused(tmp_path):
    path = tmp_path / "two.ckpt"
    data = _two_frame_checkpoint(path)
    frame = 16 + 16 + 8
    first, second = len(data) - 2 * frame, len(data) - frame
    data[first + 16] ^= 0x01  # the first frame's payload: its checksum fails
    data[second] ^= 0x20  # the second frame's tag: b"bTCH"
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="is damaged: the frame at byte"):
        CheckpointStore(path, (5, 5), {})
    assert path.read_bytes() == bytes(data)


# Mutant: the torn tail left in place (no truncate) before appending: a new frame shorter
# than the torn bytes left their end behind it, a torn frame again at the next opening.
def test_a_torn_tail_is_cut_off_before_a_shorter_frame_is_appended(tmp_path):
    path = tmp_path / "torn.ckpt"
    store = CheckpointStore(path, (5, 5), {})
    store.append(np.array([[1, 2]]), np.array([0.5]))
    one_frame = path.stat().st_size  # appended frames are flushed at once
    store.append(np.arange(40).reshape(20, 2) % 5, np.arange(20.0))  # 16 + 480 bytes
    store.close()
    with open(path, "r+b") as handle:
        handle.truncate(path.stat().st_size - 8)  # the big frame torn
    with pytest.warns(UserWarning, match="dropped a torn last frame"):
        reopened = CheckpointStore(path, (5, 5), {})
    reopened.append(np.array([[3, 4]]), np.array([0.25]))  # 16 + 24 bytes
    reopened.close()
    assert path.stat().st_size == one_frame + 16 + 24
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing torn is left
        again = CheckpointStore(path, (5, 5), {})
    np.testing.assert_array_equal(again.indices, [[1, 2], [3, 4]])
    np.testing.assert_array_equal(again.values, [0.5, 0.25])
    again.close()


def _root_or_real(indices):
    """Real below 2, complex from 2 on (``np.emath.sqrt`` of ``1 - i``)."""
    return np.emath.sqrt(1.0 - indices[:, 0].astype(float)) + indices[:, 1]


# Mutant: restored real values not widened before complex fresh ones are written among
# them (``np.promote_types`` dropped): the fresh entries lost their imaginary parts; and
# mutant: ``n_restored`` counting the whole batch (``found.size``), not the entries found.
def test_a_complex_batch_among_restored_real_entries_keeps_its_imaginary_parts(tmp_path):
    path = tmp_path / "complex.ckpt"
    lazy = FunctionTensor(_root_or_real, (4, 3))
    first = CheckpointedTensor(lazy, CheckpointStore(path, (4, 3), {}))
    first.evaluate([[0, 0], [1, 2]])  # real: stored as float64
    first.store.close()
    second = CheckpointedTensor(lazy, CheckpointStore(path, (4, 3), {}))
    batch = np.array([[0, 0], [3, 1], [1, 2], [2, 0]])
    values = np.asarray(second.evaluate(batch))
    np.testing.assert_allclose(values, [1.0, np.sqrt(2) * 1j + 1, 2.0, 1j], rtol=0, atol=1e-15)
    assert second.n_restored == 2
    second.store.close()


# Mutant: the header's CRC-32 not compared (only its presence checked): a header damaged
# where its JSON stays valid and its fingerprint whole was read as if intact.
def test_a_header_damaged_outside_its_fingerprint_is_refused(tmp_path):
    path = tmp_path / "header.ckpt"
    CheckpointStore(path, (5, 5), {"tol": 0.001}).close()
    data = bytearray(path.read_bytes())
    where = data.index(b'"format": 1') + len(b'"format": ')
    data[where] ^= 0x08  # "format": 9, still JSON
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="its header is damaged"):
        CheckpointStore(path, (5, 5), {"tol": 0.001})


# Mutant: a frame's dtype field not checked against the stored dtypes: a flipped bit there
# (b"<f8" read as b"<b8") raised NumPy's TypeError instead of the checkpoint's refusal.
def test_a_frame_with_a_damaged_dtype_field_is_refused_as_damage(tmp_path):
    path = tmp_path / "dtype.ckpt"
    data = _two_frame_checkpoint(path)
    first = len(data) - 2 * (16 + 16 + 8)
    assert data[first + 8 : first + 11] == b"<f8"
    data[first + 9] ^= 0x04  # b"<b8"
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="is damaged: the frame at byte"):
        CheckpointStore(path, (5, 5), {})


# Mutant: a stored entry served for any multi-index whose key matches (the comparison of
# the multi-indices themselves dropped): with hashed keys that collide (all weights 0
# here), the first stored value was returned for every other entry.
def test_a_checkpoint_serves_an_entry_only_for_its_own_multi_index(tmp_path, monkeypatch):
    monkeypatch.setattr(keys_module, "_odd_weights",
                        lambda rng, n_modes: np.zeros(n_modes, dtype=np.int64))
    shape = (16,) * 16  # 2**64 entries: hashed keys
    path = tmp_path / "hashed.ckpt"
    lazy = FunctionTensor(Calls(), shape)
    first = CheckpointedTensor(lazy, CheckpointStore(path, shape, {}))
    first.evaluate(np.zeros((1, 16), dtype=np.int64))
    first.store.close()
    second = CheckpointedTensor(lazy, CheckpointStore(path, shape, {}))
    batch = np.array([[0] * 16, [1] * 16, [2] + [0] * 15])
    np.testing.assert_array_equal(np.asarray(second.evaluate(batch)),
                                  [1.0, 1.0 + sum(10.0**k for k in range(16)), 3.0])
    assert second.n_restored == 1
    second.store.close()


# -- lazy/chunk_cache.py, lazy/npy.py ----------------------------------------------------


def _block(value, n_bytes=8):
    return np.full(n_bytes // 8, float(value))


# Mutant: a hit not moved to the end (``move_to_end`` dropped): first in, first out
# instead of least recently used.
def test_chunk_cache_evicts_the_least_recently_used_chunk():
    cache = ChunkCache(16)
    cache.put("a", _block(1))
    cache.put("b", _block(2))
    assert cache.get("a")[0] == 1.0  # "a" is now the most recent
    cache.put("c", _block(3))
    assert "a" in cache and "c" in cache and "b" not in cache
    assert cache.n_bytes == 16


# Mutant: evicting while ``n_bytes >= max_bytes``: a cache filled exactly to its bound
# dropped a chunk it had room for.
def test_chunk_cache_filled_exactly_to_its_bound_keeps_every_chunk():
    cache = ChunkCache(24)
    for key in range(3):
        cache.put(key, _block(key))
    assert len(cache) == 3 and cache.n_bytes == 24
    assert all(cache.get(key)[0] == key for key in range(3))


# Mutant: a chunk put twice counted twice (the ``key in self._chunks`` check dropped):
# ``n_bytes`` outgrew the chunks held, and the cache evicted chunks it had room for.
def test_chunk_cache_counts_a_chunk_put_twice_once():
    cache = ChunkCache(24)
    cache.put("a", _block(1))
    cache.put("a", _block(1))
    cache.put("b", _block(2))
    assert cache.n_bytes == 16
    cache.put("c", _block(3))
    assert len(cache) == 3 and "a" in cache


# Mutant: a file cut one byte short taken for a changed file (``size < end - 1``): the
# message no longer said that it is shorter than its header declares.
def test_a_npy_cut_one_byte_short_is_reported_as_truncated(tmp_path):
    path = tmp_path / "cut.npy"
    np.save(path, np.arange(3000.0).reshape(30, 100))
    volume = NpyTensor(path)
    with open(path, "r+b") as handle:
        handle.truncate(path.stat().st_size - 1)
    with pytest.raises(ChunkReadError, match=r"shorter than its header declares: \d+ of"):
        volume.evaluate([[0, 0]])


# Mutant: a chunk larger than the whole cache inserted all the same (its size check
# dropped): it evicted every cached chunk, then itself.
def test_a_chunk_larger_than_the_cache_leaves_the_cached_chunks_alone():
    cache = ChunkCache(16)
    cache.put("a", _block(1))
    cache.put("big", _block(2, n_bytes=24))
    assert "a" in cache and "big" not in cache and cache.n_bytes == 8


# -- lazy/sources.py ---------------------------------------------------------------------


class Flaky(ChunkSource):
    """A 4 x 4 source whose first ``failures`` reads raise ``error``."""

    def __init__(self, error, failures):
        super().__init__((4, 4), np.float64, (2, 2), "flaky")
        self.error, self.failures, self.reads = error, failures, 0

    def _read(self, slices):
        self.reads += 1
        if self.reads <= self.failures:
            raise self.error
        return np.ones((2, 2))


# Mutant: every failed read retried (the ``OSError`` cause check dropped): a chunk that
# is corrupt (a ValueError, not an I/O error) was read READ_ATTEMPTS times for nothing.
def test_only_a_read_that_failed_with_an_io_error_is_tried_again():
    chunk = (slice(0, 2), slice(0, 2))
    hiccup = Flaky(OSError(5, "Input/output error"), READ_ATTEMPTS - 1)
    np.testing.assert_array_equal(read_retrying(hiccup, chunk), np.ones((2, 2)))
    assert hiccup.reads == READ_ATTEMPTS
    corrupt = Flaky(ValueError("bad chunk"), 1)
    with pytest.raises(ChunkReadError, match="ValueError: bad chunk"):
        read_retrying(corrupt, chunk)
    assert corrupt.reads == 1


# Mutant: the chunk grid of an HDF5 dataset counted with floor division: a partial last
# chunk never written went unnoticed, and strict=True read it as the fill value.
def test_strict_refuses_an_hdf5_dataset_whose_partial_last_chunk_was_never_written(tmp_path):
    h5py = pytest.importorskip("h5py")
    path = tmp_path / "partial.h5"
    with h5py.File(path, "w") as handle:
        dataset = handle.create_dataset("data", shape=(5, 4), chunks=(2, 4), dtype="f8")
        dataset[:4] = 1.0  # chunks 0 and 1; the last, of one row, never written
    with pytest.raises(MissingChunksError, match="stores 2 of its 3 chunks"):
        open_volume(str(path), strict=True)
    np.testing.assert_array_equal(open_volume(str(path)).evaluate([[4, 0], [0, 0]]), [0.0, 1.0])


# -- lazy/squeezed.py, lazy/transpose.py -------------------------------------------------


# Mutant: ``kept`` not required to be increasing and distinct: [2, 0] made a view with
# its modes silently swapped, [0, 0] one that read mode 0 twice.
@pytest.mark.parametrize("kept", [[2, 0], [0, 0, 2]])
def test_squeezed_view_refuses_modes_out_of_order_or_repeated(kept):
    with pytest.raises(ValueError, match="kept must be increasing modes"):
        SqueezedTensor(ArrayTensor(np.arange(6.0).reshape(2, 1, 3)), kept)


# Mutant: a bool among int axes let through (its check dropped): ``(True, 0)`` passed as
# the permutation (1, 0).
def test_transposed_view_refuses_a_bool_among_its_axes():
    with pytest.raises(ValueError, match="axes must be a permutation"):
        TransposedTensor(ArrayTensor(np.zeros((2, 3))), (True, 0))


# -- lazy/array.py, lazy/quantics.py -----------------------------------------------------


# Mutant: np.matrix kept as it is (its conversion dropped): two index arrays give a (1, m)
# matrix, not m values.
@pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")
def test_array_tensor_of_a_matrix_reads_one_value_per_multi_index():
    lazy = ArrayTensor(np.matrix(np.arange(6.0).reshape(2, 3)))
    np.testing.assert_array_equal(np.asarray(lazy.evaluate([[0, 1], [1, 2], [1, 0]])),
                                  [1.0, 5.0, 3.0])


# Mutant: zarr and dask arrays indexed with ``array[columns]`` instead of ``vindex``.
@pytest.mark.parametrize("kind", ["zarr", "dask"])
def test_array_tensor_reads_zarr_and_dask_arrays_point_by_point(kind):
    data = np.arange(24.0).reshape(4, 6)
    if kind == "zarr":
        zarr = pytest.importorskip("zarr")
        array = zarr.zeros((4, 6), chunks=(2, 3), dtype="f8")
        array[:] = data
    else:
        array = pytest.importorskip("dask.array").from_array(data, chunks=(2, 3))
    batch = np.array([[0, 1], [3, 5], [2, 0], [0, 1]])
    np.testing.assert_array_equal(np.asarray(ArrayTensor(array).evaluate(batch)),
                                  data[batch[:, 0], batch[:, 1]])


# Mutant: the boundary ranks not checked (``ends != (1, 1)`` dropped): cores of boundary
# rank 2 were merged into a TT that is not one.
def test_qtt_to_tt_refuses_boundary_ranks_other_than_one():
    layout = QuanticsLayout.create((4,))
    cores = [np.ones((2, 2, 3)), np.ones((3, 2, 2))]
    with pytest.raises(ValueError, match="both must be 1"):
        qtt_to_tt(cores, layout)


# -- ttfile.py ---------------------------------------------------------------------------


# Mutant: the bound compared with slack (``total > max_bytes + 8``): cores a few bytes
# over max_bytes were loaded.
def test_load_tt_refuses_cores_one_byte_over_max_bytes(tmp_path):
    cores = [np.ones((1, 3, 2)), np.ones((2, 4, 1))]
    total = sum(core.nbytes for core in cores)  # 112
    path = save_tt(str(tmp_path / "bound.tt.npz"), cores)
    with pytest.raises(TTFileError, match=f"would take {total} bytes"):
        load_tt(path, max_bytes=total - 1)
    tt, _ = load_tt(path, max_bytes=total)
    assert tt.rank == (1, 2, 1)


# Mutant: a reserved key compared by value only: ``format_version=1.0`` or ``n_cores=True``
# (equal to the file's 1) was accepted and silently replaced by the file's int.
@pytest.mark.parametrize("key, value", [("format_version", 1.0), ("n_cores", True)])
def test_save_tt_refuses_a_reserved_key_of_another_type(tmp_path, key, value):
    with pytest.raises(TTFileError, match=f"metadata key '{key}' is set by the file format"):
        save_tt(str(tmp_path / "reserved.tt.npz"), [np.ones((1, 3, 1))], {key: value})
    assert not (tmp_path / "reserved.tt.npz").exists()


# Mutant: a metadata shape size above 2**63 - 1 let through its range check: refused
# later, or not, for another reason than the one the format states.
def test_a_metadata_shape_beyond_int64_is_refused_as_such(tmp_path):
    with pytest.raises(TTFileError, match=r"is not a list of ints in \[1, 2\*\*63 - 1\]"):
        save_tt(str(tmp_path / "huge.tt.npz"), [np.ones((1, 2, 1))],
                {"shape": [2**63], "quantics": {"order": "grouped"}})


# Mutant: the metadata record's size not compared with MAX_META_BYTES before it is read
# (a forged header of gigabytes was decoded).
def test_load_tt_refuses_a_metadata_record_over_the_bound_before_reading_it(tmp_path,
                                                                             monkeypatch):
    path = save_tt(str(tmp_path / "meta.tt.npz"), [np.ones((1, 2, 1))], {"note": "x" * 200})
    monkeypatch.setattr(ttfile, "MAX_META_BYTES", 100)
    with pytest.raises(TTFileError, match="is not a JSON text of at most 100 bytes"):
        load_tt(path)


# Mutant: a quantics shape of more modes than the file has cores not refused up front
# (the layout was worked out first, and the file refused for another reason).
def test_a_quantics_shape_with_more_modes_than_cores_is_refused_up_front(tmp_path):
    with pytest.raises(TTFileError, match="has 2 modes, more than its 1 cores"):
        save_tt(str(tmp_path / "q.tt.npz"), [np.ones((1, 2, 1))],
                {"shape": [2, 1], "quantics": {"order": "grouped"}})


# -- _atomic.py --------------------------------------------------------------------------


# Mutant: the temporary file created with mode 0o644 instead of 0o666: the umask no
# longer decided the mode (a group-writable umask gave a file the group cannot write).
def test_a_saved_file_gets_the_mode_the_umask_gives(tmp_path):
    previous = os.umask(0o002)
    try:
        path = save_tt(str(tmp_path / "mode.tt.npz"), [np.ones((1, 2, 1))])
    finally:
        os.umask(previous)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o664


# -- cost.py -----------------------------------------------------------------------------


# Mutant: the fiber counts of the inner and the outer modes swapped: per sweep, a
# least-squares cross reads ``(oversample rank)^2`` fibers along an inner mode and
# ``OUTER_FACTOR oversample rank`` along the first and the last.
def test_cross_share_counts_square_fibers_inside_and_linear_ones_at_the_ends():
    geometry = _Geometry((64, 64, 64), (8, 8, 8))  # 64 columns of units along each mode
    side = 1.5 * 4
    fibers = SWEEPS * (2 * OUTER_FACTOR * side + side**2)
    expected = 1.0 - np.exp(-fibers / 64)
    assert cross_share(geometry, 4, 1.5, heldout=0) == pytest.approx(expected, rel=1e-12)
    skewed = _Geometry((64, 64, 64), (64, 1, 1))  # whole fibers along mode 0 only
    hit_first = 1.0 - np.exp(-SWEEPS * OUTER_FACTOR * side / 64**2)
    hit_inner = 1.0 - np.exp(-SWEEPS * side**2 / 64)
    hit_last = 1.0 - np.exp(-SWEEPS * OUTER_FACTOR * side / 64)
    missed = (1 - hit_first) * (1 - hit_inner) * (1 - hit_last)
    assert cross_share(skewed, 4, 1.5, heldout=0) == pytest.approx(1 - missed, rel=1e-12)


# Mutant: a store's unit taken as its smallest chunk (``min``), the short last one, not
# its chunk shape.
def test_storage_geometry_of_a_store_with_a_short_last_chunk_is_its_chunk_shape():
    zarr = pytest.importorskip("zarr")
    array = zarr.zeros((10, 12), chunks=(4, 5), dtype="f8")
    geometry = storage_geometry(open_volume(array))
    assert geometry.shape == (10, 12) and geometry.unit_shape == (4, 5)


# Mutant: the ``.gz`` suffix compared case-sensitively: ``SCAN.NII.GZ``, decompressed
# whole by any reader, was estimated as if read in place.
def test_an_upper_case_gzip_path_is_streamed():
    volume = FunctionTensor(lambda idx: idx.sum(axis=1) * 1.0, (64, 64, 64))
    choice = choose_path(volume, path="SCAN.NII.GZ")
    assert choice.method == "stream" and "gzip" in choice.reason


# -- io.py -------------------------------------------------------------------------------


# Mutant: ``file.h5:/name`` split at its first colon, not its last: a folder whose name
# holds a colon made the path not found.
def test_an_hdf5_dataset_path_is_split_at_the_last_colon(tmp_path):
    h5py = pytest.importorskip("h5py")
    folder = tmp_path / "run:2"
    folder.mkdir()
    with h5py.File(folder / "v.h5", "w") as handle:
        handle["one"] = np.zeros((3, 4))
        handle["two"] = np.arange(12.0).reshape(3, 4)
    volume = open_volume(f"{folder}/v.h5:/two")
    np.testing.assert_array_equal(volume.evaluate([[2, 3], [0, 1]]), [11.0, 1.0])


# Mutant: a file of several datasets opened without naming one (``len(names) < 1``):
# the first dataset was read silently.
def test_an_hdf5_file_of_several_datasets_needs_one_named(tmp_path):
    h5py = pytest.importorskip("h5py")
    path = tmp_path / "two.h5"
    with h5py.File(path, "w") as handle:
        handle["a"] = np.zeros((3, 4))
        handle["b"] = np.ones((3, 4))
    with pytest.raises(KeyError, match=r"holds 2 datasets \['a', 'b'\]"):
        open_volume(str(path))


# Mutant: a NIfTI scaled by an intercept only (slope 1) not taken as scaled: its volume
# was declared int16, the dtype of its stored integers, though it reads them plus 0.5.
def test_a_nifti_scaled_by_an_intercept_only_reads_as_float64(tmp_path):
    nibabel = pytest.importorskip("nibabel")
    data = np.arange(24, dtype=np.int16).reshape(2, 3, 4)
    image = nibabel.Nifti1Image(data, np.eye(4))
    image.header.set_data_dtype(np.int16)
    image.header.set_slope_inter(1.0, 0.5)
    path = str(tmp_path / "intercept.nii")
    nibabel.save(image, path)
    volume = open_volume(path)
    assert volume.source.dtype == np.float64
    np.testing.assert_array_equal(volume.evaluate([[1, 2, 3], [0, 0, 0]]), [23.5, 0.5])


# Mutant: an array inside a zarr group not recognised by its path (``_inside_zarr``
# dropped): ``group.zarr/name`` was refused for its suffix.
def test_an_array_of_a_zarr_group_opens_by_its_path(tmp_path):
    zarr = pytest.importorskip("zarr")
    group = zarr.open_group(str(tmp_path / "group.zarr"), mode="w")
    array = group.create_array("scan", shape=(4, 6), chunks=(2, 3), dtype="f8")
    array[:] = np.arange(24.0).reshape(4, 6)
    volume = open_volume(str(tmp_path / "group.zarr" / "scan"))
    np.testing.assert_array_equal(volume.evaluate([[3, 5], [1, 0]]), [23.0, 6.0])


# Mutant: only real cores checked for NaN and inf (``kind not in "f"``): a complex core
# holding NaN was saved (and loaded) as a result.
def test_a_complex_core_holding_nan_is_refused_on_saving_and_loading(tmp_path):
    core = np.ones((1, 3, 1), dtype=complex)
    core[0, 1, 0] = complex(1.0, np.nan)
    with pytest.raises(ValueError, match="core 0 .* holds 1 non-finite entry"):
        save_tt(str(tmp_path / "nan.tt.npz"), [core])
    path = tmp_path / "forged.tt.npz"
    meta = b'{"format": "tensorly-cross-tt", "format_version": 1, "n_cores": 1}'
    np.savez(path, core_0=core, meta=np.frombuffer(meta, dtype=np.uint8))
    with pytest.raises(TTFileError, match="holds 1 non-finite entry"):
        load_tt(str(path))


# Mutant: a view of stored data whose reads are not modelled (a quantics view of a .npy)
# taken for data in memory: "stream" was chosen, which cannot read this view.
def test_a_quantics_view_of_a_stored_volume_is_not_taken_for_memory(tmp_path):
    path = tmp_path / "volume.npy"
    np.save(path, np.ones((16, 16)))
    choice = choose_path(QuanticsTensor(open_volume(str(path))))
    assert choice.method == "lsq" and "not estimated" in choice.reason


# Mutant: ``keys()`` returning the levels' keys as they lie, not sorted.
def test_cache_keys_are_sorted_across_levels():
    cache, _ = _cache((4, 4))
    cache.evaluate([[3, 0], [3, 1]])
    cache.evaluate([[0, 2], [1, 1]])
    np.testing.assert_array_equal(cache.keys(), [2, 5, 12, 13])


# Mutant: bools in a metadata shape converted to ints (``int(True)``) instead of refused:
# a shape (True, 3) was stored as [1, 3].
def test_save_tt_refuses_a_bool_in_the_metadata_shape(tmp_path):
    with pytest.raises(TTFileError, match="is not a list of ints"):
        save_tt(str(tmp_path / "bool.tt.npz"), [np.ones((1, 1, 1)), np.ones((1, 3, 1))],
                {"shape": (True, 3)})


# Mutant: the channel mode placed on the grid's last digit (``n_digits - 1``), not after
# it.
def test_a_layout_with_channels_keeps_the_channel_mode_last_and_whole():
    layout = QuanticsLayout.with_channels((4, 6), 5)
    assert layout.quantics_shape == (2, 2, 2, 3, 5)
    indices = np.array([[3, 5, 4], [1, 2, 0], [0, 0, 3]])
    quantics = layout.to_quantics(indices)
    np.testing.assert_array_equal(quantics[:, -1], indices[:, -1])
    np.testing.assert_array_equal(layout.to_original(quantics), indices)


# Mutant: a dask array of unknown chunk sizes not refused up front: it failed later with
# a message that named neither the cause nor the cure.
def test_a_dask_array_of_unknown_chunk_sizes_is_refused_with_the_cure():
    da = pytest.importorskip("dask.array")
    data = da.from_array(np.arange(16.0).reshape(4, 4), chunks=2)
    masked = data[data[:, 0] > 3]  # rows kept unknown until computed
    with pytest.raises(ValueError, match=r"compute_chunk_sizes\(\) first"):
        DaskTensor(masked)
