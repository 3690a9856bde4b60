"""The sweep loop shared by every cross method: sweep, assemble, validate, decide."""

import time

import numpy as np

from .._backend import backend_state, check_backend_kept
from .._validation import asks_to_stop
from ..errors import EvaluationBudgetExceeded, MaxTimeReached
from ..lazy.checkpoint import restored_entries
from .assemble import assemble_cores
from .confidence import held_out_residuals, held_out_values, upper_bound
from .finish import refine_if_better
from .progress import SweepProgress
from .stopping import BestSweep


def run_sweeps(cache, indices, half_sweep, validation, info, options, make_tt=None):
    """Alternate sweep directions until a stopping rule fires.

    ``options`` (a :class:`~tensorly_cross.options.CrossOptions`) gives ``tol``,
    ``n_iter_max``, ``callback``, ``verbose``, ``progress`` and ``patience``.

    ``half_sweep(cache, indices, direction, cores)`` updates a copy of the index sets
    (``cores``: the current TT, None before the first sweep) and may return the fibers it
    read for them (else None); the cores are then assembled (by the sweep's own
    ``assemble``, else from those fibers or cached ones) and validated. A sweep cut short
    by the evaluation budget, or by ``max_time`` (:class:`MaxTimeReached` from the tensor
    before a batch, its validation included), is discarded; so is a sweep whose held-out
    error is ``DIVERGENCE`` times the lowest so far (``info.rolled_back``; the sweep is
    told by ``diverged()``). ``patience``: stop (``"stalled"``) after that many sweeps in a
    row that neither lower the held-out error by 1% nor change the ranks (None: never). A
    pass of the tolerance at the rank cap is confirmed on fresh held-out entries first
    (:meth:`Validation.confirm`). An interpolating cross that ends without meeting ``tol``
    is refined in least squares over its last sweeps' fibers, where that pays
    (``finish.py``).

    Returns
    -------
    indices, cores : from the second sweep on, the complete state with the lowest held-out
        error (the last one without held-out entries); else the first sweep's state;
        ``cores`` is None if no sweep completed.
    """
    progress = SweepProgress(options.n_iter_max, options.progress)
    try:
        return _run_sweeps(cache, indices, half_sweep, validation, info, options, make_tt,
                           progress)
    except BaseException:
        # An error or Ctrl-C: the bar is closed where it stood. Left open, the traceback
        # kept it alive, half drawn, and what was printed next went onto its line.
        progress.abandon()
        raise


def _run_sweeps(cache, indices, half_sweep, validation, info, options, make_tt, progress):
    """:func:`run_sweeps`, its bar ``progress`` given."""
    tol, callback, patience = options.tol, options.callback, options.patience
    start = time.perf_counter()
    cores, passed, history = None, False, []
    best = BestSweep()
    current = 0  # the sweep whose state (indices, cores) holds: not one rolled back
    # The sweeps whose errors are exact (None: all on the held-out sample): see _rebase.
    exact_sweeps = None
    info.stop_reason = "n_iter_max"
    for sweep in range(options.n_iter_max):
        direction = "lr" if sweep % 2 == 0 else "rl"
        candidate = indices.copy()
        try:
            candidate_cores, error, passed = _sweep(half_sweep, cache, candidate, direction,
                                                    cores, validation, tol)
        except EvaluationBudgetExceeded:
            info.stop_reason = "max_evals"
            break
        except MaxTimeReached:
            info.stop_reason = "max_time"
            break
        if exact_sweeps is None and validation.reads_every_entry:
            exact_sweeps = _rebase(validation, info, best, current, (indices, cores))
        previous = (indices, cores)
        indices, cores = candidate, candidate_cores
        _record(info, cache, indices, error, validation)
        progress.update(info)
        if hasattr(half_sweep, "record"):
            half_sweep.record(error, passed)
        if exact_sweeps is not None:
            exact_sweeps.append(info.n_sweeps)
        earlier = (info.val_errors[:-1] if exact_sweeps is None
                   else [info.val_errors[sweep - 1] for sweep in exact_sweeps[:-1]])
        diverged = _diverged(error, earlier)
        if diverged:
            info.rolled_back.append(info.n_sweeps)
            indices, cores = previous
            if hasattr(half_sweep, "diverged"):
                half_sweep.diverged()
        else:
            current = info.n_sweeps
            history.append(([block.copy() for block in indices.left],
                            [block.copy() for block in indices.right]))
        # Eligible from the second sweep: the first leaves the right sets random, and only
        # with both families built from the tensor does the TT interpolate every fiber.
        eligible = info.n_sweeps > 1 and not diverged
        best.offer(info.n_sweeps, error, (indices, cores) if eligible else None,
                   ranks_changed=not diverged and _ranks_changed(half_sweep, info.ranks,
                                                                 exact_sweeps is not None),
                   settled=not diverged and _settled(history))
        # Before an eligible sweep the state returned is the current one: after a rollback,
        # the sweep before it (n_sweeps reported the diverged sweep's error and ranks).
        info.best_sweep = best.sweep or current
        if options.verbose:
            progress.write(f"sweep {info.n_sweeps}: ranks {indices.rank}, "
                           f"evals {info.n_evals}, val_error {error:.3e}")
        asked_to_stop = callback is not None and asks_to_stop(_call(callback, cores, info,
                                                                     make_tt))
        reason = _stop_reason(passed, asked_to_stop, best.stale, patience)
        if reason:
            info.stop_reason = reason
            break
    state = best.state if best.state is not None else (indices, cores)
    interpolating = not hasattr(half_sweep, "assemble")
    if interpolating and not passed and info.stop_reason != "max_time" and options.refine:
        state = refine_if_better(cache, state, history, validation, info)
        if info.refined and _refined_passes(validation, state[1], options.tol, info):
            info.stop_reason = "tol"
    info.update_counts(cache.counters)
    info.total_seconds += time.perf_counter() - start
    progress.close(info)
    return state


