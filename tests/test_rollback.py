"""A sweep whose held-out error blows up is undone; the run never returns it."""

import numpy as np
import tensorly as tl

from tensorly_cross.cross.als import ALSSweeper
from tensorly_cross.cross.assemble import assemble_cores
from tensorly_cross.cross.driver import DIVERGENCE, _diverged, run_sweeps
from tensorly_cross.cross.init import random_indices
from tensorly_cross.cross.stopping import CrossInfo, Validation
from tensorly_cross.lazy.cache import EvaluationCache
from tensorly_cross.lazy.dispatch import lazy_tensor
from tensorly_cross.options import cross_options

from .conftest import host


def test_divergence_is_a_tenfold_rise_over_the_lowest_error():
    assert _diverged(DIVERGENCE * 0.01 * 1.01, [0.5, 0.01, 0.02])
    assert not _diverged(DIVERGENCE * 0.01 * 0.99, [0.5, 0.01, 0.02])
    assert not _diverged(100.0, [])
    assert not _diverged(100.0, [float("nan")])


class BlowsUpOnce(ALSSweeper):
    """The real ALS sweep, whose third assembly is scaled by 1e3 (as near-singular pivot
    blocks would do); it records being told of the divergence."""

    def __init__(self, rng):
        super().__init__(rng)
        self.calls, self.told = 0, 0

    def assemble(self, cache, indices, result):
        self.calls += 1
        cores = assemble_cores(cache, indices, result)
        return [cores[0] * 1e3] + cores[1:] if self.calls == 3 else cores

    def diverged(self):
        self.told += 1


def test_a_diverging_sweep_is_rolled_back_and_never_returned(backend):
    rng = np.random.default_rng(0)
    dense = rng.standard_normal((6, 7, 8)) + 5.0
    lazy = lazy_tensor(tl.tensor(dense))
    options = cross_options(lazy.shape, rank=3, method="als", tol=0.0, n_iter_max=6,
                            patience=None)
    cache = EvaluationCache(lazy)
    validation = Validation(cache, 200, rng)
    info = CrossInfo(method="als")
    sweeper = BlowsUpOnce(rng)
    indices, cores = run_sweeps(cache, random_indices(lazy.shape, [1, 3, 3, 1], rng), sweeper,
                                validation, info, options)
    assert info.rolled_back == [3]
    assert sweeper.told == 1
    assert info.val_errors[2] > DIVERGENCE * min(info.val_errors[:2])
    assert info.best_sweep != 3
    error = np.linalg.norm(host(tl.tt_to_tensor(cores)) - dense) / np.linalg.norm(dense)
    assert error < 2 * min(info.val_errors)
