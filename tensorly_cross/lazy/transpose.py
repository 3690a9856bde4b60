"""TransposedTensor: a lazy tensor with its modes in another order.

The mode order of a TT decides its ranks and, out of core, what a cross reads: fibers run
along every mode, and a fiber along a strided axis touches one disk page per entry. For a
C-ordered volume of shape ``(X, Y, Z)`` (Z contiguous), the TT order ``(X, Z, Y)`` puts the
contiguous axis in the middle: the middle core's fibers then lie on ``r^2`` whole pages
instead of ``r Y`` pages, and the outer cores' fibers stay on the pages of the slices
their index sets name (measured on a 1024^3 .npy: 2.1-2.6x fewer pages read).
"""

import numpy as np

from .base import LazyTensor, check_indices
from .chunk_result import finished_seen_through
from .dispatch import view_source


class TransposedTensor(LazyTensor):
    """A lazy tensor with its modes permuted (as ``numpy.transpose``), nothing copied.

    Mode ``m`` of the view is mode ``axes[m]`` of ``lazy``; entries are read on demand.

    Parameters
    ----------
    lazy : LazyTensor or anything :func:`lazy_tensor` accepts
        The tensor to view.
    axes : sequence of int
        A permutation of ``range(lazy.ndim)``.

    Examples
    --------
    >>> import numpy as np
    >>> from tensorly_cross import ArrayTensor, TransposedTensor
    >>> view = TransposedTensor(ArrayTensor(np.arange(24.0).reshape(2, 3, 4)), (0, 2, 1))
    >>> view.shape
    (2, 4, 3)
    >>> float(view.evaluate(view.from_original([[1, 2, 3]]))[0])
    23.0
    """

    def __init__(self, lazy, axes):
        lazy = view_source(lazy, "TransposedTensor", ", axes")
        # True and False would pass as 1 and 0 once in an int array.
        flags = np.ndim(axes) == 1 and any(isinstance(a, bool | np.bool_) for a in axes)
        given, axes = axes, np.asarray(axes)
        if flags or axes.ndim != 1 or axes.dtype.kind not in "iu" or (
                sorted(axes.tolist()) != list(range(lazy.ndim))):
            raise ValueError(f"axes must be a permutation of range({lazy.ndim}) (ints), got "
                             f"{given!r}.")
        self.axes = tuple(int(axis) for axis in axes)
        self.inverse = np.argsort(axes)
        super().__init__(tuple(lazy.shape[axis] for axis in self.axes))
        self.lazy = lazy

    def from_original(self, indices):
        """Multi-indices of ``lazy`` as multi-indices of this view (to query its TT).

        Parameters
        ----------
        indices : array-like of int, shape (m, ndim)
            Multi-indices in the mode order of ``lazy``.

        Returns
        -------
        view_indices : ndarray of int64, shape (m, ndim)
            The same entries in the mode order of this view.
        """
        return check_indices(indices, self.lazy.shape)[:, self.axes]

    def _evaluate(self, indices):
        # A failed batch's finished chunks go up in this view's mode order.
        with finished_seen_through(self, lambda inner: inner[:, self.axes]):
            return self.lazy.evaluate_checked(np.ascontiguousarray(indices[:, self.inverse]))
