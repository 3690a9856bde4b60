"""EvaluationCache: every entry is computed once; counters say what it cost."""

import threading
import time
from dataclasses import dataclass

import numpy as np
import tensorly as tl

from .._backend import backend_name, take_rows, to_host
from .._validation import check_int
from ..errors import EvaluationBudgetExceeded
from .base import LazyTensor, check_indices, unravel_c_order, views_of
from .chunk_result import evaluating_tensor, take_finished
from .function import reading_with_graph
from .keys import KeyScheme, verify_matches

# Sorts last in every key level (a real key equal to it sorts before it: still found).
_KEY_SENTINEL = np.iinfo(np.int64).max


@dataclass
class CacheCounters:
    """What a cache has seen (each parameter is an attribute of the same name).

    Parameters
    ----------
    requested : int
        Entries asked for, duplicates included.
    unique : int
        Distinct entries computed by the wrapped tensor (its evaluations).
    cache_hits : int
        Entries served without computing them (``requested - unique``).
    calls : int
        Batched calls made to the wrapped tensor.
    function_seconds : float
        Wall time spent inside those calls.

    Examples
    --------
    >>> import numpy as np
    >>> from tensorly_cross import EvaluationCache, lazy_tensor
    >>> cache = EvaluationCache(lazy_tensor(np.ones((4, 4))))
    >>> _ = cache.evaluate([[0, 0], [1, 1], [0, 0]])
    >>> _ = cache.evaluate([[1, 1], [2, 2]])
    >>> c = cache.counters
    >>> c.requested, c.unique, c.cache_hits, c.calls
    (5, 3, 2, 2)
    """

    requested: int = 0
    unique: int = 0
    cache_hits: int = 0
    calls: int = 0
    function_seconds: float = 0.0