def _rebase(validation, info, best, current, state):
    """The errors of the states held, measured again over every entry, once a sweep has
    read the last entries of a small tensor (its error is exact from then on).

    The sweeps before it were judged on the held-out sample: compared with exact errors
    as one, a lucky sample (0.00028 on 10 draws of a 2x2x5 array) took the exact errors
    after it (0.0032, 0.0042) for divergences, and the state returned reported the
    sample's error for a true one of 0.0042. The current state (``state``, of sweep
    ``current``) and the best one are measured again (their entries in
    ``info.val_errors`` too, so that ``val_error`` is exact), and the lower becomes the
    best; the sweeps whose state is gone no longer count for divergence. Returns the
    sweeps whose errors are now exact.
    """
    cores = state[1]
    held = {current: cores}
    if best.state is not None:
        held[best.sweep] = best.state[1]
    for sweep, held_cores in held.items():
        if sweep and held_cores is not None:
            info.val_errors[sweep - 1] = validation.exact_error(held_cores)
    if best.state is not None:
        best.error = best.reference = info.val_errors[best.sweep - 1]
        # The current state is eligible (past the first sweep, not rolled back): measured
        # lower than the best, it was lost when a later sweep merely beat the best.
        if current > 1 and cores is not None and info.val_errors[current - 1] < best.error:
            best.state, best.sweep = state, current
            best.error = best.reference = info.val_errors[current - 1]
    return sorted(sweep for sweep, held_cores in held.items()
                  if sweep and held_cores is not None)


def _sweep(half_sweep, cache, candidate, direction, cores, validation, tol):
    """One half sweep: its cores, held-out error and pass (trimmed when it passes)."""
    result = half_sweep(cache, candidate, direction, cores)
    candidate_cores = _assemble(half_sweep, cache, candidate, result)
    error, passed = _judge(half_sweep, validation, candidate_cores, candidate, tol)
    if passed and hasattr(half_sweep, "trim"):
        candidate_cores, error = half_sweep.trim(candidate_cores, candidate, validation)
    return candidate_cores, error, passed


# A sweep whose held-out error exceeds the lowest so far by this factor has diverged (near
# singular pivot blocks): it is undone, and the next sweep starts from the state before it.
DIVERGENCE = 10.0


def _diverged(error, earlier):
    finite = [e for e in earlier if e == e]
    return bool(finite) and error > DIVERGENCE * min(finite) and min(finite) > 0


def _judge(half_sweep, validation, cores, indices, tol):
    """The held-out error of a sweep's TT, and whether it meets ``tol``.

    A pass at the rank cap is confirmed on fresh entries. A sweep that asks for a confident
    pass (``confident_pass``: the least-squares cross) passes when the held-out error's upper
    95% bound meets ``tol``. On stored data, and on held-out values that sit on a few levels
    (``Validation.guarded``), the interpolating crosses do both, for every pass: a volume is
    never exactly of low rank, and their TT of a piecewise-constant tensor is exact on most
    entries and off by the whole contrast on a few, which a held-out sample under-counts (a
    binary mask at tol 0.05: "tol" on 200 exact held-out entries, true error 0.09).
    """
    error = validation.error(cores)
    confident = getattr(half_sweep, "confident_pass", False)
    # The least-squares cross's confident pass is its confirmation; an interpolating one
    # confirms every pass on stored or levelled data.
    if error <= tol and (_at_rank_cap(half_sweep, indices)
                         or (validation.guarded and not confident)):
        error = validation.confirm(cores)
    passed, residuals = error <= tol, None
    if (confident or validation.guarded) and validation.values is not None:
        residuals = held_out_residuals(validation, cores)
        passed = passed and upper_bound(error, residuals, held_out_values(validation)) <= tol
    if passed:
        validation.warn_if_unseen(error, residuals, cores)
    return error, passed


