"""Warnings and exceptions that users of tensorly-cross can meet and catch."""


class RankDeficiencyWarning(UserWarning):
    """A matrix handed to a pivoting kernel is numerically rank-deficient.

    Attributes
    ----------
    rank : int
        The numerical rank that was detected.
    """

    def __init__(self, message, rank):
        super().__init__(message)
        self.rank = rank


class NonFiniteValueError(ValueError):
    """A lazy tensor produced NaN or inf.

    Attributes
    ----------
    index : tuple of int
        The first multi-index (in request order) whose value was not finite.
    value : complex or float
        The offending value.
    """

    def __init__(self, message, index, value):
        super().__init__(message)
        self.index = index
        self.value = value


class EvaluationBudgetExceeded(RuntimeError):
    """The next batch of evaluations would exceed ``max_evals``.

    Attributes
    ----------
    needed : int
        The number of evaluations the batch would have brought the total to.
    """

    def __init__(self, message, needed):
        super().__init__(message)
        self.needed = needed


class MaxTimeReached(RuntimeError):
    """The run's ``max_time`` ran out before a batch of new evaluations.

    The sweep loop catches it and stops with ``stop_reason="max_time"``; it reaches the
    caller only when no sweep had completed (nothing to return). With a ``checkpoint``,
    every entry evaluated so far is stored and a rerun resumes from them.
    """


class CheckpointError(ValueError):
    """A ``checkpoint`` file is not a tensorly-cross checkpoint, or its header is damaged."""


class CheckpointMismatchError(ValueError):
    """A ``checkpoint`` file was written for another tensor shape or other arguments."""


class KeyCollisionError(RuntimeError):
    """Two distinct multi-indices share a hashed 64-bit cache key (about 2**-64 per pair).

    Only tensors of 2**63 entries or more have hashed keys. The run would otherwise serve
    one entry's value for the other; rerunning with another ``random_state`` reads other
    entries.
    """
