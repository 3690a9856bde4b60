"""The public entry points: tt_cross, select_indices, cross_interpolate."""

import contextlib
import time

from tensorly.tt_tensor import TTTensor

from ._backend import backend_name
from ._validation import check_choice, check_float, check_int, check_random_state
from .cross.als import ALSSweeper
from .cross.assemble import assemble_cores
from .cross.block import BlockSweeper, block_random_indices, block_ranks
from .cross.driver import run_sweeps
from .cross.indices import CrossIndices, check_cross_indices
from .cross.init import random_indices, single_pivot_indices
from .cross.oversampled import OneChannel, drop_channel_core, is_one_channel
from .cross.ranks import expand_rank
from .cross.slices import sliced_random_indices
from .cross.stopping import CrossInfo, Validation
from .cross.tci import TCISweeper
from .errors import EvaluationBudgetExceeded
from .lazy.cache import EvaluationCache
from .lazy.dispatch import lazy_tensor

METHODS = ("auto", "als", "tci", "block")
PIVOT_SEARCHES = ("auto", "column", "rook", "full")


def tt_cross(tensor, rank=None, tol=1e-6, method="auto", max_rank=64, max_evals=None,
             n_iter_max=50, val_size=1000, random_state=None, verbose=False, callback=None,
             return_info=False, pivot_search="column", shape=None, differentiable=False,
             patience=2, oversample=1.0, max_slices=None):
    """Tensor-train approximation of a tensor from a few adaptively chosen entries.

    Parameters
    ----------
    tensor : LazyTensor, tensor, array-like or callable
        Anything :func:`lazy_tensor` accepts (a callable needs ``shape``).
    rank : int, list of int or None
        ``None``: rank-adaptive (TCI) up to ``max_rank``. An int or a TensorLy rank list
        ``(1, r_1, ..., 1)``: the fixed rank of the ALS cross (``method="auto"``), or the
        per-bond cap of TCI (``method="tci"``). Ranks above what the unfoldings can hold
        are clipped with a warning.
    tol : float, default 1e-6
        Stop when the relative error on the held-out entries is ``<= tol``; TCI also uses
        it as its pivot tolerance (relative to the largest entry seen).
    method : {"auto", "als", "tci", "block"}
        ``"auto"``: ``"tci"`` without a rank, ``"als"`` with one. ``"block"``: the fixed-rank
        ALS cross of a vector-valued function, the tensor's last mode being its channels:
        index sets cover the other modes and each position is read for all channels at
        once (an encoder then runs once per position); ``rank`` has one entry per bond of
        those modes and the TT's last bond is the number of channels.
    max_rank : int, default 64
        Rank cap of the adaptive method.
    max_evals : int or None
        Budget of distinct evaluations, validation included; never exceeded. The result
        is the last complete sweep within it.
    n_iter_max : int, default 50
        Maximum number of sweeps (one sweep is one pass in one direction).
    patience : int or None, default 2
        Stop (``"stalled"``) after this many sweeps in a row that neither lower the held-out
        error by 1% nor change the ranks: at a fixed rank that is too small, or at TCI's rank
        cap, further sweeps only re-read entries. ``None`` never stops early. Either way the
        state returned is the sweep with the lowest held-out error (from the second sweep).
    oversample : float, default 1.0
        Fixed-rank methods only: right index sets of ``ceil(oversample * r)`` multi-indices
        instead of ``r``, and cores fitted to their fibers in least squares over all of them
        (for ``"als"`` with ``oversample > 1``, the block cross of the tensor with one
        channel). More entries per sweep for more accurate cores where interpolation
        through ``r`` pivots is poor (sharp edges); exact at the true ranks either way.
    max_slices : int or None
        Fixed-rank methods only: each new index set extends at most this many multi-indices
        of the set it is nested in, so the fibers of a core lie in at most that many
        slices of the tensor. Out of core it bounds the pages or chunks a sweep reads:
        crossing a C-ordered ``.npy`` volume in the mode order ``(x, z, y)``
        (:class:`TransposedTensor`) with ``max_slices=4`` read 2.0% of a 1024^3 file at
        rank 32, against 8.2% without. Still exact at the true ranks.
    val_size : int, default 1000
        Number of random held-out entries for the validation error (0 disables it). With
        ``tol > 0`` a fifth of them (at least 200) are read first, and the rest as soon as a
        sweep does not meet ``tol`` by a factor 100 on those: an exact recovery stops
        without them, every other decision uses them all. A narrow pass at the rank cap
        (always, for a given ``rank``) is confirmed on ``val_size`` fresh entries first.
    random_state : None, int, numpy RandomState or Generator
    verbose : bool
    callback : callable or None
        ``callback(tt, info) -> bool`` after each sweep; ``True`` stops.
    return_info : bool
        Also return a :class:`CrossInfo`.
    pivot_search : {"column", "rook", "full", "auto"}
        TCI's pivot search in each two-site block. ``"column"`` (default): partial pivoting,
        the largest residual of one column read, then its row; ``"rook"``: alternate
        column and row maxima until an entry is the largest of both; ``"full"``: read every
        block whole. ``"auto"``: full search where the two modes of a bond have at most 16
        index pairs (quantics digits), column search elsewhere; it recovers
        piecewise-constant quantics data (boxes) exactly where the others stall. Measured on
        ``benchmarks/bench_cross.py`` (medians of 10 seeds), column search needs 0.54-0.78x
        the evaluations of rook search for the same errors. On bonds of
        larger modes the previous sweep's pivots are kept and only new ones searched for.
    shape : tuple of int, optional
        Only for a callable ``tensor``.
    differentiable : bool, default False
        Search the indices without gradient tracking, then build the cores from one fresh
        batched read through autograd-visible operations (:func:`cross_interpolate`):
        gradients reach the entries that were read, or the parameters that produced them.

    Returns
    -------
    tt : tensorly.tt_tensor.TTTensor
    info : CrossInfo
        Only when ``return_info`` is True.

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
    with _no_grad(differentiable):
        indices, cores, info = _select(tensor, rank, tol, method, max_rank, max_evals,
                                       n_iter_max, val_size, random_state, verbose, callback,
                                       pivot_search, shape, patience, oversample,
                                       max_slices)
    if differentiable:
        cores = _assemble(lazy_tensor(tensor, shape=shape), indices)
    tt = TTTensor(cores)
    info.total_seconds = time.perf_counter() - start
    return (tt, info) if return_info else tt


def select_indices(tensor, rank=None, tol=1e-6, method="auto", max_rank=64, max_evals=None,
                   n_iter_max=50, val_size=1000, random_state=None, verbose=False,
                   callback=None, return_info=False, pivot_search="column", shape=None,
                   patience=2, oversample=1.0, max_slices=None):
    """The index search of :func:`tt_cross` alone: returns a :class:`CrossIndices`.

    Parameters are those of :func:`tt_cross`. Run it without gradient tracking; then
    :func:`cross_interpolate` builds the cores from the indices in one batched evaluation.
    """
    indices, _, info = _select(tensor, rank, tol, method, max_rank, max_evals, n_iter_max,
                               val_size, random_state, verbose, callback, pivot_search, shape,
                               patience, oversample, max_slices)
    return (indices, info) if return_info else indices


def cross_interpolate(tensor, indices, shape=None):
    """The TT that interpolates ``tensor`` on ``indices``, from ONE batched evaluation.

    Every operation after the evaluation is visible to autograd: on PyTorch, gradients
    flow to the entries that were read (a dense tensor that requires grad, or the
    parameters of the function that produced them).

    Parameters
    ----------
    tensor : anything :func:`lazy_tensor` accepts
    indices : CrossIndices or dict
        From :func:`select_indices` (or its ``to_dict()``).

    Returns
    -------
    tt : tensorly.tt_tensor.TTTensor
    """
    lazy = lazy_tensor(tensor, shape=shape)
    if isinstance(indices, dict):
        indices = CrossIndices.from_dict(indices)
    if not isinstance(indices, CrossIndices):
        raise TypeError(
            f"indices must be a CrossIndices or its dict, got {type(indices).__name__}."
        )
    check_cross_indices(indices)
    if indices.tensor_shape != tuple(lazy.shape) and not is_one_channel(indices, lazy.shape):
        raise ValueError(f"indices are for shape {indices.tensor_shape}, the tensor has "
                         f"{lazy.shape}.")
    return TTTensor(_assemble(lazy, indices))


def _assemble(lazy, indices):
    if is_one_channel(indices, lazy.shape):  # an oversampled ALS-cross
        return drop_channel_core(assemble_cores(OneChannel(lazy), indices))
    return assemble_cores(lazy, indices)


def _no_grad(active):
    """``torch.no_grad()`` on the PyTorch backend when ``active``; a no-op otherwise."""
    if active and backend_name() == "pytorch":
        import torch

        return torch.no_grad()
    return contextlib.nullcontext()


def _select(tensor, rank, tol, method, max_rank, max_evals, n_iter_max, val_size, random_state,
            verbose, callback, pivot_search, shape, patience, oversample, max_slices):
    lazy = lazy_tensor(tensor, shape=shape)
    tol = check_float(tol, "tol", minimum=0.0)
    method = _check_method(method, rank, lazy, oversample, max_slices)
    pivot_search = check_choice(pivot_search, "pivot_search", PIVOT_SEARCHES)
    max_rank = check_int(max_rank, "max_rank", minimum=1)
    n_iter_max = check_int(n_iter_max, "n_iter_max", minimum=1)
    val_size = check_int(val_size, "val_size", minimum=0)
    if patience is not None:
        patience = check_int(patience, "patience", minimum=1)
    if max_evals is not None:
        max_evals = check_int(max_evals, "max_evals", minimum=1)
        if val_size >= max_evals:
            raise ValueError(f"max_evals={max_evals} must exceed val_size={val_size}: "
                             "held-out entries count as evaluations.")
    info = CrossInfo(method=method)
    one_channel = method == "als" and oversample > 1
    if one_channel:  # the oversampled ALS-cross is the block cross of one channel
        lazy, method = OneChannel(lazy), "block"
    finish = drop_channel_core if one_channel else list
    rng = check_random_state(random_state)
    cache = EvaluationCache(lazy, max_evals=max_evals)
    validation = Validation(cache, val_size, rng, lazy.shape[-1] if method == "block" else None,
                            tol)
    indices, half_sweep = _start(method, lazy, rank, max_rank, tol, pivot_search, oversample,
                                 max_slices, validation, info, rng)
    indices, cores = run_sweeps(cache, indices, half_sweep, validation, info, tol, n_iter_max,
                                callback, verbose, lambda cores: TTTensor(finish(cores)),
                                patience)
    if cores is None:
        cores = _initial_cores_or_raise(cache, indices, max_evals, info)
    return indices, finish(cores), info


def _check_method(method, rank, lazy, oversample, max_slices):
    """The method that will run (``"auto"`` resolved), after checking what it needs."""
    method = check_choice(method, "method", METHODS)
    if method == "auto":
        method = "tci" if rank is None else "als"
    if method in ("als", "block") and rank is None:
        raise ValueError(f"rank is required for method={method!r} (the fixed TT rank).")
    if method == "block" and lazy.ndim < 2:
        raise ValueError("method='block' needs a tensor with at least 2 modes (positions, "
                         f"then channels), got shape {lazy.shape}.")
    if check_float(oversample, "oversample", minimum=1.0) > 1 and method == "tci":
        raise ValueError(f"oversample={oversample} needs a fixed-rank method ('als' or "
                         "'block'); TCI chooses its own pivots.")
    if max_slices is not None:
        check_int(max_slices, "max_slices", minimum=1)
        if method == "tci":
            raise ValueError(f"max_slices={max_slices} needs a fixed-rank method ('als' or "
                             "'block'); TCI chooses its own pivots.")
    return method


def _start(method, lazy, rank, max_rank, tol, pivot_search, oversample, max_slices, validation,
           info, rng):
    """Starting index sets and the half-sweep of ``method``."""
    if method == "als":
        ranks = expand_rank(rank, lazy.shape)
        start = (random_indices(lazy.shape, ranks, rng) if max_slices is None
                 else sliced_random_indices(lazy.shape, ranks, max_slices, rng))
        return start, ALSSweeper(rng, max_slices)
    if method == "block":
        positions, channels = lazy.shape[:-1], lazy.shape[-1]
        ranks = block_ranks(rank, positions, channels)
        return (block_random_indices(positions, ranks, channels, rng, oversample, max_slices),
                BlockSweeper(rng, oversample, max_slices))
    caps = expand_rank(rank if rank is not None else max_rank, lazy.shape, warn=False)
    pivot = validation.largest if validation.largest is not None else [0] * lazy.ndim
    return (single_pivot_indices(lazy.shape, pivot),
            TCISweeper(tol, caps, rng, pivot_search, validation.max_abs, info,
                       min_cut=100 * validation.eps))


def _initial_cores_or_raise(cache, indices, max_evals, info):
    if indices.nested is not None:
        try:
            return assemble_cores(cache, indices)
        except EvaluationBudgetExceeded:
            pass
        finally:  # the entries read here count too
            info.update_counts(cache.counters)
    raise ValueError(
        f"max_evals={max_evals} is too small for one sweep at rank {indices.rank} "
        f"(already {cache.counters.unique} evaluations)."
    )

