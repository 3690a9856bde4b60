"""The dtypes of the values a cross reads: the cache's widening signal and the PyTorch
search that runs again after it, ml_dtypes' floats, chunks of mixed or masked values,
complex least-squares fits; and the reads themselves (the batched search's round widths,
int64 multi-indices, masked matrices refused by maxvol)."""

import contextlib
import warnings

import numpy as np
import pytest
import tensorly as tl

import tensorly_cross as tlc
from tensorly_cross import FunctionTensor
from tensorly_cross.lazy.cache import DtypeWidened, EvaluationCache

from ._helpers_shared import _scimath_sqrt
from .conftest import host

SHAPE = (6, 6, 6)


def _smooth(indices):
    return 1.0 + np.cos(indices @ np.array([0.3, 0.5, 0.7]))


# --- the cache's widening signal -----------------------------------------------------------


def _batches(first_dtype, later_dtype):
    """A function whose first call returns ``first_dtype``, and later ones ``later_dtype``."""
    calls = []

    def function(indices):
        calls.append(len(indices))
        return _smooth(indices).astype(first_dtype if len(calls) == 1 else later_dtype)

    return function


@pytest.mark.parametrize("first, later, widened", [
    (np.float64, np.complex128, 1), (np.float32, np.float64, 1), (np.float64, np.float32, 0),
    (np.complex128, np.float64, 0), (np.float64, np.float64, 0)])
def test_the_cache_counts_the_batches_that_widened_its_dtype(backend, first, later, widened):
    # Only a batch whose dtype the stored values cannot hold widens the store (and stops a
    # PyTorch search): a float32 batch after float64 values is held by them, and stopping
    # the search for it would run it again for nothing.
    cache = EvaluationCache(FunctionTensor(_batches(first, later), SHAPE))
    cache.evaluate(np.array([[0, 0, 0], [1, 2, 3]]))
    cache.evaluate(np.array([[2, 2, 2], [3, 1, 0]]))
    assert cache.dtype_widenings == widened
    cache.stop_on_widening = True
    cache.evaluate(np.array([[4, 4, 4]]))  # a batch in the same dtype: no signal
    assert cache.dtype_widenings == widened


def test_a_widening_batch_is_stored_before_the_search_is_stopped(backend):
    # The search that runs again reads the batch from the cache: it is not asked twice.
    calls = []
    function = _batches(np.float64, np.complex128)
    cache = EvaluationCache(FunctionTensor(lambda idx: calls.append(len(idx)) or function(idx),
                                           SHAPE))
    cache.stop_on_widening = True
    cache.evaluate(np.array([[0, 0, 0], [1, 2, 3]]))
    batch = np.array([[2, 2, 2], [3, 1, 0], [0, 0, 0]])
    with pytest.raises(DtypeWidened):
        cache.evaluate(batch)
    values = host(cache.evaluate(batch))
    assert calls == [2, 2]
    np.testing.assert_allclose(values, _smooth(batch))
    assert values.dtype == np.complex128


@pytest.mark.parametrize("first, later", [(np.float64, np.complex128),
                                           (np.complex128, np.float64)])
def test_a_full_cache_keeps_the_dtype_of_the_values_read_before_it_restarts(backend, first,
                                                                           later):
    # A batch that fills the cache empties it and is stored alone. Stored in its own dtype,
    # a complex batch after real ones was no widening (a PyTorch search was not stopped,
    # and its products met a complex value among real ones), and a real batch after
    # complex ones narrowed the store, whose later hits came back real.
    calls = []
    function = _batches(first, later)
    cache = EvaluationCache(FunctionTensor(lambda idx: calls.append(len(idx)) or function(idx),
                                           SHAPE), max_entries=4)
    cache.stop_on_widening = True
    cache.evaluate(np.array([[0, 0, 0], [1, 2, 3], [2, 2, 2]]))
    batch = np.array([[0, 0, 0], [3, 1, 0], [4, 4, 4]])
    widens = np.result_type(first, later) != np.dtype(first)
    with pytest.raises(DtypeWidened) if widens else contextlib.nullcontext():
        cache.evaluate(batch)
    assert cache.dtype_widenings == int(widens)
    values = host(cache.evaluate(batch[1:]))  # stored: read from the cache
    assert calls == [3, 2]
    assert values.dtype == np.complex128
    np.testing.assert_allclose(values, _smooth(batch[1:]))


