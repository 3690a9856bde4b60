"""Property-based fuzzing of the public API: random shapes, ranks, methods, budgets, dtypes.

Whatever the arguments, a call either returns a finite TT whose report is true (the budget
kept, every entry the function received counted) or raises a documented exception
(ValueError or TypeError) whose message says something. The default hypothesis profile keeps
this to a few seconds per property (CI runs it on every push);
``--hypothesis-profile=thorough`` is the long run for releases.
"""

import os

import numpy as np
import pytest
import tensorly as tl
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

import tensorly_cross as tlc

from .conftest import host
from .strategies import seeds

# What the public functions document that they raise on bad arguments or data.
DOCUMENTED = (ValueError, TypeError)

VALUE_DTYPES = [np.float64, np.float32, np.int64, np.int16, np.bool_, np.complex128]


class Recorder:
    """A tensor function over a random low-rank TT that records every entry it is asked for."""

    def __init__(self, shape, rank, seed, dtype, scale=1.0):
        rng = np.random.default_rng(seed)
        ranks = [1] + [rank] * (len(shape) - 1) + [1]
        self.cores = [rng.standard_normal((ranks[k], n, ranks[k + 1]))
                      for k, n in enumerate(shape)]
        self.dtype, self.scale = dtype, scale
        self.received = []

    def __call__(self, indices):
        self.received.append(np.array(indices, copy=True))
        values = np.ones((indices.shape[0], 1))
        for mode, core in enumerate(self.cores):
            values = np.einsum("ma,amb->mb", values, core[:, indices[:, mode], :])
        values = self.scale * values[:, 0]
        if self.dtype == np.bool_:
            return values > 0
        if np.issubdtype(self.dtype, np.integer):
            return np.round(3 * values).astype(self.dtype)
        return values.astype(self.dtype)

    @property
    def n_received(self):
        return sum(batch.shape[0] for batch in self.received)

    @property
    def n_distinct(self):
        if not self.received:
            return 0
        return np.unique(np.concatenate(self.received), axis=0).shape[0]


@st.composite
def cross_calls(draw):
    """Random but mostly sensible arguments of tt_cross (some invalid on purpose)."""
    d = draw(st.integers(1, 5))
    shape = tuple(draw(st.lists(st.integers(1, 7), min_size=d, max_size=d)))
    method = draw(st.sampled_from(["auto", "als", "tci", "block"]))
    rank = draw(st.one_of(st.none(), st.integers(1, 4),
                          st.lists(st.integers(1, 4), min_size=d + 1, max_size=d + 1)))
    kwargs = dict(
        rank=rank, method=method,
        tol=draw(st.sampled_from([0.0, 1e-12, 1e-6, 1e-2, 0.5])),
        max_rank=draw(st.integers(1, 6)),
        max_evals=draw(st.one_of(st.none(), st.integers(1, 3000))),
        n_iter_max=draw(st.integers(1, 6)),
        val_size=draw(st.sampled_from([0, 1, 10, 100])),
        pivot_search=draw(st.sampled_from(["column", "rook", "full", "auto", "batched"])),
        patience=draw(st.one_of(st.none(), st.integers(1, 3))),
        oversample=draw(st.sampled_from([1.0, 1.5, 2.0])),
        max_slices=draw(st.one_of(st.none(), st.integers(1, 3))),
        random_state=draw(seeds),
    )
    if isinstance(rank, list):  # boundary ranks 1 most of the time, so most calls run
        rank[0] = rank[-1] = 1 if draw(st.booleans()) or d == 0 else rank[0]
    function = Recorder(shape, draw(st.integers(1, 3)), draw(seeds),
                        draw(st.sampled_from(VALUE_DTYPES)),
                        draw(st.sampled_from([1.0, 1e-150, 1e150])))
    return shape, function, kwargs


def check_refusal(error):
    """A documented exception, with a message, raised by tensorly-cross's own checks (not by
    NumPy or a backend deep inside a computation)."""
    assert isinstance(error, DOCUMENTED), f"undocumented {type(error).__name__}: {error}"
    assert str(error), f"{type(error).__name__} without a message"
    frame = error.__traceback__
    while frame.tb_next is not None:
        frame = frame.tb_next
    raised_in = frame.tb_frame.f_code.co_filename
    assert f"tensorly_cross{os.sep}" in raised_in, f"raised in {raised_in}: {error}"


