"""The sweep loop shared by every cross method: sweep, assemble, validate, decide."""

import time

from ..errors import EvaluationBudgetExceeded
from .assemble import assemble_cores


def run_sweeps(cache, indices, half_sweep, validation, info, tol, n_iter_max, callback=None,
               verbose=False, make_tt=None):
    """Alternate sweep directions until a stopping rule fires.

    ``half_sweep(cache, indices, direction, cores)`` updates a copy of the index sets
    (``cores``: the current TT, None before the first sweep); the cores
    are then assembled (from cached fibers) and validated. The result is always the last
    *complete* state: a sweep cut short by the evaluation budget is discarded.

    Returns
    -------
    indices, cores : the last complete state (``cores`` is None if no sweep completed).
    """
    start = time.perf_counter()
    cores = None
    info.stop_reason = "n_iter_max"
    for sweep in range(n_iter_max):
        direction = "lr" if sweep % 2 == 0 else "rl"
        candidate = indices.copy()
        try:
            half_sweep(cache, candidate, direction, cores)
            candidate_cores = assemble_cores(cache, candidate)
        except EvaluationBudgetExceeded:
            info.stop_reason = "max_evals"
            break
        indices, cores = candidate, candidate_cores
        _record(info, cache, indices, validation.error(cores))
        if verbose:
            print(f"sweep {info.n_sweeps}: ranks {indices.rank}, evals {info.n_evals}, "
                  f"val_error {info.val_error:.3e}")
        if info.val_error <= tol:
            info.stop_reason = "tol"
            break
        if callback is not None and callback(make_tt(cores), info):
            info.stop_reason = "callback"
            break
    info.update_counts(cache.counters)
    info.total_seconds += time.perf_counter() - start
    return indices, cores


def _record(info, cache, indices, val_error):
    info.update_counts(cache.counters)
    info.n_sweeps += 1
    info.ranks.append(tuple(indices.rank))
    info.val_errors.append(val_error)
    info.evals_per_sweep.append(cache.counters.unique)
