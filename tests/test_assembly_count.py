"""differentiable=True reads the cores again after the search: counted, and warned of
where it takes the count past max_evals."""

import warnings

import numpy as np
import pytest

import tensorly_cross as tlc

SHAPE = (12, 12, 12, 12)
GRID = [np.linspace(0, 1, n) for n in SHAPE]


class Counted:
    """A function of the grid that counts the entries it computes."""

    def __init__(self):
        self.n = 0

    def __call__(self, indices):
        self.n += len(indices)
        return 1.0 / (1.0 + sum((k + 1) * GRID[k][indices[:, k]] for k in range(len(SHAPE))))


@pytest.mark.parametrize("method, extra", [("tci", {}), ("als", {"rank": 3}), ("lsq", {})])
@pytest.mark.parametrize("differentiable", [False, True])
def test_n_evals_counts_every_entry_computed(method, extra, differentiable):
    function = Counted()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, info = tlc.tt_cross(function, shape=SHAPE, tol=1e-8, method=method, random_state=0,
                               differentiable=differentiable, return_info=True, **extra)
    assert info.n_evals == function.n


def test_an_assembly_read_past_max_evals_warns():
    function = Counted()
    budget = 2500
    with pytest.warns(RuntimeWarning, match="max_evals=2500 bounds the index search"):
        _, info = tlc.tt_cross(function, shape=SHAPE, tol=1e-12, method="tci",
                               max_evals=budget, random_state=0, differentiable=True,
                               return_info=True)
    assert function.n == info.n_evals > budget
