"""Chunked evaluation on an executor: one batch split into chunks that run concurrently.

A cross asks for its entries a batch at a time (a column, a row, the held-out set). With an
executor, each batch of entries not yet known is cut into chunks, the chunks are submitted
together, and their values are put back in the batch's order: the same values as one
serial call, as long as the function computes each entry from its own multi-index only.
The speed-up is bounded by the batches: the pivot search within a bond is sequential (a
column decides the row, the row the next column), so a run makes as many rounds of chunks
as it has batches, each as long as its largest chunk.
"""

import contextlib
import math
import os
import sys
import time

import numpy as np
import tensorly as tl

from .._validation import check_int
from .base import NUMERIC_KINDS, host_values
from .chunk_result import as_tuple, attach_finished, attach_late, results_in_order
from .worker_groups import gather_groups, group_chunks, submit_groups

# How long a count of the executor's workers is trusted. Asking a dask scheduler is a
# round trip: asked before every batch, it added about 5 ms to a batch of 8 chunks that
# otherwise costs 20-25 ms (bench_scale.py parallel, a LocalCluster of 8 threads: 3.37 s
# against 2.80 s for the whole run), while a cluster that scales changes in seconds.
WORKER_COUNT_SECONDS = 1.0


def check_executor(executor):
    """``executor`` if it can run chunks (``submit``); raise TypeError otherwise."""
    if executor is not None and not callable(getattr(executor, "submit", None)):
        raise TypeError("executor must be a concurrent.futures.Executor, a "
                        "dask.distributed.Client or None; got "
                        f"{type(executor).__name__}, which has no submit method.")
    return executor


def executor_workers(executor):
    """Each worker of ``executor`` and the chunks it runs at once: a tuple of
    ``(address, threads)``. A ``concurrent.futures`` executor counts as one worker (address
    None) with its pool's size; a dask client lists its workers (one with address None and
    one thread while it has none)."""
    if _is_dask_client(executor):
        _check_open(executor)
        workers = sorted((address, max(1, int(threads)))
                         for address, threads in executor.nthreads().items())
        return tuple(workers) or ((None, 1),)
    workers = getattr(executor, "_max_workers", None)  # ThreadPool- and ProcessPoolExecutor
    return ((None, int(workers) if workers else os.cpu_count() or 1),)


def _check_open(client):
    """Raise ValueError for a closed dask client: asked for its workers, it fails deep in
    distributed (an AttributeError on its scheduler, which is None)."""
    if getattr(client, "status", None) in ("closing", "closed"):
        raise ValueError(f"executor {client!r} has no workers (is it closed, or its cluster "
                         "shut down?); pass a connected dask client, a "
                         "concurrent.futures executor, or executor=None.")


class WorkerCount:
    """:func:`executor_workers`, asked again only after :data:`WORKER_COUNT_SECONDS` (or
    for another executor). It keeps the executor's ``id``, not the executor: a tensor
    whose executor was removed neither keeps it alive nor fails to pickle for it."""

    def __init__(self):
        self._executor_id, self._workers, self._asked = None, None, -math.inf

    def __call__(self, executor):
        now = time.monotonic()
        if id(executor) != self._executor_id or now - self._asked > WORKER_COUNT_SECONDS:
            self._workers, self._asked = executor_workers(executor), now
            self._executor_id = id(executor)
        return self._workers


def chunk_bounds(n_entries, n_chunks=None, chunk_size=None):
    """``(start, stop)`` of consecutive chunks covering ``n_entries``: ``chunk_size`` entries
    each (the last one shorter), or else ``n_chunks`` chunks of nearly equal size."""
    if chunk_size is None:
        chunk_size = math.ceil(n_entries / max(1, n_chunks))
    starts = range(0, n_entries, max(1, chunk_size))
    return [(start, min(start + chunk_size, n_entries)) for start in starts]


