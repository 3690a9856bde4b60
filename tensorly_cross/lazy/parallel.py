"""Chunked evaluation on an executor: one batch split into chunks that run concurrently.

A cross asks for its entries a batch at a time (a column, a row, the held-out set). With an
executor, each batch of entries not yet known is cut into chunks, the chunks are submitted
together, and their values are put back in the batch's order: the same values as one
serial call, as long as the function computes each entry from its own multi-index only.
The speed-up is bounded by the batches: the pivot search within a bond is sequential (a
column decides the row, the row the next column), so a run makes as many rounds of chunks
as it has batches, each as long as its largest chunk.
"""

import math
import os
import time

import numpy as np
import tensorly as tl

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
    """How many chunks ``executor`` runs at once (its workers, or its threads for dask)."""
    if _is_dask_client(executor):
        return max(1, sum(executor.nthreads().values()))
    workers = getattr(executor, "_max_workers", None)  # ThreadPool- and ProcessPoolExecutor
    return int(workers) if workers else os.cpu_count() or 1


class WorkerCount:
    """:func:`executor_workers`, asked again only after :data:`WORKER_COUNT_SECONDS` (or
    for another executor). It keeps the executor's ``id``, not the executor: a tensor
    whose executor was removed neither keeps it alive nor fails to pickle for it."""

    def __init__(self):
        self._executor_id, self._count, self._asked = None, None, -math.inf

    def __call__(self, executor):
        now = time.monotonic()
        if id(executor) != self._executor_id or now - self._asked > WORKER_COUNT_SECONDS:
            self._count, self._asked = executor_workers(executor), now
            self._executor_id = id(executor)
        return self._count


def chunk_bounds(n_entries, n_chunks=None, chunk_size=None):
    """``(start, stop)`` of consecutive chunks covering ``n_entries``: ``chunk_size`` entries
    each (the last one shorter), or else ``n_chunks`` chunks of nearly equal size."""
    if chunk_size is None:
        chunk_size = math.ceil(n_entries / max(1, n_chunks))
    starts = range(0, n_entries, max(1, chunk_size))
    return [(start, min(start + chunk_size, n_entries)) for start in starts]


def evaluate_in_chunks(function, indices, executor, chunk_size=None, n_workers=None):
    """``function(indices)`` computed chunk by chunk on ``executor``, in request order.

    Parameters
    ----------
    function : callable
        ``function(indices) -> values`` for an (m, d) int64 array; it must pickle if the
        executor runs in other processes.
    indices : ndarray of int64, shape (m, d)
    executor : concurrent.futures.Executor or dask.distributed.Client
    chunk_size : int or None
        Entries per chunk; None: as many chunks as the executor has workers.
    n_workers : int or None
        The executor's workers, if known (None: asked, a round trip for dask).

    Returns
    -------
    values : ndarray or backend tensor of shape (m,)
    inside_seconds : float
        Time spent inside ``function``, summed over the chunks (measured where they ran).

    Raises
    ------
    ValueError
        If a chunk's values do not have one entry per multi-index.
    Exception
        The first failing chunk's own exception, with a note naming its multi-indices.
    """
    if n_workers is None and chunk_size is None:
        n_workers = executor_workers(executor)
    bounds = chunk_bounds(indices.shape[0], n_workers, chunk_size)
    timed = _TimedCall(function)
    if not bounds:  # an empty batch: nothing to distribute
        return timed(indices)
    # Contiguous chunks: a chunk is a view, and a process pool pickles only its rows.
    chunks = [np.ascontiguousarray(indices[start:stop]) for start, stop in bounds]
    futures = _submit_all(executor, timed, chunks)
    try:
        results = _gather(executor, futures, chunks)
    except BaseException:
        _cancel(executor, futures)
        raise
    values = [_check_chunk(values, chunk) for (values, _), chunk in
              zip(results, chunks, strict=True)]
    return _concatenate(values), sum(seconds for _, seconds in results)


class _TimedCall:
    """``function`` returning its values and the seconds it took (picklable if it is)."""

    def __init__(self, function):
        self.function = function

    def __call__(self, chunk):
        start = time.perf_counter()
        values = self.function(chunk)
        return values, time.perf_counter() - start


def _is_dask_client(executor):
    return type(executor).__module__.startswith("distributed") and hasattr(executor, "gather")


def _submit_all(executor, timed, chunks):
    if _is_dask_client(executor):
        # One map and one gather per batch: each call to the scheduler is a round trip.
        # pure=False: a chunk is never merged with an equal-looking earlier task.
        return executor.map(timed, chunks, pure=False)
    return [executor.submit(timed, chunk) for chunk in chunks]


def _gather(executor, futures, chunks):
    """The chunks' (values, seconds) in order; the first failing chunk's error, noted."""
    if _is_dask_client(executor):
        try:
            return executor.gather(futures)
        except Exception:
            for number, future in enumerate(futures):  # which chunk failed first
                if future.status == "error":
                    _result(future, chunks[number], number, len(chunks))
            raise
    return [_result(future, chunk, number, len(chunks))
            for number, (future, chunk) in enumerate(zip(futures, chunks, strict=True))]


def _result(future, chunk, number, n_chunks):
    try:
        return future.result()
    except Exception as error:
        error.add_note(f"raised by the function on chunk {number + 1} of {n_chunks}: "
                       f"{chunk.shape[0]} multi-indices from {_as_tuple(chunk[0])} to "
                       f"{_as_tuple(chunk[-1])} (chunk_size=1 names the very entry)")
        raise


def _cancel(executor, futures):
    if _is_dask_client(executor):
        executor.cancel(futures)
    else:
        for future in futures:
            future.cancel()


def _check_chunk(values, chunk):
    if tuple(np.shape(values)) != (chunk.shape[0],):
        raise ValueError(
            f"the function returned values of shape {tuple(np.shape(values))} for a chunk of "
            f"{chunk.shape[0]} multi-indices (from {_as_tuple(chunk[0])}); expected shape "
            f"({chunk.shape[0]},)."
        )
    return values


def _concatenate(values):
    if len(values) == 1:
        return values[0]
    if all(isinstance(part, np.ndarray) for part in values):
        return np.concatenate(values)
    return tl.concatenate([part if tl.is_tensor(part) else tl.tensor(np.asarray(part))
                           for part in values])


def _as_tuple(multi_index):
    return tuple(int(i) for i in multi_index)
