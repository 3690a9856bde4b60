"""When to stop: held-out validation error, tolerance, budget, sweeps, callback; CrossInfo."""

from dataclasses import asdict, dataclass, field

import numpy as np
import tensorly as tl

from .._backend import to_host
from ..errors import EvaluationBudgetExceeded
from .indices import cartesian_join, mode_column
from .tt_entries import tt_entries


@dataclass
class CrossInfo:
    """What a cross approximation did.

    Attributes
    ----------
    method : str
    n_evals : int
        Distinct entries evaluated (validation included): the cost that matters.
    n_requested, n_cached, n_calls : int
        Entries asked for (with repeats), served from the cache, and batched calls made.
    ranks : list of tuple
        TT ranks after each sweep.
    val_errors : list of float
        Relative error on the held-out entries after each sweep.
    n_heldout : int
        Held-out entries read: a fifth of ``val_size`` after an exact recovery, all of them
        otherwise, and ``val_size`` fresh ones more once a pass at the rank cap was
        confirmed.
    evals_per_sweep : list of int
        ``n_evals`` after each sweep.
    stop_reason : str
        ``"tol"``, ``"stalled"``, ``"max_evals"``, ``"max_time"``, ``"n_iter_max"`` or
        ``"callback"``.
    best_sweep : int
        The sweep whose state was returned (1-based): the one with the lowest held-out
        error, the last one when there is no held-out set.
    n_sweeps : int
        Completed sweeps (one sweep = one pass in one direction).
    n_restored : int
        Entries read back from a ``checkpoint`` instead of evaluated (counted in
        ``n_evals``; the function ran ``n_evals - n_restored`` times).
    function_seconds : float
        Time inside the function of a :class:`FunctionTensor` (with an executor: summed
        over its chunks, where they ran); for other tensors, ``wait_seconds``.
    wait_seconds : float
        Wall time spent waiting for the tensor's evaluations (with an executor: for the
        chunks to come back).
    total_seconds : float
        Wall time of the whole call; :attr:`overhead_seconds` is what the cross itself
        took.
    """

    method: str
    n_evals: int = 0
    n_requested: int = 0
    n_cached: int = 0
    n_calls: int = 0
    ranks: list = field(default_factory=list)
    val_errors: list = field(default_factory=list)
    n_heldout: int = 0
    evals_per_sweep: list = field(default_factory=list)
    stop_reason: str = ""
    best_sweep: int = 0
    n_sweeps: int = 0
    function_seconds: float = 0.0
    total_seconds: float = 0.0
    n_restored: int = 0
    wait_seconds: float = 0.0

    @property
    def val_error(self):
        """The held-out error of the returned state (``nan`` before the first sweep)."""
        return self.val_errors[self.best_sweep - 1] if self.best_sweep else float("nan")

    @property
    def overhead_seconds(self):
        """``total_seconds - wait_seconds``: the time of the cross itself."""
        return self.total_seconds - self.wait_seconds

    def update_counts(self, counters):
        self.n_evals = counters.unique
        self.n_requested = counters.requested
        self.n_cached = counters.cache_hits
        self.n_calls = counters.calls
        self.function_seconds = self.wait_seconds = counters.function_seconds

    def to_dict(self):
        return asdict(self)


# Held-out entries are read in two stages: FIRST_SHARE of them (at least FIRST_MIN) at the
# start, the rest as soon as a sweep does not meet the tolerance by CLEAR_MARGIN on those.
# A TT that meets it by that margin (an exact recovery) is accepted on the first stage
# (bench_cross P1, P3, P5a: 800 evaluations saved, 16-18% of the run); every other decision
# (narrow passes, misses, stalls, the best sweep) is taken on all the held-out entries: on
# the first stage alone, a noisy best-sweep choice cost the 1024^3 volume at rank 32 0.09
# of held-out error (bench_volume, "plain xzy s4").
FIRST_SHARE, FIRST_MIN, CLEAR_MARGIN = 0.2, 200, 0.01


