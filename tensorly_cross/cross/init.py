"""Starting index sets: random (fixed-rank ALS) or one pivot (rank-adaptive TCI)."""

import math

import numpy as np

from .._backend import to_host
from ..lazy.base import unravel_c_order
from .indices import CrossIndices

# Random entries probed for the TCI's first pivot when there are no held-out entries.
START_PROBE = 200
# Random starting sets go through the largest held-out entry when at least this share of
# the held-out values is 0 (a lesion on a black background, a sparse array): see
# through_largest. Not below: MNI152 is 78% background (89% in the zero-padded quantics
# layout), and its crosses, measured with random starts, stay as they were.
SPARSE_SHARE = 0.95


def random_distinct_multi_indices(sizes, count, rng, max_rounds=100):
    """``count`` distinct random multi-indices over modes of ``sizes`` ((count, len) int64)."""
    if not sizes:
        return np.zeros((1, 0), dtype=np.int64)
    total = math.prod(sizes)
    if total < 2**62:
        flat = rng.choice(total, size=count, replace=False) if total < 2**31 else None
        if flat is not None:
            return unravel_c_order(flat, sizes)
    # Huge index spaces: collisions are rare, so draw, deduplicate, repeat (bounded).
    found = np.zeros((0, len(sizes)), dtype=np.int64)
    for _ in range(max_rounds):
        draw = np.stack([rng.integers(size, size=2 * count) for size in sizes], axis=1)
        found = np.unique(np.concatenate([found, draw]), axis=0)
        if found.shape[0] >= count:
            return found[rng.permutation(found.shape[0])[:count]]
    raise RuntimeError(f"could not draw {count} distinct multi-indices from sizes {sizes}.")


def random_indices(shape, rank, rng):
    """Random index sets of the given TT rank (left sets are rebuilt by the first sweep)."""
    d = len(shape)
    left = [random_distinct_multi_indices(shape[:k], rank[k], rng) for k in range(d)]
    right = [random_distinct_multi_indices(shape[k + 1 :], rank[k + 1], rng) for k in range(d)]
    return CrossIndices(tuple(shape), left, right, nested=None)


def single_pivot_indices(shape, pivot):
    """Rank-1 index sets through one multi-index (nested both ways)."""
    pivot = np.asarray(pivot, dtype=np.int64).reshape(1, -1)
    d = len(shape)
    left = [pivot[:, :k] for k in range(d)]
    right = [pivot[:, k + 1 :] for k in range(d)]
    return CrossIndices(tuple(shape), left, right, nested="left")


def through_pivot(indices, pivot):
    """Make every starting right set of ``indices`` hold ``pivot``'s suffix (in place).

    A fixed-rank start from random sets alone reads only zeros on a tensor that is zero
    outside a small region (a lesion, a sparse array): its first sweep then finds nothing
    and the TT stays zero whatever the rank. Through the largest held-out entry, the first
    sweep's fibers cross the nonzero region, and the sets it builds keep the pivot's prefix
    from bond to bond.
    """
    pivot = np.asarray(pivot, dtype=np.int64)
    for k, block in enumerate(indices.right):
        suffix = pivot[k + 1 :]
        if block.shape[0] and not np.any(np.all(block == suffix, axis=1)):
            block[0] = suffix
    return indices


def through_largest(indices, validation, drop=0):
    """On a mostly zero tensor, random starting sets made to pass through the largest
    held-out entry (less its last ``drop`` modes: a block cross's sets are over
    positions), which is then no longer held out (the first sweep reads it).

    Unchanged unless ``SPARSE_SHARE`` of the held-out entries are 0: random sets do not
    read zeros only elsewhere, and moving them would change every seed's result on data
    where they work (exactly low-rank functions too, where some random sets are degenerate
    and others not).
    """
    validation.read_all_if_zero()
    if not validation.max_abs or validation.zero_share < SPARSE_SHARE:
        return indices
    pivot = validation.largest
    validation.exclude(pivot)
    return through_pivot(indices, pivot[: len(pivot) - drop])


def clip_ranks(shape, rank):
    """Ranks no unfolding can exceed: ``r_{k+1} <= r_k n_k`` and ``r_k <= n_k r_{k+1}``."""
    rank = list(rank)
    for k in range(len(shape)):
        rank[k + 1] = min(rank[k + 1], rank[k] * shape[k])
    for k in reversed(range(len(shape))):
        rank[k] = min(rank[k], shape[k] * rank[k + 1])
    return rank


def start_pivot(cache, validation, rng):
    """The TCI's first pivot and the largest modulus seen so far.

    The largest held-out entry (then no longer held out); without held-out entries
    (``val_size=0``) the largest of ``START_PROBE`` random ones (fewer under a small
    ``max_evals``): a fixed corner is zero in any image with a background, and a TCI
    started on a zero pivot finds nothing to interpolate.
    """
    if validation.largest is not None:
        pivot, max_abs = validation.largest, validation.max_abs
        validation.exclude(pivot)  # held-out entries never build the TT
        return pivot, max_abs
    # At most a tenth of a budget: the sweeps need the rest.
    size = START_PROBE if cache.max_evals is None else max(1, min(START_PROBE,
                                                                   cache.max_evals // 10))
    probe = np.stack([rng.integers(n, size=size) for n in cache.shape], axis=1)
    values = np.abs(to_host(cache.evaluate(probe.astype(np.int64))))
    return probe[int(np.argmax(values))], float(values.max())
