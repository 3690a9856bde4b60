"""A wall-clock deadline on new evaluations: the lazy side of ``max_time``."""

import contextvars
import time
from dataclasses import dataclass

from ..errors import MaxTimeReached
from .base import LazyTensor

# The deadline of the batch being evaluated, for an evaluation that can stop part way (a
# batch in chunks). A context variable, not an attribute of the tensor: two runs may share
# one tensor from two threads, each with its own max_time.
_CURRENT = contextvars.ContextVar("tensorly_cross_deadline", default=None)


@dataclass(frozen=True)
class Deadline:
    """``max_time`` seconds from a run's start, as a ``time.perf_counter()`` value ``at``."""

    at: float
    max_time: float

    def remaining(self):
        """Seconds left (negative once past)."""
        return self.at - time.perf_counter()

    def passed(self):
        """Whether the deadline is past."""
        return self.remaining() < 0

    def reached(self, what):
        """The :class:`~tensorly_cross.errors.MaxTimeReached` to raise, ``what`` saying
        where the run stood."""
        return MaxTimeReached(f"max_time={self.max_time} s reached {what}.")


def current_deadline():
    """The :class:`Deadline` of the batch being evaluated in this context (None if none)."""
    return _CURRENT.get()


class no_deadline:  # noqa: N801 -- used as a function: ``with no_deadline():``
    """No deadline inside: the user's function may run a cross of its own, whose
    evaluations are not this run's; and every run (``tt_cross``, ``select_indices``,
    ``cross_interpolate``) starts with none but its own ``max_time``, though it may be
    called from inside another run's evaluation (by a user's LazyTensor). A class, not
    ``contextlib.contextmanager``: it wraps every call of the function, and a generator's
    context costs a few microseconds."""

    def __enter__(self):
        self._token = _CURRENT.set(None)

    def __exit__(self, *exc_info):
        _CURRENT.reset(self._token)


class DeadlineTensor(LazyTensor):
    """``lazy`` that refuses new evaluations once ``time.perf_counter()`` passes ``deadline``.

    The refusal (:class:`~tensorly_cross.errors.MaxTimeReached`) comes before a batch is
    started. A batch evaluated in one call runs to its end, so a run stops at most one
    batch late; a batch in chunks (a :class:`~tensorly_cross.FunctionTensor` with an
    executor, or a ``chunk_size``) stops at the deadline itself, its finished chunks kept
    by a checkpoint (:func:`current_deadline` tells it the deadline), as are, once they
    finish, the chunks a ``concurrent.futures`` executor was still running.
    """

    passes_batches_through = True  # batches go to ``lazy`` as asked (see evaluating_tensor)

    def __init__(self, lazy, deadline, max_time):
        super().__init__(lazy.shape)
        self.lazy, self.deadline, self.max_time = lazy, deadline, max_time

    def evaluate_checked(self, indices):
        deadline = Deadline(self.deadline, self.max_time)
        if deadline.passed():
            raise deadline.reached(f"before a batch of {indices.shape[0]} new evaluations")
        evaluate = getattr(self.lazy, "evaluate_checked", self.lazy.evaluate)
        token = _CURRENT.set(deadline)
        try:
            return evaluate(indices)
        finally:
            _CURRENT.reset(token)
