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


def held_out_residuals(validation, cores):
    """Residuals of ``cores`` on the held-out entries read (host)."""
    held_out = validation.indices[: validation.n_read]
    predicted = to_host(tt_entries(cores, held_out))
    return np.abs(predicted - to_host(validation.values))


def relative_standard_error(residuals):
    """Relative standard error of a held-out error from its residuals (0 when they are all
    zero or fewer than two); scaled first, so that huge or tiny values neither overflow nor
    underflow."""
    residuals = np.abs(np.asarray(residuals, dtype=np.float64))
    largest = float(residuals.max()) if residuals.size else 0.0
    if residuals.size < 2 or not largest > 0:
        return 0.0
    squares = (residuals / largest) ** 2
    return float(np.std(squares) * np.sqrt(squares.size) / (2.0 * np.sum(squares)))


def upper_bound(error, residuals, z=Z_95):
    """A one-sided upper confidence bound on a held-out error."""
    return error * (1.0 + z * relative_standard_error(residuals))
