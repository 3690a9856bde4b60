"""``method="auto"`` on a tensor that is not stored: TCI, then the least-squares cross where
TCI stalls short of its tolerance.

On real data (noise, edges) TCI's interpolation stalls far above what a TT of its size can
reach: a callable over the MNI152 template stops at a held-out error of 0.22 for
``tol=0.1`` at its rank cap, where the least-squares cross meets the tolerance at ranks
(20, 33) (``docs/real_volumes.rst``). The handover runs the least-squares cross on the same
evaluation cache, so the entries TCI read are not paid for twice, under the same budget,
and returns whichever state has the lower held-out error.
"""

from dataclasses import replace

from ..errors import EvaluationBudgetExceeded, MaxTimeReached
from ..options import LSQ_OVERSAMPLE, LSQ_VAL_SIZE
from .driver import run_sweeps
from .lsq import LSQSweeper
from .ranks import expand_rank
from .stopping import CrossInfo, Validation

# Below this held-out error a stall is round-off, which no method lowers.
ROUND_OFF_FLOOR = 1e-6


def should_hand_over(options, info):
    """Whether a TCI run of ``method="auto"`` ended stalled short of ``options.tol``, with
    sweeps left in ``n_iter_max``."""
    return (options.handover and options.method == "tci" and info.best_sweep > 0
            and info.stop_reason == "stalled" and options.val_size > 0
            and info.n_sweeps < options.n_iter_max
            and info.val_error > max(options.tol, ROUND_OFF_FLOOR))


def hand_over(cache, shape, options, rng, state, make_tt):
    """The better of TCI's ``state`` and a least-squares cross run on the same ``cache``.

    Parameters
    ----------
    cache : EvaluationCache
        TCI's cache: its entries are free, and its budget counts on.
    shape : tuple of int
    options : CrossOptions
        TCI's options; the least-squares cross takes its own oversampling and held-out size.
    rng : numpy.random.Generator
    state : tuple
        TCI's ``(indices, cores, info)``.
    make_tt : callable
        As :func:`~tensorly_cross.cross.driver.run_sweeps` takes it.

    Returns
    -------
    indices, cores, info
        The state with the lower held-out error; ``info`` holds both runs' sweeps, in
        order (method ``"tci+lsq"`` when the least-squares state is returned), and the
        held-out size of the returned state's run. The callback, ``verbose`` and
        ``progress`` see the second run as a run of its own; ``n_iter_max`` counts both.

    Raises
    ------
    NonFiniteValueError, CheckpointError
        As the least-squares cross raises them (only a budget too small for its first
        sweep is absorbed: the TCI state is returned).
    """
    tci_indices, tci_cores, tci_info = state
    lsq_options = _lsq_options(options, tci_info.n_sweeps)
    lsq_info = CrossInfo(method="lsq")
    validation = None
    try:
        validation = Validation(cache, lsq_options.val_size, rng, None, options.tol)
        sweeper = LSQSweeper(shape, options.tol, None,
                             expand_rank(options.max_rank, shape, warn=False),
                             lsq_options.oversample, rng, refine=options.refine)
        indices, cores = run_sweeps(cache, sweeper.start(rng), sweeper, validation, lsq_info,
                                    lsq_options, make_tt)
    except MaxTimeReached:
        indices, cores, lsq_info.stop_reason = None, None, "max_time"
    except ValueError as error:
        if not isinstance(error.__cause__, EvaluationBudgetExceeded):
            raise  # a non-finite value, a checkpoint error: the user's to see
        indices, cores, lsq_info.stop_reason = None, None, "max_evals"
    _measure_exactly(validation, tci_cores, tci_info)
    won = cores is not None and lsq_info.val_error < tci_info.val_error
    info = _merged(tci_info, lsq_info, won)
    info.update_counts(cache.counters)
    return (indices, cores, info) if won else (tci_indices, tci_cores, info)


def _measure_exactly(validation, tci_cores, tci_info):
    """TCI's error over every entry, where the least-squares cross has read the rest of a
    small tensor: its errors are then exact, and TCI's, on its held-out sample, cannot be
    compared with them (10 draws gave TCI 0.0024 for a true 0.0114, against the
    least-squares cross's exact 0.0037: TCI's TT was returned, reporting 0.0024)."""
    if validation is not None and tci_info.best_sweep and validation.reads_every_entry:
        tci_info.val_errors[tci_info.best_sweep - 1] = validation.exact_error(tci_cores)


def returned_val_size(options, info):
    """The ``val_size`` the run whose state ``info`` describes drew its held-out entries
    with: the least-squares cross's own after a handover it won, ``options.val_size``
    otherwise (a hint to raise val_size must name the sample that was drawn)."""
    return max(options.val_size, LSQ_VAL_SIZE) if info.method == "tci+lsq" else options.val_size


def _lsq_options(options, sweeps_done):
    return replace(options, method="lsq", oversample=LSQ_OVERSAMPLE,
                   val_size=max(options.val_size, LSQ_VAL_SIZE),
                   n_iter_max=options.n_iter_max - sweeps_done)


def _merged(tci, lsq, won):
    """One record of both runs: TCI's sweeps, then the least-squares cross's."""
    offset = tci.n_sweeps
    return replace(
        lsq if won else tci,
        method="tci+lsq" if won else "tci",
        ranks=tci.ranks + lsq.ranks, val_errors=tci.val_errors + lsq.val_errors,
        evals_per_sweep=tci.evals_per_sweep + lsq.evals_per_sweep,
        n_sweeps=offset + lsq.n_sweeps,
        best_sweep=offset + lsq.best_sweep if won else tci.best_sweep,
        rolled_back=tci.rolled_back + [offset + sweep for sweep in lsq.rolled_back],
        # What ended the call: a budget or a deadline that cut the second run short says
        # so (with a checkpoint, a rerun resumes), whichever state is returned.
        stop_reason=(lsq.stop_reason if won or lsq.stop_reason in ("max_evals", "max_time")
                     else tci.stop_reason))
