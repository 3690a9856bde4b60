"""The settings of one cross approximation, validated once into a frozen object.

:func:`tensorly_cross.tt_cross` and :func:`tensorly_cross.select_indices` take the same
keyword arguments; they are checked here, in one place, and the resulting
:class:`CrossOptions` is what the rest of the library reads.
"""

import copy
import hashlib
import math
import numbers
import os
from dataclasses import dataclass, fields, replace

import numpy as np
import tensorly as tl
from tensorly.tt_tensor import TTTensor

from ._validation import check_bool, check_choice, check_float, check_int, check_no_nul
from .cross.indices import check_mode_sizes
from .cross.ranks import expand_rank, plain_rank

METHODS = ("auto", "als", "tci", "lsq", "block")
PIVOT_SEARCHES = ("auto", "column", "rook", "full", "batched")
# The least-squares cross's default oversampling (MNI152, rank 40, two sweeps: 1.5 reads 14%
# of the voxels for a held-out error of 0.085, 2.0 reads 24% for 0.083).
LSQ_OVERSAMPLE = 1.5
# ... and its default held-out sample.
LSQ_VAL_SIZE = 4000

# max_rank's default: a cap that rank= is allowed to exceed without a word.
DEFAULT_MAX_RANK = 64

# The parameters shared by tt_cross and select_indices, documented once (numpydoc).
CROSS_PARAMETERS = """\
rank : int, list of int or None
        ``None``: rank-adaptive (TCI on functions, the least-squares cross on stored
        data) up to ``max_rank``. An int or a TensorLy rank list ``(1, r_1, ..., 1)``: the
        fixed rank of the cross (``method="auto"``: the least-squares cross on stored
        data, the ALS cross on functions), or the per-bond cap of TCI (``method="tci"``).
        Ranks above what the unfoldings can hold are clipped with a warning.
    tol : float, default 1e-6
        In ``[0, 1)``. Stop when the relative error on the held-out entries is
        ``<= tol``; TCI also uses it as its pivot tolerance (relative to the largest entry
        read in each bond's block).
    method : {"auto", "lsq", "tci", "als", "block"}
        ``"auto"``: ``"lsq"`` on stored data (arrays, volumes: their singular values decay
        slowly; at the same rank, least squares is 1.3-1.5x more accurate there than the
        ALS cross and 1.7-3.5x than TCI: ``docs/real_volumes.rst``), else ``"tci"``
        without a rank and ``"als"`` with one. Where that TCI stalls short of ``tol``
        (real data behind a callable), the least-squares cross continues on the same
        cache and budget, and the better of the two is returned (``info.method`` is then
        ``"tci+lsq"``). ``"lsq"``: the least-squares cross,
        rank-adaptive or fixed-rank (oversampled index sets, cores fitted in least squares
        over them and refined over the last sweeps' fibers, ranks trimmed to ``tol``).
        ``"tci"``: the rank-adaptive interpolating cross (prrLU pivots); ``"als"``: the
        fixed-rank interpolating ALS cross of the paper. ``"block"``: the fixed-rank
        ALS cross of a vector-valued function, the tensor's last mode being its channels:
        index sets cover the other modes and each position is read for all channels at
        once (an encoder then runs once per position); ``rank`` has one entry per bond of
        those modes and the TT's last bond is the number of channels.
    max_rank : int, default 64
        Rank cap of the adaptive method; with ``rank`` it is not used, and a ``max_rank``
        other than the default below that rank is refused (the two contradict).
    max_evals : int or None
        Budget of distinct evaluations, validation included; never exceeded. The result
        is the complete sweep within it with the lowest held-out error (as ``patience``
        says), not necessarily the last one.
    n_iter_max : int, default 50
        Maximum number of sweeps (one sweep is one pass in one direction). A final
        least-squares refinement of a run that missed ``tol`` reads nothing new but is
        recorded as one more sweep (``info.refined``), so ``info.n_sweeps`` can be
        ``n_iter_max + 1``.
    val_size : int or None
        Number of random held-out entries for the validation error (0 disables it);
        default 1000, and 4000 for ``"lsq"`` (it stops on the error's upper confidence
        bound, which a larger sample tightens; still a small share of its reads). With
        ``tol > 0`` a fifth of them (at least 200) are read first, and the rest as soon as a
        sweep does not meet ``tol`` by a factor 100 on those: an exact recovery stops
        without them, every other decision uses them all. A narrow pass at the rank cap
        (always, for a given ``rank``) is confirmed on ``val_size`` fresh entries first;
        on stored data (arrays, volumes), and where one value holds a tenth of the held-out
        entries, at least 50 of them (a mask, a background, a piecewise-constant function;
        a smaller ``val_size`` is not checked for it), every pass of
        ``"tci"`` and ``"als"`` is, a clear one too, and must hold on the error's upper 95%
        bound (as ``"lsq"``'s does). That bound holds on large samples only: on real volumes
        it covered the true error 92-95% of the time at 1000-4000 entries, 76-92% at 50-200
        (``docs/guarantees.rst``); a pass whose residual fewer than 30 held-out entries
        carry warns (:class:`~tensorly_cross.errors.UnseenStructureWarning`).
        A tensor of at most 2**20 entries, once the cross has read them all, is judged on
        its exact error over every entry instead. Drawn with replacement; capped at the
        number of entries (or the default, if larger).
    random_state : None, int, numpy RandomState or Generator
        Seed of every random choice: the same int gives the same indices and result (an
        int ``n`` runs as ``numpy.random.default_rng(n)``). A Generator or RandomState
        object is drawn from, and moves on: passed to two calls, it gives two different
        runs (pass an int, or a fresh generator, to repeat one). None: a fresh seed from
        the operating system's entropy.
    verbose : bool, default False
        Print one line per sweep.
    callback : callable or None
        ``callback(tt, info) -> bool`` after each sweep; ``True`` stops (under JAX, whose
        search runs with NumPy, ``tt`` has NumPy cores). ``info`` is a copy of the record
        at that sweep: keeping or editing it does not touch the run's.
    return_info : bool, default False
        Also return a :class:`CrossInfo`.
    pivot_search : {"column", "rook", "full", "auto", "batched"}
        TCI's pivot search in each two-site block. ``"column"`` (default): partial pivoting,
        the largest residual of one column read, then its row; ``"rook"``: alternate
        column and row maxima until an entry is the largest of both; ``"full"``: read every
        block whole. ``"auto"``: full search where the two modes of a bond have at most 16
        index pairs (quantics digits), column search elsewhere; it recovers
        piecewise-constant quantics data (boxes) exactly where the others stall. Measured on
        ``benchmarks/bench_cross.py`` (P1-P5a, 10 seeds each:
        ``benchmarks/results/cross.md``), column search needs 0.54-0.72x the evaluations of
        rook search for the same errors. On bonds of
        larger modes the previous sweep's pivots are kept and only new ones searched for.
        ``"batched"``: column search in rounds, each reading its columns in one batch and
        their pivots' rows in another, a round sized by the rank the neighbouring bond
        reached: fewer, larger batches where a bond gains many pivots in one search (a
        rank-8 TT at d=80: 270 instead of 1,235; with an executor, each batch is a round
        of chunks), as many where ranks grow a pivot or two per sweep, and 0.98-1.19x the
        column search's evaluations on the benchmark problems (``docs/scale.rst``).
        Any other value than ``"column"`` with another method raises a ValueError.
    shape : tuple of int, optional
        Only for a callable ``tensor``.
    patience : int or None, default 2
        Stop (``"stalled"``) after this many sweeps in a row that neither lower the held-out
        error by 1% nor change the ranks: at a fixed rank that is too small, or at TCI's rank
        cap, further sweeps only re-read entries. A rank-adaptive run can also stop so below
        ``max_rank``: each stalled sweep lowers its truncation (pivot cut), and only the
        sweeps after it raise the ranks (the least-squares cross counts up to six sweeps
        at a just-lowered truncation as progress; the warning of a stall below the cap
        names patience; see :doc:`/guarantees`). Once a tensor of at most 2**20 entries
        is read whole (its errors exact), a return to ranks an earlier sweep had is no
        change. Without held-out entries (``val_size=0``),
        sweeps that leave every index set as it was (a fixed point). ``None`` never stops
        early. Either way the state returned is the sweep with the lowest held-out error
        (from the second sweep; the first when it meets ``tol`` or no later one
        completes).
    oversample : float or None
        ``"lsq"`` (default 1.5): left and right index sets of ``ceil(oversample * r)``
        multi-indices per bond of rank ``r`` (the outer sets four times as many).
        ``"als"`` and ``"block"`` (default 1.0): right index sets of ``ceil(oversample * r)``
        multi-indices instead of ``r``, and cores fitted to their fibers in least squares
        over all of them (for ``"als"`` with ``oversample > 1``, the block cross of the
        tensor with one channel). More entries per sweep for more accurate cores where
        interpolation through ``r`` pivots is poor; exact at the true ranks either way.
        Not for ``"tci"``.
    max_slices : int or None
        Fixed-rank methods only: each new index set extends at most this many multi-indices
        of the set it is nested in, so the fibers of a core lie in at most that many
        slices of the tensor; a set larger than those multi-indices extend (a rank above
        ``max_slices`` times the mode's size, as on quantics digits) is chosen freely
        instead. Out of core it bounds the pages or chunks a sweep reads:
        crossing a C-ordered ``.npy`` volume in the mode order ``(x, z, y)``
        (:class:`TransposedTensor`) with ``max_slices=4`` read 1.7% of a 1024^3 file at
        rank 32, against 8.2% without. Still exact at the true ranks.
    checkpoint : str, os.PathLike or None
        A file to which every evaluated entry is appended as it is computed (binary, no
        pickle, flushed batch by batch; a record torn by a crash is detected and dropped;
        with an executor, the finished chunks of a batch that failed are kept too, a dask
        worker's only when its whole group finished, and of a function's batch that met a
        NaN or inf, its finite entries, through ``QuanticsTensor`` and
        ``TransposedTensor`` too, which hand them up in their own multi-indices).
        A rerun with the same arguments reads the stored entries back instead of
        evaluating them and returns the same TT as an uninterrupted run. Needs an int
        ``random_state`` (the rerun must make the same choices). A file written for
        another shape or other arguments is refused; only the budgets (``max_evals``,
        ``n_iter_max``, ``max_time``) and the display settings may change, so a stopped
        run continues with a larger budget. The tensor's views, a volume's
        ``fill_nan`` and the coordinates of ``FunctionTensor.on_grid`` are checked too.
        Stored data (arrays, files) is checked by reading a few of the stored entries
        again: those of another volume of the same shape are refused. A function cannot
        be checked (only the tensor's class): after changing the function, or the data
        behind it, use a new checkpoint file, or the stored entries of the old one come
        back.
    max_time : float or None
        Seconds (None or ``inf``: no limit). Once past, no new batch of evaluations
        starts: the run stops (``"max_time"``) with the best sweep it has completed and
        validated. A batch in flight runs to its end unless it runs in chunks (a
        :class:`~tensorly_cross.FunctionTensor` with an ``executor`` or a ``chunk_size``:
        it stops at the deadline, serially once the chunk then running returns, its
        finished chunks kept by a checkpoint; on a ``concurrent.futures`` executor, a
        checkpoint also stores the chunks still running once they finish, and stays
        locked until then). The linear algebra of a sweep runs to its
        end (the clock is checked before reads, not inside a factorisation: a
        least-squares half sweep at rank 64 can add seconds). Nor does it bound the
        read of the cores after the search with ``differentiable=True`` (a
        ``RuntimeWarning`` when that read ends past it).
        With ``checkpoint``, a rerun resumes.
    progress : bool, default False
        A tqdm bar over the sweeps: evaluations, ranks, held-out error and time."""

