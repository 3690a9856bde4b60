"""Nested index sets of a cross approximation, and the multi-indices they generate.

Conventions (d modes, ranks ``r_0 = 1, r_1, ..., r_d = 1``, core ``k`` of shape
``(r_k, n_k, r_{k+1})``):

- ``left[k]``: an ``(r_k, k)`` int64 array of multi-indices over modes ``0..k-1``;
- ``right[k]``: an ``(r_{k+1}, d-k-1)`` array over modes ``k+1..d-1``;
- the pivot block of bond ``k`` is ``A[left[k+1], right[k]]``, of size ``r_{k+1}``.

Sets are *left-nested* when every row of ``left[k+1]`` extends a row of ``left[k]`` by one
index, *right-nested* symmetrically. A left-to-right sweep leaves them left-nested.
"""

import functools
import json
import math
import numbers
from dataclasses import dataclass, field

import numpy as np

from ..lazy.keys import KeyScheme


def cartesian_join(first, second):
    """All concatenations ``[a, b]`` of a row of ``first`` and a row of ``second``.

    Row order is C order (``first`` slowest), so values reshape to ``(len(first), len(second))``.
    """
    n_first, n_second = first.shape[0], second.shape[0]
    width = first.shape[1]
    joined = np.empty((n_first, n_second, width + second.shape[1]),
                      dtype=np.result_type(first, second))
    # Written by broadcasting: np.repeat, np.tile and np.concatenate made three copies.
    joined[:, :, :width] = first[:, None, :]
    joined[:, :, width:] = second
    return joined.reshape(n_first * n_second, joined.shape[2])


# A cross reads whole fibers: every index of a mode, times the ranks on both sides. Above
# this mode size one fiber's multi-indices alone take gigabytes; quantics digits are the way.
MAX_MODE_SIZE = 2**26


def check_mode_sizes(shape):
    """Raise, before anything is allocated, if a mode of ``shape`` is too large for a cross."""
    for size in shape:
        if size > MAX_MODE_SIZE:
            raise ValueError(
                f"the tensor's shape has a mode of size {size}, too large for a cross, which "
                f"reads whole fibers of every mode (at most {MAX_MODE_SIZE} = 2**26 indices "
                "per mode); split it into quantics digits with QuanticsTensor (a prime size "
                "stays one digit: pad the tensor to a size with small factors)."
            )


def mode_column(size):
    """The multi-indices ``0..size-1`` of one mode, as a (size, 1) int64 array."""
    check_mode_sizes((size,))
    return np.arange(size, dtype=np.int64).reshape(-1, 1)


def fiber_indices(left, mode_size, right):
    """Multi-indices of the fibers ``A[left, :, right]``, ordered as ``(r_left, n, r_right)``."""
    return cartesian_join(cartesian_join(left, mode_column(mode_size)), right)


