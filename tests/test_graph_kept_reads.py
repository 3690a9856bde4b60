"""The cores' fresh read keeps autograd's graph, whatever executor the function has.

A dask worker computes from its own copy of the function's parameters (sent by value):
``differentiable=True`` returned cores that required grad, ``backward()`` ran, and the
parameters' ``.grad`` stayed None, without a word. The autograd-visible read now runs in
the caller's thread (or on a thread pool, which shares the caller's tensors); the index
search, without gradient, still uses the executor.
"""

import concurrent.futures

import pytest

torch = pytest.importorskip("torch")
distributed = pytest.importorskip("distributed")

import tensorly as tl  # noqa: E402

import tensorly_cross as tlc  # noqa: E402

SHAPE = (6, 7, 8)


class Scaled:
    """``scale * (1 + i + 2j + 3k)``: a callable object that holds its parameter."""

    def __init__(self, scale):
        self.scale = scale

    def __call__(self, indices):
        index = torch.as_tensor(indices, dtype=torch.float64)
        return self.scale * (1.0 + index @ torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64))


def _gradient(executor):
    scale = torch.tensor(2.0, dtype=torch.float64, requires_grad=True)
    tensor = tlc.FunctionTensor(Scaled(scale), SHAPE, executor=executor)
    tt, info = tlc.tt_cross(tensor, tol=1e-10, random_state=0, differentiable=True,
                            return_info=True)
    tlc.tt_entries(tt, [[1, 2, 3], [5, 6, 7]]).sum().backward()
    return scale.grad, info


@pytest.fixture
def dask_client():
    cluster = distributed.LocalCluster(
        processes=False, n_workers=1, threads_per_worker=2, dashboard_address="127.0.0.1:0",
        worker_dashboard_address="127.0.0.1:0")
    client = distributed.Client(cluster)
    yield client
    client.close()
    cluster.close()


def test_the_gradient_reaches_a_parameter_that_a_dask_worker_got_by_value(dask_client):
    with tl.backend_context("pytorch"):
        serial, _ = _gradient(None)
        on_dask, info = _gradient(dask_client)
    assert serial is not None and float(serial) == pytest.approx(15.0 + 39.0)
    assert on_dask is not None and float(on_dask) == pytest.approx(float(serial))
    assert info.n_calls > 1  # the search itself still ran on the executor


def test_a_thread_pool_keeps_the_graph_and_is_still_used():
    with tl.backend_context("pytorch"), concurrent.futures.ThreadPoolExecutor(2) as pool:
        gradient, _ = _gradient(pool)
    assert gradient is not None and float(gradient) == pytest.approx(54.0)