# Settings that do not change which entries a run reads before it stops: a checkpoint
# written under other values of these is still the same run's.
RESUMABLE_SETTINGS = ("max_evals", "n_iter_max", "max_time", "verbose", "callback",
                      "checkpoint", "progress")


def share_cross_parameters(function):
    """Put :data:`CROSS_PARAMETERS` where the docstring says ``{cross_parameters}``."""
    function.__doc__ = function.__doc__.replace("{cross_parameters}", CROSS_PARAMETERS)
    return function


@dataclass(frozen=True)
class CrossOptions:
    """Validated settings of one cross approximation (see :func:`tt_cross`).

    Build it with :func:`cross_options`, which checks every field and resolves
    ``method="auto"``; the sweeps, the stopping rules and the assembly read it.
    """

    rank: object = None
    tol: float = 1e-6
    method: str = "auto"
    max_rank: int = DEFAULT_MAX_RANK
    max_evals: int | None = None
    n_iter_max: int = 50
    val_size: int | None = None
    verbose: bool = False
    callback: object = None
    pivot_search: str = "column"
    patience: int | None = 2
    oversample: float | None = None
    max_slices: int | None = None
    checkpoint: object = None
    max_time: float | None = None
    progress: bool = False
    # Set by cross_options: "auto" resolved to TCI, which hands over to the least-squares
    # cross where it stalls short of tol (cross/handover.py).
    handover: bool = False
    # False under differentiable=True: the TT returned is rebuilt from the index sets, which
    # cannot repeat a least-squares refinement or rounding, so the search does neither and
    # judges (and reports) the very fits it returns.
    refine: bool = True

    @property
    def one_channel(self):
        """The oversampled ALS-cross, run as the block cross of one channel."""
        return self.method == "als" and self.oversample > 1


