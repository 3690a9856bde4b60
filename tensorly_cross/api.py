"""The public entry points: tt_cross, select_indices, cross_interpolate."""

import contextlib
import copy
import time
import warnings

from tensorly.tt_tensor import TTTensor

from ._backend import backend_name, eager_under_torch_compile, thread_backend
from ._narrowing import backend_cores, narrowing_change, warn_if_narrowing_missed
from ._validation import check_bool, check_random_state, outside_stacklevel
from .cross.als import ALSSweeper
from .cross.assemble import assemble_cores
from .cross.block import BlockSweeper, block_random_indices, block_ranks
from .cross.driver import run_sweeps
from .cross.handover import hand_over, should_hand_over
from .cross.indices import CrossIndices, check_cross_indices, check_mode_sizes
from .cross.init import random_indices, single_pivot_indices, start_pivot, through_largest
from .cross.lsq import LSQSweeper, lsq_assemble
from .cross.missed import warn_if_missed
from .cross.oversampled import OneChannel, drop_channel_core, is_one_channel
from .cross.ranks import expand_rank
from .cross.scaling import ShrunkTensor, refuse_non_finite, spread
from .cross.size_one import SizeOneModes
from .cross.slices import sliced_random_indices
from .cross.stopping import CrossInfo, Validation
from .cross.subnormal import warn_if_subnormal
from .cross.tci import TCISweeper
from .errors import EvaluationBudgetExceeded, MaxTimeReached, RankDeficiencyWarning
from .lazy.base import views_of
from .lazy.cache import DtypeWidened, EvaluationCache, budget_named
from .lazy.checkpoint import CheckpointedTensor, CheckpointStore, check_stored_source
from .lazy.counted import CountedTensor
from .lazy.deadline import DeadlineTensor, no_deadline
from .lazy.dispatch import as_lazy
from .lazy.function import FunctionClock, graph_kept_reads
from .options import checkpoint_arguments, cross_options, share_cross_parameters

# Restarts of a PyTorch search after a batch in a wider dtype (_search_in_one_dtype).
MAX_DTYPE_WIDENINGS = 3


@eager_under_torch_compile
@share_cross_parameters
def tt_cross(tensor, rank=None, tol=1e-6, method="auto", max_rank=64, max_evals=None,
             n_iter_max=50, val_size=None, random_state=None, verbose=False, callback=None,
             return_info=False, pivot_search="column", shape=None, differentiable=False,
             patience=2, oversample=None, max_slices=None, checkpoint=None, max_time=None,
             progress=False):
    """Tensor-train approximation of a tensor from a few adaptively chosen entries.

    Parameters
    ----------
    tensor : LazyTensor, tensor, array (not a list) or callable
        Anything :func:`lazy_tensor` accepts (a callable needs ``shape``).
    {cross_parameters}
    differentiable : bool, default False
        Search the indices without gradient tracking, then build the cores from one fresh
        batched read through autograd-visible operations (:func:`cross_interpolate`):
        gradients reach the entries that were read, or the parameters that produced them.
        That read cannot repeat a least-squares refinement or rounding, so the search does
        neither: the TT returned is the one its held-out error and stop reason describe
        (the least-squares cross's, unrounded, may have more parameters than without
        gradient; an interpolating cross that misses ``tol`` is not refined).
        First derivatives only for ``method="lsq"``: its cores' bases are differentiated
        through a surrogate equal to first order, so second derivatives are not exact.
        The fresh read is counted in ``info.n_evals``; ``max_evals`` and ``max_time``
        bound the search only (a ``RuntimeWarning`` when the read goes past them).
        Gradients need the PyTorch backend (``jax.grad`` cannot trace the index search,
        and is refused): a tensor that requires grad under another backend raises a
        ValueError, as does a lazy view of one or a TTTensor whose cores require grad;
        so does, under any backend, ``open_volume(x)`` of one, which reads it detached
        (pass ``x`` itself).
        Without it, a PyTorch tensor that requires grad is read like any other: its
        cores require grad too, but autograd records the whole search (every read and
        factorisation, 10-60x the graph of ``differentiable=True``); train with
        ``differentiable=True``.

    Returns
    -------
    tt : tensorly.tt_tensor.TTTensor
        The approximation, in the active backend: the sweep with the lowest held-out error.
    info : CrossInfo
        Only when ``return_info`` is True: evaluations, errors, ranks, stop reason.

    See Also
    --------
    select_indices, cross_interpolate : The same in two phases.
    tensor_train_cross : TensorLy's signature.

    Examples
    --------
    >>> import numpy as np
    >>> import tensorly_cross as tlc
    >>> grid = np.linspace(0, 1, 64)
    >>> f = tlc.FunctionTensor.on_grid(lambda x: np.sin(x.sum(axis=1)), [grid] * 6)
    >>> tt, info = tlc.tt_cross(f, tol=1e-10, random_state=0, return_info=True)
    >>> tt.rank
    (1, 2, 2, 2, 2, 2, 1)
    """
    start = time.perf_counter()
    # "no" and other truthy objects were taken for True.
    return_info = check_bool(return_info, "return_info")
    differentiable = check_bool(differentiable, "differentiable")
    if differentiable:
        refuse_lost_gradient(tensor, "tt_cross(..., differentiable=True)")
    lazy = as_lazy(tensor, shape, "tensor")
    options = cross_options(lazy.shape, lazy.stored, rank=rank, tol=tol, method=method,
                            max_rank=max_rank, max_evals=max_evals, n_iter_max=n_iter_max,
                            val_size=val_size, verbose=verbose, callback=callback,
                            pivot_search=pivot_search, patience=patience,
                            oversample=oversample, max_slices=max_slices,
                            checkpoint=checkpoint, max_time=max_time, progress=progress,
                            refine=not differentiable)
    with _no_grad(differentiable), _search_backend() as on_host, no_deadline():
        indices, cores, info = _select(lazy, options, random_state, start)
    searched = cores
    if differentiable:
        read_start = time.perf_counter()
        cores = _assemble_counted(lazy, indices, info, options.max_evals)
        _warn_if_read_past_max_time(options.max_time, start, read_start)
    elif on_host:
        cores = backend_cores(cores)
    if on_host and _rank_adaptive(options):
        # The search ran in float64 on the host; JAX without x64 returns single precision.
        warn_if_narrowing_missed(info.val_error, options.tol,
                                 narrowing_change(searched, cores), "tt_cross")
    tt = TTTensor(cores)
    info.total_seconds = time.perf_counter() - start
    return (tt, info) if return_info else tt


