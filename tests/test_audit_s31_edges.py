"""Audit s31, extreme and degenerate shapes: each test failed before its fix."""

import math
import tracemalloc
import warnings

import numpy as np
import pytest
import tensorly as tl
from hypothesis import example, given, settings
from hypothesis import strategies as st

import tensorly_cross as tlc

from .strategies import seeds


@pytest.fixture
def numpy_backend():
    with tl.backend_context("numpy"):
        yield


def _peak_bytes(function, *args):
    tracemalloc.start()
    try:
        result = function(*args)
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_few_entries_of_a_tt_with_one_huge_mode_do_not_copy_its_core(numpy_backend):
    # A (4, 400000, 4) middle core is 51 MB: every call copied it whole (moved to C order
    # for the gather), so 10 entries cost 51 MB and O(n r^2) time, once per chunk of a
    # larger batch, and each held-out check of a cross on such a mode did the same.
    rng = np.random.default_rng(0)
    rank, size = 4, 400_000
    cores = [rng.standard_normal((1, 3, rank)), rng.standard_normal((rank, size, rank)),
             rng.standard_normal((rank, 5, 1))]
    indices = np.stack([rng.integers(0, n, 10) for n in (3, size, 5)], axis=1)
    values, peak = _peak_bytes(tlc.tt_entries, cores, indices)
    assert peak < cores[1].nbytes / 8, f"peak {peak / 2**20:.1f} MiB"
    expected = [cores[0][0, i] @ cores[1][:, j] @ cores[2][:, k, 0] for i, j, k in indices]
    np.testing.assert_allclose(values, expected, rtol=1e-12)


def test_the_strided_gather_of_a_large_mode_carries_gradients():
    torch = pytest.importorskip("torch")
    with tl.backend_context("pytorch"):
        generator = torch.Generator().manual_seed(0)
        cores = [torch.randn(shape, dtype=torch.float64, generator=generator,
                             requires_grad=True) for shape in [(1, 3, 2), (2, 50, 3), (3, 4, 1)]]
        indices = np.array([[0, 7, 1], [2, 49, 3], [1, 7, 0]])  # 3 entries of a mode of 50
        values = tlc.tt_entries(cores, indices)
        dense = tl.tt_to_tensor(cores)[tuple(torch.as_tensor(indices).T)]
        torch.testing.assert_close(values, dense)
        weights = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
        got = torch.autograd.grad((values * weights).sum(), cores)
        expected = torch.autograd.grad((dense * weights).sum(), cores)
        for first, second in zip(got, expected, strict=True):
            torch.testing.assert_close(first, second)


def _every_multi_index(shape):
    """Every multi-index of ``shape`` in C order, for any number of modes."""
    rest, columns = np.arange(math.prod(shape)), []
    for size in reversed(shape):
        columns.append(rest % size)
        rest = rest // size
    return np.stack(columns[::-1], axis=1)


@pytest.mark.parametrize("shape", [(1,) * 70, (1,) * 35 + (3,) + (1,) * 35,
                                   (2,) * 6 + (1,) * 64])
@pytest.mark.parametrize("method, rank", [("tci", None), ("als", 2), ("lsq", None)])
@pytest.mark.filterwarnings("ignore:rank.*exceeds what the unfoldings:UserWarning")
def test_more_than_64_modes_with_few_entries_are_crossed(shape, method, rank):
    # NumPy arrays have at most 64 axes: np.indices(shape) (the exact error over every
    # entry of a small tensor) and np.unravel_index over the modes of an index set (the
    # random starting sets) raised "maximum supported dimension for an ndarray is
    # currently 64" from inside the cross.
    weights = np.arange(1.0, len(shape) + 1)

    def function(indices):
        return 1.0 + indices @ weights

    tt, info = tlc.tt_cross(function, shape=shape, method=method, rank=rank,
                            random_state=0, return_info=True)
    indices = _every_multi_index(shape)
    np.testing.assert_allclose(tlc.tt_entries(tt, indices), function(indices), rtol=1e-10)
    assert info.val_error <= 1e-10


@settings(max_examples=40, deadline=None)
@given(seed=seeds, n_cols=st.integers(1, 20), extra_rows=st.integers(0, 12),
       exponent=st.integers(1000, 1023))
@example(seed=0, n_cols=16, extra_rows=0, exponent=1023)
@example(seed=2, n_cols=16, extra_rows=2, exponent=1023)
@pytest.mark.filterwarnings("error::RuntimeWarning")
def test_maxvol_of_a_matrix_near_float64s_largest_is_that_of_the_matrix_scaled_down(
        seed, n_cols, extra_rows, exponent, numpy_backend):
    # Its entries scaled by a power of two, a matrix has the same maxvol rows and
    # coefficients. Near float64's largest, LU's own pivots overflowed to inf (or nan)
    # before the rescaling meant for such matrices was decided on them: it was skipped,
    # and maxvol returned repeated rows and NaN coefficients, other rows, or raised
    # LinAlgError("Singular matrix") (the examples).
    rng = np.random.default_rng(seed)
    matrix = rng.standard_normal((n_cols + extra_rows, n_cols))
    matrix /= np.abs(matrix).max()
    rows, coefficients = tlc.maxvol(matrix)
    scaled_rows, scaled_coefficients = tlc.maxvol(matrix * 2.0**exponent)
    np.testing.assert_array_equal(scaled_rows, rows)
    np.testing.assert_allclose(scaled_coefficients, coefficients, rtol=1e-9, atol=1e-12)