class Validation:
    """Held-out entries: random multi-indices and their values, read through the cache.

    With ``block`` (the block cross), random positions are read whole, all channels of the
    last mode, about ``size`` entries in all: one encoder run serves ``block`` of them.
    With ``tol > 0`` the entries are read in two stages (see ``CLEAR_MARGIN``).
    """

    def __init__(self, lazy, size, rng, block=None, tol=0.0):
        self.lazy, self.tol, self.rng = lazy, tol, rng
        self.channels, self.block = block, block or 1
        self.size, self.confirmed = size, False
        self.indices = self._draw(size)
        total = self.indices.shape[0]
        first = max(FIRST_MIN, int(np.ceil(FIRST_SHARE * total))) if tol > 0 else total
        self._read(min(total, -(-first // self.block) * self.block))

    def _draw(self, size):
        """About ``size`` random multi-indices (whole positions for a block cross)."""
        shape = self.lazy.shape
        if self.channels:
            n_positions = -(-size // self.block)
            positions = np.stack([self.rng.integers(n, size=n_positions) for n in shape[:-1]],
                                 axis=1)
            return cartesian_join(positions.astype(np.int64), mode_column(self.block))
        return np.stack([self.rng.integers(n, size=size) for n in shape], axis=1).astype(np.int64)

    def _read(self, count):
        """Evaluate the first ``count`` held-out entries (those read before are cached)."""
        self.values = self.lazy.evaluate(self.indices[:count]) if count else None
        self.n_read = count
        host = to_host(self.values) if count else np.zeros(0)
        self.norm = float(np.linalg.norm(host))
        self.max_abs = float(np.abs(host).max()) if count else 0.0
        self.largest = self.indices[int(np.argmax(np.abs(host)))] if count else None
        self.eps = float(np.finfo(np.promote_types(host.dtype, np.float32)).eps)

    def error(self, cores):
        """Relative (absolute when the held-out values are all zero) 2-norm error."""
        error = self._error_on_read(cores)
        if error > CLEAR_MARGIN * self.tol and self.n_read < self.indices.shape[0]:
            try:
                self._read(self.indices.shape[0])
            except EvaluationBudgetExceeded:
                return error  # no budget left to confirm: the first stage decides
            error = self._error_on_read(cores)
        return error

    def confirm(self, cores):
        """The error after adding as many fresh held-out entries (once per run).

        A pass that is not clear, reached where more sweeps cannot lower the error (at the
        rank cap), may be a lucky draw of the held-out sample after many tries: the fresh
        entries confirm it or not, and stay in the set for later sweeps.
        """
        error = self.error(cores)
        if self.confirmed or error <= CLEAR_MARGIN * self.tol or self.values is None:
            return error
        fresh = self._draw(self.size)
        indices = np.concatenate([self.indices, fresh])
        previous = self.indices
        self.indices = indices
        try:
            self._read(indices.shape[0])
        except EvaluationBudgetExceeded:
            self.indices = previous  # no budget left to confirm: the pass stands
            return error
        self.confirmed = True
        return self._error_on_read(cores)

    def _error_on_read(self, cores):
        if self.values is None:
            return float("nan")
        difference = tl.norm(tt_entries(cores, self.indices[: self.n_read]) - self.values)
        difference = float(to_host(difference))
        return difference / self.norm if self.norm > 0 else difference


# A sweep "improves" when it lowers the held-out error by at least this fraction: below it,
# the changes are noise of the held-out sample, not progress worth another sweep's reads.
STALL_DECREASE = 0.01


class BestSweep:
    """The eligible sweep with the lowest held-out error, and how many sweeps in a row have
    neither lowered that error by ``STALL_DECREASE`` (relative) nor changed the ranks.
    Without held-out entries (errors are ``nan``) the latest sweep is the best and nothing
    ever stalls."""

    def __init__(self):
        self.error = self.reference = float("inf")
        self.state, self.sweep, self.stale = None, 0, 0

    def offer(self, sweep, error, state=None, ranks_changed=False):
        """``state`` None: the sweep counts for stalling but cannot be returned."""
        if state is not None and not error >= self.error:  # lower, or nan
            self.error, self.state, self.sweep = error, state, sweep
        if not error >= self.reference * (1.0 - STALL_DECREASE):
            self.reference, self.stale = error, 0
        elif ranks_changed:  # a rank-adaptive cross still adding pivots: not stalled
            self.stale = 0
        else:
            self.stale += 1
