"""When to stop: held-out validation error, tolerance, budget, sweeps, callback; CrossInfo."""

import math
import warnings
from dataclasses import asdict, dataclass, field, fields

import numpy as np

from .._backend import to_host
from .._validation import outside_stacklevel
from ..errors import EvaluationBudgetExceeded, UnseenStructureWarning
from ..lazy.base import unravel_c_order
from ..lazy.cache import budget_named
from .confidence import residual_carriers
from .indices import cartesian_join, mode_column
from .scaling import double_moduli, unshrunk
from .tt_entries import tt_entries


@dataclass
class CrossInfo:
    """What a cross approximation did (``tt_cross(..., return_info=True)``).

    Each parameter is an attribute of the same name; the cross fills them in.

    Parameters
    ----------
    method : str
        The method that ran (``"auto"`` resolved; ``"tci+lsq"`` when a stalled TCI handed
        over to the least-squares cross and its state was returned: the records then hold
        both runs' sweeps, in order).
    n_evals : int
        Entries evaluated (validation included): the cost that matters. Each distinct
        entry counts once while the evaluation cache holds it (up to 2**24 entries; past
        that the cache starts afresh and a repeat is evaluated again).
    n_requested, n_cached, n_calls : int
        Entries asked for (with repeats), served from the cache, and batched calls made.
    ranks : list of tuple
        TT ranks after each sweep. For ``method="block"``, the ranks of the bonds between
        positions, as ``rank`` gives them: the TT's are these with the channels inserted
        before the last 1 (``(1, r_1, ..., r_{d-2}, F, 1)``).
    val_errors : list of float
        Relative error on the held-out entries after each sweep. On a tensor of at most
        2**20 entries that the cross has read whole, the error over every entry from the
        sweep that read the last ones; the state returned and the current one are measured
        over every entry then too (their earlier sample errors are replaced), so that
        :attr:`val_error` is exact.
    n_heldout : int
        Held-out entries read: a fifth of ``val_size`` after an exact recovery, all of them
        otherwise, and ``val_size`` fresh ones more once a pass at the rank cap was
        confirmed. See :attr:`heldout_bound` for what they can and cannot show.
    heldout_group : int
        Held-out entries per independent draw: 1, or the channels of a block cross, whose
        draws are whole positions (``n_heldout / heldout_group`` positions).
    n_fresh : int
        Of ``n_heldout``, the fresh entries a confirmation added (0 without one): the
        entries drawn first judged every sweep before the pass, and the pass is the first
        sweep they let through, so only the fresh ones are one test (:attr:`heldout_bound`
        counts them alone).
    evals_per_sweep : list of int
        ``n_evals`` after each sweep.
    stop_reason : str
        ``"tol"``, ``"stalled"``, ``"max_evals"``, ``"max_time"``, ``"n_iter_max"`` or
        ``"callback"``.
    best_sweep : int
        The sweep whose state was returned (1-based): the one with the lowest held-out
        error, the last one when there is no held-out set; 0 when no sweep completed (a
        budget stopped the first one: the starting TT is returned, ``val_error`` is nan).
        Once a small tensor is read whole, among the exact errors only (see
        ``val_errors``): an earlier sweep's lower sample error, its state gone, is not.
    n_sweeps : int
        Completed sweeps (one sweep = one pass in one direction).
    n_restored : int
        Entries read back from a ``checkpoint`` instead of evaluated (counted in
        ``n_evals``; the function ran ``n_evals - n_restored`` times).
    function_seconds : float
        Time inside the function of a :class:`FunctionTensor`, also one seen through
        views (``QuanticsTensor(FunctionTensor(...))``; with an executor: summed over its
        chunks, where they ran); for other tensors, ``wait_seconds``.
    wait_seconds : float
        Wall time spent waiting for the tensor's evaluations (with an executor: for the
        chunks to come back).
    total_seconds : float
        Wall time of the whole call; :attr:`overhead_seconds` is what the cross itself
        took.
    rolled_back : list of int
        Sweeps undone because their held-out error rose tenfold above the lowest so far
        (a divergence); their errors stay in ``val_errors``.
    refined : bool
        The last sweep is the least-squares refinement of an interpolating cross that
        missed its tolerance (``cross/finish.py``): the TT no longer interpolates, and
        :func:`cross_interpolate` on the indices rebuilds the unrefined one. Never with
        ``differentiable=True``, which returns what it can rebuild with gradient.

    Notes
    -----
    The held-out error is measured on ``n_heldout`` random entries, and sampling cannot see
    what it never reads: a tensor that differs from the TT on a few entries only (one
    spike in a smooth volume) can report ``val_error=0.0``. What the sample does bound is
    the *fraction* of entries that could be off: if a fraction ``p`` of the entries were
    off, the chance that none of ``N`` uniform random draws hits one is ``(1 - p)**N``.
    :attr:`heldout_bound` is the ``p`` at which that chance falls to 5%,
    ``1 - 0.05**(1/N)``, about ``3/N``: with 95% confidence, at most that fraction of the
    entries could be off while none of the held-out entries is. For ``method="block"`` the
    draws are whole positions (all channels at once): count ``N`` in positions.

    Examples
    --------
    >>> import numpy as np
    >>> from tensorly_cross import FunctionTensor, tt_cross
    >>> f = FunctionTensor(lambda idx: np.cos(idx.sum(axis=1) / 9.0), (32,) * 4)
    >>> tt, info = tt_cross(f, tol=1e-8, random_state=0, return_info=True)
    >>> info.method, info.stop_reason, bool(info.val_error < 1e-8)
    ('tci', 'tol', True)
    >>> info.n_evals == info.evals_per_sweep[-1]
    True
    """

    method: str
    n_evals: int = 0
    n_requested: int = 0
    n_cached: int = 0
    n_calls: int = 0
    ranks: list = field(default_factory=list)
    val_errors: list = field(default_factory=list)
    n_heldout: int = 0
    heldout_group: int = 1
    n_fresh: int = 0
    evals_per_sweep: list = field(default_factory=list)
    stop_reason: str = ""
    best_sweep: int = 0
    n_sweeps: int = 0
    function_seconds: float = 0.0
    total_seconds: float = 0.0
    rolled_back: list = field(default_factory=list)
    refined: bool = False
    n_restored: int = 0
    wait_seconds: float = 0.0

    @property
    def val_error(self):
        """The held-out error of the returned state (``nan`` before the first sweep)."""
        return self.val_errors[self.best_sweep - 1] if self.best_sweep else float("nan")

    @property
    def heldout_bound(self):
        """Fraction of entries that could be off with none of the held-out entries off.

        At 95% confidence: ``1 - 0.05**(1/N)``, about ``3/N``, with ``N`` the independent
        draws (``n_heldout / heldout_group``; after a confirmation, its ``n_fresh`` entries
        alone); 1.0 without held-out entries (see the class notes).
        """
        return heldout_bound((self.n_fresh or self.n_heldout) // max(1, self.heldout_group))

    def __repr__(self):
        values = ", ".join(f"{item.name}={getattr(self, item.name)!r}" for item in fields(self))
        return (f"CrossInfo({values}, val_error={self.val_error!r}, "
                f"heldout_bound={self.heldout_bound:.3g})")

    @property
    def overhead_seconds(self):
        """``total_seconds - wait_seconds``: the time of the cross itself."""
        return self.total_seconds - self.wait_seconds

    def update_counts(self, counters):
        """Copy the counts of an evaluation cache into this record.

        Parameters
        ----------
        counters : CacheCounters
            The counters of the cache the cross read through.
        """
        self.n_evals = counters.unique
        self.n_requested = counters.requested
        self.n_cached = counters.cache_hits
        self.n_calls = counters.calls
        self.function_seconds = self.wait_seconds = counters.function_seconds

    def to_dict(self):
        """The record as a plain dict (for JSON or a table).

        Returns
        -------
        data : dict
            Every field by name, and the properties :attr:`val_error` and
            :attr:`heldout_bound` (as the repr shows them).
        """
        return dict(asdict(self), val_error=self.val_error, heldout_bound=self.heldout_bound)


# Confidence of the held-out bound: at most this chance that a fraction heldout_bound(n) of
# off entries leaves all n draws clean.
HELDOUT_MISS_CHANCE = 0.05


def heldout_bound(n_heldout):
    """Fraction ``p`` of off entries that ``n_heldout`` uniform draws all miss with chance
    5%: ``(1 - p)**n = 0.05`` (``1.0`` for no draws)."""
    if n_heldout <= 0:
        return 1.0
    return float(-np.expm1(np.log(HELDOUT_MISS_CHANCE) / n_heldout))


# Held-out entries are read in two stages: FIRST_SHARE of them (at least FIRST_MIN) at the
# start, the rest as soon as a sweep does not meet the tolerance by CLEAR_MARGIN on those.
# A TT that meets it by that margin (an exact recovery) is accepted on the first stage
# (bench_cross P1, P3, P5a: 800 evaluations saved, 16-18% of the run); every other decision
# (narrow passes, misses, stalls, the best sweep) is taken on all the held-out entries: on
# the first stage alone, a noisy best-sweep choice cost the 1024^3 volume at rank 32 0.09
# of held-out error (bench_volume, "plain xzy s4").
FIRST_SHARE, FIRST_MIN, CLEAR_MARGIN = 0.2, 200, 0.01

# Tensors of at most this many entries, once read whole, are judged on every entry (the
# TT at 2**20 entries: a fraction of a second).
EXACT_SIZE = 2**20

# A pass of the tolerance is suspect when the cross read an entry this many times larger
# than every held-out entry: the held-out sample never saw that part of the tensor (a spike,
# a small bright feature), so its error says nothing about it.
UNSEEN_FACTOR = 100

# The largest entries read whose TT values a pass checks (Validation._missed_read_entry).
MISSED_CANDIDATES = 32

# A pass is suspect when fewer held-out entries than this carry its residual (the
# effective count ``(sum r^2)^2 / sum r^4``) and its error is not far below tol: a sample
# that missed the few entries carrying a volume's residual (its edges) looks both small
# and sure. On MNI152 at val_size 50-200 (effective counts 5-15), the upper 95% bound
# covered the true error in only 76-92% of samples; at 4000 (about 250), 94-95%.
FEW_CARRIERS = 30

# A pass is suspect when fewer held-out entries than this carry the held-out norm (the
# relative error's denominator; the same effective count of the values), whose estimate
# then errs by a third or more. Counted: 2 for one voxel 200x the rest of a 32^3 volume
# (a pass at 0.028 for a true 0.072), 19 for a 3^3 blob 30x (0.034 for 0.044), 26 for
# 1/(1+i+j+k) on 40^3 (0.023 for 0.025): only the first is warned of.
FEW_VALUE_CARRIERS = 10

# Held-out values sit on levels when one value holds at least this share of them (and they
# are at least LEVELS_MIN): a mask, a background, a quantized or piecewise-constant
# function. An interpolating cross of such data is exact on most entries and off by a whole
# step on a few, which a sample under-counts: through a callable, a 32^3 binary ball in the
# interleaved quantics layout stopped on "tol" at 1e-2 with a true error of up to 0.169
# unguarded, 0.066 guarded (benchmarks/bench_levels.py). A smooth function's most common
# value holds few draws, even where values repeat (functions of sum(x)): 13 and 14 of 1000
# for bench_cross's P3 and P4, 1 for P1, P2, P5a; the phantom P5b's background holds 733.
LEVEL_SHARE, LEVELS_MIN = 0.1, 50


class Validation:
    """Held-out entries: random multi-indices and their values, read through the cache.

    With ``block`` (the block cross), random positions are read whole, all channels of the
    last mode, about ``size`` entries in all: one encoder run serves ``block`` of them.
    With ``tol > 0`` the entries are read in two stages (see ``CLEAR_MARGIN``).
    """

    def __init__(self, lazy, size, rng, block=None, tol=0.0):
        self.lazy, self.tol, self.rng = lazy, tol, rng
        self.channels, self.block = block, block or 1
        self.size, self.confirmed, self.warned = size, False, False
        # Stored data confirms even a clear pass (see confirm): fresh reads cost little there.
        self.stored = bool(getattr(lazy, "stored", False))
        self.levelled = False  # set by _read: held-out values that sit on a few levels
        self.fresh_from = None  # after a confirmation: where its fresh entries start
        self._every = None  # (every multi-index, its value) once the cache holds them all
        self.indices = self._draw(size)
        total = self.indices.shape[0]
        first = max(FIRST_MIN, int(np.ceil(FIRST_SHARE * total))) if tol > 0 else total
        count = min(total, -(-first // self.block) * self.block)
        try:
            self._read(count)
        except EvaluationBudgetExceeded as error:  # before any sweep: the budget is too small
            raise ValueError(
                f"{budget_named(lazy)} is too small for the {count} "
                f"held-out entries read first (val_size={size}"
                + (f", whole positions of {self.block} channels" if self.channels else "")
                + "); raise max_evals or lower val_size.") from error

    def _draw(self, size):
        """About ``size`` random multi-indices (whole positions for a block cross)."""
        shape = self.lazy.shape
        if self.channels:
            n_positions = -(-size // self.block)
            positions = np.stack([self.rng.integers(n, size=n_positions) for n in shape[:-1]],
                                 axis=1)
            return cartesian_join(positions.astype(np.int64), mode_column(self.block))
        return np.stack([self.rng.integers(n, size=size) for n in shape], axis=1).astype(np.int64)

    def read_all_if_zero(self):
        """Read the second stage now when every first-stage entry is 0: on a tensor that
        is zero but in a small region, a start needs a nonzero entry to go through (see
        ``through_pivot``), and the rest of the held-out draws is read by the first miss
        anyway. Within a budget too small for them, the first stage stays."""
        if self.max_abs == 0 and 0 < self.n_read < self.indices.shape[0]:
            try:
                self._read(self.indices.shape[0])
            except EvaluationBudgetExceeded:
                pass

    def exclude(self, multi_index):
        """Drop every held-out draw of the entry ``multi_index`` (the TCI's start pivot,
        chosen from them: the TT interpolates it, so it would show an error of 0 on an
        entry that built the TT). The entries read stay cached: nothing is read again."""
        keep = ~np.all(self.indices == np.asarray(multi_index, dtype=np.int64), axis=1)
        count = int(keep[: self.n_read].sum())
        self.indices = self.indices[keep]
        self._read(count)

    def _read(self, count):
        """Evaluate the first ``count`` held-out entries (those read before are cached)."""
        self.values = self.lazy.evaluate(self.indices[:count]) if count else None
        self.n_read = count
        host = to_host(self.values) if count else np.zeros(0)
        self.scaled = _scaled_parts(host)
        self.levelled = self.levelled or _on_levels(host)
        self.max_abs = float(np.abs(host).max()) if count else 0.0
        self.largest = self.indices[int(np.argmax(np.abs(host)))] if count else None
        self.zero_share = float(np.mean(host == 0)) if count else 0.0
        refuse_beyond_limit(host, self.indices[:count])
        self.eps = float(np.finfo(np.promote_types(host.dtype, np.float32)).eps)

    def error(self, cores):
        """Relative (absolute when the held-out values are all zero) 2-norm error; exact,
        over every entry, once the cross has read them all (see :data:`EXACT_SIZE`)."""
        exact = self.exact_error(cores)
        if exact is not None:
            return exact
        error = self._error_on_read(cores)
        if error > CLEAR_MARGIN * self.tol and self.n_read < self.indices.shape[0]:
            try:
                self._read(self.indices.shape[0])
            except EvaluationBudgetExceeded:
                return error  # no budget left to confirm: the first stage decides
            error = self.measured(cores)
        if error <= self.tol and not self.guarded:
            self.warn_if_unseen(error, cores=cores)  # guarded: once a pass is decided
        return error

    def exact_error(self, cores):
        """The error of ``cores`` over the whole tensor when the cache holds every entry of
        one of at most :data:`EXACT_SIZE` (None otherwise): no entry is unseen then, and a
        held-out sample could only hide what was read. A tensor zero but at one entry, read
        whole by a full-rank ALS cross, gave a zero TT whose held-out error (999 zeros) was
        0."""
        if not self.reads_every_entry:
            return None
        lazy, size = self.lazy, self.lazy.size
        if self._every is None:  # read once: each check asked the cache for every entry
            every = unravel_c_order(np.arange(size), lazy.shape)
            self._every = every, to_host(lazy.evaluate(every))  # all cached: no evaluation
        every, values = self._every
        difference = to_host(tt_entries(cores, every)) - values
        return relative_norm(difference, _scaled_parts(values))

    @property
    def reads_every_entry(self):
        """Whether errors are exact: the cache holds every entry of a tensor of at most
        :data:`EXACT_SIZE` (once true, it stays true: the cache only grows there)."""
        lazy = self.lazy
        size = getattr(lazy, "size", None)
        return (hasattr(lazy, "max_abs") and size is not None and size <= EXACT_SIZE
                and len(lazy) >= size)

    def warn_if_unseen(self, error, residuals=None, cores=None):
        """Warn (once) when a pass of the tolerance rests on a sample that shows signs of
        structure it did not see: held-out values all zero, or far below what the cross read,
        or (given the held-out ``residuals``) a residual that a handful of entries carry,
        or (given the passing ``cores``) an entry the cross read that the TT misses by more
        than the whole tolerance (:meth:`_missed_read_entry`). On guarded data the driver
        calls it once a pass is decided, so that the bound it prints counts the fresh
        entries that confirmed the pass."""
        if self.warned or self.values is None:
            return
        self.warned = True
        if not hasattr(self.lazy, "max_abs"):
            return  # not read through a cache: what the cross read is not known here
        n_read, size = len(self.lazy), self.lazy.size
        if n_read >= size:
            return  # every entry was read: nothing is unseen
        largest_read = float(self.lazy.max_abs())
        bound = heldout_bound(self.n_independent // self.block)  # draws: positions
        missed = None if cores is None else self._missed_read_entry(cores)
        if missed is not None:
            sign = missed
        elif self.max_abs == 0:
            sign = (f"all {self.n_read} held-out entries are 0 (the error {error:.3g} is "
                    "absolute, and an all-zero sample shows no scale)")
        elif largest_read > UNSEEN_FACTOR * self.max_abs:
            # Named at the data's scale: the cache holds it shrunk near its dtype's top.
            sign = (f"the cross read an entry of modulus "
                    f"{unshrunk(largest_read, self.lazy):.3g}, "
                    f"{largest_read / self.max_abs:.3g}x the largest held-out one "
                    f"({unshrunk(self.max_abs, self.lazy):.3g}): the held-out sample did not "
                    "see that structure")
        elif (error > CLEAR_MARGIN * self.tol
              and (carriers := residual_carriers(residuals)) < FEW_CARRIERS):
            sign = (f"about {carriers:.0f} of its {self.n_read} held-out entries "
                    "carry the residual, too few for the error's upper 95% bound to hold")
        elif (error > CLEAR_MARGIN * self.tol
              and (carriers := residual_carriers(to_host(self.values))) < FEW_VALUE_CARRIERS):
            # The relative error's denominator: one voxel 200x the rest among 8,000
            # held-out entries of a 32^3 volume (4x its share) halved the error of a pass
            # (0.028 for a true 0.072 at tol 0.05), and the bound, a ratio's, missed it.
            sign = (f"about {carriers:.0f} of its {self.n_read} held-out entries "
                    "carry the held-out norm (a few entries far larger than the rest: the "
                    "relative error's denominator), too few for the error or its upper 95% "
                    "bound to hold")
        else:
            return
        warnings.warn(
            f"held-out error {error:.3g} <= tol, but {sign}. {n_read} of {size} entries were "
            f"read; with 95% confidence at most a fraction {bound:.3g} of the entries differ "
            "from the TT unseen. Raise val_size, or check the result on the features you "
            "know of.", UnseenStructureWarning, stacklevel=outside_stacklevel())

    def _missed_read_entry(self, cores):
        """The sign (a phrase) that the TT misses one of the largest entries the cross
        read by more than ``tol`` of the tensor's norm (estimated from the held-out entries
        and those read), else None. One such entry alone puts the error above tol: MNI152's
        T1 (a 32^3 crop) with one voxel 50 times brighter, read by TCI in a searched column
        but never a pivot, passed at a held-out error of 0.019 for a true one of 0.40, the
        voxel 50x the largest held-out value (under :data:`UNSEEN_FACTOR`)."""
        largest = getattr(self.lazy, "largest", None)
        found = None if largest is None else largest(MISSED_CANDIDATES)
        if found is None or not self.tol > 0:
            return None
        indices, values = found
        held = np.abs(to_host(self.values)).astype(np.float64)
        read = np.abs(values).astype(np.float64)
        residuals = np.abs(to_host(tt_entries(cores, indices)) - values).astype(np.float64)
        scale = max(float(held.max(initial=0.0)), float(read.max(initial=0.0)))
        if not scale > 0 or not np.all(np.isfinite(residuals)):
            return None
        # Scaled by the largest modulus: squares of values near 1e300 stay finite.
        norm = np.sqrt(self.lazy.size * np.mean((held / scale) ** 2)
                       + np.sum((read / scale) ** 2)) * scale
        worst = int(np.argmax(residuals))
        alone = residuals[worst] / norm
        if not alone > max(self.tol, 100 * self.eps):
            return None
        where = tuple(int(i) for i in indices[worst])
        # Named at the data's scale, as the other signs: the cache holds it shrunk.
        value = values[worst]
        value = (complex(unshrunk(value.real, self.lazy), unshrunk(value.imag, self.lazy))
                 if np.iscomplexobj(value) else unshrunk(float(value), self.lazy))
        return (f"the cross read the entry at {where}, {value:.3g}, and the TT missed by "
                f"{unshrunk(float(residuals[worst]), self.lazy):.3g} there: that entry alone "
                f"is an error of about {alone:.3g} of the tensor's norm (estimated), above tol")

    @property
    def n_fresh(self):
        """The held-out entries a confirmation added (0 before one)."""
        return 0 if self.fresh_from is None else self.n_read - self.fresh_from

    @property
    def n_independent(self):
        """The held-out entries that are one test of the pass: after a confirmation its
        fresh entries alone (the first ones chose the sweep that passed: on MNI152's brain
        mask, TCI passed with 0.23-0.25% of the voxels off, where 1,999 held-out entries
        bound 0.15% and the 1,000 fresh ones 0.3%), else every one read."""
        return self.n_fresh or self.n_read

    @property
    def guarded(self):
        """Whether every pass is confirmed on fresh entries and judged on its upper bound:
        stored data (fresh reads are cheap), and held-out values that sit on a few levels
        (:func:`_on_levels`), whatever reads them."""
        return self.stored or self.levelled

    def confirm(self, cores):
        """The error after adding as many fresh held-out entries (once per run).

        A pass that is not clear, reached where more sweeps cannot lower the error (at the
        rank cap), may be a lucky draw of the held-out sample after many tries: the fresh
        entries confirm it or not, and stay in the set for later sweeps. On stored data a
        clear pass is confirmed too: an interpolating cross of a piecewise-constant volume
        is exact on most entries and off by the whole contrast on a few (a binary mask at
        tol 0.05: 0.1-0.5% of the voxels off, a true error of 0.08-0.16, while its first
        200 held-out entries were all exact: "tol" reported at 1e-15).
        """
        exact = self.exact_error(cores)
        if exact is not None:
            return exact  # every entry read: fresh draws could only hide the exact error
        error = self.error(cores)
        clear = error <= CLEAR_MARGIN * self.tol and not self.guarded
        if self.confirmed or clear or self.values is None:
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
        self.confirmed, self.fresh_from = True, previous.shape[0]
        return self.measured(cores)

    def relative_on(self, residuals, part):
        """The relative error of ``residuals`` (of every entry read) on the entries
        ``part`` (a slice) alone: ``||residuals[part]|| / ||values[part]||``."""
        return relative_norm(np.asarray(residuals)[part],
                             _scaled_parts(to_host(self.values)[part]))

    def measured(self, cores):
        """The error after a read: exact if that read completed the tensor in the cache
        (a block cross of 225 entries reported 0.298 on its sample, passing ``tol=0.3``,
        when its exact error over the entries it had all read was 0.348), else on the
        held-out entries read."""
        exact = self.exact_error(cores)
        return exact if exact is not None else self._error_on_read(cores)

    def _error_on_read(self, cores):
        if self.values is None:
            return float("nan")
        difference = tt_entries(cores, self.indices[: self.n_read]) - self.values
        return self.relative(to_host(difference))

    def relative(self, difference):
        """``||difference|| / ||held-out values||``, absolute when the values are all 0."""
        return relative_norm(difference, self.scaled)


def _scaled_parts(values):
    """``(m, n)`` with ``||values|| = m * n``: ``m = max|values|``, ``n`` in ``[1, sqrt(len)]``
    (``(0, 0)`` for zeros); neither overflows where the norm itself would."""
    values = np.abs(np.asarray(values))
    largest = float(values.max()) if values.size else 0.0
    if largest == 0 or not np.isfinite(largest):
        return largest, largest
    return largest, float(np.linalg.norm(values / largest))


def relative_norm(difference, reference):
    """``||difference|| / ||reference||`` (``reference`` as :func:`_scaled_parts` gives it),
    formed as ``(m_d / m_r) * (n_d / n_r)``: near 1e307 both norms overflow to inf and
    their ratio was 0 (a wrong TT passing any tolerance). Absolute when the reference is
    all zero."""
    top, spread = _scaled_parts(difference)
    reference_top, reference_spread = reference
    if reference_top == 0:
        return top * spread
    if top == 0:
        return 0.0
    return (top / reference_top) * (spread / reference_spread)


def scaled_norm(values):
    """The 2-norm of a host vector, computed on ``values / max|values|``: the squares of
    entries near 1e300 overflow, and those of subnormal entries (1e-320) are 0."""
    values = np.abs(np.asarray(values))
    largest = float(values.max()) if values.size else 0.0
    if largest == 0 or not np.isfinite(largest):
        return largest
    return largest * float(np.linalg.norm(values / largest))


# A sweep "improves" when it lowers the held-out error by at least this fraction: below it,
# the changes are noise of the held-out sample, not progress worth another sweep's reads.
STALL_DECREASE = 0.01
# Held-out moduli above this (2**1022, about 4.5e307) are refused: a few such entries summed
# overflow float64 (1e308 times a cosine crashed every interpolating and least-squares fit).
OVERFLOW_LIMIT = 2.0**1022


def refuse_beyond_limit(values, indices):
    """Raise a ValueError naming the largest entry of ``values`` (host, at ``indices``)
    where its modulus exceeds :data:`OVERFLOW_LIMIT`: any sum of two such entries overflows."""
    moduli = double_moduli(values)
    if not moduli.size or not float(moduli.max()) > OVERFLOW_LIMIT:
        return
    largest = int(np.argmax(moduli))
    raise ValueError(
        f"the entry at {tuple(int(i) for i in indices[largest])} has modulus "
        f"{float(moduli[largest]):.3g}, within a factor 4 of float64's largest: sums of such "
        "entries overflow in any fit. Scale the tensor (by a power of two, say 2**-64, "
        "which is exact) and the TT back.")


class BestSweep:
    """The eligible sweep with the lowest held-out error, and how many sweeps in a row have
    neither lowered that error by ``STALL_DECREASE`` (relative) nor changed the ranks.
    Without held-out entries (errors are ``nan``) the latest sweep is the best, and a
    sweep stalls when it left every index set as it was (``settled``): the next ones would
    only repeat it."""

    def __init__(self):
        self.error = self.reference = float("inf")
        self.state, self.sweep, self.stale = None, 0, 0

    def offer(self, sweep, error, state=None, ranks_changed=False, settled=False):
        """``state`` None: the sweep counts for stalling but cannot be returned."""
        # Lower, or any error while none finite came before (no held-out entries: NaN,
        # the latest is the best). After a finite one a NaN is a sweep of non-finite
        # cores: taken as the best, it was returned (and refused) in place of a finite TT.
        if state is not None and (error < self.error or not math.isfinite(self.error)):
            self.error, self.state, self.sweep = error, state, sweep
        if error != error:  # no held-out entries: only a fixed point of the sweeps stalls
            self.stale = self.stale + 1 if settled else 0
        elif not error >= self.reference * (1.0 - STALL_DECREASE):
            self.reference, self.stale = error, 0
        elif ranks_changed:  # a rank-adaptive cross still adding pivots: not stalled
            self.stale = 0
        else:
            self.stale += 1


def _on_levels(values):
    """Whether one value holds :data:`LEVEL_SHARE` of ``values`` (a host array)."""
    if values.shape[0] < LEVELS_MIN:
        return False
    _, counts = np.unique(values, return_counts=True)
    return int(counts.max()) >= LEVEL_SHARE * values.shape[0]