def test_maxvol_and_rect_maxvol_of_rows_whose_lu_overflows(numpy_backend):
    # LU of these rows subtracts 1e308 from -1e308: its second pivot was inf, and maxvol
    # returned B[1] = [1, 0] for the chosen row 1 (not the identity); rect_maxvol raised
    # LinAlgError("Singular matrix").
    matrix = np.array([[1e308, 1e308], [1e308, -1e308], [1.0, 2.0]])
    rows, coefficients = tlc.maxvol(matrix)
    np.testing.assert_allclose(coefficients[rows], np.eye(2), atol=1e-12)
    assert np.abs(coefficients).max() <= 1.05
    np.testing.assert_allclose(coefficients @ matrix[rows], matrix, rtol=1e-12, atol=1e295)
    rect_rows, rect_coefficients = tlc.rect_maxvol(matrix)
    np.testing.assert_allclose(rect_coefficients @ matrix[rect_rows], matrix, rtol=1e-12,
                               atol=1e295)
    assert np.linalg.norm(rect_coefficients, axis=1).max() <= 1.1


def test_a_few_entries_of_a_fortran_ordered_first_core_do_not_copy_it(numpy_backend):
    # The first core's rows were made C-contiguous before the gather: a first core not
    # in C order (np.asfortranarray, a transposed view) was copied whole for 10 entries.
    rng = np.random.default_rng(1)
    size, rank = 400_000, 8
    cores = [np.asfortranarray(rng.standard_normal((1, size, rank))),
             rng.standard_normal((rank, 3, 1))]
    indices = np.stack([rng.integers(0, size, 10), rng.integers(0, 3, 10)], axis=1)
    values, peak = _peak_bytes(tlc.tt_entries, cores, indices)
    assert peak < cores[0].nbytes / 8, f"peak {peak / 2**20:.1f} MiB"
    expected = [cores[0][0, i] @ cores[1][:, j, 0] for i, j in indices]
    np.testing.assert_allclose(values, expected, rtol=1e-12)


def test_maxvol_of_complex_entries_whose_modulus_overflows(numpy_backend):
    # |1.5e308 + 1.5e308j| is inf: the scale taken from the entries' moduli was inf too,
    # the rescaling was skipped again, and every coefficient came out 0.
    matrix = np.array([[1.5e308 + 1.5e308j, 1e308], [1e308, -1.5e308 + 1.4e308j],
                       [1.0, 2.0]])
    rows, coefficients = tlc.maxvol(matrix)
    scaled_rows, scaled_coefficients = tlc.maxvol(matrix * 2.0**-1024)
    np.testing.assert_array_equal(rows, scaled_rows)
    np.testing.assert_allclose(coefficients, scaled_coefficients, rtol=1e-12, atol=1e-300)
    np.testing.assert_allclose(coefficients[rows], np.eye(2), atol=1e-12)


@pytest.mark.parametrize("order", [None, "interleaved"])
def test_reconstruct_writes_a_slice_of_a_tt_of_more_than_64_modes(tmp_path, order):
    # The slice went through an array with one axis per mode: NumPy's "maximum supported
    # dimension for an ndarray is currently 64" for a TT of 71 modes, most of size one.
    from tensorly_cross import cli

    shape = (3,) + (1,) * 69 + (4,)
    weights = np.arange(1.0, len(shape) + 1)

    def function(indices):
        return 1.0 + indices @ weights

    metadata = {}
    if order is None:
        tt = tlc.tt_cross(function, shape=shape, random_state=0)
    else:  # digits of an interleaved layout: read entry by entry
        quantics = tlc.QuanticsTensor(tlc.FunctionTensor(function, shape), order=order)
        tt = tlc.tt_cross(quantics, random_state=0)
        metadata = {"shape": list(shape), "quantics": {"order": order}}
    path = tmp_path / "wide.tt"
    tlc.save_tt(path, tt, metadata=metadata)
    output = tmp_path / "slice.npy"
    assert cli.main(["reconstruct", str(path), "-o", str(output)]) == cli.EXIT_OK
    # The default slice: the middle of every axis but the last two, (1, 4) here.
    expected = (1.0 + 1 * weights[0] + np.arange(4) * weights[-1]).reshape(1, 4)
    np.testing.assert_allclose(np.load(output), expected, rtol=1e-10)


