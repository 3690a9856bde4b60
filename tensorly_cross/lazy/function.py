"""FunctionTensor: entries computed by a vectorised Python function."""

import concurrent.futures
import contextlib
import contextvars
import functools
import time

import numpy as np
import tensorly as tl

from .._backend import backend_state, check_backend_kept, is_torch_tensor, to_host
from .._validation import check_int
from ..errors import MaxTimeReached
from .base import LazyTensor, _host_numbers, views_of
from .chunk_result import (
    FINISHED,
    LATE,
    FinishedChunks,
    attach_finished,
    is_pickling_error,
    noted_result,
    span,
)
from .deadline import current_deadline, no_deadline
from .parallel import (
    WorkerCount,
    caller_grad_mode,
    check_chunk_values,
    check_executor,
    chunk_bounds,
    concatenate_chunks,
    evaluate_in_chunks,
    own_copy,
)

# Added to a TypeError raised by the user's function.
CALLING_CONVENTION = (
    "FunctionTensor calls the function once per batch with one (m, d) array, a row per "
    "entry (int64 multi-indices; coordinates for FunctionTensor.on_grid), and expects m "
    "values back; not once per entry with d scalars. Vectorise it, or wrap it: "
    "lambda rows: np.array([f(*row) for row in rows])."
)

# Added to an error from pickling the function, or its values, for an executor.
PICKLING = (
    "The executor could not pickle the function (or what it holds) to send it to its "
    "workers, or the values it returned to send them back: dask does so even for a "
    "cluster of threads, a process pool always. Define the function at module level (not "
    "a lambda or a function defined inside another), keep locks, open files and clients "
    "out of what it holds, return NumPy arrays, or evaluate serially (executor=None)."
)


# Set around a read whose values must keep autograd's graph (see graph_kept_reads).
_GRAPH_KEPT = contextvars.ContextVar("tensorly_cross_graph_kept", default=False)


@contextlib.contextmanager
def graph_kept_reads():
    """Reads inside keep autograd's graph where PyTorch records one (its backend active,
    grad enabled): the cores' fresh read of :func:`~tensorly_cross.cross_interpolate` (and
    of ``differentiable=True``). There a
    :class:`FunctionTensor` evaluates in this thread, or on a thread pool, never on another
    executor: a dask worker computed from its own copy of the function's parameters (sent
    by value), so the cores required grad but the gradient never reached the parameters
    (``.grad`` None, without a word)."""
    token = _GRAPH_KEPT.set(tl.get_backend() == "pytorch" and bool(caller_grad_mode()))
    try:
        yield
    finally:
        _GRAPH_KEPT.reset(token)


def reading_with_graph():
    """Whether this read must keep autograd's graph (inside :func:`graph_kept_reads`, grad
    still enabled): values computed earlier, without it, would not carry the gradient."""
    return _GRAPH_KEPT.get() and bool(caller_grad_mode())


# The clock of the run evaluating in this context (see FunctionClock).
_RUN_CLOCK = contextvars.ContextVar("tensorly_cross_function_clock", default=None)


class FunctionClock:
    """The seconds one run's :class:`FunctionTensor` spends in its function: its own
    ``function_seconds`` counts every run's, and two runs sharing the tensor from two
    threads each reported both runs' time. Used as ``with FunctionClock(tensor):``
    around the run (a context variable: each thread, each run, its own clock)."""

    def __init__(self, tensor):
        # The FunctionTensor below the views (QuanticsTensor(FunctionTensor(...))): timed
        # at the top only, a view's run reported its waits, not its function's time.
        functions = (view for view in views_of(tensor) if isinstance(view, FunctionTensor))
        self.tensor, self.seconds, self._token = next(functions, tensor), 0.0, None

    @property
    def timed(self):
        """Whether the tensor times its function (a FunctionTensor); else ``seconds``
        stays 0 and a run reports its waits instead."""
        return isinstance(self.tensor, FunctionTensor)

    def __enter__(self):
        self._token = _RUN_CLOCK.set(self)
        return self

    def __exit__(self, *exc_info):
        _RUN_CLOCK.reset(self._token)

    @staticmethod
    def add(tensor, seconds):
        """Count ``seconds`` spent in ``tensor``'s function to the current run's clock, if
        it times that tensor (not another one the function evaluates itself)."""
        clock = _RUN_CLOCK.get()
        if clock is not None and clock.tensor is tensor:
            clock.seconds += seconds