@dataclass
class CrossIndices:
    """The index sets that define a cross interpolation; serialisable without pickle.

    :func:`select_indices` returns them and :func:`cross_interpolate` reads the tensor on
    them; each parameter is an attribute of the same name.

    Parameters
    ----------
    shape : tuple of int
        The modes the sets cover.
    left, right : list of ndarray of int64
        ``left[k]``: the ``(r_k, k)`` multi-indices over modes ``0..k-1``; ``right[k]``:
        the ``(r_{k+1}, d-k-1)`` multi-indices over modes ``k+1..d-1``.
    nested : {"left", "right", None}
        Which family of sets is nested (decides how cores are assembled).
    meta : dict
        Free-form facts kept with the sets in memory (not serialised, and not compared by
        ``==``, which compares the sets as :meth:`to_dict` writes them).
    block : int or None
        For a block (vector-valued) cross: the size ``F`` of the tensor's last mode, which
        the sets do not cover (it is read whole at every position); ``shape`` then holds
        the other modes only.
    ranks : tuple of int or None
        For a least-squares cross (``cross/lsq.py``): the TT ranks ``(1, r_1, ..., 1)``,
        which its oversampled sets do not give by their sizes.

    Examples
    --------
    >>> import numpy as np
    >>> from tensorly_cross import CrossIndices, select_indices
    >>> tensor = np.add.outer(np.arange(6.0), np.arange(5.0))
    >>> indices = select_indices(tensor, rank=2, random_state=0)
    >>> indices.rank, indices.tensor_shape
    ((1, 2, 1), (6, 5))
    >>> CrossIndices.from_json(indices.to_json()).rank
    (1, 2, 1)
    """

    shape: tuple
    left: list
    right: list
    nested: str | None = "left"
    meta: dict = field(default_factory=dict)
    block: int | None = None
    ranks: tuple | None = None

    @property
    def ndim(self):
        """Number of modes the sets cover."""
        return len(self.shape)

    @property
    def tensor_shape(self):
        """The shape of the tensor the sets index (with the block mode, if any)."""
        return tuple(self.shape) + ((self.block,) if self.block else ())

    @property
    def rank(self):
        """TT ranks ``(1, r_1, ..., r_{d-1}, 1)``."""
        if self.ranks is not None:
            return tuple(self.ranks)
        # A block cross's right sets may be smaller than its bonds (they probe fibers whose
        # columns are multiplied by the channels); its left sets are the bonds.
        sets = self.left[1:] if self.block else self.right[:-1]
        return (1,) + tuple(int(block.shape[0]) for block in sets) + (1,)

    def copy(self):
        """A deep copy (the index arrays and ``meta`` copied).

        Returns
        -------
        indices : CrossIndices
            Equal to this one, sharing no arrays with it.
        """
        return CrossIndices(
            tuple(self.shape),
            [block.copy() for block in self.left],
            [block.copy() for block in self.right],
            self.nested,
            dict(self.meta),
            self.block,
            self.ranks,
        )

    def __eq__(self, other):
        # The same sets, as to_dict writes them (so a JSON round trip compares equal; meta,
        # not serialised, is not compared). The dataclass's own == compared lists of
        # arrays, and raised NumPy's "truth value of an array ... is ambiguous".
        if not isinstance(other, CrossIndices):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    def to_dict(self):
        """The sets as a JSON-serialisable dict.

        Returns
        -------
        data : dict
            ``shape``, ``left``, ``right`` (lists of ints), ``nested``, ``block`` and
            ``ranks`` (the least-squares cross's bond ranks, else None);
            :meth:`from_dict` reads it back.
        """
        # int(): NumPy integers (a hand-built shape, np.array([4, 5, 6])) are not JSON
        # serialisable, and to_json failed on them.
        return {
            "shape": [int(size) for size in self.shape],
            "left": [block.tolist() for block in self.left],
            "right": [block.tolist() for block in self.right],
            "nested": self.nested,
            "block": None if self.block is None else int(self.block),
            "ranks": None if self.ranks is None else [int(rank) for rank in self.ranks],
        }

    def to_json(self):
        """The sets as a JSON string.

        Returns
        -------
        text : str
            ``json.dumps(self.to_dict())``; :meth:`from_json` reads it back.
        """
        return json.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, data):
        """Rebuild and validate index sets from :meth:`to_dict` output.

        Parameters
        ----------
        data : dict
            As :meth:`to_dict` returns it.

        Returns
        -------
        indices : CrossIndices
            Checked for consistent sizes, ranges and nesting.

        Raises
        ------
        TypeError
            If ``data`` is not a dict.
        ValueError
            If the sets are inconsistent, or one holds no multi-index.
        """
        if not isinstance(data, dict):
            raise TypeError(f"index sets must be a dict (as to_dict() writes them), got "
                            f"{type(data).__name__}.")
        missing = [key for key in ("shape", "left", "right") if key not in data]
        if missing:
            raise ValueError(f"index sets need the keys 'shape', 'left' and 'right' (as "
                             f"to_dict() writes them); missing: {missing}.")
        for key in ("shape", "left", "right"):
            if not isinstance(data[key], list | tuple | np.ndarray):
                raise ValueError(f"index sets' {key!r} must be a list (as to_dict() writes "
                                 f"it), got {type(data[key]).__name__}.")
        shape = tuple(_as_size(size) for size in data["shape"])
        if not shape:  # before the sets, whose modes it counts (d - k - 1 < 0)
            raise ValueError("index sets' 'shape' must have at least one mode, got [].")
        d = len(shape)
        left = [_as_block(block, k, f"left[{k}]") for k, block in enumerate(data["left"])]
        right = [_as_block(block, d - k - 1, f"right[{k}]")
                 for k, block in enumerate(data["right"])]
        block, ranks = data.get("block"), data.get("ranks")
        # Checked as the shape is: int() read block=2.7 as 2 and ranks [1, 2.5, 1] as 2s.
        if ranks is not None and not isinstance(ranks, list | tuple | np.ndarray):
            raise ValueError(f"index sets' 'ranks' must be a list or None, got "
                             f"{type(ranks).__name__}.")
        indices = cls(shape, left, right, data.get("nested"),
                      block=None if block is None else _as_integer(block, "block"),
                      ranks=None if ranks is None else tuple(_as_integer(r, "ranks")
                                                             for r in ranks))
        check_cross_indices(indices)
        return indices

    @classmethod
    def from_json(cls, text):
        """Rebuild and validate index sets from :meth:`to_json` output.

        Parameters
        ----------
        text : str
            As :meth:`to_json` returns it.

        Returns
        -------
        indices : CrossIndices
            Checked as by :meth:`from_dict`.
        """
        return cls.from_dict(json.loads(text))


