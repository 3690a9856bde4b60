"""Cache keys: one int64 per multi-index, linear in the indices, at any number of modes.

A key is ``indices @ weights`` in 64-bit arithmetic. While the tensor has fewer than 2**63
entries the weights are the C-order strides and the key is the entry's flat position:
exact, and ordered like the multi-indices. Beyond that (from 16 modes of size 16) the
weights are fixed random odd integers and the product wraps modulo 2**64: a hash. Two
distinct multi-indices then share a key with probability about 2**-64 (a run that caches
N entries meets a shared key with probability about N**2 / 2**65), so a second hash with
other weights travels with every key and is compared wherever a key is found: a shared key
is detected, never served silently (:class:`KeyCollisionError`).

Either way a key is linear, so a caller that reads a block of rows times columns (a bond
of the cross) adds a row part and a column part instead of building the multi-indices;
and one int64 keeps the sorted searches of the cache as fast at d=80 as at d=10 (keys of
five int64 words, compared field by field, made ``searchsorted`` 42x slower: 2,000
queries in 200,000 keys).
"""

import math

import numpy as np

from ..errors import KeyCollisionError
from .base import c_order_strides

# Fixed seed: the same shape always gets the same weights (same keys, same run).
_HASH_SEED = 0x7C3A_11E5


class KeyScheme:
    """The keys of a tensor of ``shape``: ``weights`` and, for hashed keys, ``check_weights``.

    Attributes
    ----------
    weights : ndarray of int64, shape (d,)
        ``key = indices @ weights`` (wrapping).
    check_weights : ndarray of int64 or None
        Weights of the second hash compared on every match; None for exact keys.
    exact : bool
        Whether keys are flat positions (fewer than 2**63 entries).
    """

    def __init__(self, shape):
        self.exact = math.prod(shape) < 2**63
        if self.exact:
            self.weights, self.check_weights = c_order_strides(shape), None
        else:
            rng = np.random.default_rng(_HASH_SEED)
            self.weights, self.check_weights = (_odd_weights(rng, len(shape)) for _ in range(2))

    def keys(self, indices):
        """Keys of (m, d) int64 multi-indices."""
        return indices @ self.weights

    def checks(self, indices):
        """Second hashes of (m, d) multi-indices (None for exact keys)."""
        return None if self.exact else indices @ self.check_weights


def _odd_weights(rng, n_modes):
    """Random odd 64-bit integers: an odd weight never loses the low bits of an index."""
    bits = rng.integers(0, 2**64, size=n_modes, dtype=np.uint64, endpoint=False) | np.uint64(1)
    return bits.view(np.int64)


def verify_matches(found_checks, checks, multi_indices_at, positions):
    """Raise :class:`KeyCollisionError` where a found key's check differs from the one asked
    for; ``positions`` are the batch positions of the matches (to name the entry)."""
    clash = np.flatnonzero(found_checks != checks)
    if clash.size:
        index = tuple(int(i) for i in multi_indices_at(positions[clash[:1]])[0])
        raise KeyCollisionError(
            f"the hashed cache key of multi-index {index} is shared by another entry "
            "(probability about 2**-64 per pair); rerun with another random_state."
        )
