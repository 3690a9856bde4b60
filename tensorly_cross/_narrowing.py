"""Cores computed on the host in double precision and returned in less: JAX without
``jax_enable_x64`` holds float64 as float32 (complex128 as complex64), so a TT that met a
tolerance in the search can miss it once handed back."""

import warnings

import numpy as np
import tensorly as tl

from ._backend import is_traced, to_host
from ._validation import outside_stacklevel
from .errors import ToleranceNotMetWarning

# Entries on which the change is measured: enough for its first digit, and cheap next to
# any cross (a product of d small matrices each).
N_SAMPLES = 1000


def backend_cores(host_cores):
    """``host_cores`` (NumPy arrays) as tensors of the active backend.

    Parameters
    ----------
    host_cores : list of numpy.ndarray
        TT cores, of shape ``(r_{k-1}, n_k, r_k)``.

    Returns
    -------
    list of tensor
        The cores as ``tl.tensor`` makes them (float32 from float64 under JAX without
        ``jax_enable_x64``).
    """
    return [tl.tensor(core) for core in host_cores]


def narrowing_change(host_cores, cores):
    """The relative change of the TT's entries from ``host_cores`` to ``cores``, measured
    on :data:`N_SAMPLES` random entries; 0.0 where no core lost precision (the same TT on
    another backend, or a wider dtype: nothing is measured).

    Parameters
    ----------
    host_cores : list of numpy.ndarray
        The cores as computed.
    cores : list of tensor
        The cores returned (any backend).

    Returns
    -------
    float
        ``||tt(cores) - tt(host_cores)|| / ||tt(host_cores)||`` on the sample (inf for a
        changed TT that is zero there).
    """
    # A traced JAX value (under jax.grad) has no numbers to compare.
    if any(is_traced(core) for core in cores) or not any(
            _precision(dtype_of(core)) > _precision(np.asarray(host).dtype)
            for host, core in zip(host_cores, cores, strict=True)):
        return 0.0
    returned = [np.asarray(to_host(core)) for core in cores]
    from .cross.stopping import scaled_norm

    rng = np.random.default_rng(0)
    indices = np.stack([rng.integers(core.shape[1], size=N_SAMPLES) for core in returned],
                       axis=1)
    exact = _entries([np.asarray(core) for core in host_cores], indices)
    change = scaled_norm(_entries(returned, indices) - exact)
    norm = scaled_norm(exact)
    if norm == 0:
        return 0.0 if change == 0 else float("inf")
    return change / norm


def warn_if_narrowing_missed(error, tol, change, caller):
    """Warn (:class:`ToleranceNotMetWarning`) where ``error`` met ``tol`` before the cores
    were handed back and ``error + change`` does not: the TT returned misses ``tol``
    while the report says it met it."""
    if not (tol is not None and tol > 0 and change > 0 and error <= tol < error + change):
        return
    message = (f"{caller}: the TT met tol={tol:g} in float64 (error {error:.3g}), but JAX "
               f"without jax_enable_x64 returns its cores in single precision, which changes "
               f"its entries by {change:.2g} (relative, on {N_SAMPLES} random entries): the "
               "TT returned misses tol. Turn double precision on "
               "(jax.config.update('jax_enable_x64', True)) or ask for a tol that single "
               "precision holds.")
    warnings.warn(ToleranceNotMetWarning(message, error + change, tol),
                  stacklevel=outside_stacklevel())


def dtype_of(tensor):
    """The NumPy dtype of a backend tensor (``torch.float32`` -> float32); None for one that
    NumPy lacks (bfloat16)."""
    try:
        return np.dtype(tensor.dtype)
    except TypeError:
        try:
            return np.dtype(str(tensor.dtype).rsplit(".", 1)[-1])
        except TypeError:
            return None


def _precision(dtype):
    """Machine epsilon of a floating ``dtype`` (0 for others, or an unknown one: nothing to
    measure)."""
    return float(np.finfo(dtype).eps) if dtype is not None and dtype.kind in "fc" else 0.0


def _entries(cores, indices):
    """The TT's entries at ``indices`` (m, d), in double precision."""
    result = np.ones((indices.shape[0], 1))
    for k, core in enumerate(cores):
        wide = core.astype(np.promote_types(core.dtype, np.float64), copy=False)
        result = np.einsum("mi,imj->mj", result, wide[:, indices[:, k], :])
    return result[:, 0]