def _as_block(rows, n_modes, name):
    """A list of multi-indices as an (m, n_modes) int64 array (m >= 1 even when n_modes = 0).

    Indices must be integers (2.0 is one): an int64 cast read 2.7 as 2, and None or 2**70
    failed inside NumPy.
    """
    wanted = f"{name} must be a list of multi-indices of {n_modes} integers each"
    try:
        values = np.asarray(rows)
        count = len(rows)
    except (TypeError, ValueError):  # None, or ragged lists
        raise ValueError(f"{wanted}, got {rows!r:.80}.") from None
    if _holds_bool(rows):  # NumPy reads [[True, 6]] as ints: nothing is coerced silently
        raise ValueError(f"{wanted} (int64), got a bool value (True or False) in a "
                         "multi-index.")
    if values.size and not _integral(values):
        raise ValueError(f"{wanted} (int64), got {values.dtype} values such as "
                         f"{values.reshape(-1)[:1].tolist()[0]!r:.40}.")
    if values.size != count * n_modes:
        raise ValueError(f"{wanted}, got an array of shape {values.shape}.")
    return values.astype(np.int64).reshape(count, n_modes)


def _holds_bool(rows):
    """Whether a list of multi-indices (lists or tuples of numbers) holds a bool."""
    return isinstance(rows, list | tuple) and any(
        isinstance(value, bool | np.bool_) for row in rows if isinstance(row, list | tuple)
        for value in row)


def _integral(values):
    """Whether an array holds integers that fit int64 (integral floats included)."""
    if values.dtype.kind in "iu":
        return values.dtype.kind == "i" or bool((values <= np.iinfo(np.int64).max).all())
    if values.dtype.kind != "f":
        return False  # object (None, ints beyond int64), strings, bools
    return bool((np.isfinite(values) & (values == np.trunc(values))
                 & (np.abs(values) < 2.0**63)).all())


def check_cross_indices(indices):
    """Raise ValueError unless the sets have consistent sizes, ranges and nesting."""
    _check_sizes(indices)
    shape, d = indices.shape, len(indices.shape)
    if len(indices.left) != d or len(indices.right) != d:
        raise ValueError(f"indices need {d} left and {d} right sets for shape {shape}.")
    _check_blocks(indices)
    _check_not_empty(indices)
    for k in range(d):
        if indices.left[k].shape[1] != k or indices.right[k].shape[1] != d - k - 1:
            raise ValueError(f"index set {k} has the wrong number of modes for shape {shape}.")
        if k + 1 < d and not indices.block and indices.ranks is None and (
                indices.left[k + 1].shape[0] != indices.right[k].shape[0]):
            raise ValueError(
                f"bond {k}: left[{k + 1}] has {indices.left[k + 1].shape[0]} rows but "
                f"right[{k}] has {indices.right[k].shape[0]}; they must match (the rank)."
            )
    if indices.left[0].shape[0] != 1 or indices.right[d - 1].shape[0] != 1:
        raise ValueError("left[0] and right[-1] must each hold one (empty) multi-index.")
    for k in range(1, d):
        _check_range(indices.left[k], shape[:k], f"left[{k}]")
        _check_range(indices.right[k - 1], shape[k:], f"right[{k - 1}]")
    if indices.block is not None and indices.block < 1:
        raise ValueError(f"block must be None or a positive size, got {indices.block}.")
    if indices.ranks is not None and len(indices.ranks) != d + 1:
        raise ValueError(f"ranks must have {d + 1} entries for shape {shape}, got "
                         f"{len(indices.ranks)}.")
    if indices.ranks is not None and (min(indices.ranks) < 1 or indices.ranks[0] != 1
                                      or indices.ranks[-1] != 1):
        raise ValueError(f"ranks must be positive with ranks[0] = ranks[-1] = 1, got "
                         f"{tuple(indices.ranks)}.")
    if indices.ranks is not None:
        _check_ranks_fit(indices)
    _check_distinct(indices)
    if indices.nested not in ("left", "right", None):
        raise ValueError(f"nested must be 'left', 'right' or None, got {indices.nested!r}.")