@eager_under_torch_compile
@share_cross_parameters
def select_indices(tensor, rank=None, tol=1e-6, method="auto", max_rank=64, max_evals=None,
                   n_iter_max=50, val_size=None, random_state=None, verbose=False,
                   callback=None, return_info=False, pivot_search="column", shape=None,
                   patience=2, oversample=None, max_slices=None, checkpoint=None,
                   max_time=None, progress=False):
    """The index search of :func:`tt_cross` alone: returns a :class:`CrossIndices`.

    Run it without gradient tracking; then :func:`cross_interpolate` builds the cores from
    the indices in one batched evaluation. As with ``tt_cross(..., differentiable=True)``,
    the search neither refines nor rounds what :func:`cross_interpolate` cannot repeat:
    the held-out error and stop reason it reports are those of the TT rebuilt from the
    indices.

    Parameters
    ----------
    tensor : LazyTensor, tensor, array (not a list) or callable
        Anything :func:`lazy_tensor` accepts (a callable needs ``shape``).
    {cross_parameters}

    Returns
    -------
    indices : CrossIndices
        The index sets of the sweep with the lowest held-out error.
    info : CrossInfo
        Only when ``return_info`` is True.

    Examples
    --------
    >>> import numpy as np
    >>> import tensorly_cross as tlc
    >>> tensor = np.add.outer(np.arange(8.0), np.arange(8.0))
    >>> indices = tlc.select_indices(tensor, rank=2, random_state=0)
    >>> indices.rank
    (1, 2, 1)
    >>> tt = tlc.cross_interpolate(tensor, indices)
    >>> bool(np.allclose(tt.to_tensor(), tensor))
    True
    """
    start = time.perf_counter()
    return_info = check_bool(return_info, "return_info")
    lazy = as_lazy(tensor, shape, "tensor")
    options = cross_options(lazy.shape, lazy.stored, rank=rank, tol=tol, method=method,
                            max_rank=max_rank, max_evals=max_evals, n_iter_max=n_iter_max,
                            val_size=val_size, verbose=verbose, callback=callback,
                            pivot_search=pivot_search, patience=patience,
                            oversample=oversample, max_slices=max_slices,
                            checkpoint=checkpoint, max_time=max_time, progress=progress,
                            refine=False)
    with _search_backend(), no_deadline():
        indices, _, info = _select(lazy, options, random_state, start)
    return (indices, info) if return_info else indices