def cross_options(shape, stored=False, **settings):
    """A :class:`CrossOptions` from keyword settings, each checked, for a tensor of
    ``shape`` (``stored``: stored data, see :attr:`LazyTensor.stored`); the messages name
    the argument and what is allowed."""
    options = CrossOptions(**settings)
    # Ranks as a backend's integer tensor, as plain ints: JSON (a checkpoint's header) and
    # the max_rank check did not read a tensor's entries.
    options = replace(options, rank=plain_rank(options.rank))
    check_mode_sizes(shape)
    tol = check_float(options.tol, "tol", minimum=0.0)
    if tol >= 1.0:  # a relative error of 1 is the zero tensor's: nothing would be asked
        raise ValueError(f"tol must be in [0, 1) (a relative error), got {tol}.")
    pivot_search = check_choice(options.pivot_search, "pivot_search", PIVOT_SEARCHES)
    method = _check_method(options, shape, stored)
    max_rank = check_int(options.max_rank, "max_rank", minimum=1)
    _check_rank_within(options.rank, max_rank)
    n_iter_max = check_int(options.n_iter_max, "n_iter_max", minimum=1)
    default_val_size = LSQ_VAL_SIZE if method == "lsq" else 1000
    val_size = options.val_size
    if val_size is None:
        val_size = default_val_size
    # Drawn with replacement: more draws than entries tell little more, and val_size=10**9
    # on a 2x2 tensor took minutes and tens of GB. The default is never capped.
    val_size = min(check_int(val_size, "val_size", minimum=0),
                   max(math.prod(shape), default_val_size))
    patience = options.patience
    if patience is not None:
        patience = check_int(patience, "patience", minimum=1)
    max_evals = options.max_evals
    if max_evals is not None:
        max_evals = check_int(max_evals, "max_evals", minimum=1)
        # Draws repeat on a small tensor: they read at most all of its entries.
        if min(val_size, math.prod(shape)) >= max_evals:
            asked = ("" if options.val_size in (None, val_size)
                     else f" (val_size={options.val_size}, capped)")
            small = (f", which read all {math.prod(shape)} entries of this tensor"
                     if math.prod(shape) <= val_size else "")
            raise ValueError(f"max_evals={max_evals} must exceed val_size={val_size}{asked}"
                             f"{small}: held-out entries count as evaluations.")
    if options.callback is not None and not callable(options.callback):
        raise TypeError(f"callback must be callable or None, got "
                        f"{type(options.callback).__name__}.")
    callback = options.callback
    if callback is not None and not isinstance(callback, SweepCallback):
        callback = SweepCallback(callback)
    max_time = options.max_time
    if _is_positive_infinity(max_time):
        max_time = None  # no limit, as None: refused as "must be finite" before
    if max_time is not None:
        max_time = check_float(max_time, "max_time", minimum=0.0, strict=True)
    checkpoint = options.checkpoint
    if checkpoint is not None and not isinstance(checkpoint, str | os.PathLike):
        raise TypeError(f"checkpoint must be a path (str or os.PathLike) or None, got "
                        f"{type(checkpoint).__name__}.")
    if checkpoint is not None and not os.fspath(checkpoint):
        # "" failed only once the search had started, renaming a temporary file to "".
        raise ValueError("checkpoint must name a file (created if missing) or be None, "
                         "got ''.")
    if checkpoint is not None:
        # os's "embedded null byte" was reported as a path that is no regular file.
        check_no_nul(checkpoint, "checkpoint")
    oversample = options.oversample
    if oversample is None:
        oversample = LSQ_OVERSAMPLE if method == "lsq" else 1.0
    return replace(options, tol=tol, method=method, oversample=float(oversample),
                   handover=options.method == "auto" and method == "tci",
                   pivot_search=pivot_search, max_rank=max_rank, n_iter_max=n_iter_max,
                   val_size=val_size, patience=patience, max_evals=max_evals,
                   verbose=check_bool(options.verbose, "verbose"), max_time=max_time,
                   callback=callback,
                   progress=check_bool(options.progress, "progress"))