# --- the PyTorch search that runs again ------------------------------------------------------


def _float32_values(indices):
    """Values that float32 holds exactly (the dtype of the first batch below)."""
    return _smooth(indices).astype(np.float32).astype(np.float64)


class _TwiceWidening:
    """float32 values, then float64, then complex128 from the third call on: a search that
    widens twice. The values of an entry are the same in every dtype."""

    def __init__(self):
        self.calls = 0

    def __call__(self, indices):
        self.calls += 1
        values = _float32_values(indices)
        if self.calls == 1:
            return values.astype(np.float32)
        return values if self.calls == 2 else values + 0j


@pytest.mark.parametrize("method", ["tci", "lsq"])
def test_a_pytorch_search_that_widens_twice_is_the_search_in_the_widest_dtype(method):
    # Each widening stops the search and runs it again from the start; a bound of one run
    # per widening too few left the second widening to a search whose products refuse
    # mixed dtypes.
    pytest.importorskip("torch")
    with tl.backend_context("pytorch"):
        function = _TwiceWidening()
        mixed, info = tlc.tt_cross(function, shape=(12, 12, 12), method=method, tol=1e-8,
                                   random_state=0, return_info=True)
        always, expected = tlc.tt_cross(lambda idx: _float32_values(idx) + 0j,
                                        shape=(12, 12, 12),
                                        method=method, tol=1e-8, random_state=0,
                                        return_info=True)
    assert function.calls >= 3
    for core, other in zip(mixed, always, strict=True):
        assert core.dtype == other.dtype
        np.testing.assert_array_equal(host(core), host(other))
    assert info.n_evals == expected.n_evals


def _sweeps_into(seen):
    def callback(tt, info):
        seen.append(info.n_sweeps)

    return callback


class _WidenedLater:
    """float32 values until ``after`` entries were evaluated, then float64: a PyTorch
    search that widens after its first sweeps."""

    def __init__(self, after):
        self.after, self.evaluated = after, 0

    def __call__(self, indices):
        self.evaluated += len(indices)
        values = 1.0 / (1.0 + indices.sum(axis=1))
        return values.astype(np.float32) if self.evaluated <= self.after else values


def test_a_pytorch_restart_is_announced_to_what_shows_the_sweeps():
    # The sweeps of the abandoned float32 run reached the callback, then the rerun's
    # from sweep 1 again: a callback keeping a history saw sweeps 1, 2, 1, 2, 3 with
    # nothing to tell the two runs apart. The restart is now announced (a RuntimeWarning)
    # between the two.
    pytest.importorskip("torch")
    seen, warned = [], []

    def callback(tt, info):
        seen.append((len(warned), info.n_sweeps))

    with tl.backend_context("pytorch"), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warned = caught
        _, info = tlc.tt_cross(_WidenedLater(after=2100), shape=(16, 16, 16), tol=1e-8,
                               random_state=0, return_info=True, callback=callback)
    restarts = [w for w in caught if "restarted" in str(w.message)]
    assert len(restarts) == 1 and issubclass(restarts[0].category, RuntimeWarning)
    at = caught.index(restarts[0]) + 1  # warnings recorded when the restart was announced
    before = [sweep for count, sweep in seen if count < at]
    after = [sweep for count, sweep in seen if count >= at]
    assert before and before == list(range(1, len(before) + 1))
    assert after == list(range(1, info.n_sweeps + 1))


@pytest.mark.parametrize("method", ["tci", "lsq"])
def test_a_numpy_search_that_turns_complex_runs_once(method):
    # NumPy promotes the products of real and complex values: the search is not run again
    # (only PyTorch's is), and a Generator given by the caller is drawn from as by the
    # search of a function complex throughout, each of whose reads is counted once.
    results = []
    for function in (_scimath_sqrt, lambda idx: _scimath_sqrt(idx).astype(complex)):
        rng = np.random.default_rng(0)
        seen = []
        _, info = tlc.tt_cross(function, shape=(16, 16, 16), method=method, tol=1e-8,
                               random_state=rng, return_info=True, callback=_sweeps_into(seen))
        results.append((rng.random(), seen, info.n_requested, info.n_evals))
    assert results[0] == results[1]


# --- ml_dtypes' low-precision floats in stored data ----------------------------------------


