"""How sure a held-out error is: its standard error, and a one-sided upper bound.

The held-out entries are a uniform random sample of the tensor, drawn before any sweep, so
their error estimates the whole tensor's. With ``N`` of them (residuals ``r_i``) the
relative standard error of ``e = ||r|| / ||v||`` is about ``std(r_i^2) sqrt(N) / (2 sum
r_i^2)`` (delta method): small when the residuals are spread evenly, large when a few
entries carry them (the edges of a real volume), which is when a pass of the tolerance by a
few percent means little.
"""

import numpy as np

from .._backend import to_host
from .tt_entries import tt_entries

# One-sided 95% normal quantile.
Z_95 = 1.645


def held_out_squares(validation, cores):
    """Squared residuals of ``cores`` on the held-out entries read (host)."""
    held_out = validation.indices[: validation.n_read]
    predicted = to_host(tt_entries(cores, held_out))
    return np.abs(predicted - to_host(validation.values)) ** 2


def relative_standard_error(squares):
    """Relative standard error of a held-out error from its squared residuals (0 when they
    are all zero or fewer than two)."""
    if squares.size < 2:
        return 0.0
    total = float(np.sum(squares))
    if not total > 0:
        return 0.0
    return float(np.std(squares) * np.sqrt(squares.size) / (2.0 * total))


def upper_bound(error, squares, z=Z_95):
    """A one-sided upper confidence bound on a held-out error."""
    return error * (1.0 + z * relative_standard_error(squares))
