"""The warning of a rank-adaptive cross that ended above its tolerance, with what to try.

Without it a missed tolerance shows only in :class:`CrossInfo`, which a caller gets only
when it asks (``return_info=True``): MNI152 crossed with ``method="tci"`` at ``tol=0.1``
returned a TT with held-out error 0.23 and said nothing.
"""

import warnings

from .._validation import outside_stacklevel
from ..errors import ToleranceNotMetWarning
from .handover import returned_val_size

# What to change, per stop reason.
_HINTS = {
    "max_evals": "raise max_evals",
    "max_time": "raise max_time (with a checkpoint, a rerun resumes where this one stopped)",
    "n_iter_max": "raise n_iter_max",
}
# Stops that leave a held-out error below tol without a pass (a pass stops on "tol").
_STOPS_WITHOUT_PASS = ("stalled", "n_iter_max", "max_evals", "max_time")
# Where interpolating sweeps stall on data whose singular values decay slowly.
_LSQ_HINT = ('on images and volumes, method="lsq" (the least-squares cross) fits what the '
             'interpolating methods stall on')
# The share of the entries read past which reading every entry once costs about as much:
# MNI152 T1 at tol=0.05 stalled after reading 43% of its voxels in 22 s, where the
# streaming TT-SVD read them all and met tol in 0.7 s (benchmarks/results/real_tolerances.md).
READ_MOST = 0.25


def warn_if_missed(options, info, read_fraction=0.0):
    """Warn (:class:`ToleranceNotMetWarning`) when a rank-adaptive run (TCI with ``rank=``
    included: a cap) returns a TT whose held-out error exceeds ``options.tol``, or one that
    a budget stopped before any held-out check, and when a fixed-rank run's TT is no
    better than zero; not when the callback stopped it (the caller decided).

    ``read_fraction``: the share of the tensor's entries the cross read. At 1 its error
    was measured on all of them (a one-entry tensor leaves none to hold out, yet its error
    is known exactly); from :data:`READ_MOST` on, the hints name a TT-SVD of everything.
    """
    error, tol = info.val_error, options.tol
    read_whole = read_fraction >= 1
    if info.stop_reason == "callback":
        return
    if options.rank is not None and options.method != "tci":  # TCI's rank is only a cap
        _warn_if_nothing_found(options, info)
        return
    if not tol > 0:
        return
    # A run stopped before its first sweep returns the starting TT: unchecked whatever
    # val_size says (with val_size=0 it was returned silently).
    unchecked = (not info.n_heldout and (options.val_size > 0 or not info.n_sweeps)
                 and not read_whole)
    # NaN included: a TT whose held-out error is not a number has not met anything.
    missed = info.n_heldout and not error <= tol
    # Below tol on the sample, yet never passed: not with confidence (its upper 95% bound
    # above tol: the error sits on a few entries), or not on the fresh entries.
    unsure = bool(info.n_heldout) and error <= tol and info.stop_reason in _STOPS_WITHOUT_PASS
    if not (unchecked or missed or unsure):
        return
    ranks = info.ranks[info.best_sweep - 1] if info.best_sweep else ()
    hints = "; ".join(_hints(options, info, max(ranks, default=1), read_fraction))
    if unchecked and not info.n_sweeps:
        message = (f"tol={tol:g} not checked: {info.stop_reason} stopped the run before "
                   f"its first sweep was judged on held-out entries ({info.n_evals} "
                   f"evaluations); the TT returned is the starting one. Try: {hints}.")
    elif unchecked:
        # val_size=1 on a tiny tensor: the one draw was the start pivot, which is excluded.
        message = (f"tol={tol:g} not checked: no held-out entry was left to check it on "
                   f"(val_size={options.val_size}; the start pivot is never held out), after "
                   f"{info.n_sweeps} sweeps and {info.n_evals} evaluations (stopped: "
                   f"{info.stop_reason}). Try: a larger val_size, or on a tensor this small, "
                   "checking the TT against its entries.")
    elif unsure:
        # A larger sample narrows the bound: on a mask the error is spread along every
        # edge, and more rank (the other hints) only adds parameters.
        val_size = returned_val_size(options, info)
        hints = "; ".join([f"a larger val_size (now {val_size}: more held-out entries "
                           "narrow the bound)",
                           *_hints(options, info, max(ranks, default=1), read_fraction)])
        message = (f"tol={tol:g} not met with confidence: held-out error "
                   f"{_beside(error, tol)} on {info.n_heldout} entries, but on too few of "
                   f"them to be sure (its upper 95% bound exceeds tol: the sample is too "
                   f"small, or the error sits on a few entries; method {info.method!r}, "
                   f"stopped: {info.stop_reason}, "
                   f"{info.n_sweeps} sweeps). To be sure, or get closer: {hints}.")
    else:
        message = (f"tol={tol:g} not met: held-out error {_beside(error, tol)} on "
                   f"{info.n_heldout} entries (method {info.method!r}, stopped: "
                   f"{info.stop_reason}, {info.n_sweeps} sweeps, largest rank "
                   f"{max(ranks, default=1)}). To get closer: {hints}.")
    warnings.warn(ToleranceNotMetWarning(message, error, tol), stacklevel=outside_stacklevel())


