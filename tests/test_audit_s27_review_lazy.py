"""Review s27 of the day's changes to the lazy tensors, the backend helpers and the cross.

``LazyTensor.shape`` became a checked property stored in ``self._shape``: a subclass with an
attribute of its own named ``_shape`` (the shape of the array it reshapes) silently
changed the tensor's shape, and a dataclass subclass with a ``shape`` field took the
property object for that field's default, so a field after it failed at class creation
("non-default argument follows default argument"; frozen, an instance could not be
made). A shallow copy of an EvaluationCache got a lock of its own once the cache pickled,
while it shared the cache's values. Each test failed before its fix."""

import copy
import threading
from dataclasses import dataclass

import numpy as np
import pytest

import tensorly_cross as tlc


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


def test_a_shallow_copy_of_a_cache_serves_its_batches_one_at_a_time_with_the_cache():
    # Before: copy.copy gave the copy a lock of its own (the one pickling makes) while it
    # shared the cache's keys, values and counters: batches on the cache and on its copy
    # from two threads ran, and were stored, at the same time.
    entered, release = threading.Event(), threading.Event()
    active, most = [0], [0]
    lock = threading.Lock()

    def slow_sum(indices):
        with lock:
            active[0] += 1
            most[0] = max(most[0], active[0])
        entered.set()
        release.wait(0.5)  # the first batch holds the cache until the copy's one waits
        with lock:
            active[0] -= 1
        return indices.sum(axis=1) * 1.0

    cache = tlc.EvaluationCache(tlc.FunctionTensor(slow_sum, (8, 8)))
    shallow = copy.copy(cache)
    first = threading.Thread(target=cache.evaluate, args=([[1, 2]],))
    first.start()
    entered.wait(5)
    second = threading.Thread(target=shallow.evaluate, args=([[3, 4]],))
    second.start()
    first.join(5)
    second.join(5)
    assert most[0] == 1
