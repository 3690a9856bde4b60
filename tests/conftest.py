"""Shared fixtures: every backend-dependent test runs once per installed TensorLy backend."""

import hashlib
import importlib.util
import sys

import numpy as np
import pytest
import tensorly as tl
from hypothesis import HealthCheck, settings

from ._helpers_shared import _smooth_cube

# The default run (CI's) draws the same examples every time: a run that fails is reproduced
# by running it again, and a submission is not refused for an example that one run happened
# to draw. The thorough profile draws new examples on every run: run it to look for bugs.
settings.register_profile(
    "default",
    deadline=None,
    max_examples=25,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
settings.register_profile(
    "thorough",
    deadline=None,
    max_examples=300,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
# A few examples per property (``--hypothesis-profile=quick``): CI's run of the JAX variants,
# which compile every new shape.
settings.register_profile(
    "quick",
    deadline=None,
    max_examples=3,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
settings.load_profile("default")



@pytest.fixture(autouse=True)
def _seeded_entropy(request, monkeypatch):
    """``random_state=None`` draws from fresh OS entropy in the library. Here each test draws
    from its own fixed sequence instead (seeded by the test's id, a new generator per call),
    so that a run of the suite draws what the last one drew, as hypothesis's examples do:
    a failure reproduces, and CI does not go red on one unlucky draw."""
    from tensorly_cross import _validation

    digest = hashlib.sha256(request.node.nodeid.encode()).digest()
    sequence = np.random.SeedSequence(int.from_bytes(digest[:16], "little"))
    monkeypatch.setattr(_validation, "fresh_generator",
                        lambda: np.random.default_rng(sequence.spawn(1)[0]))
    # torch's global generator too (a module's initial weights, torch.randn in a test):
    # what one test draws no longer depends on which tests ran before it.
    if "torch" in sys.modules:
        sys.modules["torch"].manual_seed(int.from_bytes(digest[16:24], "little"))


# TensorLy backend name -> the module that must be importable for it.
BACKEND_MODULES = {"numpy": "numpy", "pytorch": "torch", "jax": "jax"}


def _backend_param(name):
    missing = importlib.util.find_spec(BACKEND_MODULES[name]) is None
    reason = f"TensorLy backend {name!r} needs {BACKEND_MODULES[name]!r}, which is not installed"
    return pytest.param(name, marks=pytest.mark.skipif(missing, reason=reason), id=name)


@pytest.fixture(params=[_backend_param(name) for name in BACKEND_MODULES])
def backend(request):
    """Run the test under one TensorLy backend, restoring the previous one afterwards."""
    if request.param == "jax":
        import jax

        jax.config.update("jax_enable_x64", True)
    with tl.backend_context(request.param):
        yield request.param


def to_backend(array):
    """A float64/complex128 NumPy array as a tensor of the active backend."""
    return tl.tensor(np.asarray(array))


def host(tensor):
    """A backend tensor as a NumPy array."""
    from tensorly_cross._backend import to_host

    return to_host(tensor)


@pytest.fixture
def jax_x32():
    """The JAX backend with ``jax_enable_x64`` off (JAX's own default), restored after."""
    jax = pytest.importorskip("jax")
    with tl.backend_context("jax"):  # first: loading TensorLy's JAX backend turns x64 on
        before = jax.config.jax_enable_x64
        jax.config.update("jax_enable_x64", False)
        try:
            yield
        finally:
            jax.config.update("jax_enable_x64", before)


@pytest.fixture
def pytorch_backend():
    """The PyTorch backend for one test, the previous one restored after (the nn and
    gradient modules use it on every test: ``pytest.mark.usefixtures``); skipped where
    torch is not installed (the floors job runs without it)."""
    pytest.importorskip("torch")
    with tl.backend_context("pytorch"):
        yield


@pytest.fixture(scope="module")
def loopback_cluster():
    """An in-process dask.distributed cluster whose every socket is on loopback
    (``dashboard_address=None`` still served the scheduler's HTTP endpoints on 0.0.0.0)."""
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                                  dashboard_address="127.0.0.1:0",
                                  worker_dashboard_address="127.0.0.1:0") as local:
        yield local


@pytest.fixture(scope="module")
def cluster():
    """An in-process dask.distributed cluster of one single-threaded worker, on loopback,
    shared by the tests of one module (a module that wants another defines its own)."""
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(
        n_workers=1,
        threads_per_worker=1,
        processes=False,
        dashboard_address="127.0.0.1:0",
        worker_dashboard_address="127.0.0.1:0",
    ) as local:
        yield local


@pytest.fixture
def client(cluster):
    """A dask.distributed client of ``cluster`` for one test, closed after it."""
    import distributed

    with distributed.Client(cluster) as connected:
        yield connected


@pytest.fixture
def noisy(tmp_path):
    """A smooth volume plus noise: rank 1-2 meets --tol 0.1, any rank is below 1e-3."""
    path = tmp_path / "v.npy"
    np.save(path, _smooth_cube())
    return path


@pytest.fixture
def numpy_backend():
    """The NumPy backend for one test, the previous one restored after."""
    with tl.backend_context("numpy"):
        yield