def evaluate_in_chunks(function, indices, executor, chunk_size=None, workers=None,
                       deadline=None, name="the function"):
    """``function(indices)`` computed chunk by chunk on ``executor``, in request order.

    Parameters
    ----------
    function : callable
        ``function(indices) -> values`` for an (m, d) int64 array; it must pickle if the
        executor runs in other processes.
    indices : ndarray of int64, shape (m, d)
    executor : concurrent.futures.Executor or dask.distributed.Client
    chunk_size : int or None
        Entries per chunk; None: as many chunks as the executor has threads.
    workers : tuple of (str or None, int), or None
        :func:`executor_workers` of the executor, if known (None: asked, a round trip for
        dask). A dask client gets one task per worker, holding that worker's share of the
        chunks (see :mod:`.worker_groups`).
    deadline : Deadline or None
        Past it, the chunks not finished are cancelled and
        :class:`~tensorly_cross.errors.MaxTimeReached` is raised, carrying the finished
        ones (for a checkpoint). A chunk already running on a thread or in a process
        pool cannot be stopped: it finishes in the background, carried by the error as
        :class:`~.chunk_result.LateChunks` (a checkpoint stores its values once it
        finishes; on dask, its values are dropped).
    name : str, default "the function"
        How a message about a chunk's values names ``function``.

    Returns
    -------
    values : ndarray or backend tensor of shape (m,)
    inside_seconds : float
        Time spent inside ``function``, summed over the chunks (measured where they ran).

    Raises
    ------
    ValueError
        If a chunk's values do not have one entry per multi-index.
    MaxTimeReached
        If ``deadline`` passed before every chunk finished.
    Exception
        The first failing chunk's own exception, with a note naming its multi-indices.
    """
    if chunk_size is not None:  # 0 made empty chunks: no values, and no error
        chunk_size = check_int(chunk_size, "chunk_size", minimum=1)
    if workers is None:
        workers = executor_workers(executor)
    n_threads = sum(threads for _, threads in workers)
    bounds = chunk_bounds(indices.shape[0], n_threads, chunk_size)
    timed = _TimedCall(function)
    if not bounds:  # an empty batch: nothing to distribute
        return timed(indices)
    # Contiguous chunks: a chunk is a view, and a process pool pickles only its rows.
    chunks = [np.ascontiguousarray(indices[start:stop]) for start, stop in bounds]
    futures = _submit_all(executor, timed, chunks, workers)
    try:
        results = _gather(executor, futures, chunks, workers, deadline)
        # Checked inside: a chunk of the wrong shape fails the batch with the others kept,
        # as serially (they were lost, checked after the batch was gathered).
        values = [check_chunk_values(values, chunk, name) for (values, _), chunk in
                  zip(results, chunks, strict=True)]
    except BaseException as error:
        # Collected first: cancelling a dask future releases its result too. Never in the
        # way of the user's error: an odd future only loses its chunks.
        finished = None
        try:
            finished = _finished_results(executor, futures, chunks, workers)
            attach_finished(error, chunks, finished)
        except Exception:  # noqa: BLE001
            pass
        try:
            _cancel(executor, futures)
        except Exception:  # noqa: BLE001 -- a closed dask client cannot cancel: its
            pass  # ClosedClientError ("Can't send cancel-keys message") hid the batch's
        if finished is not None and not _is_dask_client(executor):
            # The chunks already running, which cancel() cannot stop: a checkpoint stores
            # them once they finish (see LateChunks).
            attach_late(error, chunks, futures, finished)
        raise
    return concatenate_chunks(values), sum(seconds for _, seconds in results)


class _TimedCall:
    """``function`` returning its values and the seconds it took (picklable if it is), run
    in the caller's PyTorch grad mode: ``torch.no_grad()`` is thread-local, and the index
    search of ``differentiable=True`` ran in the executor's threads with autograd on (its
    cached values held graphs)."""

    def __init__(self, function):
        self.function = function
        self.grad_enabled = caller_grad_mode()

    def __call__(self, chunk):
        with _grad_mode(self.grad_enabled):
            return self._timed(chunk)

    def _timed(self, chunk):
        start = time.perf_counter()
        # A copy: in a thread a chunk is a view of the batch, whose multi-indices a
        # checkpoint stores the values under (see FunctionTensor).
        values = self.function(chunk.copy())
        # A copy of the values too: the chunks a thread runs one after another would all
        # hold the one buffer a function may refill on every call (see own_copy).
        return own_copy(values), time.perf_counter() - start


def caller_grad_mode():
    """PyTorch's grad mode in this thread; None where torch was never imported."""
    torch = sys.modules.get("torch")
    return None if torch is None else torch.is_grad_enabled()


def _grad_mode(enabled):
    """``torch.set_grad_enabled(enabled)`` where torch is imported here; else a no-op."""
    torch = sys.modules.get("torch")
    if enabled is None or torch is None:
        return contextlib.nullcontext()
    return torch.set_grad_enabled(enabled)


def own_copy(values):
    """A chunk's values, copied when they are an array or tensor: a function may return
    one output buffer that it refills on every call (a wrapped model's), and the batch,
    put together after its last chunk, held that chunk's values in every chunk's place."""
    if isinstance(values, np.ndarray):
        return values.copy()
    clone = getattr(values, "clone", None)  # a PyTorch tensor (JAX arrays are immutable)
    return clone() if callable(clone) else values


