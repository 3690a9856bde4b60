"""Values whose type changes between batches, and TT cores of bool or integer type."""

import numpy as np
import pytest
import tensorly as tl
from hypothesis import given
from hypothesis import strategies as st

import tensorly_cross as tlc

from ._helpers_shared import BRANCH, _scimath_sqrt
from .conftest import host
from .strategies import seeds

SHAPE = (16, 16, 16)


def test_a_complex_batch_after_real_ones_keeps_its_imaginary_part(backend):
    cache = tlc.EvaluationCache(tlc.FunctionTensor(_scimath_sqrt, SHAPE))
    cache.evaluate([[0, 0, 0]])  # a real first batch
    corner = 1j * np.sqrt(1.5)
    np.testing.assert_allclose(host(cache.evaluate([[15, 15, 15]])), [corner])
    # From the cache now: it was stored in the real first batch's dtype, without its
    # imaginary part.
    np.testing.assert_allclose(host(cache.evaluate([[15, 15, 15], [0, 0, 0]])),
                               [corner, np.sqrt(BRANCH)])


@given(seed=seeds)
def test_a_cross_of_a_function_that_turns_complex_is_the_complex_cross(seed):
    # The imaginary parts were dropped: a real TT, wrong at the corner, reported "tol".
    mixed = tlc.tt_cross(_scimath_sqrt, shape=SHAPE, tol=1e-8, random_state=seed)
    always = tlc.tt_cross(lambda indices: _scimath_sqrt(indices).astype(complex),
                          shape=SHAPE, tol=1e-8, random_state=seed)
    assert mixed.rank == always.rank
    for core, expected in zip(mixed, always, strict=True):
        np.testing.assert_array_equal(core, expected)
    np.testing.assert_allclose(tlc.tt_entries(mixed, [[15, 15, 15]]), [1j * np.sqrt(1.5)],
                               atol=1e-6)


def test_float64_batches_after_a_float32_one_are_not_rounded():
    def function(indices):
        values = 1.0 + indices.sum(axis=1) / 3.0
        return values.astype(np.float32) if indices.shape[0] == 1 else values

    cache = tlc.EvaluationCache(tlc.FunctionTensor(function, (8, 8)))
    cache.evaluate([[0, 0]])
    # float(): NumPy compares a float32 with a Python float in float32.
    assert float(host(cache.evaluate([[0, 1], [1, 0]]))[0]) == 1.0 + 1.0 / 3.0
    assert float(host(cache.evaluate([[0, 1]]))[0]) == 1.0 + 1.0 / 3.0


@pytest.mark.parametrize("dtype", ["bool", "uint8", "int16"])
@given(data=st.data())
def test_tt_entries_of_bool_and_integer_cores_are_the_exact_sums(backend, dtype, data):
    # Products in the cores' own dtype were logical (bool) or wrapped around (uint8).
    high = 2 if dtype == "bool" else 200
    rng = np.random.default_rng(data.draw(seeds))
    cores = [rng.integers(high, size=shape).astype(dtype)
             for shape in [(1, 3, 2), (2, 4, 3), (3, 2, 1)]]
    indices = np.stack(np.meshgrid(*map(np.arange, (3, 4, 2)), indexing="ij"), -1).reshape(-1, 3)
    exact = np.einsum("aib,bjc,ckd->ijk", *[core.astype(np.float64) for core in cores])
    values = tlc.tt_entries([tl.tensor(core) for core in cores], indices)
    np.testing.assert_array_equal(host(values), exact.reshape(-1))


@pytest.mark.parametrize("dtype", [object, str, "datetime64[s]"])
def test_tt_entries_refuses_cores_that_do_not_hold_numbers(dtype):
    # A string core failed in NumPy's matmul ("did not contain a loop with signature"),
    # naming no core; an object core returned an array of Python objects.
    cores = [np.ones(shape) for shape in [(1, 3, 2), (2, 4, 1)]]
    cores[1] = cores[1].astype(np.int64).astype(dtype)
    with pytest.raises(TypeError, match=r"tt_entries: cores\[1\] has dtype .*cores must "
                                        r"hold numbers"):
        tlc.tt_entries(cores, [[0, 0]])