class SweepCallback:
    """The user's ``callback(tt, info)``, called with copies of the sweep's TT and record.

    The live :class:`CrossInfo` is the run's own: records kept per sweep all became the
    final one, and a callback that edited one (cleared ``ranks``) crashed the run after it.
    The cores are the run's own too: a callback that normalised them in place
    (``core /= abs(core).max()``) left a TT with error 0.107 reported as 2.9e-16.

    Parameters
    ----------
    function : callable
        ``function(tt, info) -> bool or None``.
    """

    def __init__(self, function):
        self.function = function

    def __call__(self, tt, info):
        own = TTTensor([tl.copy(core) for core in tt.factors])
        return self.function(own, copy.deepcopy(info))


def checkpoint_arguments(options, random_state, tensor):
    """The JSON-able arguments a checkpoint is bound to: every setting but the budgets and
    the display ones, the seed, and the kind of tensor; raise unless the seed is an int."""
    if isinstance(random_state, bool) or not isinstance(random_state, numbers.Integral):
        raise ValueError(f"checkpoint={os.fspath(options.checkpoint)!r} needs an int "
                         f"random_state (a rerun must make the same random choices), got "
                         f"{random_state!r}.")
    arguments = {field.name: _as_json(getattr(options, field.name)) for field in fields(options)
                 if field.name not in RESUMABLE_SETTINGS}
    if options.refine:
        del arguments["refine"]  # the default: as checkpoints written before it existed
    # rank=4 and rank=[1, 4, 4, 4, 1] are one run: bind the written-out list.
    if options.rank is not None and options.method != "block":
        arguments["rank"] = expand_rank(options.rank, tensor.shape, warn=False, clip=False)
    # The oversampled ALS cross runs on a one-channel wrapper (a mode more, in the shape):
    # bound to it, the fingerprint saw neither the views nor the kind of tensor behind it
    # (a checkpoint of one quantics digit order, resumed under the other, gave a TT with
    # error 0.64 reported as 0.039).
    from .cross.oversampled import OneChannel

    if isinstance(tensor, OneChannel):
        tensor = tensor.lazy
    views = _views_of(tensor)
    if views:  # absent for a plain tensor: as checkpoints written before it existed
        arguments["views"] = views
    # Entries are stored as read, NaN already filled: under another fill the restored
    # voxels kept the first fill's value, the new ones took the second's (a TT of neither).
    fill = _fill_nan_of(tensor)
    if fill is not None:  # absent without a fill: as checkpoints written before it existed
        arguments["fill_nan"] = fill
    # The entries of FunctionTensor.on_grid are its function at the grids' points: on
    # another domain with as many points, the stored values were read back as the new
    # domain's, mixed with its fresh ones (a TT of neither).
    grids = _grids_of(tensor)
    if grids is not None:  # absent off a grid: as checkpoints written before it existed
        arguments["grids"] = grids
    return dict(arguments, random_state=int(random_state), tensor=type(tensor).__name__)


