"""TT rounding (Oseledets 2011): fewer parameters for a bounded loss, without new reads.

``round_cores`` re-truncates a TT by SVDs of its orthogonalised cores; ``round_to_tolerance``
finds the strongest rounding whose held-out error still passes a test (the least-squares
cross ends with it: its sweeps overshoot the ranks a tolerance needs, rounding takes back
the excess).
"""

import math

import tensorly as tl

from .._backend import svd, to_host
from .lsq import truncation_rank
from .stopping import scaled_norm

# Bisection steps on the rounding threshold.
ROUNDING_STEPS = 12


def round_cores(cores, delta):
    """The TT rounded so that each bond drops singular values of norm ``<= delta ||TT|| /
    sqrt(d - 1)`` (relative error ``<= delta`` in all)."""
    cores = _left_orthogonal(list(cores))
    d = len(cores)
    norm = scaled_norm(to_host(cores[-1]).ravel())  # no overflow of squares near 1e160
    threshold = delta / math.sqrt(max(d - 1, 1))
    for k in range(d - 1, 0, -1):
        r_left, n, r_right = tl.shape(cores[k])
        left, singular, right = svd(tl.reshape(cores[k], (r_left, n * r_right)),
                                       full_matrices=False)
        host = to_host(singular)
        host_norm = scaled_norm(host)
        relative = threshold * norm / host_norm if host_norm > 0 else 0.0
        rank = truncation_rank(host, relative, host.size)
        cores[k] = tl.reshape(right[:rank], (rank, n, r_right))
        factor = left[:, :rank] * tl.reshape(singular[:rank], (1, -1))
        r_prev, n_prev, _ = tl.shape(cores[k - 1])
        cores[k - 1] = tl.reshape(tl.dot(tl.reshape(cores[k - 1], (r_prev * n_prev, r_left)),
                                         factor), (r_prev, n_prev, rank))
    return cores


def _left_orthogonal(cores):
    for k in range(len(cores) - 1):
        r_left, n, r_right = tl.shape(cores[k])
        q_factor, r_factor = tl.qr(tl.reshape(cores[k], (r_left * n, r_right)))
        rank = tl.shape(q_factor)[1]
        cores[k] = tl.reshape(q_factor, (r_left, n, rank))
        r_next, n_next, r_after = tl.shape(cores[k + 1])
        cores[k + 1] = tl.reshape(tl.dot(r_factor, tl.reshape(cores[k + 1], (r_next, -1))),
                                  (rank, n_next, r_after))
    return cores


def round_to_tolerance(cores, passes, largest):
    """The most rounded TT (threshold in ``[0, largest]``, by bisection) for which
    ``passes(cores)`` holds; ``cores`` themselves if no rounding passes."""
    best, low, high = list(cores), 0.0, largest
    for _ in range(ROUNDING_STEPS):
        middle = 0.5 * (low + high)
        candidate = round_cores(cores, middle)
        if passes(candidate):
            best, low = candidate, middle
        else:
            high = middle
    return best
