"""Defects found by the reliability audit in the lazy tensors and streaming (B1-B6): each
test failed before its fix.

Heavy modules (torch, h5py, distributed) are imported inside the tests: a process pool
started by spawn imports this module in each worker, to find the functions it runs.
"""

import multiprocessing
import pickle
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

import numpy as np
import pytest
import tensorly as tl

import tensorly_cross as tlc
from tensorly_cross import ArrayTensor, FunctionTensor
from tensorly_cross.lazy.chunk_result import NOTE_PREFIX

from .conftest import host


def _same_tt(first, second):
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(host(a), host(b))


def _sum_volume():
    """A rank-2 volume of 6 x 7 values: i + j."""
    return np.add.outer(np.arange(6.0), np.arange(7.0))


def inverse_sum(indices):
    """1 / (1 + sum of the multi-index): module level, so that executors can pickle it."""
    return 1.0 / (1.0 + indices.sum(axis=1))


def returns_a_generator(indices):
    """Pickles itself, but its values do not (a generator): they cannot come back from a
    worker process."""
    return (value for value in inverse_sum(indices))


# B1 ---------------------------------------------------------------------------------------


def test_an_h5py_dataset_passed_directly_is_read_as_open_volume_reads_it(tmp_path):
    h5py = pytest.importorskip("h5py")
    data = _sum_volume()
    path = tmp_path / "volume.h5"
    with h5py.File(path, "w") as handle:
        handle.create_dataset("x", data=data, chunks=(3, 4))
    # Unsorted and repeated multi-indices: h5py itself refuses them.
    points = np.array([[5, 6], [1, 2], [0, 0], [1, 2], [3, 0]])
    with h5py.File(path, "r") as handle:
        dataset = handle["x"]
        values = tlc.lazy_tensor(dataset).evaluate(points)
        direct = tlc.tt_cross(dataset, random_state=0)
        opened = tlc.tt_cross(tlc.open_volume(dataset), random_state=0)
        with pytest.raises(TypeError, match="open_volume"):
            ArrayTensor(dataset).evaluate(points)
    np.testing.assert_array_equal(host(values), data[tuple(points.T)])
    _same_tt(direct, opened)
    np.testing.assert_allclose(host(direct.to_tensor()), data, atol=1e-12)


# B2 ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend_name", ["numpy", "pytorch"])
@pytest.mark.parametrize("wrap", [False, True], ids=["tensor", "ArrayTensor"])
def test_streaming_tt_svd_reads_a_torch_tensor(backend_name, wrap):
    torch = pytest.importorskip("torch")
    grid = np.linspace(0.0, 1.0, 12)
    data = np.exp(-np.add.outer(np.add.outer(grid, grid), grid))
    with tl.backend_context(backend_name):
        expected = tlc.streaming_tt_svd(data, tol=1e-6)
        # requires_grad: NumPy cannot read it without a detach.
        tensor = torch.tensor(data, requires_grad=True)
        result = tlc.streaming_tt_svd(ArrayTensor(tensor) if wrap else tensor, tol=1e-6)
        _same_tt(result, expected)


# B3 ---------------------------------------------------------------------------------------


def test_chunks_of_torch_values_that_require_grad_give_the_serial_tt():
    torch = pytest.importorskip("torch")

    def function(indices):
        return torch.tensor(inverse_sum(indices), requires_grad=True)

    with tl.backend_context("numpy"):
        serial = tlc.tt_cross(FunctionTensor(function, (8, 8, 8)), random_state=0)
        with ThreadPoolExecutor(2) as executor:
            lazy = FunctionTensor(function, (8, 8, 8), executor=executor, chunk_size=5)
            parallel = tlc.tt_cross(lazy, random_state=0)
    _same_tt(parallel, serial)


# B4 ---------------------------------------------------------------------------------------


def _pickling_failure(pool, function):
    """The notes, in one string, on the error of evaluating ``function`` on ``pool``."""
    lazy = FunctionTensor(function, (8, 8), executor=pool)
    # Which of these it is depends on the Python version and on what failed to pickle.
    with pytest.raises((pickle.PicklingError, AttributeError, TypeError)) as error:
        lazy.evaluate(np.arange(16, dtype=np.int64).reshape(8, 2) % 8)
    return " ".join(getattr(error.value, "__notes__", ()))


def test_a_process_pool_that_cannot_pickle_gives_the_hint_and_does_not_blame_the_function():
    # spawn: forking a test process that runs threads can leave a lock held in the child.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(2, mp_context=context) as pool:
        # A local function: an AttributeError (or a PicklingError), never sent.
        notes = _pickling_failure(pool, lambda indices: inverse_sum(indices))
        assert "could not pickle the function" in notes
        assert NOTE_PREFIX not in notes and "d scalars" not in notes
        assert "raised by pickling chunk 1 of 2" in notes
        # The function ran, but its values could not be sent back.
        notes = _pickling_failure(pool, returns_a_generator)
        assert "could not pickle the function" in notes and NOTE_PREFIX not in notes


def test_values_a_dask_worker_process_cannot_send_back_do_not_blame_the_function():
    distributed = pytest.importorskip("distributed")
    from .test_dask import loopback_cluster

    with loopback_cluster(processes=True) as cluster, distributed.Client(cluster) as client:
        notes = _pickling_failure(client, returns_a_generator)
    assert "could not pickle the function" in notes and NOTE_PREFIX not in notes


# B5 ---------------------------------------------------------------------------------------


def test_a_closed_dask_client_as_executor_is_refused_with_a_message(loopback_cluster):
    distributed = pytest.importorskip("distributed")
    client = distributed.Client(loopback_cluster)  # closed here, the cluster left running
    lazy = FunctionTensor(inverse_sum, (8, 8), executor=client)
    np.testing.assert_array_equal(host(lazy.evaluate([[1, 2]])), [0.25])
    client.close()
    lazy = FunctionTensor(inverse_sum, (8, 8), executor=client)
    with pytest.raises(ValueError, match=r"executor .* has no workers \(is it closed"):
        lazy.evaluate([[1, 2]])


# B6 ---------------------------------------------------------------------------------------


def test_qtt_to_tt_names_cores_whose_ranks_do_not_chain():
    layout = tlc.QuanticsLayout.create((8,))
    cores = [np.ones((1, 2, 2)), np.ones((3, 2, 1)), np.ones((1, 2, 1))]
    with pytest.raises(ValueError, match=r"tt_q's ranks do not chain: core 0 has right rank 2 "
                                         r"but core 1 has left rank 3"):
        tlc.qtt_to_tt(cores, layout)
    with pytest.raises(ValueError, match=r"tt_q's core 1 has shape \(3, 2\)"):
        tlc.qtt_to_tt([np.ones((1, 2, 3)), np.ones((3, 2)), np.ones((1, 2, 1))], layout)
    with pytest.raises(ValueError, match="tt_q's first core has left rank 2"):
        tlc.qtt_to_tt([np.ones((2, 2, 1)), np.ones((1, 2, 1)), np.ones((1, 2, 1))], layout)
