"""EvaluationCache: every entry is computed once; counters say what it cost."""

import time
from dataclasses import dataclass

import numpy as np
import tensorly as tl

from .._backend import backend_name, take_rows
from ..errors import EvaluationBudgetExceeded
from .base import LazyTensor, check_indices
from .keys import KeyScheme, verify_matches

# Sorts last in every key level (a real key equal to it sorts before it: still found).
_KEY_SENTINEL = np.iinfo(np.int64).max


@dataclass
class CacheCounters:
    """What a cache has seen.

    Attributes
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
    (:class:`SortedKeys`); a batch of strictly increasing keys is neither sorted nor
    deduplicated again. Each batch makes at
    most one call to the wrapped tensor, for the entries not yet known. Callers that know
    their packed keys (:attr:`key_strides`) read by key with :meth:`evaluate_keys`.

    Parameters
    ----------
    lazy : LazyTensor
    max_entries : int, default 2**24
        When storing a batch would exceed this, the cache is emptied first (memory stays
        bounded at ``max_entries`` keys and values).
    max_evals : int or None
        A batch whose new entries would push :attr:`counters.unique` above this raises
        :class:`EvaluationBudgetExceeded` before anything is computed.
    """

    def __init__(self, lazy, max_entries=2**24, max_evals=None):
        super().__init__(lazy.shape)
        self.lazy = lazy
        self.max_entries = int(max_entries)
        self.max_evals = max_evals
        self.counters = CacheCounters()
        self._scheme = KeyScheme(self.shape)
        self._keys = None  # SortedKeys: packed key -> slot in self._values
        self._values = None  # _ValueStore
        self._checks = None  # hashed keys: the second hash of each slot (_HostStore)

    def __len__(self):
        return 0 if self._keys is None else len(self._keys)

    def evaluate(self, indices):
        return self.evaluate_checked(check_indices(indices, self.shape))

    def evaluate_checked(self, indices):
        if indices.shape[0] == 0:
            return tl.tensor(np.zeros(0))
        return self.evaluate_keys(self.pack(indices), indices.__getitem__,
                                  self._scheme.checks(indices))

    @property
    def key_strides(self):
        """int64 weights with ``pack(indices) == indices @ key_strides`` (wrapping): a caller
        that knows its keys can skip building multi-indices."""
        return self._scheme.weights

    @property
    def check_strides(self):
        """Weights of the second hash that :meth:`evaluate_keys` wants as ``checks``, or
        None when keys are exact (fewer than 2**63 entries)."""
        return self._scheme.check_weights

    def evaluate_keys(self, keys, multi_indices_at, checks=None):
        """Entries given by their packed keys (as :meth:`pack` makes them, in range).

        ``multi_indices_at(positions)`` returns the (len(positions), d) multi-indices of
        those positions of the batch: only the entries not cached are built and computed.
        ``checks``: ``multi_indices @ check_strides`` when keys are hashed (built from the
        multi-indices if not given); a key found with another check raises
        :class:`~tensorly_cross.errors.KeyCollisionError`.
        """
        n_requested = keys.shape[0]
        if checks is None and not self._scheme.exact:
            checks = self._scheme.checks(multi_indices_at(np.arange(n_requested)))
        slots = self._lookup(keys)
        if checks is not None and self._checks is not None:
            hits = np.flatnonzero(slots >= 0)
            verify_matches(self._checks.take(slots[hits]), checks[hits], multi_indices_at, hits)
        missing = np.flatnonzero(slots < 0)
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

    def _restart_with(self, slots, missing, inverse, new_keys, new_values, new_checks):
        """Empty the full cache, keep the new batch; the hits are taken out first."""
        hits = np.flatnonzero(slots >= 0)
        hit_values = self._values.take(slots[hits])
        self._keys = self._values = self._checks = None
        self._store(new_keys, new_values, new_checks)
        order = np.empty(slots.shape[0], dtype=np.int64)
        order[hits] = np.arange(hits.size)
        order[missing] = hits.size + (np.arange(missing.size) if inverse is None else inverse)
        return take_rows(tl.concatenate([hit_values, new_values]), order)

    def pack(self, indices):
        """int64 keys of (m, d) multi-indices (flat positions, or hashes: ``keys.py``)."""
        return self._scheme.keys(indices)

    def _lookup(self, keys):
        """Value slots of packed keys (any order, repeats allowed); -1 where unknown."""
        if self._keys is None:
            return np.full(keys.shape[0], -1, dtype=np.int64)
        return self._keys.lookup(keys)

    def keys(self):
        """Every cached key, sorted (packed as by :meth:`pack`)."""
        return np.zeros(0, dtype=np.int64) if self._keys is None else self._keys.all_keys()

    def _check_budget(self, n_new):
        if self.max_evals is not None and self.counters.unique + n_new > self.max_evals:
            raise EvaluationBudgetExceeded(
                f"max_evals={self.max_evals}: {self.counters.unique} entries evaluated, "
                f"the next batch needs {n_new} more.",
                needed=self.counters.unique + n_new,
            )

    def _compute(self, indices):
        start = time.perf_counter()
        # The misses are rows of an already checked batch: skip the second check.
        evaluate = getattr(self.lazy, "evaluate_checked", self.lazy.evaluate)
        values = evaluate(indices)
        self.counters.function_seconds += time.perf_counter() - start
        self.counters.calls += 1
        self.counters.unique += indices.shape[0]
        return values

    def _store(self, new_keys, new_values, new_checks=None):
        """Insert sorted ``new_keys``; returns the slots of their values."""
        if self._keys is None:
            self._keys, self._values = SortedKeys(), _ValueStore()
            self._checks = _HostStore() if new_checks is not None else None
        if new_checks is not None:
            self._checks.append(new_checks)
        slots = self._values.append(new_values)
        self._keys.insert(new_keys, slots)
        return slots


