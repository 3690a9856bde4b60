"""An interpolating cross that misses its tolerance ends with a least-squares refinement."""

import numpy as np
import tensorly as tl

import tensorly_cross as tlc

from .conftest import host


def _noisy(shape, seed):
    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*[np.linspace(0, 1, n) for n in shape], indexing="ij")
    return np.sin(4 * sum(grids)) + np.exp(-3 * grids[0] * grids[2]) + \
        0.05 * rng.standard_normal(shape)


def test_a_missed_tolerance_is_refined_and_the_refinement_is_better(backend):
    dense = _noisy((30, 28, 26), 0)
    tt, info = tlc.tt_cross(tl.tensor(dense), rank=5, method="als", tol=1e-6,
                            random_state=0, return_info=True)
    assert info.refined and info.best_sweep == info.n_sweeps
    assert info.val_errors[-1] < 0.99 * min(info.val_errors[:-1])
    plain = tlc.cross_interpolate(tl.tensor(dense), tlc.select_indices(
        tl.tensor(dense), rank=5, method="als", tol=1e-6, random_state=0))
    error = np.linalg.norm(host(tt.to_tensor()) - dense)
    assert error < np.linalg.norm(host(plain.to_tensor()) - dense)


def test_a_met_tolerance_is_returned_as_it_was(backend):
    rng = np.random.default_rng(1)
    dense = np.einsum("i,j,k->ijk", *[rng.standard_normal(n) for n in (6, 7, 8)])
    tt, info = tlc.tt_cross(tl.tensor(dense), rank=1, method="als", tol=1e-8,
                            random_state=1, return_info=True)
    assert info.stop_reason == "tol" and not info.refined
