"""A lazy tensor that counts the entries it is asked for: reads that no cache sees."""

import time

from .base import LazyTensor


class CountedTensor(LazyTensor):
    """``lazy``, with ``n_evaluated`` the number of entries asked of it so far, ``n_calls``
    the batched calls that asked for them and ``wait_seconds`` the time they took.

    ``tt_cross(..., differentiable=True)`` reads its cores once more after the search,
    fresh and through autograd, past the evaluation cache: this is how that read is
    counted in :attr:`CrossInfo.n_evals <tensorly_cross.CrossInfo>`.
    """

    def __init__(self, lazy):
        super().__init__(lazy.shape)
        self.lazy, self.n_evaluated, self.n_calls, self.wait_seconds = lazy, 0, 0, 0.0

    @property
    def stored(self):
        return self.lazy.stored

    def evaluate_checked(self, indices):
        self.n_evaluated += int(indices.shape[0])
        self.n_calls += 1
        evaluate = getattr(self.lazy, "evaluate_checked", self.lazy.evaluate)
        start = time.perf_counter()
        try:
            return evaluate(indices)
        finally:
            self.wait_seconds += time.perf_counter() - start
