"""How sure a held-out error is: a one-sided upper bound on it.

The held-out entries are a uniform random sample of the tensor, drawn before any sweep, so
their error estimates the whole tensor's: ``e^2 = sum r_i^2 / sum v_i^2`` over ``N`` of
them (residuals ``r_i``, values ``v_i``) is a ratio of two sample means. Its standard error
is that of the mean of ``u_i = r_i^2 - e^2 v_i^2`` over the mean of ``v_i^2`` (the ratio's
linearisation): it counts the spread of the values too, which a volume's empty
background makes large (78% of MNI152's voxels are 0). Both means are skewed to the
right (a few edge voxels carry most of the residual), where a normal bound is too low, so
its quantile gets Hall's skewness correction ``g (2 z^2 + 1) / (6 sqrt(N))``. Where the
residuals follow the values, the linearisation can be narrower than the residuals' spread
alone and cover less: the wider of the two is taken.

Measured on 2,000 resamples of the residuals of least-squares TTs of MNI152 (every third
voxel, tol 0.1 and 0.2) and of a smooth 40^3 tensor at rank 3: the bound covered the true
error in 92-95% of samples of 1,000-4,000 entries (the residuals' spread alone, with a
normal quantile: 88-94%), and in only 76-92% at 50-200 entries, where a few voxels carry
the residual and a sample that misses them looks both small and sure: ``val_size`` below
about 1,000 gives a bound that under-covers on real volumes. ``tests/test_lsq.py`` keeps a
coverage test.
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


def held_out_values(validation):
    """The held-out values read (host), in the order of :func:`held_out_residuals`."""
    return to_host(validation.values)


def upper_bound(error, residuals, values=None, z=Z_95):
    """A one-sided upper confidence bound on a held-out error.

    Parameters
    ----------
    error : float
        The held-out relative error, ``||residuals|| / ||values||``.
    residuals : array_like
        Moduli of the residuals on the held-out entries (host).
    values : array_like or None
        The held-out values (host); None treats their norm as known (only the residuals'
        spread counts).
    z : float
        The one-sided normal quantile (95% by default).

    Returns
    -------
    float
        ``>= error``; ``error`` itself when it is 0 or fewer than two entries were held
        out.
    """
    squares = _scaled_squares(residuals)
    n = squares.size
    if n < 2 or not error > 0 or not squares.any():
        return error
    weights = np.ones(n) if values is None else _scaled_squares(values)
    if not weights.any():  # all-zero values: the error is absolute, their norm known
        weights = np.ones(n)
    # Neither approximation covers at every sample size: the larger widening is taken.
    return error * max(_widening(squares, np.ones(n), z), _widening(squares, weights, z))


def _widening(squares, weights, z):
    """``bound / error`` for the ratio ``mean(squares) / mean(weights)``, linearised, with
    the skewness correction (weights all 1: the residuals' spread alone)."""
    n = squares.size
    # In these units the ratio is mean(squares) / mean(weights): only the relative
    # widening counts, applied to the error (scaled apart, neither overflows).
    ratio = float(np.mean(squares)) / float(np.mean(weights))
    linear = squares - ratio * weights
    spread = float(np.std(linear, ddof=1))
    if not spread > 0:
        return 1.0
    skew = float(np.mean((linear - linear.mean()) ** 3)) / float(np.std(linear)) ** 3
    quantile = max(z + skew * (2.0 * z**2 + 1.0) / (6.0 * np.sqrt(n)), 0.0)
    upper = ratio + quantile * spread / (np.sqrt(n) * float(np.mean(weights)))
    return float(np.sqrt(upper / ratio))


def residual_carriers(residuals):
    """How many entries carry the residual: ``(sum r^2)^2 / sum r^4`` (inf without
    residuals, or where every one is 0)."""
    squares = _scaled_squares(() if residuals is None else residuals)
    if not squares.any():
        return np.inf
    return float(np.sum(squares) ** 2 / np.sum(squares**2))


def _scaled_squares(moduli):
    """``(|x| / max|x|)^2`` on the host (zeros where every entry is 0); ``x`` may be
    complex (the modulus is taken before the cast, which would keep the real parts)."""
    moduli = np.abs(np.asarray(moduli)).astype(np.float64)
    largest = float(moduli.max()) if moduli.size else 0.0
    return (moduli / largest) ** 2 if largest > 0 else np.zeros(moduli.shape)