@eager_under_torch_compile
def cross_interpolate(tensor, indices, shape=None):
    """The TT that interpolates ``tensor`` on ``indices``, from ONE batched evaluation.

    Every operation after the evaluation is visible to autograd: on PyTorch, gradients
    flow to the entries that were read (a dense tensor that requires grad, or the
    parameters of the function that produced them).

    Parameters
    ----------
    tensor : LazyTensor, tensor, array (not a list) or callable
        Anything :func:`lazy_tensor` accepts (a callable needs ``shape``).
    indices : CrossIndices or dict
        From :func:`select_indices` (or its ``to_dict()``).
    shape : tuple of int, optional
        Only for a callable ``tensor``.

    Returns
    -------
    tt : tensorly.tt_tensor.TTTensor
        Equal to ``tensor`` on every fiber the index sets name when the other family of
        sets is nested too (exact when ``tensor`` has TT ranks at most those of
        ``indices``). A TCI stopped at its rank cap can leave a right set not nested in
        the next (``right[k]`` not among ``[n_{k+1}] x right[k+1]``): the fibers of core
        ``k`` and of the cores before it are then approximated, not interpolated.

    Raises
    ------
    TypeError
        If ``indices`` is neither a :class:`CrossIndices` nor its dict, or a hand-built
        one's ``shape``, ``block`` or ``ranks`` are not integers, or its sets are not 2-D
        integer arrays that cast safely to int64.
    ValueError
        If the sets are inconsistent, have no mode, hold no multi-index (an empty set),
        or were made for another shape; or ``tensor`` requires grad (or is a lazy view of
        a tensor, or a TTTensor of cores, that does) while the active backend is not
        PyTorch (whose cores would carry no gradient:
        ``tl.set_backend("pytorch")`` first); or ``tensor`` reads one chunk by chunk,
        detached (``open_volume(x)``: pass ``x`` itself), under any backend.

    Examples
    --------
    >>> import numpy as np
    >>> import tensorly_cross as tlc
    >>> f = lambda idx: np.exp(-idx.sum(axis=1) / 10.0)
    >>> indices = tlc.select_indices(f, shape=(8, 8, 8), rank=1, random_state=0)
    >>> tt = tlc.cross_interpolate(f, indices.to_dict(), shape=(8, 8, 8))
    >>> bool(np.allclose(tlc.tt_entries(tt, [[1, 2, 3]]), np.exp(-0.6)))
    True
    """
    refuse_lost_gradient(tensor, "cross_interpolate")
    lazy = as_lazy(tensor, shape, "tensor")
    if isinstance(indices, dict):
        indices = CrossIndices.from_dict(indices)
    if not isinstance(indices, CrossIndices):
        raise TypeError(
            f"indices must be a CrossIndices or its dict, got {type(indices).__name__}."
        )
    check_cross_indices(indices)
    check_mode_sizes(lazy.shape)
    if indices.tensor_shape != tuple(lazy.shape) and not is_one_channel(indices, lazy.shape):
        raise ValueError(f"indices are for shape {indices.tensor_shape}, the tensor has "
                         f"{lazy.shape}.")
    singular = []
    cores = _assemble(lazy, indices, singular)
    _warn_if_singular(singular)
    return TTTensor(cores)


def _warn_if_singular(singular):
    """Warn of bonds whose pivots do not span their fibers on this tensor: the TT misses
    the fibers it was read from (by the tensor's largest entries, without a word)."""
    if singular:
        bond, pivot_rank, fiber_rank = singular[0]
        message = (
            f"cross_interpolate: at bond{'s' if len(singular) > 1 else ''} "
            f"{', '.join(str(found[0]) for found in singular)} the pivots do not span the "
            f"fibers of this tensor (bond {bond}: pivot rank {pivot_rank}, fiber rank "
            f"{fiber_rank}), so the TT does not interpolate the fibers it was read from. "
            "Were the index sets chosen on other data? Choose them on this tensor "
            "(select_indices).")
        warnings.warn(RankDeficiencyWarning(message, pivot_rank), stacklevel=outside_stacklevel())


