"""Audit, session 31: objects and state reused across calls (results must not depend on
what an object saw before, under which backend, or with which budget)."""

import numpy as np
import pytest
import tensorly as tl

import tensorly_cross as tlc
from tensorly_cross._backend import to_host


def _volume():
    return np.random.default_rng(0).random((6, 7, 8))


def test_a_cache_filled_under_numpy_serves_and_grows_under_pytorch():
    pytest.importorskip("torch")
    volume = _volume()
    cache = tlc.EvaluationCache(tlc.lazy_tensor(volume))
    cache.evaluate([[0, 0, 0], [1, 1, 1]])
    with tl.backend_context("pytorch"):
        hits = cache.evaluate([[1, 1, 1], [0, 0, 0]])  # all cached
        assert tl.is_tensor(hits)  # a tensor of the active backend, not the NumPy buffer
        mixed = cache.evaluate([[0, 0, 0], [2, 3, 4]])  # failed in torch.cat
        assert tl.is_tensor(mixed)
        np.testing.assert_array_equal(to_host(mixed), volume[[0, 2], [0, 3], [0, 4]])
        assert cache.max_abs() == pytest.approx(max(volume[0, 0, 0], volume[1, 1, 1],
                                                    volume[2, 3, 4]))
        tt = tlc.tt_cross(cache, rank=2, method="als", random_state=0)
        assert all(tl.is_tensor(core) for core in tt)
    back = cache.evaluate([[2, 3, 4], [5, 6, 7]])  # and back under NumPy
    assert isinstance(back, np.ndarray)
    np.testing.assert_array_equal(back, volume[[2, 5], [3, 6], [4, 7]])
    assert cache.value_dtype() == np.float64


def _inverse_sum(d=5, n=16):
    grid = np.linspace(1.0, 2.0, n)
    return tlc.FunctionTensor.on_grid(lambda x: 1.0 / x.sum(axis=1), [grid] * d)


@pytest.mark.parametrize("budget, stage", [(100, "held-out"), (300, "one sweep")])
def test_a_budget_of_the_cache_passed_as_tensor_is_named_with_its_value(budget, stage):
    # The run's own max_evals is None: "max_evals=None is too small" named a budget that
    # does not exist, not the cache's that refused the read.
    cache = tlc.EvaluationCache(_inverse_sum(), max_evals=budget)
    with pytest.raises(ValueError, match=stage) as raised:
        tlc.tt_cross(cache, tol=1e-8, random_state=0)
    message = str(raised.value)
    assert "max_evals=None" not in message
    assert f"max_evals={budget}" in message and "EvaluationCache" in message


def test_a_cache_spent_by_an_earlier_run_is_named_on_the_next():
    cache = tlc.EvaluationCache(_inverse_sum(), max_evals=1500)
    tlc.tt_cross(cache, rank=2, method="als", random_state=0)  # spends most of it
    with pytest.raises(ValueError) as raised:
        tlc.tt_cross(cache, rank=3, method="als", random_state=1)
    message = str(raised.value)
    assert "max_evals=1500" in message and "max_evals=None" not in message
    # the count that ran out is the cache's, earlier runs included
    assert f"{cache.counters.unique} entries evaluated" in message


def test_the_budget_error_keeps_its_limit_through_pickle():
    import pickle

    cache = tlc.EvaluationCache(tlc.lazy_tensor(np.ones((4, 4))), max_evals=3)
    with pytest.raises(tlc.EvaluationBudgetExceeded) as raised:
        cache.evaluate([[0, 0], [1, 1], [2, 2], [3, 3]])
    assert raised.value.max_evals == 3 and raised.value.needed == 4
    copy = pickle.loads(pickle.dumps(raised.value))
    assert (copy.max_evals, copy.needed, str(copy)) == (3, 4, str(raised.value))