@pytest.mark.parametrize("dtype", ["bfloat16", "float8_e4m3fn", "float8_e5m2"])
def test_an_ml_dtypes_volume_is_read_exactly_and_counted_in_its_stored_bytes(dtype):
    # Its values are read as float32 (every one of them is a float32), not through a
    # narrower type (float16 overflows past 65504 and drops bfloat16's small values), and
    # the stream counts the bytes stored (1 or 2 per entry), not those of the float32 read.
    ml_dtypes = pytest.importorskip("ml_dtypes")
    kind = getattr(ml_dtypes, dtype)
    top = float(ml_dtypes.finfo(kind).max)
    rng = np.random.default_rng(0)
    factors = [rng.random(n) + 0.5 for n in (4, 5, 6)]
    volume = (np.einsum("i,j,k->ijk", *factors) * (top / 4)).astype(kind)
    volume[0, 0, 0] = ml_dtypes.finfo(kind).tiny  # the smallest normal of the type
    exact = volume.astype(np.float32)
    source = tlc.open_volume(volume)
    # float8_e5m2 is of NumPy kind "f", unlike ml_dtypes' other floats: it was kept as the
    # source's dtype where they are read as float32.
    assert source.source.dtype == np.float32
    everything = np.stack(np.unravel_index(np.arange(exact.size), exact.shape), axis=1)
    np.testing.assert_array_equal(host(source.evaluate(everything)), exact.ravel())
    _, info = tlc.streaming_tt_svd(volume, rank=2, return_info=True)
    assert info.bytes_read == volume.size * np.dtype(kind).itemsize


# --- batched search: the width of a round ----------------------------------------------------


def _recorded_block(n_rows, n_cols, rank, seed, zero_cols=0):
    """A rank-``rank`` block (its first ``zero_cols`` columns zero) read as a bond, and the
    list of the batches of (row, col) its function receives."""
    from tensorly_cross.cross.bond import BondMatrix

    rng = np.random.default_rng(seed)
    dense = rng.standard_normal((n_rows, rank)) @ rng.standard_normal((rank, n_cols))
    dense[:, :zero_cols] = 0.0
    batches = []

    def entries(indices):
        batches.append(np.array(indices))
        return tl.tensor(dense[indices[:, 0], indices[:, 1]])

    cache = EvaluationCache(FunctionTensor(entries, (n_rows, n_cols)))
    empty = np.zeros((1, 0), dtype=np.int64)
    return dense, BondMatrix(cache, empty, n_rows, n_cols, empty), batches


def _columns_read_whole(batches, n_rows):
    seen = {}
    for batch in batches:
        for row, col in batch:
            seen.setdefault(int(col), set()).add(int(row))
    return sorted(col for col, rows in seen.items() if len(rows) == n_rows)


@pytest.mark.parametrize("rank", [1, 2, 5, 8])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_right_hint_reads_the_columns_it_lacks_and_one_more(rank, seed):
    # The first column, then the rank - 1 columns the hint lacks and the one that ends the
    # search: rank + 1 columns read whole, each once. One column more per round is
    # n_rows evaluations more per bond and sweep.
    from tensorly_cross.cross.prrlu import prrlu

    dense, matrix, batches = _recorded_block(20, 30, rank, seed)
    rows, cols = prrlu(matrix, 1e-10 * np.abs(dense).max(), 64, np.random.default_rng(seed),
                       "batched", rank_hint=rank)
    assert len(rows) == rank
    assert len(_columns_read_whole(batches, 20)) == rank + 1
    everything = np.concatenate(batches)
    assert len(np.unique(everything, axis=0)) == len(everything)  # none asked twice


@pytest.mark.parametrize("rank", [2, 5])
def test_after_a_rook_move_from_the_first_column_the_next_round_is_one_column(rank):
    # A zero first column holds no pivot: its row points to a column, read alone as column
    # search reads it (the hint's columns are read once a pivot shows where the residual
    # points), not a round of hint + 1 columns chosen from a row of zeros' neighbours.
    from tensorly_cross.cross.prrlu import prrlu

    dense, matrix, batches = _recorded_block(20, 30, rank, 0, zero_cols=10)
    rows, cols = prrlu(matrix, 1e-10 * np.abs(dense).max(), 64, np.random.default_rng(0),
                       "batched", start_cols=[0], max_kept_growth=16.0, rank_hint=rank)
    assert len(rows) == rank and 0 not in cols
    first_column, its_row, next_round = batches[:3]
    assert set(first_column[:, 1].tolist()) == {0} and set(its_row[:, 0].tolist()) == {0}
    assert len(set(next_round[:, 1].tolist())) == 1


