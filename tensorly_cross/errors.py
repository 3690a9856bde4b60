"""Warnings and exceptions that users of tensorly-cross can meet and catch."""


def _reduce(error, *values):
    """What pickle rebuilds ``error`` from: its class, its message and the ``values`` its
    ``__init__`` takes after it, and its attributes (notes included). The default passes
    ``args`` alone, so unpickling an error whose ``__init__`` takes more failed: raised in a
    process pool's worker (a function that runs a cross of its own), it broke the pool
    ("BrokenProcessPool"), and the error itself was lost."""
    return type(error), (error.args[0] if error.args else "", *values), error.__dict__


class RankDeficiencyWarning(UserWarning):
    """A matrix handed to a pivoting kernel is numerically rank-deficient.

    Parameters
    ----------
    message : str
        What was detected, and what the kernel does instead.
    rank : int
        The numerical rank that was detected; kept as the attribute ``rank``.

    Examples
    --------
    >>> import warnings
    >>> import numpy as np
    >>> from tensorly_cross import RankDeficiencyWarning, maxvol
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     rows, _ = maxvol(np.ones((6, 2)))
    >>> caught[0].category is RankDeficiencyWarning, caught[0].message.rank
    (True, 1)
    """

    def __init__(self, message, rank):
        super().__init__(message)
        self.rank = rank

    def __reduce__(self):
        return _reduce(self, self.rank)


class UnseenStructureWarning(UserWarning):
    """A cross met its tolerance on held-out entries that miss structure the cross read.

    The held-out entries are all zero, or far smaller than entries the cross read.

    The held-out error only speaks for the entries drawn; see
    :attr:`tensorly_cross.CrossInfo.heldout_bound`.

    Examples
    --------
    >>> import warnings
    >>> import numpy as np
    >>> import tensorly_cross as tlc
    >>> values = np.zeros((16, 16, 16))
    >>> values[3, 5, 7] = 1.0  # one entry that random held-out entries will likely miss
    >>> with warnings.catch_warnings():
    ...     warnings.simplefilter("error", tlc.UnseenStructureWarning)
    ...     try:
    ...         tlc.tt_cross(tlc.lazy_tensor(values), tol=1e-6, random_state=0, val_size=50)
    ...     except tlc.UnseenStructureWarning:
    ...         print("warned")
    warned
    """


class SubnormalValuesWarning(UserWarning):
    """Every value a cross read is subnormal: below the smallest normal float of its dtype.

    Such values keep only a few significant digits (about 3 near 1e-320 in float64), so
    neither the TT nor its held-out error means anything beyond them, and dividing by
    them may have made NumPy print RuntimeWarnings (overflow, invalid value). Scale the
    function by a constant and divide the TT by it afterwards.

    Examples
    --------
    >>> import warnings
    >>> import numpy as np
    >>> import tensorly_cross as tlc
    >>> grid = np.linspace(1.0, 2.0, 16)
    >>> tiny = tlc.FunctionTensor(lambda idx: 1e-320 / grid[idx].sum(axis=1), (16,) * 3)
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     _ = tlc.tt_cross(tiny, rank=2, random_state=0)
    >>> any(issubclass(w.category, tlc.SubnormalValuesWarning) for w in caught)
    True
    """


class ToleranceNotMetWarning(UserWarning):
    """A rank-adaptive cross ended with its held-out error above ``tol``.

    A streaming TT-SVD that ``max_rank`` or ``max_width`` kept above ``tol`` (its exact
    error) issues it too, and so do both where JAX without ``jax_enable_x64`` rounds to
    single precision the cores of a TT that met ``tol`` in float64, past ``tol``. Raised
    as a warning, not an error: the TT returned is the best state found, and may be all a
    budget allows. The message names the stop reason and what
    to change. A run with a given ``rank`` (the target there, ``tol`` an early stop) issues
    it only when its TT is no better than the zero tensor (held-out error 1 or more), and
    TCI with ``rank=`` (a per-bond cap) as a rank-adaptive run.

    Parameters
    ----------
    message : str
        The error, the tolerance, why the run stopped and what to try.
    error : float
        The held-out error of the TT returned; kept as the attribute ``error``.
    tol : float
        The tolerance missed; kept as the attribute ``tol``.

    Examples
    --------
    >>> import warnings
    >>> import numpy as np
    >>> import tensorly_cross as tlc
    >>> noise = np.random.default_rng(0).standard_normal((12, 12, 12))  # no low rank
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     tt = tlc.tt_cross(noise, tol=0.01, max_rank=3, random_state=0)
    >>> missed = [w.message for w in caught if w.category is tlc.ToleranceNotMetWarning]
    >>> missed[0].tol, bool(missed[0].error > 0.01)
    (0.01, True)
    """

    def __init__(self, message, error, tol):
        super().__init__(message)
        self.error = error
        self.tol = tol

    def __reduce__(self):
        return _reduce(self, self.error, self.tol)