def _views_of(tensor):
    """The views between ``tensor`` and its data, outermost first: quantics digits (their
    order and the shape they split), transposed axes, squeezed modes. A checkpoint stores
    the view's multi-indices: under another view the same ones name other entries (a
    checkpoint of the grouped digits, read back as interleaved ones, gave a TT with error
    1.34 reported as 6e-9). Looked for below every other view too (the user's own, whose
    ``.lazy`` is the tensor it wraps): found at the top only, a checkpoint of the grouped
    digits under such a view was resumed as interleaved ones (error 1.33 reported as
    1.6e-15)."""
    from .lazy.base import views_of
    from .lazy.quantics import QuanticsTensor
    from .lazy.squeezed import SqueezedTensor
    from .lazy.transpose import TransposedTensor

    views = []
    for view in views_of(tensor):
        if isinstance(view, QuanticsTensor):
            views.append({"quantics": view.layout.order,
                          "shape": [int(n) for n in view.layout.shape]})
        elif isinstance(view, TransposedTensor):
            views.append({"axes": list(view.axes)})
        elif isinstance(view, SqueezedTensor):
            views.append({"kept": list(view.kept)})
    return views


def _fill_nan_of(tensor):
    """The value NaN entries read as, below every view (None: NaN is refused)."""
    from .lazy.base import views_of

    fills = [getattr(view, "fill_nan", None) for view in views_of(tensor)]
    return next((float(fill) for fill in fills if fill is not None), None)