def _assemble(lazy, indices, singular=None):
    # On data near 1, as the search ran: near the top of its dtype the fits overflowed.
    shrunk = ShrunkTensor(lazy)
    with no_deadline(), graph_kept_reads():
        if indices.ranks is not None:  # a least-squares cross
            cores = lsq_assemble(shrunk, indices)
        elif is_one_channel(indices, lazy.shape):  # an oversampled ALS-cross
            cores = drop_channel_core(assemble_cores(OneChannel(shrunk), indices))
        else:
            cores = assemble_cores(shrunk, indices, singular=singular)
    return spread(cores, -shrunk.exponent) if shrunk.exponent else cores


def _assemble_counted(lazy, indices, info, max_evals):
    """The cores from one fresh, autograd-visible read, counted in ``info.n_evals``,
    ``n_requested`` and ``n_calls`` and timed in its ``wait_seconds`` and
    ``function_seconds`` (the cache never sees it); a warning where that read takes the
    count past ``max_evals``, which bounds the search only: gradients need the entries
    read again."""
    counted = CountedTensor(lazy)
    with FunctionClock(lazy) as clock:  # a FunctionTensor times its own function
        cores = _assemble(counted, indices)
    info.n_evals += counted.n_evaluated
    # Asked for and computed, none from the cache: n_requested - n_cached stays n_evals.
    info.n_requested += counted.n_evaluated
    info.n_calls += counted.n_calls
    # Timed as the search's reads are (it was counted as overhead: "the cross itself").
    info.wait_seconds += counted.wait_seconds
    info.function_seconds += clock.seconds if clock.timed else counted.wait_seconds
    if max_evals is not None and info.n_evals > max_evals:
        warnings.warn(f"max_evals={max_evals} bounds the index search; differentiable=True "
                      f"then read the cores' {counted.n_evaluated} entries again, through "
                      f"autograd, for {info.n_evals} evaluations in all (info.n_evals). "
                      "Lower max_evals by that read to stay within a budget.",
                      RuntimeWarning, stacklevel=outside_stacklevel())
    return cores


def _warn_if_read_past_max_time(max_time, start, read_start):
    """Warn where differentiable=True's fresh read of the cores, begun at ``read_start``,
    ended past ``max_time`` (seconds from ``start``), as :func:`_assemble_counted` warns
    past ``max_evals``: a search that max_time stopped was followed by a read of every
    core's entries (seconds more, in a long run) that nothing said came after the limit."""
    end = time.perf_counter()
    if max_time is None or end - start <= max_time:
        return
    searched_past = read_start - start - max_time
    # Where the search had already overrun (a batch runs to its end), a lower max_time
    # would not have brought the run within the limit by the read's time alone.
    advice = (f"The search itself ended {searched_past:.3g} s past it (a batch of "
              "evaluations runs to its end)." if searched_past > 0 else
              "Lower max_time by that read to end within a limit.")
    warnings.warn(f"max_time={max_time} bounds the index search; differentiable=True "
                  f"then read the cores' entries again, through autograd "
                  f"({end - read_start:.3g} s), ending {end - start - max_time:.3g} s "
                  f"past it. {advice}", RuntimeWarning, stacklevel=outside_stacklevel())


def refuse_lost_gradient(tensor, caller):
    """A PyTorch tensor that requires grad, read under another backend (NumPy, JAX), would
    give cores of that backend: the gradient asked for would be lost without a word; as
    would one read chunk by chunk (``open_volume(x)``), detached on the host."""
    if _read_detached(tensor):
        raise ValueError(f"{caller}: tensor reads a PyTorch tensor that requires grad chunk "
                         "by chunk (open_volume, DaskTensor), which reads it detached on the "
                         "host: its cores would carry no gradient. Pass the tensor itself (or "
                         "lazy_tensor(x)) under the PyTorch backend; to read NaN as a value, "
                         "torch.nan_to_num(x, nan=value).")
    if backend_name() != "pytorch" and _requires_grad(tensor):
        raise ValueError(f"{caller}: tensor requires grad, but the active TensorLy backend "
                         f"is {backend_name()!r}, whose cores carry no PyTorch gradient. "
                         "Call tl.set_backend('pytorch') (or use "
                         "tl.backend_context('pytorch')) first.")