def test_a_jax_cross_in_a_worker_thread_leaves_it_following_the_process_backend():
    # The search runs in NumPy in this thread only, and set JAX back as this thread's own
    # backend: a pool thread that had followed the process-wide one stayed on JAX after
    # tl.set_backend("numpy"), which every other thread followed.
    pytest.importorskip("jax")
    from concurrent.futures import ThreadPoolExecutor

    volume = _volume()
    previous = tl.get_backend()
    try:
        tl.set_backend("jax")
        with ThreadPoolExecutor(1) as pool:
            assert pool.submit(tl.get_backend).result() == "jax"
            tt = pool.submit(lambda: tlc.tt_cross(volume, rank=2, random_state=0)).result()
            assert tl.get_backend() == "jax" and "jax" in type(tt[0]).__module__
            tl.set_backend("numpy")
            assert pool.submit(tl.get_backend).result() == "numpy"
    finally:
        tl.set_backend(previous)


def test_a_jax_cross_keeps_a_thread_s_own_backend():
    pytest.importorskip("jax")
    volume = _volume()
    previous = tl.get_backend()
    try:
        tl.set_backend("numpy")
        with tl.backend_context("jax", local_threadsafe=True):
            tlc.tt_cross(volume, rank=2, random_state=0)
            assert tl.get_backend() == "jax"
        assert tl.get_backend() == "numpy"
    finally:
        tl.set_backend(previous)


@pytest.mark.filterwarnings("ignore::tensorly_cross.UnseenStructureWarning")
def test_an_int_seed_repeats_a_run_and_a_generator_is_drawn_from_as_documented():
    f = _inverse_sum(d=4, n=8)

    def run(seed):
        return tlc.tt_cross(f, tol=1e-8, random_state=seed, return_info=True)

    (first, info_first), (again, info_again) = run(3), run(3)
    assert info_first.n_evals == info_again.n_evals
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    # An int n runs as np.random.default_rng(n) ...
    fresh, _ = run(np.random.default_rng(3))
    assert all(np.array_equal(a, b) for a, b in zip(first, fresh, strict=True))
    # ... and a Generator (or RandomState) object is drawn from: it moves on, call by call.
    generator = np.random.default_rng(3)
    run(generator)
    assert generator.bit_generator.state != np.random.default_rng(3).bit_generator.state
    state = np.random.RandomState(3)
    run(state)
    assert state.get_state()[2] != np.random.RandomState(3).get_state()[2] or \
        not np.array_equal(state.get_state()[1], np.random.RandomState(3).get_state()[1])
    # documented so where the parameter is
    doc = " ".join(tlc.tt_cross.__doc__.split())
    assert "drawn from" in doc and "default_rng" in doc


def test_streaming_tt_svd_takes_a_random_state_as_documented():
    volume = _volume()
    doc = " ".join(tlc.streaming_tt_svd.__doc__.split())
    assert "None, int, numpy RandomState or Generator" in doc
    first = tlc.streaming_tt_svd(volume, rank=2, random_state=np.random.RandomState(0))
    again = tlc.streaming_tt_svd(volume, rank=2, random_state=np.random.RandomState(0))
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))


def test_compress_volume_reports_the_reads_of_its_own_run(tmp_path):
    # The volume's read counters run over its life: a second compress_volume of one open
    # volume reported both runs' bytes and pages as its own.
    from tensorly_cross.cli import compress_volume

    rng = np.random.default_rng(0)
    data = np.einsum("i,j,k->ijk", *(rng.random(n) for n in (24, 25, 26)))
    np.save(tmp_path / "v.npy", data)
    volume = tlc.open_volume(str(tmp_path / "v.npy"))
    summaries = [compress_volume(volume, str(tmp_path / f"v{k}.tt.npz"), tol=None, rank=2,
                                 method="als", quiet=True, seed=k) for k in range(2)]
    assert summaries[0]["bytes_read"] > 0
    assert sum(s["bytes_read"] for s in summaries) == volume.bytes_read
    assert sum(s["pages_read"] for s in summaries) == volume.pages_read