def _check_ranks_fit(indices):
    """A least-squares cross's bond ``k`` cannot have a rank above the multi-indices of
    ``left[k]`` or ``right[k - 1]``: a dict that said so rebuilt a TT of smaller ranks than
    ``indices.rank`` claimed."""
    for k in range(1, indices.ndim):
        room = min(indices.left[k].shape[0], indices.right[k - 1].shape[0])
        if indices.ranks[k] > room:
            raise ValueError(f"ranks[{k}]={indices.ranks[k]} exceeds the {room} multi-indices "
                             f"of left[{k}] or right[{k - 1}], which bound that bond's rank.")


def _check_not_empty(indices):
    """A set of no multi-index is a bond of rank 0: the interpolating crosses rebuilt the
    zero TT from it without a word, and a block cross failed in NumPy's ``cond``."""
    for name, sets in (("left", indices.left), ("right", indices.right)):
        for k, block in enumerate(sets):
            if block.shape[0] == 0:
                raise ValueError(f"indices: {name}[{k}] holds no multi-index; every index "
                                 "set needs at least one (a bond's rank is at least 1).")


def _check_distinct(indices):
    """A multi-index twice in one set makes the pivot block singular: a TT through
    ``r`` rows that are only ``r - 1`` (35% error, and no warning, before this check)."""
    for name, sets in (("left", indices.left), ("right", indices.right)):
        for k, block in enumerate(sets):
            if block.shape[0] > 1 and block.shape[1] and (
                    np.unique(block, axis=0).shape[0] < block.shape[0]):
                raise ValueError(f"{name}[{k}] holds a multi-index twice; the rows of an "
                                 "index set must be distinct.")


def _as_size(size):
    """A mode size from a dict: an integer >= 1 (7.9 is not silently 7)."""
    if (isinstance(size, bool) or not isinstance(size, numbers.Real)
            or not math.isfinite(size) or int(size) != size or size < 1):
        raise ValueError(f"shape entries must be integers >= 1, got {size!r}.")
    return int(size)


def _as_integer(value, name):
    """``block`` or a rank from a dict as an int (8.0 is 8); its range is checked with the
    sets (:func:`check_cross_indices`)."""
    if (isinstance(value, bool) or not isinstance(value, numbers.Real)
            or not math.isfinite(value) or int(value) != value):
        raise ValueError(f"{name}: expected an integer, got {value!r}.")
    return int(value)


def _check_sizes(indices):
    """``shape``, ``block`` and ``ranks`` of a hand-built :class:`CrossIndices` as integers
    (``from_dict`` converts its own): a shape of floats failed in NumPy's reshape, a float
    rank in a slice and a string block in a comparison; an empty shape (no mode) failed
    with an IndexError."""
    for name in ("shape", "ranks"):
        value = getattr(indices, name)
        if not (isinstance(value, tuple | list | np.ndarray)
                or (name == "ranks" and value is None)):
            raise TypeError(f"indices.{name} must be a tuple of ints, got {value!r:.60} "
                            f"({type(value).__name__}).")
    if not len(indices.shape):
        raise ValueError("indices.shape must have at least one mode, got ().")
    ranks = () if indices.ranks is None else indices.ranks  # an array has no truth value
    for name, values in (("shape", indices.shape), ("ranks", ranks),
                         ("block", () if indices.block is None else (indices.block,))):
        wrong = [value for value in values
                 if isinstance(value, bool) or not isinstance(value, numbers.Integral)]
        if wrong:
            raise TypeError(f"indices.{name} must hold integers, got {wrong[0]!r} "
                            f"({type(wrong[0]).__name__}).")
    if min(indices.shape) < 1:
        raise ValueError(f"indices.shape must hold mode sizes >= 1, got "
                         f"{tuple(indices.shape)}.")


