"""A chunk's result, its exception noted with the multi-indices it was computing."""

import contextlib
import pickle
import threading
import weakref
from concurrent.futures import BrokenExecutor, CancelledError, Future

import numpy as np

# How every note on a chunk's exception starts (a client adds its own when one is missing).
NOTE_PREFIX = "raised by the function on chunk"


def noted_result(result, chunk, number, n_chunks):
    """``result()``; an exception it raises gets a note naming ``chunk``'s multi-indices.

    Parameters
    ----------
    result : callable
        Returns the chunk's result or raises (``future.result``, or the call itself).
    chunk : ndarray of int64, shape (m, d)
    number : int
        The chunk's position in its batch, from 0.
    n_chunks : int
        The chunks in the batch.
    """
    try:
        return result()
    except CancelledError as error:  # the function never ran on it: do not blame it
        error.add_note(f"chunk {number + 1} of {n_chunks} ({span(chunk)}) was cancelled "
                       "before it ran: its executor was shut down (or its future "
                       "cancelled) while the batch waited for it")
        raise
    except BrokenExecutor as error:  # the executor broke: the entries need not be why
        error.add_note(f"chunk {number + 1} of {n_chunks} ({span(chunk)}) was lost with the "
                       "executor, which broke (a worker died: killed by the OOM killer or a "
                       "signal, such as Ctrl-C sent to the terminal's processes, or a crash "
                       "in native code; or a worker's initializer failed); it runs nothing "
                       "more: make a new executor to rerun (with a checkpoint, the rerun "
                       "resumes)")
        raise
    except Exception as error:
        if is_pickling_error(error):  # the function may never have run: do not blame it
            error.add_note(f"raised by pickling chunk {number + 1} of {n_chunks} ({span(chunk)}) "
                           "for the executor: the function, its arguments or its values "
                           "could not be sent between processes")
        else:
            error.add_note(f"{NOTE_PREFIX} {number + 1} of {n_chunks}: {span(chunk)} "
                           "(chunk_size=1 names the very entry)")
        raise


def is_pickling_error(error):
    """Whether ``error`` is a failure to pickle (or unpickle) what goes to or comes from an
    executor's workers. Which type it is depends on the Python version and on what failed:
    ``pickle.PicklingError`` (a lambda of ``__main__``), AttributeError ("Can't pickle
    local object"), TypeError ("cannot pickle '_thread.lock' object", dask's "Could not
    serialize object")."""
    if isinstance(error, pickle.PicklingError | pickle.UnpicklingError):
        return True
    text = str(error).lower()
    return isinstance(error, TypeError | AttributeError) and (
        "pickl" in text or "serializ" in text or "local object" in text)


def span(chunk):
    """``m multi-indices from (...) to (...)``, for messages."""
    if chunk.shape[0] == 1:
        return f"1 multi-index, {as_tuple(chunk[0])}"
    return (f"{chunk.shape[0]} multi-indices from {as_tuple(chunk[0])} to "
            f"{as_tuple(chunk[-1])}")


def results_in_order(futures, chunks, first_number=0, n_chunks=None, deadline=None):
    """The results of one future per chunk, in order.

    As soon as a chunk fails, the others are cancelled (those not yet running) and the
    failure of the lowest-numbered failed chunk is raised, noted: an error does not wait
    for slower chunks before it.

    Parameters
    ----------
    futures : list of concurrent.futures.Future
    chunks : list of ndarray of int64
    first_number : int
        The first chunk's position in its batch, from 0.
    n_chunks : int or None
        The chunks in the batch (None: ``len(chunks)``).
    deadline : Deadline or None
        Past it, :class:`~tensorly_cross.errors.MaxTimeReached` is raised without waiting
        for the chunks still running (futures of ``concurrent.futures`` only).

    Returns
    -------
    list
    """
    n_chunks = len(chunks) if n_chunks is None else n_chunks
    if all(isinstance(future, Future) for future in futures):  # else: wait in order
        if not wait_for_first_failure(futures, deadline=deadline):
            unfinished = sum(not future.done() for future in futures)
            raise deadline.reached(f"with {unfinished} of {len(futures)} chunks of a batch "
                                   "still to finish")
        failed = [number for number, future in enumerate(futures) if _failed(future)]
        if failed:
            for future in futures:
                future.cancel()
            futures, chunks, first_number = (futures[failed[0]:], chunks[failed[0]:],
                                             first_number + failed[0])
    return [noted_result(future.result, chunk, first_number + number, n_chunks)
            for number, (future, chunk) in enumerate(zip(futures, chunks, strict=True))]


