"""The TensorLy drop-in passes TensorLy's own tests and class-wrapper check."""

import os
import re
import subprocess
import sys

import numpy as np
import pytest
import tensorly as tl
from tensorly.testing import assert_class_wrapper_correctly_passes_arguments

from tensorly_cross import TensorTrainCross, tensor_train_cross

from .conftest import host

TENSORLY_TESTS = "tensorly.contrib.decomposition.tests.test_mps_decomposition_cross"


@pytest.mark.parametrize("backend_name", ["numpy", "pytorch"])
def test_tensorly_own_test_module_passes_with_ours(backend_name):
    pytest.importorskip("torch" if backend_name == "pytorch" else "numpy")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, TENSORLY_BACKEND=backend_name, PYTHONPATH=root)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "tests._tensorly_dropin", "-p",
         "no:cacheprovider", "--pyargs", TENSORLY_TESTS],
        capture_output=True, text=True, cwd=root, env=env, timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # TensorLy 0.9 has 4 tests of tensor_train_cross, 0.10 has 7: every one runs ours.
    patched = re.search(r"drop-in patched into (\d+) tests", result.stdout)
    assert patched is not None and int(patched.group(1)) >= 4, result.stdout
    assert f"{patched.group(1)} passed" in result.stdout.splitlines()[-1]


def test_class_passes_every_argument(monkeypatch):
    assert_class_wrapper_correctly_passes_arguments(
        monkeypatch, tensor_train_cross, TensorTrainCross, rank=3
    )


def test_class_fit_transform_recovers_a_low_rank_tensor(backend):
    rng = np.random.default_rng(0)
    tensor = np.einsum("i,j,k->ijk", *(rng.standard_normal(n) for n in (5, 6, 7)))
    estimator = TensorTrainCross(rank=[1, 2, 2, 1], random_state=0)
    tt = estimator.fit_transform(tl.tensor(tensor))
    np.testing.assert_allclose(host(tl.tt_to_tensor(tt)), tensor, atol=1e-10)
    assert "TensorTrainCross" in repr(estimator)


def test_the_class_follows_scikit_learn_s_estimator_protocol():
    estimator = TensorTrainCross(rank=[1, 2, 2, 1], tol=1e-3, random_state=0)
    with pytest.raises(RuntimeError, match="not fitted yet: call fit"):
        estimator.to_tensor()
    assert estimator.get_params() == dict(rank=[1, 2, 2, 1], tol=1e-3, n_iter_max=100,
                                          random_state=0)
    assert estimator.set_params(tol=1e-5) is estimator and estimator.tol == 1e-5
    with pytest.raises(ValueError, match="no parameter 'rnak'"):
        estimator.set_params(rnak=2)
    base = pytest.importorskip("sklearn.base")
    copy = base.clone(estimator)
    assert copy is not estimator and copy.get_params() == estimator.get_params()


def test_class_fit_returns_the_estimator_with_the_decomposition(backend):
    tensor = np.add.outer(np.arange(4.0), np.arange(5.0))[:, :, None] * np.ones(3)
    estimator = TensorTrainCross(rank=[1, 2, 2, 1], random_state=0)
    assert estimator.fit(tl.tensor(tensor)) is estimator
    np.testing.assert_allclose(host(estimator.to_tensor()), tensor, atol=1e-10)
    assert repr(estimator) == "TensorTrainCross decomposition of rank [1, 2, 2, 1]."


@pytest.mark.parametrize(
    "rank, message",
    [
        ([1, 2, 1], "Provided incorrect number of ranks"),
        ([2, 2, 2, 1], r"Provided rank\[0\] == 2"),
        ([1, 2, 2, 3], r"Provided rank\[-1\] == 3"),
        ([1, 2, 9, 1], "exceeds the number of available column indices"),
    ],
)
def test_invalid_ranks_raise_tensorlys_messages(backend, rank, message):
    tensor = tl.tensor(np.ones((3, 4, 5)))
    with pytest.raises(ValueError, match=message):
        tensor_train_cross(tensor, rank)