def _grids_of(tensor):
    """SHA-256 (hex) of the coordinates of a :meth:`FunctionTensor.on_grid` below every
    view (None for any other tensor)."""
    from .lazy.base import views_of
    from .lazy.function import FunctionTensor

    for view in views_of(tensor):
        grids = getattr(view, "grids", None) if isinstance(view, FunctionTensor) else None
        if grids is not None:
            digest = hashlib.sha256()
            for grid in grids:  # each grid's length first: [a, b] + [c] is not [a] + [b, c]
                points = np.asarray(grid, dtype="<f8").reshape(-1)
                digest.update(np.array(points.size, dtype="<i8").tobytes() + points.tobytes())
            return digest.hexdigest()
    return None


def _check_rank_within(rank, max_rank):
    """A fixed rank above an explicit ``max_rank`` contradicts it: the run would return
    ranks above the cap asked for, without a word (the default cap stays silent)."""
    if max_rank == DEFAULT_MAX_RANK or rank is None:
        return
    ranks = [rank] if isinstance(rank, numbers.Integral) else rank
    if not isinstance(ranks, list | tuple) or not all(
            isinstance(r, numbers.Integral) for r in ranks):
        return  # the rank's own check says what is wrong with it
    if max(ranks, default=0) > max_rank:
        raise ValueError(f"rank={rank!r} exceeds max_rank={max_rank}: rank fixes the ranks "
                         "(TCI's: caps them), max_rank caps the rank-adaptive methods; "
                         "give one of the two.")