class FunctionTensor(LazyTensor):
    """A tensor whose entries a function computes, a batch of multi-indices at a time.

    Parameters
    ----------
    function : callable
        ``function(indices) -> values``: ``indices`` is an (m, d) int64 NumPy array (its
        own copy: it may change it in place), the values an (m,) array or backend tensor.
    shape : tuple of int
        The size of each mode.
    executor : concurrent.futures.Executor, dask.distributed.Client or None
        Where the function runs: each batch of entries is cut into chunks that run
        concurrently there, and the values come back in order (the same values as a
        serial call when the function computes each entry from its own multi-index).
        A process pool or a cluster of processes needs a function that pickles. The
        user's exceptions come back from the chunk that raised them, with a note naming
        its multi-indices; NaN/inf are reported with their multi-index, as without.
        The cores' autograd-visible read (``cross_interpolate``, ``differentiable=True``
        under PyTorch with grad enabled) runs in the caller's thread unless the executor
        is a ``ThreadPoolExecutor``: elsewhere the function runs on a copy of its
        parameters, which the gradient would never reach. The search uses the executor.
    chunk_size : int or None
        Entries per chunk; None: one chunk per thread of the executor. On a dask
        client each worker gets one task per batch, holding its threads' chunks.
        Without an executor, a batch larger than ``chunk_size`` is evaluated in
        successive calls of at most that many entries: ``max_time`` is then checked
        between them, and with a ``checkpoint`` the chunks finished before an error or
        Ctrl-C are kept (one call per batch, the default, keeps none of a failed batch).

    Attributes
    ----------
    function_seconds : float
        Time spent inside ``function`` so far (with an executor, summed over the chunks,
        as measured where they ran).

    Examples
    --------
    >>> import numpy as np
    >>> from tensorly_cross import FunctionTensor
    >>> hilbert = FunctionTensor(lambda idx: 1.0 / (1.0 + idx.sum(axis=1)), (50, 50, 50))
    >>> hilbert.evaluate(np.array([[0, 0, 0], [1, 2, 3]]))
    array([1.        , 0.14285714])
    """

    def __init__(self, function, shape, executor=None, chunk_size=None):
        if not callable(function):
            raise TypeError(f"function must be callable, got {type(function).__name__}.")
        super().__init__(shape)
        self.function = function
        self.executor = check_executor(executor)
        self.chunk_size = (None if chunk_size is None
                           else check_int(chunk_size, "chunk_size", minimum=1))
        self.function_seconds = 0.0
        self._workers = WorkerCount()

    @classmethod
    def on_grid(cls, function, grids, executor=None, chunk_size=None):
        """A tensor of ``function`` sampled on the tensor-product grid ``grids``.

        Parameters
        ----------
        function : callable
            ``function(points) -> values``, ``points`` an (m, d) float array of coordinates.
        grids : sequence of 1-D arrays
            The coordinates along each mode: real, finite numbers (NaN or inf raises
            ValueError naming the grid and the point).
        executor, chunk_size : see :class:`FunctionTensor`
            The chunks are mapped to coordinates where they run.

        Returns
        -------
        tensor : FunctionTensor
            Of shape ``tuple(len(grid) for grid in grids)``; its ``grids`` attribute holds
            the coordinates.

        Examples
        --------
        >>> import numpy as np
        >>> from tensorly_cross import FunctionTensor
        >>> grid = np.linspace(0.0, 1.0, 5)
        >>> f = FunctionTensor.on_grid(lambda x: x.sum(axis=1), [grid, grid])
        >>> f.shape, f.evaluate([[4, 2]])
        ((5, 5), array([1.5]))
        """
        grids = _check_grids(grids)
        empty = [mode for mode, grid in enumerate(grids) if grid.size == 0]
        if empty:
            raise ValueError(f"grids[{empty[0]}] is empty; every grid needs >= 1 point.")
        tensor = cls(_GridFunction(function, grids), [grid.size for grid in grids],
                     executor=executor, chunk_size=chunk_size)
        tensor.grids = grids
        return tensor

    @property
    def described_as(self):
        """How messages name this tensor: ``FunctionTensor of <the function's name>``.

        The class alone named the wrapper that :func:`tt_cross` makes of a callable, never
        the callable itself: a run over several functions did not say which returned the
        wrong shape or a NaN.
        """
        return f"{type(self).__name__} of {function_name(self.function)}"

    @property
    def _function_named(self):
        """``the function <name>``: how a chunk's message names the function."""
        return f"the function {function_name(self.function)}"

    def _keep_finite(self, error, indices, values):
        """Attach the batch's finite entries to ``error``, as an executor's finished chunks
        are to a chunk's exception, so that a checkpoint over this tensor keeps them: one
        NaN lost the whole batch, hours of chunks, and the rerun evaluated them again."""
        host = to_host(values) if tl.is_tensor(values) else _host_numbers(values)
        finite = np.isfinite(host)
        if finite.any():
            finished = FinishedChunks(indices[finite], [host[finite]])
            finished.claim(self)
            setattr(error, FINISHED, finished)

    def _evaluate(self, indices):
        deadline = current_deadline()
        executor = self._read_executor()
        chunked = executor is None and self._serial_chunks(indices) is not None
        try:
            if executor is not None:
                values, seconds = evaluate_in_chunks(self.function, indices, executor,
                                                     self.chunk_size,
                                                     self._workers(executor), deadline,
                                                     self._function_named)
            elif chunked:
                values, seconds = self._evaluate_chunks(indices, deadline)
            else:
                values, seconds = self._call(indices)
        except BaseException as error:
            finished = getattr(error, FINISHED, None)
            if finished is not None and (executor is not None or chunked):
                finished.claim(self)  # a checkpoint over this very tensor may keep them
                self._count_seconds(finished.seconds)  # computed, and counted in n_evals
            late = getattr(error, LATE, None)
            if late is not None and executor is not None:
                late.claim(self)  # a checkpoint over it stores them once they finish
            if not isinstance(error, Exception):  # Ctrl-C: no note, only the chunks
                raise
            # With an executor: a function (or values) it could not pickle, which is a
            # PicklingError, an AttributeError or a TypeError depending on what failed.
            if executor is not None and is_pickling_error(error):
                error.add_note(PICKLING)
            elif isinstance(error, TypeError):
                # The usual one: a function of d scalars, f(i, j, k), called with one array.
                error.add_note(CALLING_CONVENTION)
            if executor is None and not chunked and not isinstance(error, MaxTimeReached):
                # Which call failed (an executor's chunks, and serial ones, note their own).
                error.add_note(f"raised by the function on a batch of {span(indices)}")
            raise
        self._count_seconds(seconds)
        return values

    def _read_executor(self):
        """The executor of this read: none inside :func:`graph_kept_reads`, unless it is a
        thread pool (whose threads share the caller's tensors, and so the graph)."""
        if _GRAPH_KEPT.get() and not isinstance(self.executor,
                                                concurrent.futures.ThreadPoolExecutor):
            return None
        return self.executor

    def _count_seconds(self, seconds):
        """Count ``seconds`` spent in the function, here and on the current run's clock."""
        self.function_seconds += seconds
        FunctionClock.add(self, seconds)

    def _serial_chunks(self, indices):
        """The chunks of a serial batch (more than one only with a ``chunk_size`` below the
        batch's size): bounds of ``indices``, or None for one call."""
        if self.chunk_size is None or indices.shape[0] <= self.chunk_size:
            return None
        return chunk_bounds(indices.shape[0], chunk_size=self.chunk_size)

    def _call(self, indices):
        """One call of the function in this thread: its values and the seconds it took."""
        start, backends = time.perf_counter(), backend_state()
        # A copy: a function that shifts its multi-indices in place (``idx += 1``, 1-based
        # for a Fortran model) changed the ones a checkpoint then stored its values under,
        # and a NaN was reported at the shifted multi-index.
        with no_deadline():
            values = self.function(indices.copy())
        seconds = time.perf_counter() - start
        check_backend_kept(backends, "the function")
        return values, seconds

    def _evaluate_chunks(self, indices, deadline):
        """The batch ``chunk_size`` entries per call, in order. Past ``deadline`` no further
        chunk starts (MaxTimeReached), and an error or Ctrl-C carries the chunks finished
        before it: a checkpoint keeps them, so a long serial batch is not lost whole."""
        chunks = [indices[start:stop] for start, stop in self._serial_chunks(indices)]
        results = []
        try:
            for number, chunk in enumerate(chunks):
                if number and deadline is not None and deadline.passed():
                    raise deadline.reached(f"after {number} of {len(chunks)} chunks of a "
                                           f"batch of {indices.shape[0]} evaluations")
                values, seconds = noted_result(lambda chunk=chunk: self._call(chunk), chunk,
                                               number, len(chunks))
                # Checked now: values of the wrong shape stop the batch at their chunk.
                results.append((check_chunk_values(own_copy(values), chunk,
                                                   self._function_named), seconds))
        except BaseException as error:
            attach_finished(error, chunks, results + [None] * (len(chunks) - len(results)))
            raise
        return (concatenate_chunks([values for values, _ in results]),
                sum(seconds for _, seconds in results))