class SortedKeys:
    """Sorted keys -> slots, in two levels so that inserting stays cheap as the cache grows.

    New keys are merged into a small sorted level; when it outgrows an eighth of the main
    level the two are merged. Each key is moved O(log N) times in all, instead of the whole
    array being shifted at every insertion. Every level ends with a sentinel key above any
    real key, so that a search never runs off its end.
    """

    def __init__(self):
        self.levels = []  # [(keys, slots)], each sorted by key, sentinel last

    def __len__(self):
        return sum(keys.shape[0] - 1 for keys, _ in self.levels)

    def lookup(self, keys):
        slots = np.full(keys.shape[0], -1, dtype=np.int64)
        for level_keys, level_slots in self.levels:
            position = np.searchsorted(level_keys, keys)
            hit = level_keys[position] == keys
            slots[hit] = level_slots[position[hit]]
        return slots

    def insert(self, keys, slots):
        """Add sorted, distinct ``keys`` (none present yet) with their ``slots``."""
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
    destination = np.searchsorted(level_keys, keys) + np.arange(keys.shape[0])
    is_new = np.zeros(size, dtype=bool)
    is_new[destination] = True
    merged_keys = np.empty(size, dtype=level_keys.dtype)
    merged_slots = np.empty(size, dtype=np.int64)
    merged_keys[destination], merged_slots[destination] = keys, slots
    merged_keys[~is_new], merged_slots[~is_new] = level_keys, level_slots
    return merged_keys, merged_slots


class _ValueStore:
    """Cached values in one backend tensor that grows by doubling (in place where it can)."""

    def __init__(self):
        self.buffer = None
        self.size = 0

    def append(self, values):
        count = int(values.shape[0])
        slots = np.arange(self.size, self.size + count, dtype=np.int64)
        if self.buffer is None:
            self.buffer = values
        elif backend_name() in ("numpy", "pytorch") and not _requires_grad(values):
            if self.size + count > self.buffer.shape[0]:
                capacity = max(2 * self.buffer.shape[0], self.size + count)
                grown = tl.zeros((capacity,), **tl.context(self.buffer))
                grown[: self.size] = self.buffer[: self.size]
                self.buffer = grown
            self.buffer[self.size : self.size + count] = values
        else:
            self.buffer = tl.concatenate([self.buffer[: self.size], values])
        self.size += count
        return slots

    def take(self, slots):
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
    new_keys, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    return new_keys, first, inverse.reshape(-1)
