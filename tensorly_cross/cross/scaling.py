"""Exact rescaling by powers of two, for steps whose result does not depend on the data's
scale but whose arithmetic does: a normal matrix squares its entries (overflow near
2**512), and a pivot block of subnormal values has an inverse beyond float64's range."""

import functools
import math

import numpy as np
import tensorly as tl

from .._backend import all_finite, to_host
from ..lazy.base import LazyTensor, views_of


def exponent_of(tensor):
    """The exponent ``e`` of the power of two just above the largest modulus of ``tensor``
    (the largest lies in ``[2**(e-1), 2**e)``); 0 for a zero, empty or non-finite one."""
    # math, not NumPy, on the shape and the float: this runs on every kept pivot block.
    largest = float(np.abs(to_host(tensor)).max()) if math.prod(tl.shape(tensor)) else 0.0
    if not (largest > 0 and math.isfinite(largest)):
        return 0
    return math.frexp(largest)[1]


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
    return min(1000, max_exponent(tensor) - 3)


def max_exponent(tensor):
    """``maxexp`` of ``tensor``'s dtype: its finite values lie below ``2**maxexp`` (128 for
    float32 and complex64, 1024 for float64; float16's 16 for a dtype NumPy lacks)."""
    dtype = getattr(tensor, "dtype", "float64")
    try:
        return _max_exponent_of(dtype)
    except TypeError:  # a dtype that does not hash: by its name
        return _max_exponent_of(str(dtype))


@functools.lru_cache(maxsize=32)
def _max_exponent_of(dtype):
    """:func:`max_exponent` of a dtype (NumPy's, PyTorch's or a name), found once: it runs
    on every rescaled solve, where ``str(dtype)`` and ``np.finfo`` were 1% of a cross."""
    name = str(dtype).replace("torch.", "")
    try:
        return int(np.finfo(np.dtype(name)).maxexp)
    except (TypeError, ValueError):  # unknown to NumPy (bfloat16): float16's range
        return int(np.finfo(np.float16).maxexp)


def shrink_exponent(tensor):
    """The exponent ``e`` that brings the largest modulus of ``tensor`` near 1 (``tensor *
    2**e``) where it lies beyond ``2**(maxexp / 2)`` (about 1.8e19 in float32, 1.3e154 in
    float64); 0 otherwise: data in the usual range is left as it is, bit for bit."""
    exponent = exponent_of(double_moduli(to_host(tensor)))
    return -exponent if exponent > max_exponent(tensor) // 2 else 0


def double_moduli(values):
    """``|values|`` of a host array, taken in double precision: a complex64 entry's
    modulus overflows float32 where its parts do not (3e38 + 3e38j, modulus 4.2e38), and
    such data was refused as "modulus inf" rather than shrunk."""
    return np.abs(values.astype(np.promote_types(values.dtype, np.float64), copy=False))


def spread(cores, exponent):
    """The TT ``cores`` times ``2**exponent``, the factor split in integer powers of two
    over all cores (none takes it whole: a left-orthogonal TT carries its norm, up to the
    square root of its size times its largest entry, in one core)."""
    d = len(cores)
    shares = [exponent // d + (1 if k < exponent % d else 0) for k in range(d)]
    return [times_power_of_two(core, share) for core, share in zip(cores, shares, strict=True)]


class ShrunkTensor(LazyTensor):
    """``lazy`` read times ``2**exponent``: the exponent (:func:`shrink_exponent`) is set
    by the first read holding a nonzero value, and kept; 0 for data in the usual range.

    A cross runs on it near 1 and :func:`spread` takes its cores back: data near the top of
    its dtype (float32 near 1e38, float64 near 2**1021) overflowed in the least-squares
    fits and roundings (the norms of fibers, and the core that carries the TT's norm), which
    returned NaN cores or failed in SciPy. Entries beyond ``2**1022`` stay refused by name
    (:func:`~tensorly_cross.cross.stopping.refuse_beyond_limit`).
    """

    passes_batches_through = True  # batches go to ``lazy`` as asked (see evaluating_tensor)

    def __init__(self, lazy):
        super().__init__(lazy.shape)
        self.lazy, self.exponent = lazy, 0
        self._settled = False
        # Looked up once: this runs per batch, on every cross (a cheap function's cross
        # makes hundreds of small batches).
        self._evaluate = getattr(lazy, "evaluate_checked", lazy.evaluate)

    def evaluate_checked(self, indices):
        values = self._evaluate(indices)
        if not self._settled:
            self._settle(values, indices)
        return times_power_of_two(values, self.exponent) if self.exponent else values

    def _settle(self, values, indices):
        """Refuse entries beyond the limit, and set the exponent on the first nonzero
        batch (zeros read before are zeros at any scale)."""
        from .stopping import refuse_beyond_limit  # stopping imports this module

        host = to_host(values)
        refuse_beyond_limit(host, indices)
        if host.size and np.any(host):
            self.exponent, self._settled = shrink_exponent(host), True


def unshrunk(modulus, lazy):
    """``modulus``, read through ``lazy`` (a cross's cache), at the data's own scale.

    The cache holds what a :class:`ShrunkTensor` under it returned: a message that named
    the moduli it read named them scaled (data near ``2**700`` as "modulus 0.5").

    Parameters
    ----------
    modulus : float
        A modulus of values read through ``lazy``.
    lazy : LazyTensor
        The tensor they were read through (any view above the shrinking).

    Returns
    -------
    float
        ``modulus`` times ``2**-exponent`` of the first :class:`ShrunkTensor` among
        ``lazy``'s views; ``modulus`` where there is none; inf (signed) beyond float64.
    """
    for view in views_of(lazy):
        if isinstance(view, ShrunkTensor):
            try:
                return math.ldexp(modulus, -view.exponent)
            except OverflowError:
                # A TT's miss at data near 2**1021 can pass float64 at the data's scale:
                # a message naming it raised "math range error" out of the cross.
                return math.copysign(math.inf, modulus)
    return modulus


def refuse_non_finite(cores, lazy, method):
    """Raise where the cores a cross returns are not finite: the entries read were checked
    finite, so its arithmetic overflowed. The least-squares fits square the norms of fiber
    matrices; data is shrunk near 1 by its first nonzero read (:class:`ShrunkTensor`), but
    a later read far larger than that one still passes float64's range there, and the TT
    came back all NaN with only a tolerance warning. Checked on the result only: a sweep of
    NaNs within a run (subnormal data's first least-squares sweep) is not returned.

    Parameters
    ----------
    cores : list of tensor
        The cores the cross returns (under the search's backend).
    lazy : LazyTensor
        The cross's cache (its largest modulus is named, at the data's own scale).
    method : str
        The method that ran, as ``CrossInfo.method`` names it.

    Raises
    ------
    OverflowError
        Where any core holds a NaN or an infinity.
    """
    if all(all_finite(core) for core in cores):  # one reduction each, no host copy
        return
    largest = unshrunk(lazy.max_abs(), lazy) if hasattr(lazy, "max_abs") else float("nan")
    why = ("its fits square the norms of sampled fibers" if "lsq" in method
           else "its arithmetic passed the float range")
    raise OverflowError(
        f"the cross (method={method!r}) overflowed on data of moduli up to {largest:.3g}: "
        f"{why}. Scale the data to moduli near 1 (dividing by a power of two is exact)"
        + (" or use method='tci' or 'als', which interpolate without squaring." if "lsq" in
           method else "."))
