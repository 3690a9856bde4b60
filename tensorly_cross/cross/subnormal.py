"""The warning of a cross whose every value is subnormal (below the smallest normal float).

Such values keep only a few significant digits: a function of values near 1e-320 gave a
TT with a held-out error of 1.6e-3 at ``tol=1e-3`` after 19 sweeps (the run reported it
honestly), with NumPy RuntimeWarnings from dividing by the pivots on the way and nothing
saying why.
"""

import math
import warnings

import numpy as np

from .._validation import outside_stacklevel
from ..errors import SubnormalValuesWarning


def warn_if_subnormal(cache):
    """Warn when every value ``cache`` holds is subnormal (and not all zero)."""
    dtype = cache.value_dtype()
    if dtype is None or dtype.kind not in "fc":
        return
    scale, floats = cache.max_abs(), np.finfo(dtype)
    if not 0.0 < scale < float(floats.smallest_normal):
        return
    # A subnormal x has log2(x / smallest subnormal) significant bits.
    digits = max(0.0, math.log10(scale / float(floats.smallest_subnormal)))
    # A power of ten that makes the values normal without coming near the largest float.
    exponent = min(math.ceil(-math.log10(scale)), math.floor(math.log10(floats.max)) - 8)
    factor = 10.0 ** max(exponent, 1)
    message = (
        f"every value read is subnormal: the largest modulus is {scale:.2e}, below "
        f"{dtype}'s smallest normal number {float(floats.smallest_normal):.2e}, so the values "
        f"keep about {digits:.0f} significant digits (a normal {dtype} keeps "
        f"{floats.precision}), and neither the TT nor its held-out error means more (any "
        "RuntimeWarning from NumPy on the way came from dividing by "
        f"them). Compute the function scaled by a constant (e.g. {factor:.0e}) so that its "
        "values are normal, and divide the TT by it.")
    warnings.warn(message, SubnormalValuesWarning, stacklevel=outside_stacklevel())