def _beside(error, tol):
    """``error`` with the digits that tell it from ``tol``: at 3 digits an error just above
    1e-06 read "held-out error 1e-06" in a message saying that tol=1e-06 was not met."""
    for digits in (3, 6, 10, 17):
        text = f"{error:.{digits}g}"
        if float(text) != tol or error == tol:
            return text
    return repr(error)


def _warn_if_nothing_found(options, info):
    """A fixed rank is the target and ``tol`` only an early stop, so missing it is no
    news; but a held-out error of 1 or more is the zero TT's or worse. Random starting
    sets that miss a small nonzero region read zeros only, and the TT stays zero whatever
    the rank (the start goes through the largest held-out entry, but the held-out sample
    can miss such a region too)."""
    error = info.val_error
    if not info.n_heldout or error < 1:
        return
    message = (f"the rank-{options.rank} cross found no approximation: held-out error "
               f"{error:.3g} on {info.n_heldout} entries, no better than the zero tensor's 1 "
               f"(method {info.method!r}, stopped: {info.stop_reason}). Its fibers may have "
               "missed where the tensor is nonzero (a sparse or localised tensor): try "
               "method=\"tci\" (rank-adaptive, it starts from the largest entry it finds), "
               "a larger val_size, or another random_state.")
    warnings.warn(ToleranceNotMetWarning(message, error, options.tol),
                  stacklevel=outside_stacklevel())


def _patience_hint(options, largest_rank):
    """A stall below ``max_rank``: each stalled sweep lowers the truncation (least squares)
    or the pivot cut (TCI), and only the sweeps after it can raise the ranks. MNI152's T1
    (a 32^3 crop) with a bright 3^3 blob, tol=0.05: the default cross stalled at ranks
    (7, 5) and an error of 0.077 one sweep after its first lowering; patience=4 met tol at
    ranks (9, 10). Without this hint the warning named a TT-SVD of everything only."""
    return (f"a larger patience (now {options.patience}: it stalled at rank {largest_rank}, "
            f"below max_rank={options.max_rank}, and each stalled sweep lowers the "
            "truncation, which only the sweeps after it can turn into rank)")


def _hints(options, info, largest_rank, read_fraction=0.0):
    hints = []
    if options.rank is not None:  # TCI's per-bond cap
        hints.append(f"raise rank (TCI's per-bond cap, rank={options.rank})")
    elif largest_rank >= options.max_rank:
        hints.append(f"raise max_rank (the ranks reached max_rank={options.max_rank})")
    elif info.stop_reason == "stalled" and options.patience is not None:
        hints.append(_patience_hint(options, largest_rank))
    if info.stop_reason in _HINTS:
        hints.append(_HINTS[info.stop_reason])
    if info.method in ("tci", "als"):
        hints.append(_LSQ_HINT)
    if read_fraction >= READ_MOST:
        hints.append(f"it read {read_fraction:.0%} of the entries: a TT-SVD of all of them "
                     "reads each once and meets tol by construction (streaming_tt_svd "
                     "for a stored volume, chunk by chunk in bounded memory)")
    if not hints:
        hints.append("a higher tol, or a budget for more sweeps (patience)")
    return hints
