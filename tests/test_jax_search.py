"""Under the JAX backend the index search runs with NumPy on the host: JAX compiles every
operation for every new shape, and the search's shapes change with every pivot."""

import threading

import numpy as np
import pytest
import tensorly as tl
from hypothesis import given
from hypothesis import strategies as st

import tensorly_cross as tlc

jax = pytest.importorskip("jax")


def _function(indices):
    x = indices / 7.0
    return np.sin(x.sum(axis=1)) + np.exp(-x[:, 0] * x[:, -1])


def _compilations(run):
    """The result of ``run()`` and the number of XLA compilations it caused."""
    events = []

    def listen(event, duration, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            events.append(duration)

    jax.monitoring.register_event_duration_secs_listener(listen)
    try:
        return run(), len(events)
    finally:
        jax.monitoring.unregister_event_duration_listener(listen)


@given(d=st.integers(3, 5), n=st.integers(4, 9), seed=st.integers(0, 2**16),
       method=st.sampled_from(["tci", "als", "auto"]))
def test_jax_cross_is_the_numpy_cross_with_jax_cores_and_compiles_no_search(d, n, seed, method):
    jax.config.update("jax_enable_x64", True)
    shape = (n,) * d
    rank = 3 if method == "als" else None
    with tl.backend_context("numpy"):
        expected = tlc.tt_cross(_function, shape=shape, rank=rank, method=method, tol=1e-8,
                                random_state=seed)
    with tl.backend_context("jax"):
        tt, compiled = _compilations(lambda: tlc.tt_cross(
            _function, shape=shape, rank=rank, method=method, tol=1e-8, random_state=seed))
        assert all(isinstance(core, jax.Array) for core in tt)
    assert compiled <= d  # at most the transfer of each core (the search compiled hundreds)
    for core, reference in zip(tt, expected, strict=True):
        np.testing.assert_array_equal(np.asarray(core), reference)


def test_a_differentiable_jax_cross_assembles_in_jax_from_the_host_search():
    jax.config.update("jax_enable_x64", True)
    shape = (6, 5, 4)
    with tl.backend_context("jax"):
        tt = tlc.tt_cross(_function, shape=shape, tol=1e-10, random_state=0,
                          differentiable=True)
        indices = tlc.select_indices(_function, shape=shape, tol=1e-10, random_state=0)
        rebuilt = tlc.cross_interpolate(_function, indices, shape=shape)
        assert all(isinstance(core, jax.Array) for core in tt)
        dense = np.asarray(tt.to_tensor())
    grid = np.stack(np.meshgrid(*map(np.arange, shape), indexing="ij"), -1).reshape(-1, 3)
    np.testing.assert_allclose(dense.ravel(), _function(grid), atol=1e-9)
    for core, other in zip(tt, rebuilt, strict=True):
        np.testing.assert_array_equal(np.asarray(core), np.asarray(other))


def test_the_host_search_leaves_other_threads_on_their_backend():

    jax.config.update("jax_enable_x64", True)
    seen = []
    with tl.backend_context("numpy"):

        def run_under_jax():
            tl.set_backend("jax", local_threadsafe=True)
            tlc.tt_cross(_function, shape=(5, 4, 3), tol=1e-8, random_state=0)
            seen.append(tl.get_backend())

        worker = threading.Thread(target=run_under_jax)
        worker.start()
        worker.join()
        assert seen == ["jax"] and tl.get_backend() == "numpy"
        other = []
        thread = threading.Thread(target=lambda: other.append(tl.get_backend()))
        thread.start()
        thread.join()
        assert other == ["numpy"]  # a new thread starts on the global default

