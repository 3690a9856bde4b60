"""No silent wrong result, no crash, no hang: each case of the reliability audit (issue 15)."""

import os
import subprocess
import sys
import threading
import warnings

import numpy as np
import pytest
import tensorly as tl
from hypothesis import given, settings
from hypothesis import strategies as st

import tensorly_cross as tlc
from tensorly_cross.cross.stopping import heldout_bound, scaled_norm
from tensorly_cross.errors import UnseenStructureWarning
from tensorly_cross.lazy.sources import ChunkReadError, MissingChunksError

from ._helpers_shared import save_npy
from .conftest import host


class CountingFunction:
    """A vectorised function that counts the entries it is asked for."""

    def __init__(self, function):
        self.function = function
        self.received = 0

    def __call__(self, indices):
        self.received += indices.shape[0]
        return self.function(indices)


def smooth(indices):
    return np.cos(0.3 * indices.sum(axis=1)) + 0.1 * indices[:, 0] ** 2


def full_grid(shape):
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1)
    return grid.reshape(-1, len(shape))


# --- silent wrong results --------------------------------------------------------------


def test_n_evals_counts_the_initial_cores_read_after_max_evals_stops_the_first_sweep():
    function = CountingFunction(smooth)
    _, info = tlc.tt_cross(function, shape=(4, 4), max_evals=10, val_size=0,
                           pivot_search="full", return_info=True)
    assert info.stop_reason == "max_evals"
    assert info.n_evals == function.received > 0


@pytest.mark.parametrize("method", ["tci", "auto"])
def test_without_held_out_entries_the_tci_does_not_start_on_a_zero_background(method):
    # A blob on an exactly zero background, as an image's: the corner (0, 0, 0) is zero.
    shape = (24, 20, 22)
    centre = np.array([12.0, 10.0, 11.0])

    def blob(indices):
        radius2 = (((indices - centre) / 4.0) ** 2).sum(axis=1)
        return np.where(radius2 < 4.0, np.exp(-radius2), 0.0)

    tt = tlc.tt_cross(tlc.FunctionTensor(blob, shape), tol=1e-3, method=method, val_size=0,
                      n_iter_max=4, random_state=0)
    exact = blob(full_grid(shape))
    error = np.linalg.norm(host(tlc.tt_entries(tt, full_grid(shape))) - exact)
    assert error <= 0.05 * np.linalg.norm(exact)  # all-zero before: error 1.0


def test_held_out_error_of_huge_values_is_finite_and_the_run_stops_on_tol():
    _, info = tlc.tt_cross(lambda i: 1e300 * (1.0 + np.sin(i.sum(axis=1))), shape=(10, 10, 10),
                           random_state=0, n_iter_max=6, return_info=True)
    assert all(np.isfinite(info.val_errors))
    assert info.stop_reason == "tol"


def test_held_out_error_of_subnormal_values_is_not_reported_as_zero():
    def tiny(indices):
        return 1e-320 * (1.0 + indices.sum(axis=1) % 3)

    with pytest.warns(tlc.SubnormalValuesWarning, match="about 4 significant digits"):
        tt, info = tlc.tt_cross(tiny, shape=(10, 10, 10), random_state=0, n_iter_max=6,
                                return_info=True)
    # The first sweep (rank 1 from one pivot) cannot be exact: its error must show.
    assert info.val_errors[0] > 0.1
    grid = full_grid((10, 10, 10))
    true_error = scaled_norm(host(tlc.tt_entries(tt, grid)) - tiny(grid)) / scaled_norm(
        tiny(grid))
    assert true_error <= max(10 * info.val_error, 1e-6)


@given(exponent=st.integers(-330, -250), dtype=st.sampled_from(["float32", "float64"]),
       seed=st.integers(0, 2**16))
def test_subnormal_values_and_only_they_are_warned_of(exponent, dtype, seed):
    """Values below the smallest normal float keep a few digits: a cross on them says so;
    normal values, however small, and all-zero tensors give no such warning."""
    dtype = np.dtype(dtype)
    offset = 0 if dtype == np.float64 else 270  # float32's range: subnormal below 1.2e-38
    scale = 10.0 ** (exponent + offset)
    values = (np.random.default_rng(seed).uniform(1.0, 2.0, (6, 7, 5)) * scale).astype(dtype)
    subnormal = 0 < np.abs(values).max() < np.finfo(dtype).smallest_normal
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tlc.tt_cross(tlc.lazy_tensor(values), rank=2, random_state=0)
        tlc.tt_cross(tlc.lazy_tensor(np.zeros((4, 4, 4), dtype=dtype)), rank=1, random_state=0)
    warned = [w for w in caught if issubclass(w.category, tlc.SubnormalValuesWarning)]
    assert len(warned) == int(subnormal)
    if warned:
        assert str(dtype) in str(warned[0].message)


