"""TT rank arguments: validation, expansion and clipping (as TensorLy does)."""

import numbers
import operator
import warnings

from .._validation import outside_stacklevel
from .init import clip_ranks


def expand_rank(rank, shape, name="rank", warn=True, clip=True):
    """``(1, r_1, ..., r_{d-1}, 1)`` from an int or a list, clipped (with a warning if ``warn``)
    unless ``clip`` is False."""
    d = len(shape)
    single = _integer(rank)
    if single is not None:
        rank = [1] + [single] * (d - 1) + [1]
    else:
        if isinstance(rank, str | bytes):  # list("2") would be ["2"]
            raise TypeError(f"{name} must be an int or a list of {d + 1} ints, got {rank!r}.")
        try:
            rank = list(rank)
        except TypeError as error:
            raise TypeError(f"{name} must be an int or a list of {d + 1} ints, got "
                            f"{rank!r} ({type(rank).__name__}).") from error
        # int() would truncate 2.7 to 2 silently: only integers are ranks.
        if any(_integer(r) is None for r in rank):
            raise TypeError(f"{name} must be an int or a list of {d + 1} ints, got {rank!r}.")
        rank = [_integer(r) for r in rank]
        if len(rank) != d + 1:
            raise ValueError(
                f"{name} must have {d + 1} entries, {_rank_pattern(d)} for the {d} "
                f"mode(s) it covers {tuple(shape)}; got {len(rank)}."
            )
        if rank[0] != 1 or rank[-1] != 1:
            raise ValueError(f"{name}[0] and {name}[-1] must be 1, got {rank[0]} and {rank[-1]}.")
    bad = [k for k, r in enumerate(rank) if r < 1]
    if bad:
        raise ValueError(f"{name}[{bad[0]}]={rank[bad[0]]} must be >= 1.")
    if not clip:
        return rank
    clipped = clip_ranks(shape, rank)
    if warn and clipped != rank:
        changed = next(k for k in range(d + 1) if clipped[k] != rank[k])
        warnings.warn(
            f"{name}[{changed}]={rank[changed]} exceeds what the unfoldings of a tensor of "
            f"shape {tuple(shape)} can hold; using rank {tuple(clipped)}.",
            stacklevel=outside_stacklevel(),  # the caller's line, at any call depth
        )
    return clipped


def plain_rank(rank):
    """``rank`` with integer tensors and NumPy integers as Python ints: an int, or a list of
    ints where every entry is an integer (a 1-d tensor, or a list of 0-d ones). Then a
    checkpoint writes it, ``max_rank`` is compared with it and messages show it as they do a
    list of ints. Anything else is returned as given, for :func:`expand_rank` to name."""
    single = _integer(rank)
    if single is not None:
        return single
    if isinstance(rank, list | tuple) or getattr(rank, "ndim", None) == 1:
        ranks = [_integer(r) for r in rank]
        if None not in ranks:  # a list stays a list and a tuple a tuple, as messages echo it
            return type(rank)(ranks) if isinstance(rank, list | tuple) else ranks
    return rank


def _integer(value):
    """``value`` as an int if it is an integer: Python's, NumPy's, or a 0-d integer tensor
    of a backend (``tl.tensor([1, 4, 1])`` iterates into those); None otherwise (a bool,
    2.7, a float tensor)."""
    if isinstance(value, numbers.Integral):
        return None if isinstance(value, bool) else int(value)
    dtype = getattr(value, "dtype", None)
    if getattr(value, "ndim", None) != 0 or "int" not in str(dtype):
        return None
    try:
        return operator.index(value)
    except TypeError:
        return None


def _rank_pattern(d):
    """``(1, r_1, ..., r_{d-1}, 1)`` written out for ``d`` modes."""
    inner = {1: [], 2: ["r_1"], 3: ["r_1", "r_2"]}.get(d, ["r_1", "...", f"r_{d - 1}"])
    return "(" + ", ".join(["1", *inner, "1"]) + ")"
