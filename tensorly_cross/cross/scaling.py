"""Exact rescaling by powers of two, for steps whose result does not depend on the data's
scale but whose arithmetic does: a normal matrix squares its entries (overflow near
2**512), and a pivot block of subnormal values has an inverse beyond float64's range."""

import numpy as np
import tensorly as tl

from .._backend import to_host


def exponent_of(tensor):
    """The exponent ``e`` of the power of two just above the largest modulus of ``tensor``
    (the largest lies in ``[2**(e-1), 2**e)``); 0 for a zero, empty or non-finite one."""
    largest = float(np.abs(to_host(tensor)).max()) if np.prod(tl.shape(tensor)) else 0.0
    if not (largest > 0 and np.isfinite(largest)):
        return 0
    return int(np.frexp(largest)[1])


def times_power_of_two(tensor, exponent):
    """``tensor * 2**exponent``, exactly (up to subnormal results).

    The exponent is an integer applied in steps that ``tensor``'s precision holds (at most
    ``2**1000``, ``2**125`` for float32): the factors that bring data near ``2**-1074`` or
    ``2**1022`` to 1, or their quotients, would overflow or underflow as one float.
    """
    limit = _largest_step(tensor)
    while exponent:
        step = max(-limit, min(limit, exponent))
        tensor = tensor * float(np.ldexp(1.0, step))
        exponent -= step
    return tensor


def _largest_step(tensor):
    """The largest exponent of one factor ``2**step`` for ``tensor``: NumPy and PyTorch cast
    a Python float factor to the tensor's precision, where ``2**1000`` is inf for float32
    (float32 data near ``2**-130``, brought to 1, became inf)."""
    name = str(getattr(tensor, "dtype", "float64")).replace("torch.", "")
    try:
        max_exponent = int(np.finfo(np.dtype(name)).maxexp)
    except (TypeError, ValueError):  # unknown to NumPy (bfloat16): float16's range
        max_exponent = int(np.finfo(np.float16).maxexp)
    return min(1000, max_exponent - 3)