@settings(max_examples=25, deadline=None)
@given(seed=seeds, sizes=st.lists(st.sampled_from([1, 1, 2, 3, 5, 7]), min_size=1, max_size=5),
       method=st.sampled_from(["tci", "als", "lsq"]))
@pytest.mark.filterwarnings("ignore:rank.*exceeds what the unfoldings:UserWarning")
def test_an_exactly_low_rank_tensor_with_size_one_modes_is_recovered(seed, sizes, method):
    # The angle of this audit: modes of size one anywhere, d = 1, ranks capped by the
    # unfoldings at some bonds only. The reported error must be the true one (every entry
    # of these small tensors is read or held out).
    if method == "lsq" and len(sizes) < 2:
        method = "tci"
    rng = np.random.default_rng(seed)
    ranks = [1] + [int(rng.integers(1, 4)) for _ in sizes[1:]] + [1]
    tensor = tl.to_numpy(tl.tt_to_tensor(tl.random.random_tt(sizes, rank=ranks,
                                                             random_state=seed % 2**31)))
    rank = max(ranks) if method == "als" else None
    tt, info = tlc.tt_cross(tensor, method=method, rank=rank, tol=1e-10,
                            random_state=seed, return_info=True)
    error = np.linalg.norm(tl.to_numpy(tt.to_tensor()) - tensor) / np.linalg.norm(tensor)
    assert error < 1e-8
    assert info.val_error < 1e-8


@settings(max_examples=30, deadline=None)
@given(seed=seeds, n_cols=st.integers(1, 10), extra_rows=st.integers(0, 8),
       exponent=st.sampled_from([-149 + 24, -130, -126, 100, 126]))
@example(seed=0, n_cols=3, extra_rows=2, exponent=-130)
def test_maxvol_of_float32_near_its_ends_is_that_of_the_matrix_scaled(
        seed, n_cols, extra_rows, exponent, numpy_backend):
    # The rescaling of matrices near the ends of the range (SAFE_SCALE, 2**-500 to 2**500)
    # was float64's: float32 entries near its subnormal range (below 2**-126) were never
    # rescaled, and maxvol returned NaN coefficients, other rows, or raised LinAlgError.
    # A power of two times a float32 matrix (exact, both ways) has the same maxvol.
    rng = np.random.default_rng(seed)
    matrix = rng.standard_normal((n_cols + extra_rows, n_cols))
    scaled = (matrix / np.abs(matrix).max() * 2.0**exponent).astype(np.float32)
    unscaled = (scaled.astype(np.float64) * 2.0**-exponent).astype(np.float32)  # exact
    rows, coefficients = tlc.maxvol(unscaled)
    scaled_rows, scaled_coefficients = tlc.maxvol(scaled)
    assert scaled_coefficients.dtype == np.float32
    np.testing.assert_array_equal(scaled_rows, rows)
    np.testing.assert_allclose(scaled_coefficients, coefficients, rtol=1e-4, atol=1e-5)



def test_a_least_squares_result_with_non_finite_cores_raises_an_overflow_error_saying_why():
    # The cross shrinks data beyond 2**(maxexp/2) on its first nonzero read; a later read far
    # larger than that one can still overflow the fits, which returned a TT of NaNs.
    from tensorly_cross.cross.scaling import refuse_non_finite
    from tensorly_cross.lazy.cache import EvaluationCache

    cache = EvaluationCache(tlc.lazy_tensor(np.full((3, 4), 2.0**1020)))
    cache.evaluate(np.array([[0, 0], [1, 2]]))
    finite = [np.ones((1, 3, 2)), np.ones((2, 4, 1))]
    refuse_non_finite(finite, cache, "lsq")  # finite cores pass
    with pytest.raises(OverflowError, match=r"method='lsq'.*1\.12e\+307.*near 1.*'tci'"):
        refuse_non_finite([finite[0], np.full((2, 4, 1), np.nan)], cache, "lsq")


def test_an_interpolating_cross_with_non_finite_cores_says_its_arithmetic_overflowed():
    from tensorly_cross.cross.scaling import refuse_non_finite
    from tensorly_cross.lazy.cache import EvaluationCache

    cache = EvaluationCache(tlc.lazy_tensor(np.full((3, 4), 3.0)))
    cache.evaluate(np.array([[0, 0]]))
    with pytest.raises(OverflowError, match=r"method='tci'.*up to 3: its arithmetic"):
        refuse_non_finite([np.full((1, 3, 1), np.inf), np.ones((1, 4, 1))], cache, "tci")


def test_a_subnormal_constant_whose_first_least_squares_sweep_is_nan_is_still_crossed():
    # The first sweep of 5e-324 data is NaN and the next one recovers: only the result is
    # checked, which is finite and of the data (a check per sweep refused it).
    values = np.full((4, 5, 3), 5e-324)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tt = tlc.tt_cross(values, rank=1, random_state=0)
    assert all(np.isfinite(core).all() for core in tt.factors)
    assert np.array_equal(tl.tt_to_tensor(tt), values)