def wait_for_first_failure(futures, poll_seconds=1.0, deadline=None):
    """Return once every future is done (cancelled counts) or one has raised: True; or
    once ``deadline`` (a :class:`~tensorly_cross.lazy.deadline.Deadline`) has passed
    before that: False.

    ``concurrent.futures.wait`` is not used: a future cancelled by
    ``executor.shutdown(cancel_futures=True)`` never notifies it, and a batch waited for
    such a chunk forever. Done-callbacks do run on cancellation.
    """
    condition = threading.Condition()

    def wake(_):
        with condition:
            condition.notify_all()

    for future in futures:
        future.add_done_callback(wake)  # runs at once for a future already done
    with condition:
        while not (all(future.done() for future in futures)
                   or any(_failed(future) for future in futures)):
            wait = poll_seconds if deadline is None else min(poll_seconds, deadline.remaining())
            if wait <= 0:
                return False
            condition.wait(wait)  # bounded: a signal is handled between waits
    return True


def _failed(future):
    """Whether ``future`` finished by raising (not: is running, cancelled or succeeded)."""
    return future.done() and not future.cancelled() and future.exception() is not None


def as_tuple(multi_index):
    """A multi-index as a tuple of Python ints (for messages)."""
    return tuple(int(i) for i in multi_index)


# The attribute under which a failed batch's exception carries its finished chunks.
FINISHED = "tensorly_cross_finished"


class FinishedChunks:
    """The chunks of a failed batch that had finished, carried by its exception (attribute
    :data:`FINISHED`) so that a checkpoint keeps them: after hours of chunks, one failure
    (a node lost, Ctrl-C) cost them all, and a rerun evaluated them again.

    It pickles as None: an exception is pickled with its attributes (to a process pool's
    caller, a dask client), and the user's error must travel as it did before, not fail
    on the tensor and executor behind these chunks.

    Parameters
    ----------
    indices : ndarray of int64, shape (m, d)
        Their multi-indices, as given to the function.
    values : list
        Each finished chunk's raw values, in the order of ``indices``.
    seconds : float
        The time the function took on them (counted in the run's time inside it).
    """

    def __init__(self, indices, values, seconds=0.0):
        self.indices, self.values, self.seconds = indices, values, seconds
        self._source = None

    @property
    def source(self):
        """The tensor that evaluated them (None until it claims them; held weakly): only a
        checkpoint directly over that tensor may keep them, in the multi-indices it was
        asked for."""
        return None if self._source is None else self._source()

    def claim(self, tensor):
        """Record ``tensor`` as the evaluator, unless one already did: a function that
        calls another tensor must not pass that tensor's chunks off as its own."""
        if self._source is None:
            self._source = weakref.ref(tensor)

    def __reduce__(self):
        return _nothing, ()


def _nothing():
    return None


