"""Quantics (QTT) view of a lazy tensor: every mode split into small radices.

A mode of size ``N = 2^a p_1 ... p_k`` becomes ``a`` binary digits followed by one digit per
leftover prime factor, most significant digit first, so sizes that are not powers of two
need no padding. Smooth functions have small ranks in this layout, and a cross over it
reads a number of entries that grows with ``log N`` (Khoromskij 2011; Oseledets 2010).

Only prime factors below ``2**16`` are split off; what remains (a large prime, or a
product of primes above ``2**16``) is one last digit. A digit that large gains nothing
from the layout, and the bound keeps factoring any mode size (below ``2**63``: int64
indices) to a few microseconds, even for a forged file's.
"""

import functools
import numbers
from dataclasses import dataclass

import numpy as np
import tensorly as tl
from tensorly.cp_tensor import CPTensor
from tensorly.tt_tensor import TTTensor
from tensorly.tucker_tensor import TuckerTensor

from .._validation import check_choice
from .base import LazyTensor, c_order_strides, check_indices
from .chunk_result import finished_seen_through
from .dispatch import view_source

ORDERS = ("grouped", "interleaved")
# Prime factors below this are split into digits of their own; see the module docstring.
FACTOR_BOUND = 2**16
# A mode's indices are int64.
MAX_MODE_SIZE = 2**63 - 1


def radices(size):
    """Digits of one mode: ``2`` as often as it divides ``size``, then its other primes
    below ``FACTOR_BOUND`` in increasing order, then what remains (if not 1) as one digit.

    ``size`` is an int in ``[1, MAX_MODE_SIZE]`` (see :func:`check_mode_size`).
    """
    if size < 1:  # the loop below would never end on 0 (0 % 2 == 0)
        raise ValueError(f"radices: size must be >= 1, got {size}.")
    if size == 1:
        return [1]
    digits, rest = [], int(size)
    while rest % 2 == 0:
        digits.append(2)
        rest //= 2
    # One vectorised pass finds which small primes divide the rest: a trial division up to
    # sqrt(size) in Python took minutes for a prime near 2**61.
    primes = _odd_primes_below(FACTOR_BOUND)
    for factor in primes[np.asarray(rest, dtype=np.int64) % primes == 0].tolist():
        while rest % factor == 0:
            digits.append(factor)
            rest //= factor
    if rest > 1:
        digits.append(rest)
    return digits