class EvaluationCache(LazyTensor):
    """A lazy tensor that remembers every entry it has computed.

    Lookups are vectorised: multi-indices are packed into int64 keys (flat positions while
    the tensor has fewer than 2**63 entries, checked 64-bit hashes beyond: ``keys.py``),
    kept sorted, and found with one ``searchsorted`` per level and batch
    (``SortedKeys``); a batch of strictly increasing keys is neither sorted nor
    deduplicated again. Each batch makes at
    most one call to the wrapped tensor, for the entries not yet known. Callers that know
    their packed keys (:attr:`key_strides`) read by key with :meth:`evaluate_keys`.

    Thread-safe: batches from several threads are served one at a time (a lock around each
    lookup, evaluation and insertion), so the keys, values and counters stay consistent.

    Reusable across runs and backends: passed as the tensor of several crosses, it serves
    each the entries an earlier one computed (its counters and ``max_evals`` count over
    all of them), and values cached under one TensorLy backend come back in the one
    active when they are read.

    Under PyTorch, the cores' read with gradient (:func:`~tensorly_cross.cross_interpolate`
    with grad enabled, ``tt_cross(..., differentiable=True)``) computes one entry of each
    batch afresh; where it carries autograd's graph, the whole batch is computed afresh
    and none of it stored: the values cached by the index search carry no gradient, and
    ones stored with it would outlive their step. Those entries count as evaluations
    (``counters.unique``) but are not bounded by ``max_evals``. Values without a graph (a
    NumPy function) are read from the cache, for one fresh entry per batch.

    Parameters
    ----------
    lazy : LazyTensor
        The tensor whose entries are computed (once each).
    max_entries : int, default 2**24
        When storing a batch would exceed this, the cache is emptied first. Memory stays
        bounded by the larger of ``max_entries`` and one batch (a batch is stored whole,
        even one larger than ``max_entries``), times two: the buffers double as they grow.
    max_evals : int or None
        A batch whose new entries would push ``counters.unique`` above this raises
        :class:`EvaluationBudgetExceeded` before anything is computed.

    Examples
    --------
    >>> import numpy as np
    >>> from tensorly_cross import EvaluationCache, FunctionTensor
    >>> calls = []
    >>> f = FunctionTensor(lambda idx: calls.append(len(idx)) or idx.sum(axis=1) * 1.0, (8, 8))
    >>> cache = EvaluationCache(f)
    >>> cache.evaluate([[1, 2], [3, 4]])
    array([3., 7.])
    >>> cache.evaluate([[3, 4], [5, 6]])
    array([ 7., 11.])
    >>> calls, len(cache)
    ([2, 1], 3)
    """

    def __init__(self, lazy, max_entries=2**24, max_evals=None):
        if not isinstance(lazy, LazyTensor):
            raise TypeError(f"lazy must be a LazyTensor (lazy_tensor(obj) makes one from an "
                            f"array or a callable), got {type(lazy).__name__}.")
        super().__init__(lazy.shape)
        self.lazy = lazy
        self.max_entries = check_int(max_entries, "max_entries", minimum=1)
        self.max_evals = None if max_evals is None else check_int(max_evals, "max_evals",
                                                                   minimum=0)
        self.counters = CacheCounters()
        self._scheme = KeyScheme(self.shape)
        self._keys = None  # SortedKeys: packed key -> slot in self._values
        self._values = None  # _ValueStore
        self._checks = None  # hashed keys: the second hash of each slot (_HostStore)
        # How often a batch came in a wider dtype than the values stored before it (a real
        # batch, then a complex one). A cross on PyTorch, whose products do not promote,
        # sets stop_on_widening: such a batch is stored, then DtypeWidened stops the
        # search, which starts again reading the cache in the wider dtype (api._select).
        self.dtype_widenings = 0
        self.stop_on_widening = False
        # Lookup, evaluation and insertion of a batch form one step: threads sharing the
        # cache interleaved them and stored values under the wrong keys.
        self._lock = threading.RLock()

    def __len__(self):
        return 0 if self._keys is None else len(self._keys)

    def __getstate__(self):
        # Without the lock, which pickles nowhere: pickle and copy.deepcopy failed with
        # "cannot pickle '_thread.RLock' object" (a cache sent to a process pool's worker
        # with the function that reads it, or a snapshot). A copy gets a lock of its own.
        state = dict(self.__dict__)
        del state["_lock"]
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.RLock()

    def __copy__(self):
        # A shallow copy shares the values and counters, so it shares their lock too: with
        # one of its own (what __setstate__ gives), batches on the cache and on its copy
        # from two threads ran, and were stored, at the same time.
        clone = type(self).__new__(type(self))
        clone.__dict__.update(self.__dict__)
        return clone

    def evaluate(self, indices):
        """Entries at a batch of multi-indices; only the ones not cached are computed.

        Parameters
        ----------
        indices : array-like of int, shape (m, ndim)
            The multi-indices, one per row, repeats allowed.

        Returns
        -------
        values : tensor of shape (m,)
            In the active TensorLy backend.

        Raises
        ------
        ValueError
            If ``indices`` has the wrong shape or an index is out of range.
        EvaluationBudgetExceeded
            If the entries not yet cached would take the count above ``max_evals``.
        """
        return self.evaluate_checked(check_indices(indices, self.shape))

    def evaluate_checked(self, indices):
        """:meth:`evaluate` for multi-indices that are known to be valid.

        Parameters
        ----------
        indices : ndarray of int64, shape (m, ndim)
            Multi-indices in range.

        Returns
        -------
        values : tensor of shape (m,)
            In the active TensorLy backend.
        """
        if indices.shape[0] == 0:
            return tl.tensor(np.zeros(0))
        return self.evaluate_keys(self.pack(indices), indices.__getitem__,
                                  self._scheme.checks(indices))

    @property
    def key_strides(self):
        """int64 weights with ``pack(indices) == indices @ key_strides`` (wrapping).

        A caller that knows its keys this way reads by key with :meth:`evaluate_keys` and
        skips building multi-indices.
        """
        return self._scheme.weights

    @property
    def check_strides(self):
        """Weights of the second hash that :meth:`evaluate_keys` wants as ``checks``.

        None when keys are exact (fewer than 2**63 entries).
        """
        return self._scheme.check_weights

    def evaluate_keys(self, keys, multi_indices_at, checks=None):
        """Entries given by their packed keys (as :meth:`pack` makes them, in range).

        Parameters
        ----------
        keys : ndarray of int64
            Packed keys of the batch.
        multi_indices_at : callable
            ``multi_indices_at(positions)`` returns the (len(positions), d) multi-indices
            of those positions of the batch: only the entries not cached are built and
            computed.
        checks : ndarray of int64, optional
            ``multi_indices @ check_strides`` when keys are hashed (built from the
            multi-indices if not given); a key found with another check raises
            :class:`~tensorly_cross.errors.KeyCollisionError`.

        Returns
        -------
        values : tensor of shape (len(keys),)
            In the active TensorLy backend.
        """
        with self._lock:
            return self._evaluate_keys(keys, multi_indices_at, checks)

    def _evaluate_keys(self, keys, multi_indices_at, checks):
        n_requested = keys.shape[0]
        if n_requested and reading_with_graph():
            fresh = self._read_with_graph(n_requested, multi_indices_at)
            if fresh is not None:
                return fresh
        if self._scheme.exact:
            return self._evaluate_in_order(keys, multi_indices_at, checks)
        if checks is None:
            checks = self._scheme.checks(multi_indices_at(np.arange(n_requested)))
        if n_requested < 2 or bool((keys[1:] > keys[:-1]).all()):
            return self._evaluate_in_order(keys, multi_indices_at, checks)
        # Hashed keys (2**63 entries or more) come in no order: sorted once here, the
        # lookup searches the cache's levels in order (cache-friendly), and the misses are
        # sorted and distinct already for their insertion, where they were sorted apart.
        # The function receives the same entries in the same order (by key) as unsorted.
        order = keys.argsort(kind="stable")
        values = self._evaluate_in_order(keys[order],
                                         lambda positions: multi_indices_at(order[positions]),
                                         checks[order])
        unsort = np.empty_like(order)
        unsort[order] = np.arange(n_requested)
        return take_rows(values, unsort)

    def _evaluate_in_order(self, keys, multi_indices_at, checks):
        """:meth:`_evaluate_keys` of a batch whose keys are exact or come with their
        checks."""
        n_requested = keys.shape[0]
        slots = self._lookup(keys)
        if checks is not None and self._checks is not None:
            hits = (slots >= 0).nonzero()[0]
            verify_matches(self._checks.take(slots[hits]), checks[hits], multi_indices_at, hits)
        # Methods, not np.flatnonzero and np.searchsorted: their Python layers ran on
        # every batch (hundreds in a cheap function's cross).
        missing = (slots < 0).nonzero()[0]
        if not missing.size:
            self.counters.requested += n_requested
            self.counters.cache_hits += n_requested
            return self._values.take(slots)
        new_keys, first, inverse = _distinct(keys[missing])
        new_checks = None
        if checks is not None:
            new_checks = checks[missing[first]]
            if inverse is not None:  # repeats of a key within the batch: one entry each?
                verify_matches(new_checks[inverse], checks[missing], multi_indices_at, missing)
        n_new = new_keys.shape[0]
        self._check_budget(n_new)  # a refused batch is not counted as requested
        new_values = self._compute(multi_indices_at(missing[first]))
        self.counters.requested += n_requested
        self.counters.cache_hits += n_requested - n_new
        if len(self) + n_new > self.max_entries:
            return self._restart_with(slots, missing, inverse, new_keys, new_values, new_checks)
        new_slots = self._store(new_keys, new_values, new_checks)
        if inverse is None and missing.size == n_requested:
            return new_values  # all new and distinct, in the batch's order
        slots[missing] = new_slots if inverse is None else new_slots[inverse]
        return self._values.take(slots)

    def _read_with_graph(self, n_requested, multi_indices_at):
        """The batch computed afresh, none of it stored, where the tensor's values carry
        autograd's graph: the cores' read with gradient (``cross_interpolate``,
        ``differentiable=True``). The values the index search cached carry no graph (it
        ran without gradient), and values stored with one would outlive their step's graph
        and parameters. The batch's first entry, computed first, decides; it is part of the
        batch, not computed again (``CrossInfo.n_evals`` counts each entry once). None
        where it carries no graph (a NumPy function under the PyTorch backend, grad enabled
        as torch runs by default): the cached values are as good, for that one entry.
        Counted as evaluations; ``max_evals`` bounds the cached reads only, as
        ``tt_cross``'s bounds its search."""
        first = self._compute(multi_indices_at(np.arange(1)))
        self.counters.requested += 1
        if not getattr(first, "requires_grad", False):
            return None
        if n_requested == 1:
            return first
        rest = self._compute(multi_indices_at(np.arange(1, n_requested)))
        self.counters.requested += n_requested - 1
        return tl.concatenate([first, rest])

    def _restart_with(self, slots, missing, inverse, new_keys, new_values, new_checks):
        """Empty the full cache, keep the new batch; the hits are taken out first."""
        hits = np.flatnonzero(slots >= 0)
        # No hits when nothing was cached yet (a first batch above max_entries): no store.
        hit_values = self._values.take(slots[hits]) if hits.size else new_values[:0]
        # Emptied, the store keeps the dtype of the values read so far: stored alone in its
        # own, a complex batch after real ones was no widening (a PyTorch search read it
        # among real values), and a real one after complex ones narrowed the later hits.
        self._values = None if self._values is None else self._values.emptied()
        self._keys = self._checks = None
        self._store(new_keys, new_values, new_checks)
        order = np.empty(slots.shape[0], dtype=np.int64)
        order[hits] = np.arange(hits.size)
        order[missing] = hits.size + (np.arange(missing.size) if inverse is None else inverse)
        return take_rows(tl.concatenate([hit_values, new_values]), order)

    def pack(self, indices):
        """Packed keys of multi-indices: the cache's lookup keys.

        Parameters
        ----------
        indices : ndarray of int64, shape (m, d)
            Multi-indices in range.

        Returns
        -------
        keys : ndarray of int64, shape (m,)
            Flat positions, or hashes beyond 2**63 entries (``keys.py``).
        """
        return self._scheme.keys(indices)

    def _lookup(self, keys):
        """Value slots of packed keys (any order, repeats allowed); -1 where unknown."""
        if self._keys is None:
            return np.full(keys.shape[0], -1, dtype=np.int64)
        return self._keys.lookup(keys)

    def max_abs(self):
        """The largest modulus among the cached values (0.0 when there are none).

        Returns
        -------
        float
            ``max |value|`` over every entry cached so far.
        """
        with self._lock:
            if self._values is None or not self._values.size:
                return 0.0
            values = self._values.filled()
            if not tl.is_tensor(values):  # stored under another backend
                return float(np.max(np.abs(to_host(values))))
            return float(to_host(tl.max(tl.abs(values))))

    def largest(self, count):
        """The ``count`` cached entries of largest modulus, where keys are flat positions.

        Parameters
        ----------
        count : int
            How many entries at most (fewer where fewer are cached).

        Returns
        -------
        (multi_indices, values) or None
            ``(m, d)`` int64 multi-indices and their values on the host (``m <= count``,
            no order), or None when nothing is cached or the keys are hashes (tensors of
            2**63 entries and more), which cannot be turned back into multi-indices.
        """
        with self._lock:
            if self._values is None or not self._values.size or not self._scheme.exact:
                return None
            values = to_host(self._values.filled())
            # Slot -> key, level by level: O(n), where keys() sorts every key.
            key_of_slot = np.empty(values.shape[0], dtype=np.int64)
            for level_keys, level_slots in self._keys.levels:
                key_of_slot[level_slots[:-1]] = level_keys[:-1]
            moduli = np.abs(values)
            count = min(count, values.shape[0])
            slots = np.argpartition(moduli, values.shape[0] - count)[values.shape[0] - count:]
            # Not np.unravel_index: one array per mode, at most 32 modes under NumPy 1.
            return unravel_c_order(key_of_slot[slots], self.shape), values[slots]

    def value_dtype(self):
        """The NumPy dtype of the cached values (None before any is cached).

        Returns
        -------
        numpy.dtype or None
            The dtype the values have on the host (for a backend tensor, that of its
            NumPy copy).
        """
        with self._lock:
            if self._values is None or not self._values.size:
                return None
            return to_host(self._values.buffer[:1]).dtype

    def keys(self):
        """Every cached key, sorted.

        Returns
        -------
        keys : ndarray of int64
            Packed as by :meth:`pack`.
        """
        return np.zeros(0, dtype=np.int64) if self._keys is None else self._keys.all_keys()

    def _check_budget(self, n_new):
        if self.max_evals is not None and self.counters.unique + n_new > self.max_evals:
            raise EvaluationBudgetExceeded(
                f"max_evals={self.max_evals}: {self.counters.unique} entries evaluated, "
                f"the next batch needs {n_new} more.",
                needed=self.counters.unique + n_new, max_evals=self.max_evals,
            )

    def _compute(self, indices):
        start = time.perf_counter()
        # The misses are rows of an already checked batch: skip the second check.
        evaluate = getattr(self.lazy, "evaluate_checked", self.lazy.evaluate)
        try:
            values = evaluate(indices)
        except BaseException as error:
            self._count_finished(take_finished(error), start)
            raise
        self.counters.function_seconds += time.perf_counter() - start
        self.counters.calls += 1
        self.counters.unique += indices.shape[0]
        return values

    def _count_finished(self, finished, start):
        """Count the finished chunks of a batch that stopped part way (``max_time``, an
        error or Ctrl-C in a later chunk), and the time it took: the function computed
        them (a checkpoint keeps them), though the cache never stores them. A run that
        ``max_time`` stopped in a batch reported 8 entries fewer than its function
        computed. Only chunks of the batches asked of this cache's tensor count."""
        if finished is None or finished.source is not evaluating_tensor(self.lazy):
            return
        self.counters.function_seconds += time.perf_counter() - start
        self.counters.calls += 1
        self.counters.unique += finished.indices.shape[0]

    def _store(self, new_keys, new_values, new_checks=None):
        """Insert sorted ``new_keys``; returns the slots of their values."""
        if self._keys is None:
            self._keys = SortedKeys()
            if self._values is None:  # not an emptied store (_restart_with)
                self._values = _ValueStore()
            self._checks = _HostStore() if new_checks is not None else None
        if new_checks is not None:
            self._checks.append(new_checks)
        slots, widened = self._values.append(new_values)
        self.dtype_widenings += widened
        self._keys.insert(new_keys, slots)
        if widened and self.stop_on_widening:
            raise DtypeWidened(str(self._values.buffer.dtype))
        return slots


