"""Global pivots: entries far from every index set, found by random probes.

A two-site sweep only looks at entries whose prefixes and suffixes are already in the index
sets; a feature elsewhere (a small bright object, a sharp edge) may never be seen. After a
sweep that stalls above the tolerance (misses it without halving the error), a few random
probes are read (through the cache, counted), and the probes where the TT is furthest off
join every index set as pivots, prefixes on the left and suffixes on the right, which
keeps the sets nested (Fernandez et al. 2025, "global pivot search").
"""

import numpy as np

from .._backend import to_host
from .tt_entries import tt_entries


def add_global_pivots(lazy, indices, cores, rng, abs_tol, n_probes=200, n_pivots=2):
    """Add up to ``n_pivots`` probes whose error exceeds ``abs_tol``; returns how many."""
    shape = indices.shape
    probes = np.stack([rng.integers(n, size=n_probes) for n in shape], axis=1)
    errors = np.abs(to_host(lazy.evaluate(probes)) - to_host(tt_entries(cores, probes)))
    worst = np.argsort(-errors)[:n_pivots]
    chosen = probes[worst[errors[worst] > abs_tol]]
    for pivot in chosen:
        _insert(indices, pivot)
    return len(chosen)


def _insert(indices, pivot):
    for k in range(1, indices.ndim):
        indices.left[k] = _union(indices.left[k], pivot[:k])
        indices.right[k - 1] = _union(indices.right[k - 1], pivot[k:])


def _union(block, row):
    if (block == row).all(axis=1).any():
        return block
    return np.concatenate([block, row.reshape(1, -1)], axis=0)