def _check_grids(grids):
    """The grids as 1-D float arrays. A scalar is a one-point grid and an (n, 1) column a
    grid of n points; a lone 1-D array of numbers (one mode's grid, not a sequence of
    grids) would be read as that many one-point modes, so it is refused, as are grids
    spread over two axes and complex ones."""
    if isinstance(grids, str | bytes) or not hasattr(grids, "__iter__"):
        # Named here: the loop below failed with "'NoneType' object is not iterable".
        raise TypeError(f"grids must be a sequence of 1-D arrays, one per mode; got "
                        f"{type(grids).__name__}.")
    # to_host: a torch grid that requires grad refuses np.asarray (its points are constants
    # of the grid here, not parameters: gradients reach a function's own parameters).
    members = [to_host(grid) if is_torch_tensor(grid) else np.asarray(grid) for grid in grids]
    if len(members) > 1 and all(member.ndim == 0 for member in members):
        raise TypeError("grids must be a sequence of 1-D arrays, one per mode; for a single "
                        "mode pass [grid].")
    checked = []
    for mode, grid in enumerate(members):
        if grid.size != max(grid.shape, default=1):
            raise ValueError(f"grids[{mode}] must be 1-D (or a single row or column), got "
                             f"shape {grid.shape}.")
        if grid.dtype.kind not in "biuf":
            raise TypeError(f"grids[{mode}] must hold real numbers, got dtype {grid.dtype}.")
        # Checked in the grid's own dtype, then cast: a long double point beyond float64
        # was reported as the "inf" that the cast made of it (so is its format(), hence !s).
        given = grid.reshape(-1)
        _check_finite_points(given, mode)
        with np.errstate(over="ignore"):  # refused below, by the point
            points = given.astype(float)
        beyond = np.flatnonzero(~np.isfinite(points))
        if beyond.size:
            raise ValueError(f"grids[{mode}][{beyond[0]}] is {given[beyond[0]]!s}, beyond "
                             "float64's range (about 1.8e308), in which the function "
                             "receives grid points; rescale the grid.")
        checked.append(points)
    return checked