def _check_blocks(indices):
    """Each set a 2-D NumPy integer array: a hand-built :class:`CrossIndices` of lists or
    1-D arrays failed deep inside (``.shape[1]`` of a list, of a 1-D array)."""
    for side in ("left", "right"):
        for k, block in enumerate(getattr(indices, side)):
            # Cast safely to int64 too: uint64 sets joined to int64 columns made float64
            # multi-indices, refused as "got dtype float64", a dtype no set had.
            if not (isinstance(block, np.ndarray) and block.ndim == 2
                    and block.dtype.kind in "iu" and np.can_cast(block.dtype, np.int64)):
                got = (f"{block.ndim}-D {block.dtype} array" if isinstance(block, np.ndarray)
                       else type(block).__name__)
                raise TypeError(f"indices.{side}[{k}] must be a 2-D NumPy integer array "
                                f"that casts safely to int64 (one multi-index per row), "
                                f"got a {got}.")


def _check_range(block, sizes, name):
    if block.size and ((block < 0).any() or (block >= np.asarray(sizes)).any()):
        raise ValueError(f"{name} holds an index out of range for mode sizes {sizes}.")


def positions_in(rows, candidates):
    """Positions of each row of ``rows`` inside ``candidates`` (both (m, k) int arrays).

    Raises ValueError if a row is missing: the sets are not nested.
    """
    positions, found = _find_rows(rows, candidates)
    if not found.all():
        raise ValueError("index sets are not nested: a pivot is not among the fibers' rows.")
    return positions


def positions_found(rows, candidates):
    """Positions inside ``candidates`` of the rows of ``rows`` that it holds (in order)."""
    positions, found = _find_rows(rows, candidates)
    return positions[found]


def _find_rows(rows, candidates):
    """Candidate positions of each row, and whether the row was found there."""
    if candidates.shape[1] == 0:
        if rows.shape[0] > 1:
            raise ValueError("more than one empty multi-index in a set.")
        return np.zeros(rows.shape[0], dtype=np.int64), np.ones(rows.shape[0], dtype=bool)
    if not (rows.shape[0] and candidates.shape[0]):
        return np.zeros(rows.shape[0], dtype=np.int64), np.zeros(rows.shape[0], dtype=bool)
    exact = _packed_keys(candidates, rows)
    if exact is None:
        # Index ranges beyond one int64: a 64-bit hash, sorted as fast, whose matches are
        # checked row against row; only a shared hash (about 2**-64 a pair) needs the
        # structured keys, slow to sort.
        positions, found = _search(*_hashed_keys(candidates, rows))
        equal = (candidates[positions] == rows).all(axis=1)
        if not (found & ~equal).any():
            return positions, found & equal
        exact = as_row_keys(candidates), as_row_keys(rows)
    return _search(*exact)


def _search(candidate_keys, row_keys):
    order = candidate_keys.argsort()  # methods: NumPy's functions add Python layers
    found = candidate_keys.searchsorted(row_keys, sorter=order)
    positions = order[np.minimum(found, len(order) - 1)]
    return positions, candidate_keys[positions] == row_keys


def _packed_keys(first, second):
    """Rows of two (m, k) int64 arrays as packed integers that compare like the rows, or
    None where the index ranges do not fit one int64."""
    sizes = np.maximum(first.max(axis=0), second.max(axis=0)) + 1
    if float(sizes.astype(np.float64).prod()) < 2.0**62:
        strides = np.concatenate([sizes[1:], [1]])[::-1].cumprod()[::-1]
        return first @ strides, second @ strides
    return None


def _hashed_keys(first, second):
    weights = _hash_weights(first.shape[1])
    return first @ weights, second @ weights


@functools.lru_cache(maxsize=64)
def _hash_weights(n_modes):
    """Fixed random odd weights for ``n_modes`` (made once: drawing them anew on every
    search was 2% of a d=80 cross's overhead). Read-only, as the cache shares them."""
    weights = KeyScheme((2**62,) * n_modes).weights
    weights.flags.writeable = False
    return weights


def as_row_keys(block):
    """Rows of an (m, k) int64 array as sortable, comparable scalars (a structured view)."""
    block = np.ascontiguousarray(block, dtype=np.int64)
    return block.view([(f"m{mode}", np.int64) for mode in range(block.shape[1])]).reshape(-1)