@pytest.mark.parametrize("values, norm", [([1e300, 1e300, -1e300], np.sqrt(3) * 1e300),
                                         ([1e-320, 2e-320], np.sqrt(5) * 1e-320),
                                         ([3.0, 4.0], 5.0), ([], 0.0)])
def test_scaled_norm_is_the_two_norm_without_overflow_or_underflow(values, norm):
    assert np.isclose(scaled_norm(np.asarray(values, dtype=float)), norm, rtol=1e-3, atol=0)


@given(exponent=st.integers(-300, 300), seed=st.integers(0, 2**16))
def test_the_relative_held_out_error_does_not_overflow_where_the_norms_do(exponent, seed):
    # 1000 values near 1e307 have a 2-norm past float64's range: the ratio came out 0 (a
    # wrong TT passed any tolerance). It is the ratio of the unscaled vectors at any scale.
    from tensorly_cross.cross.stopping import _scaled_parts, relative_norm

    rng = np.random.default_rng(seed)
    reference, difference = rng.standard_normal(1000), 1e-3 * rng.standard_normal(1000)
    expected = np.linalg.norm(difference) / np.linalg.norm(reference)
    for scale in (10.0 ** exponent, 1e307):
        got = relative_norm(difference * scale, _scaled_parts(reference * scale))
        assert got == pytest.approx(expected, rel=1e-9)


def test_an_alss_held_out_error_near_the_top_of_float64_is_not_zero():
    shape = (12, 11, 10, 9)

    def near_the_top(indices):
        x = indices / np.array(shape, float)
        return 1e307 * (1.0 / (1 + 10 * np.sum(x**2, 1)) + np.sin(7 * x[:, 0] * x[:, 3]))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tt, info = tlc.tt_cross(near_the_top, shape=shape, rank=4, tol=1e-8, random_state=0,
                                return_info=True)
    assert info.stop_reason != "tol" and info.val_error > 1e-3  # 0.0 and "tol" before


def test_heldout_bound_is_the_95_percent_miss_fraction():
    for n in (1, 10, 200, 1000, 10**6):
        p = heldout_bound(n)
        assert np.isclose((1 - p) ** n, 0.05)
    assert np.isclose(heldout_bound(1000), 3e-3, rtol=0.01)
    assert heldout_bound(0) == 1.0


def test_cross_info_carries_the_held_out_size_and_bound_in_its_repr():
    _, info = tlc.tt_cross(smooth, shape=(8, 8, 8), random_state=0, return_info=True)
    assert info.n_heldout >= 199  # a fifth of 1000, less the TCI start pivot
    assert info.heldout_bound == heldout_bound(info.n_heldout)
    assert f"n_heldout={info.n_heldout}" in repr(info)
    assert f"heldout_bound={info.heldout_bound:.3g}" in repr(info)
    assert info.to_dict()["heldout_bound"] == info.heldout_bound


def test_a_pass_on_an_all_zero_sample_warns_that_the_sample_shows_no_scale():
    def one_entry(indices):
        values = np.zeros(indices.shape[0])
        values[(indices == [3, 5, 7]).all(axis=1)] = 1.0
        return values

    with pytest.warns(UnseenStructureWarning, match="held-out entries are 0") as record:
        _, info = tlc.tt_cross(one_entry, shape=(30, 30, 30), random_state=0,
                               return_info=True)
    assert info.stop_reason == "tol"
    assert f"{info.heldout_bound:.3g}" in str(record[0].message)


class HiddenSpike:
    """1 everywhere but ``1 + height`` (1001 by default) at one entry: the first entry the
    cross reads that the first stage of held-out entries (the first call) did not, fixed
    from then on."""

    def __init__(self, height=1000.0):
        self.height, self.heldout, self.spot = height, None, None

    def __call__(self, indices):
        rows = [tuple(int(i) for i in row) for row in indices]
        if self.heldout is None:
            self.heldout = set(rows)
        elif self.spot is None:
            self.spot = next(row for row in rows if row not in self.heldout)
        values = np.ones(indices.shape[0])
        if self.spot is not None:
            values[(indices == self.spot).all(axis=1)] += self.height
        return values


def test_a_pass_warns_when_the_cross_read_far_more_than_the_held_out_sample_saw():
    with pytest.warns(UnseenStructureWarning, match="1e\\+03x the largest held-out"):
        _, info = tlc.tt_cross(HiddenSpike(), shape=(30, 30, 30), random_state=0,
                               return_info=True)
    assert info.stop_reason == "tol"


def test_no_unseen_structure_warning_on_a_smooth_tensor_or_one_read_whole():
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnseenStructureWarning)
        tlc.tt_cross(smooth, shape=(8, 8, 8), random_state=0)
        tlc.tt_cross(np.zeros((4, 4)), random_state=0)  # every entry read: nothing unseen


def test_a_float_mode_size_is_refused_not_truncated():
    with pytest.raises(TypeError, match=r"shape\[0\] must be an int, got 4.7"):
        tlc.FunctionTensor(smooth, (4.7, 4))
    with pytest.raises(TypeError, match=r"shape\[0\] must be an int"):
        tlc.tt_cross(smooth, shape=(4.7, 4))
    assert tlc.FunctionTensor(smooth, (np.int64(4), 4)).shape == (4, 4)