# --- the bond's multi-indices ----------------------------------------------------------------


@pytest.mark.parametrize("pivot_search", ["batched", "column"])
def test_the_function_receives_int64_multi_indices_of_the_entries_it_is_asked(pivot_search):
    # The bond gathers each batch's multi-indices into one array made first: int64 as the
    # docs say (a function may pack or hash them), and the entries whose values it gives.
    dtypes, asked = set(), []

    def function(indices):
        dtypes.add((indices.dtype, indices.ndim, indices.shape[1]))
        asked.append(np.array(indices))
        return _smooth(indices[:, :3]) + 0.1 * indices[:, 3]

    shape = (5, 6, 7, 4)
    tt = tlc.tt_cross(function, shape=shape, method="tci", pivot_search=pivot_search,
                      tol=1e-10, random_state=0)
    assert dtypes == {(np.dtype(np.int64), 2, 4)}
    everything = np.concatenate(asked)
    assert (everything >= 0).all() and (everything < np.array(shape)).all()
    np.testing.assert_allclose(host(tlc.tt_entries(tt, everything)), function(everything),
                               rtol=1e-8)


# --- values read from a function's chunks ---------------------------------------------------


def _strings_or_list(indices):
    """A chunk's values as strings (refused), or as a list of numbers."""
    values = _smooth(indices)
    return values.astype(str) if indices[0, 0] % 2 else values.tolist()


def test_a_chunk_of_strings_beside_a_list_is_refused_by_name(backend):
    # The chunks are joined in the backend when one is not an ndarray: strings went to
    # tl.tensor as they came (PyTorch: "can't convert np.ndarray of type numpy.str_",
    # naming neither the function nor what values must be).
    indices = np.stack(np.unravel_index(np.arange(0, 216, 5), SHAPE), axis=1)
    tensor = FunctionTensor(_strings_or_list, SHAPE, chunk_size=4)
    with pytest.raises(TypeError, match="_strings_or_list returned values of dtype <U"):
        tensor.evaluate(indices)


def _wide_or_list(indices):
    """Long double, complex long double and 64-bit integer chunks, and a list."""
    values = _smooth(indices) * 2.0**40
    kind = indices[0, 0] % 4
    if kind == 1:
        return values.astype(np.longdouble)
    if kind == 2:
        return values.astype(np.clongdouble) * 1j
    return np.round(values).astype(np.int64) if kind == 3 else np.round(values).tolist()


def test_wide_and_integer_chunks_are_read_at_double_precision(backend):
    # Integers past 2**24 are exact in float64 (not float32); long double rounds to double
    # and complex long double to complex128, its imaginary part kept.
    indices = np.stack(np.unravel_index(np.arange(0, 216, 5), SHAPE), axis=1)
    values = host(FunctionTensor(_wide_or_list, SHAPE, chunk_size=4).evaluate(indices))
    expected = np.concatenate([np.asarray(_wide_or_list(indices[start:start + 4]))
                               .astype(np.complex128) for start in range(0, len(indices), 4)])
    assert values.dtype == np.complex128
    np.testing.assert_array_equal(values, expected)


@pytest.mark.parametrize("kind, read_as", [(np.bool_, np.float64), (np.float16, np.float32),
                                           (np.uint8, np.float64)])
@pytest.mark.parametrize("chunk_size", [None, 4])
def test_narrow_values_are_read_in_a_dtype_lapack_computes_in(backend, kind, read_as,
                                                              chunk_size):
    # Bools and integers as float64 (the cores interpolate between them), half precision
    # as float32 (LAPACK has none): in one call's values and in a chunked read alike.
    def function(indices):
        values = _smooth(indices) * 100
        return (values > 150).astype(kind) if kind is np.bool_ else values.astype(kind)

    indices = np.stack(np.unravel_index(np.arange(0, 216, 5), SHAPE), axis=1)
    values = FunctionTensor(function, SHAPE, chunk_size=chunk_size).evaluate(indices)
    assert host(values).dtype == read_as
    np.testing.assert_array_equal(host(values), function(indices).astype(read_as))


