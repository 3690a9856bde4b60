"""The benchmark problems P1-P5 of the cross-approximation benchmark, as vectorised functions.

Each problem is ``(name, shape, function, target)``: ``function`` maps an (m, d) int64
array of multi-indices to m float values.
"""

from dataclasses import dataclass

import numpy as np


@dataclass
class Problem:
    name: str
    shape: tuple
    function: object
    target: float
    true_rank: int | None = None
    given_rank: int | None = None  # a rank to give every method that takes one


def grid_function(formula, lower, upper, size, d):
    grid = np.linspace(lower, upper, size)

    def function(indices):
        return formula(grid[indices])

    return function


def ackley(x):
    d = x.shape[1]
    return (-20.0 * np.exp(-0.2 * np.sqrt(np.sum(x**2, axis=1) / d))
            - np.exp(np.sum(np.cos(2 * np.pi * x), axis=1) / d) + 20.0 + np.e)


def random_tt_function(shape, rank, seed=0):
    rng = np.random.default_rng(seed)
    ranks = [1] + [rank] * (len(shape) - 1) + [1]
    cores = [rng.standard_normal((ranks[k], n, ranks[k + 1])) / np.sqrt(ranks[k])
             for k, n in enumerate(shape)]

    def function(indices):
        result = np.ones((indices.shape[0], 1))
        for mode, core in enumerate(cores):
            result = np.einsum("ma,amb->mb", result, core[:, indices[:, mode], :])
        return result[:, 0]

    return function


def smooth_field(indices, size=256):
    x = indices / (size - 1) * 2.0 - 1.0
    r2 = np.sum(x**2, axis=1)
    return np.exp(-2.0 * r2) * np.cos(3.0 * x[:, 0] + x[:, 1]) + 0.5 * np.sin(2.0 * x[:, 2])


def phantom(indices, size=256):
    """A Shepp-Logan-like 3D phantom: nested ellipsoids with sharp edges."""
    x = indices / (size - 1) * 2.0 - 1.0
    ellipsoids = [  # centre, semi-axes, value
        ((0.0, 0.0, 0.0), (0.69, 0.92, 0.81), 1.0),
        ((0.0, -0.0184, 0.0), (0.6624, 0.874, 0.78), -0.8),
        ((0.22, 0.0, 0.0), (0.11, 0.31, 0.22), -0.2),
        ((-0.22, 0.0, 0.0), (0.16, 0.41, 0.28), -0.2),
        ((0.0, 0.35, -0.15), (0.21, 0.25, 0.41), 0.1),
        ((0.0, 0.1, 0.25), (0.046, 0.046, 0.05), 0.1),
    ]
    values = np.zeros(indices.shape[0])
    for centre, axes, value in ellipsoids:
        inside = np.sum(((x - np.asarray(centre)) / np.asarray(axes)) ** 2, axis=1) <= 1.0
        values += value * inside
    return values


def problems():
    return [
        Problem("P1 random TT d=8 n=16 r=6", (16,) * 8, random_tt_function((16,) * 8, 6), 1e-8,
                6),
        Problem("P2 Ackley d=10 n=32", (32,) * 10,
                grid_function(ackley, -32.768, 32.768, 32, 10), 1e-6),
        Problem("P3 sin(sum) d=10 n=64", (64,) * 10,
                grid_function(lambda x: np.sin(x.sum(axis=1)), 0.0, 1.0, 64, 10), 1e-8, 2),
        Problem("P4 1/sum d=8 n=64", (64,) * 8,
                grid_function(lambda x: 1.0 / x.sum(axis=1), 1.0, 2.0, 64, 8), 1e-6),
        Problem("P5a smooth 3D 256^3", (256,) * 3, smooth_field, 1e-6),
        Problem("P5b phantom 3D 256^3", (256,) * 3, phantom, 3e-1, given_rank=64),
    ]