def _is_dask_client(executor):
    return type(executor).__module__.startswith("distributed") and hasattr(executor, "gather")


def _submit_all(executor, timed, chunks, workers):
    if _is_dask_client(executor):
        return submit_groups(executor, timed, chunks, workers)
    futures = []
    try:
        for chunk in chunks:
            future = _submit(executor, timed, chunk)
            if not callable(getattr(future, "result", None)):
                raise TypeError(f"executor.submit returned {type(future).__name__}, not a "
                                "future (an object with a result() method); executor must "
                                "be a concurrent.futures.Executor or a dask Client.")
            futures.append(future)
    except BaseException:
        # The chunks submitted so far would run for nothing (their batch has failed).
        _cancel(executor, futures)
        raise
    return futures


def _submit(executor, timed, chunk):
    """``executor.submit(timed, chunk)``; a shut-down executor's refusal noted: its bare
    "cannot schedule new futures after shutdown" named neither the argument nor the usual
    cause, a ``with`` block that ended before the run."""
    try:
        return executor.submit(timed, chunk)
    except RuntimeError as error:
        if "shutdown" in str(error):
            error.add_note(f"the FunctionTensor's executor ({type(executor).__name__}) was "
                           "shut down before this batch: a `with` block around it ended "
                           "before the run did, or shutdown() was called. Run inside the "
                           "block, make the FunctionTensor with a running executor, or "
                           "evaluate serially (executor=None).")
        raise


def _gather(executor, futures, chunks, workers, deadline=None):
    """The chunks' (values, seconds) in order; the first failing chunk's error, noted (a
    dask group notes its own, where it ran); MaxTimeReached once past ``deadline``."""
    if _is_dask_client(executor):
        return gather_groups(executor, futures, chunks, workers, deadline)
    return results_in_order(futures, chunks, deadline=deadline)


def _finished_results(executor, futures, chunks, workers):
    """Each chunk's ``(values, seconds)`` if it finished without error, else None (a dask
    group counts as a whole: a failed group's finished chunks are not known here)."""
    if not _is_dask_client(executor):
        return [future.result() if _succeeded(future) else None for future in futures]
    results = [None] * len(chunks)
    for future, (_, _, start, stop) in zip(futures, group_chunks(len(chunks), workers),
                                           strict=True):
        if getattr(future, "status", None) == "finished":
            try:
                results[start:stop] = future.result(timeout=10)
            except Exception:  # noqa: BLE001 -- a result lost with its worker: not kept
                continue
    return results


def _succeeded(future):
    """Whether a future finished without error (False where it cannot tell: an executor's
    futures need only ``result``)."""
    done, cancelled, exception = (getattr(future, name, None)
                                  for name in ("done", "cancelled", "exception"))
    if not (callable(done) and callable(cancelled) and callable(exception)):
        return False
    return done() and not cancelled() and exception() is None


def _cancel(executor, futures):
    if _is_dask_client(executor):
        executor.cancel(futures)
    else:
        for future in futures:
            if callable(getattr(future, "cancel", None)):
                future.cancel()


def check_chunk_values(values, chunk, name="the function"):
    """``values`` if they hold one entry per multi-index of ``chunk``; raise a ValueError
    naming the function (``name``) and the chunk otherwise."""
    if tuple(np.shape(values)) != (chunk.shape[0],):
        raise ValueError(
            f"{name} returned values of shape {tuple(np.shape(values))} for a chunk of "
            f"{chunk.shape[0]} multi-indices (from {as_tuple(chunk[0])}); expected shape "
            f"({chunk.shape[0]},)."
        )
    return values


def concatenate_chunks(values):
    """The chunks' values as one: a chunk that is not a backend tensor is read as a serial
    call's values are (``host_values``: ``np.asarray`` fails on a PyTorch tensor that
    requires grad, under another backend; PyTorch and JAX refuse big-endian arrays and
    ml_dtypes' bfloat16, and PyTorch does not promote uint64)."""
    if len(values) == 1:
        return values[0]
    if all(isinstance(part, np.ndarray) for part in values):
        return np.concatenate(values)
    for part in values:
        if isinstance(part, np.ma.MaskedArray):
            # check_values refuses it by name; host_values (np.asarray) drops its mask,
            # and the masked entries were read as values.
            return part
    parts = [part if tl.is_tensor(part) else host_values(part) for part in values]
    for part in parts:
        if isinstance(part, np.ndarray) and part.dtype.kind not in NUMERIC_KINDS:
            return part  # strings, objects: check_values refuses them by name
    return tl.concatenate([part if tl.is_tensor(part) else tl.tensor(part) for part in parts])