@pytest.mark.parametrize("dtype", ["float6_e2m3fn", "float6_e3m2fn", "float4_e2m1fn"])
def test_ml_dtypes_six_bit_floats_are_read_as_float32_as_the_others(backend, dtype):
    # ml_dtypes' 6-bit floats (as its 4- and 8-bit ones, and bfloat16) are real floating
    # point that float32 holds exactly; they were refused as not numbers ("values must be
    # numbers (bool, integer, real or complex floating point)").
    ml_dtypes = pytest.importorskip("ml_dtypes")
    kind = getattr(ml_dtypes, dtype, None)
    if kind is None:
        pytest.skip(f"ml_dtypes {ml_dtypes.__version__} has no {dtype}")

    def function(indices):
        return _smooth(indices).astype(kind)

    indices = np.stack(np.unravel_index(np.arange(0, 216, 5), SHAPE), axis=1)
    values = host(FunctionTensor(function, SHAPE).evaluate(indices))
    assert values.dtype == np.float32
    np.testing.assert_array_equal(values, function(indices).astype(np.float32))
    volume = np.einsum("i,j,k->ijk", *[np.linspace(0.5, 2, n) for n in SHAPE]).astype(kind)
    source = tlc.open_volume(volume)
    everything = np.stack(np.unravel_index(np.arange(volume.size), SHAPE), axis=1)
    np.testing.assert_array_equal(host(source.evaluate(everything)),
                                  volume.astype(np.float32).ravel())


@pytest.mark.parametrize("dtype", ["int4", "uint4", "int2"])
def test_ml_dtypes_sub_byte_integers_are_refused_as_not_supported(dtype):
    # NumPy counts ml_dtypes' sub-byte integers as no integer (kind "V"): an int4 volume was
    # refused as if it were none of "bool, integer and real floating-point arrays", and
    # values of it as "values must be numbers (bool, integer, ...)", which it is.
    ml_dtypes = pytest.importorskip("ml_dtypes")
    kind = getattr(ml_dtypes, dtype, None)
    if kind is None:
        pytest.skip(f"ml_dtypes {ml_dtypes.__version__} has no {dtype}")
    volume = (np.arange(216) % 2).reshape(SHAPE).astype(kind)
    expected = rf"dtype {dtype} \(a sub-byte integer of ml_dtypes\): not supported; cast"
    with pytest.raises(TypeError, match=expected):
        tlc.open_volume(volume)
    with pytest.raises(TypeError, match=expected):
        tlc.tt_cross(volume, rank=2, method="tci")
    function = FunctionTensor(lambda indices: (indices.sum(axis=1) % 2).astype(kind), SHAPE)
    with pytest.raises(TypeError, match=expected):
        function.evaluate(np.zeros((1, 3), dtype=np.int64))


@pytest.mark.parametrize("dtype", ["int4", "uint4", "int2"])
def test_jax_sub_byte_integer_values_are_refused_as_not_supported_under_jax(dtype):
    # Under the JAX backend a function's JAX values skip the host check: int4 ones failed
    # in JAX's own terms ("abs does not accept dtype int4"), uint4 ones as a ValueError
    # ("Invalid integer data type 'V'"), not as the guarantees say.
    jnp = pytest.importorskip("jax.numpy")
    kind = getattr(jnp, dtype, None)
    if kind is None:
        pytest.skip(f"this JAX has no {dtype}")

    def function(indices):
        return jnp.asarray(np.asarray(indices).sum(axis=1) % 2, dtype=kind)

    expected = rf"dtype {dtype} \(a sub-byte integer of ml_dtypes\): not supported; cast"
    with tl.backend_context("jax"):
        with pytest.raises(TypeError, match=expected):
            FunctionTensor(function, SHAPE).evaluate(np.zeros((2, 3), dtype=np.int64))
        with pytest.raises(TypeError, match=expected):
            tlc.tt_cross(function, shape=SHAPE, random_state=0)


@pytest.mark.parametrize("backend", ["numpy", "pytorch"])
def test_torch_sub_byte_integer_values_are_refused_as_pytorch_s_not_supported(backend):
    # torch.uint4 values failed under NumPy in PyTorch's terms ("Got unsupported ScalarType
    # UInt4"), and under PyTorch were refused as "a sub-byte integer of ml_dtypes".
    torch = pytest.importorskip("torch")
    if not hasattr(torch, "uint4"):
        pytest.skip(f"torch {torch.__version__} has no uint4")

    def function(indices):
        return torch.zeros(len(indices), dtype=torch.uint8).view(torch.uint4)

    with tl.backend_context(backend), pytest.raises(
            TypeError, match=r"dtype torch\.uint4 \(a sub-byte integer of PyTorch\): not "
                             "supported; cast"):
        FunctionTensor(function, SHAPE).evaluate(np.zeros((2, 3), dtype=np.int64))


