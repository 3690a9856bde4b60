"""TT-SVD of the (in-memory) projected core, to a budget of discarded energy.

The sequential TT-SVD of Oseledets (2011): bond ``k`` keeps the singular values of the
current unfolding beyond the threshold. Short, wide unfoldings (the first ones) take their
left singular vectors from the small Gram matrix instead of an SVD of the wide matrix,
which is several times faster and exact to ``sqrt(eps)`` of the largest singular value
(far below any tolerance a volume is compressed to).
"""

import numpy as np

from .._backend import host_svd
from ..cross.lsq import ROUND_OFF_SINGULAR

# Wider than this many times its height, an unfolding is decomposed through its Gram matrix,
# unless the threshold is below GRAM_FLOOR times the core's norm: Gram singular values are
# exact only to about sqrt(eps) = 1.5e-8 of the largest.
GRAM_ASPECT = 4
GRAM_FLOOR = 1e-6


def tt_svd(core, threshold, ranks=None, max_rank=None):
    """TT cores of ``core`` (NumPy), each bond dropping singular values of norm at most
    ``threshold`` (absolute) and keeping at most ``max_rank``, or keeping ``ranks[k]`` of
    them when ``ranks`` is given; without ``ranks``, singular values at round-off
    (:data:`ROUND_OFF_SINGULAR`) are dropped too. Returns the cores, the squared norm of
    everything dropped, and the part of it dropped as round-off only."""
    shape = core.shape
    d = len(shape)
    use_gram = ranks is None and threshold >= GRAM_FLOOR * float(np.linalg.norm(core))
    rest = core.reshape(shape[0], -1)
    rank, cores, dropped, round_off = 1, [], 0.0, 0.0
    for k in range(d - 1):
        rest = rest.reshape(rank * shape[k], -1)
        left, singular = _left_singular(rest, use_gram)
        keep = _rank(singular, threshold, None if ranks is None else ranks[k + 1])
        keep = keep if max_rank is None else min(keep, max_rank)
        if ranks is None:
            noise_rank = _above_round_off(singular)
            round_off += float(np.sum(singular[noise_rank:keep] ** 2))
            keep = min(keep, noise_rank)
        dropped += float(np.sum(singular[keep:] ** 2))
        cores.append(left[:, :keep].reshape(rank, shape[k], keep))
        rest = left[:, :keep].T @ rest
        rank = keep
    cores.append(rest.reshape(rank, shape[-1], 1))
    return cores, dropped, round_off


def _above_round_off(singular):
    """How many singular values lie above round-off (at least 1): the least-squares
    cross's rule, per unfolding (at tol=0 a rank-1 volume came back at ranks (20, 22), no
    more accurate than at rank 1)."""
    if singular.size == 0:
        return 1
    noise = ROUND_OFF_SINGULAR * float(np.finfo(np.float64).eps) * float(singular[0])
    return max(1, int(np.count_nonzero(singular > noise)))


def _left_singular(matrix, use_gram):
    rows, cols = matrix.shape
    if use_gram and cols > GRAM_ASPECT * rows:
        values, vectors = np.linalg.eigh(matrix @ matrix.T)
        order = np.argsort(values)[::-1]
        return vectors[:, order], np.sqrt(np.clip(values[order], 0.0, None))
    left, singular, _ = host_svd(matrix, full_matrices=False)
    return left, singular


def _rank(singular, threshold, fixed):
    available = max(1, int(np.count_nonzero(singular > 0)))
    if fixed is not None:
        return max(1, min(fixed, available))
    tails = np.sqrt(np.cumsum((singular**2)[::-1]))[::-1]
    return max(1, min(int(np.count_nonzero(tails > threshold)), available))
