"""SqueezedTensor: a lazy tensor without some of its modes of size one."""

import numpy as np

from .base import LazyTensor
from .chunk_result import finished_seen_through


class SqueezedTensor(LazyTensor):
    """A view of ``lazy`` on the modes ``kept``, every other mode (of size one) at 0.

    Parameters
    ----------
    lazy : LazyTensor
        The tensor to view.
    kept : sequence of int
        Increasing modes of ``lazy`` that the view keeps; the others must have size one.

    Examples
    --------
    >>> import numpy as np
    >>> from tensorly_cross import ArrayTensor
    >>> from tensorly_cross.lazy.squeezed import SqueezedTensor
    >>> view = SqueezedTensor(ArrayTensor(np.arange(6.0).reshape(2, 1, 3)), [0, 2])
    >>> view.shape, float(view.evaluate([[1, 2]])[0])
    ((2, 3), 5.0)
    """

    def __init__(self, lazy, kept):
        self.kept = [int(mode) for mode in kept]
        dropped = [mode for mode in range(lazy.ndim) if mode not in self.kept]
        if any(lazy.shape[mode] != 1 for mode in dropped) or self.kept != sorted(
                set(self.kept)):
            raise ValueError(f"kept must be increasing modes of {tuple(lazy.shape)} that "
                             f"leave out only modes of size 1, got {self.kept}.")
        super().__init__(tuple(lazy.shape[mode] for mode in self.kept))
        self.lazy = lazy

    def _evaluate(self, indices):
        full = np.zeros((indices.shape[0], self.lazy.ndim), dtype=np.int64)
        full[:, self.kept] = indices
        # A failed batch's finished chunks go up without the dropped modes.
        with finished_seen_through(self, lambda inner: inner[:, self.kept]):
            return self.lazy.evaluate_checked(full)