def _requires_grad(tensor):
    """Whether ``tensor`` is, or reads, a PyTorch tensor that requires grad: the array of a
    lazy tensor or of the views over it (``QuanticsTensor(x)``), or a core of a TTTensor
    (also through ``lazy_tensor``); these lost their gradient silently where ``x`` did not."""
    for view in views_of(tensor):
        held = [view, getattr(view, "array", None)]
        for tt in (view, getattr(getattr(view, "function", None), "tt", None)):
            if isinstance(tt, TTTensor):
                held.extend(tt.factors)
        if any(getattr(part, "requires_grad", False) for part in held):
            return True
    return False


def _read_detached(tensor):
    """Whether ``tensor``, or a view of it, reads a PyTorch tensor that requires grad through
    a chunk source (a :class:`DaskTensor`'s, a ``FilledSource`` over it), which detaches it."""
    for view in views_of(tensor):
        source = getattr(view, "source", None)
        while source is not None:
            if getattr(getattr(source, "array", None), "requires_grad", False):
                return True
            source = getattr(source, "base", None)  # a FilledSource's
    return False


def _no_grad(active):
    """``torch.no_grad()`` on the PyTorch backend when ``active``; a no-op otherwise."""
    if active and backend_name() == "pytorch":
        import torch

        return torch.no_grad()
    return contextlib.nullcontext()


def _rank_adaptive(options):
    """Whether ``tol`` is the run's target (TCI's ``rank`` is only a cap), as for
    :func:`warn_if_missed`: a fixed rank is the target of the others."""
    return options.rank is None or options.method == "tci"


@contextlib.contextmanager
def _search_backend():
    """Run the index search with NumPy, on the host, when the active backend is JAX
    (yields True then). JAX compiles every operation for every new shape it meets, and
    the search's shapes change with every pivot: the same TCI took 307 s on JAX against
    0.6 s on NumPy. The search carries no gradient, and its pivots live on the host
    anyway; the cores come back to JAX (or are assembled there, ``differentiable=True``).
    """
    previous = backend_name()
    if previous != "jax":
        yield False
        return
    # Set and restored in this thread only (tl.backend_context would restore the global
    # default too, switching other threads to JAX), as this thread's state was.
    with thread_backend("numpy"):
        yield True


def _select(lazy, options, random_state, start):
    """Run the index search of ``options`` on ``lazy``: (indices, cores, info)."""
    method = options.method
    # A FunctionTensor times its own function (and its executor's chunks), for this run.
    clock = FunctionClock(lazy)
    if options.one_channel:  # the oversampled ALS-cross is the block cross of one channel
        lazy, method = OneChannel(lazy), "block"
    finish = drop_channel_core if options.one_channel else list
    rng = check_random_state(random_state)
    size_one = SizeOneModes.for_method(lazy.shape, method)
    entries, store = _entry_source(lazy, options, random_state, start)
    try:  # from here on the checkpoint is closed (and unlocked) whatever happens
        with clock:
            # The search runs on data near 1 where it is near its dtype's top; the cores
            # returned (and those a callback sees) carry the factor back, spread. Under the
            # size-one view: a refusal names the entry by the tensor's own multi-index.
            source = shrunk = ShrunkTensor(entries)
            if size_one is not None:
                lazy, source, options = (size_one.view(lazy), size_one.view(shrunk),
                                         size_one.options(options))
                finish = size_one.cores
            finish = _spreading(finish, shrunk)
            cache = EvaluationCache(source, max_evals=options.max_evals)
            make_tt = lambda cores: TTTensor(finish(cores))  # noqa: E731
            indices, cores, info = _search_in_one_dtype(cache, lazy, method, options, rng,
                                                        make_tt)
    finally:
        if store is not None:
            store.close()
    info.n_restored = getattr(entries, "n_restored", 0)
    if clock.timed:
        info.function_seconds = clock.seconds
    info.total_seconds = time.perf_counter() - start  # the whole search (both runs of a handover)
    warn_if_subnormal(cache)
    warn_if_missed(options, info, read_fraction=len(cache) / cache.size)
    if size_one is not None:
        indices, info = size_one.indices(indices), size_one.info(info)
    return indices, finish(cores), info


