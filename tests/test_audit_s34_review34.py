"""Audit session 34, review of the values and performance commits since 655d04c: the
PyTorch search that runs again after a batch widened the cache's dtype."""

import numpy as np
import pytest
import tensorly as tl

import tensorly_cross as tlc

SHAPE = (6, 6, 6)


def _smooth(indices):
    return 1.0 + np.cos(indices @ np.array([0.3, 0.5, 0.7]))


class _RealThenComplex:
    """A function whose first batch is real and whose later ones are complex (the cache's
    dtype widens at the second), and which raises a RuntimeError of its own from call
    ``fail_at`` on (a model that crashed): ``raised`` counts those raises."""

    def __init__(self, fail_at=None):
        self.calls, self.raised, self.fail_at = 0, 0, fail_at

    def __call__(self, indices):
        self.calls += 1
        if self.fail_at is not None and self.calls >= self.fail_at:
            self.raised += 1
            raise RuntimeError("the model crashed")
        values = _smooth(indices)
        return values if self.calls == 1 else values + 0j


def test_a_function_error_after_a_widening_is_raised_without_a_second_search():
    # The search ran again from the start for any plain RuntimeError once the dtype had
    # widened: the function's own error too, and the batch it failed on was asked for a
    # second time (the failed batch is not cached), against "nothing is evaluated twice".
    pytest.importorskip("torch")
    function = _RealThenComplex(fail_at=3)
    with tl.backend_context("pytorch"), pytest.raises(RuntimeError, match="model crashed"):
        tlc.tt_cross(function, shape=SHAPE, method="tci", random_state=0)
    assert function.raised == 1


@pytest.mark.parametrize("method", ["tci", "lsq"])
def test_a_callback_error_after_a_widening_is_raised_without_a_second_search(method):
    # The callback's own RuntimeError, after a sweep that widened the dtype, ran the search
    # again, and the callback was called again for the same sweep (and raised again).
    pytest.importorskip("torch")
    seen = []

    def callback(tt, info):
        seen.append(info.n_sweeps)
        raise RuntimeError("stop here")

    with tl.backend_context("pytorch"), pytest.raises(RuntimeError, match="stop here"):
        tlc.tt_cross(_RealThenComplex(), shape=SHAPE, method=method, random_state=0,
                     callback=callback)
    assert seen == [1]


def _masked_or_list(indices):
    """A chunk's values as a masked array (every entry masked), or as a list."""
    values = _smooth(indices)
    if indices[0, 0] % 2:
        return np.ma.masked_array(values, mask=np.ones(values.shape, dtype=bool))
    return values.tolist()


@pytest.mark.parametrize("executor", [False, True])
def test_a_masked_chunk_beside_a_list_is_refused_by_name(backend, executor):
    # One call's masked array is refused (a cross would read its masked entries); a chunk's
    # beside a list went through np.asarray, which drops the mask: under PyTorch and JAX
    # the masked entries were read as values without a word.
    from concurrent.futures import ThreadPoolExecutor

    indices = np.stack(np.unravel_index(np.arange(0, 216, 5), SHAPE), axis=1)
    with ThreadPoolExecutor(2) as pool:
        tensor = tlc.FunctionTensor(_masked_or_list, SHAPE, chunk_size=4,
                                    executor=pool if executor else None)
        with pytest.raises(TypeError, match="_masked_or_list returned a masked array"):
            tensor.evaluate(indices)