@pytest.mark.parametrize("backend", ["numpy", "pytorch"])
def test_tt_entries_refuses_torch_sub_byte_integer_cores_by_name(backend):
    # ml_dtypes' int4 cores are multiplied in float64, but PyTorch cannot convert its own
    # uint4 (no copy, no .numpy()): such cores failed in its terms ("Got unsupported
    # ScalarType UInt4"), naming neither the core nor what to do.
    torch = pytest.importorskip("torch")
    if not hasattr(torch, "uint4"):
        pytest.skip(f"torch {torch.__version__} has no uint4")
    cores = [torch.ones((1, 2, 1), dtype=torch.float64),
             torch.zeros((1, 2, 1), dtype=torch.uint8).view(torch.uint4)]
    with tl.backend_context(backend), pytest.raises(
            TypeError, match=r"cores\[1\] has dtype torch\.uint4 \(a sub-byte integer of "
                             r"PyTorch\): not supported; cast it to int8 or uint8"):
        tlc.tt_entries(cores, [[0, 1]])


@pytest.mark.parametrize("backend", ["numpy", "pytorch", "jax"])
def test_tt_entries_of_sub_byte_integer_cores_are_their_exact_products(backend):
    # Integer cores are multiplied in float64 (uint8: 200*2 + 200*2 gave 32), but NumPy
    # counts ml_dtypes' int4 as no integer (kind "V"): int4 cores of 3 were multiplied in
    # int4, and 3*3*3 wrapped to -5 under JAX; PyTorch failed ("can't convert np.ndarray
    # of type ml_dtypes.int4").
    ml_dtypes = pytest.importorskip("ml_dtypes")
    if backend != "numpy":
        pytest.importorskip("torch" if backend == "pytorch" else "jax")
    cores = [np.full((1, 2, 1), 3).astype(ml_dtypes.int4),
             np.full((1, 2, 1), 3).astype(ml_dtypes.int4),
             np.full((1, 2, 1), 7).astype(ml_dtypes.uint4)]
    with tl.backend_context(backend):
        values = host(tlc.tt_entries(cores, [[0, 1, 0], [1, 0, 1]]))
        assert values.dtype == np.float64
        np.testing.assert_array_equal(values, [63.0, 63.0])
        if backend == "jax":  # cores already JAX arrays of ml_dtypes' int4
            import jax.numpy as jnp

            native = [jnp.asarray(core) for core in cores[:2]]
            assert host(tlc.tt_entries(native, [[1, 1]])).tolist() == [9.0]


def test_low_precision_floats_are_told_from_float64_and_float32():
    from tensorly_cross.lazy.base import low_precision

    ml_dtypes = pytest.importorskip("ml_dtypes")
    narrow = [np.float16, ml_dtypes.bfloat16, ml_dtypes.float8_e4m3fn,
              getattr(ml_dtypes, "float6_e2m3fn", np.float16), ml_dtypes.float4_e2m1fn]
    assert all(low_precision(np.dtype(kind)) for kind in narrow)
    assert not any(low_precision(np.dtype(kind)) for kind in
                   (np.float32, np.float64, np.complex64, np.complex128, np.longdouble))


def test_sub_byte_integers_are_told_from_every_other_dtype():
    # Checked on every batch a function returns: by NumPy's kind first (str() of a NumPy
    # dtype took 4 us, which more than doubled the check of a batch of 64 values), by
    # name only for NumPy's kind "V" (ml_dtypes') and other libraries' dtypes.
    from tensorly_cross.lazy.base import sub_byte_integer

    ml_dtypes = pytest.importorskip("ml_dtypes")
    sub_byte = [np.dtype(ml_dtypes.int4), np.dtype(ml_dtypes.uint4)]
    sub_byte += [np.dtype(getattr(ml_dtypes, name)) for name in ("int2", "uint2")
                 if hasattr(ml_dtypes, name)]
    others = [np.dtype(kind) for kind in (np.int8, np.uint8, np.int64, np.float32,
                                          np.complex128, bool, "V4", "U4", object,
                                          ml_dtypes.bfloat16, ml_dtypes.float8_e5m2,
                                          ml_dtypes.float8_e4m3fn)]
    others.append(None)
    try:
        import torch
    except ImportError:  # the CI job without torch
        torch = None
    if torch is not None and hasattr(torch, "uint4"):
        sub_byte.append(torch.uint4)
        others += [torch.uint8, torch.int8, torch.float32, torch.bfloat16]
    assert all(sub_byte_integer(dtype) for dtype in sub_byte)
    assert not any(sub_byte_integer(dtype) for dtype in others)


