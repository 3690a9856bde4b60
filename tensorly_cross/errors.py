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


class UnseenStructureWarning(UserWarning):
    """A cross met its tolerance on held-out entries that show signs of structure they did
    not sample: all zero, or far smaller than entries the cross read.

    The held-out error only speaks for the entries drawn; see
    :attr:`tensorly_cross.CrossInfo.heldout_bound`.
    """


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
