"""The SVD falls back to LAPACK's gesvd where the default driver does not converge."""

import os

import numpy as np
import pytest
import tensorly as tl

from tensorly_cross._backend import host_svd, svd

from .conftest import host


def _nonconvergent():
    """Fibers of the P5b phantom (6 distinct values) on which LAPACK's gesdd, NumPy's
    default SVD driver, fails to converge ("SVD did not converge")."""
    path = os.path.join(os.path.dirname(__file__), "data", "gesdd_nonconvergent.npz")
    stored = np.load(path, allow_pickle=False)
    return stored["values"][stored["codes"]]


def test_the_svd_of_a_matrix_gesdd_cannot_converge_on_is_exact(backend):
    matrix = _nonconvergent()
    for left, singular, right in (host_svd(matrix),
                                  [host(part) for part in svd(tl.tensor(matrix))]):
        np.testing.assert_allclose((left * singular) @ right, matrix, atol=1e-12)
        np.testing.assert_allclose(left.T @ left, np.eye(left.shape[1]), atol=1e-12)
    np.testing.assert_allclose(host_svd(matrix, compute_uv=False), singular, atol=1e-12)


def test_a_traced_jax_svd_is_not_checked_on_the_host():
    jax = pytest.importorskip("jax")
    matrix = np.arange(12.0).reshape(4, 3) ** 2

    def nuclear_norm(values):
        with tl.backend_context("jax"):
            return svd(values)[1].sum()

    gradient = jax.grad(nuclear_norm)(jax.numpy.asarray(matrix))
    left, _, right = np.linalg.svd(matrix, full_matrices=False)
    np.testing.assert_allclose(np.asarray(gradient), left @ right, atol=1e-8)