def check_mode_size(size, name):
    """``size`` as a Python int in ``[1, MAX_MODE_SIZE]``; raise naming ``name`` otherwise."""
    if isinstance(size, bool) or not isinstance(size, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {size!r} ({type(size).__name__}).")
    if not 1 <= size <= MAX_MODE_SIZE:
        raise ValueError(f"{name} must be an int in [1, 2**63 - 1] (int64 indices), got "
                         f"{size}.")
    return int(size)


@functools.cache
def _odd_primes_below(bound):
    """The odd primes below ``bound``, as an int64 array (a sieve of Eratosthenes)."""
    is_prime = np.ones(bound, dtype=bool)
    is_prime[:2] = False
    for factor in range(2, int(bound**0.5) + 1):
        if is_prime[factor]:
            is_prime[factor * factor :: factor] = False
    return np.flatnonzero(is_prime)[1:].astype(np.int64)


@dataclass
class QuanticsLayout:
    """Where each original mode's digits sit in the quantics tensor.

    Build it with :meth:`create` (or :meth:`with_channels`); each parameter is an attribute
    of the same name.

    Parameters
    ----------
    shape : tuple of int
        The original shape.
    order : {"grouped", "interleaved"}
        ``grouped``: all digits of mode 0, then of mode 1, ...; ``interleaved``: the most
        significant digit of every mode, then the next, ...
    mode_radices : list of list of int
        Digits of each original mode, most significant first.
    positions : list of ndarray of int64
        Position of each of those digits among the quantics modes.

    Examples
    --------
    >>> from tensorly_cross import QuanticsLayout
    >>> layout = QuanticsLayout.create((8, 12))
    >>> layout.mode_radices, layout.quantics_shape
    ([[2, 2, 2], [2, 2, 3]], (2, 2, 2, 2, 2, 3))
    >>> layout.to_quantics([[5, 7]])
    array([[1, 0, 1, 1, 0, 1]])
    >>> layout.to_original([[1, 0, 1, 1, 0, 1]])
    array([[5, 7]])
    """

    shape: tuple
    order: str
    mode_radices: list
    positions: list

    def __eq__(self, other):
        # The dataclass's own == compared the lists of position arrays, and raised NumPy's
        # "truth value of an array ... is ambiguous" for two equal layouts.
        if not isinstance(other, QuanticsLayout):
            return NotImplemented
        return (tuple(self.shape), self.order, self.mode_radices) == (
            tuple(other.shape), other.order, other.mode_radices) and [
            positions.tolist() for positions in self.positions] == [
            positions.tolist() for positions in other.positions]

    @classmethod
    def create(cls, shape, order="grouped"):
        """The layout of a tensor of ``shape``: each mode split into its prime digits.

        Parameters
        ----------
        shape : tuple of int
            The original shape.
        order : {"grouped", "interleaved"}, default "grouped"
            Digit order (see the class docstring).

        Returns
        -------
        layout : QuanticsLayout
            Factors 2 first, then the other primes, most significant digit first.

        Raises
        ------
        TypeError
            If ``shape`` is not a sequence, or a mode size is not an int (a float such as
            4.5 or 4.0 included).
        ValueError
            If ``shape`` is empty, a mode size is outside ``[1, 2**63 - 1]``, or ``order``
            is unknown.
        """
        # check_choice: ``in`` compared an array elementwise (NumPy's "truth value of an
        # array ... is ambiguous", naming neither the argument nor the options).
        order = check_choice(order, "order", ORDERS)
        if isinstance(shape, str | bytes) or not hasattr(shape, "__iter__"):
            raise TypeError(f"shape must be a sequence of ints, got {shape!r} "
                            f"({type(shape).__name__}).")
        shape = tuple(check_mode_size(size, f"shape[{k}]") for k, size in enumerate(shape))
        if not shape:
            raise ValueError("shape must have at least one mode, got ().")
        mode_radices = [radices(size) for size in shape]
        slots = []  # (original mode, digit level) in quantics order
        if order == "grouped":
            slots = [(mode, level) for mode, digits in enumerate(mode_radices)
                     for level in range(len(digits))]
        else:
            depth = max(len(digits) for digits in mode_radices)
            slots = [(mode, level) for level in range(depth)
                     for mode, digits in enumerate(mode_radices) if level < len(digits)]
        positions = [np.zeros(len(digits), dtype=np.int64) for digits in mode_radices]
        for position, (mode, level) in enumerate(slots):
            positions[mode][level] = position
        return cls(shape, order, mode_radices, positions)

    @classmethod
    def with_channels(cls, shape, channels, order="grouped"):
        """The layout of ``(*shape, channels)`` whose channel mode stays one digit, last.

        The channel mode is the block mode of :func:`tensorly_cross.tt_cross`
        ``(..., method="block")``.

        Parameters
        ----------
        shape : tuple of int
            The grid's shape, whose modes are split into digits.
        channels : int
            Size of the channel mode, kept whole.
        order : {"grouped", "interleaved"}, default "grouped"
            Digit order of the grid's modes.

        Returns
        -------
        layout : QuanticsLayout
            Of the original shape ``(*shape, channels)``.
        """
        channels = check_mode_size(channels, "channels")
        grid = cls.create(shape, order)
        n_digits = len(grid.quantics_shape)
        return cls(grid.shape + (int(channels),), order, grid.mode_radices + [[int(channels)]],
                   grid.positions + [np.array([n_digits], dtype=np.int64)])

    @property
    def quantics_shape(self):
        """The shape of the quantics tensor: every digit's radix, in quantics order."""
        shape = [0] * sum(len(digits) for digits in self.mode_radices)
        for digits, positions in zip(self.mode_radices, self.positions, strict=True):
            for digit, position in zip(digits, positions, strict=True):
                shape[position] = digit
        return tuple(shape)

    def to_original(self, quantics_indices):
        """Original multi-indices of quantics multi-indices.

        Parameters
        ----------
        quantics_indices : array-like of int, shape (m, D)
            Multi-indices over the ``D`` quantics modes.

        Returns
        -------
        indices : ndarray of int64, shape (m, d)
            The same entries over the ``d`` original modes.
        """
        # Checked: a digit past its radix, or a negative one, would name another entry.
        quantics_indices = check_indices(quantics_indices, self.quantics_shape)
        columns = [quantics_indices[:, positions] @ c_order_strides(digits)
                   for digits, positions in zip(self.mode_radices, self.positions, strict=True)]
        return np.stack(columns, axis=1)

    def to_quantics(self, indices):
        """Quantics multi-indices of original multi-indices.

        Parameters
        ----------
        indices : array-like of int, shape (m, d)
            Multi-indices over the ``d`` original modes.

        Returns
        -------
        quantics_indices : ndarray of int64, shape (m, D)
            The same entries over the ``D`` quantics modes.
        """
        indices = check_indices(indices, self.shape)  # out of range would wrap around
        result = np.empty((indices.shape[0], len(self.quantics_shape)), dtype=np.int64)
        for mode, (digits, positions) in enumerate(
                zip(self.mode_radices, self.positions, strict=True)):
            rest = indices[:, mode].copy()
            for digit, position in zip(digits[::-1], positions[::-1], strict=True):
                result[:, position] = rest % digit
                rest //= digit
        return result


class QuanticsTensor(LazyTensor):
    """A lazy tensor seen through its quantics layout.

    Parameters
    ----------
    lazy : LazyTensor or anything :func:`lazy_tensor` accepts
        An array or tensor is read in memory; a callable needs wrapping in a
        :class:`FunctionTensor` (its shape).
    order : {"grouped", "interleaved"}, default "grouped"
        Digit order (see :class:`QuanticsLayout`); the view's ``layout`` maps indices.

    Examples
    --------
    >>> import numpy as np
    >>> from tensorly_cross import FunctionTensor, QuanticsTensor
    >>> f = FunctionTensor(lambda idx: np.exp(-idx[:, 0] / 500.0), (2**20,))
    >>> q = QuanticsTensor(f)
    >>> q.shape[:4], len(q.shape)
    ((2, 2, 2, 2), 20)
    """

    def __init__(self, lazy, order="grouped"):
        lazy = view_source(lazy, "QuanticsTensor", "")
        self.layout = QuanticsLayout.create(lazy.shape, order)
        super().__init__(self.layout.quantics_shape)
        self.lazy = lazy

    def _evaluate(self, indices):
        # A failed batch's finished chunks go up in this view's digits (see
        # finished_seen_through): a cache counts them, a checkpoint keeps them.
        with finished_seen_through(self, self.layout.to_quantics):
            return self.lazy.evaluate(self.layout.to_original(indices))


def qtt_to_tt(tt_q, layout):
    """The TT over the original modes of a TT over a *grouped* quantics layout.

    The cores of each mode's digits are contracted into one core of size ``N`` (so this
    is for grids whose cores fit in memory; ``tt_entries`` on the quantics TT with
    ``layout.to_quantics`` evaluates entries of any size).

    Parameters
    ----------
    tt_q : TTTensor or list of cores
        A TT over the quantics modes of ``layout``.
    layout : QuanticsLayout or QuanticsTensor
        The layout (or the tensor whose layout) ``tt_q`` was built on; grouped order.

    Returns
    -------
    tt : TTTensor
        Of shape ``layout.shape``, one core per original mode.

    Raises
    ------
    TypeError
        If ``tt_q`` is not a TTTensor or a list of cores (a masked core included), or
        ``layout`` is not a layout.
    ValueError
        If the layout is interleaved, or the cores do not form a TT over its quantics
        modes.

    Examples
    --------
    >>> import numpy as np
    >>> from tensorly_cross import FunctionTensor, QuanticsTensor, qtt_to_tt, tt_cross
    >>> f = FunctionTensor(lambda idx: np.cos(idx[:, 0] / 7.0) + idx[:, 1], (16, 8))
    >>> q = QuanticsTensor(f)
    >>> tt_q = tt_cross(q, tol=1e-10, random_state=0)
    >>> tt = qtt_to_tt(tt_q, q.layout)
    >>> tt.shape
    (16, 8)
    >>> full = f.evaluate(np.indices((16, 8)).reshape(2, -1).T).reshape(16, 8)
    >>> bool(np.allclose(tt.to_tensor(), full))
    True
    """
    layout = getattr(layout, "layout", layout)
    if not isinstance(layout, QuanticsLayout):
        raise TypeError(f"layout must be a QuanticsLayout or a QuanticsTensor, got "
                        f"{type(layout).__name__}.")
    if layout.order != "grouped":
        raise ValueError("qtt_to_tt needs order='grouped' (interleaved digits of different "
                         "modes cannot be contracted into one core per mode).")
    # As tt_entries takes them: a dense array was split into its slices (a 4-D one of
    # shape (D, 1, 2, 1) made a TT of D (1, 2, 1) "cores") and None failed in list().
    other = isinstance(tt_q, CPTensor | TuckerTensor)  # tuples too
    if other or not isinstance(tt_q, TTTensor | list | tuple):
        raise TypeError(f"tt_q must be a TTTensor or a list of 3-D cores, got "
                        f"{type(tt_q).__name__}.")
    # In the active backend, as tt_entries takes them: a PyTorch TT under NumPy kept its
    # single-digit modes' cores in torch (a TT of two backends), or crashed in tensordot.
    # Promoted to one dtype too, as tt_entries does: PyTorch's tensordot refused a float32
    # core among float64 ones.
    from ..cross.tt_entries import common_dtype, core_in_backend

    cores = [core_in_backend(core, k, "qtt_to_tt") for k, core in enumerate(tt_q)]
    if len(cores) != len(layout.quantics_shape):
        raise ValueError(f"tt_q has {len(cores)} cores; the layout has "
                         f"{len(layout.quantics_shape)} quantics modes.")
    _check_chain(cores)
    cores = common_dtype(cores)
    sizes = tuple(int(tl.shape(core)[1]) for core in cores)
    if sizes != tuple(layout.quantics_shape):
        raise ValueError(f"tt_q's mode sizes {sizes} are not the layout's quantics modes "
                         f"{tuple(layout.quantics_shape)}.")
    merged = []
    for positions, size in zip(layout.positions, layout.shape, strict=True):
        core = cores[positions[0]]
        for position in positions[1:]:
            nxt = cores[position]
            r_left = tl.shape(core)[0]
            core = tl.reshape(tl.tensordot(core, nxt, axes=([2], [0])),
                              (r_left, -1, tl.shape(nxt)[2]))
        merged.append(tl.reshape(core, (tl.shape(core)[0], size, tl.shape(core)[2])))
    return TTTensor(merged)


def _check_chain(cores):
    """Raise ValueError unless ``cores`` are 3-D and each one's right rank is the next
    one's left rank: contracted as they are, a mismatch failed deep in the backend."""
    for number, core in enumerate(cores):
        if len(tl.shape(core)) != 3:
            raise ValueError(f"tt_q's core {number} has shape {tuple(tl.shape(core))}; TT cores "
                             "are 3-D, (left rank, mode size, right rank).")
    for number in range(1, len(cores)):
        right, left = int(tl.shape(cores[number - 1])[2]), int(tl.shape(cores[number])[0])
        if right != left:
            raise ValueError(f"tt_q's ranks do not chain: core {number - 1} has right rank "
                             f"{right} but core {number} has left rank {left}; each core's "
                             "right rank must equal the next core's left rank.")
    ends = int(tl.shape(cores[0])[0]), int(tl.shape(cores[-1])[2])
    if ends != (1, 1):
        raise ValueError(f"tt_q's first core has left rank {ends[0]} and its last core right "
                         f"rank {ends[1]}; both must be 1.")
