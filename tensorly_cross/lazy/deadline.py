"""A wall-clock deadline on new evaluations: the lazy side of ``max_time``."""

import time

from ..errors import MaxTimeReached
from .base import LazyTensor


class DeadlineTensor(LazyTensor):
    """``lazy`` that refuses new evaluations once ``time.perf_counter()`` passes ``deadline``.

    The refusal (:class:`~tensorly_cross.errors.MaxTimeReached`) comes before a batch is
    started: a batch in flight at the deadline runs to its end, so a run stops at most one
    batch late, and never with a batch half evaluated.
    """

    def __init__(self, lazy, deadline, max_time):
        super().__init__(lazy.shape)
        self.lazy, self.deadline, self.max_time = lazy, deadline, max_time

    def evaluate_checked(self, indices):
        if time.perf_counter() > self.deadline:
            raise MaxTimeReached(f"max_time={self.max_time} s reached before a batch of "
                                 f"{indices.shape[0]} new evaluations.")
        evaluate = getattr(self.lazy, "evaluate_checked", self.lazy.evaluate)
        return evaluate(indices)
