"""The sweep loop shared by every cross method: sweep, assemble, validate, decide."""

import time

from ..errors import EvaluationBudgetExceeded, MaxTimeReached
from .assemble import assemble_cores
from .progress import SweepProgress
from .stopping import BestSweep


def run_sweeps(cache, indices, half_sweep, validation, info, options, make_tt=None):
    """Alternate sweep directions until a stopping rule fires.

    ``options`` (a :class:`~tensorly_cross.options.CrossOptions`) gives ``tol``,
    ``n_iter_max``, ``callback``, ``verbose``, ``progress`` and ``patience``.

    ``half_sweep(cache, indices, direction, cores)`` updates a copy of the index sets
    (``cores``: the current TT, None before the first sweep) and may return the fibers it
    read for them (else None); the cores are then assembled (from those fibers, or from
    cached ones) and validated. A sweep cut short by the evaluation budget, or by
    ``max_time`` (:class:`MaxTimeReached` from the tensor before a batch, its validation
    included), is discarded. ``patience``: stop (``"stalled"``) after that many sweeps in
    a row that neither lower the held-out error by 1% nor change the ranks (None: never).
    A pass of the tolerance at the rank cap is confirmed on fresh held-out entries first
    (:meth:`Validation.confirm`).

    Returns
    -------
    indices, cores : from the second sweep on, the complete state with the lowest held-out
        error (the last one without held-out entries); else the first sweep's state;
        ``cores`` is None if no sweep completed.
    """
    tol, callback, patience = options.tol, options.callback, options.patience
    start = time.perf_counter()
    cores = None
    best = BestSweep()
    progress = SweepProgress(options.n_iter_max, options.progress)
    info.stop_reason = "n_iter_max"
    for sweep in range(options.n_iter_max):
        direction = "lr" if sweep % 2 == 0 else "rl"
        candidate = indices.copy()
        try:
            fibers = half_sweep(cache, candidate, direction, cores)
            candidate_cores = assemble_cores(cache, candidate, fibers)
            error = validation.error(candidate_cores)
            if error <= tol and _at_rank_cap(half_sweep, candidate):
                error = validation.confirm(candidate_cores)
        except EvaluationBudgetExceeded:
            info.stop_reason = "max_evals"
            break
        except MaxTimeReached:
            info.stop_reason = "max_time"
            break
        indices, cores = candidate, candidate_cores
        _record(info, cache, indices, error, validation)
        progress.update(info)
        # Eligible from the second sweep: the first leaves the right sets random, and only
        # with both families built from the tensor does the TT interpolate every fiber.
        best.offer(info.n_sweeps, error, (indices, cores) if info.n_sweeps > 1 else None,
                   ranks_changed=len(info.ranks) > 1 and info.ranks[-1] != info.ranks[-2])
        info.best_sweep = best.sweep or info.n_sweeps
        if options.verbose:
            print(f"sweep {info.n_sweeps}: ranks {indices.rank}, evals {info.n_evals}, "
                  f"val_error {error:.3e}")
        asked_to_stop = callback is not None and bool(callback(make_tt(cores), info))
        reason = _stop_reason(error, tol, asked_to_stop, best.stale, patience)
        if reason:
            info.stop_reason = reason
            break
    info.update_counts(cache.counters)
    info.total_seconds += time.perf_counter() - start
    progress.close(info)
    return best.state if best.state is not None else (indices, cores)


def _at_rank_cap(half_sweep, indices):
    """Whether more sweeps cannot raise the ranks (fixed-rank methods: always)."""
    at_cap = getattr(half_sweep, "at_rank_cap", None)
    return True if at_cap is None else at_cap(indices)


def _stop_reason(error, tol, asked_to_stop, stale, patience):
    if error <= tol:
        return "tol"
    if asked_to_stop:
        return "callback"
    if patience is not None and stale >= patience:
        return "stalled"
    return None


def _record(info, cache, indices, val_error, validation):
    info.update_counts(cache.counters)
    info.n_heldout = validation.n_read
    info.n_sweeps += 1
    info.ranks.append(tuple(indices.rank))
    info.val_errors.append(val_error)
    info.evals_per_sweep.append(cache.counters.unique)