class DtypeWidened(BaseException):  # noqa: N818 (a signal, as StopIteration, not an error)
    """Raised by a cache with ``stop_on_widening`` once it has stored a batch in a wider
    dtype than those before it: the search that read the batch stops, to run again from
    its start (``api._search_in_one_dtype``). A BaseException: no ``except Exception``
    on its way up may take it for a failure."""


def budget_named(cache):
    """How a message names the budget that refused a read through a run's ``cache``.

    Of the run's ``max_evals`` and that of an :class:`EvaluationCache` its tensor is read
    through (the caller's own, passed as the tensor: its count runs over every run that
    shares it), the one with the fewest evaluations left: the one that ran out. Messages
    said "max_evals=None is too small" where the run had none, and named the run's
    (larger, unspent) budget where it had one.

    Parameters
    ----------
    cache : EvaluationCache
        The cache a cross reads through (another lazy tensor names its ``max_evals``
        attribute, None without one).

    Returns
    -------
    str
        ``"max_evals=<n>"``, or that of the inner cache with where it is and its count.
    """
    own = getattr(cache, "max_evals", None)
    inner = [view for view in views_of(getattr(cache, "lazy", None))
             if isinstance(view, EvaluationCache) and view.max_evals is not None]
    if inner:
        tightest = min(inner, key=_evaluations_left)
        if own is None or (isinstance(cache, EvaluationCache)
                           and _evaluations_left(tightest) < _evaluations_left(cache)):
            return (f"max_evals={tightest.max_evals} of the EvaluationCache the tensor is "
                    f"read through ({tightest.counters.unique} entries evaluated in all, "
                    "earlier runs on it included)")
    return f"max_evals={own}"