@pytest.mark.parametrize("index, message", [([[-1, 0]], r"\(-1, 0\) is out of range"),
                                            ([[0, 3]], r"\(0, 3\) is out of range"),
                                            ([[0.5, 0]], "must be integers"),
                                            ([0, 0], r"shape \(m, 2\)")])
def test_tt_entries_refuses_indices_outside_the_tensor(backend, index, message):
    tt = tlc.tt_cross(tl.tensor(np.ones((3, 3))), rank=1, random_state=0)
    with pytest.raises(ValueError, match=f"tt_entries: .*{message}"):
        tlc.tt_entries(tt, index)


def test_a_npy_truncated_after_opening_raises_instead_of_reading_zeros(tmp_path):
    path = save_npy(tmp_path / "v.npy", np.arange(1.0, 2001.0))
    tensor = tlc.lazy.npy.NpyTensor(path, cache_bytes=0)
    os.truncate(path, 4096)  # the header and the first ~500 values remain
    with pytest.raises(ChunkReadError, match="truncated after it was opened"):
        tensor.evaluate(np.array([[1999]]))
    # Nor what is left: entries read before the cut may be of another version (s20).
    with pytest.raises(ChunkReadError, match="truncated after it was opened"):
        tensor.evaluate(np.array([[10]]))