def _refined_passes(validation, cores, tol, info):
    """Whether the refined TT meets ``tol``, judged as a least-squares cross's sweep is
    (confirmed on fresh entries, then on its upper 95% bound): unjudged, a refined TT below
    tol kept the stop reason of the sweeps before it, and was warned of as a miss whose
    bound exceeded tol though no bound had been taken."""
    if validation.values is None or not info.val_errors[-1] <= tol:
        return False
    try:
        error = validation.confirm(cores)
    except MaxTimeReached:  # no time left to confirm: judged on the entries held out
        error = info.val_errors[-1]
    info.val_errors[-1] = error
    info.n_heldout, info.n_fresh = validation.n_read, validation.n_fresh
    residuals = held_out_residuals(validation, cores)
    passed = error <= tol and upper_bound(error, residuals, held_out_values(validation)) <= tol
    if passed:
        # As a sweep's pass is (_judge): unchecked, a refined TT exact on the held-out
        # entries, and off by 999 at a spike the cross had read (1000x the held-out
        # values), passed here without the warning.
        validation.warn_if_unseen(error, residuals, cores)
    return passed


def _assemble(half_sweep, cache, indices, result):
    """The cores after a half sweep: by the sweep's own ``assemble`` (a least-squares cross
    fits them as it goes), else interpolated on the index sets (from the fibers the sweep
    returned, if any)."""
    assemble = getattr(half_sweep, "assemble", None)
    if assemble is not None:
        return assemble(cache, indices, result)
    return assemble_cores(cache, indices, result)


def _at_rank_cap(half_sweep, indices):
    """Whether more sweeps cannot raise the ranks (fixed-rank methods: always)."""
    at_cap = getattr(half_sweep, "at_rank_cap", None)
    return True if at_cap is None else at_cap(indices)


def _ranks_changed(half_sweep, ranks, exact=False):
    """Whether the last sweep changed the ranks (a sweep may define what counts:
    ``ranks_progressed(ranks)``); once the errors are ``exact``, to ranks no earlier
    sweep had.

    Every entry of a small tensor cached, TCI's ranks went back and forth between two
    tuples at one exact error (a 7x2x4 mask: 50 sweeps at 0.5145, each a change): a
    return to ranks already tried is no progress there. Before (and on every tensor not
    read whole) any change counts, as it did: evaluation counts and pivots are kept.
    """
    progressed = getattr(half_sweep, "ranks_progressed", None)
    if progressed is not None:
        return progressed(ranks)
    if exact:
        return len(ranks) > 1 and ranks[-1] not in ranks[:-1]
    return len(ranks) > 1 and ranks[-1] != ranks[-2]


def _call(callback, cores, info, make_tt):
    """The user's callback, which must leave the active backend as it found it."""
    backends = backend_state()
    answer = callback(make_tt(cores), info)
    check_backend_kept(backends, "the callback")
    return answer


def _settled(history):
    """Whether the last sweep left every index set as the one before left it."""
    if len(history) < 2:
        return False
    return all(len(now) == len(before) and all(np.array_equal(a, b) for a, b in
                                               zip(now, before, strict=True))
               for now, before in zip(history[-1], history[-2], strict=True))


def _stop_reason(passed, asked_to_stop, stale, patience):
    if passed:
        return "tol"
    if asked_to_stop:
        return "callback"
    if patience is not None and stale >= patience:
        return "stalled"
    return None


def _record(info, cache, indices, val_error, validation):
    info.update_counts(cache.counters)
    # As n_evals, which counts them: a callback of a resumed run saw n_restored=0 (set
    # only once the run returned) with every entry it had read restored.
    info.n_restored = restored_entries(cache)
    info.n_heldout, info.n_fresh = validation.n_read, validation.n_fresh
    info.heldout_group = validation.block
    info.n_sweeps += 1
    info.ranks.append(tuple(indices.rank))
    info.val_errors.append(val_error)
    info.evals_per_sweep.append(cache.counters.unique)