# --- masked arrays ---------------------------------------------------------------------------


@pytest.mark.parametrize("entry", ["maxvol", "rect_maxvol"])
def test_maxvol_refuses_a_masked_matrix_by_name(entry):
    # It chose rows by their raw entries, masked or not (here the masked row of 100s), and
    # returned a masked coefficient matrix; a cross and tt_entries refuse masked arrays.
    rng = np.random.default_rng(0)
    matrix = rng.standard_normal((8, 3))
    matrix[2] = 100.0
    masked = np.ma.masked_array(matrix, mask=np.zeros(matrix.shape, dtype=bool))
    masked.mask[2] = True
    with pytest.raises(TypeError, match="matrix is a masked array"):
        getattr(tlc, entry)(masked)


# --- least-squares refinement of a function that turns complex -----------------------------


@pytest.mark.parametrize("n_iter_max", [1, 10])
def test_an_lsq_refinement_keeps_the_imaginary_part_of_a_complex_fit(backend, n_iter_max):
    # NumPy and JAX promote a real sweep's products with complex values read later; the
    # ALS fit of a core over the sweep's fibers came out complex, and was cast back to the
    # real dtype of the sweep's core: its imaginary part dropped (NumPy's ComplexWarning;
    # JAX said nothing), and a TT returned after that sweep was not the complex function's.
    import warnings

    complex_warning = getattr(np, "exceptions", np).ComplexWarning
    results = []
    for function in (_scimath_sqrt, lambda idx: _scimath_sqrt(idx).astype(complex)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", tlc.ToleranceNotMetWarning)
            warnings.simplefilter("error", complex_warning)
            results.append(tlc.tt_cross(function, shape=(16, 16, 16), method="lsq",
                                        tol=1e-8, random_state=0, n_iter_max=n_iter_max))
    everything = np.stack(np.unravel_index(np.arange(16**3), (16, 16, 16)), axis=1)
    mixed, always = (host(tlc.tt_entries(tt, everything)) for tt in results)
    # Round-off apart (real and complex products in another order): 5e-4 after one sweep
    # when the imaginary part was dropped.
    np.testing.assert_allclose(mixed, always, rtol=0, atol=1e-8 * np.abs(always).max())


def test_a_complex_stored_volume_is_refused_saying_why_and_what_crosses_it(tmp_path):
    # A complex HDF5 dataset passed to tt_cross was refused as "supported are bool, integer
    # and real floating-point arrays", while a complex zarr array passed alike is crossed:
    # h5py's datasets are read chunk by chunk in float64, as every stored volume that
    # open_volume opens (its reader is real, by design), zarr's through their own indexing.
    # The refusal now says so, and what crosses the values.
    h5py = pytest.importorskip("h5py")
    grid = np.linspace(0.0, 1.0, 6)
    values = np.exp(1j * np.add.outer(np.add.outer(grid, grid), grid))
    path = tmp_path / "complex.h5"
    with h5py.File(path, "w") as handle:
        handle["values"] = values
    np.save(tmp_path / "complex.npy", values)
    expected = r"dtype complex128 \(stored volumes are read as real.*np\.asarray.*tt_cross"
    for volume in (path, tmp_path / "complex.npy"):
        with pytest.raises(TypeError, match=expected):
            tlc.open_volume(volume)
    with h5py.File(path, "r") as handle:
        with pytest.raises(TypeError, match=expected):
            tlc.tt_cross(handle["values"], rank=2, method="tci")
        loaded = np.asarray(handle["values"])  # the advice, followed
    tt = tlc.tt_cross(loaded, tol=1e-8, random_state=0)
    np.testing.assert_allclose(host(tl.tt_to_tensor(tt)), values, atol=1e-6)