def test_threads_sharing_one_evaluation_cache_get_the_right_values():
    shape = (40, 40, 40)

    def linear(indices):
        return indices @ np.array([1600.0, 40.0, 1.0])

    cache = tlc.EvaluationCache(tlc.FunctionTensor(linear, shape))
    wrong = []

    def work(seed):
        rng = np.random.default_rng(seed)
        for _ in range(60):
            indices = np.stack([rng.integers(n, size=100) for n in shape], axis=1)
            wrong.append(int((host(cache.evaluate(indices)) != linear(indices)).sum()))

    threads = [threading.Thread(target=work, args=(seed,)) for seed in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(wrong) == 0
    assert cache.counters.unique == len(cache)
    keys = cache.keys()
    stored = np.stack(np.unravel_index(keys, shape), axis=1)
    assert np.array_equal(host(cache.evaluate(stored)), linear(stored))


def test_threads_crossing_one_shared_cache_all_get_accurate_tts():
    shape = (12, 12, 12, 12)

    def function(indices):
        return np.sin(0.1 * indices.sum(axis=1)) + 0.01 * indices[:, 0] * indices[:, 1]

    rng = np.random.default_rng(99)
    samples = np.stack([rng.integers(n, size=500) for n in shape], axis=1)
    exact = function(samples)
    for _ in range(5):  # a race shows in about half the rounds without the lock
        cache = tlc.EvaluationCache(tlc.FunctionTensor(function, shape))
        results = [None] * 4

        def work(seed, cache=cache, results=results):
            results[seed] = tlc.tt_cross(cache, tol=1e-8, random_state=seed)

        threads = [threading.Thread(target=work, args=(seed,)) for seed in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for tt in results:
            approx = host(tlc.tt_entries(tt, samples))
            assert np.linalg.norm(approx - exact) / np.linalg.norm(exact) < 1e-6


# --- crashes ---------------------------------------------------------------------------


@pytest.mark.parametrize("function, shape", [
    (lambda i: i.sum(axis=1).astype(float), (8, 8, 8)),
    (lambda i: np.sin(0.1 * i.sum(axis=1)), (16, 16, 16, 16)),
    (lambda i: 1.0 / (1.0 + i.sum(axis=1)), (20, 20, 20, 20)),
])
def test_tol_zero_with_the_default_tci_runs_to_a_result(backend, function, shape):
    tt, info = tlc.tt_cross(lambda i: tl.tensor(function(i)), shape=shape, tol=0,
                            random_state=0, n_iter_max=8, return_info=True)
    grid_samples = np.random.default_rng(1).integers(0, shape[0], size=(500, len(shape)))
    exact = function(grid_samples)
    error = np.linalg.norm(host(tlc.tt_entries(tt, grid_samples)) - exact)
    assert error / np.linalg.norm(exact) < 1e-8
    assert info.stop_reason in ("tol", "stalled", "n_iter_max")


@pytest.mark.parametrize("values", [lambda m: np.array(["a"] * m),
                                    lambda m: np.array([1.0] * m, dtype=object),
                                    lambda m: ["x"] * m])
def test_a_function_returning_strings_or_objects_raises_a_clear_type_error(values):
    with pytest.raises(TypeError, match="FunctionTensor .*returned values of dtype"):
        tlc.tt_cross(lambda indices: values(indices.shape[0]), shape=(4, 4))


@pytest.mark.parametrize("method, rank", [("tci", None), ("als", 2), ("block", 2)])
@pytest.mark.parametrize("dtype", [np.bool_, np.int16, np.int64])
def test_integer_and_bool_values_give_floating_cores_that_interpolate(backend, method, rank,
                                                                      dtype):
    def function(indices):
        return tl.tensor((7 * np.sin(0.3 * indices.sum(axis=1)) > 0.5).astype(dtype)
                         if dtype == np.bool_ else
                         np.round(7 * np.sin(0.3 * indices.sum(axis=1))).astype(dtype))

    shape = (6, 5, 4)
    tt, info = tlc.tt_cross(function, shape=shape, method=method, rank=rank, random_state=0,
                            return_info=True)
    assert all(host(core).dtype == np.float64 for core in tt)
    if method == "tci":  # exact at full rank: every entry within round-off
        grid = full_grid(shape)
        exact = host(function(grid)).astype(np.float64)
        np.testing.assert_allclose(host(tlc.tt_entries(tt, grid)), exact, atol=1e-9)


def test_a_budget_below_the_first_held_out_read_is_a_value_error():
    with pytest.raises(ValueError, match=r"max_evals=2 is too small for the 3 held-out "
                                         r"entries.*whole positions of 3 channels"):
        tlc.tt_cross(smooth, shape=(1, 3), method="block", rank=1, max_evals=2, val_size=1)


def test_a_mode_too_large_for_fibers_is_refused_before_allocating():
    for method, rank in (("tci", None), ("als", 2)):
        with pytest.raises(ValueError, match="mode of size 1099511627776.*QuanticsTensor"):
            tlc.tt_cross(lambda i: np.ones(i.shape[0]), shape=(2**40, 4, 3), method=method,
                         rank=rank, random_state=0)


@pytest.mark.parametrize("rank, error, message", [
    (2.0, TypeError, "rank must be an int or a list"),
    ([1, 2.5, 1], TypeError, r"rank\[1\] must be an integer"),
    ("2", TypeError, "rank must be an int or a list"),
])
def test_tensor_train_cross_refuses_a_bad_rank_with_a_clear_message(rank, error, message):
    with pytest.raises(error, match=message):
        tlc.tensor_train_cross(tl.tensor(np.ones((4, 4, 4))), rank)


@pytest.mark.parametrize("rank", [[1, 2.7, 2, 1], [1, 2.0, 2, 1], [1, True, 2, 1]])
def test_tt_cross_refuses_a_rank_list_of_non_integers_instead_of_truncating(rank):
    with pytest.raises(TypeError, match=r"rank must be an int or a list of 4 ints"):
        tlc.tt_cross(tlc.lazy_tensor(np.ones((4, 4, 4))), rank=rank, random_state=0)


def test_tensor_train_cross_takes_a_numpy_integer_rank(backend):
    tensor = tl.tensor(np.random.default_rng(0).standard_normal((4, 4, 4)))
    assert tlc.tensor_train_cross(tensor, np.int64(2), random_state=0).rank == (1, 2, 2, 1)


@pytest.mark.parametrize("tensor", [None, [[1.0, 2.0], [3.0, 4.0]], "volume.npy"])
def test_tensor_train_cross_refuses_what_is_not_a_tensor(tensor):
    with pytest.raises(TypeError, match="input_tensor must be a tensor"):
        tlc.tensor_train_cross(tensor, 2)


def test_a_corrupt_zarr_json_names_the_file(tmp_path):
    zarr = pytest.importorskip("zarr")
    path = tmp_path / "v.zarr"
    zarr.create_array(str(path), shape=(8, 8), chunks=(4, 4), dtype="f4")[:] = 1.0
    with open(path / "zarr.json", "a") as stream:
        stream.write("garbage")
    with pytest.raises(ValueError, match=r"v.zarr'.*zarr.json.*cannot be read"):
        tlc.open_volume(path)


@pytest.mark.parametrize("content", [os.urandom(5000), b"\x93NUMPY\x01\x00" + os.urandom(300)])
def test_a_npy_of_random_bytes_is_refused_without_mentioning_pickle(tmp_path, content):
    path = tmp_path / "noise.npy"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="noise.npy") as caught:
        tlc.open_volume(path)
    assert "pickle" not in str(caught.value)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_open_volume_refuses_a_fifo(tmp_path):
    names = ["pipe.npy", "pipe.h5", "pipe.nii"]
    for name in names:
        os.mkfifo(tmp_path / name)
    code = ("import sys, tensorly_cross as tlc\n"
            "for path in sys.argv[1:]:\n"
            "    try:\n        tlc.open_volume(path)\n"
            "    except ValueError as error:\n        print(error)\n")
    # In a subprocess with a timeout: a regression must fail, not hang the suite.
    result = subprocess.run([sys.executable, "-c", code, *(str(tmp_path / n) for n in names)],
                            capture_output=True, text=True, timeout=60)
    assert result.stdout.count("not a regular file") == len(names), result.stderr


# --- opening volumes -------------------------------------------------------------------


def test_open_volume_reads_a_dask_array():
    da = pytest.importorskip("dask.array")
    dense = np.random.default_rng(0).standard_normal((10, 12, 14))
    volume = tlc.open_volume(da.from_array(dense, chunks=(5, 6, 7)))
    indices = full_grid((10, 12, 14))[::37]
    np.testing.assert_array_equal(host(volume.evaluate(indices)), dense[tuple(indices.T)])


def test_zarr_strict_mode_refuses_missing_chunks_that_read_as_fill_values(tmp_path):
    zarr = pytest.importorskip("zarr")
    path = str(tmp_path / "partial.zarr")
    array = zarr.create_array(path, shape=(8, 8), chunks=(4, 4), dtype="f4", fill_value=0.0)
    array[:4] = 1.0  # two of the four chunks written
    lenient = tlc.open_volume(path)
    assert host(lenient.evaluate(np.array([[7, 7]])))[0] == 0.0  # zarr's rule: fill value
    with pytest.raises(MissingChunksError, match="stores 2 of its 4 chunks"):
        tlc.open_volume(path, strict=True)
    with pytest.raises(MissingChunksError):
        tlc.open_volume(zarr.open_array(path, mode="r"), strict=True)
    array[4:] = 2.0
    complete = tlc.open_volume(path, strict=True)
    assert host(complete.evaluate(np.array([[7, 7]])))[0] == 2.0


def test_hdf5_strict_mode_refuses_missing_chunks_that_read_as_fill_values(tmp_path):
    h5py = pytest.importorskip("h5py")
    pytest.importorskip("dask")
    path = str(tmp_path / "partial.h5")
    with h5py.File(path, "w") as handle:
        dataset = handle.create_dataset("v", shape=(8, 8), chunks=(4, 4), dtype="f4",
                                        fillvalue=0.0)
        dataset[:4] = 1.0  # two of the four chunks written
        handle.create_dataset("never", shape=(8, 8), dtype="f4")  # contiguous, unwritten
        handle.create_dataset("whole", data=np.ones((8, 8)))  # contiguous, written
        handle.create_dataset("full", data=np.full((8, 8), 2.0), chunks=(4, 4))
    lenient = tlc.open_volume(path, dataset="v")
    assert host(lenient.evaluate(np.array([[7, 7]])))[0] == 0.0  # HDF5's rule: fill value
    with pytest.raises(MissingChunksError, match="stores 2 of its 4 chunks"):
        tlc.open_volume(path, dataset="v", strict=True)
    with pytest.raises(MissingChunksError, match="never written"):
        tlc.open_volume(f"{path}:/never", strict=True)
    with h5py.File(path, "r") as handle:  # an opened dataset, too
        with pytest.raises(MissingChunksError, match="stores 2 of its 4 chunks"):
            tlc.open_volume(handle["v"], strict=True)
    assert host(tlc.open_volume(path, dataset="whole", strict=True).evaluate(
        np.array([[7, 7]])))[0] == 1.0
    complete = tlc.open_volume(path, dataset="full", strict=True)  # every chunk written
    assert host(complete.evaluate(np.array([[7, 7]])))[0] == 2.0


def test_hdf5_strict_mode_refuses_a_virtual_dataset_it_cannot_check(tmp_path):
    h5py = pytest.importorskip("h5py")
    pytest.importorskip("dask")
    source, path = str(tmp_path / "source.h5"), str(tmp_path / "virtual.h5")
    with h5py.File(source, "w") as handle:
        handle.create_dataset("v", data=np.ones((4, 4)))
    layout = h5py.VirtualLayout(shape=(4, 4), dtype="f8")
    layout[:] = h5py.VirtualSource(source, "v", shape=(4, 4))
    with h5py.File(path, "w") as handle:
        handle.create_virtual_dataset("v", layout)
    assert host(tlc.open_volume(path).evaluate(np.array([[3, 3]])))[0] == 1.0
    with pytest.raises(ValueError, match="virtual dataset"):
        tlc.open_volume(path, strict=True)


@pytest.mark.parametrize("shapes", [[(2, 3, 2), (2, 4, 1)], [(1, 3, 2), (2, 4, 2)],
                                    [(1, 3, 2), (3, 4, 1)], [(1, 3)]])
def test_tt_entries_refuses_cores_that_do_not_form_a_tt(shapes):
    cores = [np.ones(shape) for shape in shapes]
    with pytest.raises(ValueError, match="cores"):
        tlc.tt_entries(cores, [[0] * len(shapes)])


# --- inputs the fuzzing of the public API found crashing ------------------------------


def _rank3(shape=(8, 9, 10), seed=0):
    rng = np.random.default_rng(seed)
    return np.einsum("ir,jr,kr->ijk", *[rng.standard_normal((n, 3)) for n in shape])


def _relative_error(tt, dense):
    cores = [np.asarray(host(core), dtype=np.float64) for core in tt.factors]
    with tl.backend_context("numpy"):
        return np.linalg.norm(tl.tt_to_tensor(cores) - dense) / np.linalg.norm(dense)


@pytest.mark.parametrize("make", [
    lambda x: x.astype(np.float16),
    lambda x: __import__("torch").tensor(x).half(),
    lambda x: __import__("torch").tensor(x).bfloat16(),
    lambda x: __import__("torch").tensor(x, requires_grad=True),
], ids=["numpy float16", "torch float16", "torch bfloat16", "torch requires_grad"])
def test_half_precision_and_grad_tensors_are_crossed_on_any_backend(backend, make):
    # float16 reached LAPACK ("array type float16 is unsupported"); a PyTorch tensor that
    # requires grad could not become NumPy under the numpy backend.
    pytest.importorskip("torch")
    dense = _rank3()
    tt = tlc.tt_cross(make(dense), tol=1e-2, random_state=0)
    assert tt.rank == (1, 3, 3, 1)
    assert _relative_error(tt, dense) < 1e-2  # half precision: 3 digits


def test_a_callable_returning_float16_is_widened():
    dense = _rank3()
    tt = tlc.tt_cross(lambda idx: dense[tuple(idx.T)].astype(np.float16), shape=dense.shape,
                      tol=1e-2, random_state=0)
    assert tt.rank == (1, 3, 3, 1) and _relative_error(tt, dense) < 1e-2


def test_maxvol_names_half_precision_and_random_state_must_be_non_negative():
    with pytest.raises(TypeError, match="float16, which LAPACK does not support"):
        tlc.maxvol(np.ones((5, 2), dtype=np.float16))
    with pytest.raises(ValueError, match="random_state must be a non-negative int"):
        tlc.tt_cross(np.ones((3, 3)), random_state=-1)


def test_quantics_view_of_an_array_and_of_a_bare_callable():
    dense = np.random.default_rng(0).standard_normal((16, 16))
    tt = tlc.tt_cross(tlc.QuanticsTensor(dense), tol=1e-10, random_state=0)
    assert _relative_error(tlc.qtt_to_tt(tt, tlc.QuanticsTensor(dense).layout), dense) < 1e-9
    with pytest.raises(TypeError, match="FunctionTensor\\(function, shape\\)"):
        tlc.QuanticsTensor(lambda idx: idx.sum(axis=1))


@pytest.mark.parametrize(("call", "error", "message"), [
    (lambda: tlc.tt_cross(lambda idx: idx.sum(axis=1) * 1.0, shape=(10**20, 2)), ValueError,
     "exceeds the int64 range"),
    (lambda: tlc.tt_cross(np.ma.masked_array(np.ones((4, 4)), mask=np.eye(4))), TypeError,
     "masked array"),
    (lambda: tlc.tt_cross(np.ones((4, 4)), shape=(5, 5)), ValueError, "does not match"),
    (lambda: tlc.save_tt("never-written.tt.npz", None), TypeError, "TTTensor or a list"),
    (lambda: tlc.streaming_tt_svd(np.array(1.0), tol=0.1), ValueError, "at least one mode"),
    (lambda: tlc.choose_path(tlc.lazy_tensor(np.ones((8, 8))), max_rank=-1), ValueError,
     "max_rank"),
    (lambda: tlc.tensor_train_cross(np.ones((3, 4, 5)), rank=[1, 2, 2]), ValueError,
     "len\\(rank\\) = 3 while tl.ndim\\(tensor\\) \\+ 1  = 4"),
    # One grid, not a list of grids: it was read as five one-point modes.
    (lambda: tlc.FunctionTensor.on_grid(np.sum, np.linspace(0, 1, 5)), TypeError,
     "for a single mode pass \\[grid\\]"),
    (lambda: tlc.FunctionTensor.on_grid(np.sum, [np.ones((5, 2))]), ValueError, "must be 1-D"),
    (lambda: tlc.FunctionTensor.on_grid(np.sum, [np.ones(5) * 1j]), TypeError, "real numbers"),
    (lambda: tlc.TransposedTensor(np.ones((2, 3, 4)), (0.0, 2.0, 1.0)), ValueError,
     "permutation"),
    (lambda: tlc.open_volume(np.ones((3, 3)), cache_bytes=-1), ValueError, "cache_bytes"),
])
def test_more_bad_inputs_get_a_clear_exception(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_a_checkpoint_path_that_is_a_directory_is_named(tmp_path):
    with pytest.raises(tlc.CheckpointError, match="is a directory"):
        tlc.tt_cross(np.ones((4, 4)), checkpoint=tmp_path, random_state=0)


def test_choose_path_and_open_volume_take_paths_as_str_or_bytes(tmp_path):
    path = tmp_path / "v.npy"
    np.save(path, np.ones((8, 8, 8)))
    assert tlc.choose_path(str(path)).method in ("lsq", "stream")
    assert tlc.open_volume(os.fsencode(path)).shape == (8, 8, 8)


@settings(max_examples=5)  # five methods on three backends
@given(seed=st.integers(0, 2**32 - 1))
@pytest.mark.parametrize("kwargs", [
    dict(method="tci", tol=1e-10), dict(method="als", rank=3), dict(method="lsq", rank=3),
    dict(method="block", rank=3), dict(method="als", rank=3, oversample=2.0),
], ids=["tci", "als", "lsq", "block", "als-oversampled"])
def test_every_method_recovers_a_complex_tensor_of_its_rank(backend, kwargs, seed):
    # The block cross (and the oversampled ALS built on it) divided by plain transposes:
    # relative error 1.1 on complex data, without a word.
    rng = np.random.default_rng(seed)
    factors = [rng.standard_normal((n, 3)) + 1j * rng.standard_normal((n, 3)) for n in (9, 10, 4)]
    dense = np.einsum("ir,jr,kr->ijk", *factors)
    tt = tlc.tt_cross(tl.tensor(dense), random_state=seed, **kwargs)
    error = np.linalg.norm(host(tl.tt_to_tensor(tt)) - dense) / np.linalg.norm(dense)
    assert error < 1e-9


def test_scalar_and_column_grids_still_make_modes():
    grid = np.linspace(0.0, 1.0, 5)
    tensor = tlc.FunctionTensor.on_grid(lambda x: x.sum(axis=1), [grid, 0.5, grid[:, None]])
    assert tensor.shape == (5, 1, 5)
    assert tensor.evaluate([[4, 0, 2]])[0] == pytest.approx(2.0)


@pytest.mark.parametrize("content, message", [
    (b"hello", "is not a NIfTI file nibabel can read"),
    (b"", "is not a NIfTI file nibabel can read"),
    ("cifti", "is a Cifti2Image, not a NIfTI volume")])
def test_open_volume_refuses_what_nibabel_cannot_read_as_a_volume(tmp_path, content, message):
    nibabel = pytest.importorskip("nibabel")
    if content == "cifti":  # nibabel's own CIFTI-2 test file: NIfTI-2 on disk, not a grid
        path = os.path.join(os.path.dirname(nibabel.__file__), "tests", "data",
                            "row_major.dconn.nii")
    else:
        path = tmp_path / "bad.nii.gz"
        path.write_bytes(content)
    with pytest.raises(ValueError, match=message):
        tlc.open_volume(path)


def test_an_empty_hdf5_dataset_is_refused_by_its_shape(tmp_path):
    h5py = pytest.importorskip("h5py")
    path = tmp_path / "empty.h5"
    with h5py.File(path, "w") as handle:
        handle.create_dataset("v", shape=(0, 4, 4), dtype="f4")
    with pytest.raises(ValueError, match=r"shape\[0\]=0 must be >= 1"):
        tlc.open_volume(path)  # "chunks[0]=0" before


def test_the_tci_start_pivot_leaves_the_held_out_sample():
    # The TT interpolates its start pivot: taken from the held-out entries and left there,
    # it showed an error of 0 (a run with val_size=1 passed tol 1e-8 at a true error 0.66).
    from tensorly_cross.cross.init import start_pivot
    from tensorly_cross.cross.stopping import Validation
    from tensorly_cross.lazy.cache import EvaluationCache

    cache = EvaluationCache(tlc.FunctionTensor(smooth, (6, 7, 8)))
    rng = np.random.default_rng(0)
    validation = Validation(cache, 300, rng)
    before = validation.n_read
    pivot, _ = start_pivot(cache, validation, rng)
    kept = validation.indices[: validation.n_read]
    assert not np.all(kept == pivot, axis=1).any() and validation.n_read < before
    assert validation.largest is None or not np.array_equal(validation.largest, pivot)


def test_masked_arrays_are_refused_wherever_they_come_in():
    masked = np.ma.masked_array(np.ones((4, 5)), mask=np.eye(4, 5, dtype=bool))
    with pytest.raises(TypeError, match="masked"):
        tlc.ArrayTensor(masked)
    returning = tlc.FunctionTensor(lambda i: np.ma.masked_array(np.ones(len(i)),
                                                                mask=np.ones(len(i))), (4, 5))
    with pytest.raises(TypeError, match="masked"):
        returning.evaluate(np.zeros((2, 2), dtype=np.int64))


def test_long_double_values_are_computed_in_double():
    # LAPACK has no long double: the cross raised "array type float128 is unsupported".
    exact = tlc.tt_cross(smooth, shape=(6, 7, 8), tol=1e-10, random_state=0)
    wide = tlc.tt_cross(lambda i: smooth(i).astype(np.longdouble), shape=(6, 7, 8),
                        tol=1e-10, random_state=0)
    for a, b in zip(exact, wide, strict=True):
        np.testing.assert_array_equal(host(a), host(b))


def _index_sets():
    tensor = np.add.outer(np.arange(6.0), np.arange(7.0))
    return tlc.select_indices(tensor, rank=1, random_state=0).to_dict()


@pytest.mark.parametrize("change, message", [
    (dict(left=[[[]], [[2.7]]]), r"left\[1\] must be a list of multi-indices of 1 integers"),
    (dict(left=[None, None]), r"left\[0\] must be a list of multi-indices"),
    (dict(left=[[[]], [[2**70]]]), r"integers each \(int64\)"),
    (dict(left=[[[]], [[1, 2]]]), r"got an array of shape \(1, 2\)"),
    (dict(shape=[None, 7]), "shape entries must be integers >= 1, got None"),
    (dict(shape=[float("nan"), 7]), "shape entries must be integers >= 1, got nan"),
])
def test_index_sets_from_a_dict_are_refused_unless_integral(change, message):
    # 2.7 was read as 2; None and 2**70 failed inside NumPy (TypeError, OverflowError).
    with pytest.raises(ValueError, match=message):
        tlc.CrossIndices.from_dict(dict(_index_sets(), **change))


def test_index_sets_from_a_dict_take_integral_floats():
    data = _index_sets()
    floats = [[float(index) for index in row] for row in data["left"][1]]
    rebuilt = tlc.CrossIndices.from_dict(dict(data, left=[[[]], floats]))
    assert rebuilt.left[1].dtype == np.int64 and rebuilt.left[1].tolist() == data["left"][1]


def test_rect_maxvol_names_its_own_maxvol_arguments():
    matrix = np.random.default_rng(0).standard_normal((8, 3))
    with pytest.raises(ValueError, match="maxvol_tol must be >= 1.0, got 0.5"):
        tlc.rect_maxvol(matrix, maxvol_tol=0.5)
    with pytest.raises(ValueError, match="maxvol_iter must be >= 0"):
        tlc.rect_maxvol(matrix, maxvol_iter=-1)


def test_an_empty_file_is_a_new_checkpoint(tmp_path):
    # What tempfile.mkstemp leaves was refused as "bad magic number".
    path = tmp_path / "run.ckpt"
    path.touch()
    function = lambda indices: 1.0 / (1.0 + indices.sum(axis=1))  # noqa: E731
    first = tlc.tt_cross(function, shape=(6, 6), checkpoint=path, random_state=0)
    again = tlc.tt_cross(function, shape=(6, 6), checkpoint=path, random_state=0)
    assert path.stat().st_size > 0 and first.rank == again.rank


@pytest.mark.parametrize("flag", ["return_info", "differentiable"])
def test_flags_are_booleans(flag):
    # "no" was taken for True.
    with pytest.raises(TypeError, match=f"{flag} must be True or False, got str 'no'"):
        tlc.tt_cross(np.ones((4, 5)), random_state=0, **{flag: "no"})


def test_a_pass_whose_residual_a_few_held_out_entries_carry_warns():
    """MNI152 at every third voxel, tol 0.2: with 50 held-out entries, runs stopped on
    "tol" at true errors of 0.21-0.23 without a word (the residual sits on the brain's
    edges, which a small sample misses); the default sample carries it on hundreds."""
    datasets = pytest.importorskip("nilearn.datasets")
    volume = np.asarray(datasets.load_mni152_template().get_fdata())[::3, ::3, ::3].copy()
    with pytest.warns(UnseenStructureWarning, match="carry the residual, too few"):
        _, info = tlc.tt_cross(volume, tol=0.2, val_size=50, random_state=1,
                               return_info=True)
    assert info.stop_reason == "tol"
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnseenStructureWarning)
        _, info = tlc.tt_cross(volume, tol=0.2, random_state=1, return_info=True)
    assert info.stop_reason == "tol"


def test_the_heldout_bound_after_a_confirmation_counts_the_fresh_entries_alone():
    # The first held-out entries chose the sweep that passed (it is the first they let
    # through): only the fresh entries of the confirmation are one test. On MNI152's brain
    # mask TCI passed with 0.23-0.25% of the voxels off, where all 1,999 entries bound 0.15%
    # and the 1,000 fresh ones 0.3%.
    x = np.linspace(-1.0, 1.0, 40)
    grid = np.meshgrid(x, x, x, indexing="ij")
    volume = np.exp(-(grid[0] ** 2 + 2 * grid[1] ** 2 + 3 * grid[2] ** 2))
    _, info = tlc.tt_cross(volume, tol=1e-4, method="tci", random_state=0, return_info=True)
    assert info.stop_reason == "tol" and 0 < info.n_fresh < info.n_heldout
    assert info.heldout_bound == heldout_bound(info.n_fresh)
    assert info.heldout_bound > heldout_bound(info.n_heldout)
    assert f"n_fresh={info.n_fresh}" in repr(info) and info.to_dict()["n_fresh"] == info.n_fresh


def test_without_a_confirmation_every_heldout_entry_counts():
    function = tlc.FunctionTensor(lambda idx: np.cos(idx.sum(axis=1) / 9.0), (32,) * 4)
    _, info = tlc.tt_cross(function, tol=1e-8, random_state=0, return_info=True)
    assert info.n_fresh == 0 and info.heldout_bound == heldout_bound(info.n_heldout)