def _check_finite_points(points, mode):
    """Refuse a NaN or infinite grid point: every entry on its slice was the function at it,
    reported later as the function's own NaN at a multi-index, not as the grid's point."""
    bad = np.flatnonzero(~np.isfinite(points))
    if bad.size:
        raise ValueError(f"grids[{mode}][{bad[0]}] is {points[bad[0]]}; grid points must be "
                         "finite numbers.")


def function_name(function):
    """A short name of ``function`` for messages: its qualified name (``energy``,
    ``Model.predict``, ``<lambda>``; not the functions it is defined in), that of the
    function a ``functools.partial`` or :meth:`FunctionTensor.on_grid` wraps, or the class
    of a callable object; the library's own wrappers give theirs (``message_name``)."""
    while isinstance(function, functools.partial | _GridFunction):
        function = function.func if isinstance(function, functools.partial) else function.function
    name = (_str_attribute(function, "message_name") or _str_attribute(function, "__qualname__")
            or _str_attribute(function, "__name__") or type(function).__qualname__)
    # A function defined inside another: its own name, not the enclosing one's.
    return name.rsplit(".<locals>.", 1)[-1]


def _str_attribute(function, name):
    """``function.<name>`` if it is a str, else None. Any error of the lookup is None too:
    a callable whose ``__getattr__`` raises a KeyError for what it lacks (attributes kept
    in a dict) must still be evaluated; the name is only for messages."""
    try:
        value = getattr(function, name, None)
    except Exception:
        return None
    return value if isinstance(value, str) else None


class _GridFunction:
    """Maps integer multi-indices to grid coordinates before calling the user's function."""

    def __init__(self, function, grids):
        if not callable(function):
            raise TypeError(f"function must be callable, got {type(function).__name__}.")
        self.function = function
        self.grids = grids

    def __call__(self, indices):
        points = np.empty(indices.shape, dtype=float)
        for mode, grid in enumerate(self.grids):
            points[:, mode] = grid[indices[:, mode]]
        return self.function(points)