def _as_json(value):
    if isinstance(value, bool | str | type(None)):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    return [_as_json(item) for item in value]  # a rank list


def _auto_method(rank, stored, ndim, max_slices):
    """``"lsq"`` for stored data (where it applies), else the interpolating methods.

    ``oversample`` does not change the choice: the least-squares cross oversamples too, and
    switching stored data to the ALS cross for it made results worse (MNI152 at rank 16:
    held-out error 0.228 with ``oversample=2`` against 0.149 without).
    """
    lsq_applies = ndim >= 2 and max_slices is None
    if stored and lsq_applies:
        return "lsq"
    return "tci" if rank is None else "als"


def _check_method(options, shape, stored):
    """The method that will run (``"auto"`` resolved), after checking what it needs."""
    method = check_choice(options.method, "method", METHODS)
    rank, oversample, max_slices = options.rank, options.oversample, options.max_slices
    oversample = 1.0 if oversample is None else oversample
    if method == "auto":
        method = _auto_method(rank, stored, len(shape), max_slices)
    if method in ("als", "block") and rank is None:
        raise ValueError(f"rank is required for method={method!r} (the fixed TT rank).")
    if method == "block" and len(shape) < 2:
        raise ValueError("method='block' needs a tensor with at least 2 modes (positions, "
                         f"then channels), got shape {tuple(shape)}.")
    if method == "lsq" and len(shape) < 2:
        raise ValueError(f"method='lsq' needs a tensor with at least 2 modes, got shape "
                         f"{tuple(shape)}.")
    if check_float(oversample, "oversample", minimum=1.0) > 1 and method == "tci":
        # The least-squares cross is advised only where it applies (2 modes at least).
        lsq = ", or method='lsq'" if len(shape) >= 2 else ""
        chosen = (" (method='auto' chose it without a rank: pass rank= for the oversampled "
                  f"ALS cross{lsq})" if options.method == "auto" else "")
        raise ValueError(f"oversample={oversample} needs a fixed-rank method ('als' or "
                         f"'block', with rank=) or the least-squares cross ('lsq'), not "
                         f"'tci'{chosen}: TCI chooses its own pivots.")
    pivot_search = options.pivot_search
    if method != "tci" and pivot_search != "column":
        # Only TCI searches pivots: the other methods ignored the setting without a word.
        chosen = " (method='auto' chose it)" if options.method == "auto" else ""
        raise ValueError(f"pivot_search={pivot_search!r} applies to method='tci' only, "
                         f"not {method!r}{chosen}: pass method='tci', or leave "
                         "pivot_search at 'column'.")
    if max_slices is not None:
        check_int(max_slices, "max_slices", minimum=1)
        if method in ("tci", "lsq"):
            why = ("TCI chooses its own pivots" if method == "tci" else
                   "the least-squares cross draws its own oversampled index sets")
            chosen = (" (method='auto' chose it without a rank: pass rank= for the ALS "
                      "cross)" if options.method == "auto" else "")
            raise ValueError(f"max_slices={max_slices} needs method 'als' or 'block', not "
                             f"{method!r}{chosen}: {why}.")
    return method


def _is_positive_infinity(value):
    """Whether ``value`` is a real +inf (a float, NumPy's or Python's)."""
    return (isinstance(value, numbers.Real) and not isinstance(value, bool | np.timedelta64)
            and value == float("inf"))