def check_result(tt, info, function, kwargs):
    cores = [host(core) for core in tt]
    assert all(np.isfinite(core).all() for core in cores), "a core holds NaN or inf"
    assert info.n_evals == function.n_received == function.n_distinct
    if kwargs["max_evals"] is not None:
        assert function.n_received <= kwargs["max_evals"]
    assert info.stop_reason in ("tol", "stalled", "max_evals", "n_iter_max", "callback")
    assert 0 <= info.heldout_bound <= 1


@settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                               HealthCheck.function_scoped_fixture])
@given(call=cross_calls())
def test_tt_cross_returns_a_true_report_or_a_documented_error(backend, call):
    shape, function, kwargs = call
    try:
        tt, info = tlc.tt_cross(function, shape=shape, return_info=True, **kwargs)
    except DOCUMENTED as error:
        event(f"refused: {str(error)[:40]}")
        check_refusal(error)
        if kwargs["max_evals"] is not None:
            assert function.n_received <= kwargs["max_evals"]
        return
    event(f"returned ({info.stop_reason})")
    check_result(tt, info, function, kwargs)


@given(call=cross_calls())
def test_select_then_interpolate_reads_one_batch_within_the_report(call):
    shape, function, kwargs = call
    try:
        indices, info = tlc.select_indices(function, shape=shape, return_info=True, **kwargs)
    except DOCUMENTED as error:
        check_refusal(error)
        return
    assert info.n_evals == function.n_received
    n_before = len(function.received)
    tt = tlc.cross_interpolate(function, indices, shape=shape)
    assert len(function.received) == n_before + 1  # one batched evaluation
    assert all(np.isfinite(host(core)).all() for core in tt)


@given(shape=st.lists(st.integers(1, 6), min_size=1, max_size=4), rank=st.integers(1, 3),
       seed=seeds, data=st.data())
def test_tt_entries_matches_the_dense_tensor_or_refuses_the_index(backend, shape, rank, seed,
                                                                  data):
    function = Recorder(tuple(shape), rank, seed, np.float64)
    cores = [tl.tensor(core) for core in function.cores]
    index = data.draw(st.lists(st.integers(-3, 9), min_size=len(shape), max_size=len(shape)))
    inside = all(0 <= i < n for i, n in zip(index, shape, strict=True))
    if not inside:
        with pytest.raises(ValueError, match="out of range"):
            tlc.tt_entries(cores, [index])
        return
    value = host(tlc.tt_entries(cores, [index]))[0]
    dense = host(tl.tt_to_tensor(cores))
    assert np.isclose(value, dense[tuple(index)], rtol=1e-10, atol=1e-12)


@given(shape=st.lists(st.integers(1, 5), min_size=1, max_size=4), rank=st.integers(1, 3),
       seed=seeds, dtype=st.sampled_from([np.float32, np.float64, np.complex128]),
       meta=st.dictionaries(st.text(min_size=1, max_size=5),
                            st.one_of(st.integers(), st.floats(allow_nan=False), st.text()),
                            max_size=3))
def test_save_and_load_round_trip_any_tt(tmp_path_factory, shape, rank, seed, dtype, meta):
    assume(not {"format", "format_version", "n_cores", "ranks", "shape", "quantics", "axes"}
           & set(meta))
    function = Recorder(tuple(shape), rank, seed, np.float64)
    cores = [core.astype(dtype) for core in function.cores]
    path = tmp_path_factory.mktemp("tt") / "t.tt.npz"
    tlc.save_tt(path, cores, meta)
    loaded, metadata = tlc.load_tt(path)
    for saved, back in zip(cores, loaded, strict=True):
        np.testing.assert_array_equal(saved, host(back))
    assert {key: metadata[key] for key in meta} == meta


@given(shape=st.one_of(st.lists(st.integers(-2, 5), min_size=0, max_size=3),
                       st.lists(st.floats(0.5, 5.5), min_size=1, max_size=3),
                       st.sampled_from([None, "abc", 3, (2, None)])))
def test_function_tensor_shapes_are_ints_or_refused(shape):
    try:
        tensor = tlc.FunctionTensor(lambda i: np.ones(i.shape[0]), shape)
    except DOCUMENTED as error:
        check_refusal(error)
        assert "shape" in str(error)
        return
    assert all(isinstance(n, int) and n >= 1 for n in tensor.shape)
    assert list(tensor.shape) == list(shape)