def _search_in_one_dtype(cache, lazy, method, options, rng, make_tt):
    """:func:`_search` through ``cache``; on PyTorch, again from the start after a batch
    came in a wider dtype than those before it.

    A function may return real batches, then a complex one (``np.emath.sqrt`` past a
    branch point), or float32, then float64. NumPy and JAX promote the products of such
    values; PyTorch's refuse them ("expected m1 and m2 to have the same dtype"). The cache
    holds every value in the widest dtype read and, on PyTorch, stops the search with
    :class:`~tensorly_cross.lazy.cache.DtypeWidened` once it has stored such a batch. The
    search then runs again, with the same random draws, reading every value in that dtype
    (from the cache: nothing is evaluated twice): the search of a function that returned
    it throughout. A callback (and ``verbose``, ``progress``) sees the sweeps the first
    run completed, then a RuntimeWarning that announces the restart, then the final run's
    sweeps, numbered from 1; the cache's counters (``n_requested``, ``n_cached``) count its
    reads. An error of the function's or the callback's own is raised as it comes.
    """
    if backend_name() != "pytorch":  # NumPy and JAX promote: one run, no copy of the draws
        return _search(cache, lazy, method, options, rng, make_tt)
    # Bounded: values are float32, float64, complex64 or complex128, so a run widens at
    # most twice (float32 -> float64 or complex64 -> complex128, float32 -> complex64 ->
    # complex128): MAX_DTYPE_WIDENINGS stopped runs leave one to spare.
    for _ in range(MAX_DTYPE_WIDENINGS):
        # The draws of this run, for the next: a Generator given by the caller is drawn
        # from as before by the first run.
        replay = copy.deepcopy(rng)
        info = CrossInfo(method=options.method)
        try:
            with _stopping_on_widening(cache):
                return _search(cache, lazy, method, options, rng, make_tt, info)
        except DtypeWidened as widening:
            _announce_restart(options, info.n_sweeps, widening)
            rng = replay
    return _search(cache, lazy, method, options, rng, make_tt)


def _announce_restart(options, n_completed, widening):
    """Warn that the search runs again from its first sweep, where a callback (or
    ``verbose``, ``progress``) was shown sweeps of the run abandoned (``n_completed`` of
    its sweeps completed, each shown but a final refinement): it saw sweep numbers start
    again at 1 with nothing to tell the two runs apart."""
    if not n_completed or not (options.callback is not None or options.verbose
                           or options.progress):
        return
    dtype = widening.args[0] if widening.args else "a wider dtype"
    warnings.warn(f"the search restarted from its first sweep: a batch came in {dtype}, "
                  "wider than the values before it, and PyTorch does not mix dtypes "
                  "(nothing is evaluated twice). The sweeps the callback, verbose and "
                  "progress were shown so far were the abandoned run's; those from here "
                  "on are the final run's, numbered from 1 again.",
                  RuntimeWarning, stacklevel=outside_stacklevel())


@contextlib.contextmanager
def _stopping_on_widening(cache):
    """``cache`` stops a search at a widening batch, within this block only:
    reads after the search (the cores read with gradient, the missed-entry check) take
    the wider values as they come."""
    cache.stop_on_widening = True
    try:
        yield
    finally:
        cache.stop_on_widening = False


def _search(cache, lazy, method, options, rng, make_tt, info=None):
    """The index search of ``options`` through ``cache``: (indices, cores, info), ``info``
    (a new :class:`CrossInfo` if None) the record it fills, which tells a caller the
    sweeps completed when the search stops part way."""
    info = CrossInfo(method=options.method) if info is None else info
    try:
        validation = Validation(cache, options.val_size, rng,
                                lazy.shape[-1] if method == "block" else None, options.tol)
        indices, half_sweep = _start(method, lazy, cache, options, validation, info, rng)
    except MaxTimeReached as error:  # in the start's reads (its held-out entries)
        raise MaxTimeReached(f"{str(error).rstrip('.')}, before the first sweep "
                             f"completed{_resume_hint(options)}.") from error
    indices, cores = run_sweeps(cache, indices, half_sweep, validation, info, options,
                                make_tt)
    if cores is None:
        cores = _initial_cores_or_raise(cache, indices, options, info)
    if should_hand_over(options, info):
        indices, cores, info = hand_over(cache, lazy.shape, options, rng,
                                         (indices, cores, info), make_tt)
    refuse_non_finite(cores, cache, info.method)
    return indices, cores, info


def _spreading(finish, shrunk):
    """``finish`` followed by undoing ``shrunk``'s factor (a no-op for data in the usual
    range, whose exponent is 0)."""

    def finished(cores):
        cores = finish(cores)
        return spread(cores, -shrunk.exponent) if shrunk.exponent else cores

    return finished