def attach_finished(error, chunks, results):
    """Attach the ``chunks`` whose ``results`` (``(values, seconds)``, or None for a chunk
    that did not finish) are known to ``error``, as a :class:`FinishedChunks`; without
    any, remove what an inner evaluation attached (those chunks are not these)."""
    done = [(chunk, result) for chunk, result in zip(chunks, results, strict=True)
            if result is not None and np.shape(result[0]) == (chunk.shape[0],)]
    finished = (FinishedChunks(np.concatenate([chunk for chunk, _ in done]),
                               [values for _, (values, _) in done],
                               sum(seconds for _, (_, seconds) in done)) if done else None)
    if finished is None:
        take_finished(error)
        return
    try:
        setattr(error, FINISHED, finished)
    except AttributeError:  # an exception class with __slots__: nothing kept, as before
        pass


# The attribute under which a failed batch's exception carries its chunks still running.
LATE = "tensorly_cross_late"


class LateChunks(FinishedChunks):
    """The chunks of a failed batch (``max_time``, another chunk's error) still running on
    a ``concurrent.futures`` executor, which cannot stop them: carried by its exception
    (attribute :data:`LATE`) so that a checkpoint stores their values once they finish
    (they were dropped, and a rerun evaluated them again). Claimed and pickled as
    :class:`FinishedChunks` are.

    Parameters
    ----------
    pairs : list of (ndarray of int64, concurrent.futures.Future)
        Each chunk's multi-indices and the future of its ``(values, seconds)``.
    """

    def __init__(self, pairs):
        super().__init__(None, [])
        self.pairs = pairs


def attach_late(error, chunks, futures, results):
    """Attach to ``error`` the ``chunks`` whose ``futures`` are neither cancelled nor among
    the finished ``results`` (None where a chunk was not collected), as
    :class:`LateChunks`."""
    pairs = [(chunk, future) for chunk, future, result in zip(chunks, futures, results,
                                                                strict=True)
             if result is None and isinstance(future, Future) and not future.cancelled()
             and not (future.done() and future.exception() is not None)]
    if pairs:
        try:
            setattr(error, LATE, LateChunks(pairs))
        except AttributeError:  # an exception class with __slots__: dropped, as before
            pass


def take_late(error):
    """The :class:`LateChunks` ``error`` carries (None if none), removed from it."""
    late = getattr(error, LATE, None)
    if late is not None:
        try:
            delattr(error, LATE)
        except AttributeError:
            pass
    return late


def evaluating_tensor(lazy):
    """The tensor that evaluates ``lazy``'s batches: ``lazy``, or the one behind the
    wrappers that pass batches through unchanged (a deadline, a checkpoint), which say so
    with a true ``passes_batches_through``. Finished chunks claimed by it are entries of
    the batches asked of ``lazy`` (a layout in between asks for other ones)."""
    while getattr(lazy, "passes_batches_through", False):
        lazy = lazy.lazy
    return lazy


def take_finished(error):
    """The :class:`FinishedChunks` ``error`` carries (None if none), removed from it: once
    handled they are not kept alive with the error."""
    finished = getattr(error, FINISHED, None)
    if finished is not None:
        try:
            delattr(error, FINISHED)
        except AttributeError:  # a class attribute of that name, not ours to remove
            pass
    return finished


@contextlib.contextmanager
def finished_seen_through(view, to_view):
    """Around a view's read of its ``view.lazy``: the finished chunks that a failed batch
    carries, in the multi-indices ``view`` was asked for.

    ``to_view`` maps ``view.lazy``'s multi-indices to the view's. Claimed by the tensor
    below, they were neither counted by the cache above the view (a run that ``max_time``
    stopped through a :class:`TransposedTensor` reported 15 entries fewer than its
    function computed) nor kept by a checkpoint over it (a rerun computed them again).
    """
    try:
        yield
    except BaseException as error:
        finished = getattr(error, FINISHED, None)
        if finished is not None and finished.source is evaluating_tensor(view.lazy):
            seen = FinishedChunks(to_view(finished.indices), finished.values,
                                  finished.seconds)
            seen.claim(view)
            try:
                setattr(error, FINISHED, seen)
            except AttributeError:  # pragma: no cover -- only ever set where it was set
                pass
        raise