def _evaluations_left(cache):
    """How many more entries ``cache`` may evaluate under its ``max_evals`` (not None)."""
    return cache.max_evals - cache.counters.unique


class SortedKeys:
    """Sorted keys -> slots, in two levels so that inserting stays cheap as the cache grows.

    New keys are merged into a small sorted level; when it outgrows an eighth of the main
    level the two are merged. Each key is moved O(log N) times in all, instead of the whole
    array being shifted at every insertion. Every level ends with a sentinel key above any
    real key, so that a search never runs off its end.
    """

    def __init__(self):
        self.levels = []  # [(keys, slots)], each sorted by key, sentinel last
        self._size = 0  # keys held (counted: the cache asks on every batch)

    def __len__(self):
        return self._size

    def lookup(self, keys):
        slots = np.empty(keys.shape[0], dtype=np.int64)
        slots.fill(-1)
        if not self.levels:
            return slots
        main_keys, main_slots = self.levels[0]
        position = main_keys.searchsorted(keys)
        hit = main_keys[position] == keys
        slots[hit] = main_slots[position[hit]]
        if len(self.levels) == 2:
            # A key is in one level only: the small level is searched for the main's
            # misses alone (in a cross's run, about a third of the keys), not for all.
            # Misses by slot, not by ~hit: a key equal to the sentinel (a hash may be)
            # "hits" the main level's sentinel, of slot -1, and may be in the small level.
            small_keys, small_slots = self.levels[1]
            missed = (slots < 0).nonzero()[0]
            missed_keys = keys[missed]
            position = small_keys.searchsorted(missed_keys)
            found = small_keys[position] == missed_keys
            slots[missed[found]] = small_slots[position[found]]
        return slots

    def insert(self, keys, slots):
        """Add sorted, distinct ``keys`` (none present yet) with their ``slots``."""
        self._size += keys.shape[0]
        if len(self.levels) < 2:
            self.levels.append(_with_sentinel(keys, slots))
        else:
            self.levels[1] = _merge_sorted(self.levels[1], keys, slots)
        main, small = self.levels[0], self.levels[-1]
        if len(self.levels) == 2 and small[0].shape[0] > max(4096, main[0].shape[0] // 8):
            self.levels = [_merge_sorted(main, small[0][:-1], small[1][:-1])]

    def all_keys(self):
        return np.sort(np.concatenate([level_keys[:-1] for level_keys, _ in self.levels]))


def _with_sentinel(keys, slots):
    return np.concatenate([keys, [_KEY_SENTINEL]]), np.concatenate([slots, [-1]])


def _merge_sorted(level, keys, slots):
    """A level with sorted ``keys`` merged in (one pass: no sort, no np.insert)."""
    level_keys, level_slots = level
    size = level_keys.shape[0] + keys.shape[0]
    # The sentinel sorts last, so every new key lands before it.
    destination = level_keys.searchsorted(keys) + np.arange(keys.shape[0])
    is_new = np.zeros(size, dtype=bool)
    is_new[destination] = True
    merged_keys = np.empty(size, dtype=level_keys.dtype)
    merged_slots = np.empty(size, dtype=np.int64)
    merged_keys[destination], merged_slots[destination] = keys, slots
    is_old = ~is_new
    merged_keys[is_old], merged_slots[is_old] = level_keys, level_slots
    return merged_keys, merged_slots


class _ValueStore:
    """Cached values in one backend tensor that grows by doubling (in place where it can)."""

    def __init__(self):
        self.buffer = None
        self.size = 0

    def emptied(self):
        """A store that holds nothing yet, in this one's dtype: values stored in it widen
        it (and say so) as they widen this one."""
        store = _ValueStore()
        if self.buffer is not None:
            # A copy, not a view (the full buffer goes), on the buffer's own backend: a cache
            # outlives tl.set_backend, and the active backend's tl.copy of a NumPy buffer
            # under PyTorch raised AttributeError (no 'clone'); append moves it, as any.
            empty = self.buffer[:0]
            copy = getattr(empty, "clone", None) or getattr(empty, "copy", None)
            store.buffer = empty if copy is None else copy()
        return store

    def filled(self):
        """The filled part of the buffer, on whatever backend it was stored under."""
        return None if self.buffer is None else self.buffer[: self.size]

    def _move_to_active_backend(self, values):
        """Before new values are stored with them: the buffer moved to the active backend
        if it holds another's tensors. A cache outlives ``tl.set_backend``: filled under
        NumPy, then read under PyTorch (or back), its next misses failed in ``torch.cat``
        ("expected Tensor ... got numpy.ndarray"). Moved by value: cached entries carry
        no gradient to keep (the reads that need one are never stored)."""
        # The same type as the new values (the usual case, per batch): nothing to ask.
        if (self.buffer is not None and type(self.buffer) is not type(values)
                and not tl.is_tensor(self.buffer)):
            self.buffer = tl.tensor(to_host(self.filled()))

    def append(self, values):
        """Store ``values``: their slots, and whether the buffer was widened for them."""
        count = int(values.shape[0])
        slots = np.arange(self.size, self.size + count, dtype=np.int64)
        self._move_to_active_backend(values)
        widened = (self.buffer is not None and values.dtype != self.buffer.dtype
                   and self._promote(values))
        if self.buffer is None:
            # A copy: the values may be the caller's array (returned to it as they are) or
            # a view of a buffer the function writes its next batch into.
            self.buffer = tl.copy(values)
        elif backend_name() in ("numpy", "pytorch") and not (_requires_grad(values)
                                                             or _requires_grad(self.buffer)):
            # In place only without autograd: a buffer that requires grad grew into a leaf
            # (tl.zeros with its context), which refused the write of the next batch.
            if self.size + count > self.buffer.shape[0]:
                capacity = max(2 * self.buffer.shape[0], self.size + count)
                grown = tl.zeros((capacity,), **tl.context(self.buffer))
                grown[: self.size] = self.buffer[: self.size]
                self.buffer = grown
            self.buffer[self.size : self.size + count] = values
        else:
            self.buffer = tl.concatenate([self.buffer[: self.size], values])
        self.size += count
        return slots, widened

    def _promote(self, values):
        """Widen the buffer to hold ``values`` too: a function may return a real batch, then
        a complex one (``np.emath.sqrt``), or float32, then float64; writing the later
        values into the first batch's dtype dropped their imaginary parts (a wrong real TT
        that met its tolerance) or rounded them. Returns whether the dtype changed."""
        # Concatenation promotes as each backend does (NumPy, PyTorch, JAX alike).
        widened = tl.concatenate([self.buffer[:0], values[:0]])
        if widened.dtype == self.buffer.dtype:
            return False
        self.buffer = tl.concatenate([self.buffer, widened])
        return True

    def take(self, slots):
        if not tl.is_tensor(self.buffer):
            # Stored under another backend (a hit after tl.set_backend): the rows alone
            # come back in the active one; the buffer stays as it is (under JAX without
            # 64-bit floats, moving it whole would round every cached entry).
            return tl.tensor(to_host(self.filled())[slots])
        return take_rows(self.buffer, slots)


class _HostStore:
    """An int64 host array that grows by doubling, read by slot."""

    def __init__(self):
        self.buffer = np.zeros(0, dtype=np.int64)
        self.size = 0

    def append(self, values):
        end = self.size + values.shape[0]
        if end > self.buffer.shape[0]:
            grown = np.zeros(max(2 * self.buffer.shape[0], end), dtype=np.int64)
            grown[: self.size] = self.buffer[: self.size]
            self.buffer = grown
        self.buffer[self.size : end] = values
        self.size = end

    def take(self, slots):
        return self.buffer[slots]


def _requires_grad(values):
    return bool(getattr(values, "requires_grad", False))


def _distinct(keys):
    """Sorted distinct keys, the positions of their first occurrences, and for each key
    the position of its distinct key (None when the keys were already strictly increasing,
    as a read of one bond's rows or columns in order is: no sort needed)."""
    if keys.shape[0] < 2 or bool((keys[1:] > keys[:-1]).all()):
        return keys, np.arange(keys.shape[0]), None
    # One stable sort (np.unique with both returns sorts twice, 4x slower on a bond's read):
    # the first of each run of equal keys is the key's first occurrence.
    order = keys.argsort(kind="stable")
    ordered = keys[order]
    starts = np.empty(keys.shape[0], dtype=bool)
    starts[0] = True
    np.not_equal(ordered[1:], ordered[:-1], out=starts[1:])
    inverse = np.empty(keys.shape[0], dtype=np.int64)
    inverse[order] = starts.cumsum() - 1
    return ordered[starts], order[starts], inverse