def _entry_source(lazy, options, random_state, start):
    """What the cache reads from: ``lazy``, behind a checkpoint and a deadline if asked;
    and the checkpoint's store (None without one)."""
    source, store = lazy, None
    if options.max_time is not None:
        source = DeadlineTensor(source, start + options.max_time, options.max_time)
    if options.checkpoint is not None:
        # Restored entries come before the deadline: only new evaluations wait on time.
        store = CheckpointStore(options.checkpoint, lazy.shape,
                                checkpoint_arguments(options, random_state, lazy))
        try:
            check_stored_source(lazy, store)
            source = CheckpointedTensor(source, store)
        except BaseException:
            # Ctrl-C while a large checkpoint is indexed, before the caller's try/finally:
            # the store, kept by the traceback, held the lock and refused every rerun.
            store.close()
            raise
    return source, store


def _start(method, lazy, cache, options, validation, info, rng):
    """Starting index sets and the half-sweep of ``method``."""
    rank, max_slices = options.rank, options.max_slices
    if method == "als":
        ranks = expand_rank(rank, lazy.shape)
        if max_slices is not None:  # slices of their own: a pivot's would add one
            return sliced_random_indices(lazy.shape, ranks, max_slices, rng), ALSSweeper(
                rng, max_slices)
        start = through_largest(random_indices(lazy.shape, ranks, rng), validation)
        return start, ALSSweeper(rng, max_slices)
    if method == "block":
        positions, channels = lazy.shape[:-1], lazy.shape[-1]
        shown = tuple(lazy.lazy.shape) if isinstance(lazy, OneChannel) else None
        ranks = block_ranks(rank, positions, channels, shown)
        start = block_random_indices(positions, ranks, channels, rng, options.oversample,
                                     max_slices)
        if shown is not None and max_slices is None:  # the oversampled ALS cross
            start = through_largest(start, validation, drop=1)  # its pivot's channel
        return start, BlockSweeper(rng, options.oversample, max_slices)
    if method == "lsq":
        fixed = None if rank is None else expand_rank(rank, lazy.shape)
        caps = fixed or expand_rank(options.max_rank, lazy.shape, warn=False)
        sweeper = LSQSweeper(lazy.shape, options.tol, fixed, caps, options.oversample, rng,
                             refine=options.refine)
        # Random sets, not through_largest: oversampled, they rarely read zeros only, and
        # through the largest entry they stalled a measured MNI152 quantics run (seed 1).
        return sweeper.start(rng), sweeper
    caps = expand_rank(rank if rank is not None else options.max_rank, lazy.shape, warn=False)
    pivot, max_abs = start_pivot(cache, validation, rng)
    return (single_pivot_indices(lazy.shape, pivot),
            TCISweeper(options.tol, caps, rng, options.pivot_search, max_abs, info,
                       min_cut=100 * validation.eps))



def _resume_hint(options):
    """What a MaxTimeReached before the first sweep adds: where the entries read are."""
    return " (stored in the checkpoint: rerun to resume)" if options.checkpoint else ""


def _initial_cores_or_raise(cache, indices, options, info):
    if info.stop_reason == "max_time":
        raise MaxTimeReached(f"max_time={options.max_time} s ran out before the first sweep "
                             f"completed, after {cache.counters.unique} evaluations"
                             f"{_resume_hint(options)}.")
    if indices.nested is not None:
        try:
            return assemble_cores(cache, indices)
        except EvaluationBudgetExceeded:
            pass
        finally:  # the entries read here count too
            info.update_counts(cache.counters)
    raise ValueError(
        f"{budget_named(cache)} is too small for one sweep at rank {indices.rank} "
        f"(already {cache.counters.unique} evaluations; the first sweep reads up to about "
        f"{min(_sweep_size(indices), cache.size - cache.counters.unique)} more): raise "
        "max_evals."
    )


def _sweep_size(indices):
    """About how many entries one sweep of ``indices`` reads: the fibers of every bond,
    the left sets taken as large as the right sets before them (the first sweep builds
    them), times the channels a block cross reads at every position."""
    right = [block.shape[0] for block in indices.right]
    fibers = sum((right[k - 1] if k else 1) * n * right[k] for k, n in enumerate(indices.shape))
    return (indices.block or 1) * fibers