class NonFiniteValueError(ValueError):
    """A lazy tensor produced NaN or inf.

    Parameters
    ----------
    message : str
        The error message; it names the multi-index and the value.
    index : tuple of int
        The first multi-index of the batch read whose value was not finite, in that batch's
        order; kept as the attribute ``index``. A tensor's own ``evaluate`` reads the
        multi-indices in the order given; an :class:`EvaluationCache` (every cross reads
        through one) reads each new entry once, in the order of its keys, so the one named
        there is an offending entry of the request, not necessarily its first.
    value : complex or float
        The offending value; kept as the attribute ``value``.

    Examples
    --------
    >>> import numpy as np
    >>> from tensorly_cross import FunctionTensor, NonFiniteValueError
    >>> f = FunctionTensor(lambda idx: np.where(idx[:, 0] == 0, np.nan, 1.0), (4, 4))
    >>> try:
    ...     f.evaluate(np.array([[2, 1], [0, 3]]))
    ... except NonFiniteValueError as error:
    ...     print(error.index)
    (0, 3)
    """

    def __init__(self, message, index, value):
        super().__init__(message)
        self.index = index
        self.value = value

    def __reduce__(self):
        return _reduce(self, self.index, self.value)


class EvaluationBudgetExceeded(RuntimeError):
    """The next batch of evaluations would exceed ``max_evals``.

    Parameters
    ----------
    message : str
        The error message; it names ``max_evals`` and the counts.
    needed : int
        The number of evaluations the batch would have brought the total to; kept as the
        attribute ``needed``.
    max_evals : int or None
        The budget that refused the batch (the ``max_evals`` of the cache that raised);
        kept as the attribute ``max_evals``. A cross that reads through an
        :class:`EvaluationCache` of the caller's own names it in its message.

    Examples
    --------
    >>> import numpy as np
    >>> from tensorly_cross import EvaluationBudgetExceeded, EvaluationCache, lazy_tensor
    >>> cache = EvaluationCache(lazy_tensor(np.ones((4, 4))), max_evals=3)
    >>> try:
    ...     cache.evaluate(np.array([[0, 0], [1, 1], [2, 2], [3, 3]]))
    ... except EvaluationBudgetExceeded as error:
    ...     print(error.needed, error.max_evals)
    4 3
    """

    def __init__(self, message, needed, max_evals=None):
        super().__init__(message)
        self.needed = needed
        self.max_evals = max_evals

    def __reduce__(self):
        return _reduce(self, self.needed, self.max_evals)


class MaxTimeReached(RuntimeError):
    """The run's ``max_time`` ran out before a batch of new evaluations, or during one.

    A batch in chunks stops part way (its finished chunks are kept by a checkpoint).

    The sweep loop catches it and stops with ``stop_reason="max_time"``; it reaches the
    caller only when no sweep had completed (nothing to return). With a ``checkpoint``,
    every entry evaluated so far is stored and a rerun resumes from them.

    Examples
    --------
    >>> import numpy as np
    >>> import tensorly_cross as tlc
    >>> f = tlc.FunctionTensor(lambda idx: np.ones(len(idx)), (9, 9))
    >>> try:  # no time at all: the first batch is never started
    ...     tlc.tt_cross(f, max_time=1e-12, method="tci")
    ... except tlc.MaxTimeReached as error:
    ...     print(type(error).__name__)
    MaxTimeReached
    """


class CheckpointError(ValueError):
    """A ``checkpoint`` file that cannot be used.

    It is not a tensorly-cross checkpoint, its header or a frame before its last is
    damaged, another run holds it (its lock), or the path names a folder, a FIFO, socket
    or device, or a file in a folder that does not exist. A checkpoint of another run is a
    :class:`CheckpointMismatchError`.

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> import tensorly_cross as tlc
    >>> path = os.path.join(tempfile.mkdtemp(), "run.ckpt")
    >>> with open(path, "wb") as handle:
    ...     _ = handle.write(b"not a checkpoint")
    >>> try:
    ...     tlc.tt_cross(np.ones((4, 4)), checkpoint=path, random_state=0)
    ... except tlc.CheckpointError:
    ...     print("refused")
    refused
    """


class CheckpointMismatchError(ValueError):
    """A ``checkpoint`` file was written for another tensor shape or other arguments.

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> import tensorly_cross as tlc
    >>> path = os.path.join(tempfile.mkdtemp(), "run.ckpt")
    >>> _ = tlc.tt_cross(np.ones((4, 4)), checkpoint=path, random_state=0)
    >>> try:
    ...     tlc.tt_cross(np.ones((5, 4)), checkpoint=path, random_state=0)
    ... except tlc.CheckpointMismatchError:
    ...     print("refused")
    refused
    """


class KeyCollisionError(RuntimeError):
    """Two distinct multi-indices share a hashed 64-bit cache key (about 2**-64 per pair).

    Only tensors of 2**63 entries or more have hashed keys. The run would otherwise serve
    one entry's value for the other; rerunning with another ``random_state`` reads other
    entries.

    Examples
    --------
    >>> import tensorly_cross as tlc
    >>> issubclass(tlc.KeyCollisionError, RuntimeError)
    True
    """
